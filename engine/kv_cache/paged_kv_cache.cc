#include "engine/kv_cache/paged_kv_cache.h"

#include "absl/strings/str_cat.h"

namespace tq {

absl::StatusOr<std::unique_ptr<PagedKvCache>> PagedKvCache::Create(const KvCacheOptions& options,
                                                                   std::unique_ptr<KvCodec> codec) {
  if (codec == nullptr) return absl::InvalidArgumentError("KV cache needs a codec");
  if (options.num_layers < 1 || options.num_kv_heads < 1 || options.head_dim < 1 ||
      options.block_size < 1 || options.num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid KV cache shape: layers ", options.num_layers, ", kv heads ", options.num_kv_heads,
        ", head_dim ", options.head_dim, ", block_size ", options.block_size, ", blocks ",
        options.num_blocks));
  }
  std::unique_ptr<PagedKvCache> c(new PagedKvCache());
  c->options_ = options;
  c->codec_ = std::move(codec);
  c->vec_bytes_ = c->codec_->BytesPerVector(options.head_dim);
  const int64_t pool_bytes = options.num_blocks * options.block_size * options.num_kv_heads * c->vec_bytes_;
  try {
    c->k_pools_.resize(options.num_layers);
    c->v_pools_.resize(options.num_layers);
    for (int l = 0; l < options.num_layers && options.host_storage; ++l) {
      c->k_pools_[l].assign(pool_bytes, 0);
      c->v_pools_[l].assign(pool_bytes, 0);
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate a KV cache of ",
                                                     2 * options.num_layers * pool_bytes, " bytes"));
  }
  c->free_.reserve(options.num_blocks);
  // Hand out low block numbers first.
  for (int64_t b = options.num_blocks - 1; b >= 0; --b) c->free_.push_back(b);
  return c;
}

SeqHandle PagedKvCache::AddSequence() {
  SeqHandle h = next_handle_++;
  tables_[h];
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
}

void PagedKvCache::Write(SeqHandle seq, int layer, int64_t pos, const float* k, const float* v) {
  const std::vector<int64_t>& table = tables_.at(seq);
  const int64_t block = table.at(pos / options_.block_size);
  const int64_t slot = pos % options_.block_size;
  for (int h = 0; h < options_.num_kv_heads; ++h) {
    codec_->Encode(k + h * options_.head_dim, options_.head_dim, Slot(k_pools_[layer], block, slot, h));
    codec_->Encode(v + h * options_.head_dim, options_.head_dim, Slot(v_pools_[layer], block, slot, h));
  }
}

void PagedKvCache::Gather(SeqHandle seq, int layer, int kv_head, int64_t begin, int64_t end,
                          float* k_out, float* v_out) const {
  const std::vector<int64_t>& table = tables_.at(seq);
  for (int64_t p = begin; p < end; ++p) {
    const int64_t block = table.at(p / options_.block_size);
    const int64_t slot = p % options_.block_size;
    const int64_t row = (p - begin) * options_.head_dim;
    codec_->Decode(Slot(k_pools_[layer], block, slot, kv_head), options_.head_dim, k_out + row);
    codec_->Decode(Slot(v_pools_[layer], block, slot, kv_head), options_.head_dim, v_out + row);
  }
}

}  // namespace tq
