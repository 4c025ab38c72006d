// End to end: the real tq-inference-server binary on loopback serving the tiny trained Qwen3,
// driven over gRPC: streaming and finish reasons, stop strings across token boundaries, seeded
// sampling, 32 concurrent greedy streams equal to their solo runs, cancel / deadline / Abort
// freeing KV blocks, malformed requests, queue limits, health during load and drain, metrics
// (promtool), bearer auth, and an independent Python client (python3-grpcio).
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "proto/tq/inference/v1/inference.grpc.pb.h"
#include "tests/e2e/server_process.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

namespace pb = ::tq::inference::v1;
namespace hv1 = ::grpc::health::v1;
using ::tq::testing::CommandResult;
using ::tq::testing::HttpGet;
using ::tq::testing::MakeTempDir;
using ::tq::testing::RunCommand;
using ::tq::testing::ServerProcess;
using ::tq::testing::TestDataPath;

std::string ServerBinary() { return TestDataPath("services/inference/tq-inference-server"); }
std::string Tiny() { return TestDataPath("testdata/models/tq-tiny-qwen3"); }

std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> args = {}) {
  args.insert(args.begin(), {"--model=" + Tiny(), "--listen=127.0.0.1:0", "--metrics_host=127.0.0.1",
                             "--metrics_port=0", "--threads=2"});
  // TQ_TEST_DEVICE=cuda runs the whole suite against the CUDA backend (on the GPU machine).
  if (const char* device = std::getenv("TQ_TEST_DEVICE"); device != nullptr) {
    args.push_back(std::string("--device=") + device);
  }
  auto s = ServerProcess::Start(ServerBinary(), args, "inference-server");
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::shared_ptr<grpc::Channel> Channel(const ServerProcess& s) {
  return grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials());
}

hv1::HealthCheckResponse::ServingStatus Health(const ServerProcess& s, const std::string& service = "") {
  auto stub = hv1::Health::NewStub(Channel(s));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  hv1::HealthCheckRequest req;
  req.set_service(service);
  hv1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  return st.ok() ? resp.status() : hv1::HealthCheckResponse::UNKNOWN;
}

