// File: engine/kv_cache/kv_compressor.h
//
// Standalone compression of key and value vectors with the KV cache's codecs, outside the paged
// cache: the same names and options as --kv-codec (kv_codec.h), one layer's codecs (a middle
// layer unless told otherwise; boundary layers differ). Sink positions are a cache policy and do
// not apply here.
//
// Scoring and accumulation work on the compressed bytes in the codec's attention space — the
// query is rotated once, keys are never inverse-rotated, the value sum is inverse-rotated once —
// and equal, up to float rounding, what the decompressed vectors give.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(KvCompressor c, KvCompressor::Create("4bit_nc", 128));
//   std::vector<uint8_t> k_codes(n * c.key_bytes());
//   c.CompressKeys(k, n, k_codes.data());                 // k: [n, 128] floats
//   c.ScoreKeys(q, k_codes.data(), n, scores);            // scores[j] = q · k̂_j
//   c.DecompressKeys(k_codes.data(), n, k_hat);
#ifndef TQSERVE_ENGINE_KV_CACHE_KV_COMPRESSOR_H_
#define TQSERVE_ENGINE_KV_CACHE_KV_COMPRESSOR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/kv_cache/kv_codec.h"

namespace tq {

class KvCompressor {
 public:
  // A middle layer's codecs. InvalidArgument for an unknown name, a bad option or a head_dim the
  // codec cannot store (e.g. "KV codec 'turbo3' needs head_dim a multiple of 16 ...").
  static absl::StatusOr<KvCompressor> Create(absl::string_view spec, int head_dim);
  // Layer `layer` of a model of `num_layers` layers (boundary layers use their own codecs).
  static absl::StatusOr<KvCompressor> Create(absl::string_view spec, int head_dim, int num_layers, int layer);

  const std::string& name() const { return name_; }  // canonical, with every option
  int head_dim() const { return head_dim_; }
  const KvCodec& key_codec() const { return *key_; }
  const KvCodec& value_codec() const { return *value_; }
  int64_t key_bytes() const { return key_->BytesPerVector(head_dim_); }
  int64_t value_bytes() const { return value_->BytesPerVector(head_dim_); }
  // (K + V) bytes of bf16 over (K + V) bytes of this codec.
  double RatioVsBf16() const {
    return 4.0 * head_dim_ / static_cast<double>(key_bytes() + value_bytes());
  }

  // n vectors: [n, head_dim] floats <-> [n, key_bytes()] (or value_bytes()) bytes.
  void CompressKeys(const float* k, int64_t n, uint8_t* out) const;
  void DecompressKeys(const uint8_t* codes, int64_t n, float* out) const;
  void CompressValues(const float* v, int64_t n, uint8_t* out) const;
  void DecompressValues(const uint8_t* codes, int64_t n, float* out) const;

  // scores[j] = q · k̂_j for n compressed keys.
  void ScoreKeys(const float* q, const uint8_t* keys, int64_t n, float* scores) const;
  // out[head_dim] = Σ_j w[j] · v̂_j for n compressed values.
  void AccumulateValues(const float* w, const uint8_t* values, int64_t n, float* out) const;

 private:
  KvCompressor() = default;
  std::string name_;
  int head_dim_ = 0;
  std::shared_ptr<const KvCodec> key_, value_;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_KV_CACHE_KV_COMPRESSOR_H_
