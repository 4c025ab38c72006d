#include "engine/format/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace tq {
namespace {

TEST(DTypeTest, NamesRoundTrip) {
  for (int i = 0; i <= static_cast<int>(DType::kU64); ++i) {
    const DType t = static_cast<DType>(i);
    auto parsed = ParseDType(DTypeName(t));
    ASSERT_TRUE(parsed.ok()) << DTypeName(t);
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_FALSE(ParseDType("F128").ok());
  EXPECT_FALSE(ParseDType("").ok());
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_EQ(DTypeSize(DType::kI64), 8);
  EXPECT_TRUE(IsFloatingPoint(DType::kF16));
  EXPECT_FALSE(IsFloatingPoint(DType::kI32));
}

// Exhaustive: every float16 value converts to float and back to the same bits.
TEST(DTypeTest, F16RoundTripsExhaustively) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = F16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(f))));
      continue;
    }
    ASSERT_EQ(FloatToF16(f), h) << std::hex << h;
  }
}

TEST(DTypeTest, F16RoundingMatchesIeee) {
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);  // tie rounds to even = infinity
  EXPECT_EQ(FloatToF16(1e10f), 0x7c00);
  EXPECT_EQ(FloatToF16(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even -> 0
  EXPECT_EQ(FloatToF16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToF16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: tie -> even (2)
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Against the exact double rounding of many random floats.
  uint32_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 1664525u + 1013904223u;
    const float f = std::ldexp(static_cast<float>(state >> 8) / (1 << 24), (state % 40) - 30);
    const uint16_t h = FloatToF16(f);
    const float back = F16ToFloat(h);
    // No other half is closer.
    const float up = F16ToFloat(h + 1), down = h > 0 ? F16ToFloat(h - 1) : -back;
    EXPECT_LE(std::fabs(back - f), std::fabs(up - f)) << f;
    EXPECT_LE(std::fabs(back - f), std::fabs(down - f)) << f;
  }
}

TEST(DTypeTest, F16ArrayEqualsScalar) {
  std::vector<float> x;
  uint32_t state = 99;
  for (int i = 0; i < 100003; ++i) {
    state = state * 1664525u + 1013904223u;
    float f;
    std::memcpy(&f, &state, 4);  // every bit pattern class: normals, subnormals, inf, NaN
    x.push_back(f);
  }
  for (float f : {0.0f, -0.0f, 65504.0f, 65520.0f, 1e-8f, -1e-7f, INFINITY, -INFINITY, NAN}) x.push_back(f);
  std::vector<uint16_t> got(x.size());
  FloatToF16Array(x.data(), x.size(), got.data());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], FloatToF16(x[i])) << x[i];
}

TEST(DTypeTest, Bf16) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(FloatToBf16(Bf16ToFloat(0x1234)), 0x1234);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  // 1 + 2^-8 is halfway between two bf16 values: ties to even.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
}

TEST(DTypeTest, ConvertToFloat) {
  const uint16_t bf[] = {0x3f80, 0xc000};
  float out[2];
  ASSERT_TRUE(ConvertToFloat(DType::kBF16, bf, 2, out).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  const double d[] = {0.5, -3.25};
  ASSERT_TRUE(ConvertToFloat(DType::kF64, d, 2, out).ok());
  EXPECT_EQ(out[1], -3.25f);
  EXPECT_FALSE(ConvertToFloat(DType::kI32, bf, 1, out).ok());
}

}  // namespace
}  // namespace tq
