// File: kernels/cuda/device_testing.h
//
// What the CUDA kernel tests share (testonly): SKIP_WITHOUT_GPU(), which skips a test with the
// reason when the binary has no CUDA or the machine no usable GPU, and DeviceVector<T>, a device
// buffer that records a failed allocation or copy as a test failure.
#ifndef TQSERVE_KERNELS_CUDA_DEVICE_TESTING_H_
#define TQSERVE_KERNELS_CUDA_DEVICE_TESTING_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/device.h"

#define SKIP_WITHOUT_GPU()                                                               \
  do {                                                                                   \
    const std::string tq_skip_reason_ = ::tq::cuda::GpuUnavailableReason();              \
    if (!tq_skip_reason_.empty()) GTEST_SKIP() << "CUDA test skipped: " << tq_skip_reason_; \
  } while (0)

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

namespace tq::cuda {

template <typename T>
class DeviceVector {
 public:
  // `count` elements, uninitialized.
  explicit DeviceVector(size_t count) : count_(count) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr_), (count > 0 ? count : 1) * sizeof(T)), cudaSuccess);
  }
  explicit DeviceVector(const std::vector<T>& host) : DeviceVector(host.size()) { Upload(host); }
  // `count` elements with every byte 0xff (float32, bf16 and fp16 NaN).
  static DeviceVector Poisoned(size_t count) {
    DeviceVector v(count);
    v.Poison();
    return v;
  }
  ~DeviceVector() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceVector(DeviceVector&& o) noexcept : ptr_(o.ptr_), count_(o.count_) { o.ptr_ = nullptr; }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  void Upload(const std::vector<T>& host) {
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  // Waits for the device, then copies every element back.
  std::vector<T> Download() const {
    std::vector<T> host(count_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
  // Fills every byte with `byte` (0xff: float32, bf16 and fp16 NaN).
  void Poison(uint8_t byte = 0xff) { EXPECT_EQ(cudaMemset(ptr_, byte, count_ * sizeof(T)), cudaSuccess); }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace tq::cuda
#endif  // TQ_HAVE_CUDA

#endif  // TQSERVE_KERNELS_CUDA_DEVICE_TESTING_H_
