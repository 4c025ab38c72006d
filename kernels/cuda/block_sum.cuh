// Float sums over a warp and over a CTA, in one fixed order: kernels that must give the same bits
// as each other (nn_ops' RmsNorm and tq_linear's fused norm + int8 rotation) share these.
#ifndef TQSERVE_KERNELS_CUDA_BLOCK_SUM_CUH_
#define TQSERVE_KERNELS_CUDA_BLOCK_SUM_CUH_

namespace tq::cuda {

// Butterfly sum over the 32 lanes; every lane gets the result.
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024): each warp's WarpSum, then the
// WarpSum of those partials in warp order; every thread gets the result.
__device__ __forceinline__ float BlockSum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = WarpSum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  const float s = lane < warps ? partial[lane] : 0.0f;
  return WarpSum(s);
}

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_BLOCK_SUM_CUH_
