#include "engine/kv_cache/kv_codec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/format/dtype.h"
#include "kernels/quant/kv_quant.h"

namespace tq {

void KvCodec::ToAttention(const float* x, int head_dim, float* dst) const {
  if (dst != x) std::memcpy(dst, x, sizeof(float) * head_dim);
}
void KvCodec::PrepareQuery(const float* q, int head_dim, float* dst) const {
  if (dst != q) std::memcpy(dst, q, sizeof(float) * head_dim);
}
void KvCodec::FinishValue(const float* acc, int head_dim, float* dst) const {
  if (dst != acc) std::memcpy(dst, acc, sizeof(float) * head_dim);
}

namespace {

using quant::KvGain;
using quant::KvMseSpec;
using quant::KvScalar;

class Fp32Codec final : public KvCodec {
 public:
  const char* name() const override { return "fp32"; }
  int64_t BytesPerVector(int head_dim) const override { return 4 * static_cast<int64_t>(head_dim); }
  bool lossless() const override { return true; }
  void Encode(const float* src, int head_dim, uint8_t* dst) const override {
    std::memcpy(dst, src, 4 * static_cast<size_t>(head_dim));
  }
  void Decode(const uint8_t* src, int head_dim, float* dst) const override {
    std::memcpy(dst, src, 4 * static_cast<size_t>(head_dim));
  }
};

class Bf16Codec final : public KvCodec {
 public:
  const char* name() const override { return "bf16"; }
  int64_t BytesPerVector(int head_dim) const override { return 2 * static_cast<int64_t>(head_dim); }
  bool lossless() const override { return false; }
  void Encode(const float* src, int head_dim, uint8_t* dst) const override {
    for (int i = 0; i < head_dim; ++i) {
      const uint16_t b = FloatToBf16(src[i]);
      std::memcpy(dst + 2 * i, &b, 2);
    }
  }
  void Decode(const uint8_t* src, int head_dim, float* dst) const override {
    for (int i = 0; i < head_dim; ++i) {
      uint16_t b;
      std::memcpy(&b, src + 2 * i, 2);
      dst[i] = Bf16ToFloat(b);
    }
  }
};

// e4m3 per element; `scaled`: x / s with s = amax/448 per vector, stored as fp32 after the codes.
class Fp8Codec final : public KvCodec {
 public:
  explicit Fp8Codec(bool scaled) : scaled_(scaled) {}
  const char* name() const override { return scaled_ ? "fp8 e4m3 + fp32 scale" : "fp8 e4m3"; }
  int64_t BytesPerVector(int head_dim) const override { return head_dim + (scaled_ ? 4 : 0); }
  bool lossless() const override { return false; }
  void Encode(const float* src, int head_dim, uint8_t* dst) const override {
    float scale = 1.0f;
    if (scaled_) {
      float amax = 0;
      for (int i = 0; i < head_dim; ++i) amax = std::max(amax, std::fabs(src[i]));
      scale = std::isfinite(amax) ? amax / quant::kE4m3Max : 0.0f;
      std::memcpy(dst + head_dim, &scale, 4);
    }
    for (int i = 0; i < head_dim; ++i) dst[i] = scale > 0 ? quant::FloatToE4m3(src[i] / scale) : 0;
  }
  void Decode(const uint8_t* src, int head_dim, float* dst) const override {
    float scale = 1.0f;
    if (scaled_) std::memcpy(&scale, src + head_dim, 4);
    for (int i = 0; i < head_dim; ++i) dst[i] = quant::E4m3ToFloat(src[i]) * scale;
  }

 private:
  bool scaled_;
};

// Codecs built for one head_dim: calling them with another is a programming error.
// A codec bound to one head_dim over a quantizer Q (bytes(), Encode, Decode): the storage half of
// KvCodec, with the head_dim checked on every call; subclasses add the attention space.
template <typename Q>
class BoundCodec : public KvCodec {
 public:
  template <typename... Args>
  BoundCodec(std::string name, int dim, Args&&... args)
      : name_(std::move(name)), dim_(dim), q_(std::forward<Args>(args)...) {}
  const char* name() const override { return name_.c_str(); }
  bool lossless() const override { return false; }
  int64_t BytesPerVector(int head_dim) const override {
    Check(head_dim);
    return q_.bytes();
  }
  void Encode(const float* src, int head_dim, uint8_t* dst) const override {
    Check(head_dim);
    q_.Encode(src, dst);
  }
  void Decode(const uint8_t* src, int head_dim, float* dst) const override {
    Check(head_dim);
    q_.Decode(src, dst);
  }

