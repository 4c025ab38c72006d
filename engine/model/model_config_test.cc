#include "engine/model/model_config.h"

#include <cmath>
#include <string>
#include <tuple>

#include "engine/model/rope.h"
#include "gtest/gtest.h"

namespace tq {
namespace {

constexpr char kQwen3[] = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "eos_token_id": 0,
  "bos_token_id": 0, "head_dim": 64, "hidden_act": "silu", "hidden_size": 256,
  "intermediate_size": 768, "max_position_embeddings": 2048, "num_attention_heads": 4,
  "num_hidden_layers": 6, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
  "sliding_window": null, "tie_word_embeddings": false, "use_sliding_window": false,
  "vocab_size": 4096})";

std::string Llama(const std::string& extra) {
  return R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 100, "max_position_embeddings": 256)" + extra + "}";
}

TEST(ModelConfigTest, ParsesQwen3) {
  auto c = ParseModelConfig(kQwen3);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, ModelArch::kQwen3);
  EXPECT_TRUE(c->qk_norm);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->rope.type, RopeType::kDefault);
  EXPECT_EQ(c->rope.theta, 10000.0);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{0});
  EXPECT_EQ(c->sliding_window, std::vector<int64_t>(6, 0));
  EXPECT_EQ(c->ParameterCount(), 6819840);  // shared/models/README.md
}

constexpr char kDeepseekV3[] = R"({
  "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false, "bos_token_id": 0,
  "eos_token_id": 0, "first_k_dense_replace": 1, "head_dim": 32, "hidden_act": "silu",
  "hidden_size": 256, "intermediate_size": 512, "kv_lora_rank": 128, "max_position_embeddings": 2048,
  "model_type": "deepseek_v3", "moe_intermediate_size": 128, "n_group": 1, "n_routed_experts": 8,
  "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 4, "num_experts_per_tok": 2,
  "num_hidden_layers": 4, "num_key_value_heads": 4, "num_nextn_predict_layers": 1, "pretraining_tp": 1,
  "q_lora_rank": 128, "qk_head_dim": 96, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
  "rms_norm_eps": 1e-06, "rope_interleave": true,
  "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "routed_scaling_factor": 1.0,
  "tie_word_embeddings": false, "topk_group": 1, "v_head_dim": 64, "vocab_size": 4096})";

TEST(ModelConfigTest, ParsesDeepseekV3) {
  auto c = ParseModelConfig(kDeepseekV3);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, ModelArch::kDeepseekV3);
  EXPECT_TRUE(c->is_mla());
  EXPECT_EQ(c->mla.q_lora_rank, 128);
  EXPECT_EQ(c->mla.kv_lora_rank, 128);
  EXPECT_EQ(c->mla.qk_nope_head_dim, 64);
  EXPECT_EQ(c->mla.qk_rope_head_dim, 32);
  EXPECT_EQ(c->mla.v_head_dim, 64);
  EXPECT_EQ(c->mla.qk_head_dim(), 96);
  EXPECT_TRUE(c->mla.rope_interleave);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->rope_dim(), 32);
  EXPECT_EQ(c->kv_cache_heads(), 1);
  EXPECT_EQ(c->kv_cache_key_dim(), 32);     // k_pe
  EXPECT_EQ(c->kv_cache_value_dim(), 128);  // the latent c
  EXPECT_EQ(c->moe.n_routed_experts, 8);
  EXPECT_EQ(c->moe.num_experts_per_tok, 2);
  EXPECT_EQ(c->moe.n_shared_experts, 1);
  EXPECT_EQ(c->moe.moe_intermediate_size, 128);
  EXPECT_EQ(c->moe.first_k_dense_replace, 1);
  EXPECT_EQ(c->moe.num_nextn_predict_layers, 1);
  EXPECT_TRUE(c->moe.norm_topk_prob);
  EXPECT_FALSE(c->is_moe_layer(0));
  EXPECT_TRUE(c->is_moe_layer(1) && c->is_moe_layer(3));
  EXPECT_EQ(c->ParameterCount(), 6169856);  // shared/models/README.md
}

// Qwen3-30B-A3B's config.json (the Hub's key names), shrunk.
constexpr char kQwen3Moe[] = R"({
  "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "decoder_sparse_step": 1,
  "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144,
  "max_position_embeddings": 40960, "mlp_only_layers": [], "model_type": "qwen3_moe",
  "moe_intermediate_size": 768, "norm_topk_prob": true, "num_attention_heads": 32,
  "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false,
  "use_sliding_window": false, "vocab_size": 151936})";

