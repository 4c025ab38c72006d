// Parity tests of the CPU linear kernels (kernels/cpu/linear.h):
//   - TqRotateInput against quant::RotateForwardReference, group by group;
//   - TqLinear(TqRotateInput(x)) against a float64 matmul of x with the weights that
//     quant::TqQuantizer::DequantizeRows reconstructs, on real quantized Gaussian weights, over
//     awkward shapes, bits 2/3/4, G 64/128/256 and full or block-diagonal (G/4) rotation;
//   - the float64 references, the AVX2 and the portable builds against the same oracle, and
//     against each other;
//   - output slices [n_begin, n_end) write exactly their columns (guard values all around y);
//   - DenseLinear for F32 / BF16 / F16 against a float64 matmul;
//   - batch invariance: an output row is bitwise the same whatever m is, whatever position the
//     row has in the batch and whatever the other rows hold (TqRotateInput + TqLinear, and
//     DenseLinear), on every build.
// Errors are normalized per output by ||w_j||·||x_i|| (the Cauchy–Schwarz bound on |y_ij|), so
// the tolerances do not depend on scale or on cancellation inside a dot product. The AVX2 build is
// skipped, with a printed reason, on CPUs without AVX2 + FMA + F16C.
#include "kernels/cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/linear_isa.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/rotation.h"
#include "kernels/quant/tq_quantize.h"

namespace tq::cpu {
namespace {

// Max |rotated - reference| / ||x_g|| of TqRotateInput vs RotateForwardReference: both are
// float32 (log2 B butterfly stages; we multiply by 1/sqrt(B) where the reference divides).
constexpr double kMaxRotationErr = 1e-6;
// Max |y - y_ref| / (||ŵ_j|| ||x_i||) of the TQ kernels vs float64 x · DequantizeRows(...)ᵀ.
// Sources of difference: float32 rotation of x vs float32 inverse rotation of the weights inside
// DequantizeRows, and float32 accumulation over up to k = 2176 terms. Observed <= 1.8e-7 over
// the sweep (AVX2, Zen 3); a single wrong code would cost ~1e-3.
constexpr double kMaxTqErr = 2e-6;
// The same bound for the float64 TqLinearReference (only the rotations differ; observed 7e-8).
constexpr double kMaxTqReferenceErr = 1e-6;
// Max normalized difference between the AVX2 and the portable builds (different float32
// summation orders; observed <= 1.6e-7).
constexpr double kMaxIsaDisagreement = 2e-6;
// Max |y - y_ref| / (||w_j|| ||x_i||) of DenseLinear vs float64 (float32 accumulation only;
// observed <= 7e-8).
constexpr double kMaxDenseErr = 1e-6;

// A sentinel no kernel computes: any write to a guarded slot changes it.
constexpr float kGuard = -12345.678f;

constexpr int64_t kMs[] = {1, 2, 3, 5, 8, 17};
constexpr int64_t kNs[] = {1, 7, 33, 130};
constexpr int64_t kKs[] = {64, 100, 128, 130, 300, 1000};

// One build of the kernels: the public (dispatching) entry points or one instruction set.
struct Isa {
  std::string name;
  decltype(&TqRotateInput) rotate;
  decltype(&TqLinear) tq_linear;
  decltype(&DenseLinear) dense_linear;
};

std::vector<Isa> Isas() {
  std::vector<Isa> isas = {
      {"dispatch", TqRotateInput, TqLinear, DenseLinear},
      {"portable", portable::TqRotateInput, portable::TqLinear, portable::DenseLinear},
  };
  if (CpuHasAvx2Fma()) {
    isas.push_back({"avx2", avx2::TqRotateInput, avx2::TqLinear, avx2::DenseLinear});
  } else {
    static bool said = false;
    if (!said) {
      std::printf("SKIP avx2 kernels: this CPU lacks AVX2, FMA or F16C\n");
      said = true;
    }
  }
  return isas;
}

std::vector<float> Gaussian(int64_t count, float stddev, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<float> v(count);
  for (float& f : v) f = nd(gen);
  return v;
}

double Norm(const float* v, int64_t count) {
  double s = 0.0;
  for (int64_t i = 0; i < count; ++i) s += static_cast<double>(v[i]) * v[i];
  return std::sqrt(s);
}

// y_ref[i, j] = Σ_t w[j, t] · x[i, t] in float64; norms for the error normalization.
struct Oracle {
  std::vector<double> y;  // [m, n]
  std::vector<double> w_norm, x_norm;
};

Oracle MatmulF64(const float* w, int64_t n, int64_t k, const float* x, int64_t m, int64_t ldx) {
  Oracle o;
  o.y.resize(m * n);
  for (int64_t j = 0; j < n; ++j) o.w_norm.push_back(Norm(w + j * k, k));
  for (int64_t i = 0; i < m; ++i) o.x_norm.push_back(Norm(x + i * ldx, k));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t t = 0; t < k; ++t) s += static_cast<double>(w[j * k + t]) * x[i * ldx + t];
      o.y[i * n + j] = s;
    }
  }
  return o;
}

