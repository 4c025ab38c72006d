#include "kernels/quant/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>

#include "kernels/quant/packing.h"
#include "kernels/quant/rotation.h"

namespace tq::quant {
namespace {

[[noreturn]] void Die(const char* what, int a, int b) {
  std::fprintf(stderr, "kv_quant: %s (%d, %d)\n", what, a, b);
  std::abort();
}

void PackBits(const uint8_t* idx, int n, int bits, uint8_t* out) {
  if (bits == 1) {
    for (int k = 0; k < n; k += 8) {
      uint8_t b = 0;
      for (int i = 0; i < 8; ++i) b |= static_cast<uint8_t>((idx[k + i] & 1) << i);
      *out++ = b;
    }
    return;
  }
  PackIndices(idx, n, bits, out);
}

void UnpackBits(const uint8_t* packed, int n, int bits, uint8_t* idx) {
  if (bits == 1) {
    for (int k = 0; k < n; k += 8) {
      const uint8_t b = *packed++;
      for (int i = 0; i < 8; ++i) idx[k + i] = (b >> i) & 1;
    }
    return;
  }
  UnpackIndices(packed, n, bits, idx);
}

void StoreScalar(float v, KvScalar t, uint8_t* dst) {
  if (t == KvScalar::kF32) {
    std::memcpy(dst, &v, 4);
  } else {
    const uint16_t h = KvFloatToHalf(v);
    std::memcpy(dst, &h, 2);
  }
}

float LoadScalar(const uint8_t* src, KvScalar t) {
  if (t == KvScalar::kF32) {
    float v;
    std::memcpy(&v, src, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, src, 2);
  return KvHalfToFloat(h);
}

// ||x||2 accumulated in double, rounded to float.
float Norm(const float* x, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(std::sqrt(s));
}

}  // namespace

uint16_t KvFloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN / inf
  if (ax >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {                       // below 2^-14: binary16 subnormal (or zero)
    float a;
    std::memcpy(&a, &ax, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));  // units of 2^-24
  }
  const uint32_t rounded = ax + 0x0fffu + ((ax >> 13) & 1u);  // round to nearest even at bit 13
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
}

float KvHalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v;
  if (e == 0) {
    v = std::ldexp(static_cast<float>(m), -24);
  } else if (e == 31) {
    v = m ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(m | 0x400u), static_cast<int>(e) - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits |= sign;
  std::memcpy(&v, &bits, 4);
  return v;
}

uint8_t FloatToE4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::fabs(f);
  if (a >= kE4m3Max) return sign | 0x7e;
  if (a < 0.015625f) {  // below 2^-6: subnormal, units of 2^-9 (8 rounds up to 2^-6 = code 8)
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
  }
  int e2;
  std::frexp(a, &e2);  // a = f * 2^e2, f in [0.5, 1)
  int e = e2 - 1;      // a in [2^e, 2^(e+1))
  int m = static_cast<int>(std::nearbyint((std::ldexp(a, -e) - 1.0f) * 8.0f));
  if (m == 8) {
    m = 0;
    ++e;
  }
  const int code = ((e + 7) << 3) | m;
  return sign | static_cast<uint8_t>(std::min(code, 0x7e));
}

namespace {

float E4m3ToFloatSlow(uint8_t b) {
  const int e = (b >> 3) & 0xf, m = b & 7;
  float v;
  if (e == 15 && m == 7) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(static_cast<float>(m), -9);
  } else {
    v = std::ldexp(static_cast<float>(8 + m), e - 10);
  }
  return (b & 0x80) ? -v : v;
}

}  // namespace

float E4m3ToFloat(uint8_t b) {
  static const auto* table = [] {
    auto* t = new float[256];
    for (int i = 0; i < 256; ++i) t[i] = E4m3ToFloatSlow(static_cast<uint8_t>(i));
    return t;
  }();
  return table[b];
}

bool KvRotationSupports(int d) { return d >= 16 && d <= kMaxKvHeadDim && d % 16 == 0; }

