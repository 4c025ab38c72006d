#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

namespace {

// A candidate of the nucleus search: c = logit / t, its probability under the whole vocabulary.
struct Weighted {
  float c;
  int32_t id;
  double p;
};

// The sampling order: larger c first, ties to the lower id (a strict total order).
bool Before(const Weighted& a, const Weighted& b) { return a.c > b.c || (a.c == b.c && a.id < b.id); }

// Weighted selection: finds the first position k, in Before order over v[0, n), whose prefix sum
// of p satisfies reached(sum), and rearranges v so that v[0..k] hold exactly the first k + 1
// elements of that order (v[k] the k-th) — the walk over a sorted array, without sorting (expected
// linear time; the last ≤ 64 elements of the search are sorted). Returns -1 when even the whole
// sum does not satisfy `reached`. Sums are taken in another order than the sorted walk's, so a
// target within rounding (~1e-16) of a prefix sum may resolve one element differently.
template <typename Reached>
int64_t FindPrefix(std::vector<Weighted>& v, int64_t n, Reached reached) {
  double acc = 0.0;
  int64_t lo = 0, hi = n;
  while (hi - lo > 64) {
    Weighted three[3] = {v[lo], v[lo + (hi - lo) / 2], v[hi - 1]};
    std::sort(three, three + 3, Before);
    const Weighted pivot = three[1];
    const auto first = v.begin() + lo, last = v.begin() + hi;
    const auto mid = std::partition(first, last, [&](const Weighted& x) { return Before(x, pivot); });
    std::iter_swap(mid, std::find_if(mid, last, [&](const Weighted& x) { return x.id == pivot.id; }));
    const int64_t m = mid - v.begin();
    double left = 0.0;
    for (int64_t i = lo; i < m; ++i) left += v[i].p;
    if (reached(acc + left)) {
      hi = m;
      continue;
    }
    acc += left;
    if (reached(acc + v[m].p)) return m;
    acc += v[m].p;
    lo = m + 1;
  }
  std::sort(v.begin() + lo, v.begin() + hi, Before);
  for (int64_t i = lo; i < hi; ++i) {
    acc += v[i].p;
    if (reached(acc)) return i;
  }
  return -1;
}

// The last of v[0, n) in Before order.
int32_t LastInOrder(const std::vector<Weighted>& v, int64_t n) {
  int64_t last = 0;
  for (int64_t i = 1; i < n; ++i) last = Before(v[last], v[i]) ? i : last;
  return v[last].id;
}

}  // namespace

int32_t ArgMax(const float* x, int64_t n) { return static_cast<int32_t>(nn::ArgMaxFirst(x, n)); }

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  if (params.seed.has_value()) {
    key_ = *params.seed;
  } else {
    std::random_device rd;
    key_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  rng_.seed(key_);
}

int32_t Sampler::Sample(const float* logits, int64_t vocab, float* logprob) {
  const float t = greedy() ? 1.0f : params_.temperature;
  const int32_t best = ArgMax(logits, vocab);
  const float mx = logits[best];
  const bool top_k = params_.top_k > 0 && params_.top_k < vocab;
  // z = Σ exp(logits / t − max / t) (vectorized exp, kernels/nn/ops.h; a vocabulary of 152K took
  // ~2 ms per token with a double std::exp loop; max(logits / t) = max(logits) / t since t > 0),
  // for the log-probability report and the nucleus search, once.
  const bool need_z = logprob != nullptr || (!greedy() && !top_k);
  const double z = need_z ? nn::SumExpShifted(logits, vocab, mx, 1.0f / t) : 0.0;
  const double lse = need_z ? std::log(z) + static_cast<double>(mx) / t : 0.0;
  auto report = [&](int32_t id) {
    if (logprob) *logprob = static_cast<float>(logits[id] / t - lse);
    return id;
  };
  if (greedy()) return report(best);

  auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (top_k) {
    // Top-k: the k best (a partial sort), probabilities renormalized over them.
    cand_.resize(vocab);
    for (int64_t i = 0; i < vocab; ++i) {
      const float c = logits[i] / t;
      cand_[i] = {std::isnan(c) ? -INFINITY : c, static_cast<int32_t>(i)};  // NaN: sortable, never drawn
    }
    const int64_t k = params_.top_k;
    std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.end(), by_logit);
    std::vector<double> p(k);
    double sum = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      p[i] = std::exp(static_cast<double>(cand_[i].first) - cand_[0].first);
      sum += p[i];
    }
    for (double& v : p) v /= sum;
    return report(cand_[Draw(p, k)].second);
  }
  return report(SampleNucleus(logits, vocab, t, mx, z));
}

