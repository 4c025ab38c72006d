// File: kernels/cuda/code_spread.cuh (device code only)
//
// Packed codes of 2, 3 or 4 bits turned into PRMT selectors: each code in a nibble of its own, so
// that __byte_perm(table_lo, table_hi, selector) looks up four table bytes at once (the int8
// TQ3 GEMV's centroids, tq_gemv_int8.cu; the packed attention's fp16 centroid bytes,
// kv_attention.cu).
#ifndef TQSERVE_KERNELS_CUDA_CODE_SPREAD_CUH_
#define TQSERVE_KERNELS_CUDA_CODE_SPREAD_CUH_

#include <cstdint>

namespace tq::cuda {

// d = (a & m) | (b & ~m): one LOP3 (the compiler splits the C expression into two).
__device__ __forceinline__ uint32_t Mux(uint32_t a, uint32_t b, uint32_t m) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xE4;" : "=r"(d) : "r"(a), "r"(b), "r"(m));
  return d;
}

// The 8 codes of kBits bits at the bottom of u (code t at bit kBits·t; bits above ignored) as
// nibbles (code t in nibble t, bit 3 clear for kBits < 4): codes 4..7 move up, then codes
// 2,3,6,7, then the odd codes; the mask clears what each mux carried along. 4-bit codes already
// are nibbles. For 3 bits: 3 shifts + 3 LOP3 + the mask. The mask is a plain C `&`: ptxas splits
// it per PRMT half (2 LOP3 + 1 shift per unit); an opaque and.b32 measured 4% slower on the int8
// GEMV's gate|up (docs/gpu/tq_linear_notes.md run 16).
template <int kBits>
__device__ __forceinline__ uint32_t CodesToNibbles(uint32_t u) {
  static_assert(kBits >= 2 && kBits <= 4, "2-4-bit codes");
  if constexpr (kBits == 4) {
    return u;
  } else {
    uint32_t t = Mux(u, u << (16 - 4 * kBits), 0x0000ffffu);
    t = Mux(t, t << (8 - 2 * kBits), 0x00ff00ffu);
    t = Mux(t, t << (4 - kBits), 0x0f0f0f0fu);
    return t & (kBits == 3 ? 0x77777777u : 0x33333333u);
  }
}

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_CODE_SPREAD_CUH_
