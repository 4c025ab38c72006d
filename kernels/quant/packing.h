// File: kernels/quant/packing.h
//
// Bit packing of TQ code indices, exactly as turboquant-plus-vllm's `pack_indices`
// (ALGORITHMS.md §1.4). Indices are packed per row of `n` indices (n a multiple of 8 for
// 3 bits, of 4 for 2 bits, of 2 for 4 bits; a TQ group is one such row):
//   2 bits: element k at bits 2*(k%4) of byte k/4                   (G=128 -> 32 bytes)
//   3 bits: 8 indices per 3 bytes, the little-endian 24-bit word sum(idx_i << 3i)  (-> 48 B)
//   4 bits: even index in the low nibble, odd index in the high nibble          (-> 64 B)
//   8 bits: one byte per index (used for KV codecs and tests)
// Test vectors: 3-bit 0..7 -> 88 c6 fa; [5,3,6,1,7,2,4,0] -> 9d 73 11.
#ifndef TQSERVE_KERNELS_QUANT_PACKING_H_
#define TQSERVE_KERNELS_QUANT_PACKING_H_

#include <cstdint>

namespace tq::quant {

// Bytes that `n` indices of `bits` bits occupy (n must satisfy the multiple rule above).
inline constexpr int64_t PackedBytes(int bits, int64_t n) { return n * bits / 8; }

// True if `bits` is a packable width and `n` a valid row length for it.
bool IsPackable(int bits, int64_t n);

// Packs n indices (each < 2^bits) into PackedBytes(bits, n) bytes. Requires IsPackable.
void PackIndices(const uint8_t* idx, int64_t n, int bits, uint8_t* out);

// Unpacks PackedBytes(bits, n) bytes into n indices. Requires IsPackable.
void UnpackIndices(const uint8_t* packed, int64_t n, int bits, uint8_t* idx);

}  // namespace tq::quant

#endif  // TQSERVE_KERNELS_QUANT_PACKING_H_
