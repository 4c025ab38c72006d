// engine_bench: prefill and decode throughput of the inference engine on the CPU.
//
//   bazel run -c opt //tools:engine_bench -- --model /models/llama-tq3 --batch 1,8
//
// Prefill: one request of --prompt-len random token ids scheduled in one step; tokens/s =
// prompt length / time to first token. Decode at batch B: B requests with --decode-context-token
// prompts (default 8) and --decode-tokens new tokens each (ignore eos; greedy unless --temperature,
// optionally --top-p / --top-k: seeded sampling; on CUDA on the device unless --host-sampling,
// which copies the logits back and samples on the host as the CPU backend does); tokens/s counts
// the tokens produced after the last request's first token, over the time until the last
// finishes (steady-state decode at that context). Long contexts need a KV cache to match:
// --kv-cache-gib (default: the engine's automatic size, at most 1 GiB).
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/runtime/engine.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string model;
  int threads = 0;
  int prompt_len = 128;
  int decode_tokens = 32;
  int decode_context = 8;
  double kv_cache_gib = 0;
  std::vector<int> batches = {1, 8};
  std::string kv_codec = "bf16";
  std::string device = "cpu";
  int repeats = 2;
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
  int top_k = 0;
  bool host_sampling = false;  // CUDA: sample on the host (the logits copied back) instead of the GPU
  bool int8_gemv = false;      // CUDA: m = 1 TQ3 layers on the int8-activation GEMV (opt-in)
};

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--model") {
      a->model = next();
    } else if (k == "--threads") {
      if (!absl::SimpleAtoi(next(), &a->threads)) return false;
    } else if (k == "--prompt-len") {
      if (!absl::SimpleAtoi(next(), &a->prompt_len)) return false;
    } else if (k == "--decode-tokens") {
      if (!absl::SimpleAtoi(next(), &a->decode_tokens)) return false;
    } else if (k == "--decode-context") {
      if (!absl::SimpleAtoi(next(), &a->decode_context) || a->decode_context < 1) return false;
    } else if (k == "--kv-cache-gib") {
      if (!absl::SimpleAtod(next(), &a->kv_cache_gib) || !(a->kv_cache_gib > 0)) return false;
    } else if (k == "--repeats") {
      if (!absl::SimpleAtoi(next(), &a->repeats)) return false;
    } else if (k == "--kv-codec") {
      a->kv_codec = next();
    } else if (k == "--device") {
      a->device = next();
    } else if (k == "--temperature") {
      if (!absl::SimpleAtof(next(), &a->temperature) || !(a->temperature >= 0)) return false;
    } else if (k == "--top-p") {
      if (!absl::SimpleAtof(next(), &a->top_p) || !(a->top_p > 0 && a->top_p <= 1)) return false;
    } else if (k == "--top-k") {
      if (!absl::SimpleAtoi(next(), &a->top_k) || a->top_k < 0) return false;
    } else if (k == "--host-sampling") {
      a->host_sampling = true;
    } else if (k == "--int8-gemv") {
      a->int8_gemv = true;
    } else if (k == "--batch") {
      a->batches.clear();
      for (absl::string_view s : absl::StrSplit(next(), ',')) {
        int b;
        if (!absl::SimpleAtoi(s, &b) || b < 1) return false;
        a->batches.push_back(b);
      }
    } else {
      return false;
    }
  }
  return !a->model.empty();
}

struct Run {
  std::mutex mu;
  std::condition_variable cv;
  int finished = 0;
  std::vector<Clock::time_point> first_token;
  std::vector<std::vector<Clock::time_point>> token_times;
};

