// File: engine/format/dtype.h
//
// Tensor element types of the safetensors format and the float conversions the compressor needs.
// The enum order is safetensors' own (ascending alignment); writers sort tensors by it.
#ifndef TQSERVE_ENGINE_FORMAT_DTYPE_H_
#define TQSERVE_ENGINE_FORMAT_DTYPE_H_

#include <cstdint>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace tq {

enum class DType : uint8_t {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

absl::string_view DTypeName(DType t);  // "BF16", "F32", ...
absl::StatusOr<DType> ParseDType(absl::string_view name);
int DTypeSize(DType t);
bool IsFloatingPoint(DType t);  // F8*, F16, BF16, F32, F64

inline float Bf16ToFloat(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
uint16_t FloatToBf16(float f);

float F16ToFloat(uint16_t h);

// FloatToF16 over an array (F16C instructions where the CPU has them; same results).
void FloatToF16Array(const float* src, int64_t n, uint16_t* dst);

// IEEE binary16, round to nearest even, overflow to infinity, subnormals kept: what torch's
// `.half()` does.
uint16_t FloatToF16(float f);

// Converts n elements of a floating-point dtype (F16, BF16, F32, F64) to float32.
// Returns InvalidArgument for other dtypes.
absl::Status ConvertToFloat(DType t, const void* src, int64_t n, float* dst);

}  // namespace tq

#endif  // TQSERVE_ENGINE_FORMAT_DTYPE_H_