TEST(ModelConfigTest, ParsesQwen3Moe) {
  auto c = ParseModelConfig(kQwen3Moe);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, ModelArch::kQwen3Moe);
  EXPECT_FALSE(c->is_mla());
  EXPECT_TRUE(c->qk_norm);
  EXPECT_EQ(c->moe.n_routed_experts, 128);
  EXPECT_EQ(c->moe.num_experts_per_tok, 8);
  EXPECT_EQ(c->moe.moe_intermediate_size, 768);
  EXPECT_TRUE(c->moe.softmax_scoring);
  EXPECT_TRUE(c->moe.norm_topk_prob);
  EXPECT_EQ(c->moe.n_shared_experts, 0);
  for (int l = 0; l < 48; ++l) EXPECT_TRUE(c->is_moe_layer(l)) << l;
  EXPECT_FALSE(c->is_moe_layer(48));
  // 30.5 B parameters in all (3.3 B active), as the model card says.
  EXPECT_NEAR(static_cast<double>(c->ParameterCount()), 30.5e9, 0.2e9);
  EXPECT_NE(c->DebugString().find("128 experts top-8"), std::string::npos) << c->DebugString();

  // transformers 5's key name, dense layers by decoder_sparse_step and mlp_only_layers.
  std::string s = kQwen3Moe;
  s.replace(s.find("\"num_experts\""), 13, "\"num_local_experts\"");
  s.replace(s.find("\"decoder_sparse_step\": 1"), 24, "\"decoder_sparse_step\": 2");
  s.replace(s.find("\"mlp_only_layers\": []"), 21, "\"mlp_only_layers\": [5]");
  c = ParseModelConfig(s);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->moe.n_routed_experts, 128);
  EXPECT_FALSE(c->is_moe_layer(0));
  EXPECT_TRUE(c->is_moe_layer(1));
  EXPECT_FALSE(c->is_moe_layer(5));  // listed
  EXPECT_TRUE(c->is_moe_layer(47));

  // Errors name the field.
  for (const auto& [from, to, field] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"\"mlp_only_layers\": []", "\"mlp_only_layers\": [48]", "mlp_only_layers"},
           {"\"num_experts_per_tok\": 8", "\"num_experts_per_tok\": 129", "num_experts_per_tok"},
           {"\"num_experts\": 128,", "", "num_local_experts"},
           {"\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 0", "decoder_sparse_step"}}) {
    std::string bad = kQwen3Moe;
    bad.replace(bad.find(from), from.size(), to);
    auto e = ParseModelConfig(bad);
    ASSERT_FALSE(e.ok()) << from;
    EXPECT_NE(e.status().message().find(field), std::string::npos) << e.status();
  }
}

