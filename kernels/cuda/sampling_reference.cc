#include "kernels/cuda/sampling_reference.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cuda/philox.h"

namespace tq::cuda {

SampleRowResult SampleRowReference(const float* logits, int64_t vocab, const SampleRowParams& p,
                                   const int32_t* masked) {
  const bool greedy = p.temperature == 0.0f;
  const float t = greedy ? 1.0f : p.temperature;
  std::vector<float> c(vocab);
  for (int64_t i = 0; i < vocab; ++i) c[i] = std::min(logits[i] / t, FLT_MAX);  // NaN stays NaN
  for (int32_t j = p.masked_begin; j < p.masked_end; ++j) c[masked[j]] = -INFINITY;
  SampleRowResult r;
  int64_t best = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!std::isnan(c[i]) && (best < 0 || c[i] > c[best])) best = i;
  }
  if (best < 0 || c[best] == -INFINITY) {  // nothing can be drawn
    r.token = 0;
    r.logprob = -INFINITY;
    return r;
  }
  const float m = c[best];
  auto weight = [&](int64_t i) { return static_cast<double>(std::exp(c[i] - m)); };
  struct Cand {
    float c;
    int32_t id;
  };
  std::vector<Cand> order;
  double z = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (c[i] > -INFINITY) {  // false for NaN
      order.push_back({c[i], static_cast<int32_t>(i)});
      z += weight(i);
    }
  }
  auto report = [&](int64_t id, int64_t kept) {
    r.token = static_cast<int32_t>(id);
    r.logprob = static_cast<float>(static_cast<double>(c[id]) - m - std::log(z));
    r.kept = static_cast<int32_t>(kept);
    return r;
  };
  if (greedy) return report(best, 1);
  std::sort(order.begin(), order.end(),
            [](const Cand& a, const Cand& b) { return a.c > b.c || (a.c == b.c && a.id < b.id); });
  int64_t keep = static_cast<int64_t>(order.size());
  if (p.top_k > 0 && p.top_k < keep) keep = p.top_k;
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (int64_t j = 0; j < keep; ++j) mass += weight(order[j].id);
    const double target = static_cast<double>(p.top_p) * mass;
    double acc = 0.0;
    for (int64_t j = 0; j < keep; ++j) {
      acc += weight(order[j].id);
      if (acc >= target) {
        keep = j + 1;
        break;
      }
    }
  }
  if (p.min_p > 0.0f) {
    const double cut = std::log(static_cast<double>(p.min_p));
    int64_t n = 1;
    while (n < keep && static_cast<double>(order[n].c) - m >= cut) ++n;
    keep = n;
  }
  const Cand last = order[keep - 1];
  auto kept = [&](int64_t i) { return c[i] > last.c || (c[i] == last.c && i <= last.id); };  // NaN: false
  double total = 0.0;
  for (int64_t j = 0; j < keep; ++j) total += weight(order[j].id);
  const double u = PhiloxUniform(p.key, p.index) * total;
  double acc = 0.0;
  int64_t last_kept = best;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!kept(i)) continue;
    acc += weight(i);
    last_kept = i;
    if (u < acc) return report(i, keep);
  }
  return report(last_kept, keep);  // u within rounding of the total
}

}  // namespace tq::cuda