// An output buffer [m + 1, ldy = n + 3] full of guards; the kernels may write rows < m, columns
// [n_begin, n_end) only.
struct GuardedY {
  int64_t m, n, ldy;
  std::vector<float> v;
  GuardedY(int64_t rows, int64_t cols)
      : m(rows), n(cols), ldy(cols + 3), v((rows + 1) * ldy, kGuard) {}
  float* data() { return v.data(); }
  float at(int64_t i, int64_t j) const { return v[i * ldy + j]; }

  // Fails unless exactly the slots of rows < m, columns [b, e) changed.
  void ExpectOnlyWrote(int64_t b, int64_t e) const {
    for (int64_t i = 0; i <= m; ++i) {
      for (int64_t j = 0; j < ldy; ++j) {
        const bool inside = i < m && j >= b && j < e;
        if (inside) {
          ASSERT_NE(at(i, j), kGuard) << "not written: y[" << i << ", " << j << "]";
        } else {
          ASSERT_EQ(at(i, j), kGuard) << "stray write: y[" << i << ", " << j << "] slice [" << b
                                      << ", " << e << ")";
        }
      }
    }
  }
};

// Max normalized error of y (rows < m, all n columns) against the oracle; fails on NaN/Inf.
double MaxNormalizedError(const GuardedY& y, const Oracle& o) {
  double worst = 0.0;
  for (int64_t i = 0; i < y.m; ++i) {
    for (int64_t j = 0; j < y.n; ++j) {
      const float v = y.at(i, j);
      EXPECT_TRUE(std::isfinite(v)) << "y[" << i << ", " << j << "] = " << v;
      if (!std::isfinite(v)) return INFINITY;
      const double scale = std::max(o.w_norm[j] * o.x_norm[i], 1e-30);
      worst = std::max(worst, std::abs(v - o.y[i * y.n + j]) / scale);
    }
  }
  return worst;
}

double MaxNormalizedDiff(const GuardedY& a, const GuardedY& b, const Oracle& o) {
  double worst = 0.0;
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t j = 0; j < a.n; ++j) {
      const double scale = std::max(o.w_norm[j] * o.x_norm[i], 1e-30);
      worst = std::max(worst, std::abs(static_cast<double>(a.at(i, j)) - b.at(i, j)) / scale);
    }
  }
  return worst;
}

// ---------------------------------------------------------------------------------------------
// TqRotateInput

TEST(TqRotateInputTest, MatchesRotateForwardReferencePerGroup) {
  double overall = 0.0;
  for (const Isa& isa : Isas()) {
    for (int G : {16, 64, 128, 256, 1024}) {
      for (int B : {2, 4, 8, 16, 0}) {
        if (B > G) continue;
        for (int64_t k : {int64_t{G}, 3 * int64_t{G} - 5, int64_t{7}}) {
          SCOPED_TRACE(isa.name + " G=" + std::to_string(G) + " B=" + std::to_string(B) +
                       " k=" + std::to_string(k));
          const int64_t m = 3, ldx = k + 2, kp = TqPaddedK(k, G);
          const std::vector<float> x = Gaussian(m * ldx, 1.0f, 7);
          std::vector<float> x_rot(m * kp, kGuard);
          isa.rotate(x.data(), m, k, ldx, G, B, x_rot.data());
          std::vector<float> group(G), want(G);
          double worst = 0.0;
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t g0 = 0; g0 < kp; g0 += G) {
              for (int t = 0; t < G; ++t) group[t] = g0 + t < k ? x[i * ldx + g0 + t] : 0.0f;
              quant::RotateForwardReference(group.data(), want.data(), G, B == 0 ? G : B);
              const double scale = std::max(Norm(group.data(), G), 1e-30);
              for (int t = 0; t < G; ++t) {
                worst = std::max(worst, std::abs(x_rot[i * kp + g0 + t] - want[t]) / scale);
              }
            }
          }
          EXPECT_LE(worst, kMaxRotationErr);
          overall = std::max(overall, worst);
        }
      }
    }
  }
  std::printf("TqRotateInput: max error / ||x_g|| %.3g\n", overall);
}

// ---------------------------------------------------------------------------------------------
// TqLinear

