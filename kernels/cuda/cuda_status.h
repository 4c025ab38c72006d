// File: kernels/cuda/cuda_status.h
//
// TQ_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, n)) returns absl::InternalError naming the call, the
// CUDA error and file:line when a CUDA runtime call fails.
#ifndef TQSERVE_KERNELS_CUDA_CUDA_STATUS_H_
#define TQSERVE_KERNELS_CUDA_CUDA_STATUS_H_

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tq::cuda {

inline absl::Status CudaErrorToStatus(cudaError_t err, const char* call, const char* file,
                                      int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cudaGetErrorName(err), " (",
                                          cudaGetErrorString(err), ") at ", file, ":", line));
}

}  // namespace tq::cuda

#define TQ_CUDA_RETURN_IF_ERROR(expr)                                                  \
  do {                                                                                 \
    ::absl::Status tq_cuda_status_ =                                                   \
        ::tq::cuda::CudaErrorToStatus((expr), #expr, __FILE__, __LINE__);              \
    if (!tq_cuda_status_.ok()) return tq_cuda_status_;                                 \
  } while (0)

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_CUDA_STATUS_H_
