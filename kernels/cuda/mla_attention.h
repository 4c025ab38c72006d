// File: kernels/cuda/mla_attention.h
//
// Decode attention of Multi-head Latent Attention (DeepSeek-V2/V3) that reads each cached latent
// once for a group of up to 16 query heads, from a bf16 or a packed (PolarQuant) latent cache.
//
// The engine's absorbed MLA (kernels/cuda/mla_ops.h) turns each head's query into the latent
// space, q_lat[h] = [W_ukᵀ q_nope | q_pe] (latent_dim values), and attends over the cached latents
// x_j = [c_j | k_pe_j] with one shared KV head: s[h, j] = scale · q_lat[h]·x_j and
// o[h] = Σ_j softmax(s[h])_j · x_j (MlaOutput then maps o[h][0, r) through W_uv).
// The latent is cached as two parts: lo = c (lo_dim = kv_lora_rank values; the paged cache's V
// slot, engine/kv_cache/kv_codec.h MakeMlaKvCacheFormat) and hi = k_pe (hi_dim = rope values; the
// K slot), each stored in a KvVectorFormat (kernels/cuda/kv_attention.h): bf16, or PolarQuant codes
// + fp32 gain with the part's rotation R = D2·H·D1 / divisor (H block-diagonal with blocks of the
// largest power of two dividing its width, as quant::KvRotation), 2, 3, 4 or 8 bits — in the
// engine c packed and k_pe bf16 (the plugin's layout), or both bf16 in one pool. For a packed part
// the query part is rotated once (R q), scores are taken against g·c[idx] in the rotated space
// and the weighted sum is rotated back once per head (Rᵀ) after the merge: no decoded copy of the
// cache. Only the weighted sums the output needs are formed: those of lo when out_dim <= lo_dim
// (the engine's case: o[h][0, r)), else of the whole latent.
//
// Flash-decoding: positions split across `splits` CTAs per (row, group of ≤ 16 heads). A CTA (8
// warps) takes 16 positions at a time: their stored bytes arrive in shared memory by cp.async while
// the previous 16 are computed, are decoded to fp32 in the attention space (the cache is read once
// per CTA, not once per head), scored for all its heads (online softmax per head) and summed. A second kernel merges the splits
// (log-sum-exp), divides, applies Rᵀ per packed part and writes the first out_dim values of each
// head.
//
// Tensor cores (a packed part, the default): the 16 heads × 16 positions of a tile are one
// mma.sync m16n8k16 problem per 16 latent values for the scores (Q·Xᵀ; per part the tile's
// centroids without their gains, which multiply the fp32 scores, or a bf16 part's values as fp16) and per 8 latent values for the sums (P·X, P = softmax weight ×
// gain / the largest gain so far); the stored bytes are staged two tiles ahead. The merge runs
// over 32-value slices of every head; packed parts get Rᵀ in a last pass (MlaFinishKernel).
//
// Precision: the fp32 kernel (all-bf16 latents; packed ones with tensor_cores = false) is fp32
// throughout: results equal attention over the CPU quantizers' decoded vectors up to float
// summation order (~1e-6). The tensor-core kernel multiplies fp16 operands with fp32
// accumulation — the queries scaled per head by a power of two into [0.5, 1), the centroids,
// bf16 parts as fp16 (exact in fp16's normal range; beyond ±65504 clamped, a range the engine's
// fp16 activations assume anyway), sink rows scaled by their largest value, the weights in
// [0, 1] — ~2^-11 relative per product.
//
// Sinks (engine/kv_cache/kv_codec.h sink=N): positions [0, sink_tokens) of every sequence come
// from side stores of fp32 part vectors already in the attention space (WriteLatentSinks),
// [slot, position, part width] per part; row t uses slot sink_slot[t].
//
// Usage:
//   tq::cuda::MlaAttentionParams p;  // q, the two halves, tables, shapes, out
//   p.splits = tq::cuda::PlanMlaAttentionSplits(rows, num_heads, max_context, sms);
//   // workspace: MlaAttentionWorkspaceBytes(rows, num_heads, latent_dim, p.splits) bytes
//   cudaError_t e = tq::cuda::MlaAttention(p, stream);
#ifndef TQSERVE_KERNELS_CUDA_MLA_ATTENTION_H_
#define TQSERVE_KERNELS_CUDA_MLA_ATTENTION_H_

#include <cstddef>
#include <cstdint>

namespace tq::cuda {

inline constexpr int kMaxMlaPartDim = 512;

// Whether the kernels take a latent part of `dim` values: a multiple of 16 (the Hadamard blocks,
// 8-code groups and mma k-steps) up to kMaxMlaPartDim. Visible in builds without CUDA.
constexpr bool MlaPartDimSupported(int dim) { return dim >= 16 && dim <= kMaxMlaPartDim && dim % 16 == 0; }

}  // namespace tq::cuda

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/kv_attention.h"

