#include "kernels/cuda/tq_linear_runner.h"

#if TQ_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device.h"
#include "kernels/util/status_macros.h"

namespace tq::cuda {
namespace {

constexpr size_t kCublasWorkspaceBytes = 32u << 20;  // cuBLAS' recommendation for Hopper

// For the int8 GEMV x_rot_ holds x_q int8 [m, Kp] (16-byte aligned), then the scales [m, groups].
size_t XQBytes(const TqCudaWeights& w, int64_t m) {
  return static_cast<size_t>(m) * TqCudaPaddedK(w.k) + static_cast<size_t>(m) * TqCudaGroups(w.k) * 4;
}

absl::Status CublasToStatus(cublasStatus_t st, const char* call) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cublasGetStatusName(st), " (",
                                          cublasGetStatusString(st), ")"));
}

#define TQ_CUBLAS_RETURN_IF_ERROR(expr)                                \
  do {                                                                 \
    ::absl::Status tq_cublas_status_ = CublasToStatus((expr), #expr);  \
    if (!tq_cublas_status_.ok()) return tq_cublas_status_;             \
  } while (0)

cublasHandle_t Handle(void* h) { return static_cast<cublasHandle_t>(h); }

}  // namespace

absl::StatusOr<std::unique_ptr<TqLinearRunner>> TqLinearRunner::Create(int device) {
  std::unique_ptr<TqLinearRunner> r(new TqLinearRunner());
  TQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  absl::StatusOr<DeviceInfo> info = GetDeviceInfo(device);
  if (!info.ok()) return info.status();
  r->device_ = device;
  r->sm_major_ = info->sm_major;
  r->sm_minor_ = info->sm_minor;
  r->multiprocessors_ = info->multiprocessors;
  cublasHandle_t h = nullptr;
  TQ_CUBLAS_RETURN_IF_ERROR(cublasCreate(&h));
  r->cublas_ = h;
  TQ_CUDA_RETURN_IF_ERROR(cudaMalloc(&r->cublas_workspace_.ptr, kCublasWorkspaceBytes));
  r->cublas_workspace_.bytes = kCublasWorkspaceBytes;
  TQ_CUBLAS_RETURN_IF_ERROR(
      cublasSetWorkspace(h, r->cublas_workspace_.ptr, r->cublas_workspace_.bytes));
  return r;
}

TqLinearRunner::~TqLinearRunner() {
  if (cublas_ != nullptr) cublasDestroy(Handle(cublas_));
  for (Buffer* b : {&workspace_, &x_rot_, &gemm_workspace_, &weight_, &cublas_workspace_}) {
    if (b->ptr != nullptr) cudaFree(b->ptr);
  }
}

absl::Status TqLinearRunner::CheckFormat(int bits, int group_size, int rotation_block) const {
  const char* why = TqCudaUnsupportedReason(bits, group_size, rotation_block, sm_major_, sm_minor_);
  if (why != nullptr) {
    return absl::UnimplementedError(absl::StrCat("TQ on CUDA (bits ", bits, ", group ", group_size,
                                                 ", rotation block ", rotation_block, ", sm_",
                                                 sm_major_, sm_minor_, "): ", why));
  }
  return absl::OkStatus();
}

absl::Status TqLinearRunner::CheckSupported(const TqCudaWeights& w) const {
  TQ_RETURN_IF_ERROR(CheckFormat(w.bits, w.group_size, w.rotation_block));
  if (w.n < 0 || w.k < 0 || w.packed == nullptr || w.gains == nullptr || w.codebook == nullptr) {
    return absl::InvalidArgumentError("TQ on CUDA: null weight pointers or negative shape");
  }
  return absl::OkStatus();
}

TqKernel TqLinearRunner::KernelFor(const TqCudaWeights& w, int64_t m) const {
  const bool int8_rows = m == 1 || (int8_all_rows_ && m <= 65535);
  if (int8_gemv_ && int8_rows && TqGemvInt8UnsupportedReason(w.bits, w.group_size, sm_major_) == nullptr &&
      CheckFormat(w.bits, w.group_size, w.rotation_block).ok()) {
    return TqKernel::kInt8Gemv;
  }
  return SelectTqKernel(w.bits, w.group_size, w.rotation_block, m, sm_major_, sm_minor_);
}

