// MlaTransformer: the MoE routing rules of DeepSeek-V3 (engine/model/moe.h), and that batching, chunked prefill and decode through the
// latent KV cache give the logits of one full-prompt forward (tiny DeepSeek-V3).
#include "engine/model/mla_transformer.h"

#include <cmath>
#include <string>
#include <vector>

#include "engine/model/moe.h"
#include "gtest/gtest.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

TEST(MlaRouteTest, BiasSelectsButDoesNotWeigh) {
  MoeConfig m;
  m.n_routed_experts = 8;
  m.num_experts_per_tok = 2;
  m.norm_topk_prob = true;
  const float logits[8] = {3.0f, 2.0f, 1.0f, 0.0f, -1.0f, -2.0f, -3.0f, 0.5f};
  const float bias[8] = {0, 0, 0, 0, 0, 0, 0, 2.0f};  // expert 7: sigmoid(0.5)+2 is the best choice
  std::vector<int> ex;
  std::vector<float> w;
  RouteMoeToken(m, logits, bias, &ex, &w);
  ASSERT_EQ(ex, (std::vector<int>{7, 0}));
  const float s7 = Sigmoid(0.5f), s0 = Sigmoid(3.0f);
  EXPECT_NEAR(w[0], s7 / (s7 + s0), 1e-6);
  EXPECT_NEAR(w[1], s0 / (s7 + s0), 1e-6);
  // Unnormalized, scaled.
  m.norm_topk_prob = false;
  m.routed_scaling_factor = 2.5;
  RouteMoeToken(m, logits, bias, &ex, &w);
  EXPECT_NEAR(w[0], 2.5f * s7, 1e-6);
  EXPECT_NEAR(w[1], 2.5f * s0, 1e-6);
}

TEST(MlaRouteTest, GroupLimitedRouting) {
  MoeConfig m;
  m.n_routed_experts = 8;
  m.num_experts_per_tok = 2;
  m.n_group = 2;
  m.topk_group = 1;
  // Group 0 (experts 0-3) has the single best expert, group 1 (4-7) the best sum of two.
  const float logits[8] = {4.0f, -4.0f, -4.0f, -4.0f, 2.0f, 2.0f, 1.5f, -4.0f};
  const float bias[8] = {};
  std::vector<int> ex;
  std::vector<float> w;
  RouteMoeToken(m, logits, bias, &ex, &w);
  EXPECT_EQ(ex, (std::vector<int>{4, 5}));
  EXPECT_NEAR(w[0] + w[1], 1.0f, 1e-6);
  m.topk_group = 2;
  RouteMoeToken(m, logits, bias, &ex, &w);
  EXPECT_EQ(ex, (std::vector<int>{0, 4}));
}

struct Tiny {
  std::unique_ptr<ModelCheckpoint> ckpt;
  ModelConfig cfg;
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<MlaTransformer> model;
  std::unique_ptr<PagedKvCache> cache;
};

Tiny LoadTiny() {
  Tiny t;
  const std::string dir = tq::testing::TestDataPath("testdata/models/tq-tiny-deepseek-v3");
  auto ck = ModelCheckpoint::Open(dir, {});
  EXPECT_TRUE(ck.ok()) << ck.status();
  t.ckpt = std::move(*ck);
  auto cfg = ParseModelConfig(t.ckpt->config_json(), t.ckpt->generation_config_json());
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  t.cfg = *cfg;
  auto w = BindModelWeights(*t.ckpt, t.cfg, {});
  EXPECT_TRUE(w.ok()) << w.status();
  t.weights = std::move(*w);
  auto rope = RopeTable::Create(t.cfg.rope, t.cfg.rope_dim(), 256);
  EXPECT_TRUE(rope.ok());
  t.pool = std::make_unique<ThreadPool>(2);
  t.model = std::make_unique<MlaTransformer>(t.cfg, *t.weights, std::move(*rope), t.pool.get());
  KvCacheOptions kv{t.cfg.num_layers, t.cfg.kv_cache_heads(), t.cfg.kv_cache_key_dim(), 4, 64, true, t.cfg.kv_cache_value_dim()};
  auto cache = PagedKvCache::Create(kv, std::move(*MakeKvCodec("fp32")));
  EXPECT_TRUE(cache.ok());
  t.cache = std::move(*cache);
  return t;
}

TEST(MlaTransformerTest, LatentCacheIsSmall) {
  Tiny t = LoadTiny();
  ASSERT_NE(t.model, nullptr);
  // fp32: (kv_lora 128 + rope 32) floats per layer, 4 layers.
  EXPECT_EQ(t.cache->bytes_per_token(), 4 * 160 * 4);
}