bool WaitServing(const ServerProcess& s, int seconds = 60) {
  for (int i = 0; i < seconds * 20; ++i) {
    if (Health(s) == hv1::HealthCheckResponse::SERVING) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

pb::GenerateRequest Greedy(const std::string& text, int max_tokens) {
  pb::GenerateRequest r;
  r.set_text(text);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_stopping()->set_max_tokens(max_tokens);
  r.mutable_stopping()->set_ignore_eos(true);
  return r;
}

struct Stream {
  std::vector<int32_t> ids;
  std::string text;
  int chunks = 0;
  bool has_complete = false;
  pb::Complete complete;
  std::string request_id;
  grpc::Status status;
};

// Runs a Generate stream to its end. `on_chunk` may cancel the context.
Stream Generate(pb::Inference::Stub& stub, const pb::GenerateRequest& req, grpc::ClientContext* ctx = nullptr,
                const std::function<void(const pb::GenerateResponse&, grpc::ClientContext*)>& on_chunk = nullptr) {
  grpc::ClientContext local;
  if (ctx == nullptr) ctx = &local;
  Stream s;
  auto reader = stub.Generate(ctx, req);
  pb::GenerateResponse r;
  while (reader->Read(&r)) {
    s.request_id = r.request_id();
    if (r.has_chunk()) {
      ++s.chunks;
      s.ids.insert(s.ids.end(), r.chunk().token_ids().begin(), r.chunk().token_ids().end());
      s.text += r.chunk().text();
    } else if (r.has_complete()) {
      s.has_complete = true;
      s.complete = r.complete();
    }
    if (on_chunk) on_chunk(r, ctx);
  }
  s.status = reader->Finish();
  return s;
}

pb::Loads Loads(pb::Inference::Stub& stub) {
  grpc::ClientContext ctx;
  pb::Loads l;
  EXPECT_TRUE(stub.GetLoads(&ctx, pb::GetLoadsRequest(), &l).ok());
  return l;
}

// KV blocks and running counts drop to zero once requests are gone (the engine frees blocks at
// its next step; the RPC returns after that).
void ExpectIdle(pb::Inference::Stub& stub) {
  pb::Loads l;
  for (int i = 0; i < 100; ++i) {
    l = Loads(stub);
    if (l.kv_blocks_used() == 0 && l.running() == 0 && l.waiting() == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "still busy: " << l.DebugString();
}

double MetricValue(const std::string& metrics, const std::string& series_prefix) {
  for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
    if (absl::StartsWith(line, series_prefix)) {
      const size_t sp = line.rfind(' ');
      return std::stod(std::string(line.substr(sp + 1)));
    }
  }
  return -1;
}

class InferenceServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = StartServer({"--max_model_len=256"}).release();
    ASSERT_NE(server_, nullptr);
    ASSERT_TRUE(WaitServing(*server_)) << server_->Log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  std::unique_ptr<pb::Inference::Stub> Stub() { return pb::Inference::NewStub(Channel(*server_)); }
  static ServerProcess* server_;
};
ServerProcess* InferenceServerTest::server_ = nullptr;

TEST_F(InferenceServerTest, StreamsAndEndsWithLength) {
  auto stub = Stub();
  pb::GenerateRequest req = Greedy("In the beginning God created", 16);
  req.set_request_id("my-id");
  req.mutable_stream()->set_logprobs(true);
  Stream s = Generate(*stub, req);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.request_id, "my-id");
  // The engine's greedy continuation of this prompt (engine_test / hf_reference_test).
  EXPECT_EQ(s.text, "\nin the world, and the world is not in the world.\n  ");
  EXPECT_EQ(s.ids.size(), 16u);
  EXPECT_GE(s.chunks, 2);
  ASSERT_TRUE(s.has_complete);
  EXPECT_EQ(s.complete.finish_reason(), pb::FINISH_REASON_LENGTH);
  EXPECT_EQ(s.complete.openai_finish_reason(), "length");
  EXPECT_EQ(s.complete.usage().prompt_tokens(), 6u);
  EXPECT_EQ(s.complete.usage().completion_tokens(), 16u);
  EXPECT_GT(s.complete.timings().e2e_ms(), 0);
  EXPECT_GE(s.complete.timings().e2e_ms(), s.complete.timings().ttft_ms());
  // Token ids in, text and ids out; ids-only streams.
  pb::GenerateRequest ids = Greedy("", 4);
  ids.mutable_token_ids()->add_ids(40);
  ids.mutable_token_ids()->add_ids(69);
  ids.mutable_stream()->set_text(false);
  Stream t = Generate(*stub, ids);
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  EXPECT_EQ(t.ids.size(), 4u);
  EXPECT_EQ(t.text, "");
}

TEST_F(InferenceServerTest, StopStringsAcrossTokensAndStopTokens) {
  auto stub = Stub();
  Stream full = Generate(*stub, Greedy("In the beginning God created", 16));
  ASSERT_TRUE(full.status.ok());
  // "world is" spans the tokens " world" and " is".
  pb::GenerateRequest req = Greedy("In the beginning God created", 16);
  req.mutable_stopping()->add_stop("world is");
  Stream s = Generate(*stub, req);
  ASSERT_TRUE(s.status.ok());
  EXPECT_EQ(s.text, "\nin the world, and the ");
  EXPECT_EQ(s.complete.finish_reason(), pb::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(s.complete.openai_finish_reason(), "stop");
  EXPECT_EQ(s.complete.stop_string(), "world is");
  // A stop token id: reported in ids and matched_stop, its text not sent.
  pb::GenerateRequest t = Greedy("In the beginning God created", 16);
  t.mutable_stopping()->add_stop_token_ids(full.ids[3]);
  Stream st = Generate(*stub, t);
  ASSERT_TRUE(st.status.ok());
  EXPECT_EQ(st.ids, std::vector<int32_t>(full.ids.begin(), full.ids.begin() + 4));
  EXPECT_EQ(st.complete.finish_reason(), pb::FINISH_REASON_STOP_SEQUENCE);
  EXPECT_EQ(st.complete.stop_token_id(), full.ids[3]);
  // min_tokens holds the stop token back.
  t.mutable_stopping()->set_min_tokens(8);
  Stream m = Generate(*stub, t);
  ASSERT_TRUE(m.status.ok());
  EXPECT_GE(m.ids.size(), 8u);
  // time_limit_ms: ends with TIME_LIMIT and what was generated.
  pb::GenerateRequest tl = Greedy("And it came to pass", 200);
  tl.set_time_limit_ms(1);
  Stream l = Generate(*stub, tl);
  ASSERT_TRUE(l.status.ok());
  EXPECT_EQ(l.complete.finish_reason(), pb::FINISH_REASON_TIME_LIMIT);
  EXPECT_LT(l.complete.usage().completion_tokens(), 200u);
}

TEST_F(InferenceServerTest, SeededSamplingIsReproducible) {
  auto stub = Stub();
  pb::GenerateRequest req = Greedy("The history of the city", 24);
  req.mutable_sampling()->set_temperature(1.0f);
  req.mutable_sampling()->set_top_p(0.9f);
  req.mutable_sampling()->set_seed(1234);
  Stream a = Generate(*stub, req);
  Stream b = Generate(*stub, req);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.ids, b.ids);
  req.mutable_sampling()->set_seed(99);
  Stream c = Generate(*stub, req);
  EXPECT_NE(a.ids, c.ids);
}

TEST_F(InferenceServerTest, ConcurrentGreedyStreamsEqualTheirSoloRuns) {
  auto stub = Stub();
  const std::vector<std::string> prompts = {"In the beginning God created", "The history of the city",
                                            "And it came to pass, when the king heard", "A",
                                            "The game was released in Japan", "Thou shalt not",
                                            "He said unto them", "The river flows"};
  std::vector<std::string> solo;
  for (const auto& p : prompts) {
    Stream s = Generate(*stub, Greedy(p, 24));
    ASSERT_TRUE(s.status.ok());
    solo.push_back(s.text);
  }
  constexpr int kStreams = 32;
  std::vector<Stream> got(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      auto st = pb::Inference::NewStub(Channel(*server_));
      got[i] = Generate(*st, Greedy(prompts[i % prompts.size()], 24));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
    EXPECT_EQ(got[i].text, solo[i % prompts.size()]) << "stream " << i;
  }
  ExpectIdle(*stub);
}

TEST_F(InferenceServerTest, CancelAndAbortFreeTheCache) {
  auto stub = Stub();
  const std::string before = *HttpGet(server_->metrics_port(), "/metrics");
  // Client cancel after 3 chunks.
  {
    grpc::ClientContext ctx;
    int n = 0;
    Stream s = Generate(*stub, Greedy("And it came to pass", 240), &ctx,
                        [&](const pb::GenerateResponse&, grpc::ClientContext* c) {
                          if (++n == 3) c->TryCancel();
                        });
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::CANCELLED);
    ExpectIdle(*stub);
  }
  // Abort RPC: the stream ends with CANCELLED in its Complete message.
  {
    std::atomic<bool> started{false};
    Stream s;
    std::thread t([&] {
      pb::GenerateRequest r = Greedy("And it came to pass", 240);
      r.set_request_id("to-abort");
      s = Generate(*stub, r, nullptr, [&](const pb::GenerateResponse&, grpc::ClientContext*) { started = true; });
    });
    while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    grpc::ClientContext ctx;
    pb::AbortRequest ar;
    ar.add_request_ids("to-abort");
    ar.add_request_ids("never-was");
    pb::AbortResponse resp;
    ASSERT_TRUE(stub->Abort(&ctx, ar, &resp).ok());
    t.join();
    EXPECT_EQ(resp.aborted_size(), 1);
    EXPECT_EQ(resp.not_found_size(), 1);
    ASSERT_TRUE(s.status.ok());
    EXPECT_EQ(s.complete.finish_reason(), pb::FINISH_REASON_CANCELLED);
    EXPECT_EQ(s.complete.openai_finish_reason(), "abort");
    EXPECT_LT(s.complete.usage().completion_tokens(), 240u);
    ExpectIdle(*stub);
  }
  // The metrics saw all three.
  std::string after;
  for (int i = 0; i < 50; ++i) {
    after = *HttpGet(server_->metrics_port(), "/metrics");
    if (MetricValue(after, "vllm:kv_cache_usage_perc") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (const char* src : {"client", "abort"}) {
    const std::string series = absl::StrCat("tq_requests_cancelled_total{source=\"", src, "\"}");
    EXPECT_EQ(MetricValue(after, series) - std::max(0.0, MetricValue(before, series)), 1) << series;
  }
  EXPECT_EQ(MetricValue(after, "vllm:kv_cache_usage_perc"), 0);
  EXPECT_EQ(MetricValue(after, "vllm:num_requests_running"), 0);
}

TEST_F(InferenceServerTest, MalformedRequestsAreInvalidArgument) {
  auto stub = Stub();
  struct Case {
    std::string name;
    std::function<void(pb::GenerateRequest*)> edit;
  };
  const std::vector<Case> cases = {
      {"no input", [](pb::GenerateRequest* r) { r->clear_text(); }},
      {"empty text", [](pb::GenerateRequest* r) { r->set_text(""); }},
      {"empty ids", [](pb::GenerateRequest* r) { r->mutable_token_ids(); }},
      {"id outside vocab", [](pb::GenerateRequest* r) { r->mutable_token_ids()->add_ids(4096); }},
      {"negative id", [](pb::GenerateRequest* r) { r->mutable_token_ids()->add_ids(-1); }},
      {"temperature < 0", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_temperature(-1); }},
      {"temperature nan", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_temperature(NAN); }},
      {"top_p 0", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_top_p(0); }},
      {"top_p > 1", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_top_p(1.5f); }},
      {"top_k < 0", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_top_k(-2); }},
      {"min_p > 1", [](pb::GenerateRequest* r) { r->mutable_sampling()->set_min_p(2); }},
      {"max_tokens 0", [](pb::GenerateRequest* r) { r->mutable_stopping()->set_max_tokens(0); }},
      {"min > max", [](pb::GenerateRequest* r) { r->mutable_stopping()->set_min_tokens(99); }},
      {"empty stop", [](pb::GenerateRequest* r) { r->mutable_stopping()->add_stop(""); }},
      {"too many stops",
       [](pb::GenerateRequest* r) {
         for (int i = 0; i < 17; ++i) r->mutable_stopping()->add_stop("x" + std::to_string(i));
       }},
      {"stop id outside vocab", [](pb::GenerateRequest* r) { r->mutable_stopping()->add_stop_token_ids(1 << 20); }},
      {"prompt too long",
       [](pb::GenerateRequest* r) {
         std::string t;
         for (int i = 0; i < 300; ++i) t += " the";
         r->set_text(t);
       }},
      {"request id too long", [](pb::GenerateRequest* r) { r->set_request_id(std::string(300, 'x')); }},
  };
  for (const Case& c : cases) {
    pb::GenerateRequest r = Greedy("Hello", 4);
    c.edit(&r);
    Stream s = Generate(*stub, r);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name << ": " << s.status.error_message();
    EXPECT_FALSE(s.status.error_message().empty()) << c.name;
    EXPECT_EQ(s.chunks, 0) << c.name;
  }
  // Tokenize: round trip and a bad id.
  grpc::ClientContext ctx;
  pb::TokenizeRequest tr;
  tr.set_text("Hello world");
  pb::TokenizeResponse resp;
  ASSERT_TRUE(stub->Tokenize(&ctx, tr, &resp).ok());
  EXPECT_EQ(resp.token_ids_size(), resp.tokens_size());
  pb::TokenizeRequest back;
  back.mutable_token_ids()->mutable_ids()->CopyFrom(resp.token_ids());
  grpc::ClientContext ctx2;
  pb::TokenizeResponse text;
  ASSERT_TRUE(stub->Tokenize(&ctx2, back, &text).ok());
  EXPECT_EQ(text.text(), "Hello world");
  back.mutable_token_ids()->add_ids(1 << 22);
  grpc::ClientContext ctx3;
  EXPECT_EQ(stub->Tokenize(&ctx3, back, &text).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Model info.
  grpc::ClientContext ctx4;
  pb::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx4, pb::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.architecture(), "Qwen3ForCausalLM");
  EXPECT_EQ(info.max_context_length(), 256u);
  EXPECT_EQ(info.vocab_size(), 4096u);
  EXPECT_EQ(info.device(), std::getenv("TQ_TEST_DEVICE") != nullptr ? std::getenv("TQ_TEST_DEVICE") : "cpu");
  EXPECT_TRUE(info.has_tokenizer());
}