absl::Status TqLinearRunner::Grow(Buffer& b, size_t bytes, bool zero, cudaStream_t stream) {
  if (b.bytes >= bytes) return absl::OkStatus();
  if (b.ptr != nullptr) {
    TQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));  // the old buffer may be in use
    TQ_CUDA_RETURN_IF_ERROR(cudaFree(b.ptr));
    b.ptr = nullptr;
    b.bytes = 0;
  }
  TQ_CUDA_RETURN_IF_ERROR(cudaMalloc(&b.ptr, bytes));
  b.bytes = bytes;
  if (zero) TQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(b.ptr, 0, bytes, stream));
  return absl::OkStatus();
}

TqGemmConfig TqLinearRunner::GemmConfigFor(const TqCudaWeights& w, int64_t m) const {
  return PlanTqGemm(m, w.n, w.k, w.bits, multiprocessors_, sm_major_, sm_minor_);
}

absl::Status TqLinearRunner::Reserve(const TqCudaWeights& w, int64_t m, TqKernel kernel,
                                     const TqMmaConfig* mma_config, cudaStream_t stream,
                                     const TqGemmConfig* gemm_config, int expert_slots) {
  if (kernel == TqKernel::kUnsupported) kernel = KernelFor(w, m);
  if (kernel == TqKernel::kInt8Gemv) return Grow(x_rot_, XQBytes(w, m), /*zero=*/false, stream);
  if (kernel == TqKernel::kGemm) {
    const TqGemmConfig cfg = gemm_config != nullptr ? *gemm_config : GemmConfigFor(w, m);
    const size_t ws = TqGemmWorkspaceBytes(m, w.n, w.k, cfg);
    if (ws > 0) TQ_RETURN_IF_ERROR(Grow(gemm_workspace_, ws, /*zero=*/false, stream));
    TQ_RETURN_IF_ERROR(Grow(x_rot_, XRotBytes(w, m), /*zero=*/false, stream));
    return absl::OkStatus();
  }
  if (kernel == TqKernel::kMmaFused || kernel == TqKernel::kMmaSeparate) {
    TqMmaConfig cfg = mma_config != nullptr ? *mma_config
                                            : PlanTqMma(m, w.n, w.k, w.bits, multiprocessors_);
    cfg.fused_rotation = kernel == TqKernel::kMmaFused;
    const size_t ws = TqMmaWorkspaceBytes(m, w.n, w.k, w.bits, cfg, expert_slots);
    if (ws > 0) TQ_RETURN_IF_ERROR(Grow(workspace_, ws, /*zero=*/true, stream));
    if (kernel == TqKernel::kMmaSeparate) {
      TQ_RETURN_IF_ERROR(Grow(x_rot_, XRotBytes(w, m), /*zero=*/false, stream));
    }
  } else if (kernel == TqKernel::kDequantCublas) {
    TQ_RETURN_IF_ERROR(Grow(weight_, static_cast<size_t>(w.n) * w.k * 4, false, stream));
  }
  return absl::OkStatus();
}

namespace {

// x_rot_ holds the fp16 x_rot [m, Kp] (padded to 16 bytes), then the scales [m, groups].
size_t XRotHalfBytes(const TqCudaWeights& w, int64_t m) {
  return (static_cast<size_t>(m) * TqCudaPaddedK(w.k) * 2 + 15) & ~size_t{15};
}

}  // namespace

size_t TqLinearRunner::XRotBytes(const TqCudaWeights& w, int64_t m) {
  return XRotHalfBytes(w, m) + static_cast<size_t>(m) * TqCudaGroups(w.k) * 4;
}

absl::Status TqLinearRunner::RotateToHalf(const TqCudaWeights& w, const void* x,
                                          TqActType x_type, int64_t m, int64_t ldx,
                                          cudaStream_t stream, const uint16_t** x_h,
                                          const float** x_scale) {
  uint16_t* h = static_cast<uint16_t*>(x_rot_.ptr);
  float* sc = reinterpret_cast<float*>(static_cast<char*>(x_rot_.ptr) + XRotHalfBytes(w, m));
  TQ_CUDA_RETURN_IF_ERROR(
      LaunchTqRotateInput(x, x_type, m, w.k, ldx, w.rotation_block, nullptr, h, sc, stream));
  *x_h = h;
  *x_scale = sc;
  return absl::OkStatus();
}