 protected:
  void Check(int head_dim) const {
    if (head_dim != dim_) {
      std::fprintf(stderr, "KV codec '%s' is built for head_dim %d, called with %d\n", name_.c_str(), dim_, head_dim);
      std::abort();
    }
  }
  std::string name_;
  int dim_;
  Q q_;
};

// PolarQuant / TurboQuant_mse: attention in the rotated space.
class MseCodec final : public BoundCodec<quant::KvMseQuantizer> {
 public:
  MseCodec(std::string name, const KvMseSpec& spec) : BoundCodec(std::move(name), spec.dim, spec) {}
  bool identity_attention() const override { return false; }
  void DecodeAttention(const uint8_t* src, int head_dim, float* dst) const override {
    Check(head_dim);
    q_.DecodeRotated(src, dst);
  }
  void ToAttention(const float* x, int head_dim, float* dst) const override {
    Check(head_dim);
    q_.rotation().Forward(x, dst);
  }
  void PrepareQuery(const float* q, int head_dim, float* dst) const override {
    Check(head_dim);
    q_.rotation().Forward(q, dst);
  }
  void FinishValue(const float* acc, int head_dim, float* dst) const override {
    Check(head_dim);
    q_.rotation().Inverse(acc, dst);
  }
  const quant::KvMseQuantizer* mse_quantizer() const override { return &q_; }
};

// TurboQuant_prod keys: scores in 2·head_dim floats. Key role only.
class ProdCodec final : public BoundCodec<quant::KvProdQuantizer> {
 public:
  ProdCodec(std::string name, const KvMseSpec& mse, uint32_t qjl_seed)
      : BoundCodec(std::move(name), mse.dim, mse, qjl_seed) {}
  bool identity_attention() const override { return false; }
  int AttentionDim(int head_dim) const override { return 2 * head_dim; }
  void DecodeAttention(const uint8_t* src, int head_dim, float* dst) const override {
    Check(head_dim);
    q_.DecodeScoring(src, dst);
  }
  void ToAttention(const float* x, int head_dim, float* dst) const override {
    Check(head_dim);
    q_.mse().rotation().Forward(x, dst);
    std::fill(dst + head_dim, dst + 2 * head_dim, 0.0f);
  }
  void PrepareQuery(const float* q, int head_dim, float* dst) const override {
    Check(head_dim);
    q_.PrepareQuery(q, dst);
  }
  void FinishValue(const float*, int, float*) const override {
    std::fprintf(stderr, "KV codec '%s' stores keys only\n", name_.c_str());
    std::abort();
  }
};

// vLLM's uniform values (scale/zero): the identity attention space.
class UniformCodec final : public BoundCodec<quant::KvUniformQuantizer> {
 public:
  UniformCodec(std::string name, int dim, int bits) : BoundCodec(std::move(name), dim, dim, bits) {}
};

// ---------------------------------------------------------------------------------------------
// Presets

enum class Family { kPlain, kFp8, kVllm, kPlugin };

struct Preset {
  const char* name;
  Family family;
  int key_bits;    // vLLM 8 = fp8 e4m3
  int value_bits;
  int default_sink;
  int default_boundary;
};

// ALGORITHMS.md §4.2 (plugin: sinks 4, boundary 5 with 8-bit keys) and §4.4 (vLLM: first 2 and
// last 2 layers in the native dtype).
constexpr Preset kPresets[] = {
    {"fp32", Family::kPlain, 0, 0, 0, 0},     {"bf16", Family::kPlain, 0, 0, 0, 0},
    {"fp8", Family::kFp8, 0, 0, 0, 0},        {"k8v4", Family::kVllm, 8, 4, 0, 2},
    {"4bit_nc", Family::kVllm, 4, 4, 0, 2},   {"k3v4_nc", Family::kVllm, 3, 4, 0, 2},
    {"3bit_nc", Family::kVllm, 3, 3, 0, 2},   {"turbo4", Family::kPlugin, 4, 4, 4, 5},
    {"turbo3", Family::kPlugin, 3, 3, 4, 5},  {"k4v3", Family::kPlugin, 4, 3, 4, 5},
};
constexpr int kPluginBoundaryKeyBits = 8;
constexpr int kMaxSinkTokens = 1 << 16;

const Preset* FindPreset(absl::string_view name) {
  if (absl::ConsumePrefix(&name, "turboquant_")) {
    for (const Preset& p : kPresets) {
      if (p.family == Family::kVllm && name == p.name) return &p;
    }
    return nullptr;
  }
  for (const Preset& p : kPresets) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

std::string SupportedNames() { return absl::StrJoin(KvCodecNames(), ", "); }

KvMseSpec PluginSpec(int d, int bits, uint32_t seed) {
  KvMseSpec s;
  s.dim = d;
  s.bits = bits;
  s.signs = true;
  s.seed = seed;
  s.gain = KvGain::kNormCorrected;
  s.norm_type = KvScalar::kF32;
  s.ties_up = false;
  return s;
}

KvMseSpec VllmKeySpec(int d, int bits) {
  KvMseSpec s;
  s.dim = d;
  s.bits = bits;
  s.signs = false;
  s.seed = 0;
  s.gain = KvGain::kNormCorrectedAtDecode;
  s.norm_type = KvScalar::kF16;
  s.ties_up = true;
  return s;
}

absl::Status CheckHeadDim(const Preset& p, int head_dim) {
  if (head_dim < 1) return absl::InvalidArgumentError(absl::StrCat("invalid head_dim ", head_dim));
  if (p.family == Family::kPlain || p.family == Family::kFp8) return absl::OkStatus();
  if (!quant::KvRotationSupports(head_dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV codec '", p.name, "' needs head_dim a multiple of 16 in [16, ", quant::kMaxKvHeadDim,
        "] (Hadamard rotation and bit packing); this model has head_dim ", head_dim,
        " (use bf16, fp32 or fp8)"));
  }
  return absl::OkStatus();
}

std::shared_ptr<const KvCodec> MiddleCodec(const Preset& p, KvRole role, int d, bool qjl) {
  const bool key = role == KvRole::kKey;
  switch (p.family) {
    case Family::kPlain:
      if (std::string(p.name) == "fp32") return std::make_shared<Fp32Codec>();
      return std::make_shared<Bf16Codec>();
    case Family::kFp8:
      return std::make_shared<Fp8Codec>(true);
    case Family::kVllm:
      if (!key) return std::make_shared<UniformCodec>(absl::StrCat("uniform ", p.value_bits, "b"), d, p.value_bits);
      if (p.key_bits == 8) return std::make_shared<Fp8Codec>(false);
      return std::make_shared<MseCodec>(absl::StrCat("lloyd-max ", p.key_bits, "b hadamard"), VllmKeySpec(d, p.key_bits));
    case Family::kPlugin:
      if (!key) {
        return std::make_shared<MseCodec>(absl::StrCat("polarquant ", p.value_bits, "b"),
                                          PluginSpec(d, p.value_bits, quant::kKvValueSeed));
      }
      if (qjl) {
        return std::make_shared<ProdCodec>(absl::StrCat("polarquant ", p.key_bits - 1, "b + qjl"),
                                           PluginSpec(d, p.key_bits - 1, quant::kKvKeySeed), quant::kKvQjlSeed);
      }
      return std::make_shared<MseCodec>(absl::StrCat("polarquant ", p.key_bits, "b"),
                                        PluginSpec(d, p.key_bits, quant::kKvKeySeed));
  }
  return nullptr;
}

std::string LayerRanges(const std::vector<int>& layers) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    parts.push_back(i == j ? absl::StrCat(layers[i]) : absl::StrCat(layers[i], "-", layers[j]));
    i = j + 1;
  }
  return absl::StrJoin(parts, ",");
}

}  // namespace

