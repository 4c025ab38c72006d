#include "kernels/quant/rotation.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tq::quant {
namespace {

// ALGORITHMS.md §1.2, read from torch 2.11 (index 0 first).
const char kSigns1[] =
    "-+---+---+----+-+++-+-++++++++--+++-+-----+++++-++-+-+-++--------++-++++-+-+++-+-+-+--+-"
    "+++++++++++--++++++++-+-++-+-++-+-+--++-";
const char kSigns2[] =
    "+++---------+-+++----+-----+-+-+--+++-+--++--+++------+---+--+-----+++---+--+-+++-------"
    "+-+---++++-+--++++++++-++-+--+----+-+---";

std::string SignString(const std::vector<float>& s) {
  std::string out;
  for (float v : s) out += v > 0 ? '+' : '-';
  return out;
}

TEST(RotationTest, SignsMatchPluginAtGroup128) {
  const RotationSigns& s = GetRotationSigns(128);
  EXPECT_EQ(SignString(s.signs1), kSigns1);
  EXPECT_EQ(SignString(s.signs2), kSigns2);
}

TEST(RotationTest, SmallerGroupsArePrefixesOfTheSameStream) {
  // torch.randint draws one 32-bit value per element, so G=64's signs1 is the first 64 draws
  // and its signs2 the next 64, i.e. G=128's signs1[64:128].
  const RotationSigns& s64 = GetRotationSigns(64);
  const std::string s1 = kSigns1;
  EXPECT_EQ(SignString(s64.signs1), s1.substr(0, 64));
  EXPECT_EQ(SignString(s64.signs2), s1.substr(64, 64));
  EXPECT_EQ(SignString(GetRotationSigns(256).signs1).substr(0, 128), s1.substr(0, 128));
}

TEST(RotationTest, UnitVectorCheckValue) {
  std::vector<float> e0(128, 0.0f), y(128);
  e0[0] = 1.0f;
  RotateForwardReference(e0.data(), y.data(), 128, 128);
  const char* expected_signs = "---+++++";
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(std::fabs(y[i]), 0.0883883, 1e-7);
    EXPECT_EQ(y[i] > 0 ? '+' : '-', expected_signs[i]) << i;
  }
}

// Dense reference: H_n by Sylvester's recursion, D2 · blockdiag(H_B/sqrt(B)) · D1.
std::vector<double> DenseRotation(int g, int b) {
  std::vector<double> h(b * b);
  h[0] = 1;
  for (int n = 1; n < b; n *= 2) {
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        const double v = h[i * b + j];
        h[i * b + j + n] = v;
        h[(i + n) * b + j] = v;
        h[(i + n) * b + j + n] = -v;
      }
    }
  }
  const RotationSigns& s = GetRotationSigns(g);
  std::vector<double> r(g * g, 0.0);
  for (int blk = 0; blk < g; blk += b) {
    for (int i = 0; i < b; ++i) {
      for (int j = 0; j < b; ++j) {
        r[(blk + i) * g + blk + j] =
            s.signs2[blk + i] * h[i * b + j] / std::sqrt(double(b)) * s.signs1[blk + j];
      }
    }
  }
  return r;
}

TEST(RotationTest, MatchesDenseMatrixAndInverts) {
  std::mt19937 gen(7);
  std::normal_distribution<float> nd;
  for (auto [g, b] : {std::pair{128, 128}, {128, 64}, {128, 32}, {64, 64}, {256, 256}, {256, 128}}) {
    const std::vector<double> r = DenseRotation(g, b);
    std::vector<float> x(g), y(g), back(g);
    for (auto& v : x) v = nd(gen);
    RotateForwardReference(x.data(), y.data(), g, b);
    for (int i = 0; i < g; ++i) {
      double acc = 0;
      for (int j = 0; j < g; ++j) acc += r[i * g + j] * x[j];
      EXPECT_NEAR(y[i], acc, 1e-5) << "G=" << g << " B=" << b << " row " << i;
    }
    RotateInverseReference(y.data(), back.data(), g, b);
    for (int i = 0; i < g; ++i) EXPECT_NEAR(back[i], x[i], 1e-5);
  }
}

TEST(RotationTest, BlockDiagonalDoesNotLeakAcrossBlocks) {
  std::vector<float> x(128, 0.0f), y(128);
  for (int i = 0; i < 64; ++i) x[i] = 0.1f * (i + 1);
  RotateForwardReference(x.data(), y.data(), 128, 64);
  for (int i = 64; i < 128; ++i) EXPECT_EQ(y[i], 0.0f) << i;
}

TEST(RotationTest, Divisor) {
  EXPECT_EQ(RotationDivisor(64), 8.0f);
  EXPECT_EQ(RotationDivisor(256), 16.0f);
  EXPECT_EQ(RotationDivisor(128), static_cast<float>(std::sqrt(128.0)));
  EXPECT_EQ(RotationDivisor(32), static_cast<float>(std::sqrt(32.0)));
}

}  // namespace
}  // namespace tq::quant
