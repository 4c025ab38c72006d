// File: kernels/cuda/device.h
//
// What CUDA can do in this process: whether the binary was built with the toolkit, and whether a
// usable GPU is present. Tests call GpuUnavailableReason() and skip with the returned text.
#ifndef TQSERVE_KERNELS_CUDA_DEVICE_H_
#define TQSERVE_KERNELS_CUDA_DEVICE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tq::cuda {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int sm_major = 0;
  int sm_minor = 0;
  int multiprocessors = 0;
  size_t total_memory_bytes = 0;
};

// True when this binary contains CUDA code (built where the toolkit was installed).
bool BuiltWithCuda();

// Empty when a GPU can be used; otherwise why not ("built without the CUDA toolkit",
// "no CUDA device: <driver message>").
std::string GpuUnavailableReason();

// Properties of device `ordinal`, or an error naming the failed CUDA call.
absl::StatusOr<DeviceInfo> GetDeviceInfo(int ordinal);

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_DEVICE_H_
