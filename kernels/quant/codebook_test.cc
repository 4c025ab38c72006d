#include "kernels/quant/codebook.h"

#include <cmath>

#include "gtest/gtest.h"

namespace tq::quant {
namespace {

// ALGORITHMS.md §1.3, d = 128, positive halves (printed to 7-8 significant digits).
constexpr double kCentroids2[] = {0.04003992, 0.13346641};
constexpr double kBoundaries2[] = {0.0, 0.08675317};
constexpr double kCentroids3[] = {0.02166345, 0.06682201, 0.11878585, 0.19020686};
constexpr double kBoundaries3[] = {0.0, 0.04424273, 0.09280393, 0.15449636};
constexpr double kCentroids4[] = {0.01113365, 0.03366999, 0.05705346, 0.08200152,
                                 0.10954663, 0.14143801, 0.18133202, 0.24016324};
constexpr double kBoundaries4[] = {0.0,        0.02240182, 0.04536173, 0.06952749,
                                  0.09577408, 0.12549232, 0.16138501, 0.21074763};

// The spec prints 8 decimals: a float32 that prints to the same digits is within 0.5e-8.
constexpr double kPrintedTolerance = 0.5e-8 + 1e-12;

void ExpectPositiveHalf(const std::vector<float>& all, const double* expected, int half) {
  ASSERT_EQ(static_cast<int>(all.size()), 2 * half);
  for (int i = 0; i < half; ++i) {
    EXPECT_NEAR(all[half + i], expected[i], kPrintedTolerance) << "index " << half + i;
    EXPECT_EQ(all[half - 1 - i], -all[half + i]) << "not symmetric at " << i;
  }
}

TEST(CodebookTest, MatchesPluginValuesAtDim128) {
  const Codebook& c2 = GetCodebook(2, 128);
  const Codebook& c3 = GetCodebook(3, 128);
  const Codebook& c4 = GetCodebook(4, 128);
  ExpectPositiveHalf(c2.centroids, kCentroids2, 2);
  ExpectPositiveHalf(c3.centroids, kCentroids3, 4);
  ExpectPositiveHalf(c4.centroids, kCentroids4, 8);
  // Boundaries: the middle one is exactly 0, the rest are the positive halves.
  for (const auto& [cb, expected, half] :
       {std::tuple{&c2, kBoundaries2, 2}, std::tuple{&c3, kBoundaries3, 4},
        std::tuple{&c4, kBoundaries4, 8}}) {
    ASSERT_EQ(cb->size() - 1, 2 * half - 1);
    for (int i = 0; i < half; ++i) {
      EXPECT_NEAR(cb->boundaries[half - 1 + i], expected[i], kPrintedTolerance)
          << cb->bits << " bits, boundary " << half - 1 + i;
    }
  }
}

TEST(CodebookTest, SigmaUnits) {
  const double s = std::sqrt(128.0);
  const Codebook& c3 = GetCodebook(3, 128);
  // HIGGS (1,8) grid, ALGORITHMS.md §1.3.
  const double expected[] = {0.245094, 0.756005, 1.343908, 2.151945};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(c3.centroids[4 + i] * s, expected[i], 2e-6);
  // Not converged at 4 bits: the plugin's outer centroid is 2.71714 sigma (converged 2.73259).
  EXPECT_NEAR(GetCodebook(4, 128).centroids[15] * s, 2.71714, 1e-5);
  EXPECT_NEAR(GetCodebook(2, 128).centroids[3] * s, 1.51, 1e-6);
}

TEST(CodebookTest, OtherDimsAreScaledCopies) {
  for (int bits : {2, 3, 4}) {
    const Codebook& ref = GetCodebook(bits, 128);
    for (int dim : {64, 256}) {
      const Codebook& cb = GetCodebook(bits, dim);
      ASSERT_EQ(cb.size(), 1 << bits);
      ASSERT_EQ(static_cast<int>(cb.boundaries.size()), (1 << bits) - 1);
      for (int i = 0; i < cb.size(); ++i) {
        if (i > 0) EXPECT_LT(cb.centroids[i - 1], cb.centroids[i]);
        // N(0, 1/d) scales with 1/sqrt(d): c_d * sqrt(d) == c_128 * sqrt(128).
        EXPECT_NEAR(cb.centroids[i] * std::sqrt(double(dim)),
                    ref.centroids[i] * std::sqrt(128.0), 2e-6)
            << bits << " bits dim " << dim << " i " << i;
      }
      for (int i = 0; i + 1 < cb.size(); ++i) {
        EXPECT_EQ(cb.boundaries[i], (cb.centroids[i] + cb.centroids[i + 1]) / 2.0f);
      }
    }
  }
}

TEST(CodebookTest, SearchsortedLeftTieRule) {
  const Codebook& cb = GetCodebook(3, 128);
  for (int b = 0; b < 7; ++b) {
    const float v = cb.boundaries[b];
    EXPECT_EQ(cb.Index(v), b) << "a value on boundary " << b << " takes the lower index";
    EXPECT_EQ(cb.Index(std::nextafter(v, 1.0f)), b + 1);
  }
  EXPECT_EQ(cb.Index(-1.0f), 0);
  EXPECT_EQ(cb.Index(1.0f), 7);
  EXPECT_EQ(cb.Index(0.0f), 3);
}

TEST(CodebookTest, OneBitClosedForm) {
  const Codebook& c1 = GetCodebook(1, 128);
  EXPECT_FLOAT_EQ(c1.centroids[1], static_cast<float>(std::sqrt(2.0 / (M_PI * 128))));
}

TEST(NormalTest, PpfInvertsCdf) {
  for (double x = -6.0; x <= 6.0; x += 0.37) {
    EXPECT_NEAR(NormalPpf(NormalCdf(x)), x, 1e-9 * (1 + std::fabs(x))) << x;
  }
  EXPECT_NEAR(NormalPpf(0.975), 1.959963984540054, 1e-13);
  EXPECT_DOUBLE_EQ(NormalPpf(0.5), 0.0);
}

}  // namespace
}  // namespace tq::quant