struct TqCase {
  int bits;
  int group_size;
  bool block_diagonal;  // rotation_block = G/4 instead of full
};

void PrintTo(const TqCase& c, std::ostream* os) {
  *os << "TQ" << c.bits << " G=" << c.group_size << (c.block_diagonal ? " B=G/4" : " B=G");
}

std::string TqCaseName(const testing::TestParamInfo<TqCase>& info) {
  return "Tq" + std::to_string(info.param.bits) + "G" + std::to_string(info.param.group_size) +
         (info.param.block_diagonal ? "BlockQuarter" : "Full");
}

// Real quantized weights: Gaussian rows through TqQuantizer, plus their dequantization.
struct QuantizedWeights {
  quant::TqSpec spec;
  int64_t n, k;
  std::vector<uint8_t> packed;
  std::vector<float> gains;
  std::vector<float> dequantized;  // [n, k]

  TqLinearParams Params() const {
    return {.packed = packed.data(),
            .gains = gains.data(),
            .codebook = quant::GetCodebook(spec.bits, spec.group_size).centroids.data(),
            .n = n,
            .k = k,
            .bits = spec.bits,
            .group_size = spec.group_size,
            .rotation_block = spec.rotation_block};
  }
};

QuantizedWeights Quantize(const quant::TqSpec& spec, int64_t n, int64_t k, uint32_t seed) {
  auto q = quant::TqQuantizer::Create(spec);
  EXPECT_TRUE(q.ok()) << q.status();
  QuantizedWeights w{spec, n, k};
  const std::vector<float> src = Gaussian(n * k, 0.02f, seed);
  w.packed.resize(q->PackedSize(n, k));
  w.gains.resize(q->GainsSize(n, k));
  w.dequantized.resize(n * k);
  q->QuantizeRows(src.data(), n, k, w.packed.data(), w.gains.data());
  q->DequantizeRows(w.packed.data(), w.gains.data(), n, k, w.dequantized.data());
  return w;
}

class TqLinearParityTest : public testing::TestWithParam<TqCase> {
 protected:
  quant::TqSpec Spec() const {
    const TqCase& c = GetParam();
    return {.bits = c.bits,
            .group_size = c.group_size,
            .rotation_block = c.block_diagonal ? c.group_size / 4 : 0,
            .gain = quant::GainMode::kLeastSquares};
  }
};

TEST_P(TqLinearParityTest, MatchesDequantizedMatmulOnEveryBuild) {
  const quant::TqSpec spec = Spec();
  const std::vector<Isa> isas = Isas();
  double worst_tq = 0.0, worst_ref = 0.0, worst_isa = 0.0;
  uint32_t seed = 1;
  for (int64_t n : kNs) {
    for (int64_t k : kKs) {
      const QuantizedWeights w = Quantize(spec, n, k, seed++);
      const TqLinearParams p = w.Params();
      ASSERT_TRUE(ValidateTqLinearParams(p).ok()) << ValidateTqLinearParams(p);
      const int64_t kp = TqPaddedK(k, spec.group_size);
      for (int64_t m : kMs) {
        SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) +
                     " k=" + std::to_string(k) + " seed=" + std::to_string(seed));
        const int64_t ldx = k + 5;
        const std::vector<float> x = Gaussian(m * ldx, 1.0f, 1000 + seed);
        const Oracle oracle = MatmulF64(w.dequantized.data(), n, k, x.data(), m, ldx);

        std::vector<GuardedY> results;
        for (const Isa& isa : isas) {
          SCOPED_TRACE(isa.name);
          std::vector<float> x_rot(m * kp);
          isa.rotate(x.data(), m, k, ldx, spec.group_size, spec.rotation_block, x_rot.data());
          GuardedY y(m, n);
          isa.tq_linear(p, x_rot.data(), m, y.data(), y.ldy, 0, n);
          y.ExpectOnlyWrote(0, n);
          const double err = MaxNormalizedError(y, oracle);
          EXPECT_LE(err, kMaxTqErr);
          worst_tq = std::max(worst_tq, err);
          if (isa.name == "portable") {  // the float64 reference, on the same rotated input
            GuardedY ref(m, n);
            TqLinearReference(p, x_rot.data(), m, ref.data(), ref.ldy, 0, n);
            const double ref_err = MaxNormalizedError(ref, oracle);
            EXPECT_LE(ref_err, kMaxTqReferenceErr);
            worst_ref = std::max(worst_ref, ref_err);
          }
          results.push_back(std::move(y));
        }
        for (size_t a = 1; a < results.size(); ++a) {
          const double diff = MaxNormalizedDiff(results[a], results[0], oracle);
          EXPECT_LE(diff, kMaxIsaDisagreement) << isas[a].name << " vs " << isas[0].name;
          worst_isa = std::max(worst_isa, diff);
        }
      }
    }
  }
  std::printf(
      "%s: max normalized error kernels %.3g, float64 reference %.3g, between builds %.3g\n",
      spec.DebugString().c_str(), worst_tq, worst_ref, worst_isa);
}

