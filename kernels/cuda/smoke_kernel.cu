#include "kernels/cuda/smoke_kernel.h"

namespace tq::cuda {
namespace {

__global__ void SaxpyKernel(float a, const float* __restrict__ x, float* __restrict__ y, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    y[i] = a * x[i] + y[i];
  }
}

}  // namespace

cudaError_t LaunchSaxpy(float a, const float* x, float* y, int n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int threads = 256;
  int blocks = (n + threads - 1) / threads;
  if (blocks > 4096) blocks = 4096;
  SaxpyKernel<<<blocks, threads, 0, stream>>>(a, x, y, n);
  return cudaGetLastError();
}

}  // namespace tq::cuda
