#include "engine/kv_cache/paged_kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tq {

absl::StatusOr<std::unique_ptr<PagedKvCache>> PagedKvCache::Create(const KvCacheOptions& options,
                                                                   std::unique_ptr<KvCodec> codec) {
  if (codec == nullptr) return absl::InvalidArgumentError("KV cache needs a codec");
  KvCacheFormat format = SingleCodecFormat(std::shared_ptr<const KvCodec>(std::move(codec)),
                                           std::max(options.num_layers, 0), options.head_dim);
  format.value_head_dim = options.value_head_dim;
  return Create(options, std::move(format));
}

absl::StatusOr<std::unique_ptr<PagedKvCache>> PagedKvCache::Create(const KvCacheOptions& options,
                                                                   KvCacheFormat format) {
  if (options.num_layers < 1 || options.num_kv_heads < 1 || options.head_dim < 1 || options.value_head_dim < 0 ||
      options.block_size < 1 || options.num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid KV cache shape: layers ", options.num_layers, ", kv heads ", options.num_kv_heads,
        ", head_dim ", options.head_dim, ", value_head_dim ", options.value_head_dim, ", block_size ",
        options.block_size, ", blocks ", options.num_blocks));
  }
  if (format.num_layers() != options.num_layers || format.head_dim != options.head_dim ||
      format.value_dim() != options.value_dim() || static_cast<int>(format.values.size()) != options.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache format '", format.name, "' is for ", format.num_layers(), " layers of head_dim ", format.head_dim,
        " (values ", format.value_dim(), "), the cache has ", options.num_layers, " of ", options.head_dim,
        " (values ", options.value_dim(), ")"));
  }
  if (format.sink_tokens > 0 && format.sink == nullptr) {
    return absl::InvalidArgumentError("KV cache format has sink positions but no sink codec");
  }
  std::unique_ptr<PagedKvCache> c(new PagedKvCache());
  c->options_ = options;
  c->format_ = std::move(format);
  const int d = options.head_dim, vd = options.value_dim();
  const int64_t slots = options.num_blocks * options.block_size * options.num_kv_heads;
  int64_t total = 0;
  for (int l = 0; l < options.num_layers; ++l) {
    c->k_bytes_.push_back(c->format_.keys[l]->BytesPerVector(d));
    c->v_bytes_.push_back(c->format_.values[l]->BytesPerVector(vd));
    total += slots * (c->k_bytes_.back() + c->v_bytes_.back());
  }
  if (c->format_.sink_tokens > 0) {
    c->sink_k_bytes_ = c->format_.sink->BytesPerVector(d);
    c->sink_v_bytes_ = c->format_.sink->BytesPerVector(vd);
    c->sink_bytes_ = static_cast<int64_t>(options.num_layers) * c->format_.sink_tokens * options.num_kv_heads *
                     (c->sink_k_bytes_ + c->sink_v_bytes_);
  }
  try {
    c->k_pools_.resize(options.num_layers);
    c->v_pools_.resize(options.num_layers);
    for (int l = 0; l < options.num_layers && options.host_storage; ++l) {
      c->k_pools_[l].assign(slots * c->k_bytes_[l], 0);
      c->v_pools_[l].assign(slots * c->v_bytes_[l], 0);
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate a KV cache of ", total, " bytes"));
  }
  c->free_.reserve(options.num_blocks);
  // Hand out low block numbers first.
  for (int64_t b = options.num_blocks - 1; b >= 0; --b) c->free_.push_back(b);
  return c;
}

SeqHandle PagedKvCache::AddSequence() {
  SeqHandle h = next_handle_++;
  tables_[h];
  if (sink_bytes_ > 0 && options_.host_storage) sinks_[h].assign(sink_bytes_, 0);
  return h;
}

bool PagedKvCache::Reserve(SeqHandle seq, int64_t num_tokens) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return false;
  std::vector<int64_t>& table = it->second;
  const int64_t need = BlocksForTokens(num_tokens) - static_cast<int64_t>(table.size());
  if (need <= 0) return true;
  if (need > num_free_blocks()) return false;
  for (int64_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

const std::vector<int64_t>& PagedKvCache::BlockTable(SeqHandle seq) const {
  static const std::vector<int64_t> kNone;
  auto it = tables_.find(seq);
  return it == tables_.end() ? kNone : it->second;
}

int64_t PagedKvCache::Capacity(SeqHandle seq) const {
  auto it = tables_.find(seq);
  return it == tables_.end() ? 0 : static_cast<int64_t>(it->second.size()) * options_.block_size;
}

void PagedKvCache::FreeSequence(SeqHandle seq) {
  auto it = tables_.find(seq);
  if (it == tables_.end()) return;
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) free_.push_back(*b);
  tables_.erase(it);
  sinks_.erase(seq);
}

