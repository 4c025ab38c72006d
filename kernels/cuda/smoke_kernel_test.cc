// Runs the smoke kernel on a GPU; skips with the reason when the binary has no CUDA or the
// machine has no GPU.
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/device.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/smoke_kernel.h"
#endif

namespace tq::cuda {
namespace {

TEST(SmokeKernelTest, SaxpyMatchesCpu) {
  const std::string reason = GpuUnavailableReason();
  if (!reason.empty()) GTEST_SKIP() << "CUDA test skipped: " << reason;
#if TQ_HAVE_CUDA
  auto info = GetDeviceInfo(0);
  ASSERT_TRUE(info.ok()) << info.status();
  std::printf("device 0: %s, sm_%d%d, %d SMs\n", info->name.c_str(), info->sm_major,
              info->sm_minor, info->multiprocessors);
  const int n = 4097;  // not a multiple of the block size
  std::vector<float> x(n), y(n);
  for (int i = 0; i < n; ++i) {
    x[i] = 0.5f * i;
    y[i] = 1.0f - i;
  }
  float *dx = nullptr, *dy = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dx), n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dy), n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(LaunchSaxpy(2.0f, dx, dy, n, nullptr), cudaSuccess);
  std::vector<float> out(n);
  ASSERT_EQ(cudaMemcpy(out.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(dx);
  cudaFree(dy);
  for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], 2.0f * x[i] + y[i]) << "at " << i;
#endif
}

}  // namespace
}  // namespace tq::cuda