absl::Status TqLinearRunner::RunMma(const TqCudaWeights& w, const void* x, TqActType x_type,
                                    int64_t m, int64_t ldx, float* y_f32, uint16_t* y_bf16,
                                    int64_t ldy, cudaStream_t stream, bool fused,
                                    const TqMmaConfig* mma_config, const ExpertSelect* select) {
  TqMmaConfig cfg =
      mma_config != nullptr ? *mma_config : PlanTqMma(m, w.n, w.k, w.bits, multiprocessors_);
  cfg.fused_rotation = fused;
  TQ_RETURN_IF_ERROR(Reserve(w, m, fused ? TqKernel::kMmaFused : TqKernel::kMmaSeparate, &cfg, stream,
                             nullptr, select != nullptr ? select->slots : 1));
  TqMmaArgs a;
  a.w = w;
  a.m = m;
  a.x = x;
  a.x_type = x_type;
  a.ldx = ldx;
  a.y_f32 = y_f32;
  a.y_bf16 = y_bf16;
  a.ldy = ldy;
  a.workspace = workspace_.ptr;
  a.workspace_bytes = workspace_.bytes;
  if (select != nullptr) {
    a.expert = select->expert;
    a.expert_packed_stride = select->packed_stride;
    a.expert_gains_stride = select->gains_stride;
    a.expert_slots = select->slots;  // 1: one plane, as an ungrouped launch
    a.x_slot_div = select->x_slot_div;
  }
  if (!fused) TQ_RETURN_IF_ERROR(RotateToHalf(w, x, x_type, m, ldx, stream, &a.x_rot_f16, &a.x_scale));
  TQ_CUDA_RETURN_IF_ERROR(LaunchTqLinearMma(a, cfg, stream));
  return absl::OkStatus();
}

absl::Status TqLinearRunner::RunExpert(const TqCudaWeights& w, const int32_t* expert, int64_t packed_stride,
                                       int64_t gains_stride, const void* x, TqActType x_type, int64_t m,
                                       int64_t ldx, float* y_f32, int64_t ldy, cudaStream_t stream, int slots,
                                       int x_slot_div) {
  TQ_RETURN_IF_ERROR(CheckSupported(w));
  if (expert == nullptr || m < 0 || m > 16 || ldx < w.k || ldy < w.n || y_f32 == nullptr || packed_stride < 0 ||
      gains_stride < 0 || slots < 1 || slots > kTqMmaMaxExpertSlots || x_slot_div < 1 ||
      (slots > 1 && m > 2)) {  // grouped: the fused (m <= 2) path, which reads x directly
    return absl::InvalidArgumentError(absl::StrCat("TqLinearRunner::RunExpert: bad arguments m=", m, " ldx=", ldx,
                                                   " ldy=", ldy, " n=", w.n, " k=", w.k, " slots=", slots,
                                                   " x_slot_div=", x_slot_div));
  }
  if (m == 0 || w.n == 0) return absl::OkStatus();
  ExpertSelect select;
  select.expert = expert;
  select.packed_stride = packed_stride;
  select.gains_stride = gains_stride;
  select.slots = slots;
  select.x_slot_div = x_slot_div;
  // No K split: the slots (grid planes) supply the parallelism, and a grouped launch then equals
  // its slots' solo launches bit for bit (the plan is the same for every slot count).
  TqMmaConfig cfg = PlanTqMma(m, w.n, w.k, w.bits, multiprocessors_);
  cfg.splits = 1;
  return RunMma(w, x, x_type, m, ldx, y_f32, nullptr, ldy, stream, /*fused=*/m <= 2, &cfg, &select);
}

absl::Status TqLinearRunner::RunGemm(const TqCudaWeights& w, const void* x, TqActType x_type,
                                     int64_t m, int64_t ldx, float* y_f32, uint16_t* y_bf16,
                                     int64_t ldy, cudaStream_t stream,
                                     const TqGemmConfig* gemm_config) {
  const TqGemmConfig cfg = gemm_config != nullptr ? *gemm_config : GemmConfigFor(w, m);
  if (cfg.bm == 0) {
    return absl::UnimplementedError(absl::StrCat(
        "TQ GEMM: its shared memory (", TqGemmSharedBytes(w.bits, 64),
        " bytes) does not fit sm_", sm_major_, sm_minor_));
  }
  TQ_RETURN_IF_ERROR(Reserve(w, m, TqKernel::kGemm, nullptr, stream, &cfg));
  TqGemmArgs a;
  a.w = w;
  a.m = m;
  TQ_RETURN_IF_ERROR(RotateToHalf(w, x, x_type, m, ldx, stream, &a.x_rot_f16, &a.x_scale));
  a.y_f32 = y_f32;
  a.y_bf16 = y_bf16;
  a.ldy = ldy;
  a.workspace = gemm_workspace_.ptr;
  a.workspace_bytes = gemm_workspace_.bytes;
  TQ_CUDA_RETURN_IF_ERROR(LaunchTqGemm(a, cfg, stream));
  return absl::OkStatus();
}

