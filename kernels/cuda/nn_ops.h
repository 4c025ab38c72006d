// File: kernels/cuda/nn_ops.h
//
// CUDA kernels for the non-linear-layer parts of a dense decoder step (the CPU references are
// kernels/nn/ops.h and engine/model/transformer.cc): embedding gather, RMSNorm (rows or per
// head), rotate-half RoPE from position-indexed cos/sin tables, K/V writes into a paged BF16
// cache, paged GQA attention (causal, optional sliding window) with an online softmax, SiLU·mul,
// residual add, and a dense linear layer with BF16 weights for the high-precision layers
// (lm_head, or models kept in BF16).
//
// All pointers are device pointers; every launcher enqueues on `stream` and returns the launch
// error (cudaSuccess when the arguments were launched). Activations are fp32, row-major.
// Only compiled when the CUDA toolkit is present (TQ_HAVE_CUDA).
//
// Paged KV cache layout (per layer, K and V separately), BF16 bits as uint16_t:
//   [num_blocks, block_size, num_kv_heads, head_dim]
// Token t of the step writes slot `slots[t]` = block * block_size + offset. Attention for token
// t reads positions [lo, pos[t]] of its sequence through `block_table + table_offset[t]`
// (block ids in position order), lo = max(0, pos[t] - window + 1) when window > 0, else 0.
#ifndef TQSERVE_KERNELS_CUDA_NN_OPS_H_
#define TQSERVE_KERNELS_CUDA_NN_OPS_H_

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tq::cuda {

enum class DType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// x[t, :] = table[ids[t], :] as fp32 (table [vocab, hidden] of `dtype`).
cudaError_t EmbedRows(const void* table, DType dtype, const int32_t* ids, int64_t rows, int64_t hidden,
                      float* x, cudaStream_t stream);

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w (w may be null). rows x n, row strides
// ldx / ldy (in place allowed). Per-head norms: rows = tokens * heads, n = head_dim, ld = head_dim.
cudaError_t RmsNormRows(const float* x, int64_t ldx, const float* w, int64_t rows, int64_t n, float eps,
                        float* y, int64_t ldy, cudaStream_t stream);

// x[r, :] += a[r, :] (written back), then y[r, :] = RmsNorm(x[r, :]) * w: a residual add and
// the next norm in one launch, bitwise AddInPlace followed by RmsNormRows. y must not alias x.
cudaError_t AddRmsNormRows(float* x, int64_t ldx, const float* a, int64_t lda, const float* w, int64_t rows,
                           int64_t n, float eps, float* y, int64_t ldy, cudaStream_t stream);

// Per-head RMSNorm in place: for each of `rows` rows (row stride ld) and each of `heads`
// consecutive heads of head_dim values, x = x / rms(x) * w (w: head_dim weights, shared).
cudaError_t RmsNormHeads(float* x, int64_t ld, int64_t rows, int heads, int head_dim, const float* w, float eps,
                         cudaStream_t stream);

// Rotate-half RoPE, in place, on `heads` heads of head_dim values in each of `rows` rows
// (row stride ld); cos/sin: [max_positions, head_dim / 2]; positions[row].
cudaError_t ApplyRope(float* x, int64_t ld, int64_t rows, int heads, int head_dim, const int32_t* positions,
                      const float* cos, const float* sin, cudaStream_t stream);

// Stores K and V rows (num_kv_heads * head_dim fp32 each, row stride ld) as BF16 at slots[row].
cudaError_t WriteKvBf16(const float* k, const float* v, int64_t ld, int64_t rows, int num_kv_heads, int head_dim,
                        const int64_t* slots, uint16_t* k_cache, uint16_t* v_cache, cudaStream_t stream);

struct PagedAttentionParams {
  const float* q = nullptr;  // [rows, num_heads * head_dim], row stride ldq
  int64_t ldq = 0;
  const uint16_t* k_cache = nullptr;  // BF16, layout above
  const uint16_t* v_cache = nullptr;
  const int32_t* block_table = nullptr;   // flat block ids of all sequences
  const int32_t* table_offset = nullptr;  // [rows]: where row's sequence table starts
  const int32_t* positions = nullptr;     // [rows]: the row's position (it attends to [lo, pos])
  int64_t rows = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // even, at most 576
  int block_size = 0;
  int64_t window = 0;  // 0: full causal
  float scale = 0;     // usually 1/sqrt(head_dim)
  float* out = nullptr;  // [rows, num_heads * head_dim], row stride ldo
  int64_t ldo = 0;
};
// Whether PagedAttention supports this head_dim.
bool PagedAttentionSupports(int head_dim);
cudaError_t PagedAttention(const PagedAttentionParams& p, cudaStream_t stream);

// y[i] = silu(g[i]) * u[i] over rows x n (row strides ldg, ldu, ldy).
cudaError_t SiluMul(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int64_t n, float* y,
                    int64_t ldy, cudaStream_t stream);

// x[i] += y[i] over n floats.
cudaError_t AddInPlace(float* x, const float* y, int64_t n, cudaStream_t stream);

// y[r, j] += bias[j] over rows x n (row stride ldy).
cudaError_t AddBiasRows(float* y, int64_t ldy, const float* bias, int64_t rows, int64_t n, cudaStream_t stream);

// Gathers rows: y[i, :] = x[index[i], :] (n floats per row).
cudaError_t GatherRows(const float* x, const int32_t* index, int64_t rows, int64_t n, float* y,
                       cudaStream_t stream);

// Scatter-adds scaled rows: y[rows[i], :] += w[i] · x[i, :] for i < count (n floats per row, y's
// row stride ldy). The destination rows must be distinct within one call (the MoE combine: one
// call per expert, whose tokens are distinct).
cudaError_t AddScaledRows(const float* x, const int32_t* rows, const float* w, int64_t count, int64_t n, float* y,
                          int64_t ldy, cudaStream_t stream);

// Dense linear layer with 16-bit or fp32 weights: y[r, j] = Σ_c x[r, c] · w[j, c] (+ bias[j]),
// w [n, k] row-major of `dtype`, x [m, k] fp32 (row stride ldx), y [m, n] fp32 (row stride ldy).
// Each weight row is read once per 8 activation rows; m = 1 (decode) splits K across a CTA's
// threads for 4 features at a time (DenseGemvKernel). k must be a multiple of 8.
cudaError_t DenseLinear(const void* w, DType dtype, int64_t n, int64_t k, const float* x, int64_t ldx, int64_t m,
                        const float* bias, float* y, int64_t ldy, cudaStream_t stream);

}  // namespace tq::cuda
#endif  // TQ_HAVE_CUDA

#endif  // TQSERVE_KERNELS_CUDA_NN_OPS_H_