TEST(MlaTransformerTest, BatchedChunkedAndDecodeMatchFullPrompt) {
  Tiny t = LoadTiny();
  ASSERT_NE(t.model, nullptr);
  const int64_t V = t.cfg.vocab_size;
  const std::vector<int32_t> a = {41, 78, 259, 2297, 416, 2974, 17, 300, 12};
  const std::vector<int32_t> b = {5, 900, 33, 1200, 7};
  // Reference: each prompt alone, all positions.
  auto full = [&](const std::vector<int32_t>& ids) {
    SeqHandle h = t.cache->AddSequence();
    EXPECT_TRUE(t.cache->Reserve(h, ids.size()));
    ForwardBatch fb;
    fb.tokens = ids;
    fb.seqs.push_back({h, 0, static_cast<int64_t>(ids.size()), LogitsMode::kAll});
    std::vector<float> lg;
    EXPECT_TRUE(t.model->Forward(fb, *t.cache, &lg).ok());
    t.cache->FreeSequence(h);
    return lg;
  };
  const std::vector<float> ra = full(a), rb = full(b);
  // Both together: a in a prefill chunk of 4 then decode steps, b in one chunk of 3 then 2 decodes,
  // mixed in the same steps.
  SeqHandle ha = t.cache->AddSequence(), hb = t.cache->AddSequence();
  ASSERT_TRUE(t.cache->Reserve(ha, a.size()));
  ASSERT_TRUE(t.cache->Reserve(hb, b.size()));
  int64_t pa = 0, pb = 0;
  double max_diff = 0;
  auto compare = [&](const float* got, const std::vector<float>& ref, int64_t pos) {
    for (int64_t i = 0; i < V; ++i) max_diff = std::max<double>(max_diff, std::fabs(got[i] - ref[pos * V + i]));
  };
  while (pa < static_cast<int64_t>(a.size()) || pb < static_cast<int64_t>(b.size())) {
    ForwardBatch fb;
    std::vector<std::pair<const std::vector<float>*, int64_t>> want;
    if (pa < static_cast<int64_t>(a.size())) {
      const int64_t n = pa == 0 ? 4 : 1;
      fb.tokens.insert(fb.tokens.end(), a.begin() + pa, a.begin() + pa + n);
      fb.seqs.push_back({ha, pa, n, LogitsMode::kLast});
      want.push_back({&ra, pa + n - 1});
      pa += n;
    }
    if (pb < static_cast<int64_t>(b.size())) {
      const int64_t n = pb == 0 ? 3 : 1;
      fb.tokens.insert(fb.tokens.end(), b.begin() + pb, b.begin() + pb + n);
      fb.seqs.push_back({hb, pb, n, LogitsMode::kLast});
      want.push_back({&rb, pb + n - 1});
      pb += n;
    }
    std::vector<float> lg;
    ASSERT_TRUE(t.model->Forward(fb, *t.cache, &lg).ok());
    ASSERT_EQ(lg.size(), want.size() * V);
    for (size_t r = 0; r < want.size(); ++r) compare(lg.data() + r * V, *want[r].first, want[r].second);
  }
  EXPECT_LT(max_diff, 1e-4);
}

TEST(MlaTransformerTest, RefusesADenseShapedCache) {
  Tiny t = LoadTiny();
  ASSERT_NE(t.model, nullptr);
  KvCacheOptions kv{t.cfg.num_layers, t.cfg.num_kv_heads, t.cfg.head_dim, 4, 8};
  auto cache = PagedKvCache::Create(kv, std::move(*MakeKvCodec("fp32")));
  ASSERT_TRUE(cache.ok());
  SeqHandle h = (*cache)->AddSequence();
  ASSERT_TRUE((*cache)->Reserve(h, 2));
  ForwardBatch fb;
  fb.tokens = {1, 2};
  fb.seqs.push_back({h, 0, 2, LogitsMode::kLast});
  std::vector<float> lg;
  EXPECT_EQ(t.model->Forward(fb, **cache, &lg).code(), absl::StatusCode::kInvalidArgument);
  // The right shape, but one layer's keys score in another width (QJL): refused, not misread.
  auto mla = MakeMlaKvCacheFormat("turbo3", t.cfg.num_layers, t.cfg.kv_cache_value_dim(), t.cfg.kv_cache_key_dim());
  ASSERT_TRUE(mla.ok()) << mla.status();
  auto qjl = MakeKvCodec("turbo3:qjl=1", KvRole::kKey, t.cfg.kv_cache_key_dim());
  ASSERT_TRUE(qjl.ok()) << qjl.status();
  mla->keys[1] = *qjl;
  KvCacheOptions lat{t.cfg.num_layers, 1, t.cfg.kv_cache_key_dim(), 4, 8, true, t.cfg.kv_cache_value_dim()};
  auto bad = PagedKvCache::Create(lat, *mla);
  ASSERT_TRUE(bad.ok()) << bad.status();
  SeqHandle hb = (*bad)->AddSequence();
  ASSERT_TRUE((*bad)->Reserve(hb, 2));
  fb.seqs[0].kv = hb;
  const absl::Status st = t.model->Forward(fb, **bad, &lg);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("layer 1"), std::string::npos) << st;
}

}  // namespace
}  // namespace tq
