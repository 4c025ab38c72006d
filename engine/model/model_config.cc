#include "engine/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, ": ", why));
}

// Reads an optional number; `present` tells whether it was there and not null.
absl::Status GetNumber(const json& j, const char* key, double* out, bool* present = nullptr) {
  if (present) *present = false;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Bad(key, "must be a number");
  *out = it->get<double>();
  if (!std::isfinite(*out)) return Bad(key, "must be finite");
  if (present) *present = true;
  return absl::OkStatus();
}

absl::Status GetInt(const json& j, const char* key, int64_t* out, bool required, int64_t min_value,
                    int64_t max_value = INT64_MAX) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Bad(key, "missing");
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) return Bad(key, "must be an integer");
  int64_t v = it->get<int64_t>();
  if (v < min_value) return Bad(key, absl::StrCat("must be >= ", min_value, ", got ", v));
  if (v > max_value) return Bad(key, absl::StrCat("must be <= ", max_value, ", got ", v));
  *out = v;
  return absl::OkStatus();
}

// The same for an int field (every bound passed fits an int); *out is kept when the key is absent.
absl::Status GetInt(const json& j, const char* key, int* out, bool required, int64_t min_value, int64_t max_value) {
  int64_t v = *out;
  if (auto s = GetInt(j, key, &v, required, min_value, max_value); !s.ok()) return s;
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(key, "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

// eos_token_id may be an integer or a list of integers.
absl::Status GetTokenIds(const json& j, const char* key, std::vector<int32_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  std::vector<int32_t> ids;
  auto add = [&](const json& v) -> absl::Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return Bad(key, "must be a non-negative integer or a list of them");
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    return absl::OkStatus();
  };
  if (it->is_array()) {
    for (const json& v : *it) {
      absl::Status s = add(v);
      if (!s.ok()) return s;
    }
  } else {
    absl::Status s = add(*it);
    if (!s.ok()) return s;
  }
  *out = std::move(ids);
  return absl::OkStatus();
}

absl::Status ParseRope(const json& j, ModelConfig* cfg) {
  RopeConfig& r = cfg->rope;
  // transformers >= 5: rope_parameters holds everything; older: rope_theta + rope_scaling.
  const json* params = nullptr;
  json merged = json::object();
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return Bad("rope_parameters", "must be an object");
    if (it->contains("full_attention") || it->contains("sliding_attention")) {
      return Bad("rope_parameters", "per-layer-type RoPE parameters are not supported");
    }
    merged = *it;
    params = &merged;
  } else {
    if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
      if (!it->is_object()) return Bad("rope_scaling", "must be an object");
      merged = *it;
    }
    if (auto it = j.find("rope_theta"); it != j.end() && !it->is_null()) merged["rope_theta"] = *it;
    params = &merged;
  }
  const json& p = *params;
  bool has_theta = false;
  if (auto s = GetNumber(p, "rope_theta", &r.theta, &has_theta); !s.ok()) return s;
  if (r.theta <= 1.0) return Bad("rope_theta", "must be > 1");
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = p.find(key); it != p.end() && !it->is_null()) {
      if (!it->is_string()) return Bad(key, "must be a string");
      type = it->get<std::string>();
      break;
    }
  }
  if (type == "default") {
    r.type = RopeType::kDefault;
  } else if (type == "linear") {
    r.type = RopeType::kLinear;
  } else if (type == "llama3") {
    r.type = RopeType::kLlama3;
  } else if (type == "yarn") {
    r.type = RopeType::kYarn;
  } else {
    return Bad("rope type",
               absl::StrCat("'", type, "' is not supported (supported: default, linear, llama3, yarn)"));
  }
  if (r.type != RopeType::kDefault) {
    bool has_factor = false;
    if (auto s = GetNumber(p, "factor", &r.factor, &has_factor); !s.ok()) return s;
    if (!has_factor) return Bad("rope factor", absl::StrCat("missing for rope type ", type));
    if (r.factor < 1.0) return Bad("rope factor", "must be >= 1");
  }
  int64_t orig = 0;
  if (auto s = GetInt(p, "original_max_position_embeddings", &orig, false, 1); !s.ok()) return s;
  r.original_max_position_embeddings = orig;
  if (r.type == RopeType::kLlama3) {
    bool a = false, b = false;
    if (auto s = GetNumber(p, "low_freq_factor", &r.low_freq_factor, &a); !s.ok()) return s;
    if (auto s = GetNumber(p, "high_freq_factor", &r.high_freq_factor, &b); !s.ok()) return s;
    if (!a || !b || orig == 0) {
      return Bad("rope llama3",
                 "needs low_freq_factor, high_freq_factor and original_max_position_embeddings");
    }
    if (!(r.high_freq_factor > r.low_freq_factor)) {
      return Bad("rope llama3", "high_freq_factor must exceed low_freq_factor");
    }
  }
  if (r.type == RopeType::kYarn) {
    if (auto s = GetNumber(p, "beta_fast", &r.beta_fast); !s.ok()) return s;
    if (auto s = GetNumber(p, "beta_slow", &r.beta_slow); !s.ok()) return s;
    if (auto s = GetNumber(p, "mscale", &r.mscale); !s.ok()) return s;
    if (auto s = GetNumber(p, "mscale_all_dim", &r.mscale_all_dim); !s.ok()) return s;
    if (auto s = GetNumber(p, "attention_factor", &r.attention_factor); !s.ok()) return s;
    if (auto s = GetBool(p, "truncate", &r.truncate); !s.ok()) return s;
  }
  if (auto it = j.find("partial_rotary_factor"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 1.0) {
      return Bad("partial_rotary_factor", "only 1.0 is supported for this architecture");
    }
  }
  return absl::OkStatus();
}


