// File: kernels/cuda/tq_linear.h
//
// CUDA kernels of TQ linear layers (y = x · Ŵᵀ with Ŵ stored as TQ packed codes, docs/FORMAT.md),
// the GPU counterparts of kernels/cpu/linear.h. Raw device pointers in, cudaError_t out; every
// launcher takes a cudaStream_t and never synchronizes. kernels/cuda/tq_linear_runner.h wraps
// them in absl::Status, owns scratch buffers and adds the cuBLAS fallback.
//
// Math (ALGORITHMS.md §3.1, as kernels/cpu/linear.h): with x_rot = D2·H_B·D1·x / sqrt(B) per
// group of G = 128 inputs,
//   y[i, j] = Σ_g gain[j, g] · Σ_t c[idx(j, g, t)] · x_rot[i, g·G + t].
// Layouts are the checkpoint's own (kernels/cpu/linear.h "Layouts"):
//   packed   uint8   [n · groups, G · bits / 8]   (32 / 48 / 64 bytes per group; 16-byte aligned)
//   gains    float32 [n, groups]
//   codebook float32 [2^bits]                      (quant::GetCodebook(bits, 128).centroids)
//   x        float32 or bf16 [m, k], row stride ldx (elements)
//   y        float32 and/or bf16 [m, ldy]
// bf16 and fp16 buffers are passed as uint16_t bit patterns so that this header needs no CUDA
// half-precision headers.
//
// Kernels:
//   (a) LaunchTqRotateInput: x → x_rot. float32 output is bitwise equal to cpu::TqRotateInput
//       (same float32 operations in the same order). Optional fp16 output with one power-of-two
//       scale per (row, group): x_rot ≈ x_rot_f16 · x_scale, the operand format of (b).
//   (b) LaunchTqLinearMma: the TQ GEMV / small-M kernel (any m; each tile of 8, 16 or 32
//       activation rows decodes each weight group once). Tensor cores (mma.sync m16n8k16, fp16
//       operands, fp32 accumulation, weights as the 16-row A operand): codes are decoded two at a
//       time through a 2^(2·bits)-entry table of fp16 pairs in shared memory straight into mma
//       fragments; gains (fp32) are applied per group to the fp32 partial sums. Persistent grid:
//       each CTA builds the table and its activation tile once, then streams many 16- or 32-row
//       blocks of codes through per-warp cp.async pipelines. Activations are either rotated in
//       the prologue ("fused": each CTA rotates the groups it needs into shared memory; no x_rot
//       round trip through HBM) or read from (a)'s fp16 output ("separate"). Split-K across CTAs
//       (small n or long k) reduces deterministically: the last CTA of a tile sums the partials
//       in a fixed order.
//   (c) LaunchTqGemm: the TQ GEMM for larger m (prefill, big decode batches). Each CTA decodes a
//       128-row x 128-column weight tile per K step (one group) into shared memory as fp16
//       (c · gain) once for up to 64 or 128 activation rows, and multiplies it with (a)'s fp16
//       x_rot tile on the tensor cores (mma.sync m16n8k16, fp32 accumulation, ldmatrix
//       fragments), scaling each group's partial sums by the activation scale. cp.async rings
//       (codes 5 steps ahead, x 2), decoded tile double-buffered. Split-K across CTAs writes fp32
//       partials to the workspace, summed in split order by a second kernel.
//   (d) LaunchTqDequantize: Ŵ → float32 (bitwise equal to quant::TqQuantizer::DequantizeRows)
//       or bf16 (its round-to-nearest-even), for a cuBLAS fallback at large m and for tests.
//   (e) SelectTqKernel / TqCudaSupport: which path runs for (bits, G, B, m) and whether a device
//       can run it at all.
//   (f) LaunchTqGemvInt8: an opt-in TQ3 GEMV on int8 activations (W3A8) for m = 1 decode steps
//       (any m runs as m independent rows, for evaluating the arithmetic). x_rot is
//       quantized to int8 per (row, group) by (a) ("x_q"), the codebook to int8 (one scale for
//       the 8 centroids), and each lane decodes 8 codes with 4 logic ops into a byte-permute
//       selector, looks up 4 int8 centroids per PRMT and multiplies them with dp4a (exact int32
//       sums per group); gains and scales are applied in fp32. About 1 ALU op per weight against
//       the tensor-core path's ~2.6 issued instructions (docs/gpu/tq_linear_notes.md run 16).
//       Not the checkpoint's arithmetic: see "Precision of (f)".
//
// Precision of (b): x_rot is rounded to fp16 after scaling each (row, group) by a power of two
// that brings its largest magnitude into [2^13, 2^14) (so neither overflow nor subnormals occur
// for any finite input), the codebook is rounded to fp16, products and sums are fp32. Each
// operand is within 2^-11 (relative) of its float32 value, hence
// |y − y_fp32| ≤ ~2·2^-11 · Σ_g gain·Σ_t |c·x_rot| ≤ 9.8e-4 · ‖ŵ_j‖·‖x_i‖ (Cauchy–Schwarz),
// usually far less (random data: ~1e-5). NaN and Inf in x or the gains propagate to y.
//
// Precision of (c): x_rot as in (b); the decoded weight is fp16(fp16(c) · gain) (products in
// fp32, one rounding), so each weight is within ~2·2^-11 of its float32 value and
// |y − y_fp32| ≤ ~3·2^-11 · Σ_g gain·Σ_t |c·x_rot| ≤ 1.5e-3 · ‖ŵ_j‖·‖x_i‖ (typically ~1e-4).
// A decoded weight below 2^-14 in magnitude is an fp16 subnormal (absolute error ≤ 2^-25); one
// above 65504 would overflow (no TQ checkpoint of a trained model comes near either).
//
// Precision of (f): x_q = rint(x_rot · 127 / amax_g) with amax_g the group's largest magnitude
// (|error| ≤ amax_g / 254 per element) and c8 = rint(c · 127 / max|c|) (TQ3: {±14, ±45, ±79,
// ±127} for {±0.2451, ±0.7560, ±1.3440, ±2.1520} in units of the largest; the smallest is 3%
// off). |y − y_fp32| / (‖ŵ_j‖·‖x‖) is ~1e-3 on random data (tq_linear_test bounds it by 5e-3;
// 100x the fp16 path's), far below TQ3's own quantization noise; the model-level effect is
// measured by perplexity (docs/BENCHMARKS.md §9: tiny Qwen3 TQ3 59.3793 → 59.3822). A NaN or Inf
// in a group of x makes y NaN. kernels/cuda/tq_gemv_int8_reference.h is its exact CPU reference.
//
// Determinism: for a given (m, n, k, config) every launch produces the same bits. Results are
// not batch invariant (the plan, hence the summation order, depends on m).
//
// Requirements: G = 128; bits 2, 3 or 4; rotation_block 0 (full) or a power of two in [2, 128];
// sm_80 or newer (built for sm_90a and sm_80). Pointers 16-byte aligned (cudaMalloc's are).
//
// Usage (m = 1 decode step, bf16 activations):
//   tq::cuda::TqMmaArgs a;
//   a.w = {packed, gains, codebook, n, k, /*bits=*/3};
//   a.x = x_bf16; a.x_type = tq::cuda::TqActType::kBF16; a.m = 1; a.ldx = k;
//   a.y_bf16 = y; a.ldy = n;
//   tq::cuda::TqMmaConfig cfg = tq::cuda::PlanTqMma(a.m, n, k, 3, sm_count);
//   // workspace: TqMmaWorkspaceBytes(a.m, n, k, cfg) bytes, zeroed once after allocation
//   a.workspace = ws;
//   cudaError_t err = tq::cuda::LaunchTqLinearMma(a, cfg, stream);
#ifndef TQSERVE_KERNELS_CUDA_TQ_LINEAR_H_
#define TQSERVE_KERNELS_CUDA_TQ_LINEAR_H_