int KvRotationBlock(int d) { return d & -d; }

bool KvBitsSupported(int bits) { return bits == 1 || bits == 2 || bits == 3 || bits == 4 || bits == 8; }

KvRotation::KvRotation(int d, bool signs, uint32_t seed) : d_(d), block_(KvRotationBlock(d)) {
  if (!KvRotationSupports(d)) Die("unsupported head_dim for the KV rotation", d, 0);
  div_ = RotationDivisor(block_);
  if (signs) {
    std::mt19937 gen(seed);
    s1_.resize(d);
    s2_.resize(d);
    for (int i = 0; i < d; ++i) s1_[i] = (gen() % 2) ? 1.0f : -1.0f;
    for (int i = 0; i < d; ++i) s2_[i] = (gen() % 2) ? 1.0f : -1.0f;
  }
}

void KvRotation::Forward(const float* x, float* y) const {
  if (s1_.empty()) {
    if (y != x) std::memcpy(y, x, sizeof(float) * d_);
  } else {
    for (int i = 0; i < d_; ++i) y[i] = x[i] * s1_[i];
  }
  for (int b = 0; b < d_; b += block_) FwhtInPlace(y + b, block_);
  if (s2_.empty()) {
    for (int i = 0; i < d_; ++i) y[i] = y[i] / div_;
  } else {
    for (int i = 0; i < d_; ++i) y[i] = (y[i] / div_) * s2_[i];
  }
}

void KvRotation::Inverse(const float* y, float* x) const {
  if (s2_.empty()) {
    if (x != y) std::memcpy(x, y, sizeof(float) * d_);
  } else {
    for (int i = 0; i < d_; ++i) x[i] = y[i] * s2_[i];
  }
  for (int b = 0; b < d_; b += block_) FwhtInPlace(x + b, block_);
  if (s1_.empty()) {
    for (int i = 0; i < d_; ++i) x[i] = x[i] / div_;
  } else {
    for (int i = 0; i < d_; ++i) x[i] = (x[i] / div_) * s1_[i];
  }
}

// ---------------------------------------------------------------------------------------------
// KvMseQuantizer

KvMseQuantizer::KvMseQuantizer(const KvMseSpec& spec)
    : spec_(spec), rot_(spec.dim, spec.signs, spec.seed), cb_(nullptr) {
  if (!KvBitsSupported(spec.bits)) Die("unsupported KV code width", spec.bits, spec.dim);
  cb_ = &GetCodebook(spec.bits, spec.dim);
}

int64_t KvMseQuantizer::code_bytes() const {
  return static_cast<int64_t>(spec_.dim) * spec_.bits / 8;
}

int KvMseQuantizer::Bucket(float y) const {
  const std::vector<float>& b = cb_->boundaries;
  const auto it = spec_.ties_up ? std::upper_bound(b.begin(), b.end(), y) : std::lower_bound(b.begin(), b.end(), y);
  return static_cast<int>(it - b.begin());
}

// y is written up to d before it is read; GCC cannot see that d <= kMaxKvHeadDim.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
void KvMseQuantizer::Encode(const float* x, uint8_t* dst) const {
  const int d = spec_.dim;
  float y[kMaxKvHeadDim];
  uint8_t idx[kMaxKvHeadDim];
  const float n = Norm(x, d);
  const float div = n > 0 ? n : 1.0f;
  for (int i = 0; i < d; ++i) y[i] = x[i] / div;
  rot_.Forward(y, y);
  for (int i = 0; i < d; ++i) idx[i] = static_cast<uint8_t>(Bucket(y[i]));
  PackBits(idx, d, spec_.bits, dst);
  float g = n;
  if (spec_.gain == KvGain::kNormCorrected) {
    for (int i = 0; i < d; ++i) y[i] = cb_->centroids[idx[i]];
    const float cn = Norm(y, d);
    if (cn > 0) g = n / cn;
  }
  StoreScalar(g, spec_.norm_type, dst + code_bytes());
}
#pragma GCC diagnostic pop