// DeepseekV3: MLA sizes and the MoE. Sets head_dim to the RoPE width.
absl::Status ParseDeepseekV3(const json& j, ModelConfig* cfg) {
  MlaConfig& m = cfg->mla;
  MoeConfig& e = cfg->moe;
  // q_lora_rank: null means a plain q_proj (DeepSeek-V2-Lite), not supported yet.
  if (auto it = j.find("q_lora_rank"); it == j.end() || it->is_null()) {
    return Bad("q_lora_rank", "null/missing (a plain q_proj) is not supported; expected a LoRA rank");
  }
  if (auto s = GetInt(j, "q_lora_rank", &m.q_lora_rank, true, 1, kMaxModelWidth); !s.ok()) return s;
  if (auto s = GetInt(j, "kv_lora_rank", &m.kv_lora_rank, true, 1, kMaxModelWidth); !s.ok()) return s;
  if (auto s = GetInt(j, "qk_nope_head_dim", &m.qk_nope_head_dim, true, 1, kMaxHeadDim); !s.ok()) return s;
  if (auto s = GetInt(j, "qk_rope_head_dim", &m.qk_rope_head_dim, true, 2, kMaxHeadDim); !s.ok()) return s;
  if (auto s = GetInt(j, "v_head_dim", &m.v_head_dim, true, 1, kMaxHeadDim); !s.ok()) return s;
  if (m.qk_rope_head_dim % 2 != 0) return Bad("qk_rope_head_dim", "must be even (RoPE rotates pairs)");
  if (auto it = j.find("qk_head_dim"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() != m.qk_head_dim()) {
      return Bad("qk_head_dim", "must equal qk_nope_head_dim + qk_rope_head_dim");
    }
  }
  if (auto it = j.find("head_dim"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() != m.qk_rope_head_dim) {
      return Bad("head_dim", "must equal qk_rope_head_dim for DeepseekV3");
    }
  }
  m.rope_interleave = true;  // transformers' DeepseekV3Config default
  if (auto s = GetBool(j, "rope_interleave", &m.rope_interleave); !s.ok()) return s;
  cfg->head_dim = m.qk_rope_head_dim;

  // MoE.
  if (auto s = GetInt(j, "n_routed_experts", &e.n_routed_experts, true, 1, 1 << 16); !s.ok()) return s;
  if (auto s = GetInt(j, "num_experts_per_tok", &e.num_experts_per_tok, true, 1, e.n_routed_experts); !s.ok()) return s;
  if (auto s = GetInt(j, "n_group", &e.n_group, false, 1, e.n_routed_experts); !s.ok()) return s;
  if (auto s = GetInt(j, "topk_group", &e.topk_group, false, 1, e.n_group); !s.ok()) return s;
  if (e.n_routed_experts % e.n_group != 0) return Bad("n_group", "must divide n_routed_experts");
  if (e.n_routed_experts / e.n_group < 2) {
    return Bad("n_group", "groups must hold at least 2 experts (group score = sum of the top 2)");
  }
  if (e.num_experts_per_tok > e.topk_group * (e.n_routed_experts / e.n_group)) {
    return Bad("num_experts_per_tok", "exceeds the experts of the topk_group selected groups");
  }
  if (auto s = GetInt(j, "n_shared_experts", &e.n_shared_experts, false, 0, 1 << 16); !s.ok()) return s;
  if (auto s = GetInt(j, "moe_intermediate_size", &e.moe_intermediate_size, true, 1, kMaxModelWidth); !s.ok()) {
    return s;
  }
  if (auto s = GetInt(j, "first_k_dense_replace", &e.first_k_dense_replace, false, 0, kMaxLayers); !s.ok()) return s;
  if (auto s = GetBool(j, "norm_topk_prob", &e.norm_topk_prob); !s.ok()) return s;
  if (auto s = GetNumber(j, "routed_scaling_factor", &e.routed_scaling_factor); !s.ok()) return s;
  if (!(e.routed_scaling_factor > 0)) return Bad("routed_scaling_factor", "must be > 0");
  if (auto s = GetInt(j, "num_nextn_predict_layers", &e.num_nextn_predict_layers, false, 0, 64); !s.ok()) return s;
  for (const char* key : {"scoring_func", "topk_method"}) {
    if (auto it = j.find(key); it != j.end() && !it->is_null()) {
      const char* want = std::string(key) == "scoring_func" ? "sigmoid" : "noaux_tc";
      if (!it->is_string() || it->get<std::string>() != want) {
        return Bad(key, absl::StrCat("only \"", want, "\" is supported"));
      }
    }
  }
  if (auto it = j.find("moe_layer_freq"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() != 1) return Bad("moe_layer_freq", "only 1 is supported");
  }
  e.moe_layers.assign(cfg->num_layers, 0);
  for (int l = e.first_k_dense_replace; l < cfg->num_layers; ++l) e.moe_layers[l] = 1;
  return absl::OkStatus();
}

