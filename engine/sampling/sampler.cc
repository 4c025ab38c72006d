#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/nn/ops.h"

namespace tq {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be >= 0, got ", p.temperature));
  }
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (!(p.min_p >= 0 && p.min_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("min_p must be in [0, 1], got ", p.min_p));
  }
  return absl::OkStatus();
}

int32_t ArgMax(const float* x, int64_t n) { return static_cast<int32_t>(nn::ArgMaxFirst(x, n)); }

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  if (params.seed.has_value()) {
    rng_.seed(*params.seed);
  } else {
    std::random_device rd;
    rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
}

int32_t Sampler::Sample(const float* logits, int64_t vocab, float* logprob) {
  const float t = greedy() ? 1.0f : params_.temperature;
  const int32_t best = ArgMax(logits, vocab);
  // Log-sum-exp of logits / t for the log-probability report (vectorized exp, kernels/nn/ops.h;
  // a vocabulary of 152K took ~2 ms per token with a double std::exp loop): max(logits / t) =
  // max(logits) / t since t > 0.
  double lse = 0.0;
  if (logprob != nullptr) {
    const float mx = logits[best];
    lse = std::log(nn::SumExpShifted(logits, vocab, mx, 1.0f / t)) + static_cast<double>(mx) / t;
  }
  auto report = [&](int32_t id) {
    if (logprob) *logprob = static_cast<float>(logits[id] / t - lse);
    return id;
  };
  if (greedy()) return report(best);

  // Candidates sorted by logit, descending (top-k first if set: partial sort).
  cand_.resize(vocab);
  for (int64_t i = 0; i < vocab; ++i) cand_[i] = {logits[i] / t, static_cast<int32_t>(i)};
  auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t keep = vocab;
  if (params_.top_k > 0 && params_.top_k < vocab) {
    keep = params_.top_k;
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Probabilities of the kept candidates (renormalized over them).
  std::vector<double> p(keep);
  double sum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    p[i] = std::exp(static_cast<double>(cand_[i].first) - cand_[0].first);
    sum += p[i];
  }
  for (double& v : p) v /= sum;
  if (params_.top_p < 1.0f) {
    double cum = 0.0;
    int64_t n = 0;
    while (n < keep) {
      cum += p[n++];
      if (cum >= params_.top_p) break;
    }
    keep = std::max<int64_t>(n, 1);
  }
  if (params_.min_p > 0.0f) {
    const double floor = params_.min_p * p[0];
    int64_t n = 1;
    while (n < keep && p[n] >= floor) ++n;
    keep = n;
  }
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) total += p[i];
  std::uniform_real_distribution<double> u(0.0, total);
  const double r = u(rng_);
  double cum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (r < cum) return report(cand_[i].second);
  }
  return report(cand_[keep - 1].second);
}

}  // namespace tq
