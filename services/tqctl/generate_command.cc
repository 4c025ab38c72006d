// tqctl generate / eval-ppl: run the inference engine in-process on the CPU; tqctl generate
// --server streams the generation from an inference server instead.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/runtime/engine.h"
#include "engine/util/file_util.h"
#include "services/tqctl/arg_parser.h"
#include "services/tqctl/commands.h"
#include "services/tqctl/grpc_client.h"
#include "services/tqctl/inference_client.h"

namespace tq::tqctl {
namespace {

int Fail(const char* cmd, const absl::Status& st) {
  absl::FPrintF(stderr, "tqctl %s: %s\n", cmd, st.ToString());
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

void EngineOptionsFlags(ArgParser& p) {
  p.Option("model", "", "checkpoint URI or directory (TQ or Hugging Face BF16/F16/F32)");
  p.Option("threads", "0", "compute threads (0 = all cores)");
  p.Option("kv-codec", "bf16",
           "KV cache codec: bf16, fp32, fp8, k8v4, 4bit_nc, k3v4_nc, 3bit_nc, turbo4, turbo3, k4v3; options\n"
           "after a colon: sink=N, boundary=N, qjl=0|1 (e.g. turbo3:boundary=0); docs/ENGINE.md");
  p.Option("kv-cache", "", "the same as --kv-codec (a KV cache preset name)");
  p.Option("device", "cpu", "where the in-process engine runs: cpu or cuda");
  p.Switch("host-sampling",
           "with --device cuda: copy the logits to the host and sample there with the CPU backend's\n"
           "sampler and generator, instead of on the GPU (kernels/cuda/sampling.h)");
  p.Switch("int8-gemv",
           "with --device cuda: one-token decode steps run TQ3 layers on int8 activations (W3A8:\n"
           "faster, not the checkpoint's float arithmetic; docs/ENGINE.md)");
  p.Option("max-model-len", "0", "context length (0 = the model's max_position_embeddings)");
  p.Switch("no-verify", "skip the sha256 check of TQ checkpoint files (sizes are still checked)");
  p.Switch("dequantize", "compute TQ layers from dequantized fp32 weights (for comparisons)");
}

absl::StatusOr<EngineOptions> EngineOptionsFrom(const ArgParser& p) {
  EngineOptions o;
  o.model_uri = p.Get("model");
  if (o.model_uri.empty()) return absl::InvalidArgumentError("--model is required");
  auto threads = p.GetInt("threads", 0, 1024);
  if (!threads.ok()) return threads.status();
  o.threads = *threads;
  o.kv_codec = p.Get("kv-codec");
  if (p.IsSet("kv-cache")) {
    if (p.IsSet("kv-codec") && p.Get("kv-codec") != p.Get("kv-cache")) {
      return absl::InvalidArgumentError("--kv-cache and --kv-codec name the same setting; give one");
    }
    o.kv_codec = p.Get("kv-cache");
  }
  o.device = p.Get("device");
  auto len = p.GetInt("max-model-len", 0, 1 << 24);
  if (!len.ok()) return len.status();
  o.max_model_len = *len;
  o.verify_checksums = !p.GetSwitch("no-verify");
  o.dequantize_tq = p.GetSwitch("dequantize");
  o.device_sampling = !p.GetSwitch("host-sampling");
  o.tq_int8_gemv = p.GetSwitch("int8-gemv");
  return o;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    int32_t v;
    if (!absl::SimpleAtoi(piece, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--prompt-ids: '", piece, "' is not a token id"));
    }
    ids.push_back(v);
  }
  return ids;
}

struct GenerateOutput {
  bool print_ids = false;
  bool logprobs = false;
  bool quiet = false;
};

// The final stdout lines of both modes.
void PrintIdsAndLogprobs(const GenerateOutput& out, const std::vector<int32_t>& ids,
                         const std::vector<float>& logprobs) {
  if (out.print_ids) std::printf("%s\n", absl::StrJoin(ids, " ").c_str());
  if (out.logprobs) {
    std::printf("%s\n", absl::StrJoin(logprobs, " ", [](std::string* o, float v) {
                  absl::StrAppendFormat(o, "%.6g", v);
                }).c_str());
  }
  std::fflush(stdout);
}

// tqctl generate --server: one streamed Generate call.
int RunRemoteGenerate(const ServerTarget& target, const inference_v1::GenerateRequest& request,
                      const GenerateOutput& out) {
  grpc::ClientContext ctx;
  InterruptWatcher interrupt([&ctx] { ctx.TryCancel(); });  // before the channel's threads
  auto channel = Connect(target);
  if (!channel.ok()) return Fail("generate", channel.status());
  Authorize(target, &ctx);
  auto stub = inference_v1::Inference::NewStub(*channel);
  bool printed = false;
  auto result = StreamGenerate(*stub, ctx, request, [&](const inference_v1::Chunk& chunk) {
    if (chunk.text().empty()) return;
    std::fwrite(chunk.text().data(), 1, chunk.text().size(), stdout);
    std::fflush(stdout);
    printed = true;
  });
  if (!result.ok()) {
    if (printed) std::fputs("\n", stdout);
    std::fflush(stdout);
    if (interrupt.interrupted()) {
      absl::FPrintF(stderr, "tqctl generate: cancelled\n");
      return 130;
    }
    absl::FPrintF(stderr, "tqctl generate: %s: %s\n", target.address, result.status().ToString());
    return result.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::fputs("\n", stdout);
  PrintIdsAndLogprobs(out, result->token_ids, result->logprobs);
  if (!out.quiet) absl::FPrintF(stderr, "%s\n", DescribeCompletion(*result));
  switch (result->complete.finish_reason()) {
    case inference_v1::FINISH_REASON_ERROR:
      absl::FPrintF(stderr, "tqctl generate: %s: the server failed the request: %s\n", target.address,
                    result->complete.error());
      return 1;
    case inference_v1::FINISH_REASON_CANCELLED:
      absl::FPrintF(stderr, "tqctl generate: %s: the request was aborted (Abort RPC or server shutdown)\n",
                    target.address);
      return 1;
    default:
      return 0;
  }
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  ArgParser p("generate",
              "tqctl generate (--model URI | --server HOST:PORT) [options] \"prompt\"",
              "Generates a continuation of the prompt and prints it as it is produced: with the\n"
              "in-process CPU engine (--model), or streamed from an inference server (--server; Ctrl-C\n"
              "cancels the call and the server aborts the request). --temperature 0 is greedy decoding.\n"
              "Unless --quiet, a last stderr line gives the finish reason, token counts and timings.\n"
              "stdout: the text, then with --print-ids the generated ids, then with --logprobs their\n"
              "log-probabilities, one line each. Exit code 0 when the generation completed (eos, stop,\n"
              "length, time limit); 1 when it failed or was aborted, 2 for bad usage or a request the\n"
              "server rejected as invalid, 130 after Ctrl-C.");
  EngineOptionsFlags(p);
  p.Option("server", "", "an inference server HOST:PORT instead of --model");
  p.Option("token", "", "bearer token for --server (default $TQ_AUTH_TOKEN)");
  p.Option("tls-ca", "", "CA certificates (PEM) to reach --server over TLS");
  p.Option("request-id", "", "with --server: the request's id (default: assigned by the server)");
  p.Option("max-tokens", "64", "tokens to generate at most");
  p.Option("min-tokens", "0", "eos and stop token ids cannot end the generation before this many tokens");
  p.Option("temperature", "1.0", "sampling temperature (0 = greedy)");
  p.Option("top-p", "1.0", "nucleus sampling: keep the most likely tokens up to this probability mass");
  p.Option("top-k", "0", "keep the k most likely tokens (0 = off)");
  p.Option("min-p", "0", "drop tokens below min-p times the top probability");
  p.Option("seed", "", "random seed (default: random)");
  p.Option("stop", "", "stop string (several: separate with '|')");
  p.Option("time-limit-ms", "0", "wall-clock budget of the request; then it ends with finish reason time_limit (0 = none)");
  p.Option("prompt-ids", "", "the prompt as token ids (comma separated) instead of text");
  p.Switch("ignore-eos", "keep generating after the end-of-sequence token");
  p.Switch("print-ids", "print the generated token ids on a final line");
  p.Switch("logprobs", "print the log-probability of each generated token on a final line");
  p.Switch("quiet", "no statistics on stderr");
  if (auto st = p.Parse(args); !st.ok()) {
    absl::FPrintF(stderr, "tqctl generate: %s\n\n%s", st.message(), p.Help());
    return 2;
  }
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  const bool remote = !p.Get("server").empty();
  if (remote == !p.Get("model").empty()) {
    absl::FPrintF(stderr, "tqctl generate: give exactly one of --model URI and --server HOST:PORT\n\n%s",
                  p.Help());
    return 2;
  }
  for (const char* name : remote ? std::vector<const char*>{"threads", "kv-codec", "kv-cache", "device", "max-model-len", "no-verify",
                                                            "dequantize", "host-sampling", "int8-gemv"}
                                 : std::vector<const char*>{"request-id", "token", "tls-ca"}) {
    if (p.IsSet(name)) {
      absl::FPrintF(stderr, "tqctl generate: --%s is an option of %s only\n", name,
                    remote ? "--model (the in-process engine)" : "--server");
      return 2;
    }
  }
  GenerationRequest req;
  if (!p.Get("prompt-ids").empty()) {
    auto ids = ParseIds(p.Get("prompt-ids"));
    if (!ids.ok()) return Fail("generate", ids.status());
    req.prompt_ids = *ids;
  }
  if (p.positional().size() > 1 || (p.positional().empty() && req.prompt_ids.empty())) {
    absl::FPrintF(stderr, "tqctl generate: give one prompt (or --prompt-ids)\n\n%s", p.Help());
    return 2;
  }
  if (!p.positional().empty()) req.prompt = p.positional()[0];
  auto max_tokens = p.GetInt("max-tokens", 1, 1 << 24);
  auto min_tokens = p.GetInt("min-tokens", 0, 1 << 24);
  auto temperature = p.GetDouble("temperature");
  auto top_p = p.GetDouble("top-p");
  auto top_k = p.GetInt("top-k", 0, 1 << 30);
  auto min_p = p.GetDouble("min-p");
  auto time_limit_ms = p.GetInt("time-limit-ms", 0, INT32_MAX);
  for (const absl::Status& st : {max_tokens.status(), min_tokens.status(), temperature.status(), top_p.status(),
                                 top_k.status(), min_p.status(), time_limit_ms.status()}) {
    if (!st.ok()) return Fail("generate", st);
  }
  if (*min_tokens > *max_tokens) {
    return Fail("generate", absl::InvalidArgumentError(absl::StrCat("--min-tokens ", *min_tokens,
                                                                    " is more than --max-tokens ", *max_tokens)));
  }
  req.max_tokens = *max_tokens;
  req.min_tokens = *min_tokens;
  req.sampling.temperature = static_cast<float>(*temperature);
  req.sampling.top_p = static_cast<float>(*top_p);
  req.sampling.top_k = *top_k;
  req.sampling.min_p = static_cast<float>(*min_p);
  if (!p.Get("seed").empty()) {
    uint64_t seed;
    if (!absl::SimpleAtoi(p.Get("seed"), &seed)) {
      return Fail("generate", absl::InvalidArgumentError("--seed must be a non-negative integer"));
    }
    req.sampling.seed = seed;
  }
  if (!p.Get("stop").empty()) req.stop = absl::StrSplit(p.Get("stop"), '|', absl::SkipEmpty());
  req.ignore_eos = p.GetSwitch("ignore-eos");
  const GenerateOutput out{p.GetSwitch("print-ids"), p.GetSwitch("logprobs"), p.GetSwitch("quiet")};
  if (remote) {
    if (!req.prompt.empty() && !req.prompt_ids.empty()) {
      absl::FPrintF(stderr, "tqctl generate: give a prompt or --prompt-ids, not both, with --server\n");
      return 2;
    }
    inference_v1::GenerateRequest r;
    r.set_request_id(p.Get("request-id"));
    if (!req.prompt_ids.empty()) {
      r.mutable_token_ids()->mutable_ids()->Assign(req.prompt_ids.begin(), req.prompt_ids.end());
    } else {
      r.set_text(req.prompt);
    }
    // Sampling fields are optional in the API: send only what was given, so the server's
    // defaults (equal to ours) apply otherwise. max_tokens is always sent: our default (64)
    // is not the API's (16).
    inference_v1::SamplingParams& s = *r.mutable_sampling();
    if (p.IsSet("temperature")) s.set_temperature(req.sampling.temperature);
    if (p.IsSet("top-p")) s.set_top_p(req.sampling.top_p);
    if (p.IsSet("top-k")) s.set_top_k(req.sampling.top_k);
    if (p.IsSet("min-p")) s.set_min_p(req.sampling.min_p);
    if (req.sampling.seed.has_value()) s.set_seed(*req.sampling.seed);
    inference_v1::StoppingCriteria& stop = *r.mutable_stopping();
    stop.set_max_tokens(static_cast<uint32_t>(req.max_tokens));
    if (p.IsSet("min-tokens")) stop.set_min_tokens(static_cast<uint32_t>(req.min_tokens));
    for (const std::string& x : req.stop) stop.add_stop(x);
    stop.set_ignore_eos(req.ignore_eos);
    if (*time_limit_ms > 0) r.set_time_limit_ms(static_cast<uint32_t>(*time_limit_ms));
    r.mutable_stream()->set_logprobs(out.logprobs);
    return RunRemoteGenerate(ServerTarget{p.Get("server"), p.Get("tls-ca"), p.Get("token")}, r, out);
  }
  auto opts = EngineOptionsFrom(p);
  if (!opts.ok()) return Fail("generate", opts.status());

  auto t0 = std::chrono::steady_clock::now();
  auto engine = Engine::Create(*opts);
  if (!engine.ok()) return Fail("generate", engine.status());
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const ModelInfo& info = (*engine)->model_info();
  if (!out.quiet) {
    absl::FPrintF(stderr, "loaded %s (%s checkpoint, %d TQ + %d dense linear layers, %.1f MB of linear weights) in %.2f s\n",
                  info.config.DebugString(), info.checkpoint_kind, info.quantized_linears, info.dense_linears,
                  info.linear_weight_bytes / 1e6, load_s);
  }
  if (*time_limit_ms > 0) {
    req.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*time_limit_ms);
  }
  std::promise<GenerationEvent> final_event;
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  auto id = (*engine)->Submit(req, [&](const GenerationEvent& ev) {
    ids.insert(ids.end(), ev.token_ids.begin(), ev.token_ids.end());
    logprobs.insert(logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
    if (!ev.text.empty()) {
      std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
      std::fflush(stdout);
    }
    if (ev.finished) final_event.set_value(ev);
  });
  if (!id.ok()) return Fail("generate", id.status());
  GenerationEvent last = final_event.get_future().get();
  std::fputs("\n", stdout);
  PrintIdsAndLogprobs(out, ids, logprobs);
  if (last.finish_reason == FinishReason::kError) return Fail("generate", last.status);
  if (!out.quiet) {
    const double decode_s = last.total_s - last.first_token_s;
    absl::FPrintF(stderr,
                  "prompt %d tokens, generated %d tokens; first token %.3f s, %.1f tokens/s after it; "
                  "finish: %s%s\n",
                  last.prompt_tokens, last.completion_tokens, last.first_token_s,
                  last.completion_tokens > 1 && decode_s > 0 ? (last.completion_tokens - 1) / decode_s : 0.0,
                  FinishReasonName(last.finish_reason),
                  last.stop_reason.empty() ? "" : absl::StrCat(" (", last.stop_reason, ")"));
  }
  return 0;
}

int RunEvalPpl(const std::vector<std::string>& args) {
  ArgParser p("eval-ppl", "tqctl eval-ppl --model URI --data FILE [options]",
              "Perplexity of a text file: the whole file is tokenized in one piece (no special tokens\n"
              "added), tokens [start, start + num) are cut into independent windows (no carried\n"
              "context); window w predicts its positions 1..window-1; ppl = exp(mean NLL).\n"
              "Prints ppl=<value> on its last line.");
  EngineOptionsFlags(p);
  p.Option("data", "", "UTF-8 text file");
  p.Option("window", "256", "tokens per window");
  p.Option("start-token", "0", "first token used");
  p.Option("num-tokens", "0", "tokens used (0 = all from start-token; a partial last window is dropped)");
  p.Option("batch", "0", "windows per forward pass (0 = automatic)");
  if (auto st = p.Parse(args); !st.ok()) {
    absl::FPrintF(stderr, "tqctl eval-ppl: %s\n\n%s", st.message(), p.Help());
    return 2;
  }
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  if (p.Get("data").empty() || !p.positional().empty()) {
    absl::FPrintF(stderr, "tqctl eval-ppl: --data FILE is required (and no positional arguments)\n\n%s", p.Help());
    return 2;
  }
  auto opts = EngineOptionsFrom(p);
  if (!opts.ok()) return Fail("eval-ppl", opts.status());
  // --int8-gemv scores every position with the decode path's W3A8 arithmetic (row by row).
  opts->tq_int8_gemv_all_rows = opts->tq_int8_gemv;
  auto window = p.GetInt("window", 2, 1 << 20);
  auto start = p.GetInt("start-token", 0, INT32_MAX);
  auto num = p.GetInt("num-tokens", 0, INT32_MAX);
  auto batch = p.GetInt("batch", 0, 4096);
  for (const absl::Status& st : {window.status(), start.status(), num.status(), batch.status()}) {
    if (!st.ok()) return Fail("eval-ppl", st);
  }
  auto text = ReadFile(p.Get("data"));
  if (!text.ok()) return Fail("eval-ppl", text.status());
  auto engine = Engine::Create(*opts);
  if (!engine.ok()) return Fail("eval-ppl", engine.status());
  const Tokenizer* tok = (*engine)->tokenizer();
  if (tok == nullptr) return Fail("eval-ppl", absl::FailedPreconditionError("the model has no tokenizer.json"));
  const ModelInfo& info = (*engine)->model_info();
  absl::FPrintF(stderr, "kv cache: %s; %d bytes/token\n", info.kv_layout, info.kv_bytes_per_token);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> ids = tok->Encode(*text);
  const double tok_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (*start >= static_cast<int64_t>(ids.size())) {
    return Fail("eval-ppl", absl::InvalidArgumentError(absl::StrCat("--start-token ", *start, " is beyond the ",
                                                                    ids.size(), " tokens of the file")));
  }
  int64_t avail = static_cast<int64_t>(ids.size()) - *start;
  if (*num > 0) avail = std::min<int64_t>(avail, *num);
  const int64_t windows = avail / *window;
  if (windows < 1) {
    return Fail("eval-ppl", absl::InvalidArgumentError(absl::StrCat("only ", avail, " tokens: less than one window of ",
                                                                    *window)));
  }
  const int64_t vocab = (*engine)->model_info().config.vocab_size;
  // Windows per forward: bounded by the logits' memory (about 256 MB) and the token budget.
  int64_t per_batch = *batch > 0 ? *batch : std::max<int64_t>(1, std::min<int64_t>(8, (64LL << 20) / (*window * vocab)));
  absl::FPrintF(stderr, "%d tokens in %.2f s; scoring %d windows of %d tokens\n", ids.size(), tok_s, windows, *window);
  double nll_sum = 0;
  int64_t predicted = 0;
  auto t1 = std::chrono::steady_clock::now();
  for (int64_t w = 0; w < windows; w += per_batch) {
    std::vector<std::vector<int32_t>> seqs;
    for (int64_t j = w; j < std::min(windows, w + per_batch); ++j) {
      const auto b = ids.begin() + *start + j * *window;
      seqs.emplace_back(b, b + *window);
    }
    auto nll = (*engine)->Score(seqs);
    if (!nll.ok()) return Fail("eval-ppl", nll.status());
    for (const auto& v : *nll) {
      for (float x : v) nll_sum += x;
      predicted += static_cast<int64_t>(v.size());
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const double mean = nll_sum / predicted;
  absl::FPrintF(stderr, "scored %d tokens in %.2f s (%.0f tokens/s)\n", windows * *window, secs,
                windows * *window / secs);
  std::printf("kv_codec=%s kv_bytes_per_token=%lld\n", info.kv_codec.c_str(),
              static_cast<long long>(info.kv_bytes_per_token));
  std::printf("tokens=%lld windows=%lld predicted=%lld mean_nll=%.6f\n", static_cast<long long>(windows * *window),
              static_cast<long long>(windows), static_cast<long long>(predicted), mean);
  std::printf("ppl=%.4f\n", std::exp(mean));
  return 0;
}

}  // namespace tq::tqctl
