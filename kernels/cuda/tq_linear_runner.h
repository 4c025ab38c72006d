// File: kernels/cuda/tq_linear_runner.h
//
// Host-side front end of the CUDA TQ linear kernels (kernels/cuda/tq_linear.h): absl::Status
// instead of cudaError_t (each error names the failed call), the dispatch of SelectTqKernel, the
// scratch buffers each path needs (split-K workspaces, fp16 x_rot, a dequantized BF16 weight) and
// the cuBLAS BF16 fallback for large m.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(auto runner, tq::cuda::TqLinearRunner::Create(/*device=*/0));
//   TQ_RETURN_IF_ERROR(runner->Run(weights, x_bf16, tq::cuda::TqActType::kBF16, m, /*ldx=*/k,
//                                  /*y_f32=*/nullptr, y_bf16, /*ldy=*/n, stream));
//
// A runner is not thread-safe and its scratch belongs to one stream at a time. Scratch grows on
// demand (synchronizing `stream` before freeing a smaller buffer); call Reserve() before
// capturing a CUDA graph so that no allocation happens during capture.
#ifndef TQSERVE_KERNELS_CUDA_TQ_LINEAR_RUNNER_H_
#define TQSERVE_KERNELS_CUDA_TQ_LINEAR_RUNNER_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/tq_linear.h"

namespace tq::cuda {

class TqLinearRunner {
 public:
  // Binds to `device` (cudaSetDevice) and creates a cuBLAS handle there.
  static absl::StatusOr<std::unique_ptr<TqLinearRunner>> Create(int device);
  ~TqLinearRunner();
  TqLinearRunner(const TqLinearRunner&) = delete;
  TqLinearRunner& operator=(const TqLinearRunner&) = delete;

  // OK if this device can run `w` (bits, group size, rotation block); else InvalidArgument or
  // Unimplemented with the reason. Call once when a model loads.
  absl::Status CheckSupported(const TqCudaWeights& w) const;
  // The format part of CheckSupported, before any weight is on the device.
  absl::Status CheckFormat(int bits, int group_size, int rotation_block) const;

  // The kernel Run uses for m rows.
  TqKernel KernelFor(const TqCudaWeights& w, int64_t m) const;

  // Opt-in: m = 1 on TQ3 weights runs the int8-activation GEMV (tq_linear.h (f): W3A8, not the
  // checkpoint's float arithmetic; ~2x faster per layer). Off by default. all_rows: every m
  // (row by row, slow for large m) — to evaluate that arithmetic, e.g. perplexity.
  void set_int8_gemv(bool on, bool all_rows = false) {
    int8_gemv_ = on;
    int8_all_rows_ = on && all_rows;
  }
  bool int8_gemv() const { return int8_gemv_; }
  // Programmatic dependent launch for the int8 path on sm_90+ (default on; off for A/B timing).
  void set_programmatic_launch(bool on) { programmatic_launch_ = on; }

  // y = x · Ŵᵀ (tq_linear.h). `force` = kUnsupported lets SelectTqKernel choose; any other value
  // runs that path (tests, benchmarks). `mma_config` / `gemm_config` override PlanTqMma /
  // PlanTqGemm.
  absl::Status Run(const TqCudaWeights& w, const void* x, TqActType x_type, int64_t m,
                   int64_t ldx, float* y_f32, uint16_t* y_bf16, int64_t ldy, cudaStream_t stream,
                   TqKernel force = TqKernel::kUnsupported,
                   const TqMmaConfig* mma_config = nullptr,
                   const TqGemmConfig* gemm_config = nullptr);

  // Run on the tensor-core kernel for expert *expert (a device index, so the launch can sit in a
  // CUDA graph whatever the routing) of experts stored back to back: w describes expert 0 (its
  // packed/gains pointers), each expert's codes are packed_stride bytes and its gains
  // gains_stride floats after the previous one's (TqMmaArgs::expert). m <= 16.
  // slots > 1 runs `slots` such problems in one launch (TqMmaArgs::expert_slots): problem s on
  // expert expert[s], x rows from (s / x_slot_div) · m, y rows from s · m; Reserve with the same
  // slots before a graph capture. Expert launches never split K (PlanTqMma's tiling otherwise),
  // so a grouped launch equals its slots' solo launches bit for bit.
  absl::Status RunExpert(const TqCudaWeights& w, const int32_t* expert, int64_t packed_stride,
                         int64_t gains_stride, const void* x, TqActType x_type, int64_t m, int64_t ldx,
                         float* y_f32, int64_t ldy, cudaStream_t stream, int slots = 1, int x_slot_div = 1);

