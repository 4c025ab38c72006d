// The int8-activation GEMV's CPU reference (runs in CI): fixed vectors for the codebook and the
// quantization, its edge cases, and its distance from the float32 TQ computation within the bound
// its roundings allow.
#include "kernels/cuda/tq_gemv_int8_reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/quant/codebook.h"
#include "kernels/quant/packing.h"

namespace tq::cuda {
namespace {

TEST(TqGemvInt8Reference, Tq3CodebookAsInt8) {
  const quant::Codebook& cb = quant::GetCodebook(3, 128);
  const TqInt8Codebook c = MakeTqInt8Codebook(cb.centroids.data());
  const int8_t want[8] = {-127, -79, -45, -14, 14, 45, 79, 127};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(c.c8[i], want[i]) << i;
  EXPECT_FLOAT_EQ(c.scale, cb.centroids[7] / 127.0f);
}

TEST(TqGemvInt8Reference, QuantizesEachGroupToItsLargestMagnitude) {
  std::vector<float> x(256);
  for (int t = 0; t < 128; ++t) x[t] = (t - 64) * 0.5f;  // amax 32 at t = 0
  for (int t = 128; t < 256; ++t) x[t] = 0.0f;          // an all-zero group
  std::vector<int8_t> q(256);
  std::vector<float> s(2);
  QuantizeRotatedInt8(x.data(), 256, q.data(), s.data());
  EXPECT_EQ(s[0], 32.0f / 127.0f);
  EXPECT_EQ(q[0], -127);
  EXPECT_EQ(q[1], -125);   // -31.5 · 127/32 = -125.02
  EXPECT_EQ(q[64], 0);
  EXPECT_EQ(q[127], 125);  // 31.5
  EXPECT_EQ(q[66], 4);     // 1.0 · 3.96875 = 3.97
  for (int t = 0; t < 128; ++t) EXPECT_LE(std::fabs(q[t] * s[0] - x[t]), s[0] / 2 * 1.0001f) << t;
  EXPECT_EQ(s[1], 0.0f);
  for (int t = 128; t < 256; ++t) EXPECT_EQ(q[t], 0);
}

TEST(TqGemvInt8Reference, NonFiniteGroupsGiveNanScales) {
  std::vector<float> x(384, 1.0f);
  x[5] = NAN;
  x[128 + 7] = INFINITY;
  std::vector<int8_t> q(384, 9);
  std::vector<float> s(3);
  QuantizeRotatedInt8(x.data(), 384, q.data(), s.data());
  EXPECT_TRUE(std::isnan(s[0]));
  EXPECT_TRUE(std::isnan(s[1]));
  EXPECT_EQ(s[2], 1.0f / 127.0f);
  for (int t = 0; t < 256; ++t) EXPECT_EQ(q[t], 0);
  EXPECT_EQ(q[300], 127);
  // A NaN scale reaches y.
  std::vector<uint8_t> packed(3 * 48, 0);
  std::vector<float> gains(3, 1.0f);
  const quant::Codebook& cb = quant::GetCodebook(3, 128);
  double y = 0;
  TqGemvInt8Reference(packed.data(), gains.data(), cb.centroids.data(), 1, 384, q.data(), s.data(), &y);
  EXPECT_TRUE(std::isnan(y));
}

TEST(TqGemvInt8Reference, FixedVector) {
  // Every code 7 (all bits set), x_q = 1, scales and gains 1: y = 128 · 127 · (max|c| / 127).
  const quant::Codebook& cb = quant::GetCodebook(3, 128);
  std::vector<uint8_t> packed(48, 0xff);
  std::vector<int8_t> q(128, 1);
  const float s = 1.0f, gain = 1.0f;
  double y = 0;
  TqGemvInt8Reference(packed.data(), &gain, cb.centroids.data(), 1, 128, q.data(), &s, &y);
  EXPECT_NEAR(y, 128.0 * 127.0 * (cb.centroids[7] / 127.0f), 1e-9);
  // Codes 0..7 repeated (bytes 88 c6 fa, ALGORITHMS.md §1.4), x_q = t % 8 + 1.
  for (int u = 0; u < 16; ++u) {
    packed[3 * u] = 0x88;
    packed[3 * u + 1] = 0xc6;
    packed[3 * u + 2] = 0xfa;
  }
  for (int t = 0; t < 128; ++t) q[t] = static_cast<int8_t>(t % 8 + 1);
  TqGemvInt8Reference(packed.data(), &gain, cb.centroids.data(), 1, 128, q.data(), &s, &y);
  const int8_t c8[8] = {-127, -79, -45, -14, 14, 45, 79, 127};
  int32_t dot = 0;
  for (int i = 0; i < 8; ++i) dot += c8[i] * (i + 1);
  EXPECT_NEAR(y, 16.0 * dot * (cb.centroids[7] / 127.0f), 1e-9);
}

// Against float32 TQ (y = Σ_g gain Σ_t c[idx] · x_rot) on random data with k not a multiple of
// 128: the difference stays within Σ_g gain Σ_t (|c|·|Δx| + |Δc|·|x_q·s|), and is ~1e-2 of |y|.
TEST(TqGemvInt8Reference, CloseToFloatTq) {
  const quant::Codebook& cb = quant::GetCodebook(3, 128);
  const TqInt8Codebook c8 = MakeTqInt8Codebook(cb.centroids.data());
  const int64_t n = 37, k = 1000, groups = 8, kp = groups * 128;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.5f, 2.0f);
  std::vector<uint8_t> idx(n * kp), packed(n * groups * 48);
  for (auto& i : idx) i = static_cast<uint8_t>(rng() % 8);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t t = k; t < kp; ++t) idx[j * kp + t] = 3;  // padding codes are real codes too
    quant::PackIndices(idx.data() + j * kp, kp, 3, packed.data() + j * groups * 48);
  }
  std::vector<float> gains(n * groups), x(kp, 0.0f);
  for (auto& g : gains) g = uni(rng);
  for (int64_t t = 0; t < k; ++t) x[t] = normal(rng) * (t % 97 == 0 ? 8.0f : 1.0f);
  std::vector<int8_t> q(kp);
  std::vector<float> s(groups);
  QuantizeRotatedInt8(x.data(), kp, q.data(), s.data());
  std::vector<double> y(n);
  TqGemvInt8Reference(packed.data(), gains.data(), cb.centroids.data(), n, k, q.data(), s.data(), y.data());
  double worst_rel = 0;
  for (int64_t j = 0; j < n; ++j) {
    double yf = 0, bound = 0;
    for (int64_t g = 0; g < groups; ++g) {
      for (int t = 0; t < 128; ++t) {
        const int64_t col = g * 128 + t;
        const int i = idx[j * kp + col];
        const double c = cb.centroids[i], cq = c8.c8[i] * static_cast<double>(c8.scale);
        const double xq = q[col] * static_cast<double>(s[g]);
        yf += gains[j * groups + g] * c * x[col];
        bound += gains[j * groups + g] * (std::fabs(c) * std::fabs(xq - x[col]) + std::fabs(cq - c) * std::fabs(xq));
      }
    }
    EXPECT_LE(std::fabs(y[j] - yf), bound * 1.001 + 1e-9) << j;
    double scale = 0;
    for (int64_t g = 0; g < groups; ++g) {
      double gs = 0;
      for (int t = 0; t < 128; ++t) gs += std::pow(cb.centroids[idx[j * kp + g * 128 + t]], 2);
      scale += gains[j * groups + g] * gains[j * groups + g] * gs;
    }
    double xn = 0;
    for (float v : x) xn += double{v} * v;
    worst_rel = std::max(worst_rel, std::fabs(y[j] - yf) / std::sqrt(scale * xn));
  }
  // Normalized by ‖ŵ_j‖·‖x‖ (as tq_linear.h's bounds): int8 roundings stay near 1e-3.
  EXPECT_LT(worst_rel, 5e-3);
}

}  // namespace
}  // namespace tq::cuda