const std::vector<std::string>& KvCodecNames() {
  static const auto* names = [] {
    auto* v = new std::vector<std::string>();
    for (const Preset& p : kPresets) v->push_back(p.name);
    return v;
  }();
  return *names;
}

int64_t KvCacheFormat::BytesPerTokenPerHead() const {
  int64_t total = 0;
  for (int l = 0; l < num_layers(); ++l) {
    total += keys[l]->BytesPerVector(head_dim) + values[l]->BytesPerVector(value_dim());
  }
  return total;
}

std::string KvCacheFormat::Describe() const {
  // Group layers by their (key, value) codec pair, in order of first appearance.
  std::vector<std::pair<const KvCodec*, const KvCodec*>> pairs;
  std::vector<std::vector<int>> layers;
  for (int l = 0; l < num_layers(); ++l) {
    const std::pair<const KvCodec*, const KvCodec*> key{keys[l].get(), values[l].get()};
    auto it = std::find(pairs.begin(), pairs.end(), key);
    if (it == pairs.end()) {
      pairs.push_back(key);
      layers.emplace_back();
      it = pairs.end() - 1;
    }
    layers[it - pairs.begin()].push_back(l);
  }
  std::vector<std::string> parts;
  for (size_t i = 0; i < pairs.size(); ++i) {
    parts.push_back(absl::StrCat("layers ", LayerRanges(layers[i]), ": K ", pairs[i].first->name(), " ",
                                 pairs[i].first->BytesPerVector(head_dim), " B + V ", pairs[i].second->name(), " ",
                                 pairs[i].second->BytesPerVector(value_dim()), " B per vector"));
  }
  std::string out = absl::StrCat(name, " (", absl::StrJoin(parts, "; "));
  if (value_dim() != head_dim) absl::StrAppend(&out, "; keys of ", head_dim, ", values of ", value_dim(), " floats");
  if (sink_tokens > 0) absl::StrAppend(&out, "; first ", sink_tokens, " positions of each sequence bf16");
  absl::StrAppend(&out, ")");
  return out;
}

