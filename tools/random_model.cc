#include "tools/random_model.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/format/dtype.h"

namespace tq {

std::vector<TensorSpec> RandomModelTensors(const RandomModelShape& s) {
  const bool moe = s.experts > 0;
  const int64_t hd = s.resolved_head_dim();
  std::vector<TensorSpec> all;
  auto add = [&](const std::string& n, std::vector<int64_t> shape) {
    all.push_back({n, DType::kBF16, std::move(shape)});
  };
  add("model.embed_tokens.weight", {s.vocab, s.hidden});
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {s.hidden});
    add(p + "post_attention_layernorm.weight", {s.hidden});
    add(p + "self_attn.q_proj.weight", {s.heads * hd, s.hidden});
    add(p + "self_attn.k_proj.weight", {s.kv_heads * hd, s.hidden});
    add(p + "self_attn.v_proj.weight", {s.kv_heads * hd, s.hidden});
    add(p + "self_attn.o_proj.weight", {s.hidden, s.heads * hd});
    if (!moe) {
      add(p + "mlp.gate_proj.weight", {s.intermediate, s.hidden});
      add(p + "mlp.up_proj.weight", {s.intermediate, s.hidden});
      add(p + "mlp.down_proj.weight", {s.hidden, s.intermediate});
      continue;
    }
    add(p + "self_attn.q_norm.weight", {hd});
    add(p + "self_attn.k_norm.weight", {hd});
    add(p + "mlp.gate.weight", {s.experts, s.hidden});
    for (int64_t e = 0; e < s.experts; ++e) {
      const std::string x = absl::StrCat(p, "mlp.experts.", e, ".");
      add(x + "gate_proj.weight", {s.moe_intermediate, s.hidden});
      add(x + "up_proj.weight", {s.moe_intermediate, s.hidden});
      add(x + "down_proj.weight", {s.hidden, s.moe_intermediate});
    }
  }
  add("model.norm.weight", {s.hidden});
  add("lm_head.weight", {s.vocab, s.hidden});
  return all;
}

nlohmann::ordered_json RandomModelConfig(const RandomModelShape& s) {
  const bool moe = s.experts > 0;
  nlohmann::ordered_json cfg;
  cfg["architectures"] = {moe ? "Qwen3MoeForCausalLM" : "LlamaForCausalLM"};
  cfg["model_type"] = moe ? "qwen3_moe" : "llama";
  if (moe) {
    cfg["num_experts"] = s.experts;
    cfg["num_experts_per_tok"] = s.experts_per_tok;
    cfg["moe_intermediate_size"] = s.moe_intermediate;
    cfg["norm_topk_prob"] = true;
    cfg["decoder_sparse_step"] = 1;
    cfg["mlp_only_layers"] = nlohmann::ordered_json::array();
  }
  cfg["hidden_size"] = s.hidden;
  cfg["intermediate_size"] = s.intermediate;
  cfg["num_hidden_layers"] = s.layers;
  cfg["num_attention_heads"] = s.heads;
  cfg["num_key_value_heads"] = s.kv_heads;
  cfg["head_dim"] = s.resolved_head_dim();
  cfg["vocab_size"] = s.vocab;
  cfg["max_position_embeddings"] = 8192;
  cfg["rms_norm_eps"] = 1e-5;
  cfg["rope_theta"] = moe ? 1000000.0 : 500000.0;
  cfg["tie_word_embeddings"] = false;
  cfg["torch_dtype"] = "bfloat16";
  cfg["hidden_act"] = "silu";
  return cfg;
}

}  // namespace tq
