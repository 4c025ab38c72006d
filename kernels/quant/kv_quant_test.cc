// Tests of the KV-cache quantizers against ALGORITHMS.md §4–§5: distortion per bit width after
// the rotation (TurboQuant_mse on unit vectors, the plugin pipeline's NMSE on Gaussian vectors),
// inner-product shrinkage and variance, QJL unbiasedness, formats and fixed test vectors.
#include "kernels/quant/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/quant/rotation.h"

namespace tq::quant {
namespace {

// Samples per statistic: the relative standard error of the means below is ~0.2%.
constexpr int kSamples = 16384;
constexpr int kSeed = 20261128;

// Figures measured with torch 2.11 (ALGORITHMS.md §5), d = 128.
// Haar rotation, unit vectors, MSE-only (raw gain), b = 1..4.
constexpr double kSpecDmse[] = {0.3607, 0.1159, 0.03389, 0.009292};
constexpr double kSpecSlope[] = {0.636, 0.883, 0.968, 0.991};
constexpr double kSpecDVar[] = {0.361, 0.116, 0.0337, 0.0094};
// TurboQuant_prod (b−1 bits MSE + QJL), b = 2..4: d·Var of the inner-product error.
constexpr double kSpecProdDVar[] = {0.557, 0.181, 0.054};
// Plugin pipeline on N(0,1) rows of 128 (NMSE = Σ‖w−ŵ‖²/Σ‖w‖²), b = 2..4.
constexpr double kSpecNmseRaw[] = {0.11602, 0.033969, 0.0093202};
constexpr double kSpecNmseNc[] = {0.11883, 0.033809, 0.0091750};

// Tolerances (relative) of the statistical checks: a few standard errors of kSamples draws plus
// the spread between our generator's samples and the spec's.
constexpr double kRelTolDistortion = 0.02;
constexpr double kRelTolVariance = 0.06;
constexpr double kAbsTolSlope = 0.006;

std::vector<float> Gaussian(std::mt19937& rng, int n) {
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

std::vector<float> UnitVector(std::mt19937& rng, int n) {
  std::vector<float> v = Gaussian(rng, n);
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  const float inv = static_cast<float>(1.0 / std::sqrt(s));
  for (float& x : v) x *= inv;
  return v;
}

double Dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

struct IpStats {
  double dmse = 0;   // E‖x − x̂‖²
  double slope = 0;  // least-squares slope of ⟨y,x̂⟩ on ⟨y,x⟩
  double dvar = 0;   // d · Var(⟨y,x̂⟩ − ⟨y,x⟩)
};

// Encodes kSamples random unit vectors x and scores them against independent random unit y.
template <typename Encode, typename Decode>
IpStats MeasureUnit(int d, int64_t bytes, Encode enc, Decode dec) {
  std::mt19937 rng(kSeed);
  std::vector<uint8_t> code(bytes);
  std::vector<float> xh(d);
  double err = 0, sxy = 0, sxx = 0;
  std::vector<double> ip_err;
  ip_err.reserve(kSamples);
  for (int s = 0; s < kSamples; ++s) {
    const std::vector<float> x = UnitVector(rng, d), y = UnitVector(rng, d);
    enc(x.data(), code.data());
    dec(code.data(), xh.data());
    for (int i = 0; i < d; ++i) err += (x[i] - xh[i]) * static_cast<double>(x[i] - xh[i]);
    const double t = Dot(y.data(), x.data(), d), e = Dot(y.data(), xh.data(), d);
    sxy += t * e;
    sxx += t * t;
    ip_err.push_back(e - t);
  }
  IpStats st;
  st.dmse = err / kSamples;
  st.slope = sxy / sxx;
  double mean = 0;
  for (double v : ip_err) mean += v;
  mean /= kSamples;
  double var = 0;
  for (double v : ip_err) var += (v - mean) * (v - mean);
  st.dvar = d * var / (kSamples - 1);
  return st;
}

KvMseSpec PluginSpec(int d, int bits, KvGain gain) {
  KvMseSpec s;
  s.dim = d;
  s.bits = bits;
  s.signs = true;
  s.seed = kKvKeySeed;
  s.gain = gain;
  s.norm_type = KvScalar::kF32;
  return s;
}

TEST(KvHalfTest, MatchesCompilerConversionAndRoundTrips) {
  EXPECT_EQ(KvFloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(KvFloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(KvFloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(KvFloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(KvFloatToHalf(65520.0f), 0x7c00);
  EXPECT_EQ(KvFloatToHalf(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(KvFloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie to even
  EXPECT_EQ(KvFloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp -> 2
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = KvHalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(KvFloatToHalf(f), h) << std::hex << h;
  }
#ifdef __FLT16_MAX__
  std::mt19937 rng(kSeed);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(rng);
    // Spread exponents around the binary16 range.
    b = (b & 0x807fffffu) | ((100u + (b >> 23) % 50u) << 23);
    float f;
    std::memcpy(&f, &b, 4);
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    ASSERT_EQ(KvFloatToHalf(f), want) << f;
  }
#endif
}

TEST(KvFp8Test, E4m3CodesRoundTripAndRoundToNearestEven) {
  for (int b = 0; b < 256; ++b) {
    const float f = E4m3ToFloat(static_cast<uint8_t>(b));
    if ((b & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(f));
      continue;
    }
    EXPECT_EQ(FloatToE4m3(f), b) << b << " " << f;
  }
  EXPECT_EQ(E4m3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(E4m3ToFloat(0x38), 1.0f);
  EXPECT_EQ(E4m3ToFloat(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(FloatToE4m3(1000.0f), 0x7e);   // saturates
  EXPECT_EQ(FloatToE4m3(-1e30f), 0xfe);
  EXPECT_EQ(FloatToE4m3(1.0625f), 0x38);   // halfway 1 and 1.125: even mantissa
  EXPECT_EQ(FloatToE4m3(1.1875f), 0x3a);   // halfway 1.125 and 1.25: even (1.25)
  EXPECT_EQ(FloatToE4m3(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal
  EXPECT_EQ(FloatToE4m3(std::ldexp(3.0f, -10)), 0x02);
  EXPECT_EQ(FloatToE4m3(0.0f), 0x00);
}

TEST(KvRotationTest, SeedFortyTwoIsThePluginRotation) {
  std::mt19937 rng(kSeed);
  for (int d : {64, 128, 256}) {
    KvRotation rot(d, true, kKvKeySeed);
    const std::vector<float> x = Gaussian(rng, d);
    std::vector<float> a(d), b(d), back(d);
    rot.Forward(x.data(), a.data());
    RotateForwardReference(x.data(), b.data(), d, d);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), 4 * d)) << d;
    rot.Inverse(a.data(), back.data());
    RotateInverseReference(a.data(), b.data(), d, d);
    EXPECT_EQ(0, std::memcmp(back.data(), b.data(), 4 * d)) << d;
  }
}

TEST(KvRotationTest, AwkwardHeadDimsAreOrthonormalBlockRotations) {
  EXPECT_FALSE(KvRotationSupports(40));
  EXPECT_FALSE(KvRotationSupports(8));
  EXPECT_FALSE(KvRotationSupports(2048));
  EXPECT_EQ(KvRotationBlock(96), 32);
  EXPECT_EQ(KvRotationBlock(48), 16);
  EXPECT_EQ(KvRotationBlock(128), 128);
  std::mt19937 rng(kSeed);
  for (int d : {48, 64, 80, 96, 128, 192}) {
    for (bool signs : {false, true}) {
      KvRotation rot(d, signs, kKvValueSeed);
      const std::vector<float> x = Gaussian(rng, d);
      std::vector<float> y(d), back(d);
      rot.Forward(x.data(), y.data());
      EXPECT_NEAR(Dot(y.data(), y.data(), d), Dot(x.data(), x.data(), d), 1e-4 * d) << d;
      rot.Inverse(y.data(), back.data());
      for (int i = 0; i < d; ++i) ASSERT_NEAR(back[i], x[i], 1e-5) << d << " " << i;
      // The GPU layout of the signs: D1 then D2, or nothing.
      const std::vector<float> both = rot.signs12();
      ASSERT_EQ(both.size(), signs ? 2u * d : 0u);
      for (int i = 0; signs && i < d; ++i) {
        ASSERT_EQ(both[i], rot.signs1()[i]);
        ASSERT_EQ(both[d + i], rot.signs2()[i]);
      }
    }
  }
}

// ALGORITHMS.md §5 "Haar rotation, d = 128, unit vectors": a fixed orthonormal rotation of an
// isotropic vector is distributed as a Haar-rotated one, so the seed-42 Hadamard rotation must
// reproduce the Haar figures.
TEST(KvMseQuantizerTest, UnitVectorDistortionSlopeAndVarianceMatchTheSpec) {
  const int d = 128;
  for (int bits = 1; bits <= 4; ++bits) {
    KvMseQuantizer q(PluginSpec(d, bits, KvGain::kRaw));
    const IpStats st = MeasureUnit(
        d, q.bytes(), [&](const float* x, uint8_t* c) { q.Encode(x, c); },
        [&](const uint8_t* c, float* x) { q.Decode(c, x); });
    SCOPED_TRACE(bits);
    std::printf("mse b=%d: D_mse %.5f (spec %.5f), slope %.4f (%.3f), d*Var %.5f (%.4f)\n", bits, st.dmse,
                kSpecDmse[bits - 1], st.slope, kSpecSlope[bits - 1], st.dvar, kSpecDVar[bits - 1]);
    EXPECT_NEAR(st.dmse, kSpecDmse[bits - 1], kRelTolDistortion * kSpecDmse[bits - 1]);
    EXPECT_NEAR(st.slope, kSpecSlope[bits - 1], kAbsTolSlope);
    EXPECT_NEAR(st.dvar, kSpecDVar[bits - 1], kRelTolVariance * kSpecDVar[bits - 1]);
    // Paper bounds: 4^-b <= D_mse <= (√3·π/2)·4^-b.
    EXPECT_GE(st.dmse, std::pow(4.0, -bits));
    EXPECT_LE(st.dmse, std::sqrt(3.0) * M_PI / 2 * std::pow(4.0, -bits));
  }
}

TEST(KvMseQuantizerTest, GaussianNmseMatchesThePluginPipeline) {
  const int d = 128;
  for (int bits = 2; bits <= 4; ++bits) {
    for (KvGain gain : {KvGain::kRaw, KvGain::kNormCorrected, KvGain::kNormCorrectedAtDecode}) {
      KvMseQuantizer q(PluginSpec(d, bits, gain));
      std::mt19937 rng(kSeed + bits);
      std::vector<uint8_t> code(q.bytes());
      std::vector<float> xh(d);
      double num = 0, den = 0;
      for (int s = 0; s < kSamples; ++s) {
        const std::vector<float> x = Gaussian(rng, d);
        q.Encode(x.data(), code.data());
        q.Decode(code.data(), xh.data());
        for (int i = 0; i < d; ++i) {
          num += (x[i] - xh[i]) * static_cast<double>(x[i] - xh[i]);
          den += static_cast<double>(x[i]) * x[i];
        }
      }
      std::printf("nmse b=%d gain=%d: %.6f\n", bits, static_cast<int>(gain), num / den);
      const double want = gain == KvGain::kRaw ? kSpecNmseRaw[bits - 2] : kSpecNmseNc[bits - 2];
      EXPECT_NEAR(num / den, want, kRelTolDistortion * want) << bits << " " << static_cast<int>(gain);
    }
  }
}

// TurboQuant_prod: unbiased inner products (slope 1) at about 5× the variance of MSE-only.
TEST(KvProdQuantizerTest, QjlInnerProductsAreUnbiased) {
  const int d = 128;
  for (int bits = 2; bits <= 4; ++bits) {
    KvProdQuantizer q(PluginSpec(d, bits - 1, KvGain::kRaw), kKvQjlSeed);
    const IpStats st = MeasureUnit(
        d, q.bytes(), [&](const float* x, uint8_t* c) { q.Encode(x, c); },
        [&](const uint8_t* c, float* x) { q.Decode(c, x); });
    SCOPED_TRACE(bits);
    std::printf("prod b=%d: slope %.4f, d*Var %.5f (spec %.4f), D_mse %.5f\n", bits, st.slope, st.dvar,
                kSpecProdDVar[bits - 2], st.dmse);
    EXPECT_NEAR(st.slope, 1.0, 0.015);
    EXPECT_NEAR(st.dvar, kSpecProdDVar[bits - 2], 0.08 * kSpecProdDVar[bits - 2]);
    // The paper's bound D_prod <= √3·π²/d · 4^-b (for unit y).
    EXPECT_LE(st.dvar, std::sqrt(3.0) * M_PI * M_PI * std::pow(4.0, -bits));
  }
  // With the plugin's default norm correction on the MSE stage it stays unbiased.
  KvProdQuantizer nc(PluginSpec(d, 3, KvGain::kNormCorrected), kKvQjlSeed);
  const IpStats st = MeasureUnit(
      d, nc.bytes(), [&](const float* x, uint8_t* c) { nc.Encode(x, c); },
      [&](const uint8_t* c, float* x) { nc.Decode(c, x); });
  EXPECT_NEAR(st.slope, 1.0, 0.015);
}

TEST(KvProdQuantizerTest, ScoringSpaceGivesTheDecodedInnerProduct) {
  std::mt19937 rng(kSeed);
  for (int d : {64, 96, 128}) {
    KvProdQuantizer q(PluginSpec(d, 3, KvGain::kNormCorrected), kKvQjlSeed);
    EXPECT_EQ(q.bytes(), d * 3 / 8 + 4 + d / 8 + 4);
    std::vector<uint8_t> code(q.bytes());
    std::vector<float> xh(d), ks(2 * d), qs(2 * d);
    for (int s = 0; s < 50; ++s) {
      const std::vector<float> x = Gaussian(rng, d), y = Gaussian(rng, d);
      q.Encode(x.data(), code.data());
      q.Decode(code.data(), xh.data());
      q.DecodeScoring(code.data(), ks.data());
      q.PrepareQuery(y.data(), qs.data());
      const double want = Dot(y.data(), xh.data(), d);
      EXPECT_NEAR(Dot(qs.data(), ks.data(), 2 * d), want, 1e-4 * (1 + std::fabs(want))) << d;
    }
  }
}

TEST(KvMseQuantizerTest, FixedVectorE0) {
  // Rotating e0 gives ±1/√128 with signs "---+++++" first (ALGORITHMS.md §1.2): 3-bit indices
  // 2,2,2,5,5,5,5,5 (|y| = 0.0884 lies between the boundaries 0.0442 and 0.0928), packed as the
  // 24-bit word Σ idx_i << 3i = 0xB6DA92.
  const int d = 128;
  KvMseQuantizer q(PluginSpec(d, 3, KvGain::kNormCorrected));
  EXPECT_EQ(q.bytes(), 48 + 4);
  std::vector<float> x(d, 0.0f), xh(d);
  x[0] = 2.0f;
  std::vector<uint8_t> code(q.bytes());
  q.Encode(x.data(), code.data());
  EXPECT_EQ(code[0], 0x92);
  EXPECT_EQ(code[1], 0xDA);
  EXPECT_EQ(code[2], 0xB6);
  // Every |c[idx]| is the 3-bit centroid 0.06682201, so the corrected gain is 2/(0.06682201·√128)
  // and the reconstruction is exactly x (all coordinates of R e0 have the same magnitude).
  float g;
  std::memcpy(&g, code.data() + 48, 4);
  EXPECT_NEAR(g, 2.0 / (0.06682201 * std::sqrt(128.0)), 1e-5);
  q.Decode(code.data(), xh.data());
  for (int i = 0; i < d; ++i) EXPECT_NEAR(xh[i], x[i], 1e-5) << i;
}

TEST(KvMseQuantizerTest, TiesAndZeroVectors) {
  KvMseSpec s = PluginSpec(64, 3, KvGain::kNormCorrected);
  KvMseQuantizer lower(s);
  s.ties_up = true;
  KvMseQuantizer upper(s);
  const float b = lower.codebook().boundaries[4];
  EXPECT_EQ(lower.Bucket(b), 4);
  EXPECT_EQ(upper.Bucket(b), 5);
  EXPECT_EQ(lower.Bucket(std::nextafter(b, 1.0f)), 5);
  for (KvGain gain : {KvGain::kRaw, KvGain::kNormCorrected, KvGain::kNormCorrectedAtDecode}) {
    for (KvScalar t : {KvScalar::kF32, KvScalar::kF16}) {
      KvMseSpec z = PluginSpec(64, 4, gain);
      z.norm_type = t;
      KvMseQuantizer q(z);
      std::vector<float> x(64, 0.0f), xh(64, 1.0f);
      std::vector<uint8_t> code(q.bytes());
      q.Encode(x.data(), code.data());
      q.Decode(code.data(), xh.data());
      for (float v : xh) EXPECT_EQ(v, 0.0f);
    }
  }
}

TEST(KvUniformQuantizerTest, FixedVectorAndErrorBound) {
  KvUniformQuantizer q(16, 4);
  EXPECT_EQ(q.bytes(), 8 + 4);
  std::vector<float> v(16), vh(16);
  for (int i = 0; i < 16; ++i) v[i] = static_cast<float>(i) - 3.0f;
  std::vector<uint8_t> code(q.bytes());
  q.Encode(v.data(), code.data());
  const uint8_t want[] = {0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,
                          0x00, 0x3c,   // scale 1.0 (fp16, little endian)
                          0x00, 0xc2};  // zero -3.0
  for (int i = 0; i < 12; ++i) EXPECT_EQ(code[i], want[i]) << i;
  q.Decode(code.data(), vh.data());
  for (int i = 0; i < 16; ++i) EXPECT_EQ(vh[i], v[i]);

  std::mt19937 rng(kSeed);
  for (int bits : {2, 3, 4, 8}) {
    KvUniformQuantizer u(128, bits);
    EXPECT_EQ(u.bytes(), 128 * bits / 8 + 4);
    std::vector<uint8_t> c(u.bytes());
    std::vector<float> out(128);
    for (int s = 0; s < 100; ++s) {
      const std::vector<float> x = Gaussian(rng, 128);
      u.Encode(x.data(), c.data());
      u.Decode(c.data(), out.data());
      const float lo = *std::min_element(x.begin(), x.end()), hi = *std::max_element(x.begin(), x.end());
      const float step = (hi - lo) / ((1 << bits) - 1);
      // Half a step, plus the fp16 rounding of scale and zero.
      const float tol = 0.5f * step + (hi - lo + std::fabs(lo)) * 1e-3f;
      for (int i = 0; i < 128; ++i) ASSERT_LE(std::fabs(out[i] - x[i]), tol) << bits;
    }
  }
  // A constant vector is exact (scale 0).
  std::vector<float> cst(16, 0.75f);
  q.Encode(cst.data(), code.data());
  q.Decode(code.data(), vh.data());
  for (float x : vh) EXPECT_EQ(x, 0.75f);
}

TEST(KvQjlTest, SignsArePackedLsbFirst) {
  KvQjl qjl(16, kKvQjlSeed);
  EXPECT_EQ(qjl.sign_bytes(), 2);
  EXPECT_FLOAT_EQ(qjl.scale(), std::sqrt(M_PI / 2) / 16);
  std::mt19937 rng(kSeed);
  const std::vector<float> r = Gaussian(rng, 16);
  std::vector<float> sr(16), expanded(16);
  qjl.Project(r.data(), sr.data());
  uint8_t packed[2];
  qjl.Signs(r.data(), packed);
  for (int k = 0; k < 16; ++k) EXPECT_EQ((packed[k / 8] >> (k % 8)) & 1, sr[k] >= 0 ? 1 : 0) << k;
  qjl.ExpandSigns(packed, 2.0f, expanded.data());
  for (int k = 0; k < 16; ++k) EXPECT_FLOAT_EQ(expanded[k], (sr[k] >= 0 ? 2 : -2) * qjl.scale());
}

}  // namespace
}  // namespace tq::quant