KvCacheFormat SingleCodecFormat(std::shared_ptr<const KvCodec> codec, int num_layers, int head_dim) {
  KvCacheFormat f;
  f.name = codec->name();
  f.preset = codec->name();
  f.head_dim = head_dim;
  f.keys.assign(num_layers, codec);
  f.values.assign(num_layers, codec);
  return f;
}

absl::StatusOr<KvCacheFormat> MakeKvCacheFormat(absl::string_view spec, int num_layers, int head_dim) {
  const size_t colon = spec.find(':');
  const absl::string_view preset_name = spec.substr(0, colon);
  const Preset* p = FindPreset(preset_name);
  if (p == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown KV cache codec '", preset_name, "' (supported: ", SupportedNames(), ")"));
  }
  if (num_layers < 1) return absl::InvalidArgumentError(absl::StrCat("invalid num_layers ", num_layers));
  if (auto st = CheckHeadDim(*p, head_dim); !st.ok()) return st;
  int sink = p->default_sink, boundary = p->default_boundary;
  bool qjl = false;
  if (colon != absl::string_view::npos) {
    if (p->family == Family::kPlain) {
      return absl::InvalidArgumentError(absl::StrCat("KV cache codec '", p->name, "' takes no options"));
    }
    for (absl::string_view opt : absl::StrSplit(spec.substr(colon + 1), ',', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(opt, absl::MaxSplits('=', 1));
      int value = 0;
      if (!absl::SimpleAtoi(kv.second, &value) || value < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("KV cache codec option '", opt, "': expected NAME=N with N >= 0"));
      }
      if (kv.first == "sink") {
        if (value > kMaxSinkTokens) return absl::InvalidArgumentError(absl::StrCat("sink=", value, " is too large"));
        sink = value;
      } else if (kv.first == "boundary") {
        boundary = value;
      } else if (kv.first == "qjl") {
        if (p->family != Family::kPlugin || value > 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("qjl=0|1 applies to turbo4, turbo3 and k4v3 only; got '", spec, "'"));
        }
        qjl = value == 1;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown KV cache codec option '", kv.first, "' (sink=N, boundary=N, qjl=0|1)"));
      }
    }
  }
  KvCacheFormat f;
  f.preset = p->name;
  f.head_dim = head_dim;
  f.name = p->name;
  if (p->family != Family::kPlain) {
    f.name = absl::StrCat(p->name, ":", p->family == Family::kPlugin ? absl::StrCat("qjl=", qjl ? 1 : 0, ",") : "",
                          "sink=", sink, ",boundary=", boundary);
  }
  f.qjl = qjl;
  f.boundary_layers = boundary;
  const auto key = MiddleCodec(*p, KvRole::kKey, head_dim, qjl);
  const auto value = MiddleCodec(*p, KvRole::kValue, head_dim, qjl);
  std::shared_ptr<const KvCodec> bkey = key, bvalue = value;
  if (boundary > 0) {
    if (p->family == Family::kPlugin) {
      bkey = std::make_shared<MseCodec>(absl::StrCat("polarquant ", kPluginBoundaryKeyBits, "b"),
                                        PluginSpec(head_dim, kPluginBoundaryKeyBits, quant::kKvKeySeed));
    } else if (p->family != Family::kPlain) {
      bkey = bvalue = std::make_shared<Bf16Codec>();
    }
  }
  for (int l = 0; l < num_layers; ++l) {
    const bool edge = l < boundary || l >= num_layers - boundary;
    f.keys.push_back(edge ? bkey : key);
    f.values.push_back(edge ? bvalue : value);
  }
  if (sink > 0) {
    f.sink_tokens = sink;
    f.sink = std::make_shared<Bf16Codec>();
  }
  return f;
}

