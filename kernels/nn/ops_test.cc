#include "kernels/nn/ops.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tq::nn {
namespace {

constexpr float kRelTol = 2e-6f;

std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(OpsTest, DotAndAxpyMatchDoubleOnAwkwardSizes) {
  for (int64_t n : {1, 7, 8, 15, 16, 17, 63, 100, 1023}) {
    auto a = Random(n, 1), b = Random(n, 2);
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref += static_cast<double>(a[i]) * b[i];
      mag += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(Dot(a.data(), b.data(), n), ref, 4e-7 * mag + 1e-7) << "n=" << n;
    std::vector<float> y = b;
    Axpy(0.5f, a.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(y[i], b[i] + 0.5 * a[i], 1e-6) << n << " " << i;
  }
}

// The sampler's vocabulary reductions: the first maximum (ties, NaNs, the vector body and the
// tail) and Σ exp((x − shift)·scale) against double std::exp on awkward sizes (the 256-value
// blocks of the vector path and the scalar tail), with −inf (masked tokens) and NaN entries.
TEST(OpsTest, ArgMaxFirstAndSumExpShifted) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  for (int64_t n : {1, 7, 63, 64, 255, 256, 257, 1000, 4099, 151936}) {
    std::vector<float> x(n);
    for (float& v : x) v = nd(rng);
    // A tie for the maximum: the first one wins.
    int64_t want = 0;
    for (int64_t i = 1; i < n; ++i) want = x[i] > x[want] ? i : want;
    if (n > 10) {
      x[n - 3] = x[want];
      x[n / 2] = x[want];
      want = std::min<int64_t>(want, n / 2);
    }
    EXPECT_EQ(ArgMaxFirst(x.data(), n), want) << "n " << n;
    if (n > 10) {
      x[1] = std::nanf("");
      x[2] = -INFINITY;
    }
    const float mx = x[ArgMaxFirst(x.data(), n)];
    for (float scale : {1.0f, 1.0f / 0.7f, 0.25f}) {
      double ref = 0.0;
      for (float v : x) {
        if (!std::isnan(v)) ref += std::exp((static_cast<double>(v) - mx) * scale);
      }
      const double got = SumExpShifted(x.data(), n, mx, scale);
      EXPECT_NEAR(got, ref, 2e-6 * ref) << "n " << n << " scale " << scale;
      // A band: only exponents >= −3 count.
      double band = 0.0;
      for (float v : x) {
        const double e = (static_cast<double>(v) - mx) * scale;
        if (!std::isnan(v) && static_cast<float>((v - mx) * scale) >= -3.0f) band += std::exp(e);
      }
      EXPECT_NEAR(SumExpShifted(x.data(), n, mx, scale, -3.0f), band, 2e-6 * band + 1e-12) << "band, n " << n;
    }
  }
  // Every exponent far below the fp32 range: each term counts ~1.6e-38, the sum stays finite.
  std::vector<float> tiny(300, -1e4f);
  tiny[0] = 0.0f;
  EXPECT_NEAR(SumExpShifted(tiny.data(), 300, 0.0f, 1.0f), 1.0, 1e-6);
  // Every value NaN: index 0; leading NaNs are skipped (short rows and the vector path).
  std::vector<float> nans(100, std::nanf(""));
  EXPECT_EQ(ArgMaxFirst(nans.data(), 100), 0);
  for (int64_t n : {10, 100}) {
    std::vector<float> lead(n, 1.0f);
    lead[0] = lead[1] = std::nanf("");
    lead[n - 2] = 2.0f;
    EXPECT_EQ(ArgMaxFirst(lead.data(), n), n - 2) << "n " << n;
  }
  EXPECT_EQ(ArgMaxFirst(nans.data(), 0), 0);
  EXPECT_EQ(SumExpShifted(nans.data(), 0, 0.0f, 1.0f), 0.0);
}

TEST(OpsTest, RmsNormMatchesDefinition) {
  for (int64_t n : {1, 5, 64, 257}) {
    auto x = Random(n, 3, 3.0f), w = Random(n, 4);
    std::vector<float> y(n);
    RmsNorm(x.data(), w.data(), n, 1e-6f, y.data());
    double ms = 0;
    for (float v : x) ms += static_cast<double>(v) * v;
    const double r = 1.0 / std::sqrt(ms / n + 1e-6);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(y[i], w[i] * x[i] * r, 1e-5 * std::fabs(w[i] * x[i] * r) + 1e-6);
    // In place, no weight.
    std::vector<float> z = x;
    RmsNorm(z.data(), nullptr, n, 1e-6f, z.data());
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(z[i], x[i] * r, 1e-5 * std::fabs(x[i] * r) + 1e-6);
  }
}

TEST(OpsTest, RopeRotatesPairsAndKeepsNorm) {
  const int d = 8, heads = 3;
  auto x = Random(d * heads, 5);
  std::vector<float> cos(d / 2), sin(d / 2);
  for (int i = 0; i < d / 2; ++i) {
    cos[i] = std::cos(0.3f * (i + 1));
    sin[i] = std::sin(0.3f * (i + 1));
  }
  std::vector<float> y = x;
  ApplyRope(y.data(), d, heads, cos.data(), sin.data());
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < d / 2; ++i) {
      const float a = x[h * d + i], b = x[h * d + i + d / 2];
      EXPECT_FLOAT_EQ(y[h * d + i], a * cos[i] - b * sin[i]);
      EXPECT_FLOAT_EQ(y[h * d + i + d / 2], b * cos[i] + a * sin[i]);
      EXPECT_NEAR(std::hypot(y[h * d + i], y[h * d + i + d / 2]), std::hypot(a, b), 1e-5);
    }
  }
}

