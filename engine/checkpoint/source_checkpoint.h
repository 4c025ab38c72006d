// File: engine/checkpoint/source_checkpoint.h
//
// A Hugging Face checkpoint directory as the compressor sees it: `config.json`, one or more
// `*.safetensors` shards (listed by `model.safetensors.index.json` when present), tokenizer and
// other side files. Every shard is memory-mapped and validated when the checkpoint is opened.
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

namespace tq {

struct SourceTensor {
  const SafetensorsFile* file = nullptr;
  const TensorInfo* info = nullptr;

  const std::string& name() const { return info->name; }
  absl::string_view data() const { return file->Data(*info); }
};

class SourceCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<SourceCheckpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // In visiting order (see above).
  const std::vector<SourceTensor>& tensors() const { return tensors_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }
  // Raw config.json ("" if the directory has none).
  const std::string& config_json() const { return config_json_; }
  // Non-weight files to carry into a compressed checkpoint: config.json, tokenizer files and
  // other *.json (never the index, tq_config.json or tq_manifest.json), as names in dir().
  const std::vector<std::string>& side_files() const { return side_files_; }
  // Sum of the tensor bytes of all shards.
  uint64_t tensor_bytes() const { return tensor_bytes_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<SourceTensor> tensors_;
  std::string config_json_;
  std::vector<std::string> side_files_;
  uint64_t tensor_bytes_ = 0;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_CHECKPOINT_SOURCE_CHECKPOINT_H_