TEST(ModelConfigTest, DeepseekV3RefusesUnsupported) {
  auto with = [](const std::string& from, const std::string& to) {
    std::string s = kDeepseekV3;
    size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  struct Case {
    std::string from, to, field;
  } cases[] = {
      {R"("q_lora_rank": 128)", R"("q_lora_rank": null)", "q_lora_rank"},
      {R"("n_group": 1)", R"("n_group": 3)", "n_group"},
      {R"("topk_group": 1)", R"("topk_group": 2)", "topk_group"},
      {R"("num_experts_per_tok": 2)", R"("num_experts_per_tok": 9)", "num_experts_per_tok"},
      {R"("attention_bias": false)", R"("attention_bias": true)", "attention_bias"},
      {R"("head_dim": 32)", R"("head_dim": 64)", "head_dim"},
      {R"("qk_head_dim": 96)", R"("qk_head_dim": 95)", "qk_head_dim"},
      {R"("routed_scaling_factor": 1.0)", R"("routed_scaling_factor": 0)", "routed_scaling_factor"},
      {R"("kv_lora_rank": 128)", R"("kv_lora_rank": 0)", "kv_lora_rank"},
      {R"("v_head_dim": 64)", R"("v_head_dim": 64, "scoring_func": "softmax")", "scoring_func"},
  };
  for (const Case& c : cases) {
    auto r = ParseModelConfig(with(c.from, c.to));
    ASSERT_FALSE(r.ok()) << c.to;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.field), std::string::npos) << r.status();
  }
  // An odd kv_lora_rank is fine: the cache stores c and k_pe apart (no halves to split).
  EXPECT_TRUE(ParseModelConfig(with(R"("kv_lora_rank": 128)", R"("kv_lora_rank": 127)")).ok());
  // DeepSeek-V3's yarn: the RoPE's attention factor and the softmax's mscale(factor, mscale_all_dim)^2.
  auto y = ParseModelConfig(with(R"("rope_type": "default")", R"("rope_type": "yarn", "factor": 40.0,
      "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
      "mscale_all_dim": 1.0)"));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->rope.type, RopeType::kYarn);
  const double m = 0.1 * std::log(40.0) + 1.0;  // 1.3689
  EXPECT_FLOAT_EQ(MlaSoftmaxScale(*y), static_cast<float>(m * m / std::sqrt(96.0)));
  auto plain = ParseModelConfig(kDeepseekV3);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FLOAT_EQ(MlaSoftmaxScale(*plain), static_cast<float>(1.0 / std::sqrt(96.0)));
  // n_group 2 with topk_group 1 is supported (group-limited routing).
  auto g = ParseModelConfig(with(R"("n_group": 1)", R"("n_group": 2)"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->moe.n_group, 2);
}

TEST(ModelConfigTest, LegacyRopeScalingAndDefaults) {
  auto c = ParseModelConfig(Llama(R"(, "rope_theta": 500000.0, "attention_bias": true,
      "rope_scaling": {"type": "linear", "factor": 4.0}, "eos_token_id": [5, 7])"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->rope.type, RopeType::kLinear);
  EXPECT_EQ(c->rope.factor, 4.0);
  EXPECT_EQ(c->rope.theta, 500000.0);
  EXPECT_TRUE(c->attention_bias && c->attention_out_bias);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{5, 7}));
  auto g = ParseModelConfig(Llama(""), R"({"eos_token_id": [7, 9]})");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->eos_token_ids, (std::vector<int32_t>{7, 9}));
}

TEST(ModelConfigTest, Qwen2BiasAndSlidingLayers) {
  auto c = ParseModelConfig(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
      "num_key_value_heads": 1, "vocab_size": 100, "use_sliding_window": true,
      "sliding_window": 32, "max_window_layers": 2})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->attention_out_bias);
  EXPECT_EQ(c->sliding_window, (std::vector<int64_t>{0, 0, 32, 32}));
  auto m = ParseModelConfig(R"({"architectures": ["MistralForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
      "vocab_size": 100, "sliding_window": 8, "head_dim": 48})");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->sliding_window, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(m->head_dim, 48);
  EXPECT_EQ(m->q_size(), 192);
}

TEST(ModelConfigTest, ErrorsNameTheProblem) {
  struct Case {
    std::string json;
    std::string want;
  };
  const Case cases[] = {
      {"not json", "not a JSON object"},
      {"[1, 2]", "not a JSON object"},
      {R"({"architectures": ["GPT2LMHeadModel"]})", "GPT2LMHeadModel"},
      {R"({"hidden_size": 4})", "architectures"},
      {Llama(R"(, "hidden_act": "gelu")"), "hidden_act"},
      {Llama(R"(, "rope_scaling": {"rope_type": "longrope", "factor": 2.0})"), "longrope"},
      {Llama(R"(, "rope_scaling": {"rope_type": "linear"})"), "factor"},
      {Llama(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0})"), "low_freq_factor"},
      {Llama(R"(, "num_key_value_heads": 3)"), "num_key_value_heads"},
      {Llama(R"(, "head_dim": 15)"), "head_dim"},
      {Llama(R"(, "rms_norm_eps": -1)"), "rms_norm_eps"},
      {Llama(R"(, "eos_token_id": 1000)"), "eos_token_id"},
      {Llama(R"(, "vocab_size": "big")"), "vocab_size"},
      {Llama(R"(, "num_hidden_layers": 0)"), "num_hidden_layers"},
      {Llama(R"(, "partial_rotary_factor": 0.5)"), "partial_rotary_factor"},
      {R"({"architectures": ["LlamaForCausalLM"], "intermediate_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 1, "vocab_size": 10})", "hidden_size: missing"},
  };
  for (const Case& c : cases) {
    auto r = ParseModelConfig(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.want), std::string::npos) << r.status() << " / want " << c.want;
  }
}