namespace tq::cuda {

// One part of the cached latent.
struct MlaLatentPart {
  const uint8_t* cache = nullptr;  // the vector of slot s (block · block_size + offset) at cache + s · stride;
                                   // 4-byte aligned
  int64_t stride = 0;              // bytes between slots: ≥ KvVectorBytes(format, dim), a multiple of 4
  KvVectorFormat format;           // kBf16, or kPolar with bits 2, 3, 4 or 8
  const float* sinks = nullptr;    // [sink slots, sink_tokens, dim] (attention space) when sink_tokens > 0
};

struct MlaAttentionParams {
  const float* q = nullptr;  // [rows, num_heads · latent_dim], row stride ldq: per head [q_lat | q_pe]
  int64_t ldq = 0;
  MlaLatentPart lo, hi;      // latent values [0, lo_dim) (c) and [lo_dim, lo_dim + hi_dim) (k_pe)
  int lo_dim = 0, hi_dim = 0;  // each a multiple of 16, at most kMaxMlaPartDim; latent_dim = lo_dim + hi_dim
  const int32_t* block_table = nullptr;   // flat block ids of all sequences
  const int32_t* table_offset = nullptr;  // [rows]: where the row's sequence table starts
  const int32_t* positions = nullptr;     // [rows]: the row attends to [0, positions[row]]
  int64_t rows = 0;
  int num_heads = 0;
  int block_size = 0;
  float scale = 0.0f;        // softmax scale (engine/model/model_config.h MlaSoftmaxScale)
  float* out = nullptr;      // [rows, num_heads · out_dim], row stride ldo
  int64_t ldo = 0;
  int out_dim = 0;           // 1..latent_dim: the leading values of each head's output written
  int sink_tokens = 0;
  const int32_t* sink_slot = nullptr;  // [rows] when sink_tokens > 0
  // A packed part: tensor cores (fp16 operands, fp32 accumulation; see Precision) unless this
  // is false; all-bf16 latents always run the fp32 kernel.
  bool tensor_cores = true;
  int splits = 1;            // position splits per (row, head group), 1..kMaxAttentionSplits
  float* workspace = nullptr;  // MlaAttentionWorkspaceBytes
  size_t workspace_bytes = 0;
};

inline constexpr int kMlaHeadsPerCta = 16;

// Splits for `rows` rows of up to `max_context` positions: about four CTAs per SM over rows and
// head groups, at least 64 positions per split.
int PlanMlaAttentionSplits(int64_t rows, int num_heads, int64_t max_context, int multiprocessors);

// Bytes of fp32 partial results (m, l and up to latent_dim sums per row, head and split).
size_t MlaAttentionWorkspaceBytes(int64_t rows, int num_heads, int latent_dim, int splits);

// nullptr when the kernel supports these shapes and formats; else a static string saying why not.
const char* MlaAttentionUnsupportedReason(const MlaAttentionParams& p);

cudaError_t MlaAttention(const MlaAttentionParams& p, cudaStream_t stream);

// Whether MlaAttention runs these parameters on the tensor-core kernel (above).
bool MlaUsesTensorCores(const MlaAttentionParams& p);

// The writers of a latent part (any dim multiple of 16 up to kMaxMlaPartDim; one vector per row,
// x + r · ld holding the part's dim values).
//
// WriteLatentPolar: as quant::KvMseQuantizer::Encode at d = dim (fp32 corrected gain;
// KvPolarEncoder in kernels/cuda/kv_attention.h): n = ‖x‖ (double sum), y = R·(x/n) with the block
// Hadamard rotation, idx_i = bucket(y_i), g = n / ‖c[idx]‖, codes packed as kernels/quant/packing.h
// then g (4 bytes, unaligned allowed) at cache + slots[r] · stride. The same float operations in
// the same order as the CPU: the codes are bitwise the CPU's.
cudaError_t WriteLatentPolar(const float* x, int64_t ld, int64_t rows, int dim, const int64_t* slots,
                             const KvPolarEncoder& enc, uint8_t* cache, int64_t stride, cudaStream_t stream);

// WriteLatentSinks: rows whose positions[r] < sink_tokens store bf16(x) (round to nearest even)
// mapped to the attention space — R·x with R = D2·H·D1 / divisor per Hadamard block (signs null:
// plain Hadamard), unchanged when divisor == 0 — as fp32 at
// store[(sink_slot[r] · sink_tokens + positions[r]) · dim]; other rows are skipped.
cudaError_t WriteLatentSinks(const float* x, int64_t ld, int64_t rows, int dim, const int32_t* positions,
                             const int32_t* sink_slot, int sink_tokens, const float* signs, float divisor,
                             float* store, cudaStream_t stream);

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_MLA_ATTENTION_H_
