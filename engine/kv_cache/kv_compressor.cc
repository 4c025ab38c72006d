#include "engine/kv_cache/kv_compressor.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tq {

absl::StatusOr<KvCompressor> KvCompressor::Create(absl::string_view spec, int head_dim) {
  // A model deep enough that its middle layer is not a boundary layer.
  absl::StatusOr<KvCacheFormat> f = MakeKvCacheFormat(spec, 1, head_dim);
  if (!f.ok()) return f.status();
  const int b = f->boundary_layers;
  return Create(spec, head_dim, 2 * b + 1, b);
}

absl::StatusOr<KvCompressor> KvCompressor::Create(absl::string_view spec, int head_dim, int num_layers, int layer) {
  if (layer < 0 || layer >= num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " outside [0, ", num_layers, ")"));
  }
  absl::StatusOr<KvCacheFormat> f = MakeKvCacheFormat(spec, num_layers, head_dim);
  if (!f.ok()) return f.status();
  KvCompressor c;
  c.name_ = f->name;
  c.head_dim_ = head_dim;
  c.key_ = f->keys[layer];
  c.value_ = f->values[layer];
  return c;
}

void KvCompressor::CompressKeys(const float* k, int64_t n, uint8_t* out) const {
  const int64_t b = key_bytes();
  for (int64_t j = 0; j < n; ++j) key_->Encode(k + j * head_dim_, head_dim_, out + j * b);
}

void KvCompressor::DecompressKeys(const uint8_t* codes, int64_t n, float* out) const {
  const int64_t b = key_bytes();
  for (int64_t j = 0; j < n; ++j) key_->Decode(codes + j * b, head_dim_, out + j * head_dim_);
}

void KvCompressor::CompressValues(const float* v, int64_t n, uint8_t* out) const {
  const int64_t b = value_bytes();
  for (int64_t j = 0; j < n; ++j) value_->Encode(v + j * head_dim_, head_dim_, out + j * b);
}

void KvCompressor::DecompressValues(const uint8_t* codes, int64_t n, float* out) const {
  const int64_t b = value_bytes();
  for (int64_t j = 0; j < n; ++j) value_->Decode(codes + j * b, head_dim_, out + j * head_dim_);
}

void KvCompressor::ScoreKeys(const float* q, const uint8_t* keys, int64_t n, float* scores) const {
  const int kd = key_->AttentionDim(head_dim_);
  const int64_t b = key_bytes();
  std::vector<float> qa(kd), ka(kd);
  key_->PrepareQuery(q, head_dim_, qa.data());
  for (int64_t j = 0; j < n; ++j) {
    key_->DecodeAttention(keys + j * b, head_dim_, ka.data());
    double s = 0;
    for (int i = 0; i < kd; ++i) s += static_cast<double>(qa[i]) * ka[i];
    scores[j] = static_cast<float>(s);
  }
}

void KvCompressor::AccumulateValues(const float* w, const uint8_t* values, int64_t n, float* out) const {
  const int64_t b = value_bytes();
  std::vector<float> acc(head_dim_, 0.0f), va(head_dim_);
  for (int64_t j = 0; j < n; ++j) {
    value_->DecodeAttention(values + j * b, head_dim_, va.data());
    for (int i = 0; i < head_dim_; ++i) acc[i] += w[j] * va[i];
  }
  value_->FinishValue(acc.data(), head_dim_, out);
}

}  // namespace tq
