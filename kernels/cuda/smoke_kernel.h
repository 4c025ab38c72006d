// File: kernels/cuda/smoke_kernel.h
//
// The smallest CUDA kernel of the project: y[i] = a * x[i] + y[i]. It exists to prove the nvcc
// build path (genrule -> static archive -> cc_library) and the GPU test harness end to end.
// Only compiled when the CUDA toolkit is present (TQ_HAVE_CUDA).
#ifndef TQSERVE_KERNELS_CUDA_SMOKE_KERNEL_H_
#define TQSERVE_KERNELS_CUDA_SMOKE_KERNEL_H_

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

namespace tq::cuda {

// Launches y = a*x + y over n floats on `stream`. x and y are device pointers.
cudaError_t LaunchSaxpy(float a, const float* x, float* y, int n, cudaStream_t stream);

}  // namespace tq::cuda
#endif  // TQ_HAVE_CUDA

#endif  // TQSERVE_KERNELS_CUDA_SMOKE_KERNEL_H_
