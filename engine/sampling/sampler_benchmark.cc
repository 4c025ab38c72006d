// Time of one Sampler::Sample call (with the log-probability, as the engine asks for it) on a
// vocabulary-sized row of random logits: greedy, temperature with top-k 50, with top-p 0.9, and
// plain temperature 1.
//
// Usage: bazel run -c opt //engine/sampling:sampler_benchmark [-- VOCAB]   (default 151936)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "engine/sampling/sampler.h"
#include "kernels/nn/ops.h"

namespace tq {
namespace {

double MicrosPerCall(Sampler& s, const std::vector<float>& logits, int calls) {
  float lp = 0;
  int64_t sink = 0;
  s.Sample(logits.data(), static_cast<int64_t>(logits.size()), &lp);  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) sink += s.Sample(logits.data(), static_cast<int64_t>(logits.size()), &lp);
  const auto t1 = std::chrono::steady_clock::now();
  if (sink == -1) std::puts("");  // keeps the calls
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / calls;
}

int Main(int argc, char** argv) {
  const int64_t vocab = argc > 1 ? std::atoll(argv[1]) : 151936;
  if (vocab <= 0) {
    std::fprintf(stderr, "vocabulary size must be positive\n");
    return 2;
  }
  std::vector<float> logits(vocab);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (float& v : logits) v = nd(rng);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  SamplingParams topk;
  topk.temperature = 0.7f;
  topk.top_k = 50;
  topk.seed = 1;
  SamplingParams topp;
  topp.temperature = 0.7f;
  topp.top_p = 0.9f;
  topp.seed = 1;
  SamplingParams plain;
  plain.temperature = 1.0f;
  plain.seed = 1;
  Sampler g(greedy), k(topk), p(topp), t(plain);
  std::printf("vocabulary %lld, %s kernels, us per token: greedy %.1f, temperature 0.7 + top-k 50 %.1f, "
              "temperature 0.7 + top-p 0.9 %.1f, temperature 1 %.1f\n",
              static_cast<long long>(vocab), nn::NnKernelIsa(), MicrosPerCall(g, logits, 200),
              MicrosPerCall(k, logits, 50), MicrosPerCall(p, logits, 10), MicrosPerCall(t, logits, 10));
  return 0;
}

}  // namespace
}  // namespace tq

int main(int argc, char** argv) { return tq::Main(argc, argv); }
