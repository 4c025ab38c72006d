// tqctl generate / eval-ppl: run the inference engine in-process on the CPU.
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

namespace tq::tqctl {
namespace {

int Fail(const char* cmd, const absl::Status& st) {
  absl::FPrintF(stderr, "tqctl %s: %s\n", cmd, st.ToString());
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

void EngineOptionsFlags(ArgParser& p) {
  p.Option("model", "", "checkpoint URI or directory (TQ or Hugging Face BF16/F16/F32)");
  p.Option("threads", "0", "compute threads (0 = all cores)");
  p.Option("kv-codec", "bf16", "KV cache codec: bf16 or fp32");
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
  auto len = p.GetInt("max-model-len", 0, 1 << 24);
  if (!len.ok()) return len.status();
  o.max_model_len = *len;
  o.verify_checksums = !p.GetSwitch("no-verify");
  o.dequantize_tq = p.GetSwitch("dequantize");
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

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  ArgParser p("generate", "tqctl generate --model URI [options] \"prompt\"",
              "Generates a continuation of the prompt with the in-process CPU engine and prints it as it\n"
              "is produced. --temperature 0 is greedy decoding.");
  EngineOptionsFlags(p);
  p.Option("max-tokens", "64", "tokens to generate at most");
  p.Option("temperature", "1.0", "sampling temperature (0 = greedy)");
  p.Option("top-p", "1.0", "nucleus sampling: keep the most likely tokens up to this probability mass");
  p.Option("top-k", "0", "keep the k most likely tokens (0 = off)");
  p.Option("min-p", "0", "drop tokens below min-p times the top probability");
  p.Option("seed", "", "random seed (default: random)");
  p.Option("stop", "", "stop string (several: separate with '|')");
  p.Option("prompt-ids", "", "the prompt as token ids (comma separated) instead of text");
  p.Switch("ignore-eos", "keep generating after the end-of-sequence token");
  p.Switch("print-ids", "print the generated token ids on a final line");
  p.Switch("quiet", "no statistics on stderr");
  if (auto st = p.Parse(args); !st.ok()) {
    absl::FPrintF(stderr, "tqctl generate: %s\n\n%s", st.message(), p.Help());
    return 2;
  }
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
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
  auto opts = EngineOptionsFrom(p);
  if (!opts.ok()) return Fail("generate", opts.status());
  auto max_tokens = p.GetInt("max-tokens", 1, 1 << 24);
  auto temperature = p.GetDouble("temperature");
  auto top_p = p.GetDouble("top-p");
  auto top_k = p.GetInt("top-k", 0, 1 << 30);
  auto min_p = p.GetDouble("min-p");
  for (const absl::Status& st : {max_tokens.status(), temperature.status(), top_p.status(), top_k.status(),
                                 min_p.status()}) {
    if (!st.ok()) return Fail("generate", st);
  }
  req.max_tokens = *max_tokens;
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
  const bool quiet = p.GetSwitch("quiet");

  auto t0 = std::chrono::steady_clock::now();
  auto engine = Engine::Create(*opts);
  if (!engine.ok()) return Fail("generate", engine.status());
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const ModelInfo& info = (*engine)->model_info();
  if (!quiet) {
    absl::FPrintF(stderr, "loaded %s (%s checkpoint, %d TQ + %d dense linear layers, %.1f MB of linear weights) in %.2f s\n",
                  info.config.DebugString(), info.checkpoint_kind, info.quantized_linears, info.dense_linears,
                  info.linear_weight_bytes / 1e6, load_s);
  }
  std::promise<GenerationEvent> final_event;
  std::vector<int32_t> ids;
  auto id = (*engine)->Submit(req, [&](const GenerationEvent& ev) {
    ids.insert(ids.end(), ev.token_ids.begin(), ev.token_ids.end());
    if (!ev.text.empty()) {
      std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
      std::fflush(stdout);
    }
    if (ev.finished) final_event.set_value(ev);
  });
  if (!id.ok()) return Fail("generate", id.status());
  GenerationEvent last = final_event.get_future().get();
  std::fputs("\n", stdout);
  if (p.GetSwitch("print-ids")) std::printf("%s\n", absl::StrJoin(ids, " ").c_str());
  std::fflush(stdout);
  if (last.finish_reason == FinishReason::kError) return Fail("generate", last.status);
  if (!quiet) {
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
  std::printf("tokens=%lld windows=%lld predicted=%lld mean_nll=%.6f\n", static_cast<long long>(windows * *window),
              static_cast<long long>(windows), static_cast<long long>(predicted), mean);
  std::printf("ppl=%.4f\n", std::exp(mean));
  return 0;
}

}  // namespace tq::tqctl
