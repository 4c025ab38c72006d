// File: engine/model/mla_transformer.h
//
// The forward pass of DeepseekV3ForCausalLM (Multi-head Latent Attention + Mixture of Experts)
// on the CPU, over the same flat multi-sequence batches as the dense Transformer
// (engine/model/transformer.h), fp32 compute over BF16/F16/F32 or TQ weights.
//
// Per layer (transformers' DeepseekV3DecoderLayer, eager attention):
//   h = RMSNorm(x)
//   q = q_b(RMSNorm_qa(q_a(h)))                      -> heads x [q_nope (nope) | q_pe (rope)]
//   [c | k_pe] = kv_a(h);  c = RMSNorm_kva(c)         (kv_lora_rank | qk_rope_head_dim)
//   RoPE(q_pe), RoPE(k_pe)  (k_pe is one head shared by all heads; rope_interleave: the pairs
//                           (x0,x1),(x2,x3).. are de-interleaved first, as transformers does)
//   cache[pos] = [c | k_pe]                           (the latent: (kv_lora_rank + rope) floats)
//   [k_nope | v] = kv_b(c) per head, recomputed from the cached latents of every position
//   a = softmax([q_nope|q_pe]·[k_nope|k_pe]ᵀ / √(nope + rope) + causal)·v;  x += o(a)
//   h = RMSNorm(x);  x += dense SwiGLU MLP (layers < first_k_dense_replace) or the MoE:
//     s = sigmoid(h·W_routerᵀ);  choose top num_experts_per_tok of s + e_score_correction_bias
//     among the topk_group best groups (group score: sum of its 2 best);  w = s[chosen]
//     (/ Σ when norm_topk_prob) × routed_scaling_factor;  out = Σ w·expert(h) + shared(h)
//   Only the chosen experts run, each over the tokens routed to it.
//
// KV cache layout (one KV "head" per token and layer, engine/kv_cache/kv_codec.h
// MakeMlaKvCacheFormat): the V slot holds the latent c (kv_lora_rank floats) in the format's
// value codec, the K slot k_pe (rope floats) uncompressed — the plugin's MLA layout (ALGORITHMS.md
// §4.2: kv_c with the MSE value quantizer, k_pe passed through). With bf16 that is
// 2 · (kv_lora_rank + rope) bytes per token and layer (tiny DeepSeek-V3: 320 B/layer), against
// 2 · heads · (qk_head_dim + v_head_dim) = 1,280 B/layer for an expanded per-head cache; turbo3
// stores the latent in 3-bit codes + a gain (52 B) next to the 64 B k_pe. Single-token (decode)
// steps use absorbed attention (scores against the latent, W_uk/W_uv from an fp32 copy of
// kv_b_proj) and read the cache in its codecs' attention space (GatherAttention: codes × gain,
// the latent query rotated once, the weighted latent sum rotated back once per head); prefill
// chunks rebuild per-head keys and values through kv_b_proj from decoded latents (Gather).
#ifndef TQSERVE_ENGINE_MODEL_MLA_TRANSFORMER_H_
#define TQSERVE_ENGINE_MODEL_MLA_TRANSFORMER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/kv_cache/paged_kv_cache.h"
#include "engine/model/model_config.h"
#include "engine/model/linear_batch.h"
#include "engine/model/moe.h"
#include "engine/model/model_runner.h"
#include "engine/model/rope.h"
#include "engine/model/transformer.h"
#include "engine/model/weights.h"
#include "engine/util/thread_pool.h"

namespace tq {

class MlaTransformer : public ModelRunner {
 public:
  // `weights` and `pool` must outlive the model; `rope` has width cfg.rope_dim().
  MlaTransformer(const ModelConfig& cfg, const ModelWeights& weights, RopeTable rope, ThreadPool* pool);

  const ModelConfig& config() const { return cfg_; }
  int64_t max_positions() const override { return rope_.max_positions(); }
  const char* device() const override { return "cpu"; }
  std::string Describe() const override;
  absl::Status Forward(const ForwardBatch& batch, PagedKvCache& cache, std::vector<float>* logits) override;

 private:
  using LinearJob = LinearBatch::Job;
  void RunLinears(const std::vector<LinearJob>& jobs, const float* x, int64_t m) { linears_.Run(jobs, x, m); }
  void Attention(int layer, const ForwardBatch& batch, PagedKvCache& cache);

  const ModelConfig cfg_;
  const ModelWeights& w_;
  RopeTable rope_;
  ThreadPool* pool_;
  std::vector<float> x_, h_, qa_, kva_, q_, attn_, tmp_;
  std::vector<float> lat_c_, lat_pe_, kvb_;  // cached latents c and k_pe of a sequence; kv_b(c)
  // Per layer, kv_b_proj as fp32 [heads * (nope + v), kv_lora_rank] for the absorbed decode
  // attention (empty: rebuild keys and values from the latent instead).
  std::vector<std::vector<float>> kvb_f32_;
  LinearBatch linears_;
  FeedForward ffn_;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_MLA_TRANSFORMER_H_
