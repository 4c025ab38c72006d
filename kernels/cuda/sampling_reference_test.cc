// The device sampler's CPU reference (runs in CI): Philox4x32-10 against Random123's published
// known answers, the reference's edge cases, and its draws against the distribution its
// definition gives (kernels/cuda/sampling.h), computed here independently.
#include "kernels/cuda/sampling_reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/philox.h"

namespace tq::cuda {
namespace {

TEST(PhiloxTest, KnownAnswers) {
  struct Kat {
    Philox4 ctr;
    uint32_t k0, k1;
    Philox4 want;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
       0xffffffffu,
       0xffffffffu,
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
       0xa4093822u,
       0x299f31d0u,
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const Kat& k : kats) {
    const Philox4 got = Philox4x32(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], k.want.v[i]) << "word " << i;
  }
}

TEST(PhiloxTest, UniformIsInRangeAndUnbiased) {
  double sum = 0.0, lo = 1.0, hi = 0.0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = PhiloxUniform(0x1234567890abcdefull, static_cast<uint64_t>(i));
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);  // sd of the mean 6.5e-4
  EXPECT_LT(lo, 1e-4);
  EXPECT_GT(hi, 1 - 1e-4);
  // Different keys and indices give different streams.
  EXPECT_NE(PhiloxUniform(1, 0), PhiloxUniform(2, 0));
  EXPECT_NE(PhiloxUniform(1, 0), PhiloxUniform(1, 1));
  EXPECT_NE(PhiloxUniform(1, 0), PhiloxUniform(1, uint64_t{1} << 32));
}

SampleRowParams Params(float t, int k = 0, float top_p = 1.0f, float min_p = 0.0f) {
  SampleRowParams p;
  p.temperature = t;
  p.top_k = k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.key = 42;
  return p;
}

TEST(SamplingReferenceTest, GreedyAndEdgeCases) {
  const std::vector<float> l = {0.5f, 3.0f, -1.0f, 3.0f, NAN};
  SampleRowResult r = SampleRowReference(l.data(), 5, Params(0.0f), nullptr);
  EXPECT_EQ(r.token, 1);
  EXPECT_EQ(r.kept, 1);
  const double z = std::exp(0.5 - 3.0) + 2.0 + std::exp(-4.0);
  EXPECT_NEAR(r.logprob, -std::log(z), 1e-6);
  // Masked ids are never chosen; the log-probability is over the masked row.
  const std::vector<int32_t> masked = {1, 3};
  SampleRowParams p = Params(0.0f);
  p.masked_end = 2;
  r = SampleRowReference(l.data(), 5, p, masked.data());
  EXPECT_EQ(r.token, 0);
  EXPECT_NEAR(r.logprob, -std::log(1.0 + std::exp(-1.5)), 1e-6);
  // Nothing drawable: token 0, −inf.
  const std::vector<float> none = {-INFINITY, NAN, -INFINITY};
  for (float t : {0.0f, 1.0f}) {
    r = SampleRowReference(none.data(), 3, Params(t), nullptr);
    EXPECT_EQ(r.token, 0);
    EXPECT_EQ(r.logprob, -INFINITY);
    EXPECT_EQ(r.kept, 0);
  }
  // +inf counts as the largest float: drawn, with a finite log-probability.
  const std::vector<float> big = {1.0f, INFINITY, 2.0f};
  r = SampleRowReference(big.data(), 3, Params(1.0f), nullptr);
  EXPECT_EQ(r.token, 1);
  EXPECT_NEAR(r.logprob, 0.0f, 1e-6);
}