const uint8_t* PagedKvCache::Locate(SeqHandle seq, const std::vector<int64_t>& table, int layer, bool value,
                                    int64_t pos, int head) const {
  const int64_t h = options_.num_kv_heads;
  if (pos < format_.sink_tokens) {
    const std::vector<uint8_t>& store = sinks_.at(seq);
    const int64_t keys = format_.sink_tokens * h * sink_k_bytes_;  // one layer's sink keys
    const int64_t at = layer * (keys + format_.sink_tokens * h * sink_v_bytes_) + (value ? keys : 0);
    return store.data() + at + (pos * h + head) * (value ? sink_v_bytes_ : sink_k_bytes_);
  }
  const int64_t block = table.at(pos / options_.block_size);
  const int64_t slot = pos % options_.block_size;
  const int64_t bytes = value ? v_bytes_[layer] : k_bytes_[layer];
  const std::vector<uint8_t>& pool = value ? v_pools_[layer] : k_pools_[layer];
  return pool.data() + ((block * options_.block_size + slot) * h + head) * bytes;
}

void PagedKvCache::Write(SeqHandle seq, int layer, int64_t pos, const float* k, const float* v) {
  const std::vector<int64_t>& table = tables_.at(seq);
  const int d = options_.head_dim, vd = options_.value_dim();
  const bool sink = pos < format_.sink_tokens;
  const KvCodec& kc = sink ? *format_.sink : *format_.keys[layer];
  const KvCodec& vc = sink ? *format_.sink : *format_.values[layer];
  for (int h = 0; h < options_.num_kv_heads; ++h) {
    kc.Encode(k + h * d, d, Locate(seq, table, layer, false, pos, h));
    vc.Encode(v + h * vd, vd, Locate(seq, table, layer, true, pos, h));
  }
}

void PagedKvCache::Gather(SeqHandle seq, int layer, int kv_head, int64_t begin, int64_t end,
                          float* k_out, float* v_out) const {
  const std::vector<int64_t>& table = tables_.at(seq);
  const int d = options_.head_dim, vd = options_.value_dim();
  for (int64_t p = begin; p < end; ++p) {
    const bool sink = p < format_.sink_tokens;
    const KvCodec& kc = sink ? *format_.sink : *format_.keys[layer];
    const KvCodec& vc = sink ? *format_.sink : *format_.values[layer];
    kc.Decode(Locate(seq, table, layer, false, p, kv_head), d, k_out + (p - begin) * d);
    vc.Decode(Locate(seq, table, layer, true, p, kv_head), vd, v_out + (p - begin) * vd);
  }
}

void PagedKvCache::GatherAttention(SeqHandle seq, int layer, int kv_head, int64_t begin, int64_t end,
                                   float* k_out, float* v_out) const {
  const std::vector<int64_t>& table = tables_.at(seq);
  const int d = options_.head_dim, vd = options_.value_dim();
  const KvCodec& kc = *format_.keys[layer];
  const KvCodec& vc = *format_.values[layer];
  const int kd = kc.AttentionDim(d);
  std::vector<float> exact;
  for (int64_t p = begin; p < end; ++p) {
    float* krow = k_out + (p - begin) * kd;
    float* vrow = v_out + (p - begin) * vd;
    if (p < format_.sink_tokens) {
      exact.resize(d + vd);
      format_.sink->Decode(Locate(seq, table, layer, false, p, kv_head), d, exact.data());
      format_.sink->Decode(Locate(seq, table, layer, true, p, kv_head), vd, exact.data() + d);
      kc.ToAttention(exact.data(), d, krow);
      vc.ToAttention(exact.data() + d, vd, vrow);
      continue;
    }
    kc.DecodeAttention(Locate(seq, table, layer, false, p, kv_head), d, krow);
    vc.DecodeAttention(Locate(seq, table, layer, true, p, kv_head), vd, vrow);
  }
}

}  // namespace tq
