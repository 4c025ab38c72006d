// The engine computes what Hugging Face transformers computes: for the trained tiny Qwen3, the
// trained tiny DeepSeek-V3 (MLA + MoE, engine/model/mla_transformer.h) and
// the four random-init reference models (incl. a Qwen3-MoE; testdata/models/*/reference.json, fp32
// on the CPU),
// last-position logits within 1e-3 × max|logit| (observed ~1e-6), identical top-5, identical
// argmax and log-sum-exp at every prompt position, and the identical 16-token greedy
// continuation through the engine's request API (KV cache, scheduler, sampler).
#include <cmath>
#include <future>
#include <string>
#include <vector>

#include "engine/model/mla_transformer.h"
#include "engine/model/model_config.h"
#include "engine/model/rope.h"
#include "engine/model/transformer.h"
#include "engine/model/weights.h"
#include "engine/runtime/engine.h"
#include "gtest/gtest.h"
#include "kernels/nn/ops.h"
#include "nlohmann/json.hpp"
#include "tests/util/testdata.h"

namespace tq {
namespace {

// The acceptance bound of the issue, relative to the largest logit magnitude.
constexpr double kMaxRelLogitDiff = 1e-3;
// Log-sum-exp at every position: absolute (fp32 summation order differs).
constexpr double kMaxLseDiff = 1e-3;

struct Loaded {
  std::unique_ptr<ModelCheckpoint> ckpt;
  ModelConfig cfg;
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<ModelRunner> model;
  std::unique_ptr<PagedKvCache> cache;
};

Loaded Load(const std::string& dir) {
  Loaded l;
  auto ck = ModelCheckpoint::Open(dir, {});
  EXPECT_TRUE(ck.ok()) << ck.status();
  l.ckpt = std::move(*ck);
  auto cfg = ParseModelConfig(l.ckpt->config_json(), l.ckpt->generation_config_json());
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  l.cfg = *cfg;
  auto w = BindModelWeights(*l.ckpt, l.cfg, {});
  EXPECT_TRUE(w.ok()) << w.status();
  l.weights = std::move(*w);
  auto rope = RopeTable::Create(l.cfg.rope, l.cfg.rope_dim(), 512);
  EXPECT_TRUE(rope.ok());
  l.pool = std::make_unique<ThreadPool>(2);
  if (l.cfg.is_mla()) {
    l.model = std::make_unique<MlaTransformer>(l.cfg, *l.weights, std::move(*rope), l.pool.get());
  } else {
    l.model = std::make_unique<Transformer>(l.cfg, *l.weights, std::move(*rope), l.pool.get());
  }
  KvCacheOptions kv{l.cfg.num_layers, l.cfg.kv_cache_heads(), l.cfg.kv_cache_key_dim(), 16, 64, true, l.cfg.kv_cache_value_dim()};
  auto cache = PagedKvCache::Create(kv, std::move(*MakeKvCodec("fp32")));
  EXPECT_TRUE(cache.ok());
  l.cache = std::move(*cache);
  return l;
}

// All-position logits of one prompt.
std::vector<float> Logits(Loaded& l, const std::vector<int32_t>& ids) {
  SeqHandle h = l.cache->AddSequence();
  EXPECT_TRUE(l.cache->Reserve(h, ids.size()));
  ForwardBatch b;
  b.tokens = ids;
  b.seqs.push_back({h, 0, static_cast<int64_t>(ids.size()), LogitsMode::kAll});
  std::vector<float> logits;
  absl::Status st = l.model->Forward(b, *l.cache, &logits);
  EXPECT_TRUE(st.ok()) << st;
  l.cache->FreeSequence(h);
  return logits;
}

std::vector<int32_t> Greedy(Engine& e, const std::vector<int32_t>& ids, int n) {
  GenerationRequest r;
  r.prompt_ids = ids;
  r.max_tokens = n;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  std::promise<void> done;
  std::vector<int32_t> out;
  auto id = e.Submit(r, [&](const GenerationEvent& ev) {
    out.insert(out.end(), ev.token_ids.begin(), ev.token_ids.end());
    if (ev.finished) done.set_value();
  });
  EXPECT_TRUE(id.ok()) << id.status();
  done.get_future().wait();
  return out;
}

class HfReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfReferenceTest, LogitsAndGreedyMatchTransformers) {
  const std::string dir = tq::testing::TestDataPath("testdata/models/" + GetParam());
  const auto ref = nlohmann::json::parse(tq::testing::ReadFileOrDie(dir + "/reference.json"));
  Loaded l = Load(dir);
  ASSERT_NE(l.model, nullptr);
  const int64_t vocab = l.cfg.vocab_size;
  EngineOptions eo;
  eo.model_uri = dir;
  eo.kv_codec = "fp32";
  eo.threads = 2;
  auto engine = Engine::Create(eo);
  ASSERT_TRUE(engine.ok()) << engine.status();

