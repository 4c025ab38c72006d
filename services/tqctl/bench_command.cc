// tqctl bench --server: a serving benchmark against an inference server in the style of
// `vllm bench serve` with its random dataset: fixed-length prompts of random token ids, fixed
// output lengths (ignore_eos, min_tokens = max_tokens), a fixed number of requests in flight,
// latencies measured on the client.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "services/tqctl/arg_parser.h"
#include "services/tqctl/bench_stats.h"
#include "services/tqctl/commands.h"
#include "services/tqctl/grpc_client.h"
#include "services/tqctl/inference_client.h"

namespace tq::tqctl {
namespace {

int Fail(const absl::Status& st) {
  absl::FPrintF(stderr, "tqctl bench: %s\n", st.ToString());
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

// Prompts of `len` token ids drawn uniformly from [0, vocab) without the eos ids, seeded.
absl::StatusOr<std::vector<std::vector<int32_t>>> RandomPrompts(int count, int len, uint32_t vocab,
                                                                 const absl::flat_hash_set<int32_t>& eos,
                                                                 std::mt19937_64& rng) {
  int32_t usable = 0;
  for (uint32_t id = 0; id < vocab && usable < 2; ++id) usable += eos.contains(static_cast<int32_t>(id)) ? 0 : 1;
  if (usable == 0) {
    return absl::FailedPreconditionError(absl::StrCat("the model's vocabulary (", vocab,
                                                      " ids) has no id that is not an eos id"));
  }
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab - 1));
  std::vector<std::vector<int32_t>> prompts(count);
  for (auto& prompt : prompts) {
    prompt.reserve(len);
    while (static_cast<int>(prompt.size()) < len) {
      const int32_t id = dist(rng);
      if (!eos.contains(id)) prompt.push_back(id);
    }
  }
  return prompts;
}

// Runs requests `concurrency` at a time on worker threads; Ctrl-C cancels those in flight and
// starts no more.
class Runner {
 public:
  void Configure(inference_v1::Inference::StubInterface* stub, ServerTarget target, int output_len) {
    stub_ = stub;
    target_ = std::move(target);
    output_len_ = output_len;
  }

  // Records in the order of `prompts`; *duration_s from the first send to the last completion.
  std::vector<RequestRecord> Run(const std::vector<std::vector<int32_t>>& prompts, int concurrency,
                                 const char* label, double* duration_s) {
    std::vector<RequestRecord> records(prompts.size());
    std::atomic<size_t> next{0};
    std::atomic<size_t> done{0};
    const bool tty = isatty(fileno(stderr));
    std::mutex progress_mu;
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int w = 0; w < std::min<int>(concurrency, static_cast<int>(prompts.size())); ++w) {
      workers.emplace_back([&] {
        for (size_t i = next++; i < prompts.size(); i = next++) {
          records[i] = One(prompts[i]);
          const size_t n = ++done;
          if (tty) {
            std::lock_guard<std::mutex> lock(progress_mu);
            absl::FPrintF(stderr, "\r%s: %d/%d requests", label, n, prompts.size());
          }
        }
      });
    }
    for (std::thread& t : workers) t.join();
    *duration_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tty) absl::FPrintF(stderr, "\n");
    return records;
  }

  void CancelAll() {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    for (grpc::ClientContext* ctx : active_) ctx->TryCancel();
  }

 private:
  RequestRecord One(const std::vector<int32_t>& prompt) {
    RequestRecord rec;
    grpc::ClientContext ctx;
    Authorize(target_, &ctx);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_) {
        rec.error = "CANCELLED: interrupted before it was sent";
        return rec;
      }
      active_.insert(&ctx);
    }
    inference_v1::GenerateRequest r;
    r.mutable_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
    r.mutable_sampling()->set_temperature(0);
    r.mutable_stopping()->set_max_tokens(output_len_);
    r.mutable_stopping()->set_min_tokens(output_len_);
    r.mutable_stopping()->set_ignore_eos(true);
    r.mutable_stream()->set_text(false);
    r.mutable_stream()->set_token_ids(true);
    auto g = StreamGenerate(*stub_, ctx, r, nullptr);
    {
      std::lock_guard<std::mutex> lock(mu_);
      active_.erase(&ctx);
    }
    if (!g.ok()) {
      rec.error = g.status().ToString();
      return rec;
    }
    const inference_v1::Complete& c = g->complete;
    rec.prompt_tokens = c.usage().prompt_tokens();
    rec.output_tokens = c.usage().completion_tokens();
    switch (c.finish_reason()) {
      case inference_v1::FINISH_REASON_LENGTH:
      case inference_v1::FINISH_REASON_EOS:
      case inference_v1::FINISH_REASON_STOP_SEQUENCE:
        rec.ok = true;
        break;
      default:
        rec.error = absl::StrCat("finish reason ", FinishReasonLabel(c.finish_reason()),
                                 c.error().empty() ? "" : absl::StrCat(": ", c.error()));
        return rec;
    }
    rec.ttft_s = g->first_token_s;
    rec.e2e_s = g->complete_s;
    for (size_t i = 1; i < g->token_chunk_s.size(); ++i) {
      rec.itl_s.push_back(g->token_chunk_s[i] - g->token_chunk_s[i - 1]);
    }
    return rec;
  }

  inference_v1::Inference::StubInterface* stub_ = nullptr;
  ServerTarget target_;
  int output_len_ = 0;
  std::mutex mu_;
  bool cancelled_ = false;
  std::set<grpc::ClientContext*> active_;
};

