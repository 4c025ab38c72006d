// File: kernels/cuda/moe_ops.h
//
// MoE routing on the device (the first step of a graph-capturable MoE layer): per token the
// router's scores (softmax over the experts, or sigmoid), optionally plus a score-correction
// bias for the choice, then the top-k experts (ties to the lower id) and their weights (their
// scores, divided by their sum when `normalize`, times `scale`) — engine/model/moe.h
// RouteMoeToken, group-limited selection included (DeepSeek-V3: the topk_group groups with the
// best sum of their two best choices; the other groups' experts choose with 0, as transformers).
//
// Precision: fp32; the softmax sum is a warp reduction (the CPU sums in expert order), so weights
// agree to ~1e-7 relative and the chosen experts are the CPU's unless two scores tie within that.
//
// Usage:
//   tq::cuda::MoeRouting r{num_experts, top_k, /*softmax=*/true, /*normalize=*/true, 1.0f, nullptr};
//   cudaError_t e = tq::cuda::MoeTopK(logits, ld, tokens, r, expert_ids, expert_weights, stream);
//   ... every (token, slot)'s expert MLP into expert_out [tokens · top_k, n] ...
//   e = tq::cuda::MoeCombine(expert_out, expert_weights, tokens, top_k, n, out, n, stream);
#ifndef TQSERVE_KERNELS_CUDA_MOE_OPS_H_
#define TQSERVE_KERNELS_CUDA_MOE_OPS_H_

#include <cstdint>

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

namespace tq::cuda {

inline constexpr int kMoeMaxExperts = 256;

struct MoeRouting {
  int num_experts = 0;          // 1..kMoeMaxExperts
  int top_k = 0;                // 1..num_experts
  bool softmax = true;          // else sigmoid scores
  bool normalize = true;        // divide the k weights by their sum
  float scale = 1.0f;           // routed_scaling_factor
  const float* bias = nullptr;  // [num_experts] added to the scores for the choice only (or null)
  int n_group = 1;              // 1..32, divides num_experts
  int topk_group = 1;           // groups kept, 1..n_group (ignored when n_group == 1)
};

// logits: [tokens, num_experts] fp32 (row stride ld). Writes ids[t * top_k + i] (selection order)
// and weights[t * top_k + i]. cudaErrorInvalidValue for shapes out of range.
cudaError_t MoeTopK(const float* logits, int64_t ld, int64_t tokens, const MoeRouting& r, int32_t* ids,
                    float* weights, cudaStream_t stream);

// The routed experts' outputs combined per token, in slot order:
//   out[t * ldo + c] = Σ_{i < top_k} weights[t * top_k + i] · expert_out[(t * top_k + i) * n + c]
// (fp32, fmaf from 0 in slot order: bitwise the same as adding the slots one after another).
// out is overwritten.
cudaError_t MoeCombine(const float* expert_out, const float* weights, int64_t tokens, int top_k, int64_t n,
                       float* out, int64_t ldo, cudaStream_t stream);

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_MOE_OPS_H_