TEST(OpsTest, SoftmaxAndLogSumExp) {
  std::vector<float> x = {1.0f, 2.0f, 3.0f, -1e30f};
  const float lse = LogSumExp(x.data(), 4);
  EXPECT_NEAR(lse, std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-6);
  std::vector<float> s = x;
  EXPECT_NEAR(SoftmaxInPlace(s.data(), 4), lse, 1e-6);
  EXPECT_NEAR(s[0] + s[1] + s[2] + s[3], 1.0f, 1e-6);
  EXPECT_EQ(s[3], 0.0f);
  std::vector<float> masked = {-INFINITY, -INFINITY};
  SoftmaxInPlace(masked.data(), 2);
  EXPECT_EQ(masked[0], 0.0f);
}

TEST(OpsTest, AttendOneMatchesNaive) {
  for (int64_t len : {1, 2, 17, 130}) {
    for (int d : {4, 64, 96}) {
      auto q = Random(d, 6), k = Random(len * (d + 3), 7), v = Random(len * (d + 5), 8);
      std::vector<float> scores(len), out(d);
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      AttendOne(q.data(), k.data(), d + 3, v.data(), d + 5, len, d, scale, scores.data(), out.data());
      std::vector<double> w(len);
      double m = -1e300, z = 0;
      for (int64_t j = 0; j < len; ++j) {
        double s = 0;
        for (int i = 0; i < d; ++i) s += static_cast<double>(q[i]) * k[j * (d + 3) + i];
        w[j] = s * scale;
        m = std::max(m, w[j]);
      }
      for (double& x : w) z += (x = std::exp(x - m));
      for (int i = 0; i < d; ++i) {
        double ref = 0;
        for (int64_t j = 0; j < len; ++j) ref += w[j] / z * v[j * (d + 5) + i];
        EXPECT_NEAR(out[i], ref, 1e-5) << "len=" << len << " d=" << d << " i=" << i;
      }
    }
  }
}

TEST(OpsTest, SiluMul) {
  std::vector<float> g = {-3.0f, 0.0f, 2.5f}, u = {2.0f, 5.0f, -1.0f}, y(3);
  SiluMul(g.data(), u.data(), 3, y.data());
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(y[i], g[i] / (1 + std::exp(-g[i])) * u[i], 1e-6);
  (void)kRelTol;
}

}  // namespace
}  // namespace tq::nn