INSTANTIATE_TEST_SUITE_P(AllFormats, TqLinearParityTest,
                         testing::Values(TqCase{2, 64, false}, TqCase{2, 128, false},
                                         TqCase{2, 256, false}, TqCase{2, 128, true},
                                         TqCase{3, 64, false}, TqCase{3, 128, false},
                                         TqCase{3, 256, false}, TqCase{3, 64, true},
                                         TqCase{3, 128, true}, TqCase{3, 256, true},
                                         TqCase{4, 64, false}, TqCase{4, 128, false},
                                         TqCase{4, 256, false}, TqCase{4, 128, true},
                                         TqCase{2, 64, true}, TqCase{2, 256, true},
                                         TqCase{4, 64, true}, TqCase{4, 256, true}),
                         TqCaseName);

// Slices write exactly their columns, and a column's value does not depend on the slicing (the
// engine's thread count must not change results).
TEST(TqLinearSliceTest, SlicesWriteOnlyTheirColumnsAndMatchTheFullProduct) {
  const QuantizedWeights w = Quantize({.bits = 3, .group_size = 128}, 37, 300, 11);
  const TqLinearParams p = w.Params();
  const int64_t kp = TqPaddedK(p.k, p.group_size);
  for (const Isa& isa : Isas()) {
    for (int64_t m : {1, 5}) {
      SCOPED_TRACE(isa.name + " m=" + std::to_string(m));
      const std::vector<float> x = Gaussian(m * p.k, 1.0f, 3);
      std::vector<float> x_rot(m * kp);
      isa.rotate(x.data(), m, p.k, p.k, p.group_size, p.rotation_block, x_rot.data());
      GuardedY full(m, p.n);
      isa.tq_linear(p, x_rot.data(), m, full.data(), full.ldy, 0, p.n);
      for (auto [b, e] : std::vector<std::pair<int64_t, int64_t>>{
               {0, 1}, {36, 37}, {3, 20}, {5, 9}, {1, 36}, {0, 37}}) {
        GuardedY y(m, p.n);
        isa.tq_linear(p, x_rot.data(), m, y.data(), y.ldy, b, e);
        y.ExpectOnlyWrote(b, e);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = b; j < e; ++j) ASSERT_EQ(y.at(i, j), full.at(i, j)) << i << ", " << j;
      }
      GuardedY empty(m, p.n);
      isa.tq_linear(p, x_rot.data(), m, empty.data(), empty.ldy, 4, 4);
      empty.ExpectOnlyWrote(0, 0);
    }
  }
}

// Shapes that cross the m > 1 path's blocks: 70 activation rows of Kp = 2176 columns (28 rows
// fit a 256 KiB panel: blocks of 28, 28, 14) and three 1024-column tiles, the last partial.
TEST(TqLinearBlockingTest, CrossesRowAndColumnBlocks) {
  const QuantizedWeights w = Quantize({.bits = 4, .group_size = 128}, 10, 2100, 5);
  const TqLinearParams p = w.Params();
  const int64_t m = 70, kp = TqPaddedK(p.k, p.group_size);
  const std::vector<float> x = Gaussian(m * p.k, 1.0f, 9);
  const Oracle oracle = MatmulF64(w.dequantized.data(), p.n, p.k, x.data(), m, p.k);
  for (const Isa& isa : Isas()) {
    SCOPED_TRACE(isa.name);
    std::vector<float> x_rot(m * kp);
    isa.rotate(x.data(), m, p.k, p.k, p.group_size, 0, x_rot.data());
    GuardedY y(m, p.n);
    isa.tq_linear(p, x_rot.data(), m, y.data(), y.ldy, 0, p.n);
    y.ExpectOnlyWrote(0, p.n);
    EXPECT_LE(MaxNormalizedError(y, oracle), kMaxTqErr);
  }
}

TEST(TqLinearTest, ValidateRejectsBadParams) {
  const QuantizedWeights w = Quantize({.bits = 3, .group_size = 64}, 2, 64, 1);
  TqLinearParams p = w.Params();
  EXPECT_TRUE(ValidateTqLinearParams(p).ok());
  TqLinearParams bad = p;
  bad.bits = 5;
  EXPECT_FALSE(ValidateTqLinearParams(bad).ok());
  bad = p;
  bad.group_size = 96;
  EXPECT_FALSE(ValidateTqLinearParams(bad).ok());
  bad = p;
  bad.rotation_block = 128;
  EXPECT_FALSE(ValidateTqLinearParams(bad).ok());
  bad = p;
  bad.gains = nullptr;
  EXPECT_FALSE(ValidateTqLinearParams(bad).ok());
}

