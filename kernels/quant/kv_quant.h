// File: kernels/quant/kv_quant.h
//
// Scalar CPU reference of the KV-cache vector quantizers (ALGORITHMS.md §4). One key or value
// vector (head_dim = d floats of one KV head at one position) is compressed on its own; the
// engine's KV codecs (engine/kv_cache/kv_codec.h) compose these into the named presets.
//
//   KvMseQuantizer      TurboQuant_mse / PolarQuant (§4.1, §4.2, §4.4 keys):
//                         n = ||x||, u = x/n, y = R·u, idx_i = bucket(y_i) on the Lloyd–Max
//                         grid for N(0, 1/d) (kernels/quant/codebook.h), stored gain g:
//                           raw       g = n                         (TurboQuant paper)
//                           nc        g = n / ||c[idx]||            (plugin: corrected at encode)
//                           nc-decode g = n, decode uses c/||c||     (vLLM #38479: at decode)
//                         x̂ = g · Rᵀ c[idx].  Layout: [codes PackedBytes(b, d) | g (fp32 or fp16)]
//   KvUniformQuantizer  vLLM #38479 values (§4.4): scale = (max−min)/(2^b−1), zero = min, both
//                         fp16; q = clamp(⌊(v − zero)/scale + 0.5⌋, 0, 2^b−1); v̂ = q·scale + zero.
//                         Layout: [codes PackedBytes(b, d) | fp16 scale | fp16 zero]
//   KvQjl               QJL sign sketch (§4.1, §4.2): S ∈ R^{d×d}, S_ij ~ N(0,1) from a fixed seed;
//                         z = sign(S·r) packed 8 per byte, LSB first, bit = 1 when S_i·r >= 0;
//                         r̂ = (√(π/2)/d)·γ·Sᵀz with γ = ||r||.
//   KvProdQuantizer     TurboQuant_prod: (b−1)-bit KvMseQuantizer, then QJL on the residual
//                         r = x − x̂_mse.  Layout: [mse codes | mse gain | signs d/8 | fp32 γ]
//                         (plugin turbo4 K at d = 128: 48 + 4 + 16 + 4 = 72 bytes).
//
// Rotation R (KvRotation): the natural-order Walsh–Hadamard transform normalized by 1/√B, either
// plain (vLLM keys: "pure Hadamard H/√d") or D2·H·D1 with ±1 signs drawn from mt19937(seed) as
// kernels/quant/rotation.h does (plugin: seed 42 for K, 542 for V) — for d a power of two and seed
// 42 this is exactly RotateForwardReference(x, y, d, d). head_dim must be a multiple of 16 (and
// at most kMaxKvHeadDim); when it is not a power of two (48, 96, ...) H is block-diagonal with
// blocks of B = the largest power of two dividing d (our extension, as §1.6 does for weights;
// every rotated coordinate still has variance 1/d, so the same codebook applies).
//
// Score in the rotated space: for an orthonormal R, q·x̂ = (R q)·(g c[idx]), so attention can
// rotate the query once and never inverse-rotate keys (DecodeRotated); values are accumulated
// rotated and inverse-rotated once per head.
//
// Usage:
//   KvMseQuantizer kq({.dim = 128, .bits = 4, .signs = true, .seed = kKvKeySeed,
//                      .gain = KvGain::kNormCorrected, .norm_type = KvScalar::kF32});
//   std::vector<uint8_t> code(kq.bytes());
//   kq.Encode(k, code.data());
//   kq.Decode(code.data(), k_hat);
#ifndef TQSERVE_KERNELS_QUANT_KV_QUANT_H_
#define TQSERVE_KERNELS_QUANT_KV_QUANT_H_

#include <cstdint>
#include <vector>

#include "kernels/quant/codebook.h"

namespace tq::quant {

inline constexpr int kMaxKvHeadDim = 1024;
// Seeds of the plugin's KV path (ALGORITHMS.md §4.2).
inline constexpr uint32_t kKvKeySeed = 42;
inline constexpr uint32_t kKvValueSeed = 542;
inline constexpr uint32_t kKvQjlSeed = 1042;

// IEEE binary16, round to nearest even, overflow to infinity (torch `.half()`).
uint16_t KvFloatToHalf(float f);
float KvHalfToFloat(uint16_t h);

// float8 e4m3fn (bias 7, no infinities, max ±448, NaN = 0x7f/0xff): round to nearest even,
// saturating to ±448 (torch's cast would give NaN beyond the range); NaN maps to 0x7f.
uint8_t FloatToE4m3(float f);
float E4m3ToFloat(uint8_t b);
inline constexpr float kE4m3Max = 448.0f;

// True if the rotated quantizers support head_dim d: 16 <= d <= kMaxKvHeadDim, d % 16 == 0.
bool KvRotationSupports(int d);
// Hadamard block of a supported d: the largest power of two dividing d.
int KvRotationBlock(int d);

class KvRotation {
 public:
  // Requires KvRotationSupports(d). signs = false: y = H·x (vLLM keys); true: y = D2·H·D1·x with
  // signs1 then signs2 drawn from mt19937(seed), 2·(next() % 2) − 1.
  KvRotation(int d, bool signs, uint32_t seed);
  int dim() const { return d_; }
  int block() const { return block_; }
  void Forward(const float* x, float* y) const;   // y = R x   (x == y allowed)
  void Inverse(const float* y, float* x) const;   // x = Rᵀ y  (x == y allowed)
  // The factors of R = D2·H·D1 / divisor (per block): empty signs when signs = false.
  const std::vector<float>& signs1() const { return s1_; }
  const std::vector<float>& signs2() const { return s2_; }
  // D1 then D2 in one array (2·dim floats; empty without signs), as the CUDA kernels take them
  // (kernels/cuda/kv_attention.h KvVectorFormat::signs).
  std::vector<float> signs12() const {
    std::vector<float> s = s1_;
    s.insert(s.end(), s2_.begin(), s2_.end());
    return s;
  }
  float divisor() const { return div_; }

