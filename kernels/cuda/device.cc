#include "kernels/cuda/device.h"

#include "absl/strings/str_cat.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_status.h"
#endif

namespace tq::cuda {

bool BuiltWithCuda() {
#if TQ_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::string GpuUnavailableReason() {
#if TQ_HAVE_CUDA
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::StrCat("no usable CUDA device: cudaGetDeviceCount -> ", cudaGetErrorName(err),
                        " (", cudaGetErrorString(err), ")");
  }
  if (count == 0) return "no CUDA device present";
  return "";
#else
  return "built without the CUDA toolkit (no nvcc at $CUDA_PATH or /usr/local/cuda)";
#endif
}

absl::StatusOr<DeviceInfo> GetDeviceInfo(int ordinal) {
#if TQ_HAVE_CUDA
  cudaDeviceProp prop;
  TQ_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, ordinal));
  DeviceInfo info;
  info.ordinal = ordinal;
  info.name = prop.name;
  info.sm_major = prop.major;
  info.sm_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.total_memory_bytes = prop.totalGlobalMem;
  return info;
#else
  return absl::UnimplementedError(GpuUnavailableReason());
#endif
}

}  // namespace tq::cuda
