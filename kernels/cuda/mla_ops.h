// File: kernels/cuda/mla_ops.h
//
// The pieces of Multi-head Latent Attention (DeepSeek-V2/V3) that the dense kernels lack; the
// CUDA engine composes them with its linears, RMSNorm and the paged attention kernel
// (engine/model/cuda_transformer.cc, docs/ENGINE.md). Absorbed attention, for every step:
//   q_lat[h] = W_uk[h]ᵀ q_nope[h]                    (MlaAbsorbQuery: [q_lat | q_pe] per head)
//   scores over the cached latents [c | k_pe] with one shared KV head (the paged attention
//   kernel with K = V = the latent pool), o = Σ p · [c | k_pe]
//   out[h] = W_uv[h] o[h][0, r)                       (MlaOutput)
// which equals attention with per-head keys [W_uk c | k_pe] and values W_uv c (the CPU engine's
// prefill form; engine/model/mla_transformer.h). W_uk / W_uv are the rows of kv_b_proj in fp32:
//   kvb[(h · (nope + dv) + i) · r + j]: rows i < nope are W_uk[h], rows nope.. are W_uv[h].
//
// Usage: see engine/model/cuda_transformer.cc (State::MlaAttention).
#ifndef TQSERVE_KERNELS_CUDA_MLA_OPS_H_
#define TQSERVE_KERNELS_CUDA_MLA_OPS_H_

#include <cstdint>

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

namespace tq::cuda {

// RoPE of `heads` sub-vectors of rope_dim values per row, in place: head h's starts at
// x[row · ld + h · head_stride + offset]. interleave: the pairs (x0, x1), (x2, x3), .. are first
// de-interleaved into [x0, x2, .., x1, x3, ..] (transformers' apply_rotary_pos_emb_interleave),
// then rotate-half with cos/sin [max_positions, rope_dim / 2] at positions[row]. rope_dim even,
// at most 2048.
cudaError_t MlaRope(float* x, int64_t ld, int64_t rows, int heads, int64_t head_stride, int64_t offset,
                    int rope_dim, bool interleave, const int32_t* positions, const float* cos, const float* sin,
                    cudaStream_t stream);

// out[t, h, 0..r) = Σ_i q[t, h · (nope + rope) + i] · kvb[(h · (nope + dv) + i) · r + ·] (i < nope),
// out[t, h, r..r + rope) = q[t, h · (nope + rope) + nope ..]. q row stride ldq, out row stride
// heads · (r + rope).
cudaError_t MlaAbsorbQuery(const float* q, int64_t ldq, int64_t rows, int heads, int nope, int rope, int dv, int r,
                           const float* kvb, float* out, cudaStream_t stream);

// out[t, h · dv + e] = Σ_j kvb[(h · (nope + dv) + nope + e) · r + j] · o[t, h · ldh + j] (j < r),
// o row stride heads · ldh (ldh ≥ r: the attention output per head), out row stride heads · dv.
cudaError_t MlaOutput(const float* o, int64_t ldh, int64_t rows, int heads, int nope, int dv, int r,
                      const float* kvb, float* out, cudaStream_t stream);

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_MLA_OPS_H_