  // y = (silu(g) · u) · Ŵᵀ for SwiGLU rows [g | u] of gate_up ([m, ld], u at column w.k): the
  // MLP's down projection when KernelFor(w, m) is kInt8Gemv (else INVALID_ARGUMENT), with
  // SiLU·mul fused into the int8 rotation (one launch fewer; same bits as SiluMul + Run).
  absl::Status RunSiluMulInt8(const TqCudaWeights& w, const float* gate_up, int64_t ld, int64_t m,
                              float* y_f32, int64_t ldy, cudaStream_t stream);

  // y = (RmsNorm(x [+= a]) · norm_w) · Ŵᵀ: a layer's residual add and norm before a linear that
  // KernelFor(w, m) runs on the int8 GEMV (else INVALID_ARGUMENT), fused with its int8 rotation
  // (LaunchTqAddRmsNormRotateInt8: x += a when a is non-null, the norm's output also to h for
  // other readers; one launch fewer, the same bits as AddRmsNormRows + Run). w.k % 128 == 0.
  absl::Status RunAddRmsNormInt8(const TqCudaWeights& w, float* x, int64_t ldx, const float* a, int64_t lda,
                                 const float* norm_w, float eps, int64_t m, float* h, int64_t ldh, float* y_f32,
                                 int64_t ldy, cudaStream_t stream);

  // Allocates the scratch Run needs for (w, m, path) now.
  // expert_slots: grouped expert launches (RunExpert's slots) of the mma paths.
  absl::Status Reserve(const TqCudaWeights& w, int64_t m, TqKernel kernel,
                       const TqMmaConfig* mma_config, cudaStream_t stream,
                       const TqGemmConfig* gemm_config = nullptr, int expert_slots = 1);

  // The GEMM config Run uses for (w, m) unless overridden.
  TqGemmConfig GemmConfigFor(const TqCudaWeights& w, int64_t m) const;

  int multiprocessors() const { return multiprocessors_; }

 private:
  TqLinearRunner() = default;

  struct Buffer {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  // Grows `b` to at least `bytes` (zero-filled when `zero`).
  absl::Status Grow(Buffer& b, size_t bytes, bool zero, cudaStream_t stream);
  struct ExpertSelect {
    const int32_t* expert = nullptr;
    int64_t packed_stride = 0, gains_stride = 0;
    int slots = 1, x_slot_div = 1;
  };
  absl::Status RunMma(const TqCudaWeights& w, const void* x, TqActType x_type, int64_t m,
                      int64_t ldx, float* y_f32, uint16_t* y_bf16, int64_t ldy,
                      cudaStream_t stream, bool fused, const TqMmaConfig* mma_config,
                      const ExpertSelect* select = nullptr);
  // Bytes of x_rot_ for the fp16 rotation of m rows; RotateToHalf fills it (Reserve first).
  static size_t XRotBytes(const TqCudaWeights& w, int64_t m);
  absl::Status RotateToHalf(const TqCudaWeights& w, const void* x, TqActType x_type, int64_t m,
                            int64_t ldx, cudaStream_t stream, const uint16_t** x_h,
                            const float** x_scale);
  absl::Status RunGemm(const TqCudaWeights& w, const void* x, TqActType x_type, int64_t m,
                       int64_t ldx, float* y_f32, uint16_t* y_bf16, int64_t ldy,
                       cudaStream_t stream, const TqGemmConfig* gemm_config);
  // What the int8 GEMV's rotation launch reads: x (plain), silu(g) · u of [g | u] rows (gated), or
  // RmsNorm(x [+= a]) · norm_w (normed; its output also to h).
  struct Int8Input {
    const void* x = nullptr;
    TqActType x_type = TqActType::kF32;
    int64_t ldx = 0;
    bool gated = false;
    bool normed = false;
    const float* a = nullptr;
    int64_t lda = 0;
    const float* norm_w = nullptr;
    float eps = 0.0f;
    float* h = nullptr;
    int64_t ldh = 0;
  };
  absl::Status RunInt8Gemv(const TqCudaWeights& w, const Int8Input& in, int64_t m, float* y_f32, uint16_t* y_bf16,
                           int64_t ldy, cudaStream_t stream);
  absl::Status RunDequantCublas(const TqCudaWeights& w, const void* x, TqActType x_type,
                                int64_t m, int64_t ldx, float* y_f32, uint16_t* y_bf16,
                                int64_t ldy, cudaStream_t stream);

  int device_ = 0;
  bool int8_gemv_ = false, int8_all_rows_ = false, programmatic_launch_ = true;
  int sm_major_ = 0, sm_minor_ = 0, multiprocessors_ = 0;
  void* cublas_ = nullptr;  // cublasHandle_t
  Buffer workspace_;        // split-K partials + counters (zeroed once)
  Buffer x_rot_;            // fp16 x_rot + scales (separate rotation and GEMM), or int8 x_q + scales
  Buffer gemm_workspace_;   // GEMM split-K partials
  Buffer weight_;           // dequantized weight (bf16 or f32)
  Buffer cublas_workspace_;
};

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_TQ_LINEAR_RUNNER_H_
