// File: engine/checkpoint/source_checkpoint.h
//
// A Hugging Face checkpoint as the compressor sees it, in any object store: `config.json`, one
// or more `*.safetensors` shards (listed by `model.safetensors.index.json` when present),
// tokenizer and other side files. Every shard's header is read and validated when the checkpoint
// is opened; tensor bytes are fetched one tensor at a time (memory-mapped on a local filesystem,
// a ranged GET from S3), so memory holds about one tensor, never the model.
//
// Tensors are visited in the plugin's order: shard files sorted by name, tensors within a shard
// sorted by name (what safetensors' `safe_open(...).keys()` returns). When an index exists only
// the shards it names are used (a directory may also hold e.g. a `consolidated.safetensors`
// copy of the same weights, which the plugin would process twice).
#ifndef TQSERVE_ENGINE_CHECKPOINT_SOURCE_CHECKPOINT_H_
#define TQSERVE_ENGINE_CHECKPOINT_SOURCE_CHECKPOINT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/safetensors.h"
#include "engine/storage/object_store.h"

namespace tq {

// The bytes of one tensor: a view into a memory-mapped file, or a downloaded copy it owns.
class TensorBytes {
 public:
  TensorBytes() = default;
  static TensorBytes View(absl::string_view v) {
    TensorBytes b;
    b.view_ = v;
    return b;
  }
  static TensorBytes Own(std::string s) {
    TensorBytes b;
    b.owned_ = std::make_shared<std::string>(std::move(s));
    b.view_ = *b.owned_;
    return b;
  }
  absl::string_view data() const { return view_; }

 private:
  absl::string_view view_;
  std::shared_ptr<std::string> owned_;
};

// One source shard.
class SourceShard {
 public:
  // Memory-maps a local file, or reads the header of a remote object.
  // `observer` (may be null) counts the bytes of memory-mapped tensors, which bypass the store.
  static absl::StatusOr<std::unique_ptr<SourceShard>> Open(ObjectStore& store, const std::string& key,
                                                           StorageObserver* observer = nullptr);

  const std::string& key() const { return key_; }
  uint64_t size() const { return size_; }
  const SafetensorsHeader& header() const { return header_; }
  absl::StatusOr<TensorBytes> Fetch(const TensorInfo& t) const;
  // Lets the kernel drop a memory-mapped tensor's pages (no-op for remote shards).
  void Release(const TensorInfo& t) const;

 private:
  SourceShard() = default;
  ObjectStore* store_ = nullptr;
  StorageObserver* observer_ = nullptr;
  std::string key_;
  uint64_t size_ = 0;
  std::unique_ptr<SafetensorsFile> mapped_;  // local files
  SafetensorsHeader header_;
};

struct SourceTensor {
  const SourceShard* shard = nullptr;
  const TensorInfo* info = nullptr;

  const std::string& name() const { return info->name; }
  absl::StatusOr<TensorBytes> Fetch() const { return shard->Fetch(*info); }
};

class SourceCheckpoint {
 public:
  // `store` must outlive the checkpoint.
  static absl::StatusOr<std::unique_ptr<SourceCheckpoint>> Open(ObjectStore& store,
                                                                StorageObserver* observer = nullptr);
  // Opens a directory or URI, owning its store.
  static absl::StatusOr<std::unique_ptr<SourceCheckpoint>> Open(const std::string& uri,
                                                                const StoreOptions& options = {});

  ObjectStore& store() const { return *store_; }
  // In visiting order (see above).
  const std::vector<SourceTensor>& tensors() const { return tensors_; }
  const std::vector<std::unique_ptr<SourceShard>>& shards() const { return shards_; }
  // Raw config.json ("" if the checkpoint has none).
  const std::string& config_json() const { return config_json_; }
  // Non-weight files to carry into a compressed checkpoint: config.json, tokenizer files and
  // other *.json (never the index, tq_config.json or tq_manifest.json), as keys of store().
  const std::vector<std::string>& side_files() const { return side_files_; }
  // Sum of the tensor bytes of all shards.
  uint64_t tensor_bytes() const { return tensor_bytes_; }

 private:
  std::unique_ptr<ObjectStore> owned_store_;
  ObjectStore* store_ = nullptr;
  std::vector<std::unique_ptr<SourceShard>> shards_;
  std::vector<SourceTensor> tensors_;
  std::string config_json_;
  std::vector<std::string> side_files_;
  uint64_t tensor_bytes_ = 0;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_CHECKPOINT_SOURCE_CHECKPOINT_H_
