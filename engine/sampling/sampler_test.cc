#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/sampling_reference.h"

namespace tq {
namespace {

SamplingParams Params(float t, int k = 0, float p = 1.0f, float min_p = 0.0f, uint64_t seed = 1) {
  SamplingParams s;
  s.temperature = t;
  s.top_k = k;
  s.top_p = p;
  s.min_p = min_p;
  s.seed = seed;
  return s;
}

TEST(SamplerTest, GreedyTakesTheFirstMaximum) {
  std::vector<float> l = {0.5f, 3.0f, -1.0f, 3.0f};
  Sampler s(Params(0.0f));
  float lp = 0;
  EXPECT_EQ(s.Sample(l.data(), 4, &lp), 1);
  const double z = std::exp(0.5) + 2 * std::exp(3.0) + std::exp(-1.0);
  EXPECT_NEAR(lp, 3.0 - std::log(z), 1e-6);
  EXPECT_EQ(ArgMax(l.data(), 4), 1);
}

// A vocabulary-sized row (Qwen3's 151,936): the greedy token and its log-probability, and a
// temperature's, against double arithmetic.
TEST(SamplerTest, LogProbOfALargeVocabulary) {
  const int64_t vocab = 151936;
  std::vector<float> l(vocab);
  for (int64_t i = 0; i < vocab; ++i) l[i] = 6.0f * std::sin(0.37f * static_cast<float>(i)) - 1e-5f * i;
  l[12345] = 9.5f;
  for (float t : {0.0f, 0.8f}) {
    Sampler s(Params(t, 0, 1.0f, 0.0f, 7));
    float lp = 0;
    const int32_t tok = s.Sample(l.data(), vocab, &lp);
    if (t == 0.0f) {
      EXPECT_EQ(tok, 12345);
    }
    const double tt = t == 0.0f ? 1.0 : t;
    double m = -INFINITY, z = 0.0;
    for (float v : l) m = std::max(m, v / tt);
    for (float v : l) z += std::exp(v / tt - m);
    EXPECT_NEAR(lp, l[tok] / tt - (std::log(z) + m), 2e-5) << "temperature " << t;
  }
}

// The sampler before the band search (kept here as the reference): every candidate sorted by
// logit, probabilities over all of them, then top-k / top-p / min-p and one draw.
int32_t ReferenceSample(const SamplingParams& params, std::mt19937_64& rng, const std::vector<float>& logits) {
  const float t = params.temperature;
  std::vector<std::pair<float, int32_t>> cand(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) cand[i] = {logits[i] / t, static_cast<int32_t>(i)};
  std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  int64_t keep = params.top_k > 0 ? std::min<int64_t>(params.top_k, cand.size()) : cand.size();
  std::vector<double> p(keep);
  double sum = 0.0;
  for (int64_t i = 0; i < keep; ++i) sum += p[i] = std::exp(static_cast<double>(cand[i].first) - cand[0].first);
  for (double& v : p) v /= sum;
  if (params.top_p < 1.0f) {
    double cum = 0.0;
    int64_t n = 0;
    while (n < keep) {
      cum += p[n++];
      if (cum >= params.top_p) break;
    }
    keep = std::max<int64_t>(n, 1);
  }
  if (params.min_p > 0.0f) {
    int64_t n = 1;
    while (n < keep && p[n] >= params.min_p * p[0]) ++n;
    keep = n;
  }
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) total += p[i];
  std::uniform_real_distribution<double> u(0.0, total);
  const double r = u(rng);
  double cum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (r < cum) return cand[i].second;
  }
  return cand[keep - 1].second;
}