void KvMseQuantizer::DecodeRotated(const uint8_t* src, float* y) const {
  const int d = spec_.dim;
  uint8_t idx[kMaxKvHeadDim];
  UnpackBits(src, d, spec_.bits, idx);
  float g = LoadScalar(src + code_bytes(), spec_.norm_type);
  const float* c = cb_->centroids.data();
  if (spec_.gain == KvGain::kNormCorrectedAtDecode) {
    double s = 0;
    for (int i = 0; i < d; ++i) s += static_cast<double>(c[idx[i]]) * c[idx[i]];
    if (s > 0) g = g / static_cast<float>(std::sqrt(s));
  }
  for (int i = 0; i < d; ++i) y[i] = g * c[idx[i]];
}

void KvMseQuantizer::Decode(const uint8_t* src, float* x) const {
  DecodeRotated(src, x);
  rot_.Inverse(x, x);
}

// ---------------------------------------------------------------------------------------------
// KvUniformQuantizer

KvUniformQuantizer::KvUniformQuantizer(int dim, int bits) : dim_(dim), bits_(bits) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8) Die("unsupported uniform KV width", bits, dim);
  if (dim < 1 || dim > kMaxKvHeadDim || !IsPackable(bits, dim)) Die("unsupported uniform KV dim", bits, dim);
}

int64_t KvUniformQuantizer::bytes() const { return PackedBytes(bits_, dim_) + 4; }

void KvUniformQuantizer::Encode(const float* v, uint8_t* dst) const {
  constexpr float kHalfMax = 65504.0f;
  float lo = v[0], hi = v[0];
  for (int i = 1; i < dim_; ++i) {
    lo = std::min(lo, v[i]);
    hi = std::max(hi, v[i]);
  }
  lo = std::clamp(lo, -kHalfMax, kHalfMax);
  hi = std::clamp(hi, -kHalfMax, kHalfMax);
  const int qmax = (1 << bits_) - 1;
  // Quantize with the fp16 values the decoder will see.
  const uint16_t scale_h = KvFloatToHalf(std::min((hi - lo) / static_cast<float>(qmax), kHalfMax));
  const uint16_t zero_h = KvFloatToHalf(lo);
  const float scale = KvHalfToFloat(scale_h), zero = KvHalfToFloat(zero_h);
  uint8_t idx[kMaxKvHeadDim];
  for (int i = 0; i < dim_; ++i) {
    float q = scale > 0 ? std::floor((v[i] - zero) / scale + 0.5f) : 0.0f;
    if (!(q >= 0)) q = 0;  // also NaN
    idx[i] = static_cast<uint8_t>(std::min<float>(q, static_cast<float>(qmax)));
  }
  PackIndices(idx, dim_, bits_, dst);
  uint8_t* tail = dst + PackedBytes(bits_, dim_);
  std::memcpy(tail, &scale_h, 2);
  std::memcpy(tail + 2, &zero_h, 2);
}

void KvUniformQuantizer::Decode(const uint8_t* src, float* v) const {
  uint8_t idx[kMaxKvHeadDim];
  UnpackIndices(src, dim_, bits_, idx);
  uint16_t scale_h, zero_h;
  const uint8_t* tail = src + PackedBytes(bits_, dim_);
  std::memcpy(&scale_h, tail, 2);
  std::memcpy(&zero_h, tail + 2, 2);
  const float scale = KvHalfToFloat(scale_h), zero = KvHalfToFloat(zero_h);
  for (int i = 0; i < dim_; ++i) v[i] = static_cast<float>(idx[i]) * scale + zero;
}

// ---------------------------------------------------------------------------------------------
// QJL