// Found writing //tests/fuzz:model_config_fuzzer: integers were narrowed to int unchecked, so
// 2^32 attention heads became 0 (a division by zero), 2^31 layers a negative count (an uncaught
// length_error), a huge hidden_size a negative head_dim, and max_window_layers 2^32-1 became -1
// (a write before the sliding-window table); 10^9 layers allocated 8 GB, and huge widths
// overflowed ParameterCount. Sizes are now bounded far above real models.
TEST(ModelConfigTest, HugeSizesAreRefusedNotNarrowed) {
  struct Case {
    std::string json;
    std::string want;
  };
  const Case cases[] = {
      {Llama(R"(, "num_attention_heads": 4294967296)"), "num_attention_heads"},
      {Llama(R"(, "num_key_value_heads": 4294967297)"), "num_key_value_heads"},
      {Llama(R"(, "num_hidden_layers": 2147483648)"), "num_hidden_layers"},
      {Llama(R"(, "num_hidden_layers": 1000000000)"), "num_hidden_layers"},
      {Llama(R"(, "head_dim": 4294967298)"), "head_dim"},
      {Llama(R"(, "hidden_size": 4000000000000, "num_attention_heads": 4)"), "hidden_size"},
      {Llama(R"(, "intermediate_size": 4611686018427387904)"), "intermediate_size"},
      {Llama(R"(, "vocab_size": 4611686018427387904)"), "vocab_size"},
      {Llama(R"(, "hidden_size": 1048576, "num_attention_heads": 2, "num_key_value_heads": 2)"),
       "head_dim"},  // derived: 524288
  };
  for (const Case& c : cases) {
    auto r = ParseModelConfig(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.want), std::string::npos) << r.status() << " / want " << c.want;
  }
  // At the limits: accepted, and the parameter count does not overflow.
  auto big = ParseModelConfig(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 16777216,
      "hidden_size": 1048576, "intermediate_size": 1048576, "num_hidden_layers": 4096,
      "num_attention_heads": 4096, "num_key_value_heads": 4096, "head_dim": 4096})");
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->sliding_window.size(), 4096u);
  EXPECT_GT(big->ParameterCount(), 0);
  // max_window_layers may exceed the layer count (Qwen ships 28 with fewer layers), by any amount.
  auto qwen = ParseModelConfig(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
      "vocab_size": 100, "use_sliding_window": true, "sliding_window": 32,
      "max_window_layers": 4294967295})");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->sliding_window, (std::vector<int64_t>{0, 0}));
}

TEST(RopeTest, DefaultFrequenciesAndTable) {
  RopeConfig r;
  r.theta = 10000.0;
  auto t = RopeTable::Create(r, 8, 10);
  ASSERT_TRUE(t.ok());
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(t->inv_freq()[i], std::pow(10000.0, -2.0 * i / 8), 1e-7);
  EXPECT_FLOAT_EQ(t->cos(0)[2], 1.0f);
  EXPECT_NEAR(t->cos(3)[0], std::cos(3.0), 1e-6);
  EXPECT_NEAR(t->sin(7)[1], std::sin(7 * 0.1), 1e-6);
}

TEST(RopeTest, Llama3ScalesOnlyLowFrequencies) {
  RopeConfig r;
  r.type = RopeType::kLlama3;
  r.theta = 500000.0;
  r.factor = 8.0;
  r.low_freq_factor = 1.0;
  r.high_freq_factor = 4.0;
  r.original_max_position_embeddings = 8192;
  std::vector<float> f;
  float att = 0;
  ASSERT_TRUE(ComputeRopeFrequencies(r, 128, &f, &att).ok());
  EXPECT_EQ(att, 1.0f);
  EXPECT_NEAR(f[0], 1.0, 1e-6);                                  // high frequency untouched
  EXPECT_NEAR(f[63], std::pow(500000.0, -126.0 / 128) / 8, 1e-12);  // lowest divided by factor
}

TEST(RopeTest, YarnAttentionFactor) {
  RopeConfig r;
  r.type = RopeType::kYarn;
  r.theta = 1e6;
  r.factor = 4.0;
  r.original_max_position_embeddings = 128;
  std::vector<float> f;
  float att = 0;
  ASSERT_TRUE(ComputeRopeFrequencies(r, 32, &f, &att).ok());
  EXPECT_NEAR(att, 0.1 * std::log(4.0) + 1.0, 1e-6);
  EXPECT_NEAR(f[0], 1.0, 1e-6);
  EXPECT_NEAR(f[15], std::pow(1e6, -30.0 / 32) / 4, 1e-9);
}

}  // namespace
}  // namespace tq