absl::StatusOr<KvCacheFormat> MakeMlaKvCacheFormat(absl::string_view spec, int num_layers, int latent_dim,
                                                   int rope_dim) {
  if (rope_dim < 1) return absl::InvalidArgumentError(absl::StrCat("invalid MLA rope width ", rope_dim));
  absl::StatusOr<KvCacheFormat> made = MakeKvCacheFormat(spec, num_layers, latent_dim);
  if (!made.ok()) return made.status();
  KvCacheFormat f = *std::move(made);
  if (f.qjl) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache codec '", spec, "': qjl=1 compresses keys, and an MLA cache has none to compress (the latent is ",
        "stored with the value codec, k_pe uncompressed); use qjl=0"));
  }
  std::shared_ptr<const KvCodec> pass;
  if (f.preset == "fp32") {
    pass = std::make_shared<Fp32Codec>();
  } else {
    pass = std::make_shared<Bf16Codec>();
  }
  f.keys.assign(num_layers, pass);
  f.value_head_dim = latent_dim;
  f.head_dim = rope_dim;
  return f;
}

absl::StatusOr<std::unique_ptr<KvCodec>> MakeKvCodec(absl::string_view name) {
  if (name == "fp32") return std::unique_ptr<KvCodec>(new Fp32Codec());
  if (name == "bf16") return std::unique_ptr<KvCodec>(new Bf16Codec());
  if (name == "fp8") return std::unique_ptr<KvCodec>(new Fp8Codec(true));
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown single KV codec '", name, "' (supported: bf16, fp32, fp8; presets with separate key and value ",
      "codecs, ", SupportedNames(), ", are made by MakeKvCacheFormat)"));
}

absl::StatusOr<std::shared_ptr<const KvCodec>> MakeKvCodec(absl::string_view spec, KvRole role, int head_dim) {
  // Parse once to learn the boundary, then take a layer that is not a boundary layer.
  absl::StatusOr<KvCacheFormat> f = MakeKvCacheFormat(spec, 1, head_dim);
  if (!f.ok()) return f.status();
  const int b = f->boundary_layers;
  if (b > 0) {
    f = MakeKvCacheFormat(spec, 2 * b + 1, head_dim);
    if (!f.ok()) return f.status();
  }
  return role == KvRole::kKey ? f->keys[b] : f->values[b];
}

}  // namespace tq
