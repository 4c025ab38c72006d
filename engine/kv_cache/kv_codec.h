// File: engine/kv_cache/kv_codec.h
//
// How one key or value vector (head_dim floats of one KV head at one position) is stored in the
// paged KV cache. A codec fixes the bytes per vector and converts between fp32 and its storage
// form; the cache and the attention kernels only see this interface, so compressed codecs
// (TurboQuant, later) slot in without touching them.
//
// Codecs now: "fp32" (exact) and "bf16" (round to nearest even; what BF16 serving stores).
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(std::unique_ptr<KvCodec> codec, MakeKvCodec("bf16"));
//   codec->Encode(k, head_dim, dst);  codec->Decode(dst, head_dim, k_back);
#ifndef TQSERVE_ENGINE_KV_CACHE_KV_CODEC_H_
#define TQSERVE_ENGINE_KV_CACHE_KV_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tq {

class KvCodec {
 public:
  virtual ~KvCodec() = default;
  virtual const char* name() const = 0;
  // Storage bytes of one vector of `head_dim` floats.
  virtual int64_t BytesPerVector(int head_dim) const = 0;
  // True if Decode(Encode(x)) == x for every finite x.
  virtual bool lossless() const = 0;
  virtual void Encode(const float* src, int head_dim, uint8_t* dst) const = 0;
  virtual void Decode(const uint8_t* src, int head_dim, float* dst) const = 0;
};

// "fp32" or "bf16"; anything else is InvalidArgument listing the supported names.
absl::StatusOr<std::unique_ptr<KvCodec>> MakeKvCodec(absl::string_view name);

}  // namespace tq

#endif  // TQSERVE_ENGINE_KV_CACHE_KV_CODEC_H_