// The band search draws the tokens the full sort draws, seed for seed: plain temperature (flat
// and peaked rows), top-p, min-p, both, top-k, on a small and a Qwen3-sized vocabulary.
TEST(SamplerTest, BandSearchDrawsWhatAFullSortDraws) {
  for (int64_t vocab : {1000, 151936}) {
    std::mt19937 gen(static_cast<uint32_t>(vocab));
    for (float spread : {0.5f, 3.0f}) {
      std::normal_distribution<float> nd(0.0f, spread);
      std::vector<float> l(vocab);
      for (float& v : l) v = nd(gen);
      const SamplingParams cases[] = {Params(1.0f), Params(0.7f, 0, 0.9f), Params(1.3f, 0, 1.0f, 0.05f),
                                      Params(0.8f, 0, 0.95f, 0.02f), Params(0.9f, 40)};
      for (const SamplingParams& c : cases) {
        SamplingParams seeded = c;
        seeded.seed = 99;
        Sampler s(seeded);
        std::mt19937_64 ref_rng(99);
        const int draws = vocab > 10000 ? 12 : 200;
        for (int i = 0; i < draws; ++i) {
          ASSERT_EQ(s.Sample(l.data(), vocab), ReferenceSample(seeded, ref_rng, l))
              << "vocab " << vocab << " spread " << spread << " t " << c.temperature << " top_k " << c.top_k
              << " top_p " << c.top_p << " min_p " << c.min_p << " draw " << i;
        }
      }
    }
  }
}

// Masked (−inf) and NaN logits are never drawn, with top-k, top-p, min-p or none, on a flat row
// (the band search falls through to the whole vocabulary) and a peaked one; a row of NaNs gives
// token 0.
TEST(SamplerTest, MaskedAndNanLogitsAreNeverDrawn) {
  for (float spread : {0.01f, 5.0f}) {
    std::vector<float> l(3000);
    for (size_t i = 0; i < l.size(); ++i) l[i] = spread * std::sin(0.1f * static_cast<float>(i));
    for (size_t i = 0; i < l.size(); i += 3) l[i] = -INFINITY;
    for (size_t i = 1; i < l.size(); i += 7) l[i] = std::nanf("");
    const SamplingParams cases[] = {Params(1.0f), Params(0.9f, 0, 0.95f), Params(1.2f, 0, 1.0f, 0.1f),
                                    Params(0.8f, 40)};
    for (const SamplingParams& c : cases) {
      Sampler s(c);
      for (int d = 0; d < 50; ++d) {
        const int32_t tok = s.Sample(l.data(), static_cast<int64_t>(l.size()));
        ASSERT_TRUE(std::isfinite(l[tok])) << "token " << tok << " spread " << spread;
      }
    }
  }
  std::vector<float> nans(100, std::nanf(""));
  Sampler s(Params(1.0f));
  EXPECT_EQ(s.Sample(nans.data(), 100), 0);
  // A NaN first logit is skipped too (greedy and sampled).
  std::vector<float> lead(300, 0.5f);
  lead[0] = std::nanf("");
  lead[200] = 4.0f;
  EXPECT_EQ(Sampler(Params(0.0f)).Sample(lead.data(), 300), 200);
  for (int d = 0; d < 20; ++d) EXPECT_NE(s.Sample(lead.data(), 300), 0);
}

