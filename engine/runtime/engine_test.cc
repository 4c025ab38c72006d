// The engine's request lifecycle on the tiny trained Qwen3: TQ codes vs dequantized weights,
// continuous batching (incl. chunked prefill and preemption) equal to solo runs, seeded
// sampling, stop strings / stop tokens / max tokens, abort freeing KV blocks, and bad input.
#include "engine/runtime/engine.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/compress/compressor.h"
#include "engine/util/file_util.h"
#include "gtest/gtest.h"
#include "kernels/cuda/sampling_reference.h"
#include "kernels/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "tests/util/testdata.h"

namespace tq {
namespace {

// Codes vs dequantized weights compute the same function in a different fp32 order.
constexpr double kMaxRelTqPathDiff = 1e-4;

std::string TinyDir() { return tq::testing::TestDataPath("testdata/models/tq-tiny-qwen3"); }

// One finished request: every event's ids/text, and the final event.
struct Result {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::string text;
  GenerationEvent last;
  int events = 0;
};

class Collector {
 public:
  EventCallback Callback() {
    return [this](const GenerationEvent& ev) {
      std::lock_guard<std::mutex> l(mu_);
      Result& r = results_[ev.request_id];
      r.ids.insert(r.ids.end(), ev.token_ids.begin(), ev.token_ids.end());
      r.logprobs.insert(r.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
      r.text += ev.text;
      ++r.events;
      if (ev.finished) {
        r.last = ev;
        ++finished_;
        cv_.notify_all();
      }
    };
  }
  void WaitFor(int n) {
    std::unique_lock<std::mutex> l(mu_);
    ASSERT_TRUE(cv_.wait_for(l, std::chrono::seconds(120), [&] { return finished_ >= n; }));
  }
  Result Get(uint64_t id) {
    std::lock_guard<std::mutex> l(mu_);
    return results_[id];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Result> results_;
  int finished_ = 0;
};

std::unique_ptr<Engine> MakeEngine(EngineOptions o) {
  if (o.model_uri.empty()) o.model_uri = TinyDir();
  if (o.threads == 0) o.threads = 2;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

Result RunToEnd(Engine& e, GenerationRequest r) {
  Collector c;
  auto id = e.Submit(r, c.Callback());
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return {};
  c.WaitFor(1);
  return c.Get(*id);
}

GenerationRequest Greedy(const std::string& prompt, int n) {
  GenerationRequest r;
  r.prompt = prompt;
  r.max_tokens = n;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  return r;
}

const std::vector<std::string>& Prompts() {
  static const std::vector<std::string> p = {
      "In the beginning God created",
      "The history of the city",
      "And it came to pass, when the king heard these words, that he",
      "A",
      "The game was released in Japan on 12 March 2010 , and",
      "Thou shalt not",
  };
  return p;
}

TEST(EngineTest, ModelInfo) {
  auto e = MakeEngine({});
  ASSERT_NE(e, nullptr);
  const ModelInfo& info = e->model_info();
  EXPECT_EQ(info.checkpoint_kind, "hf");
  EXPECT_EQ(info.config.num_layers, 6);
  EXPECT_EQ(info.max_model_len, 2048);
  EXPECT_EQ(info.dense_linears, 43u);
  EXPECT_NE(e->tokenizer(), nullptr);
  EXPECT_EQ(e->stats().kv_bytes_per_token, 2 * 6 * 2 * 64 * 2);
}

// The int8-activation GEMV is a CUDA kernel: asking for it on the CPU is an error, not a no-op.
TEST(EngineTest, Int8GemvNeedsCuda) {
  EngineOptions o;
  o.model_uri = tq::testing::TestDataPath("testdata/models/tq-tiny-qwen3");
  o.device = "cpu";
  o.tq_int8_gemv = true;
  auto e = Engine::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("cuda"), std::string::npos) << e.status();
  o.tq_int8_gemv = false;
  o.tq_int8_gemv_all_rows = true;
  e = Engine::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineTest, ConcurrentGreedyRequestsEqualTheirSoloRuns) {
  std::vector<Result> solo;
  {
    auto e = MakeEngine({});
    ASSERT_NE(e, nullptr);
    for (const std::string& p : Prompts()) solo.push_back(RunToEnd(*e, Greedy(p, 24)));
  }
  // Small token budget (chunked prefill mixed with decodes) and a small KV cache (preemption).
  for (int64_t kv_blocks : {0, 12}) {
    EngineOptions o;
    o.max_num_batched_tokens = 7;
    o.max_num_seqs = 4;
    o.kv_block_size = 4;
    if (kv_blocks > 0) o.kv_cache_bytes = kv_blocks * 4 * (2 * 6 * 2 * 64 * 2);
    auto e = MakeEngine(o);
    ASSERT_NE(e, nullptr);
    Collector c;
    std::vector<uint64_t> ids;
    for (const std::string& p : Prompts()) {
      auto id = e->Submit(Greedy(p, 24), c.Callback());
      ASSERT_TRUE(id.ok()) << id.status();
      ids.push_back(*id);
    }
    c.WaitFor(static_cast<int>(ids.size()));
    for (size_t i = 0; i < ids.size(); ++i) {
      Result r = c.Get(ids[i]);
      EXPECT_EQ(r.ids, solo[i].ids) << "prompt " << i << " kv_blocks " << kv_blocks;
      EXPECT_EQ(r.text, solo[i].text);
      EXPECT_EQ(r.last.finish_reason, FinishReason::kLength);
      EXPECT_EQ(r.last.completion_tokens, 24);
      EXPECT_GT(r.events, 1);  // streamed
    }
    const EngineStats st = e->stats();
    EXPECT_EQ(st.kv_blocks_used, 0);
    EXPECT_EQ(st.finished_requests, ids.size());
    if (kv_blocks > 0) {
      EXPECT_GT(st.preemptions, 0u);
    }
  }
}

// Compressed KV caches keep the engine's batch invariance: chunked prefill mixed with decodes
// and preemption (recomputed codes are the same codes) give the solo runs' tokens; sink
// positions belong to each sequence.
TEST(EngineTest, CompressedKvCacheRunsEqualTheirSoloRuns) {
  for (const char* codec : {"turbo3:boundary=1", "4bit_nc", "turbo4:qjl=1,boundary=0"}) {
    EngineOptions base;
    base.kv_codec = codec;
    std::vector<Result> solo;
    int64_t per_token = 0, sink_per_seq = 0;
    {
      auto e = MakeEngine(base);
      ASSERT_NE(e, nullptr);
      per_token = e->model_info().kv_bytes_per_token;
      const std::string name = e->model_info().kv_codec;
      if (name.find("sink=4") != std::string::npos) sink_per_seq = 2 * 6 * 4 * 2 * 128;
      for (const std::string& p : Prompts()) solo.push_back(RunToEnd(*e, Greedy(p, 16)));
    }
    EngineOptions o = base;
    o.max_num_batched_tokens = 7;
    o.max_num_seqs = 4;
    o.kv_block_size = 4;
    o.kv_cache_bytes = 12 * 4 * per_token + 4 * sink_per_seq;
    auto e = MakeEngine(o);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->model_info().kv_capacity_tokens, 48) << codec;
    Collector c;
    std::vector<uint64_t> ids;
    for (const std::string& p : Prompts()) {
      auto id = e->Submit(Greedy(p, 16), c.Callback());
      ASSERT_TRUE(id.ok()) << id.status();
      ids.push_back(*id);
    }
    c.WaitFor(static_cast<int>(ids.size()));
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(c.Get(ids[i]).ids, solo[i].ids) << codec << " prompt " << i;
    EXPECT_GT(e->stats().preemptions, 0u) << codec;
  }
}

TEST(EngineTest, KvCodecIsReportedWithItsOptionsAndBytes) {
  EngineOptions o;
  o.kv_codec = "4bit_nc";
  auto e = MakeEngine(o);
  ASSERT_NE(e, nullptr);
  // Layers 0, 1, 4, 5 bf16 (vLLM boundary 2); layers 2, 3: K 34 + V 36 bytes per head.
  EXPECT_EQ(e->model_info().kv_codec, "4bit_nc:sink=0,boundary=2");
  EXPECT_EQ(e->model_info().kv_bytes_per_token, 2 * (4 * 256 + 2 * (34 + 36)));
  EXPECT_NE(e->model_info().kv_layout.find("layers 2-3: K lloyd-max 4b hadamard 34 B"), std::string::npos)
      << e->model_info().kv_layout;
  o.kv_codec = "turbo3:sinks=2";
  EXPECT_FALSE(Engine::Create(o).ok());
}

// A sampled request with a seed: 20 tokens, temperature 0.9, top-p 0.95, top-k 50.
GenerationRequest SeededRequest(uint64_t seed) {
  GenerationRequest r;
  r.prompt = "The history of the city";
  r.max_tokens = 20;
  r.ignore_eos = true;
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.95f;
  r.sampling.top_k = 50;
  r.sampling.seed = seed;
  return r;
}

// `r` run while every Prompts() entry decodes greedily beside it; r's result.
Result RunAmongOthers(Engine& e, const GenerationRequest& r) {
  Collector c;
  int n = 0;
  for (const std::string& p : Prompts()) {
    auto id = e.Submit(Greedy(p, 10), c.Callback());
    EXPECT_TRUE(id.ok()) << id.status();
    n += id.ok() ? 1 : 0;
  }
  auto mine = e.Submit(r, c.Callback());
  EXPECT_TRUE(mine.ok()) << mine.status();
  if (!mine.ok()) return {};
  c.WaitFor(n + 1);
  return c.Get(*mine);
}

TEST(EngineTest, SeededSamplingIsReproducibleInAnyBatch) {
  GenerationRequest r = SeededRequest(1234);
  auto e = MakeEngine({});
  ASSERT_NE(e, nullptr);
  Result a = RunToEnd(*e, r);
  EXPECT_EQ(RunAmongOthers(*e, r).ids, a.ids);
  r.sampling.seed = 4321;
  EXPECT_NE(RunToEnd(*e, r).ids, a.ids);
}

// A backend that samples "on the device" (ModelRunner::ForwardSample), emulated on the CPU: the
// CPU model's logits through the device sampler's reference (kernels/cuda/sampling_reference.h).
// Exercises the engine's side of device sampling — rows, filters, stream keys and draw indices,
// min_tokens masks — in CI, where there is no GPU.
class ReferenceSamplingRunner : public ModelRunner {
 public:
  explicit ReferenceSamplingRunner(std::unique_ptr<ModelRunner> inner) : inner_(std::move(inner)) {}
  absl::Status Forward(const ForwardBatch& batch, PagedKvCache& cache, std::vector<float>* logits) override {
    return inner_->Forward(batch, cache, logits);
  }
  bool SamplesOnDevice() const override { return true; }
  absl::Status ForwardSample(const ForwardBatch& batch, PagedKvCache& cache, const std::vector<RowSampling>& rows,
                             std::vector<SampledToken>* tokens) override {
    std::vector<float> logits;
    TQ_RETURN_IF_ERROR(inner_->Forward(batch, cache, &logits));
    if (rows.empty() || logits.size() % rows.size() != 0) {
      return absl::InvalidArgumentError("rows do not match the logits");
    }
    const int64_t vocab = static_cast<int64_t>(logits.size() / rows.size());
    tokens->resize(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      const RowSampling& r = rows[i];
      cuda::SampleRowParams p = r.params;
      p.masked_begin = 0;
      p.masked_end = static_cast<int32_t>(r.masked.size());
      const cuda::SampleRowResult got = cuda::SampleRowReference(logits.data() + i * vocab, vocab, p, r.masked.data());
      (*tokens)[i] = {got.token, got.logprob};
    }
    return absl::OkStatus();
  }
  int64_t max_positions() const override { return inner_->max_positions(); }
  const char* device() const override { return inner_->device(); }
  std::string Describe() const override { return inner_->Describe() + " (device sampling emulated)"; }

