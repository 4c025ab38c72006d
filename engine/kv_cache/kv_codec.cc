#include "engine/kv_cache/kv_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/format/dtype.h"

namespace tq {
namespace {

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

}  // namespace

absl::StatusOr<std::unique_ptr<KvCodec>> MakeKvCodec(absl::string_view name) {
  if (name == "fp32") return std::unique_ptr<KvCodec>(new Fp32Codec());
  if (name == "bf16") return std::unique_ptr<KvCodec>(new Bf16Codec());
  return absl::InvalidArgumentError(
      absl::StrCat("unknown KV cache codec '", name, "' (supported: bf16, fp32)"));
}

}  // namespace tq