TEST_F(InferenceServerTest, MetricsPassPromtool) {
  const std::string dir = MakeTempDir("metrics");
  const std::string file = dir + "/vllm.txt";
  std::ofstream(file) << *HttpGet(server_->metrics_port(), "/metrics");
  CommandResult which = RunCommand("command -v promtool");
  ASSERT_EQ(which.exit_code, 0) << "promtool not found (Debian package prometheus; tools/setup.sh)";
  // vLLM names: the exposition parses; the only lint findings are the colons vLLM uses.
  CommandResult r = RunCommand("promtool check metrics < " + file);
  for (absl::string_view line : absl::StrSplit(r.output, '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StrContains(line, "should not contain ':'") ||
                absl::StrContains(line, "vllm:iteration_tokens_total non-counter"))
        << line;
  }
  const std::string m = *HttpGet(server_->metrics_port(), "/metrics");
  for (const char* name :
       {"vllm:num_requests_running{", "vllm:num_requests_waiting{", "vllm:kv_cache_usage_perc{",
        "vllm:prompt_tokens_total{", "vllm:generation_tokens_total{", "vllm:request_success_total{",
        "vllm:time_to_first_token_seconds_bucket{", "vllm:inter_token_latency_seconds_bucket{",
        "vllm:e2e_request_latency_seconds_bucket{", "vllm:request_queue_time_seconds_bucket{",
        "vllm:request_prefill_time_seconds_bucket{", "vllm:request_decode_time_seconds_bucket{",
        "vllm:request_prompt_tokens_bucket{", "vllm:request_generation_tokens_bucket{",
        "vllm:num_preemptions_total{", "tq_startup_phase_seconds{phase=\"warmup\"}",
        "tq_checksum_failures_total", "tq_requests_rejected_total{", "tq_requests_cancelled_total{",
        "tq_kv_bytes_per_token{", "tq_model_info{", "tq_kv_cache_capacity_tokens"}) {
    EXPECT_TRUE(absl::StrContains(m, name)) << name;
  }
  EXPECT_TRUE(absl::StrContains(m, "le=\"0.0025\"")) << "ITL buckets below 10 ms";
  // A tq_ prefix: lint-clean.
  auto s = StartServer({"--metrics_prefix=tq_"});
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(WaitServing(*s)) << s->Log();
  auto stub = pb::Inference::NewStub(Channel(*s));
  ASSERT_TRUE(Generate(*stub, Greedy("Hello", 4)).status.ok());
  std::ofstream(dir + "/tq.txt") << *HttpGet(s->metrics_port(), "/metrics");
  CommandResult clean = RunCommand("promtool check metrics < " + dir + "/tq.txt");
  EXPECT_EQ(clean.exit_code, 0) << clean.output;
  EXPECT_TRUE(absl::StrContains(*HttpGet(s->metrics_port(), "/metrics"), "tq_num_requests_running{"));
}