 private:
  std::unique_ptr<ModelRunner> inner_;
};

EngineOptions DeviceSamplingEmulation() {
  EngineOptions o;
  o.wrap_model = [](std::unique_ptr<ModelRunner> m) -> std::unique_ptr<ModelRunner> {
    return std::make_unique<ReferenceSamplingRunner>(std::move(m));
  };
  return o;
}

TEST(EngineTest, DeviceSamplingPathOnTheCpu) {
  auto host = MakeEngine({});
  auto dev = MakeEngine(DeviceSamplingEmulation());
  ASSERT_NE(host, nullptr);
  ASSERT_NE(dev, nullptr);
  EXPECT_NE(dev->model_info().runner.find("device sampling emulated"), std::string::npos);
  // Greedy: the host sampler's tokens and log-probabilities over the same logits.
  for (const std::string& prompt : Prompts()) {
    const Result h = RunToEnd(*host, Greedy(prompt, 8));
    const Result d = RunToEnd(*dev, Greedy(prompt, 8));
    EXPECT_EQ(d.ids, h.ids) << prompt;
    ASSERT_EQ(d.logprobs.size(), h.logprobs.size());
    for (size_t i = 0; i < d.logprobs.size(); ++i) EXPECT_NEAR(d.logprobs[i], h.logprobs[i], 1e-5) << prompt;
    // The first greedy token as a stop id, not allowed for 3 tokens: masked on the device path.
    GenerationRequest r = Greedy(prompt, 3);
    r.min_tokens = 3;
    r.stop_token_ids = {h.ids[0]};
    const Result md = RunToEnd(*dev, r);
    EXPECT_EQ(md.ids, RunToEnd(*host, r).ids) << prompt;
    for (int32_t t : md.ids) EXPECT_NE(t, h.ids[0]);
  }
  // Seeded sampling: one stream per request, one draw index per token — the same tokens alone,
  // again and alongside other requests; another seed, other tokens; not the greedy ones.
  GenerationRequest r = SeededRequest(1234);
  const Result a = RunToEnd(*dev, r);
  EXPECT_EQ(a.ids.size(), 20u);
  EXPECT_EQ(RunToEnd(*dev, r).ids, a.ids);
  EXPECT_EQ(RunAmongOthers(*dev, r).ids, a.ids);
  EXPECT_NE(a.ids, RunToEnd(*dev, Greedy(r.prompt, 20)).ids);
  r.sampling.seed = 4321;
  EXPECT_NE(RunToEnd(*dev, r).ids, a.ids);
}

TEST(EngineTest, StopStringsTokensAndLength) {
  auto e = MakeEngine({});
  ASSERT_NE(e, nullptr);
  Result full = RunToEnd(*e, Greedy("In the beginning God created", 16));
  ASSERT_EQ(full.text, "\nin the world, and the world is not in the world.\n  ");
  // Stop string: output ends just before it, reason stop.
  GenerationRequest r = Greedy("In the beginning God created", 16);
  r.stop = {"world is"};
  Result s = RunToEnd(*e, r);
  EXPECT_EQ(s.text, "\nin the world, and the ");
  EXPECT_EQ(s.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(s.last.stop_reason, "string:world is");
  // The earliest of several stop strings wins.
  r.stop = {"not", ", and"};
  EXPECT_EQ(RunToEnd(*e, r).text, "\nin the world");
  // Stop token id: the token is reported, its text is not.
  GenerationRequest t = Greedy("In the beginning God created", 16);
  t.stop_token_ids = {full.ids[3]};
  Result st = RunToEnd(*e, t);
  EXPECT_EQ(st.ids, std::vector<int32_t>(full.ids.begin(), full.ids.begin() + 4));
  EXPECT_EQ(st.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(st.last.stop_reason, "token:" + std::to_string(full.ids[3]));
  EXPECT_EQ(st.last.stop_token_id, full.ids[3]);
  EXPECT_FALSE(st.last.eos);
  EXPECT_EQ(s.last.stop_string, "world is");
  // min_tokens: the stop token cannot be sampled before it, so generation goes past it.
  t.min_tokens = 6;
  Result m = RunToEnd(*e, t);
  EXPECT_GE(m.ids.size(), 6u);
  for (size_t i = 0; i + 1 < std::min<size_t>(m.ids.size(), 6); ++i) EXPECT_NE(m.ids[i], full.ids[3]);
  t.min_tokens = 17;
  EXPECT_FALSE(e->Submit(t, [](const GenerationEvent&) {}).ok());  // > max_tokens
  // eos (id 0) ends a request unless ignore_eos.
  GenerationRequest eos = Greedy("In the beginning God created", 8);
  eos.stop_token_ids.clear();
  Result l = RunToEnd(*e, eos);
  EXPECT_EQ(l.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(l.last.completion_tokens, 8);
  EXPECT_EQ(l.last.prompt_tokens, 6);
  EXPECT_GE(l.last.total_s, l.last.first_token_s);
}

TEST(EngineTest, AbortFreesTheCacheWithinAStep) {
  EngineOptions o;
  auto e = MakeEngine(o);
  ASSERT_NE(e, nullptr);
  std::promise<GenerationEvent> last;
  std::atomic<int> events{0};
  std::atomic<uint64_t> id{0};
  GenerationRequest r = Greedy("And it came to pass", 1500);
  auto got = e->Submit(r, [&](const GenerationEvent& ev) {
    if (++events == 3) e->Abort(ev.request_id);
    if (ev.finished) last.set_value(ev);
  });
  ASSERT_TRUE(got.ok());
  GenerationEvent ev = last.get_future().get();
  EXPECT_EQ(ev.finish_reason, FinishReason::kAbort);
  EXPECT_LE(ev.completion_tokens, 4);  // at most one more step ran
  EXPECT_EQ(e->stats().kv_blocks_used, 0);
  EXPECT_EQ(e->stats().aborted_requests, 1u);
  EXPECT_FALSE(e->Abort(*got));  // already gone
  EXPECT_FALSE(e->Abort(987654));
}

TEST(EngineTest, EosIsReportedAsSuch) {
  auto e = MakeEngine({});
  ASSERT_NE(e, nullptr);
  Result full = RunToEnd(*e, Greedy("In the beginning God created", 4));
  // A copy of the model whose eos id is the first greedy token.
  const std::string dir = tq::testing::MakeTempDir("eos");
  for (const char* f : {"model.safetensors", "tokenizer.json"}) {
    tq::testing::WriteFileOrDie(dir + "/" + f, tq::testing::ReadFileOrDie(TinyDir() + "/" + f));
  }
  auto cfg = nlohmann::json::parse(tq::testing::ReadFileOrDie(TinyDir() + "/config.json"));
  cfg["eos_token_id"] = full.ids[0];
  tq::testing::WriteFileOrDie(dir + "/config.json", cfg.dump());
  EngineOptions o;
  o.model_uri = dir;
  auto e2 = MakeEngine(o);
  ASSERT_NE(e2, nullptr);
  GenerationRequest r = Greedy("In the beginning God created", 4);
  r.ignore_eos = false;
  Result got = RunToEnd(*e2, r);
  EXPECT_EQ(got.ids, std::vector<int32_t>{full.ids[0]});
  EXPECT_EQ(got.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(got.last.stop_token_id, full.ids[0]);
  EXPECT_TRUE(got.last.eos);
  // min_tokens holds eos back.
  r.min_tokens = 3;
  got = RunToEnd(*e2, r);
  EXPECT_GE(got.ids.size(), 3u);
  EXPECT_NE(got.ids[0], full.ids[0]);
}

TEST(EngineTest, TimeLimitEndsARequest) {
  auto e = MakeEngine({});
  ASSERT_NE(e, nullptr);
  GenerationRequest r = Greedy("And it came to pass", 1800);
  r.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  const auto t0 = std::chrono::steady_clock::now();
  Result res = RunToEnd(*e, r);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(res.last.finish_reason, FinishReason::kTimeLimit);
  EXPECT_STREQ(FinishReasonName(res.last.finish_reason), "time_limit");
  EXPECT_LT(res.last.completion_tokens, 1800);
  EXPECT_LT(s, 5.0);
  EXPECT_EQ(e->stats().kv_blocks_used, 0);
  EXPECT_EQ(e->stats().aborted_requests, 0u);
}

TEST(EngineTest, WaitingTokenBudget) {
  EngineOptions o;
  o.max_num_seqs = 1;
  o.max_waiting_tokens = 10;
  std::vector<StepInfo> steps;
  std::mutex steps_mu;
  o.on_step = [&](const StepInfo& i) {
    std::lock_guard<std::mutex> l(steps_mu);
    steps.push_back(i);
  };
  auto e = MakeEngine(o);
  ASSERT_NE(e, nullptr);
  Collector c;
  std::vector<uint64_t> ids;
  int refused = 0;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r = Greedy("The history of the city", 300);  // 7 tokens each
    auto id = e->Submit(r, c.Callback());
    if (id.ok()) {
      ids.push_back(*id);
    } else {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted) << id.status();
      EXPECT_NE(id.status().message().find("token budget"), std::string::npos) << id.status();
      ++refused;
    }
  }
  EXPECT_GE(refused, 1);
  EXPECT_LE(e->stats().waiting_tokens, 10);
  // Let the first step run (it prefills the first request) before aborting everything.
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard<std::mutex> l(steps_mu);
      if (!steps.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (uint64_t id : ids) e->Abort(id);
  c.WaitFor(static_cast<int>(ids.size()));
  std::lock_guard<std::mutex> l(steps_mu);
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps[0].prefill_tokens, 7);
  EXPECT_EQ(steps[0].tokens, 7);
  EXPECT_GT(steps[0].seconds, 0);
}

TEST(EngineTest, BadRequestsAreRefusedClearly) {
  EngineOptions o;
  o.max_model_len = 8;
  auto e = MakeEngine(o);
  ASSERT_NE(e, nullptr);
  auto expect = [&](GenerationRequest r, absl::StatusCode code, const std::string& text) {
    auto id = e->Submit(r, [](const GenerationEvent&) {});
    ASSERT_FALSE(id.ok());
    EXPECT_EQ(id.status().code(), code) << id.status();
    EXPECT_NE(id.status().message().find(text), std::string::npos) << id.status();
  };
  GenerationRequest r = Greedy("", 4);
  expect(r, absl::StatusCode::kInvalidArgument, "empty");
  r = Greedy("one two three four five six seven eight nine ten", 4);
  expect(r, absl::StatusCode::kInvalidArgument, "max_model_len");
  r = Greedy("x", 0);
  expect(r, absl::StatusCode::kInvalidArgument, "max_tokens");
  r = Greedy("x", 4);
  r.prompt_ids = {1, 4096};
  expect(r, absl::StatusCode::kInvalidArgument, "vocabulary");
  r = Greedy("x", 4);
  r.sampling.top_p = 0;
  expect(r, absl::StatusCode::kInvalidArgument, "top_p");
  r = Greedy("x", 4);
  r.stop = {""};
  expect(r, absl::StatusCode::kInvalidArgument, "stop");
  // A prompt that fits: the context limit ends it with "length".
  Result ok = RunToEnd(*e, Greedy("In the", 100));
  EXPECT_EQ(ok.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(ok.last.prompt_tokens + ok.last.completion_tokens, 8);
}

TEST(EngineTest, QueueBound) {
  EngineOptions o;
  o.max_waiting = 2;
  o.max_num_seqs = 1;
  auto e = MakeEngine(o);
  ASSERT_NE(e, nullptr);
  Collector c;
  int accepted = 0, refused = 0;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 8; ++i) {
    auto id = e->Submit(Greedy("The history", 200), c.Callback());
    if (id.ok()) {
      ++accepted;
      ids.push_back(*id);
    } else {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
      ++refused;
    }
  }
  EXPECT_GE(refused, 1);
  for (uint64_t id : ids) e->Abort(id);
  c.WaitFor(accepted);
}

// Bad checkpoints: each is a copy of the tiny model with one thing broken.
class BadCheckpointTest : public ::testing::Test {
 protected:
  std::string Copy(const std::string& config_override) {
    const std::string dir = tq::testing::MakeTempDir("badckpt");
    for (const char* f : {"model.safetensors", "tokenizer.json"}) {
      tq::testing::WriteFileOrDie(dir + "/" + f, tq::testing::ReadFileOrDie(TinyDir() + "/" + f));
    }
    std::string cfg = tq::testing::ReadFileOrDie(TinyDir() + "/config.json");
    if (!config_override.empty()) cfg = config_override;
    tq::testing::WriteFileOrDie(dir + "/config.json", cfg);
    return dir;
  }
  absl::Status Open(const std::string& dir) {
    EngineOptions o;
    o.model_uri = dir;
    return Engine::Create(o).status();
  }
  // The tiny model's config.json with `key` set to `value` (JSON text); "null" removes it.
  std::string Patched(const std::string& key, const std::string& value) {
    auto cfg = nlohmann::ordered_json::parse(tq::testing::ReadFileOrDie(TinyDir() + "/config.json"));
    if (value == "null") {
      cfg.erase(key);
    } else {
      cfg[key] = nlohmann::ordered_json::parse(value);
    }
    if (key == "num_hidden_layers") cfg.erase("layer_types");
    return cfg.dump(2);
  }
};

TEST_F(BadCheckpointTest, ErrorsNameTheProblem) {
  struct Case {
    std::string config;
    std::string want;
  };
  const Case cases[] = {
      {"{not json", "config.json: not a JSON object"},
      {Patched("num_hidden_layers", "7"), "missing tensor \"model.layers.6."},
      {Patched("num_hidden_layers", "5"), "more layers"},
      {Patched("intermediate_size", "512"), "model.layers.0.mlp.gate_proj.weight"},
      {Patched("vocab_size", "5000"), "model.embed_tokens.weight"},
      {Patched("architectures", "[\"MixtralForCausalLM\"]"), "not supported"},
      {Patched("attention_bias", "true"), "q_proj.bias"},
      {Patched("num_attention_heads", "null"), "num_attention_heads: missing"},
      {Patched("hidden_act", "\"gelu\""), "hidden_act"},
  };
  for (const Case& c : cases) {
    absl::Status st = Open(Copy(c.config));
    EXPECT_FALSE(st.ok()) << c.want;
    EXPECT_NE(st.message().find(c.want), std::string::npos) << st << " / want: " << c.want;
  }
  // A truncated shard.
  const std::string dir = Copy("");
  std::string bytes = tq::testing::ReadFileOrDie(dir + "/model.safetensors");
  tq::testing::WriteFileOrDie(dir + "/model.safetensors", bytes.substr(0, bytes.size() / 2));
  absl::Status st = Open(dir);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("model.safetensors"), std::string::npos) << st;
  EXPECT_FALSE(Open(tq::testing::MakeTempDir("empty")).ok());
}

// TQ checkpoints: logits from the codes equal logits from the dequantized weights (same function,
// two code paths); greedy text equals through both paths.
struct TqPair {
  CompressResult compressed;
  std::unique_ptr<Engine> codes, dense;  // TQ layers from the codes / from dequantized weights
};

// Compresses `source` to TQ3 in `format` and opens it twice (fp32 KV cache, so only the weights'
// path differs).
std::optional<TqPair> MakeTqPair(const std::string& source, CheckpointFormat format) {
  CompressOptions co;
  co.source = source;
  co.destination = tq::testing::MakeTempDir("tq3");
  co.format = format;
  co.bits = 3;
  co.threads = 2;
  auto res = Compress(co, nullptr);
  EXPECT_TRUE(res.ok()) << res.status();
  if (!res.ok()) return std::nullopt;
  EngineOptions o;
  o.model_uri = co.destination;
  o.kv_codec = "fp32";
  TqPair p{*res, MakeEngine(o), nullptr};
  o.dequantize_tq = true;
  p.dense = MakeEngine(o);
  if (p.codes == nullptr || p.dense == nullptr) return std::nullopt;
  return p;
}

// Per-token NLL of a window (all positions' logits enter it) and greedy continuations agree.
void ExpectSameFunction(Engine& codes, Engine& dense) {
  EXPECT_EQ(dense.model_info().quantized_linears, 0u);
  std::vector<int32_t> ids = codes.tokenizer()->Encode(
      "In the beginning God created the heaven and the earth. And the earth was without form, and void; "
      "and darkness was upon the face of the deep.");
  auto a = codes.Score({ids});
  auto b = dense.Score({ids});
  ASSERT_TRUE(a.ok() && b.ok());
  double max_diff = 0;
  for (size_t i = 0; i < (*a)[0].size(); ++i) max_diff = std::max(max_diff, std::fabs(double((*a)[0][i]) - (*b)[0][i]));
  EXPECT_LE(max_diff, kMaxRelTqPathDiff * 10) << "NLL differs by " << max_diff;
  for (const std::string& p : Prompts()) {
    EXPECT_EQ(RunToEnd(codes, Greedy(p, 12)).ids, RunToEnd(dense, Greedy(p, 12)).ids) << p;
  }
}

// Our format and the plugin's.
class TqPathTest : public ::testing::TestWithParam<CheckpointFormat> {};

TEST_P(TqPathTest, CodesEqualDequantizedWeights) {
  auto p = MakeTqPair(TinyDir(), GetParam());
  ASSERT_TRUE(p.has_value());
  const ModelInfo& info = p->codes->model_info();
  EXPECT_EQ(info.checkpoint_kind, GetParam() == CheckpointFormat::kTq ? "tq" : "tq-plugin");
  EXPECT_EQ(info.quantized_linears, 42u);  // 6 layers x 7; lm_head kept
  EXPECT_EQ(info.tq_bits, std::vector<int>{3});
  EXPECT_EQ(info.tq_group_size, 128);
  EXPECT_NEAR(info.tq_bits_per_weight, 3.25, 0.01);
  EXPECT_EQ(info.tq_policy, "uniform");
  if (GetParam() == CheckpointFormat::kTq) {
    EXPECT_EQ(info.manifest_sha256, p->compressed.manifest_sha256);
  } else {
    EXPECT_EQ(info.manifest_sha256, "");
  }
  ExpectSameFunction(*p->codes, *p->dense);
}

INSTANTIATE_TEST_SUITE_P(Formats, TqPathTest, ::testing::Values(CheckpointFormat::kTq, CheckpointFormat::kPlugin));

// MLA + MoE (DeepSeek-V3): experts, router-fed MLPs and the MLA projections computed from TQ3
// codes equal the same model with dequantized weights; the router gate stays high precision.
TEST(TqMlaMoeTest, DeepSeekCodesEqualDequantizedWeights) {
  auto p = MakeTqPair(tq::testing::TestDataPath("testdata/models/tq-tiny-deepseek-v3"), CheckpointFormat::kTq);
  ASSERT_TRUE(p.has_value());
  EXPECT_GT(p->codes->model_info().quantized_linears, 0u);
  ExpectSameFunction(*p->codes, *p->dense);
}

// Qwen3-MoE: softmax-routed experts from TQ3 codes equal the dequantized model (on CUDA:
// //engine/runtime:engine_cuda_test).
// MLA's absorbed decode reads the latent cache in its codecs' attention space (rotated codes ×
// gain, engine/model/mla_transformer.h); prefill windows read decoded latents and rebuild per-head
// keys and values. The same function: the log-probabilities of a greedy continuation (decode
// steps) equal Score's of the same tokens (prefill), for rotated latent codecs with sinks,
// uniform latent codes with bf16 boundary layers, fp8 and fp32. QJL is refused (no compressed keys).
TEST(MlaDecodeTest, AttentionSpaceDecodeEqualsPrefill) {
  const std::string dir = tq::testing::TestDataPath("testdata/models/tq-tiny-deepseek-v3");
  {
    EngineOptions o;
    o.model_uri = dir;
    o.kv_codec = "turbo3:qjl=1";
    auto e = Engine::Create(o);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << e.status();
  }
  for (const char* kv : {"turbo3", "k4v3:sink=2", "k3v4_nc:boundary=1", "fp8", "fp32"}) {
    SCOPED_TRACE(kv);
    EngineOptions o;
    o.model_uri = dir;
    o.kv_codec = kv;
    auto e = MakeEngine(o);
    ASSERT_NE(e, nullptr);
    GenerationRequest r;
    r.prompt_ids = {1, 517, 33, 1201, 9, 77, 402};
    r.max_tokens = 12;
    r.ignore_eos = true;
    r.sampling.temperature = 0;
    const Result g = RunToEnd(*e, r);
    ASSERT_EQ(g.ids.size(), 12u);
    ASSERT_EQ(g.logprobs.size(), 12u);
    std::vector<int32_t> all = r.prompt_ids;
    all.insert(all.end(), g.ids.begin(), g.ids.end());
    auto nll = e->Score({all});
    ASSERT_TRUE(nll.ok()) << nll.status();
    ASSERT_EQ((*nll)[0].size(), all.size() - 1);
    for (size_t i = 0; i < g.ids.size(); ++i) {
      const float prefill = -(*nll)[0][r.prompt_ids.size() - 1 + i];
      EXPECT_NEAR(g.logprobs[i], prefill, 2e-3) << "generated token " << i;
    }
  }
}

TEST(TqMlaMoeTest, Qwen3MoeCodesEqualDequantizedWeights) {
  auto p = MakeTqPair(tq::testing::TestDataPath("testdata/models/ref-qwen3-moe"), CheckpointFormat::kTq);
  ASSERT_TRUE(p.has_value());
  EXPECT_GT(p->codes->model_info().quantized_linears, 0u);
  ExpectSameFunction(*p->codes, *p->dense);
}

TEST(TqLoadTest, CorruptedTqCheckpointIsRefused) {
  const std::string out = tq::testing::MakeTempDir("tq3bad");
  CompressOptions co;
  co.source = TinyDir();
  co.destination = out;
  co.threads = 2;
  ASSERT_TRUE(Compress(co, nullptr).ok());
  std::string bytes = tq::testing::ReadFileOrDie(out + "/model.safetensors");
  bytes[bytes.size() - 100] ^= 0x01;
  tq::testing::WriteFileOrDie(out + "/model.safetensors", bytes);
  EngineOptions o;
  o.model_uri = out;
  auto e = Engine::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kDataLoss) << e.status();
  EXPECT_NE(e.status().message().find("model.safetensors"), std::string::npos);
  // Without the manifest the checkpoint is incomplete.
  ASSERT_TRUE(RemoveFile(out + "/tq_manifest.json").ok());
  e = Engine::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("incomplete"), std::string::npos) << e.status();
}

}  // namespace
}  // namespace tq
