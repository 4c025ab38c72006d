// File: engine/model/model_config.h
//
// The decoder configuration of a dense Llama-family model, parsed from a Hugging Face
// `config.json` (and optionally `generation_config.json`). Supported architectures:
// LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM — GQA/MQA, RoPE
// (default, linear, llama3, yarn scaling), RMSNorm, SwiGLU, Qwen3 q/k norms, attention and MLP
// biases, tied embeddings, sliding-window attention. Anything else (another architecture, an
// activation other than SiLU, an unknown RoPE type, inconsistent sizes) is refused at load time
// with InvalidArgument naming the field.
//
// Qwen3MoeForCausalLM: Qwen3 attention and a softmax-routed Mixture of Experts (MoeConfig) on the
// layers moe.moe_layers marks (decoder_sparse_step, mlp_only_layers), run by transformer.h.
//
// DeepseekV3ForCausalLM: Multi-head Latent Attention (MlaConfig) and a Mixture of Experts
// (MoeConfig) on layers >= first_k_dense_replace; `head_dim` is then the RoPE width
// (qk_rope_head_dim) and the KV cache holds one latent per token and layer: k_pe as the key
// (kv_cache_key_dim()) and c as the value (kv_cache_value_dim()), engine/model/mla_transformer.h.
//
// Both RoPE spellings are read: transformers ≥ 5 `rope_parameters {rope_type, rope_theta, ...}`
// and the older `rope_theta` + `rope_scaling {type|rope_type, factor, ...}`.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(ModelConfig cfg, ParseModelConfig(config_json_text));
#ifndef TQSERVE_ENGINE_MODEL_MODEL_CONFIG_H_
#define TQSERVE_ENGINE_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tq {

enum class ModelArch { kLlama, kMistral, kQwen2, kQwen3, kDeepseekV3, kQwen3Moe };
const char* ModelArchName(ModelArch a);

enum class RopeType { kDefault, kLinear, kLlama3, kYarn };
const char* RopeTypeName(RopeType t);

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;  // linear, llama3, yarn
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;  // llama3, yarn (0: max_position_embeddings)
  // yarn
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;          // 0: unset
  double mscale_all_dim = 0.0;  // 0: unset
  double attention_factor = 0.0;  // 0: derived from factor
  bool truncate = true;
};

// Multi-head Latent Attention (DeepSeek-V2/V3).
struct MlaConfig {
  int q_lora_rank = 0;
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  bool rope_interleave = false;
  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Floats cached per token and layer: the normalized latent and the rotated shared k_pe.
  int latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }
};

// Mixture of Experts (engine/model/moe.h): DeepSeek-V3 (sigmoid routing with
// e_score_correction_bias, group top-k, shared experts) and Qwen3-MoE (softmax routing, top-k).
struct MoeConfig {
  bool softmax_scoring = false;   // Qwen3-MoE; else sigmoid (DeepSeek-V3)
  std::vector<char> moe_layers;   // per layer: 1 = MoE MLP, 0 = dense MLP
  int first_k_dense_replace = 0;  // layers [0, first_k_dense_replace) are dense MLPs
  int n_routed_experts = 0;
  int num_experts_per_tok = 0;
  int n_group = 1;
  int topk_group = 1;
  int n_shared_experts = 0;
  int64_t moe_intermediate_size = 0;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  // Multi-token-prediction layers stored after the decoder layers (ignored by the engine).
  int num_nextn_predict_layers = 0;
};

struct ModelConfig {
  ModelArch arch = ModelArch::kLlama;
  std::string architecture;  // as written in config.json
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;   // q/k/v biases (Qwen2: always)
  bool attention_out_bias = false;  // o_proj bias (Llama attention_bias; not Qwen2)
  bool mlp_bias = false;
  bool qk_norm = false;          // Qwen3
  RopeConfig rope;
  // Per-layer sliding window in tokens (0 = full attention): a query at position p attends to
  // keys at positions in (p - window, p].
  std::vector<int64_t> sliding_window;
  // Token ids that end generation (eos_token_id of config.json, else generation_config.json).
  std::vector<int32_t> eos_token_ids;
  int32_t bos_token_id = -1;

  // DeepseekV3 only.
  MlaConfig mla;
  MoeConfig moe;
  bool is_mla() const { return arch == ModelArch::kDeepseekV3; }
  bool is_moe_layer(int layer) const {
    return layer >= 0 && layer < static_cast<int>(moe.moe_layers.size()) && moe.moe_layers[layer] != 0;
  }
  // Width of the rotary embedding (RopeTable::Create's head_dim).
  int rope_dim() const { return head_dim; }
  // Shape of the paged KV cache: dense models cache num_kv_heads x head_dim for K and for V;
  // MLA caches one latent per token: k_pe (head_dim = the rope width) in the K slot, kv_c
  // (kv_lora_rank) in the V slot.
  int kv_cache_heads() const { return is_mla() ? 1 : num_kv_heads; }
  int kv_cache_key_dim() const { return head_dim; }
  int kv_cache_value_dim() const { return is_mla() ? mla.kv_lora_rank : head_dim; }

  int64_t q_size() const { return static_cast<int64_t>(num_heads) * head_dim; }
  int64_t kv_size() const { return static_cast<int64_t>(num_kv_heads) * head_dim; }
  // Parameters of the decoder (for reports).
  int64_t ParameterCount() const;
  std::string DebugString() const;
};

// Larger sizes are refused. Far above any real model, the bounds keep every count within int,
// the per-layer tables small and the derived sizes (q_size, ParameterCount) within int64.
inline constexpr int64_t kMaxVocabSize = int64_t{1} << 24;
inline constexpr int64_t kMaxModelWidth = int64_t{1} << 20;  // hidden_size, intermediate_size
inline constexpr int64_t kMaxLayers = int64_t{1} << 12;
inline constexpr int64_t kMaxHeads = int64_t{1} << 12;  // attention and key/value heads
inline constexpr int64_t kMaxHeadDim = int64_t{1} << 12;

// Yarn's mscale(s, m) = 0.1·m·ln(s) + 1 for s > 1, else 1 (transformers' get_mscale).
double YarnMscale(double scale, double mscale);

// MLA's softmax scale: qk_head_dim^-1/2, times YarnMscale(factor, mscale_all_dim)^2 when the
// RoPE is scaled and sets mscale_all_dim (DeepSeek-V3's yarn: transformers'
// DeepseekV3Attention.scaling).
float MlaSoftmaxScale(const ModelConfig& cfg);

// Parses config.json; `generation_config_json` may be empty. Errors name the offending field.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view config_json,
                                             absl::string_view generation_config_json = "");

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_MODEL_CONFIG_H_
