// The RMSNorm of one row as float4s, one CTA per row — shared by nn_ops' RmsNormRows /
// AddRmsNormRows and tq_linear's fused norm + int8 rotation, so that both give the same bits:
// the same block size, the same partial sums in the same BlockSum order, the same products.
#ifndef TQSERVE_KERNELS_CUDA_RMS_NORM_CUH_
#define TQSERVE_KERNELS_CUDA_RMS_NORM_CUH_

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/block_sum.cuh"

namespace tq::cuda {

// Threads of the CTA that normalizes a row of n floats: one per float4 (at least 64, at most 1024).
inline int RmsNormThreads(int64_t n) {
  return static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(64, (n / 4 + 31) / 32 * 32)));
}

// 1 / RMS(x) of a row of n floats (x4: its n / 4 float4s), x += a first when kAdd (written
// back; a thread re-reads only what it wrote): float4 c = threadIdx.x, + blockDim.x, ... All
// threads of the CTA; every thread gets the result.
template <bool kAdd>
__device__ __forceinline__ float RowInvRms(float4* x4, const float4* a4, int64_t n, float eps) {
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < n / 4; c += blockDim.x) {
    float4 v = x4[c];
    if (kAdd) {
      const float4 d = a4[c];
      v = make_float4(v.x + d.x, v.y + d.y, v.z + d.z, v.w + d.w);
      x4[c] = v;
    }
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  ss = BlockSum(ss);
  return rsqrtf(ss / static_cast<float>(n) + eps);
}

// The normalized float4 c of the row: x4[c] · inv, times the weight (w4 null: none).
__device__ __forceinline__ float4 RmsNormed(const float4* x4, float inv, const float4* w4, int64_t c) {
  const float4 v = x4[c];
  float4 o = make_float4(v.x * inv, v.y * inv, v.z * inv, v.w * inv);
  if (w4 != nullptr) {
    const float4 g = w4[c];
    o = make_float4(o.x * g.x, o.y * g.y, o.z * g.z, o.w * g.w);
  }
  return o;
}

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_RMS_NORM_CUH_