// Filters the sorted probabilities p[0..keep) by top-p and min-p, then draws one index in
// proportion to the kept ones (the request's generator, one draw).
int64_t Sampler::Draw(const std::vector<double>& p, int64_t keep) {
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
    if (r < cum) return i;
  }
  return keep - 1;
}

// Without top-k the distribution is the whole vocabulary in logit order (ties to the lower id),
// each token's probability exp(c − c0) / z (c = logit / t, c0 the largest, z over the whole
// vocabulary). Sorting all of it costs ~18 ms at 152K entries, but the token drawn always lies in
// a prefix of that order: the top-p nucleus, the min-p set, or — plain temperature — the prefix
// whose mass passes the uniform draw. So only the band {c ≥ c0 − gap} is gathered, for widening
// gaps until it provably holds that prefix (its mass, then the prefix search itself), the whole
// vocabulary last, and searched by weighted selection (FindPrefix) instead of sorted. Same tokens
// as sorting everything, up to the rounding of sums at a cumulative boundary.
int32_t Sampler::SampleNucleus(const float* logits, int64_t vocab, float t, float max_logit, double z) {
  const float c0 = max_logit / t;
  const bool plain = params_.top_p >= 1.0f && params_.min_p <= 0.0f;
  // Plain temperature draws first (one draw, as Draw would over a total of 1).
  double r_plain = 0.0;
  if (plain) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    r_plain = u(rng_);
  }
  const double min_p_cut = params_.min_p > 0.0f ? c0 + std::log(static_cast<double>(params_.min_p)) : -INFINITY;
  std::vector<Weighted> w;
  constexpr double kGaps[] = {4.0, 8.0, 16.0, 32.0, 64.0, std::numeric_limits<double>::infinity()};
  for (double gap : kGaps) {
    const bool all = std::isinf(gap);
    const float cut = all ? -INFINITY : static_cast<float>(c0 - gap);
    if (!all) {
      // Does the band hold the prefix the draw can reach? Its mass from one vectorized pass (the
      // searches over the gathered band decide again below, so this only saves work).
      if (plain || params_.top_p < 1.0f) {
        const double mass = nn::SumExpShifted(logits, vocab, max_logit, 1.0f / t, -static_cast<float>(gap)) / z;
        if (plain && mass <= r_plain) continue;
        if (params_.top_p < 1.0f && mass < params_.top_p) continue;
      }
      if (params_.top_p >= 1.0f && params_.min_p > 0.0f && cut > min_p_cut) continue;
    }
    w.clear();
    for (int64_t i = 0; i < vocab; ++i) {
      const float c = logits[i] / t;
      if (c >= cut && !std::isnan(c)) {  // NaN: never a candidate
        w.push_back({c, static_cast<int32_t>(i), std::exp(static_cast<double>(c) - c0) / z});
      }
    }
    if (w.empty()) return 0;  // every logit NaN (the band of the maximum is never empty otherwise)
    const int64_t n = static_cast<int64_t>(w.size());
    if (plain) {
      const int64_t k = FindPrefix(w, n, [&](double sum) { return r_plain < sum; });
      if (k >= 0) return w[k].id;
      if (all) return LastInOrder(w, n);
      continue;
    }
    int64_t keep = n;
    if (params_.top_p < 1.0f) {
      const double top_p = params_.top_p;
      const int64_t k = FindPrefix(w, n, [&](double sum) { return sum >= top_p; });
      if (k < 0 && !all) continue;  // the nucleus reaches past the band
      keep = k < 0 ? n : k + 1;
    }
    if (params_.min_p > 0.0f) {  // the top token's probability is exp(0) / z
      const double floor = params_.min_p * (1.0 / z);
      keep = std::max<int64_t>(
          1, std::partition(w.begin(), w.begin() + keep, [&](const Weighted& x) { return x.p >= floor; }) - w.begin());
    }
    double total = 0.0;
    for (int64_t i = 0; i < keep; ++i) total += w[i].p;
    std::uniform_real_distribution<double> u(0.0, total);
    const double r = u(rng_);
    const int64_t k = FindPrefix(w, keep, [&](double sum) { return r < sum; });
    return k >= 0 ? w[k].id : LastInOrder(w, keep);
  }
  return 0;  // not reached: the last gap takes everything
}

}  // namespace tq