TEST(SamplerTest, SameSeedSameTokens) {
  std::vector<float> l(50);
  for (int i = 0; i < 50; ++i) l[i] = std::sin(i * 1.7f);
  Sampler a(Params(1.0f, 0, 1.0f, 0.0f, 42)), b(Params(1.0f, 0, 1.0f, 0.0f, 42)), c(Params(1.0f, 0, 1.0f, 0.0f, 43));
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 64; ++i) {
    ta.push_back(a.Sample(l.data(), 50));
    tb.push_back(b.Sample(l.data(), 50));
    tc.push_back(c.Sample(l.data(), 50));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(SamplerTest, FiltersRestrictTheCandidates) {
  std::vector<float> l = {1.0f, 4.0f, 3.9f, 0.0f, 3.0f};
  for (int i = 0; i < 200; ++i) {
    Sampler k1(Params(1.0f, 1, 1.0f, 0.0f, i));
    EXPECT_EQ(k1.Sample(l.data(), 5), 1);
    Sampler k2(Params(1.0f, 2, 1.0f, 0.0f, i));
    const int32_t t = k2.Sample(l.data(), 5);
    EXPECT_TRUE(t == 1 || t == 2);
    Sampler p(Params(1.0f, 0, 0.01f, 0.0f, i));
    EXPECT_EQ(p.Sample(l.data(), 5), 1);
    Sampler m(Params(1.0f, 0, 1.0f, 0.5f, i));  // keeps p >= 0.5 * p_max: ids 1, 2 (and not 4: e^-1 < .5)
    const int32_t u = m.Sample(l.data(), 5);
    EXPECT_TRUE(u == 1 || u == 2) << u;
  }
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  std::vector<float> l = {0.0f, 1.0f, 2.0f};
  Sampler s(Params(1.0f, 0, 1.0f, 0.0f, 9));
  std::map<int32_t, int> count;
  const int n = 30000;
  for (int i = 0; i < n; ++i) ++count[s.Sample(l.data(), 3)];
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(count[i] / double(n), std::exp(double(i)) / z, 0.015) << i;
  // Temperature 0.5 sharpens.
  Sampler t(Params(0.5f, 0, 1.0f, 0.0f, 10));
  int top = 0;
  for (int i = 0; i < n; ++i) top += t.Sample(l.data(), 3) == 2;
  const double z2 = 1 + std::exp(2.0) + std::exp(4.0);
  EXPECT_NEAR(top / double(n), std::exp(4.0) / z2, 0.015);
}

TEST(SamplerTest, ValidationNamesTheField) {
  EXPECT_TRUE(ValidateSamplingParams(Params(0.7f, 5, 0.9f, 0.1f)).ok());
  EXPECT_NE(ValidateSamplingParams(Params(-1.0f)).message().find("temperature"), std::string::npos);
  EXPECT_NE(ValidateSamplingParams(Params(NAN)).message().find("temperature"), std::string::npos);
  EXPECT_NE(ValidateSamplingParams(Params(1.0f, -2)).message().find("top_k"), std::string::npos);
  EXPECT_NE(ValidateSamplingParams(Params(1.0f, 0, 0.0f)).message().find("top_p"), std::string::npos);
  EXPECT_NE(ValidateSamplingParams(Params(1.0f, 0, 1.5f)).message().find("top_p"), std::string::npos);
  EXPECT_NE(ValidateSamplingParams(Params(1.0f, 0, 1.0f, 2.0f)).message().find("min_p"), std::string::npos);
}

}  // namespace
}  // namespace tq

namespace tq {
namespace {

// The device sampler's definition (kernels/cuda/sampling.h, its CPU reference) draws from the
// host sampler's distribution: same filters, same order, other generator. Empirical
// distributions of both (host: over seeds; device definition: over draw indices) against each
// other, by total variation distance, and every host draw inside the definition's kept set.
TEST(SamplerTest, DeviceSamplerDefinitionDrawsTheSameDistribution) {
  const int vocab = 400;
  std::mt19937 gen(11);
  std::normal_distribution<float> nd(0.0f, 2.5f);
  std::vector<float> l(vocab);
  for (float& v : l) v = nd(gen);
  struct Case {
    float t;
    int k;
    float top_p, min_p;
  };
  const Case cases[] = {{1.0f, 0, 1.0f, 0.0f}, {0.7f, 30, 1.0f, 0.0f}, {0.9f, 0, 0.85f, 0.0f}, {1.1f, 0, 1.0f, 0.05f},
                        {1.0f, 25, 0.9f, 0.01f}};
  for (const Case& cs : cases) {
    const int draws = 20000;
    std::vector<double> host(vocab, 0.0), dev(vocab, 0.0);
    cuda::SampleRowParams p;
    p.temperature = cs.t;
    p.top_k = cs.k;
    p.top_p = cs.top_p;
    p.min_p = cs.min_p;
    p.key = 99;
    int kept = 0;
    for (int d = 0; d < draws; ++d) {
      p.index = static_cast<uint64_t>(d);
      const cuda::SampleRowResult r = cuda::SampleRowReference(l.data(), vocab, p, nullptr);
      kept = r.kept;
      dev[r.token] += 1.0 / draws;
      Sampler s(Params(cs.t, cs.k, cs.top_p, cs.min_p, static_cast<uint64_t>(d) + 1));
      host[s.Sample(l.data(), vocab)] += 1.0 / draws;
    }
    double tv = 0.0;
    for (int i = 0; i < vocab; ++i) {
      tv += 0.5 * std::fabs(host[i] - dev[i]);
      if (host[i] > 0.0) EXPECT_GT(dev[i] + 1e-12, 0.0) << "token " << i << " drawn by the host only";
    }
    EXPECT_LT(tv, 0.7 * std::sqrt(static_cast<double>(kept) / draws) + 0.01)
        << "t " << cs.t << " k " << cs.k << " top_p " << cs.top_p << " min_p " << cs.min_p << " kept " << kept;
  }
}

}  // namespace
}  // namespace tq