#include <cstddef>
#include <cstdint>

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

namespace tq::cuda {

// The only group size the CUDA kernels support.
inline constexpr int kTqCudaGroupSize = 128;

enum class TqActType { kF32 = 0, kBF16 = 1 };

// A TQ weight on the device (docs/FORMAT.md §1.2).
struct TqCudaWeights {
  const uint8_t* packed = nullptr;   // [n * groups, 128 * bits / 8]
  const float* gains = nullptr;      // [n, groups]
  const float* codebook = nullptr;   // [2^bits]
  int64_t n = 0;                     // output features
  int64_t k = 0;                     // input features (unpadded)
  int bits = 3;                      // 2, 3 or 4
  int group_size = kTqCudaGroupSize;
  int rotation_block = 0;            // 0 or 128 = full rotation; else block-diagonal block size
};

inline int64_t TqCudaGroups(int64_t k) { return (k + kTqCudaGroupSize - 1) / kTqCudaGroupSize; }
inline int64_t TqCudaPaddedK(int64_t k) { return TqCudaGroups(k) * kTqCudaGroupSize; }

// ---------------------------------------------------------------------------------------------
// (a) Rotation of the activations.
// x: [m, k] (row stride ldx elements) of x_type. Writes, for each non-null output:
//   x_rot     float32 [m, Kp]      bitwise equal to cpu::TqRotateInput (padding columns 0);
//   x_rot_f16 fp16    [m, Kp] and x_scale float32 [m, groups] (both or neither):
//             x_rot[i, g·128 + t] ≈ x_rot_f16[i, g·128 + t] · x_scale[i, g], x_scale a power of 2.
cudaError_t LaunchTqRotateInput(const void* x, TqActType x_type, int64_t m, int64_t k, int64_t ldx,
                                int rotation_block, float* x_rot, uint16_t* x_rot_f16,
                                float* x_scale, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// (b) The tensor-core TQ GEMV / small-M kernel.

// Tiling of one launch; PlanTqMma picks it, tests and benchmarks may override it.
struct TqMmaConfig {
  int n_tiles = 1;   // weight rows per row block = 16 · n_tiles; 1 or 2
  int splits = 1;    // K split across CTAs (1 = none); clamped so that no split is empty
  bool fused_rotation = true;  // rotate x in the prologue (else read x_rot_f16 / x_scale)
  int ctas = 0;      // persistent grid size; 0 = every CTA that fits on the device at once
};

inline constexpr int kTqMmaMaxTiles = 32768;

struct TqMmaArgs {
  TqCudaWeights w;
  int64_t m = 0;                        // activation rows
  // fused_rotation: the raw activations.
  const void* x = nullptr;
  TqActType x_type = TqActType::kBF16;
  int64_t ldx = 0;                      // elements
  // !fused_rotation: LaunchTqRotateInput's fp16 output ([m, Kp] and [m, groups]).
  const uint16_t* x_rot_f16 = nullptr;
  const float* x_scale = nullptr;
  // Outputs (at least one): y[i * ldy + j] for i < m, j < n. Other entries are not touched.
  float* y_f32 = nullptr;
  uint16_t* y_bf16 = nullptr;
  int64_t ldy = 0;
  // Split-K scratch (TqMmaWorkspaceBytes); zero-filled once after allocation: every launch
  // leaves its counters at zero again, and the counters sit at the start for every shape, so one
  // workspace serves launches of any shapes in sequence (at most kTqMmaMaxTiles row-block x
  // token tiles). Not shared by launches that may run concurrently.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // Expert selection (MoE): when set, the weights are expert *expert (read on the device, so a
  // captured graph serves any routing) of experts stored back to back — w.packed and w.gains
  // point at expert 0, one expert's codes are expert_packed_stride bytes and its gains
  // expert_gains_stride floats further. The index must be in range (the router guarantees it).
  const int32_t* expert = nullptr;
  int64_t expert_packed_stride = 0;
  int64_t expert_gains_stride = 0;
  // Grouped experts (MoE decode: all of a step's routed (token, slot) pairs in one launch): when
  // expert_slots = S > 0, the launch runs S problems of m rows at once, problem s on expert
  // expert[s] with activation rows from (s / x_slot_div) · m (x_slot_div = top-k: each token's
  // slots read that token's row; 1: slot s reads row s) and output rows from s · m (row stride
  // ldy throughout). Each problem is computed exactly as a launch of it alone (same plan, same
  // bits). The workspace must hold TqMmaWorkspaceBytes(..., S).
  int64_t expert_slots = 0;
  int64_t x_slot_div = 1;
};

// At most this many grouped expert slots per launch (grid planes).
inline constexpr int kTqMmaMaxExpertSlots = 1024;

// A config for this problem on a device with `multiprocessors` SMs.
TqMmaConfig PlanTqMma(int64_t m, int64_t n, int64_t k, int bits, int multiprocessors);

// The config actually launched for `cfg` (splits clamped to the K range, shared memory limits).
TqMmaConfig NormalizeTqMmaConfig(int64_t m, int64_t n, int64_t k, int bits, TqMmaConfig cfg);

// Bytes of workspace LaunchTqLinearMma needs (0 when splits == 1), for `expert_slots` grouped
// problems (TqMmaArgs::expert_slots; 0 or 1: one).
size_t TqMmaWorkspaceBytes(int64_t m, int64_t n, int64_t k, int bits, const TqMmaConfig& cfg,
                           int expert_slots = 1);

// Dynamic shared memory of one CTA (for occupancy reports).
size_t TqMmaSharedBytes(int64_t m, int64_t n, int64_t k, int bits, const TqMmaConfig& cfg);

cudaError_t LaunchTqLinearMma(const TqMmaArgs& args, const TqMmaConfig& cfg, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// (c) The TQ GEMM.
struct TqGemmConfig {
  int bm = 64;     // activation rows per CTA tile: 64 or 128 (0 from PlanTqGemm = cannot run)
  int splits = 1;  // K split across CTAs; clamped so that no split is empty
};

struct TqGemmArgs {
  TqCudaWeights w;
  int64_t m = 0;
  const uint16_t* x_rot_f16 = nullptr;   // LaunchTqRotateInput's fp16 output [m, Kp]
  const float* x_scale = nullptr;        // and its scales [m, groups]
  float* y_f32 = nullptr;                // outputs as in TqMmaArgs (at least one)
  uint16_t* y_bf16 = nullptr;
  int64_t ldy = 0;
  void* workspace = nullptr;             // TqGemmWorkspaceBytes (no zeroing needed)
  size_t workspace_bytes = 0;
};

// A config for this problem on a device with `multiprocessors` SMs of compute capability
// sm_major.sm_minor; bm = 0 when the kernel's shared memory does not fit the device.
TqGemmConfig PlanTqGemm(int64_t m, int64_t n, int64_t k, int bits, int multiprocessors,
                        int sm_major, int sm_minor);
TqGemmConfig NormalizeTqGemmConfig(int64_t m, int64_t n, int64_t k, TqGemmConfig cfg);
size_t TqGemmWorkspaceBytes(int64_t m, int64_t n, int64_t k, const TqGemmConfig& cfg);
size_t TqGemmSharedBytes(int bits, int bm);

cudaError_t LaunchTqGemm(const TqGemmArgs& args, const TqGemmConfig& cfg, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// (d) Dequantization: out[j * ldw + t] = Ŵ[j, t] for j < n, t < k (the padding is dropped).
// Exactly one of w_f32 / w_bf16 is non-null.
cudaError_t LaunchTqDequantize(const TqCudaWeights& w, float* w_f32, uint16_t* w_bf16, int64_t ldw,
                               cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// (f) The int8-activation GEMV (bits 3, G = 128; any n, k; m rows as m independent GEMVs).

// x → x_rot (as (a), bitwise the float32 rotation) → x_q int8 [m, Kp] and x_qscale float32
// [m, groups]: x_rot[i, g·128 + t] ≈ x_q[i, g·128 + t] · x_qscale[i, g] with
// x_qscale = amax / 127 (0 for an all-zero group, NaN when the group holds NaN or Inf; x_q then 0).
// x_q must be 4-byte aligned.
// programmatic: launch with programmatic stream serialization (sm_90+): the kernel starts while
// the previous one finishes (it waits for it before reading x) and lets the GEMV after it start.
cudaError_t LaunchTqRotateInputInt8(const void* x, TqActType x_type, int64_t m, int64_t k,
                                    int64_t ldx, int rotation_block, int8_t* x_q,
                                    float* x_qscale, cudaStream_t stream, bool programmatic = false);

// The same for x = silu(g) · u of SwiGLU rows [g | u] (gate_up: [m, ld], g at column 0, u at
// column k, ld ≥ 2k): bitwise what nn_ops' SiluMul followed by LaunchTqRotateInputInt8 give, in
// one launch (the MLP's down projection on the int8 GEMV).
cudaError_t LaunchTqSiluMulRotateInt8(const float* gate_up, int64_t ld, int64_t m, int64_t k,
                                      int rotation_block, int8_t* x_q, float* x_qscale,
                                      cudaStream_t stream, bool programmatic = false);

// The same for the RMSNorm output y = RmsNorm(x [+= a]) · w of rows of x (k a multiple of 128;
// rows, a, w and y 16-byte aligned, row strides multiples of 4): x += a first when a is non-null
// (written back), y written, and x_q / x_qscale its int8 rotation — bitwise nn_ops'
// AddRmsNormRows (RmsNormRows when a is null) followed by LaunchTqRotateInputInt8 of y, in one
// launch of one CTA per row (an engine layer's norm and the next linear's rotation at m = 1).
// x_q rows are k bytes apart (k = its padded width).
cudaError_t LaunchTqAddRmsNormRotateInt8(float* x, int64_t ldx, const float* a, int64_t lda, const float* w,
                                         int64_t m, int64_t k, float eps, float* y, int64_t ldy, int rotation_block,
                                         int8_t* x_q, float* x_qscale, cudaStream_t stream,
                                         bool programmatic = false);

// Tiling: each CTA runs `slices` warps over the K slices of 32 groups (a lane per group; more
// slices than warps loop) for `chunks` row chunks of rows_per_chunk rows, and sums the slices'
// partial rows in shared memory in slice order (deterministic, no workspace).
struct TqGemvInt8Config {
  int rows_per_chunk = 16;
  // Launch with programmatic stream serialization (sm_90+): each CTA loads its first codes while
  // the kernel before it (the int8 rotation) finishes, then waits for it before reading x_q.
  bool programmatic = false;
};

struct TqGemvInt8Args {
  TqCudaWeights w;                  // bits 3; codebook read on the device (float32 [8])
  int64_t m = 1;                    // activation rows (≤ 65535), each its own GEMV
  const int8_t* x_q = nullptr;      // [m, Kp] (LaunchTqRotateInputInt8)
  const float* x_qscale = nullptr;  // [m, groups]
  float* y_f32 = nullptr;           // [m, ldy]; at least one output
  uint16_t* y_bf16 = nullptr;       // [m, ldy]
  int64_t ldy = 0;                  // ≥ n
};

// nullptr when (f) can run this weight format; else why not.
const char* TqGemvInt8UnsupportedReason(int bits, int group_size, int sm_major);

// Rows per chunk so that about 8 (small layers) or 16 (n·k ≥ 50M) warps per SM have work,
// rounded to whole waves of resident CTAs on the current device (docs/gpu/tq_linear_notes.md
// run 16).
TqGemvInt8Config PlanTqGemvInt8(int64_t n, int64_t k, int multiprocessors);

cudaError_t LaunchTqGemvInt8(const TqGemvInt8Args& args, const TqGemvInt8Config& cfg,
                             cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// (e) Dispatch.
enum class TqKernel {
  kUnsupported = 0,
  kMmaFused = 1,       // LaunchTqLinearMma with fused_rotation
  kMmaSeparate = 2,    // LaunchTqRotateInput (fp16) + LaunchTqLinearMma
  kDequantCublas = 3,  // LaunchTqDequantize (bf16) + a cuBLAS BF16 GEMM
  kGemm = 4,           // LaunchTqRotateInput (fp16) + LaunchTqGemm
  kInt8Gemv = 5,       // LaunchTqRotateInputInt8 + LaunchTqGemvInt8 (opt-in, m = 1, TQ3)
};

const char* TqKernelName(TqKernel kernel);

// nullptr when (bits, group_size, rotation_block) can run on a device of compute capability
// sm_major.sm_minor; otherwise a static string saying why not.
const char* TqCudaUnsupportedReason(int bits, int group_size, int rotation_block, int sm_major,
                                    int sm_minor);

// The kernel for m activation rows (bits x group size x m range → kernel; kUnsupported when
// TqCudaUnsupportedReason says so). Crossovers measured on an H100 (docs/BENCHMARKS.md §8).
TqKernel SelectTqKernel(int bits, int group_size, int rotation_block, int64_t m, int sm_major,
                        int sm_minor);

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_TQ_LINEAR_H_