// Submits `n` requests and waits; returns per-request token times.
bool Submit(tq::Engine& e, int n, int prompt_len, int max_tokens, uint32_t seed, const tq::SamplingParams& sampling,
            Run* run) {
  std::mt19937 rng(seed);
  const int vocab = static_cast<int>(e.model_info().config.vocab_size);
  run->token_times.assign(n, {});
  for (int i = 0; i < n; ++i) {
    tq::GenerationRequest r;
    for (int t = 0; t < prompt_len; ++t) r.prompt_ids.push_back(static_cast<int32_t>(1 + rng() % (vocab - 1)));
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.sampling = sampling;
    r.sampling.seed = seed + i;
    auto id = e.Submit(r, [run, i](const tq::GenerationEvent& ev) {
      std::lock_guard<std::mutex> l(run->mu);
      for (size_t k = 0; k < ev.token_ids.size(); ++k) run->token_times[i].push_back(Clock::now());
      if (ev.finished) {
        ++run->finished;
        run->cv.notify_all();
      }
    });
    if (!id.ok()) {
      std::fprintf(stderr, "submit: %s\n", id.status().ToString().c_str());
      return false;
    }
  }
  std::unique_lock<std::mutex> l(run->mu);
  run->cv.wait(l, [&] { return run->finished == n; });
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!ParseArgs(argc, argv, &a)) {
    std::fprintf(stderr,
                 "usage: engine_bench --model URI [--threads N] [--prompt-len 128] [--decode-tokens 32] "
                 "[--decode-context 8] [--kv-cache-gib G] [--batch 1,8] [--kv-codec bf16] [--device cpu|cuda] "
                 "[--repeats 2] [--temperature 0] [--top-p 1] [--top-k 0] [--host-sampling] [--int8-gemv]\n");
    return 2;
  }
  tq::SamplingParams sampling;
  sampling.temperature = a.temperature;
  sampling.top_p = a.top_p;
  sampling.top_k = a.top_k;
  tq::EngineOptions o;
  o.device_sampling = !a.host_sampling;
  o.tq_int8_gemv = a.int8_gemv;
  o.model_uri = a.model;
  o.threads = a.threads;
  o.kv_codec = a.kv_codec;
  o.device = a.device;
  o.max_num_batched_tokens = std::max(512, a.prompt_len);
  o.max_num_seqs = 64;
  o.max_model_len = std::max(a.prompt_len, a.decode_context + a.decode_tokens) + 16;
  if (a.kv_cache_gib > 0) o.kv_cache_bytes = static_cast<int64_t>(a.kv_cache_gib * (1 << 30));
  auto t0 = Clock::now();
  auto engine = tq::Engine::Create(o);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const tq::ModelInfo& info = (*engine)->model_info();
  std::printf("device %s; model %s (%s), %llu TQ + %llu dense linear layers, %.1f MB linear weights; load %.2f s\n",
              info.device.c_str(), info.config.DebugString().c_str(), info.checkpoint_kind.c_str(),
              static_cast<unsigned long long>(info.quantized_linears),
              static_cast<unsigned long long>(info.dense_linears), info.linear_weight_bytes / 1e6, load_s);
  std::printf("%s\n", info.runner.c_str());
  // Warm-up.
  {
    Run w;
    Submit(**engine, 1, 16, 4, 7, sampling, &w);
  }
  double best_prefill = 0;
  for (int r = 0; r < a.repeats; ++r) {
    Run run;
    auto start = Clock::now();
    if (!Submit(**engine, 1, a.prompt_len, 1, 11 + r, sampling, &run)) return 1;
    const double s = std::chrono::duration<double>(run.token_times[0][0] - start).count();
    best_prefill = std::max(best_prefill, a.prompt_len / s);
  }
  std::printf("prefill %d tokens: %.1f tokens/s\n", a.prompt_len, best_prefill);
  for (int b : a.batches) {
    double best = 0;
    for (int r = 0; r < a.repeats; ++r) {
      Run run;
      if (!Submit(**engine, b, a.decode_context, a.decode_tokens + 1, 100 + r, sampling, &run)) return 1;
      Clock::time_point steady = run.token_times[0][0], end = run.token_times[0].back();
      for (const auto& t : run.token_times) {
        steady = std::max(steady, t.front());
        end = std::max(end, t.back());
      }
      int tokens = 0;
      for (const auto& t : run.token_times) tokens += std::count_if(t.begin(), t.end(), [&](auto x) { return x > steady; });
      const double s = std::chrono::duration<double>(end - steady).count();
      best = std::max(best, tokens / s);
    }
    if (a.decode_context == 8) {
      std::printf("decode batch %d: %.2f tokens/s (%.2f per sequence)\n", b, best, best / b);
    } else {
      std::printf("decode batch %d at context %d: %.2f tokens/s (%.2f per sequence)\n", b, a.decode_context, best,
                  best / b);
    }
  }
  return 0;
}