KvQjl::KvQjl(int dim, uint32_t seed) : d_(dim) {
  if (dim < 8 || dim % 8 != 0 || dim > kMaxKvHeadDim) Die("unsupported QJL dim", dim, 0);
  scale_ = static_cast<float>(std::sqrt(M_PI / 2) / dim);
  s_.resize(static_cast<size_t>(dim) * dim);
  std::mt19937_64 gen(seed);
  const double two_pi = 2 * M_PI;
  for (size_t i = 0; i < s_.size(); i += 2) {
    const double u1 = (static_cast<double>(gen() >> 11) + 0.5) * 0x1.0p-53;  // (0, 1)
    const double u2 = static_cast<double>(gen() >> 11) * 0x1.0p-53;          // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1));
    s_[i] = static_cast<float>(r * std::cos(two_pi * u2));
    if (i + 1 < s_.size()) s_[i + 1] = static_cast<float>(r * std::sin(two_pi * u2));
  }
}

void KvQjl::Signs(const float* r, uint8_t* packed) const {
  for (int k = 0; k < d_; k += 8) {
    uint8_t b = 0;
    for (int j = 0; j < 8; ++j) {
      const float* row = s_.data() + static_cast<size_t>(k + j) * d_;
      float p = 0;
      for (int i = 0; i < d_; ++i) p += row[i] * r[i];
      if (p >= 0) b |= static_cast<uint8_t>(1u << j);
    }
    packed[k / 8] = b;
  }
}

void KvQjl::Project(const float* q, float* sq) const {
  for (int k = 0; k < d_; ++k) {
    const float* row = s_.data() + static_cast<size_t>(k) * d_;
    float p = 0;
    for (int i = 0; i < d_; ++i) p += row[i] * q[i];
    sq[k] = p;
  }
}

void KvQjl::AddReconstruction(const uint8_t* packed, float gamma, float* x) const {
  const float c = scale_ * gamma;
  for (int k = 0; k < d_; ++k) {
    const float z = ((packed[k / 8] >> (k % 8)) & 1) ? c : -c;
    const float* row = s_.data() + static_cast<size_t>(k) * d_;
    for (int i = 0; i < d_; ++i) x[i] += z * row[i];
  }
}

void KvQjl::ExpandSigns(const uint8_t* packed, float gamma, float* out) const {
  const float c = scale_ * gamma;
  for (int k = 0; k < d_; ++k) out[k] = ((packed[k / 8] >> (k % 8)) & 1) ? c : -c;
}

// ---------------------------------------------------------------------------------------------
// KvProdQuantizer

KvProdQuantizer::KvProdQuantizer(const KvMseSpec& mse, uint32_t qjl_seed)
    : mse_(mse), qjl_(mse.dim, qjl_seed) {}

void KvProdQuantizer::Encode(const float* x, uint8_t* dst) const {
  const int d = mse_.spec().dim;
  mse_.Encode(x, dst);
  float r[kMaxKvHeadDim];
  mse_.Decode(dst, r);
  for (int i = 0; i < d; ++i) r[i] = x[i] - r[i];
  const float gamma = Norm(r, d);
  uint8_t* tail = dst + mse_.bytes();
  qjl_.Signs(r, tail);
  std::memcpy(tail + qjl_.sign_bytes(), &gamma, 4);
}

void KvProdQuantizer::Decode(const uint8_t* src, float* x) const {
  mse_.Decode(src, x);
  const uint8_t* tail = src + mse_.bytes();
  float gamma;
  std::memcpy(&gamma, tail + qjl_.sign_bytes(), 4);
  qjl_.AddReconstruction(tail, gamma, x);
}

void KvProdQuantizer::DecodeScoring(const uint8_t* src, float* out) const {
  const int d = mse_.spec().dim;
  mse_.DecodeRotated(src, out);
  const uint8_t* tail = src + mse_.bytes();
  float gamma;
  std::memcpy(&gamma, tail + qjl_.sign_bytes(), 4);
  qjl_.ExpandSigns(tail, gamma, out + d);
}

void KvProdQuantizer::PrepareQuery(const float* q, float* out) const {
  mse_.rotation().Forward(q, out);
  qjl_.Project(q, out + mse_.spec().dim);
}

}  // namespace tq::quant