// Failures grouped by message, on stderr.
void ReportFailures(const std::vector<RequestRecord>& records, int output_len) {
  std::map<std::string, int> errors;
  int short_outputs = 0;
  for (const RequestRecord& r : records) {
    if (!r.ok) ++errors[r.error];
    if (r.ok && r.output_tokens != output_len) ++short_outputs;
  }
  for (const auto& [message, n] : errors) absl::FPrintF(stderr, "tqctl bench: %d failed: %s\n", n, message);
  if (short_outputs > 0) {
    absl::FPrintF(stderr, "tqctl bench: warning: %d requests generated other than %d tokens\n", short_outputs,
                  output_len);
  }
}

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  ArgParser p("tqctl bench", "tqctl bench --server HOST:PORT [options]",
              "Serving benchmark of an inference server, like `vllm bench serve --dataset-name random`:\n"
              "num-prompts prompts of exactly input-len random token ids (uniform over the model's\n"
              "vocabulary from GetModelInfo, eos ids excluded, seeded), each generating exactly output-len\n"
              "tokens (greedy, ignore_eos, min_tokens = max_tokens, token ids streamed without text), with\n"
              "`concurrency` requests in flight. Reports throughput and the mean, median, P90 and P99 of\n"
              "TTFT, TPOT (per output token after the first), ITL (gaps between streamed chunks) and\n"
              "E2E latency, all measured on the client, in vllm's layout (--json: one JSON object).\n"
              "Exit code 1 when any request failed (the report is still printed), 130 after Ctrl-C.");
  p.Option("server", "", "the inference server HOST:PORT (required)");
  p.Option("token", "", "bearer token (default $TQ_AUTH_TOKEN)");
  p.Option("tls-ca", "", "CA certificates (PEM) to reach the server over TLS");
  p.Option("concurrency", "1", "requests in flight");
  p.Option("num-prompts", "32", "requests measured");
  p.Option("input-len", "128", "prompt tokens per request");
  p.Option("output-len", "64", "generated tokens per request");
  p.Option("seed", "0", "seed of the random prompts");
  p.Option("warmup", "0", "requests run (concurrently) before the measured ones and not counted");
  p.Switch("json", "print the results as JSON (vllm's keys) instead of the table");
  if (auto st = p.Parse(args); !st.ok()) {
    absl::FPrintF(stderr, "tqctl bench: %s\n\n%s", st.message(), p.Help());
    return 2;
  }
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  if (p.Get("server").empty() || !p.positional().empty()) {
    absl::FPrintF(stderr, "tqctl bench: --server HOST:PORT is required (and no positional arguments)\n\n%s",
                  p.Help());
    return 2;
  }
  auto concurrency = p.GetInt("concurrency", 1, 4096);
  auto num_prompts = p.GetInt("num-prompts", 1, 1 << 24);
  auto input_len = p.GetInt("input-len", 1, 1 << 24);
  auto output_len = p.GetInt("output-len", 1, 1 << 24);
  auto warmup = p.GetInt("warmup", 0, 1 << 24);
  for (const absl::Status& st : {concurrency.status(), num_prompts.status(), input_len.status(),
                                 output_len.status(), warmup.status()}) {
    if (!st.ok()) return Fail(st);
  }
  uint64_t seed;
  if (!absl::SimpleAtoi(p.Get("seed"), &seed)) {
    return Fail(absl::InvalidArgumentError("--seed must be a non-negative integer"));
  }
  const bool json = p.GetSwitch("json");
  const ServerTarget target{p.Get("server"), p.Get("tls-ca"), p.Get("token")};

  Runner runner;
  InterruptWatcher interrupt([&runner] {
    absl::FPrintF(stderr, "\ntqctl bench: interrupted, cancelling the requests in flight\n");
    runner.CancelAll();
  });  // before the channel's threads
  auto channel = Connect(target);
  if (!channel.ok()) return Fail(channel.status());
  auto stub = inference_v1::Inference::NewStub(*channel);
  runner.Configure(stub.get(), target, *output_len);

  inference_v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    Authorize(target, &ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status st = stub->GetModelInfo(&ctx, inference_v1::GetModelInfoRequest(), &info);
    if (!st.ok()) {
      absl::FPrintF(stderr, "tqctl bench: %s: GetModelInfo: %s\n", target.address,
                    StatusFromGrpc(st, ctx).ToString());
      return 1;
    }
  }
  if (info.vocab_size() == 0) {
    return Fail(absl::FailedPreconditionError("the server reports a vocabulary size of 0"));
  }
  if (info.max_context_length() > 0 &&
      static_cast<uint64_t>(*input_len) + static_cast<uint64_t>(*output_len) > info.max_context_length()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrFormat("--input-len %d + --output-len %d exceed the model's context of %d tokens", *input_len,
                        *output_len, info.max_context_length())));
  }
  const absl::flat_hash_set<int32_t> eos(info.eos_token_ids().begin(), info.eos_token_ids().end());
  std::mt19937_64 rng(seed);
  auto prompts = RandomPrompts(*num_prompts, *input_len, info.vocab_size(), eos, rng);
  if (!prompts.ok()) return Fail(prompts.status());
  // Drawn after the measured prompts, so --warmup does not change them.
  auto warmup_prompts = RandomPrompts(*warmup, *input_len, info.vocab_size(), eos, rng);
  if (!warmup_prompts.ok()) return Fail(warmup_prompts.status());

  absl::FPrintF(stderr, "tqctl bench: %s serving %s (%s, vocabulary %d); %d prompts of %d tokens, %d output tokens, "
                "concurrency %d\n",
                target.address, info.model_uri(), info.architecture(), info.vocab_size(), *num_prompts, *input_len,
                *output_len, *concurrency);
  double duration_s = 0;
  if (*warmup > 0) {
    auto w = runner.Run(*warmup_prompts, *concurrency, "warmup", &duration_s);
    const int64_t failed = std::count_if(w.begin(), w.end(), [](const RequestRecord& r) { return !r.ok; });
    absl::FPrintF(stderr, "tqctl bench: warmup: %d requests in %.2f s, %d failed\n", w.size(), duration_s, failed);
    if (failed > 0) ReportFailures(w, *output_len);
  }
  std::vector<RequestRecord> records;
  if (!interrupt.interrupted()) records = runner.Run(*prompts, *concurrency, "bench", &duration_s);
  if (interrupt.interrupted()) {
    absl::FPrintF(stderr, "tqctl bench: cancelled\n");
    return 130;
  }
  ReportFailures(records, *output_len);
  const BenchMetrics m = Aggregate(records, duration_s);
  if (json) {
    nlohmann::ordered_json j;
    j["server"] = target.address;
    j["model_uri"] = info.model_uri();
    j["num_prompts"] = *num_prompts;
    j["max_concurrency"] = *concurrency;
    j["input_len"] = *input_len;
    j["output_len"] = *output_len;
    j["seed"] = seed;
    j["warmup"] = *warmup;
    j.update(ReportJson(m));
    absl::PrintF("%s\n", j.dump(2));
  } else {
    std::fputs(FormatReport(m, *concurrency).c_str(), stdout);
  }
  std::fflush(stdout);
  return m.failed > 0 ? 1 : 0;
}

}  // namespace tq::tqctl
