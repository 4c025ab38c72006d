#include "engine/format/dtype.h"

#include <cmath>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "absl/strings/str_cat.h"

namespace tq {
namespace {

struct DTypeRow {
  DType type;
  absl::string_view name;
  int size;
  bool floating;
};

constexpr DTypeRow kDTypes[] = {
    {DType::kBool, "BOOL", 1, false},     {DType::kU8, "U8", 1, false},
    {DType::kI8, "I8", 1, false},         {DType::kF8E5M2, "F8_E5M2", 1, true},
    {DType::kF8E4M3, "F8_E4M3", 1, true}, {DType::kI16, "I16", 2, false},
    {DType::kU16, "U16", 2, false},       {DType::kF16, "F16", 2, true},
    {DType::kBF16, "BF16", 2, true},      {DType::kI32, "I32", 4, false},
    {DType::kU32, "U32", 4, false},       {DType::kF32, "F32", 4, true},
    {DType::kF64, "F64", 8, true},        {DType::kI64, "I64", 8, false},
    {DType::kU64, "U64", 8, false},
};

const DTypeRow& Row(DType t) { return kDTypes[static_cast<int>(t)]; }

}  // namespace

absl::string_view DTypeName(DType t) { return Row(t).name; }
int DTypeSize(DType t) { return Row(t).size; }
bool IsFloatingPoint(DType t) { return Row(t).floating; }

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const DTypeRow& r : kDTypes) {
    if (r.name == name) return r.type;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype \"", name, "\""));
}

uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = m * 2^-24. Round abs / 2^-24 to nearest even.
    if (abs < 0x33000000u) return sign;  // < 2^-25: rounds to zero
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14 + (112 - e) ... so that result = m >> shift
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: rebias exponent, round mantissa from 23 to 10 bits (nearest even).
  uint32_t h = ((abs >> 23) - 112) << 10 | ((abs >> 13) & 0x3ffu);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: fine
  return sign | static_cast<uint16_t>(h);
}

namespace {

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) void FloatToF16ArrayF16c(const float* src, int64_t n,
                                                                uint16_t* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    const __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
    // NaN payloads: keep the scalar rule (quiet NaN 0x7e00 with the sign).
    if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)) != 0) {
      for (int k = 0; k < 8; ++k) dst[i + k] = FloatToF16(src[i + k]);
    }
  }
  for (; i < n; ++i) dst[i] = FloatToF16(src[i]);
}
#endif

}  // namespace

void FloatToF16Array(const float* src, int64_t n, uint16_t* dst) {
#if defined(__x86_64__)
  // Every AVX2 CPU (Haswell, Zen and later) has F16C; clang 14 cannot query "f16c" by name.
  static const bool f16c = __builtin_cpu_supports("avx2");
  if (f16c) {
    FloatToF16ArrayF16c(src, n, dst);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = FloatToF16(src[i]);
}

absl::Status ConvertToFloat(DType t, const void* src, int64_t n, float* dst) {
  switch (t) {
    case DType::kBF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, s + i, 2);
        dst[i] = Bf16ToFloat(v);
      }
      return absl::OkStatus();
    }
    case DType::kF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, s + i, 2);
        dst[i] = F16ToFloat(v);
      }
      return absl::OkStatus();
    }
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return absl::OkStatus();
    case DType::kF64: {
      const char* s = static_cast<const char*>(src);
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, s + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot convert dtype ", DTypeName(t), " to float32"));
  }
}

}  // namespace tq