  for (const auto& p : ref["prompts"]) {
    const std::vector<int32_t> ids = p["input_ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE(::testing::Message() << GetParam() << " prompt of " << ids.size() << " tokens");
    std::vector<float> all = Logits(l, ids);
    ASSERT_EQ(all.size(), ids.size() * vocab);
    const float* last = all.data() + (ids.size() - 1) * vocab;
    const std::vector<float> want = p["last_logits"].get<std::vector<float>>();
    ASSERT_EQ(static_cast<int64_t>(want.size()), vocab);
    double max_abs = 0, max_diff = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(want[i])));
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(want[i]) - last[i]));
    }
    EXPECT_LE(max_diff, kMaxRelLogitDiff * max_abs) << "max |diff| " << max_diff << " of max |logit| " << max_abs;
    RecordProperty("max_abs_diff_" + std::to_string(ids.size()), std::to_string(max_diff));
    // Top 5.
    std::vector<int32_t> order(vocab);
    for (int64_t i = 0; i < vocab; ++i) order[i] = static_cast<int32_t>(i);
    std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                      [&](int32_t a, int32_t b) { return last[a] > last[b] || (last[a] == last[b] && a < b); });
    EXPECT_EQ(std::vector<int32_t>(order.begin(), order.begin() + 5), p["top5_ids"].get<std::vector<int32_t>>());
    // Every position (reference models record argmax and log-sum-exp per position).
    if (p.contains("position_argmax")) {
      const auto am = p["position_argmax"].get<std::vector<int32_t>>();
      const auto lse = p["position_logsumexp"].get<std::vector<double>>();
      for (size_t t = 0; t < ids.size(); ++t) {
        const float* row = all.data() + t * vocab;
        EXPECT_EQ(ArgMax(row, vocab), am[t]) << "position " << t;
        EXPECT_NEAR(nn::LogSumExp(row, vocab), lse[t], kMaxLseDiff) << "position " << t;
      }
    }
    // Greedy continuation through the request API.
    EXPECT_EQ(Greedy(**engine, ids, 16), p["greedy_ids"].get<std::vector<int32_t>>());
  }
}

INSTANTIATE_TEST_SUITE_P(Models, HfReferenceTest,
                         ::testing::Values("tq-tiny-qwen3", "ref-llama-bias-tied", "ref-qwen2-yarn-mqa",
                                           "ref-mistral-swa", "ref-qwen3-moe", "tq-tiny-deepseek-v3",
                                           "ref-deepseek-yarn"),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string s = i.param;
                           for (char& c : s) {
                             if (c == '-') c = '_';
                           }
                           return s;
                         });

// The trained models' perplexity on the reference's 16,384 WikiText-2 tokens (64 independent
// windows of 256), from the reference's own token ids: equal to transformers' within 1e-4
// relative.
void CheckReferencePerplexity(const std::string& model) {
  const std::string dir = tq::testing::TestDataPath("testdata/models/" + model);
  const auto ref = nlohmann::json::parse(tq::testing::ReadFileOrDie(dir + "/reference.json"));
  const auto& ppl = ref["perplexity"];
  const std::vector<int32_t> ids = ppl["token_ids"].get<std::vector<int32_t>>();
  EngineOptions eo;
  eo.model_uri = dir;
  eo.kv_codec = "fp32";
  eo.threads = 2;
  auto engine = Engine::Create(eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const int window = ppl["window"].get<int>();
  const auto window_sums = ppl["window_nll_sums"].get<std::vector<double>>();
  double total = 0;
  int64_t predicted = 0;
  for (size_t w = 0; w * window < ids.size(); w += 8) {
    std::vector<std::vector<int32_t>> seqs;
    for (size_t j = w; j < w + 8 && (j + 1) * window <= ids.size(); ++j) {
      seqs.emplace_back(ids.begin() + j * window, ids.begin() + (j + 1) * window);
    }
    auto nll = (*engine)->Score(seqs);
    ASSERT_TRUE(nll.ok()) << nll.status();
    for (size_t j = 0; j < nll->size(); ++j) {
      double s = 0;
      for (float x : (*nll)[j]) s += x;
      EXPECT_NEAR(s, window_sums[w + j], 1e-3 * std::fabs(window_sums[w + j]) / 100) << "window " << w + j;
      total += s;
      predicted += static_cast<int64_t>((*nll)[j].size());
    }
  }
  EXPECT_EQ(predicted, ppl["predicted_tokens"].get<int64_t>());
  const double got = std::exp(total / predicted);
  EXPECT_NEAR(got, ppl["ppl"].get<double>(), 1e-4 * ppl["ppl"].get<double>()) << "ppl " << got;
}

TEST(HfReferencePerplexityTest, TinyQwen3MatchesReference) { CheckReferencePerplexity("tq-tiny-qwen3"); }

TEST(HfReferencePerplexityTest, TinyDeepseekV3MatchesReference) { CheckReferencePerplexity("tq-tiny-deepseek-v3"); }

}  // namespace
}  // namespace tq