// Qwen3MoeForCausalLM: Qwen3 attention; the MLP of layer l is a softmax-routed MoE unless l is in
// mlp_only_layers or (l + 1) is not a multiple of decoder_sparse_step (transformers'
// Qwen3MoeDecoderLayer).
absl::Status ParseQwen3Moe(const json& j, ModelConfig* cfg) {
  MoeConfig& e = cfg->moe;
  e.softmax_scoring = true;
  e.norm_topk_prob = false;  // transformers' Qwen3MoeConfig default
  // The Hub's configs say num_experts; transformers 5 writes num_local_experts.
  const char* experts_key = j.contains("num_experts") ? "num_experts" : "num_local_experts";
  if (auto s = GetInt(j, experts_key, &e.n_routed_experts, true, 1, 1 << 16); !s.ok()) return s;
  if (auto s = GetInt(j, "num_experts_per_tok", &e.num_experts_per_tok, true, 1, e.n_routed_experts); !s.ok()) return s;
  if (auto s = GetInt(j, "moe_intermediate_size", &e.moe_intermediate_size, true, 1, kMaxModelWidth); !s.ok()) {
    return s;
  }
  if (auto s = GetBool(j, "norm_topk_prob", &e.norm_topk_prob); !s.ok()) return s;
  int step = 1;
  if (auto s = GetInt(j, "decoder_sparse_step", &step, false, 1, kMaxLayers); !s.ok()) return s;
  e.moe_layers.assign(cfg->num_layers, 0);
  for (int l = 0; l < cfg->num_layers; ++l) e.moe_layers[l] = (l + 1) % step == 0 ? 1 : 0;
  if (auto it = j.find("mlp_only_layers"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return Bad("mlp_only_layers", "must be a list of layer indices");
    for (const json& x : *it) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= cfg->num_layers) {
        return Bad("mlp_only_layers", absl::StrCat("entries must be layer indices in [0, ", cfg->num_layers, ")"));
      }
      e.moe_layers[x.get<int64_t>()] = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* ModelArchName(ModelArch a) {
  switch (a) {
    case ModelArch::kLlama:
      return "llama";
    case ModelArch::kMistral:
      return "mistral";
    case ModelArch::kQwen2:
      return "qwen2";
    case ModelArch::kQwen3:
      return "qwen3";
    case ModelArch::kDeepseekV3:
      return "deepseek_v3";
    case ModelArch::kQwen3Moe:
      return "qwen3_moe";
  }
  return "?";
}

const char* RopeTypeName(RopeType t) {
  switch (t) {
    case RopeType::kDefault:
      return "default";
    case RopeType::kLinear:
      return "linear";
    case RopeType::kLlama3:
      return "llama3";
    case RopeType::kYarn:
      return "yarn";
  }
  return "?";
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t h = hidden_size;
  if (is_mla()) {
    const int64_t nh = num_heads;
    int64_t attn = 0;
    if (mla.q_lora_rank > 0) {
      attn += h * mla.q_lora_rank + mla.q_lora_rank + int64_t{mla.q_lora_rank} * nh * mla.qk_head_dim();
    } else {
      attn += h * nh * mla.qk_head_dim();
    }
    attn += h * mla.latent_dim() + mla.kv_lora_rank +
            int64_t{mla.kv_lora_rank} * nh * (mla.qk_nope_head_dim + mla.v_head_dim) + nh * mla.v_head_dim * h;
    int64_t total = vocab_size * h * (tie_word_embeddings ? 1 : 2) + h;
    for (int l = 0; l < num_layers; ++l) {
      int64_t mlp = 3 * h * intermediate_size;
      if (is_moe_layer(l)) {
        mlp = int64_t{moe.n_routed_experts} * 3 * h * moe.moe_intermediate_size +
              int64_t{moe.n_shared_experts} * 3 * h * moe.moe_intermediate_size +
              int64_t{moe.n_routed_experts} * h;  // + the router (its correction bias is a buffer)
      }
      total += attn + mlp + 2 * h;
    }
    return total;
  }
  int64_t attn = h * q_size() + 2 * h * kv_size() + q_size() * h;
  if (attention_bias) attn += q_size() + 2 * kv_size();
  if (attention_out_bias) attn += h;
  if (qk_norm) attn += 2 * head_dim;
  int64_t total = vocab_size * h * (tie_word_embeddings ? 1 : 2) + h;
  for (int l = 0; l < num_layers; ++l) {
    int64_t mlp = 3 * h * intermediate_size;
    if (mlp_bias) mlp += 2 * intermediate_size + h;
    if (is_moe_layer(l)) mlp = int64_t{moe.n_routed_experts} * (3 * h * moe.moe_intermediate_size + h);
    total += attn + mlp + 2 * h;
  }
  return total;
}

std::string ModelConfig::DebugString() const {
  return absl::StrCat(architecture, ": ", num_layers, " layers, hidden ", hidden_size, ", heads ",
                      num_heads, "/", num_kv_heads, " x ", head_dim, ", mlp ", intermediate_size,
                      ", vocab ", vocab_size, ", rope ", RopeTypeName(rope.type), " theta ",
                      rope.theta, tie_word_embeddings ? ", tied embeddings" : "",
                      attention_bias ? ", qkv bias" : "", qk_norm ? ", q/k norm" : "",
                      is_mla() ? absl::StrCat(", MLA q_lora ", mla.q_lora_rank, " kv_lora ", mla.kv_lora_rank,
                                              " nope ", mla.qk_nope_head_dim, " rope ", mla.qk_rope_head_dim,
                                              " v ", mla.v_head_dim)
                               : "",
                      arch == ModelArch::kQwen3Moe
                          ? absl::StrCat(", MoE ", moe.n_routed_experts, " experts top-", moe.num_experts_per_tok,
                                         " x ", moe.moe_intermediate_size, " (softmax routing)")
                          : "",
                      is_mla() ? absl::StrCat(", MoE ", moe.n_routed_experts, " experts top-",
                                              moe.num_experts_per_tok, " x ", moe.moe_intermediate_size,
                                              ", shared ", moe.n_shared_experts, ", dense layers ",
                                              moe.first_k_dense_replace)
                               : "");
}

double YarnMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

float MlaSoftmaxScale(const ModelConfig& cfg) {
  double scale = 1.0 / std::sqrt(static_cast<double>(cfg.mla.qk_head_dim()));
  if (cfg.rope.type != RopeType::kDefault && cfg.rope.mscale_all_dim > 0) {
    const double m = YarnMscale(cfg.rope.factor, cfg.rope.mscale_all_dim);
    scale *= m * m;
  }
  return static_cast<float>(scale);
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view config_json,
                                             absl::string_view generation_config_json) {
  json j = json::parse(config_json.begin(), config_json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  ModelConfig cfg;
  // Architecture.
  auto arch_it = j.find("architectures");
  if (arch_it == j.end() || !arch_it->is_array() || arch_it->empty() || !(*arch_it)[0].is_string()) {
    return Bad("architectures", "missing (expected e.g. [\"LlamaForCausalLM\"])");
  }
  cfg.architecture = (*arch_it)[0].get<std::string>();
  if (cfg.architecture == "LlamaForCausalLM") {
    cfg.arch = ModelArch::kLlama;
  } else if (cfg.architecture == "MistralForCausalLM") {
    cfg.arch = ModelArch::kMistral;
  } else if (cfg.architecture == "Qwen2ForCausalLM") {
    cfg.arch = ModelArch::kQwen2;
  } else if (cfg.architecture == "Qwen3ForCausalLM") {
    cfg.arch = ModelArch::kQwen3;
  } else if (cfg.architecture == "DeepseekV3ForCausalLM") {
    cfg.arch = ModelArch::kDeepseekV3;
  } else if (cfg.architecture == "Qwen3MoeForCausalLM") {
    cfg.arch = ModelArch::kQwen3Moe;
  } else {
    return Bad("architectures",
               absl::StrCat("'", cfg.architecture,
                            "' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, "
                            "Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM, DeepseekV3ForCausalLM)"));
  }

  int64_t v = 0;
  if (auto s = GetInt(j, "vocab_size", &cfg.vocab_size, true, 1, kMaxVocabSize); !s.ok()) return s;
  if (auto s = GetInt(j, "hidden_size", &cfg.hidden_size, true, 1, kMaxModelWidth); !s.ok()) return s;
  if (auto s = GetInt(j, "intermediate_size", &cfg.intermediate_size, true, 1, kMaxModelWidth);
      !s.ok()) {
    return s;
  }
  if (auto s = GetInt(j, "num_hidden_layers", &v, true, 1, kMaxLayers); !s.ok()) return s;
  cfg.num_layers = static_cast<int>(v);
  if (auto s = GetInt(j, "num_attention_heads", &v, true, 1, kMaxHeads); !s.ok()) return s;
  cfg.num_heads = static_cast<int>(v);
  v = cfg.num_heads;
  if (auto s = GetInt(j, "num_key_value_heads", &v, false, 1, kMaxHeads); !s.ok()) return s;
  cfg.num_kv_heads = static_cast<int>(v);
  if (cfg.num_heads % cfg.num_kv_heads != 0) {
    return Bad("num_key_value_heads",
               absl::StrCat(cfg.num_kv_heads, " does not divide num_attention_heads ", cfg.num_heads));
  }
  if (cfg.arch == ModelArch::kDeepseekV3) {
    if (auto s = ParseDeepseekV3(j, &cfg); !s.ok()) return s;
  } else {
    if (cfg.hidden_size % cfg.num_heads != 0 && !j.contains("head_dim")) {
      return Bad("head_dim", "missing and hidden_size is not a multiple of num_attention_heads");
    }
    v = cfg.hidden_size / cfg.num_heads;
    if (auto s = GetInt(j, "head_dim", &v, false, 2, kMaxHeadDim); !s.ok()) return s;
    if (v > kMaxHeadDim) {  // derived from hidden_size
      return Bad("head_dim", absl::StrCat("hidden_size / num_attention_heads = ", v, " exceeds ", kMaxHeadDim));
    }
    if (v % 2 != 0) return Bad("head_dim", "must be even (RoPE rotates pairs)");
    cfg.head_dim = static_cast<int>(v);
  }
  if (auto s = GetNumber(j, "rms_norm_eps", &cfg.rms_norm_eps); !s.ok()) return s;
  if (!(cfg.rms_norm_eps > 0)) return Bad("rms_norm_eps", "must be > 0");
  cfg.max_position_embeddings = 2048;
  if (auto s = GetInt(j, "max_position_embeddings", &cfg.max_position_embeddings, false, 1); !s.ok()) {
    return s;
  }
  if (auto s = GetBool(j, "tie_word_embeddings", &cfg.tie_word_embeddings); !s.ok()) return s;

  // Activation.
  for (const char* key : {"hidden_act", "hidden_activation"}) {
    if (auto it = j.find(key); it != j.end() && !it->is_null()) {
      if (!it->is_string() || (it->get<std::string>() != "silu" && it->get<std::string>() != "swish")) {
        return Bad(key, "only silu (SwiGLU) is supported");
      }
    }
  }

  // Biases and norms by architecture.
  switch (cfg.arch) {
    case ModelArch::kLlama: {
      bool b = false;
      if (auto s = GetBool(j, "attention_bias", &b); !s.ok()) return s;
      cfg.attention_bias = cfg.attention_out_bias = b;
      if (auto s = GetBool(j, "mlp_bias", &cfg.mlp_bias); !s.ok()) return s;
      if (auto it = j.find("pretraining_tp"); it != j.end() && it->is_number_integer() &&
                                              it->get<int64_t>() != 1) {
        return Bad("pretraining_tp", "only 1 is supported");
      }
      break;
    }
    case ModelArch::kMistral:
      break;
    case ModelArch::kQwen2:
      cfg.attention_bias = true;
      break;
    case ModelArch::kDeepseekV3: {
      bool b = false;
      if (auto s = GetBool(j, "attention_bias", &b); !s.ok()) return s;
      if (b) return Bad("attention_bias", "true is not supported for DeepseekV3");
      if (auto it = j.find("pretraining_tp"); it != j.end() && it->is_number_integer() &&
                                              it->get<int64_t>() != 1) {
        return Bad("pretraining_tp", "only 1 is supported");
      }
      break;
    }
    case ModelArch::kQwen3:
    case ModelArch::kQwen3Moe: {
      bool b = false;
      if (auto s = GetBool(j, "attention_bias", &b); !s.ok()) return s;
      cfg.attention_bias = cfg.attention_out_bias = b;
      cfg.qk_norm = true;
      if (cfg.arch == ModelArch::kQwen3Moe) {
        if (auto s = ParseQwen3Moe(j, &cfg); !s.ok()) return s;
      }
      break;
    }
  }

  if (auto s = ParseRope(j, &cfg); !s.ok()) return s;
  if (cfg.rope.original_max_position_embeddings == 0) {
    cfg.rope.original_max_position_embeddings = cfg.max_position_embeddings;
  }

  // Sliding windows. Mistral: `sliding_window` applies to every layer when set. Qwen2/Qwen3:
  // only with use_sliding_window, on layers >= max_window_layers, unless `layer_types` says
  // explicitly which layers slide.
  cfg.sliding_window.assign(cfg.num_layers, 0);
  int64_t window = 0;
  if (auto s = GetInt(j, "sliding_window", &window, false, 1); !s.ok()) return s;
  std::vector<std::string> layer_types;
  if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
    if (!it->is_array() || static_cast<int>(it->size()) != cfg.num_layers) {
      return Bad("layer_types", "must list one type per layer");
    }
    for (const json& t : *it) {
      if (!t.is_string()) return Bad("layer_types", "entries must be strings");
      std::string s = t.get<std::string>();
      if (s != "full_attention" && s != "sliding_attention") {
        return Bad("layer_types", absl::StrCat("unsupported layer type '", s, "'"));
      }
      layer_types.push_back(s);
    }
  }
  if (cfg.arch == ModelArch::kMistral) {
    if (window > 0) cfg.sliding_window.assign(cfg.num_layers, window);
  } else if (cfg.arch == ModelArch::kQwen2 || cfg.arch == ModelArch::kQwen3 || cfg.arch == ModelArch::kQwen3Moe) {
    bool use = false;
    if (auto s = GetBool(j, "use_sliding_window", &use); !s.ok()) return s;
    if (use && window > 0) {
      if (!layer_types.empty()) {
        for (int l = 0; l < cfg.num_layers; ++l) {
          if (layer_types[l] == "sliding_attention") cfg.sliding_window[l] = window;
        }
      } else {
        int64_t mwl = cfg.num_layers;
        if (auto s = GetInt(j, "max_window_layers", &mwl, false, 0); !s.ok()) return s;
        for (int64_t l = mwl; l < cfg.num_layers; ++l) cfg.sliding_window[l] = window;
      }
    }
  } else if (!layer_types.empty()) {
    for (int l = 0; l < cfg.num_layers; ++l) {
      if (layer_types[l] == "sliding_attention") {
        if (window <= 0) return Bad("sliding_window", "missing for sliding_attention layers");
        cfg.sliding_window[l] = window;
      }
    }
  }

  if (auto s = GetTokenIds(j, "eos_token_id", &cfg.eos_token_ids); !s.ok()) return s;
  std::vector<int32_t> bos;
  if (auto s = GetTokenIds(j, "bos_token_id", &bos); !s.ok()) return s;
  if (!bos.empty()) cfg.bos_token_id = bos[0];
  if (!generation_config_json.empty()) {
    json g = json::parse(generation_config_json.begin(), generation_config_json.end(), nullptr, false);
    if (g.is_discarded() || !g.is_object()) {
      return absl::InvalidArgumentError("generation_config.json: not a JSON object");
    }
    std::vector<int32_t> gen_eos;
    if (auto s = GetTokenIds(g, "eos_token_id", &gen_eos); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("generation_config.json: ", s.message()));
    }
    // generation_config.json is what generate() uses; merge its ids in.
    for (int32_t id : gen_eos) {
      if (std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), id) == cfg.eos_token_ids.end()) {
        cfg.eos_token_ids.push_back(id);
      }
    }
  }
  for (int32_t id : cfg.eos_token_ids) {
    if (id >= cfg.vocab_size) return Bad("eos_token_id", absl::StrCat(id, " >= vocab_size"));
  }
  return cfg;
}

}  // namespace tq
