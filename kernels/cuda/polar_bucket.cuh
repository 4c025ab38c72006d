// The PolarQuant bucket of a rotated, normalized value on the device: what both packed-KV writers
// (kv_attention.cu WriteKvPolar, mla_attention.cu WriteLatentPolar) encode, as the CPU quantizer
// (quant::KvMseQuantizer) does.
#ifndef TQSERVE_KERNELS_CUDA_POLAR_BUCKET_CUH_
#define TQSERVE_KERNELS_CUDA_POLAR_BUCKET_CUH_

#include "kernels/cuda/kv_attention.h"

namespace tq::cuda {

// The number of the encoder's 2^bits − 1 sorted boundaries below r (at or below with ties_up):
// a binary search; NaN compares false, so it lands in bucket 0.
__device__ __forceinline__ int PolarBucket(const KvPolarEncoder& enc, int bits, float r) {
  int lo = 0, top = (1 << bits) - 1;
  while (lo < top) {
    const int mid = (lo + top) / 2;
    const float bd = enc.boundaries[mid];
    if (enc.ties_up ? bd <= r : bd < r) {
      lo = mid + 1;
    } else {
      top = mid;
    }
  }
  return lo;
}

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_POLAR_BUCKET_CUH_