// ---------------------------------------------------------------------------------------------
// DenseLinear

const char* TypeName(WeightType t) {
  switch (t) {
    case WeightType::kF32:
      return "F32";
    case WeightType::kBF16:
      return "BF16";
    case WeightType::kF16:
      return "F16";
  }
  return "?";
}

// Weights in `type` and their exact float32 values.
struct DenseWeights {
  std::vector<float> f32;       // the values, as float32
  std::vector<uint16_t> half;   // BF16 or F16 encoding
  WeightType type;
  const void* data() const {
    return type == WeightType::kF32 ? static_cast<const void*>(f32.data()) : half.data();
  }
};

DenseWeights MakeDense(WeightType type, int64_t n, int64_t k, uint32_t seed) {
  DenseWeights w{Gaussian(n * k, 0.05f, seed), {}, type};
  if (type != WeightType::kF32) {
    w.half.resize(w.f32.size());
    for (size_t i = 0; i < w.f32.size(); ++i) {
      if (type == WeightType::kBF16) {
        w.half[i] = FloatToBf16(w.f32[i]);
        w.f32[i] = Bf16ToFloat(w.half[i]);
      } else {
        w.half[i] = FloatToHalf(w.f32[i]);
        w.f32[i] = HalfToFloat(w.half[i]);
      }
    }
  }
  return w;
}

class DenseLinearParityTest : public testing::TestWithParam<WeightType> {};

TEST_P(DenseLinearParityTest, MatchesFloat64MatmulOnEveryBuild) {
  const WeightType type = GetParam();
  const std::vector<Isa> isas = Isas();
  double worst = 0.0, worst_isa = 0.0;
  uint32_t seed = 100;
  for (int64_t n : kNs) {
    for (int64_t k : kKs) {
      const DenseWeights w = MakeDense(type, n, k, seed++);
      for (int64_t m : kMs) {
        SCOPED_TRACE(std::string(TypeName(type)) + " m=" + std::to_string(m) +
                     " n=" + std::to_string(n) + " k=" + std::to_string(k));
        const int64_t ldx = k + 3;
        const std::vector<float> x = Gaussian(m * ldx, 1.0f, seed + 500);
        const Oracle oracle = MatmulF64(w.f32.data(), n, k, x.data(), m, ldx);
        GuardedY ref(m, n);
        DenseLinearReference(type, w.data(), n, k, x.data(), m, ldx, ref.data(), ref.ldy, 0, n);
        ref.ExpectOnlyWrote(0, n);
        EXPECT_LE(MaxNormalizedError(ref, oracle), kMaxDenseErr) << "float64 reference";
        std::vector<GuardedY> results;
        for (const Isa& isa : isas) {
          SCOPED_TRACE(isa.name);
          GuardedY y(m, n);
          isa.dense_linear(type, w.data(), n, k, x.data(), m, ldx, y.data(), y.ldy, 0, n);
          y.ExpectOnlyWrote(0, n);
          const double err = MaxNormalizedError(y, oracle);
          EXPECT_LE(err, kMaxDenseErr);
          worst = std::max(worst, err);
          results.push_back(std::move(y));
        }
        for (size_t a = 1; a < results.size(); ++a) {
          const double diff = MaxNormalizedDiff(results[a], results[0], oracle);
          EXPECT_LE(diff, kMaxIsaDisagreement) << isas[a].name;
          worst_isa = std::max(worst_isa, diff);
        }
      }
    }
  }
  std::printf("%s: max normalized error %.3g, between builds %.3g\n", TypeName(type), worst,
              worst_isa);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DenseLinearParityTest,
                         testing::Values(WeightType::kF32, WeightType::kBF16, WeightType::kF16),
                         [](const testing::TestParamInfo<WeightType>& info) {
                           return std::string(TypeName(info.param));
                         });