 private:
  int d_, block_;
  float div_;
  std::vector<float> s1_, s2_;  // empty: no signs
};

enum class KvGain {
  kRaw,                   // g = ||x||
  kNormCorrected,         // g = ||x|| / ||c[idx]||, stored (plugin)
  kNormCorrectedAtDecode  // g = ||x|| stored; decode divides by ||c[idx]|| (vLLM #38479)
};
enum class KvScalar { kF32, kF16 };
inline int KvScalarBytes(KvScalar t) { return t == KvScalar::kF32 ? 4 : 2; }

struct KvMseSpec {
  int dim = 128;
  int bits = 4;            // 1, 2, 3, 4 or 8
  bool signs = true;       // D1/D2 of the rotation (plugin); false = plain Hadamard (vLLM)
  uint32_t seed = kKvKeySeed;
  KvGain gain = KvGain::kNormCorrected;
  KvScalar norm_type = KvScalar::kF32;
  bool ties_up = false;    // a value on a boundary: false = lower index (torch searchsorted,
                           // plugin), true = upper index (vLLM `y >= mid`)
};

// True if bits is one the KV quantizers pack (1, 2, 3, 4, 8).
bool KvBitsSupported(int bits);

class KvMseQuantizer {
 public:
  // Requires KvRotationSupports(spec.dim) and KvBitsSupported(spec.bits).
  explicit KvMseQuantizer(const KvMseSpec& spec);
  const KvMseSpec& spec() const { return spec_; }
  const KvRotation& rotation() const { return rot_; }
  const Codebook& codebook() const { return *cb_; }
  int64_t code_bytes() const;
  int64_t bytes() const { return code_bytes() + KvScalarBytes(spec_.norm_type); }

  void Encode(const float* x, uint8_t* dst) const;
  // g · c[idx], the reconstruction in the rotated space (d floats).
  void DecodeRotated(const uint8_t* src, float* y) const;
  // g · Rᵀ c[idx] (d floats).
  void Decode(const uint8_t* src, float* x) const;
  // Bucket index of one rotated coordinate (exposed for tests).
  int Bucket(float y) const;

 private:
  KvMseSpec spec_;
  KvRotation rot_;
  const Codebook* cb_;
};

class KvUniformQuantizer {
 public:
  // dim >= 1 with PackedBytes(bits, dim) whole; bits in {2, 3, 4, 8}.
  KvUniformQuantizer(int dim, int bits);
  int dim() const { return dim_; }
  int bits() const { return bits_; }
  int64_t bytes() const;
  void Encode(const float* v, uint8_t* dst) const;
  void Decode(const uint8_t* src, float* v) const;

 private:
  int dim_, bits_;
};

class KvQjl {
 public:
  // dim a multiple of 8. S is generated from mt19937_64(seed) by Box–Muller (our generator:
  // the plugin draws S with torch.randn, which a C++ build cannot reproduce bit for bit; any
  // fixed Gaussian S gives the same statistics).
  KvQjl(int dim, uint32_t seed);
  int dim() const { return d_; }
  int64_t sign_bytes() const { return d_ / 8; }
  // √(π/2)/d.
  float scale() const { return scale_; }
  // z = sign(S r), packed.
  void Signs(const float* r, uint8_t* packed) const;
  // S q (d floats).
  void Project(const float* q, float* sq) const;
  // x += scale · γ · Sᵀ z.
  void AddReconstruction(const uint8_t* packed, float gamma, float* x) const;
  // out[i] = scale · γ · z_i (±): the key side of ⟨S q, z⟩ scoring.
  void ExpandSigns(const uint8_t* packed, float gamma, float* out) const;

 private:
  int d_;
  float scale_;
  std::vector<float> s_;  // row-major d x d
};

class KvProdQuantizer {
 public:
  // mse.bits is the MSE stage's width (b − 1 for a b-bit budget).
  KvProdQuantizer(const KvMseSpec& mse, uint32_t qjl_seed);
  const KvMseQuantizer& mse() const { return mse_; }
  const KvQjl& qjl() const { return qjl_; }
  int64_t bytes() const { return mse_.bytes() + qjl_.sign_bytes() + 4; }
  void Encode(const float* x, uint8_t* dst) const;
  // x̂ = x̂_mse + (√(π/2)/d)·γ·Sᵀz.
  void Decode(const uint8_t* src, float* x) const;
  // Scoring space of 2d floats: key [g·c[idx] | scale·γ·z], query [R q | S q]; their dot
  // product is q·x̂.
  void DecodeScoring(const uint8_t* src, float* out) const;
  void PrepareQuery(const float* q, float* out) const;

 private:
  KvMseQuantizer mse_;
  KvQjl qjl_;
};

}  // namespace tq::quant

#endif  // TQSERVE_KERNELS_QUANT_KV_QUANT_H_
