#include "kernels/cuda/tq_gemv_int8_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/quant/packing.h"

namespace tq::cuda {
namespace {

constexpr int kG = 128;
constexpr int kGroupBytes = kG * 3 / 8;

}  // namespace

void QuantizeRotatedInt8(const float* x_rot, int64_t kp, int8_t* x_q, float* x_qscale) {
  for (int64_t g = 0; g * kG < kp; ++g) {
    const float* v = x_rot + g * kG;
    int8_t* q = x_q + g * kG;
    float amax = 0.0f;
    bool finite = true;
    for (int t = 0; t < kG; ++t) {
      finite = finite && std::isfinite(v[t]);
      if (std::isfinite(v[t])) amax = std::max(amax, std::fabs(v[t]));
    }
    if (!finite || amax == 0.0f) {
      std::fill(q, q + kG, int8_t{0});
      x_qscale[g] = finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const float inv = 127.0f / amax;
    x_qscale[g] = amax / 127.0f;
    for (int t = 0; t < kG; ++t) {
      const float r = std::nearbyint(v[t] * inv);  // ties to even (default rounding mode)
      q[t] = static_cast<int8_t>(std::clamp(r, -127.0f, 127.0f));
    }
  }
}

TqInt8Codebook MakeTqInt8Codebook(const float* codebook8) {
  TqInt8Codebook cb;
  float amax = 0.0f;
  for (int i = 0; i < 8; ++i) amax = std::max(amax, std::fabs(codebook8[i]));
  const float s = 127.0f / amax;
  cb.scale = amax / 127.0f;
  for (int i = 0; i < 8; ++i) cb.c8[i] = static_cast<int8_t>(std::nearbyint(codebook8[i] * s));
  return cb;
}

void TqGemvInt8Reference(const uint8_t* packed, const float* gains, const float* codebook8,
                         int64_t n, int64_t k, const int8_t* x_q, const float* x_qscale,
                         double* y) {
  const TqInt8Codebook cb = MakeTqInt8Codebook(codebook8);
  const int64_t groups = (k + kG - 1) / kG;
  uint8_t idx[kG];
  for (int64_t j = 0; j < n; ++j) {
    double acc = 0.0;
    for (int64_t g = 0; g < groups; ++g) {
      quant::UnpackIndices(packed + (j * groups + g) * kGroupBytes, kG, 3, idx);
      int32_t dot = 0;
      for (int t = 0; t < kG; ++t) dot += int32_t{cb.c8[idx[t]]} * x_q[g * kG + t];
      acc += static_cast<double>(static_cast<float>(dot) * (gains[j * groups + g] * x_qscale[g]));
    }
    y[j] = acc * cb.scale;
  }
}

}  // namespace tq::cuda