TEST(DenseLinearSliceTest, SlicesWriteOnlyTheirColumnsAndMatchTheFullProduct) {
  for (WeightType type : {WeightType::kF32, WeightType::kBF16, WeightType::kF16}) {
    const int64_t n = 23, k = 77;
    const DenseWeights w = MakeDense(type, n, k, 4);
    for (const Isa& isa : Isas()) {
      for (int64_t m : {1, 6}) {
        SCOPED_TRACE(isa.name + " " + TypeName(type) + " m=" + std::to_string(m));
        const std::vector<float> x = Gaussian(m * k, 1.0f, 8);
        GuardedY full(m, n);
        isa.dense_linear(type, w.data(), n, k, x.data(), m, k, full.data(), full.ldy, 0, n);
        for (auto [b, e] :
             std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {22, 23}, {2, 19}, {7, 11}}) {
          GuardedY y(m, n);
          isa.dense_linear(type, w.data(), n, k, x.data(), m, k, y.data(), y.ldy, b, e);
          y.ExpectOnlyWrote(b, e);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = b; j < e; ++j) ASSERT_EQ(y.at(i, j), full.at(i, j)) << i << ", " << j;
        }
      }
    }
  }
}

TEST(DenseLinearBlockingTest, CrossesRowAndColumnBlocks) {
  // 70 rows of 2100 columns: panels of 28, 28 and 14 rows; tiles of 1024, 1024 and 52 columns.
  // 9 rows of 70001 columns: 8 rows overflow the 256 KiB panel (it grows; blocks of 8 and 1).
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{70, 10, 2100},
                                                                           {9, 5, 70001}}) {
    for (WeightType type : {WeightType::kF32, WeightType::kBF16, WeightType::kF16}) {
      const DenseWeights w = MakeDense(type, n, k, 6);
      const std::vector<float> x = Gaussian(m * k, 1.0f, 10);
      const Oracle oracle = MatmulF64(w.f32.data(), n, k, x.data(), m, k);
      for (const Isa& isa : Isas()) {
        SCOPED_TRACE(isa.name + " " + TypeName(type) + " m=" + std::to_string(m) +
                     " k=" + std::to_string(k));
        GuardedY y(m, n);
        isa.dense_linear(type, w.data(), n, k, x.data(), m, k, y.data(), y.ldy, 0, n);
        y.ExpectOnlyWrote(0, n);
        EXPECT_LE(MaxNormalizedError(y, oracle), kMaxDenseErr);
      }
    }
  }
}

