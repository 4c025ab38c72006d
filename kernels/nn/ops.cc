#include "kernels/nn/ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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

// exp(s) for s <= 0, not NaN (clamped to >= kExpMin): n = round(s / ln 2), r = s − n ln 2 in two
// steps (Cody–Waite), e^r by the Cephes expf polynomial, times 2^n through the exponent bits.
constexpr float kExpMin = -87.0f;
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f,
                kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;
constexpr int64_t kExpBlock = 256;

inline float ExpNonPositive(float s) {
  s = std::max(s, kExpMin);
  const float n = std::nearbyint(s * kLog2e);
  const float r = (s - n * kLn2Hi) - n * kLn2Lo;
  float p = kExpP0;
  p = p * r + kExpP1;
  p = p * r + kExpP2;
  p = p * r + kExpP3;
  p = p * r + kExpP4;
  p = p * r + kExpP5;
  const float e = (p * r) * r + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale2;
  std::memcpy(&scale2, &bits, sizeof(scale2));
  return e * scale2;
}

double SumExpShiftedPortable(const float* x, int64_t n, float shift, float scale, float min_exponent) {
  double total = 0.0;
  for (int64_t b = 0; b < n; b += kExpBlock) {
    const int64_t e = std::min(n, b + kExpBlock);
    float acc = 0.0f;
    for (int64_t i = b; i < e; ++i) {
      const float s = (x[i] - shift) * scale;
      if (s >= min_exponent) acc += ExpNonPositive(s);  // NaN terms (and those below) count 0
    }
    total += acc;
  }
  return total;
}

// Eight lanes of ExpNonPositive((v − shift) · scale); lanes below vmin_e (and NaN lanes) give 0.
__attribute__((target("avx2,fma"))) inline __m256 ExpShifted8(__m256 v, __m256 vshift, __m256 vscale,
                                                              __m256 vmin_e) {
  __m256 s = _mm256_mul_ps(_mm256_sub_ps(v, vshift), vscale);
  const __m256 ordered = _mm256_cmp_ps(s, vmin_e, _CMP_GE_OQ);
  s = _mm256_max_ps(s, _mm256_set1_ps(kExpMin));  // −inf → kExpMin
  const __m256 nf =
      _mm256_round_ps(_mm256_mul_ps(s, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(kLn2Hi), s);
  r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kExpP0), r, _mm256_set1_ps(kExpP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP5));
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i ni = _mm256_add_epi32(_mm256_cvtps_epi32(nf), _mm256_set1_epi32(127));
  const __m256 pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(ni, 23));
  return _mm256_and_ps(_mm256_mul_ps(e, pow2), ordered);
}

__attribute__((target("avx2,fma"))) double SumExpShiftedAvx2(const float* x, int64_t n, float shift,
                                                             float scale, float min_exponent) {
  const __m256 vshift = _mm256_set1_ps(shift), vscale = _mm256_set1_ps(scale), vmin_e = _mm256_set1_ps(min_exponent);
  double total = 0.0;
  int64_t i = 0;
  for (; i + kExpBlock <= n; i += kExpBlock) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t j = i; j < i + kExpBlock; j += 16) {
      acc0 = _mm256_add_ps(acc0, ExpShifted8(_mm256_loadu_ps(x + j), vshift, vscale, vmin_e));
      acc1 = _mm256_add_ps(acc1, ExpShifted8(_mm256_loadu_ps(x + j + 8), vshift, vscale, vmin_e));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, _mm256_add_ps(acc0, acc1));
    float s = 0.0f;
    for (float v : lanes) s += v;
    total += s;
  }
  return total + SumExpShiftedPortable(x + i, n - i, shift, scale, min_exponent);
}

int64_t ArgMaxFirstPortable(const float* x, int64_t n) {
  int64_t best = 0;
  while (best < n && std::isnan(x[best])) ++best;  // leading NaNs are skipped
  if (best == n) return 0;
  for (int64_t i = best + 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

__attribute__((target("avx2,fma"))) int64_t ArgMaxFirstAvx2(const float* x, int64_t n) {
  if (n < 64 || !(x[0] == x[0])) return ArgMaxFirstPortable(x, n);
  // Pass 1: the maximum (a NaN lane keeps the running maximum: max_ps returns its second
  // operand when either is NaN). Pass 2: the first index holding it.
  __m256 m = _mm256_set1_ps(x[0]);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float best = lanes[0];
  for (float v : lanes) best = v > best ? v : best;
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  const __m256 vb = _mm256_set1_ps(best);
  for (i = 0; i + 8 <= n; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vb, _CMP_EQ_OQ));
    if (mask != 0) return i + __builtin_ctz(static_cast<unsigned>(mask));
  }
  for (; i < n; ++i) {
    if (x[i] == best) return i;
  }
  return 0;
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

int64_t ArgMaxFirst(const float* x, int64_t n) {
  if (n <= 0) return 0;
  return HaveAvx2() ? ArgMaxFirstAvx2(x, n) : ArgMaxFirstPortable(x, n);
}

double SumExpShifted(const float* x, int64_t n, float shift, float scale, float min_exponent) {
  if (n <= 0) return 0.0;
  return HaveAvx2() ? SumExpShiftedAvx2(x, n, shift, scale, min_exponent)
                    : SumExpShiftedPortable(x, n, shift, scale, min_exponent);
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