// The kept prefix of each filter, ties ordered by id.
TEST(SamplingReferenceTest, FiltersCutTheSamplingOrder) {
  std::vector<float> l(100, 1.0f);  // all tied: order = ids
  l[50] = 2.0f;                     // first in order
  SampleRowResult r = SampleRowReference(l.data(), 100, Params(1.0f, 3), nullptr);
  EXPECT_EQ(r.kept, 3);  // 50, 0, 1
  for (uint64_t i = 0; i < 200; ++i) {
    SampleRowParams p = Params(1.0f, 3);
    p.index = i;
    const int32_t tok = SampleRowReference(l.data(), 100, p, nullptr).token;
    EXPECT_TRUE(tok == 50 || tok == 0 || tok == 1) << tok;
  }
  // Top-p: token 50 has e / (e + 99) ≈ 2.7% of the mass; each other 0.98%: 0.5 takes 50 + 51 ties.
  const double e = std::exp(1.0), zz = e + 99.0;
  const int want = 1 + static_cast<int>(std::ceil((0.5 * zz - e) / 1.0));
  r = SampleRowReference(l.data(), 100, Params(1.0f, 0, 0.5f), nullptr);
  EXPECT_EQ(r.kept, want);
  // Min-p 0.5 keeps c − m ≥ log 0.5: only token 50 (the others are 1 nat below).
  r = SampleRowReference(l.data(), 100, Params(1.0f, 0, 1.0f, 0.5f), nullptr);
  EXPECT_EQ(r.kept, 1);
  EXPECT_EQ(r.token, 50);
  // Min-p 0.3 keeps all (e^-1 = 0.37 ≥ 0.3); top-k 10 and min-p together: 10.
  EXPECT_EQ(SampleRowReference(l.data(), 100, Params(1.0f, 0, 1.0f, 0.3f), nullptr).kept, 100);
  EXPECT_EQ(SampleRowReference(l.data(), 100, Params(1.0f, 10, 1.0f, 0.3f), nullptr).kept, 10);
}

// The empirical distribution of the reference's draws (over draw indices) against the exact
// distribution of the definition, for each filter, by total variation distance.
TEST(SamplingReferenceTest, DrawsFollowTheKeptDistribution) {
  const int vocab = 300;
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> l(vocab);
  for (float& v : l) v = nd(gen);
  struct Case {
    float t;
    int k;
    float top_p, min_p;
  };
  const Case cases[] = {{1.0f, 0, 1.0f, 0.0f}, {0.7f, 20, 1.0f, 0.0f}, {0.9f, 0, 0.8f, 0.0f},
                        {1.2f, 0, 1.0f, 0.1f}, {1.0f, 40, 0.9f, 0.02f}};
  for (const Case& cs : cases) {
    // Exact: sort, cut, normalize.
    std::vector<int> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::vector<double> c(vocab);
    for (int i = 0; i < vocab; ++i) c[i] = l[i] / cs.t;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return c[a] > c[b] || (c[a] == c[b] && a < b); });
    const double m = c[order[0]];
    int keep = cs.k > 0 ? cs.k : vocab;
    double mass = 0.0;
    for (int j = 0; j < keep; ++j) mass += std::exp(c[order[j]] - m);
    if (cs.top_p < 1.0f) {
      double acc = 0.0;
      for (int j = 0; j < keep; ++j) {
        acc += std::exp(c[order[j]] - m);
        if (acc >= cs.top_p * mass) {
          keep = j + 1;
          break;
        }
      }
    }
    if (cs.min_p > 0.0f) {
      int n = 1;
      while (n < keep && c[order[n]] - m >= std::log(static_cast<double>(cs.min_p))) ++n;
      keep = n;
    }
    std::vector<double> q(vocab, 0.0);
    double total = 0.0;
    for (int j = 0; j < keep; ++j) total += (q[order[j]] = std::exp(c[order[j]] - m));
    for (double& v : q) v /= total;

    const int draws = 40000;
    std::vector<double> f(vocab, 0.0);
    SampleRowParams p = Params(cs.t, cs.k, cs.top_p, cs.min_p);
    for (int d = 0; d < draws; ++d) {
      p.index = static_cast<uint64_t>(d);
      const SampleRowResult r = SampleRowReference(l.data(), vocab, p, nullptr);
      ASSERT_EQ(r.kept, keep);
      ASSERT_GT(q[r.token], 0.0) << "token " << r.token << " outside the kept set";
      f[r.token] += 1.0 / draws;
    }
    double tv = 0.0;
    for (int i = 0; i < vocab; ++i) tv += 0.5 * std::fabs(f[i] - q[i]);
    // Expected TV ≈ 0.4 · Σ sqrt(q (1 − q) / draws) ≤ 0.4 · sqrt(keep / draws) (≤ 0.035 here).
    EXPECT_LT(tv, 0.5 * std::sqrt(static_cast<double>(keep) / draws) + 0.005)
        << "t " << cs.t << " k " << cs.k << " top_p " << cs.top_p << " min_p " << cs.min_p << " kept " << keep;
  }
}

}  // namespace
}  // namespace tq::cuda
