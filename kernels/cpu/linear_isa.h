// File: kernels/cpu/linear_isa.h  (internal)
//
// The per-instruction-set builds of the kernels of linear.h. linear_isa.cc is compiled twice
// (BUILD.bazel): into namespace tq::cpu::avx2 with -mavx2 -mfma -mf16c, and into
// tq::cpu::portable without ISA flags. linear.cc picks one at run time (CpuHasAvx2Fma). Tests
// call both directly to check that they agree. Contracts are those of linear.h.
#ifndef TQSERVE_KERNELS_CPU_LINEAR_ISA_H_
#define TQSERVE_KERNELS_CPU_LINEAR_ISA_H_

#include <cstdint>

#include "kernels/cpu/linear.h"

namespace tq::cpu {

#define TQ_DECLARE_LINEAR_KERNELS(ns)                                                          \
  namespace ns {                                                                               \
  void TqRotateInput(const float* x, int64_t m, int64_t k, int64_t ldx, int group_size,        \
                     int rotation_block, float* x_rot);                                        \
  void TqLinear(const TqLinearParams& p, const float* x_rot, int64_t m, float* y, int64_t ldy, \
                int64_t n_begin, int64_t n_end);                                               \
  void DenseLinear(WeightType type, const void* w, int64_t n, int64_t k, const float* x,       \
                   int64_t m, int64_t ldx, float* y, int64_t ldy, int64_t n_begin,             \
                   int64_t n_end);                                                             \
  }

TQ_DECLARE_LINEAR_KERNELS(avx2)
TQ_DECLARE_LINEAR_KERNELS(portable)

#undef TQ_DECLARE_LINEAR_KERNELS

// True if the CPU runs the avx2 build: AVX2, FMA and F16C (checked once).
bool CpuHasAvx2Fma();

}  // namespace tq::cpu

#endif  // TQSERVE_KERNELS_CPU_LINEAR_ISA_H_