absl::Status TqLinearRunner::RunInt8Gemv(const TqCudaWeights& w, const Int8Input& in, int64_t m, float* y_f32,
                                         uint16_t* y_bf16, int64_t ldy, cudaStream_t stream) {
  if (m > 1 && !int8_all_rows_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "int8 GEMV: m = ", m, " rows; it serves one-token steps (set_int8_gemv(true, /*all_rows=*/true) to run "
        "every m row by row)"));
  }
  if (m > 65535) return absl::InvalidArgumentError(absl::StrCat("int8 GEMV: m = ", m, " > 65535"));
  if (const char* why = TqGemvInt8UnsupportedReason(w.bits, w.group_size, sm_major_)) {
    return absl::UnimplementedError(absl::StrCat("int8 GEMV: ", why));
  }
  TQ_RETURN_IF_ERROR(Reserve(w, m, TqKernel::kInt8Gemv, nullptr, stream));
  int8_t* x_q = static_cast<int8_t*>(x_rot_.ptr);
  float* x_qscale = reinterpret_cast<float*>(x_q + m * TqCudaPaddedK(w.k));  // Kp: a multiple of 128
  // Programmatic launches on Hopper: the rotation and the GEMV start while their predecessor ends.
  const bool pdl = sm_major_ >= 9 && programmatic_launch_;
  if (in.normed) {
    TQ_CUDA_RETURN_IF_ERROR(LaunchTqAddRmsNormRotateInt8(const_cast<float*>(static_cast<const float*>(in.x)), in.ldx,
                                                         in.a, in.lda, in.norm_w, m, w.k, in.eps, in.h, in.ldh,
                                                         w.rotation_block, x_q, x_qscale, stream, pdl));
  } else if (in.gated) {
    TQ_CUDA_RETURN_IF_ERROR(LaunchTqSiluMulRotateInt8(static_cast<const float*>(in.x), in.ldx, m, w.k,
                                                      w.rotation_block, x_q, x_qscale, stream, pdl));
  } else {
    TQ_CUDA_RETURN_IF_ERROR(
        LaunchTqRotateInputInt8(in.x, in.x_type, m, w.k, in.ldx, w.rotation_block, x_q, x_qscale, stream, pdl));
  }
  TqGemvInt8Args a;
  a.w = w;
  a.x_q = x_q;
  a.x_qscale = x_qscale;
  a.y_f32 = y_f32;
  a.y_bf16 = y_bf16;
  a.m = m;
  a.ldy = ldy;
  TqGemvInt8Config cfg = PlanTqGemvInt8(w.n, w.k, multiprocessors_);
  cfg.programmatic = pdl;
  TQ_CUDA_RETURN_IF_ERROR(LaunchTqGemvInt8(a, cfg, stream));
  return absl::OkStatus();
}

absl::Status TqLinearRunner::RunSiluMulInt8(const TqCudaWeights& w, const float* gate_up, int64_t ld,
                                            int64_t m, float* y_f32, int64_t ldy, cudaStream_t stream) {
  TQ_RETURN_IF_ERROR(CheckSupported(w));
  if (KernelFor(w, m) != TqKernel::kInt8Gemv || ld < 2 * w.k || ldy < w.n || y_f32 == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("TqLinearRunner::RunSiluMulInt8: not an int8 GEMV problem (m=", m,
                                                   ", bits ", w.bits, ") or bad strides ld=", ld, " ldy=", ldy));
  }
  if (m == 0 || w.n == 0) return absl::OkStatus();
  Int8Input in;
  in.x = gate_up;
  in.ldx = ld;
  in.gated = true;
  return RunInt8Gemv(w, in, m, y_f32, nullptr, ldy, stream);
}