TEST(InferenceServerLimitsTest, QueueFullIsResourceExhausted) {
  auto s = StartServer({"--max_num_seqs=1", "--max_waiting_requests=1"});
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(WaitServing(*s)) << s->Log();
  auto stub = pb::Inference::NewStub(Channel(*s));
  // One running, one waiting; the third is refused.
  std::vector<std::thread> threads;
  std::vector<Stream> got(2);
  auto wait_for = [&](uint32_t running, uint32_t waiting) {
    for (int i = 0; i < 500; ++i) {
      pb::Loads l = Loads(*stub);
      if (l.running() == running && l.waiting() == waiting) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  };
  for (int i = 0; i < 2; ++i) {
    pb::GenerateRequest r = Greedy("And it came to pass", 1500);
    r.set_request_id("long-" + std::to_string(i));
    threads.emplace_back([&, i, r] { got[i] = Generate(*stub, r); });
    ASSERT_TRUE(wait_for(1, i)) << "request " << i;
    if (i == 0) {
      // A gRPC deadline that passes while the request waits behind the running one: the call
      // ends with DEADLINE_EXCEEDED and the request leaves the engine (whatever the device speed).
      grpc::ClientContext dctx;
      dctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
      Stream d = Generate(*stub, Greedy("Hello", 4), &dctx);
      EXPECT_EQ(d.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << d.status.error_message();
      ASSERT_TRUE(wait_for(1, 0)) << "the expired request left the queue";
      std::string m;
      for (int t = 0; t < 50; ++t) {
        m = *HttpGet(s->metrics_port(), "/metrics");
        if (MetricValue(m, "tq_requests_cancelled_total{source=\"deadline\"}") == 1) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      EXPECT_EQ(MetricValue(m, "tq_requests_cancelled_total{source=\"deadline\"}"), 1);
    }
  }
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, Greedy("Hello", 4));
  pb::GenerateResponse resp;
  while (reader->Read(&resp)) {
  }
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  auto trailer = ctx.GetServerTrailingMetadata().find("retry-after-ms");
  EXPECT_NE(trailer, ctx.GetServerTrailingMetadata().end());
  // A duplicate running id.
  Stream dup = Generate(*stub, [] {
    pb::GenerateRequest r = Greedy("Hello", 4);
    r.set_request_id("long-0");
    return r;
  }());
  EXPECT_EQ(dup.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  grpc::ClientContext actx;
  pb::AbortRequest ar;
  ar.add_request_ids("long-0");
  ar.add_request_ids("long-1");
  pb::AbortResponse aresp;
  ASSERT_TRUE(stub->Abort(&actx, ar, &aresp).ok());
  for (auto& t : threads) t.join();
  for (const Stream& g : got) EXPECT_EQ(g.complete.finish_reason(), pb::FINISH_REASON_CANCELLED);
  ExpectIdle(*stub);
}

TEST(InferenceServerLifecycleTest, HealthDuringLoadAndDrain) {
  auto s = StartServer({"--debug_load_delay_ms=1500", "--drain_grace_seconds=20"});
  ASSERT_NE(s, nullptr);
  // Loading: NOT_SERVING, and requests are UNAVAILABLE.
  EXPECT_EQ(Health(*s), hv1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Health(*s, "tq.inference.v1.Inference"), hv1::HealthCheckResponse::NOT_SERVING);
  auto stub = pb::Inference::NewStub(Channel(*s));
  Stream early = Generate(*stub, Greedy("Hello", 4));
  EXPECT_EQ(early.status.error_code(), grpc::StatusCode::UNAVAILABLE) << early.status.error_message();
  EXPECT_FALSE(Loads(*stub).ready());
  ASSERT_TRUE(WaitServing(*s)) << s->Log();
  EXPECT_EQ(Health(*s, "tq.inference.v1.Inference"), hv1::HealthCheckResponse::SERVING);
  EXPECT_TRUE(Loads(*stub).ready());
  // Drain: an in-flight request completes; new ones get UNAVAILABLE; exit 0.
  std::atomic<bool> started{false};
  Stream inflight;
  std::thread t([&] {
    inflight = Generate(*stub, Greedy("And it came to pass", 400), nullptr,
                        [&](const pb::GenerateResponse&, grpc::ClientContext*) { started = true; });
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  s->Signal(SIGTERM);
  bool saw_not_serving = false;
  for (int i = 0; i < 200 && !saw_not_serving; ++i) {
    saw_not_serving = Health(*s) == hv1::HealthCheckResponse::NOT_SERVING;
    if (!saw_not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(saw_not_serving);
  Stream late = Generate(*stub, Greedy("Hello", 4));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::UNAVAILABLE) << late.status.error_message();
  t.join();
  ASSERT_TRUE(inflight.status.ok()) << inflight.status.error_message();
  EXPECT_EQ(inflight.complete.finish_reason(), pb::FINISH_REASON_LENGTH);
  EXPECT_EQ(inflight.ids.size(), 400u);
  auto code = s->Wait(30);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << s->Log();
}

TEST(InferenceServerAuthTest, BearerToken) {
  auto s = StartServer({"--auth_token=s3cret"});
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(WaitServing(*s)) << s->Log();  // health needs no token
  auto stub = pb::Inference::NewStub(Channel(*s));
  Stream no = Generate(*stub, Greedy("Hello", 2));
  EXPECT_EQ(no.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer s3cret");
  Stream yes = Generate(*stub, Greedy("Hello", 2), &ctx);
  EXPECT_TRUE(yes.status.ok()) << yes.status.error_message();
}

TEST(InferenceServerStartTest, BadModelExitsWithAClearError) {
  const std::string dir = MakeTempDir("nomodel");
  auto s = ServerProcess::Start(ServerBinary(),
                                {"--model=" + dir, "--listen=127.0.0.1:0", "--metrics_port=-1"},
                                "inference-server-bad");
  ASSERT_TRUE(s.ok()) << s.status();
  auto code = (*s)->Wait(30);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1);
  EXPECT_TRUE(absl::StrContains((*s)->Log(), "config.json")) << (*s)->Log();
}

// An independent client: Python's grpcio (Debian python3-grpcio) with stubs generated from the
// .proto by protoc + grpc_python_plugin (Debian protobuf-compiler-grpc).
TEST_F(InferenceServerTest, PythonClientStreamsAGeneration) {
  if (RunCommand("/usr/bin/python3 -c 'import grpc'").exit_code != 0) {
    GTEST_SKIP() << "python3-grpcio is not installed (tools/setup.sh installs it)";
  }
  const std::string dir = MakeTempDir("pyclient");
  const std::string proto_root = TestDataPath("proto");
  CommandResult gen = RunCommand(absl::StrCat(
      "protoc -I", proto_root, " --python_out=", dir, " --grpc_out=", dir,
      " --plugin=protoc-gen-grpc=$(command -v grpc_python_plugin) ", proto_root, "/tq/inference/v1/inference.proto"));
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  CommandResult r = RunCommand(absl::StrCat("/usr/bin/python3 ", TestDataPath("tests/e2e/python_client.py"), " ", dir,
                                            " ", server_->address()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "text=\"\\nin the world, and the world is not in the world.\\n  \""))
      << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "finish=FINISH_REASON_LENGTH completion_tokens=16")) << r.output;
}

}  // namespace
}  // namespace tq
