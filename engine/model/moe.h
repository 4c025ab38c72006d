// File: engine/model/moe.h
//
// The Mixture-of-Experts MLP of the CPU transformers (DeepSeek-V3 in mla_transformer.h, Qwen3-MoE
// in transformer.h), computed from each expert's own weights (TQ codes or dense) for the active
// experts only:
//   logits = router(h)                                  (fp32 router, never quantized)
//   scores = sigmoid(logits) (DeepSeek-V3) or softmax(logits) (Qwen3-MoE)
//   choice = scores + e_score_correction_bias (DeepSeek-V3; none for Qwen3-MoE); group-limited
//            top-k (n_group > 1: keep topk_group groups by the sum of their best two), then the
//            num_experts_per_tok best experts, ties to the lower id
//   weights = their scores, divided by the sum when norm_topk_prob, times routed_scaling_factor
//   out = Σ weight · expert(h)  (+ the shared experts' MLP, DeepSeek-V3)
// as transformers' DeepseekV3MoE / Qwen3MoeSparseMoeBlock compute them.
#ifndef TQSERVE_ENGINE_MODEL_MOE_H_
#define TQSERVE_ENGINE_MODEL_MOE_H_

#include <cstdint>
#include <vector>

#include "engine/model/linear_batch.h"
#include "engine/model/model_config.h"
#include "engine/model/weights.h"
#include "engine/util/thread_pool.h"

namespace tq {

// The routing of one token: expert ids and weights, in selection order. `bias` may be null.
void RouteMoeToken(const MoeConfig& moe, const float* logits, const float* bias, std::vector<int>* experts,
                   std::vector<float>* weights);

// Scratch buffers of one model's MoE layers (not thread-safe: one per model runner).
class MoeBlock {
 public:
  // out[T, H] = the MoE MLP of layer L applied to h[T, H] (out is overwritten).
  void Run(const MoeConfig& moe, const LayerWeights& L, const float* h, int64_t T, int64_t H,
           LinearBatch& linears, ThreadPool* pool, float* out);

 private:
  std::vector<float> router_, ebuf_, gate_, up_, eout_, tmp_;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_MOE_H_