absl::Status TqLinearRunner::RunAddRmsNormInt8(const TqCudaWeights& w, float* x, int64_t ldx, const float* a,
                                               int64_t lda, const float* norm_w, float eps, int64_t m, float* h,
                                               int64_t ldh, float* y_f32, int64_t ldy, cudaStream_t stream) {
  TQ_RETURN_IF_ERROR(CheckSupported(w));
  if (KernelFor(w, m) != TqKernel::kInt8Gemv || w.k % kTqCudaGroupSize != 0 || ldx < w.k || ldh < w.k ||
      ldy < w.n || x == nullptr || h == nullptr || y_f32 == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("TqLinearRunner::RunAddRmsNormInt8: not an int8 GEMV problem (m=",
                                                   m, ", bits ", w.bits, ", k ", w.k, ") or bad strides / buffers"));
  }
  if (m == 0) return absl::OkStatus();
  if (w.n == 0) return absl::InvalidArgumentError("TqLinearRunner::RunAddRmsNormInt8: n = 0 (the norm would not run)");
  Int8Input in;
  in.x = x;
  in.ldx = ldx;
  in.normed = true;
  in.a = a;
  in.lda = lda;
  in.norm_w = norm_w;
  in.eps = eps;
  in.h = h;
  in.ldh = ldh;
  return RunInt8Gemv(w, in, m, y_f32, nullptr, ldy, stream);
}

absl::Status TqLinearRunner::RunDequantCublas(const TqCudaWeights& w, const void* x,
                                              TqActType x_type, int64_t m, int64_t ldx,
                                              float* y_f32, uint16_t* y_bf16, int64_t ldy,
                                              cudaStream_t stream) {
  TQ_RETURN_IF_ERROR(Reserve(w, m, TqKernel::kDequantCublas, nullptr, stream));
  const bool f32 = x_type == TqActType::kF32;
  // Ŵ in the activations' type (cuBLAS wants both operands of one type): bf16 → BF16 GEMM with
  // fp32 accumulation; f32 → SGEMM.
  if (f32) {
    TQ_CUDA_RETURN_IF_ERROR(
        LaunchTqDequantize(w, static_cast<float*>(weight_.ptr), nullptr, w.k, stream));
  } else {
    TQ_CUDA_RETURN_IF_ERROR(
        LaunchTqDequantize(w, nullptr, static_cast<uint16_t*>(weight_.ptr), w.k, stream));
  }
  cublasHandle_t h = Handle(cublas_);
  TQ_CUBLAS_RETURN_IF_ERROR(cublasSetStream(h, stream));
  const cudaDataType_t ab = f32 ? CUDA_R_32F : CUDA_R_16BF;
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view: Y^T [n, m] = W [k, n]^T · X^T [k, m].
  for (int out = 0; out < 2; ++out) {
    void* y = out == 0 ? static_cast<void*>(y_f32) : static_cast<void*>(y_bf16);
    if (y == nullptr) continue;
    TQ_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.n), static_cast<int>(m),
        static_cast<int>(w.k), &alpha, weight_.ptr, ab, static_cast<int>(w.k), x, ab,
        static_cast<int>(ldx), &beta, y, out == 0 ? CUDA_R_32F : CUDA_R_16BF,
        static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return absl::OkStatus();
}

absl::Status TqLinearRunner::Run(const TqCudaWeights& w, const void* x, TqActType x_type,
                                 int64_t m, int64_t ldx, float* y_f32, uint16_t* y_bf16,
                                 int64_t ldy, cudaStream_t stream, TqKernel force,
                                 const TqMmaConfig* mma_config,
                                 const TqGemmConfig* gemm_config) {
  TQ_RETURN_IF_ERROR(CheckSupported(w));
  if (m < 0 || ldx < w.k || ldy < w.n || (y_f32 == nullptr && y_bf16 == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("TqLinearRunner::Run: bad shape m=", m,
                                                   " ldx=", ldx, " ldy=", ldy, " n=", w.n,
                                                   " k=", w.k, " or no output"));
  }
  if (m == 0 || w.n == 0) return absl::OkStatus();
  const TqKernel kernel = force == TqKernel::kUnsupported ? KernelFor(w, m) : force;
  switch (kernel) {
    case TqKernel::kMmaFused:
      return RunMma(w, x, x_type, m, ldx, y_f32, y_bf16, ldy, stream, true, mma_config);
    case TqKernel::kMmaSeparate:
      return RunMma(w, x, x_type, m, ldx, y_f32, y_bf16, ldy, stream, false, mma_config);
    case TqKernel::kDequantCublas:
      return RunDequantCublas(w, x, x_type, m, ldx, y_f32, y_bf16, ldy, stream);
    case TqKernel::kGemm:
      return RunGemm(w, x, x_type, m, ldx, y_f32, y_bf16, ldy, stream, gemm_config);
    case TqKernel::kInt8Gemv:
      return RunInt8Gemv(w, Int8Input{x, x_type, ldx}, m, y_f32, y_bf16, ldy, stream);
    default:
      return absl::UnimplementedError("TqLinearRunner::Run: no kernel for this configuration");
  }
}

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
