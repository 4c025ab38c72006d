#include "kernels/nn/ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace tq::nn {
namespace {

float DotPortable(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void AxpyPortable(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 lo = _mm256_castps256_ps128(acc), hi = _mm256_extractf128_ps(acc, 1);
  __m128 s4 = _mm_add_ps(lo, hi);
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
  float s = _mm_cvtss_f32(s4);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target("avx2,fma"))) void AxpyAvx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

bool HaveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return have;
}

}  // namespace

float Dot(const float* a, const float* b, int64_t n) {
  return HaveAvx2() ? DotAvx2(a, b, n) : DotPortable(a, b, n);
}

void Axpy(float alpha, const float* x, float* y, int64_t n) {
  if (HaveAvx2()) {
    AxpyAvx2(alpha, x, y, n);
  } else {
    AxpyPortable(alpha, x, y, n);
  }
}

const char* NnKernelIsa() { return HaveAvx2() ? "avx2" : "portable"; }

void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* y) {
  const float mean_sq = Dot(x, x, n) / static_cast<float>(n);
  const float r = 1.0f / std::sqrt(mean_sq + eps);
  if (w != nullptr) {
    for (int64_t i = 0; i < n; ++i) y[i] = w[i] * (x[i] * r);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * r;
  }
}

void ApplyRope(float* x, int head_dim, int num_heads, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < num_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void SiluMul(const float* g, const float* u, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

float SoftmaxInPlace(float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  if (m == -INFINITY) {  // all masked: uniform zeros
    for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
    return -INFINITY;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
  return static_cast<float>(std::log(sum)) + m;
}

float LogSumExp(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  if (m == -INFINITY) return m;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - m));
  return static_cast<float>(std::log(sum) + m);
}

void AttendOne(const float* q, const float* k, int64_t ldk, const float* v, int64_t ldv,
               int64_t len, int d, float scale, float* scores, float* out) {
  for (int64_t j = 0; j < len; ++j) scores[j] = Dot(q, k + j * ldk, d) * scale;
  SoftmaxInPlace(scores, len);
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < len; ++j) Axpy(scores[j], v + j * ldv, out, d);
}

}  // namespace tq::nn
