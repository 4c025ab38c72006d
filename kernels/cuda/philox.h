// File: kernels/cuda/philox.h
//
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator — the output is a pure function of (counter, key), so a kernel draws
// the n-th number of a stream without carrying generator state. Host and device code (the host
// side is the CPU reference and is checked against Random123's known-answer vectors in
// sampling_reference_test).
//
// The device sampler (kernels/cuda/sampling.h) draws a request's i-th token from
//   Uniform01(Philox4x32(counter = {i_lo, i_hi, 0, 0}, key = {seed_lo, seed_hi}))
// so a seeded request draws the same numbers whatever else shares its batch.
#ifndef TQSERVE_KERNELS_CUDA_PHILOX_H_
#define TQSERVE_KERNELS_CUDA_PHILOX_H_

#include <cstdint>

#if defined(__CUDACC__)
#define TQ_PHILOX_FN __host__ __device__ __forceinline__
#else
#define TQ_PHILOX_FN inline
#endif

namespace tq::cuda {

struct Philox4 {
  uint32_t v[4];
};

TQ_PHILOX_FN Philox4 Philox4x32(Philox4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr.v[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr.v[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// A double in [0, 1) with 53 random bits: the draw of stream `key` at position `index`.
TQ_PHILOX_FN double PhiloxUniform(uint64_t key, uint64_t index) {
  const Philox4 r = Philox4x32(Philox4{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0u, 0u}},
                               static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
  const uint64_t bits = (static_cast<uint64_t>(r.v[0] >> 5) << 26) | (r.v[1] >> 6);  // 27 + 26 bits
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);                    // / 2^53
}

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_PHILOX_H_
