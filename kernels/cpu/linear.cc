#include "kernels/cpu/linear.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/linear_isa.h"
#include "kernels/quant/packing.h"
#include "kernels/quant/rotation.h"

namespace tq::cpu {

bool CpuHasAvx2Fma() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

absl::Status ValidateTqLinearParams(const TqLinearParams& p) {
  if (p.bits < 2 || p.bits > 4) {
    return absl::InvalidArgumentError(absl::StrCat("TQ linear: bits must be 2, 3 or 4, got ", p.bits));
  }
  if (!quant::IsPowerOfTwo(p.group_size) || p.group_size < 16 || p.group_size > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TQ linear: group size must be a power of two in [16, 1024], got ", p.group_size));
  }
  const int b = p.rotation_block == 0 ? p.group_size : p.rotation_block;
  if (!quant::IsPowerOfTwo(b) || b < 2 || b > p.group_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TQ linear: rotation block must be 0 or a power of two in [2, group size], got ",
        p.rotation_block));
  }
  if (p.n < 0 || p.k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("TQ linear: negative shape n=", p.n, " k=", p.k));
  }
  if (p.n > 0 && p.k > 0 && (p.packed == nullptr || p.gains == nullptr || p.codebook == nullptr)) {
    return absl::InvalidArgumentError("TQ linear: null packed, gains or codebook pointer");
  }
  return absl::OkStatus();
}

void TqRotateInput(const float* x, int64_t m, int64_t k, int64_t ldx, int group_size,
                   int rotation_block, float* x_rot) {
  if (CpuHasAvx2Fma()) {
    avx2::TqRotateInput(x, m, k, ldx, group_size, rotation_block, x_rot);
  } else {
    portable::TqRotateInput(x, m, k, ldx, group_size, rotation_block, x_rot);
  }
}

void TqLinear(const TqLinearParams& p, const float* x_rot, int64_t m, float* y, int64_t ldy,
              int64_t n_begin, int64_t n_end) {
  if (CpuHasAvx2Fma()) {
    avx2::TqLinear(p, x_rot, m, y, ldy, n_begin, n_end);
  } else {
    portable::TqLinear(p, x_rot, m, y, ldy, n_begin, n_end);
  }
}

void DenseLinear(WeightType type, const void* w, int64_t n, int64_t k, const float* x, int64_t m,
                 int64_t ldx, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  if (CpuHasAvx2Fma()) {
    avx2::DenseLinear(type, w, n, k, x, m, ldx, y, ldy, n_begin, n_end);
  } else {
    portable::DenseLinear(type, w, n, k, x, m, ldx, y, ldy, n_begin, n_end);
  }
}

const char* LinearKernelIsa() { return CpuHasAvx2Fma() ? "avx2" : "portable"; }

void TqLinearReference(const TqLinearParams& p, const float* x_rot, int64_t m, float* y,
                       int64_t ldy, int64_t n_begin, int64_t n_end) {
  const int G = p.group_size;
  const int64_t groups = TqGroups(p.k, G);
  const int64_t kp = groups * G;
  const int64_t bpg = quant::PackedBytes(p.bits, G);
  std::vector<uint8_t> idx(G);
  std::vector<double> row(kp);  // dequantized row in the rotated domain: gain · c[idx]
  for (int64_t j = n_begin; j < n_end; ++j) {
    for (int64_t g = 0; g < groups; ++g) {
      quant::UnpackIndices(p.packed + (j * groups + g) * bpg, G, p.bits, idx.data());
      const double gain = p.gains[j * groups + g];
      for (int t = 0; t < G; ++t) row[g * G + t] = gain * static_cast<double>(p.codebook[idx[t]]);
    }
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x_rot + i * kp;
      double sum = 0.0;
      for (int64_t t = 0; t < kp; ++t) sum += row[t] * static_cast<double>(xi[t]);
      y[i * ldy + j] = static_cast<float>(sum);
    }
  }
}

void DenseLinearReference(WeightType type, const void* w, int64_t n, int64_t k, const float* x,
                          int64_t m, int64_t ldx, float* y, int64_t ldy, int64_t n_begin,
                          int64_t n_end) {
  (void)n;
  std::vector<double> row(k);
  for (int64_t j = n_begin; j < n_end; ++j) {
    for (int64_t t = 0; t < k; ++t) {
      switch (type) {
        case WeightType::kF32:
          row[t] = static_cast<const float*>(w)[j * k + t];
          break;
        case WeightType::kBF16:
          row[t] = Bf16ToFloat(static_cast<const uint16_t*>(w)[j * k + t]);
          break;
        case WeightType::kF16:
          row[t] = HalfToFloat(static_cast<const uint16_t*>(w)[j * k + t]);
          break;
      }
    }
    for (int64_t i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int64_t t = 0; t < k; ++t) sum += row[t] * static_cast<double>(x[i * ldx + t]);
      y[i * ldy + j] = static_cast<float>(sum);
    }
  }
}

}  // namespace tq::cpu
