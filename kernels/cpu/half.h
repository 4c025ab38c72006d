// File: kernels/cpu/half.h
//
// Scalar conversions between float32 and the 16-bit float formats the CPU linear kernels read:
//   BF16 (bfloat16): the upper 16 bits of a float32 (8-bit exponent, 7-bit mantissa).
//   F16  (IEEE binary16): 5-bit exponent (bias 15), 10-bit mantissa, subnormals below 2^-14.
// Widening (16 -> 32 bits) is exact for every input, NaN and infinities included. Narrowing
// rounds to nearest even; F16 overflows to infinity; NaN stays (quiet) NaN.
//
// These are the portable building blocks (and the test oracles) of kernels/cpu/linear.h; the
// AVX2 kernels convert 8 values at a time with shifts (BF16) and F16C (F16), with equal results.
//
// Usage:
//   uint16_t b = FloatToBf16(0.1f);     // 0x3dcd
//   float f = Bf16ToFloat(b);           // 0.10009765625
#ifndef TQSERVE_KERNELS_CPU_HALF_H_
#define TQSERVE_KERNELS_CPU_HALF_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace tq::cpu {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline float Bf16ToFloat(uint16_t v) { return BitsToFloat(static_cast<uint32_t>(v) << 16); }

inline uint16_t FloatToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even on the 16 dropped bits
  return static_cast<uint16_t>(u >> 16);
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in float32
    const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  if (exp == 31) return BitsToFloat(sign | 0x7f800000u | (man << 13));  // inf / NaN
  return BitsToFloat(sign | ((exp + 112u) << 23) | (man << 13));       // rebias 15 -> 127
}

inline uint16_t FloatToHalf(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN / inf
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds past 65504: infinity
  if (a < 0x38800000u) {
    // Below 2^-14: subnormal (or zero). |f| * 2^24 is exact; rounding it to an integer in the
    // default round-to-nearest-even mode is the F16 rounding. 1024 encodes the smallest normal.
    const float scaled = BitsToFloat(a) * 16777216.0f;
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  uint32_t r = a - (112u << 23);   // rebias 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);  // round to nearest even on the 13 dropped mantissa bits
  return sign | static_cast<uint16_t>(r >> 13);
}

}  // namespace tq::cpu

#endif  // TQSERVE_KERNELS_CPU_HALF_H_