TEST(LinearEdgeTest, EmptyInputDimensionWritesZeros) {
  const std::vector<float> x(8, 1.0f);
  const std::vector<float> w(4, 1.0f);
  const float gains[2] = {1.0f, 1.0f};
  const TqLinearParams p{.packed = reinterpret_cast<const uint8_t*>(w.data()),
                         .gains = gains,
                         .codebook = quant::GetCodebook(3, 64).centroids.data(),
                         .n = 2,
                         .k = 0,
                         .bits = 3,
                         .group_size = 64};
  for (const Isa& isa : Isas()) {
    for (int64_t m : {1, 3}) {
      SCOPED_TRACE(isa.name + " m=" + std::to_string(m));
      GuardedY dense(m, 2), tq(m, 2);
      isa.dense_linear(WeightType::kF32, w.data(), 2, 0, x.data(), m, 0, dense.data(), dense.ldy,
                       0, 2);
      isa.tq_linear(p, x.data(), m, tq.data(), tq.ldy, 0, 2);
      dense.ExpectOnlyWrote(0, 2);
      tq.ExpectOnlyWrote(0, 2);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < 2; ++j) {
          EXPECT_EQ(dense.at(i, j), 0.0f);
          EXPECT_EQ(tq.at(i, j), 0.0f);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Batch invariance (linear.h): y[i, :] must not depend on m, on i's position in the batch or on
// the other rows, bit for bit, within one build. The engine batches the tokens of many sequences
// into one call, so anything else makes a greedy sequence's tokens depend on its neighbours.

constexpr int64_t kInvarianceMs[] = {1, 2, 3, 5, 8, 17, 70};
constexpr int64_t kInvarianceNs[] = {1, 7, 33, 130};
constexpr int64_t kInvarianceKs[] = {64, 100, 300, 1000, 2100};

// Computes y[i*ldy + j] for i < m, n_begin <= j < n_end from m activation rows x (stride ldx).
using BatchFn = std::function<void(const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
                                   int64_t n_begin, int64_t n_end)>;

// memcmp of two output rows; the first differing element, in hex floats, on failure.
testing::AssertionResult SameBits(const float* want, const float* got, int64_t n,
                                  const std::string& what) {
  if (std::memcmp(want, got, n * sizeof(float)) == 0) return testing::AssertionSuccess();
  int64_t j = 0;
  while (std::memcmp(want + j, got + j, sizeof(float)) == 0) ++j;
  std::ostringstream os;
  os << std::hexfloat << what << ": first difference at column " << j << " of " << n << ": "
     << want[j] << " in the full batch vs " << got[j];
  return testing::AssertionFailure() << os.str();
}

// Runs `run` on the m rows of x together, on each row alone (m = 1), and on a second batch that
// holds the same rows in reverse order interleaved with other rows (large, zero, NaN); every row
// must come out bitwise equal in all three. The single rows and the second batch are computed
// in two column slices.
void ExpectBatchInvariant(const BatchFn& run, const std::vector<float>& x, int64_t m, int64_t ldx,
                          int64_t n, uint32_t seed) {
  const int64_t split = n / 3;
  std::vector<float> y(m * n);
  run(x.data(), m, ldx, y.data(), n, 0, n);

  std::vector<float> y1(n);
  for (int64_t i = 0; i < m; ++i) {
    std::fill(y1.begin(), y1.end(), kGuard);
    run(x.data() + i * ldx, 1, ldx, y1.data(), n, 0, split);
    run(x.data() + i * ldx, 1, ldx, y1.data(), n, split, n);
    ASSERT_TRUE(SameBits(y.data() + i * n, y1.data(), n,
                         "row " + std::to_string(i) + " of " + std::to_string(m) + " alone"));
  }

  // The second batch: a filler, then the rows from last to first with a filler after every
  // third. source[q] = the row of x at position q, or -1 for a filler.
  std::vector<int64_t> source = {-1};
  for (int64_t i = m - 1; i >= 0; --i) {
    source.push_back(i);
    if (i % 3 == 0) source.push_back(-1);
  }
  const int64_t m2 = static_cast<int64_t>(source.size());
  const std::vector<float> noise = Gaussian(m2 * ldx, 1000.0f, seed);
  std::vector<float> x2(m2 * ldx);
  int fillers = 0;
  for (int64_t q = 0; q < m2; ++q) {
    float* row = x2.data() + q * ldx;
    if (source[q] >= 0) {
      std::memcpy(row, x.data() + source[q] * ldx, ldx * sizeof(float));
    } else if (fillers++ % 3 == 1) {
      std::fill(row, row + ldx, 0.0f);
    } else {
      std::memcpy(row, noise.data() + q * ldx, ldx * sizeof(float));
      if (fillers % 3 == 0) row[0] = std::numeric_limits<float>::quiet_NaN();
    }
  }
  std::vector<float> y2(m2 * n, kGuard);
  run(x2.data(), m2, ldx, y2.data(), n, split, n);
  run(x2.data(), m2, ldx, y2.data(), n, 0, split);
  for (int64_t q = 0; q < m2; ++q) {
    if (source[q] < 0) continue;
    ASSERT_TRUE(SameBits(y.data() + source[q] * n, y2.data() + q * n, n,
                         "row " + std::to_string(source[q]) + " of " + std::to_string(m) +
                             " at position " + std::to_string(q) + " of " +
                             std::to_string(m2)));
  }
}

class TqBatchInvarianceTest : public TqLinearParityTest {};

TEST_P(TqBatchInvarianceTest, RowsDoNotDependOnTheBatch) {
  const quant::TqSpec spec = Spec();
  uint32_t seed = 3000;
  for (int64_t n : kInvarianceNs) {
    for (int64_t k : kInvarianceKs) {
      const QuantizedWeights w = Quantize(spec, n, k, seed++);
      const TqLinearParams p = w.Params();
      const int64_t kp = TqPaddedK(k, spec.group_size), ldx = k + 3;
      for (const Isa& isa : Isas()) {
        // The engine's pipeline: rotate the batch's activations, then the linear layer.
        const BatchFn run = [&](const float* x, int64_t m, int64_t ldx_, float* y, int64_t ldy,
                                int64_t b, int64_t e) {
          std::vector<float> x_rot(m * kp);
          isa.rotate(x, m, k, ldx_, spec.group_size, spec.rotation_block, x_rot.data());
          isa.tq_linear(p, x_rot.data(), m, y, ldy, b, e);
        };
        for (int64_t m : kInvarianceMs) {
          SCOPED_TRACE(isa.name + " m=" + std::to_string(m) + " n=" + std::to_string(n) +
                       " k=" + std::to_string(k));
          const std::vector<float> x = Gaussian(m * ldx, 1.0f, seed + 7 * m);
          ExpectBatchInvariant(run, x, m, ldx, n, seed + 11 * m);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, TqBatchInvarianceTest,
                         testing::Values(TqCase{2, 64, false}, TqCase{2, 128, false},
                                         TqCase{2, 256, false}, TqCase{2, 64, true},
                                         TqCase{2, 128, true}, TqCase{2, 256, true},
                                         TqCase{3, 64, false}, TqCase{3, 128, false},
                                         TqCase{3, 256, false}, TqCase{3, 64, true},
                                         TqCase{3, 128, true}, TqCase{3, 256, true},
                                         TqCase{4, 64, false}, TqCase{4, 128, false},
                                         TqCase{4, 256, false}, TqCase{4, 64, true},
                                         TqCase{4, 128, true}, TqCase{4, 256, true}),
                         TqCaseName);

// TqRotateInput alone: each rotated row depends only on its own input row.
TEST(TqRotateInputTest, RowsDoNotDependOnTheBatch) {
  for (const Isa& isa : Isas()) {
    for (int G : {16, 64, 128, 256}) {
      for (int B : {2, 4, 8, 0}) {
        SCOPED_TRACE(isa.name + " G=" + std::to_string(G) + " B=" + std::to_string(B));
        const int64_t m = 9, k = 3 * G - 5, ldx = k + 1, kp = TqPaddedK(k, G);
        const std::vector<float> x = Gaussian(m * ldx, 1.0f, 21);
        std::vector<float> all(m * kp), one(kp), pair(2 * kp);
        isa.rotate(x.data(), m, k, ldx, G, B, all.data());
        for (int64_t i = 0; i < m; ++i) {
          isa.rotate(x.data() + i * ldx, 1, k, ldx, G, B, one.data());
          ASSERT_EQ(std::memcmp(one.data(), all.data() + i * kp, kp * sizeof(float)), 0) << i;
          // Second of a pair whose first row is another one.
          const int64_t other = (i + 4) % m;
          std::vector<float> two(2 * ldx);
          std::memcpy(two.data(), x.data() + other * ldx, ldx * sizeof(float));
          std::memcpy(two.data() + ldx, x.data() + i * ldx, ldx * sizeof(float));
          isa.rotate(two.data(), 2, k, ldx, G, B, pair.data());
          ASSERT_EQ(std::memcmp(pair.data() + kp, all.data() + i * kp, kp * sizeof(float)), 0)
              << i;
        }
      }
    }
  }
}

class DenseBatchInvarianceTest : public testing::TestWithParam<WeightType> {};

TEST_P(DenseBatchInvarianceTest, RowsDoNotDependOnTheBatch) {
  const WeightType type = GetParam();
  uint32_t seed = 4000;
  for (int64_t n : kInvarianceNs) {
    for (int64_t k : kInvarianceKs) {
      const DenseWeights w = MakeDense(type, n, k, seed++);
      const int64_t ldx = k + 5;
      for (const Isa& isa : Isas()) {
        const BatchFn run = [&](const float* x, int64_t m, int64_t ldx_, float* y, int64_t ldy,
                                int64_t b, int64_t e) {
          isa.dense_linear(type, w.data(), n, k, x, m, ldx_, y, ldy, b, e);
        };
        for (int64_t m : kInvarianceMs) {
          SCOPED_TRACE(isa.name + " " + TypeName(type) + " m=" + std::to_string(m) +
                       " n=" + std::to_string(n) + " k=" + std::to_string(k));
          const std::vector<float> x = Gaussian(m * ldx, 1.0f, seed + 7 * m);
          ExpectBatchInvariant(run, x, m, ldx, n, seed + 11 * m);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DenseBatchInvarianceTest,
                         testing::Values(WeightType::kF32, WeightType::kBF16, WeightType::kF16),
                         [](const testing::TestParamInfo<WeightType>& info) {
                           return std::string(TypeName(info.param));
                         });

// Widths past the 8 Ki columns where the activation panel falls to 8 rows, and many column
// blocks: rows still do not depend on the batch.
TEST(DenseLinearBatchInvarianceTest, LongRowsAndMinimumPanels) {
  const int64_t n = 5, k = 9000, ldx = k;
  const DenseWeights w = MakeDense(WeightType::kBF16, n, k, 77);
  for (const Isa& isa : Isas()) {
    SCOPED_TRACE(isa.name);
    const BatchFn run = [&](const float* x, int64_t m, int64_t ldx_, float* y, int64_t ldy,
                            int64_t b, int64_t e) {
      isa.dense_linear(WeightType::kBF16, w.data(), n, k, x, m, ldx_, y, ldy, b, e);
    };
    const int64_t m = 11;
    ExpectBatchInvariant(run, Gaussian(m * ldx, 1.0f, 78), m, ldx, n, 79);
  }
}

TEST(LinearKernelIsaTest, NamesTheDispatchedBuild) {
  const std::string isa = LinearKernelIsa();
  EXPECT_EQ(isa, CpuHasAvx2Fma() ? "avx2" : "portable");
  std::printf("linear kernels run on: %s\n", isa.c_str());
}

}  // namespace
}  // namespace tq::cpu
