// File: kernels/quant/tq_quantize_lanes.h  (internal)
//
// The lane-parallel group kernels behind TqQuantizer: kLanes groups are processed at once in a
// transposed [G][kLanes] tile so every step (including the h = 1, 2 butterflies and the
// per-group norm) is a contiguous vector operation over groups. tq_quantize_lanes.cc is compiled
// twice, into namespaces `avx2` (-mavx2) and `portable`; both perform the same IEEE operations.
#ifndef TQSERVE_KERNELS_QUANT_TQ_QUANTIZE_LANES_H_
#define TQSERVE_KERNELS_QUANT_TQ_QUANTIZE_LANES_H_

#include <cstdint>

namespace tq::quant {

inline constexpr int kLanes = 8;

// Everything a group kernel needs, resolved once per tensor.
struct GroupKernelParams {
  int group = 0;        // G
  int block = 0;        // rotation block B
  int bits = 0;
  int gain_mode = 0;    // GainMode as int
  int norm_lanes = 8;  // torch reduction lanes (TqSpec::torch_norm_lanes)
  float divisor = 1;    // RotationDivisor(B)
  const float* signs1 = nullptr;
  const float* signs2 = nullptr;
  const float* centroids = nullptr;
  const float* boundaries = nullptr;  // 2^bits - 1
};

#define TQ_DECLARE_GROUP_KERNELS(ns)                                                        \
  namespace ns {                                                                            \
  /* Quantizes `count` (<= kLanes) groups; group g reads G floats at src[g]. Writes packed  \
     bytes at packed + g * bytes_per_group and the gain at gains[g]. */                     \
  void QuantizeGroups(const GroupKernelParams& p, const float* const* src, int count,        \
                      uint8_t* packed, float* gains);                                       \
  /* Dequantizes `count` (<= kLanes) groups into dst[g] (G floats each). */                 \
  void DequantizeGroups(const GroupKernelParams& p, const uint8_t* packed, const float* gains, \
                        int count, float* const* dst);                                      \
  }

namespace avx2 {}
TQ_DECLARE_GROUP_KERNELS(avx2)
TQ_DECLARE_GROUP_KERNELS(portable)

}  // namespace tq::quant

#endif  // TQSERVE_KERNELS_QUANT_TQ_QUANTIZE_LANES_H_
