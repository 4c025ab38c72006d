// File: engine/kv_cache/paged_kv_cache.h
//
// A paged KV cache: memory is a pool of fixed-size blocks of `block_size` token positions; a
// free list hands blocks out and takes them back; each sequence owns a block table (its blocks
// in position order), so sequences grow without copying and a finished or aborted sequence
// returns all its blocks at once.
//
// Layout (per layer, for K and for V separately), bytes:
//   [num_blocks, block_size, num_kv_heads, codec(layer).BytesPerVector(head_dim or value_dim())]
// Keys are head_dim floats, values value_dim() floats (equal but for MLA latents: k_pe and c).
// Position p of a sequence lives in block table[p / block_size], slot p % block_size. Keys and
// values, and each layer, may use different codecs (a KvCacheFormat: compressed presets, boundary
// layers at higher precision). Positions p < format.sink_tokens ("sinks") are stored instead in
// a per-sequence bf16 side store of sink_bytes_per_sequence() bytes, allocated by AddSequence
// (their pool slots stay unused).
//
// Not thread-safe for allocation (Reserve/Free/AddSequence run on the engine's step thread);
// Write and Gather on distinct (sequence, layer, head) triples may run concurrently.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(auto cache, PagedKvCache::Create(opts, std::move(codec)));
//   SeqHandle s = cache->AddSequence();
//   if (!cache->Reserve(s, prompt_len)) { ... wait or preempt ... }
//   cache->Write(s, layer, pos, k, v);
//   cache->Gather(s, layer, kv_head, 0, pos + 1, k_rows, v_rows);           // fp32 vectors
//   cache->GatherAttention(s, layer, kv_head, 0, pos + 1, k_att, v_att);    // attention space
//   cache->FreeSequence(s);
#ifndef TQSERVE_ENGINE_KV_CACHE_PAGED_KV_CACHE_H_
#define TQSERVE_ENGINE_KV_CACHE_PAGED_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache/kv_codec.h"

namespace tq {

using SeqHandle = int64_t;

struct KvCacheOptions {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  int64_t num_blocks = 0;
  // False: bookkeeping only (blocks, free list, tables) for a cache whose storage lives
  // elsewhere (GPU memory); Write and Gather must not be called.
  bool host_storage = true;
  int value_head_dim = 0;  // floats per value vector; 0: head_dim

  int value_dim() const { return value_head_dim > 0 ? value_head_dim : head_dim; }
};

class PagedKvCache {
 public:
  // One codec for K and V of every layer, no sinks.
  static absl::StatusOr<std::unique_ptr<PagedKvCache>> Create(const KvCacheOptions& options,
                                                             std::unique_ptr<KvCodec> codec);
  // format.num_layers(), format.head_dim and format.value_dim() must match the options.
  static absl::StatusOr<std::unique_ptr<PagedKvCache>> Create(const KvCacheOptions& options,
                                                             KvCacheFormat format);

  const KvCacheOptions& options() const { return options_; }
  const KvCacheFormat& format() const { return format_; }
  const KvCodec& key_codec(int layer) const { return *format_.keys[layer]; }
  const KvCodec& value_codec(int layer) const { return *format_.values[layer]; }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_used_blocks() const { return options_.num_blocks - num_free_blocks(); }
  int64_t BlocksForTokens(int64_t tokens) const {
    return (tokens + options_.block_size - 1) / options_.block_size;
  }
  // Pool bytes one token position occupies over all layers, K and V.
  int64_t bytes_per_token() const { return options_.num_kv_heads * format_.BytesPerTokenPerHead(); }
  // Side-store bytes of one sequence's sink positions (all layers, K and V; 0 without sinks).
  int64_t sink_bytes_per_sequence() const { return sink_bytes_; }
  // Bytes of one block over all layers (K and V).
  int64_t bytes_per_block() const { return bytes_per_token() * options_.block_size; }

  SeqHandle AddSequence();
  // Makes room for `num_tokens` positions in total. All or nothing: false (and no change) if
  // the free list is too short.
  bool Reserve(SeqHandle seq, int64_t num_tokens);
  // Positions the sequence has room for.
  int64_t Capacity(SeqHandle seq) const;
  // Returns every block of the sequence to the free list and forgets it.
  void FreeSequence(SeqHandle seq);
  int64_t num_sequences() const { return static_cast<int64_t>(tables_.size()); }
  // The sequence's blocks in position order (empty for an unknown handle).
  const std::vector<int64_t>& BlockTable(SeqHandle seq) const;

  // Stores K (num_kv_heads * head_dim floats) and V (num_kv_heads * value_dim() floats) of
  // position `pos` of `layer`.
  void Write(SeqHandle seq, int layer, int64_t pos, const float* k, const float* v);
  // Decodes positions [begin, end) of one KV head into fp32 rows of head_dim (keys) and
  // value_dim() (values) floats.
  void Gather(SeqHandle seq, int layer, int kv_head, int64_t begin, int64_t end, float* k_out,
              float* v_out) const;
  // The same positions in the layer codecs' attention space (kv_codec.h): key rows of
  // key_codec(layer).AttentionDim(head_dim) floats, value rows of value_dim() floats (sinks mapped
  // with ToAttention). Attention then needs PrepareQuery on the query and FinishValue on the
  // weighted sum of the value rows.
  void GatherAttention(SeqHandle seq, int layer, int kv_head, int64_t begin, int64_t end, float* k_out,
                       float* v_out) const;

 private:
  PagedKvCache() = default;
  // Where position `pos` of one head is stored: a pool slot or the sink store.
  const uint8_t* Locate(SeqHandle seq, const std::vector<int64_t>& table, int layer, bool value, int64_t pos,
                        int head) const;
  uint8_t* Locate(SeqHandle seq, const std::vector<int64_t>& table, int layer, bool value, int64_t pos, int head) {
    return const_cast<uint8_t*>(static_cast<const PagedKvCache*>(this)->Locate(seq, table, layer, value, pos, head));
  }

  KvCacheOptions options_;
  KvCacheFormat format_;
  std::vector<int64_t> k_bytes_, v_bytes_;               // per layer: bytes per vector
  int64_t sink_k_bytes_ = 0, sink_v_bytes_ = 0, sink_bytes_ = 0;  // a sink key, a sink value, a sequence
  std::vector<std::vector<uint8_t>> k_pools_, v_pools_;  // per layer
  // [layer][K, V][sink pos][head][sink_k_bytes_ or sink_v_bytes_]
  std::unordered_map<SeqHandle, std::vector<uint8_t>> sinks_;
  std::vector<int64_t> free_;
  std::unordered_map<SeqHandle, std::vector<int64_t>> tables_;
  SeqHandle next_handle_ = 1;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_KV_CACHE_PAGED_KV_CACHE_H_
