// File: engine/checkpoint/tq_checkpoint.h
//
// Reads TQ checkpoints of both kinds (docs/FORMAT.md):
//   mode kTq     — ours: `tq_config.json` has a "tqserve" section and `tq_manifest.json` is
//                  authoritative (per-tensor bits, group, rotation, gain, logical shapes, file
//                  sizes and sha256). A tq-mode directory without a manifest is refused as
//                  incomplete.
//   mode kPlugin — turboquant-plus-vllm's native format: bits are inferred per tensor from the
//                  packed width (32/48/64 bytes per 128-group = TQ2/3/4), gain is the plugin's
//                  norm correction, and the unpadded input width of quantized tensors is unknown
//                  (reported padded to the group size; 3-D experts appear flattened).
// Every tensor is checked against the layout its record implies before it is exposed.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(auto ckpt, TqCheckpoint::Open(dir, VerifyLevel::kSizes));
//   for (const TqTensor& t : ckpt->tensors()) { ... ckpt->Dequantize(t) ... }
#ifndef TQSERVE_ENGINE_CHECKPOINT_TQ_CHECKPOINT_H_
#define TQSERVE_ENGINE_CHECKPOINT_TQ_CHECKPOINT_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/manifest.h"
#include "engine/format/safetensors.h"
#include "engine/storage/object_store.h"
#include "kernels/quant/tq_quantize.h"

namespace tq {

enum class TqCheckpointMode { kTq, kPlugin };

enum class VerifyLevel {
  kNone,       // structure only
  kSizes,      // + every manifest file exists with its recorded size (tq mode)
  kChecksums,  // + every manifest file's sha256 (tq mode)
};

struct StoredTensor {
  const SafetensorsFile* file = nullptr;
  const TensorInfo* info = nullptr;
  absl::string_view data() const { return file->Data(*info); }
};

struct TqTensor {
  std::string name;  // logical name
  bool quantized = false;
  std::vector<int64_t> shape;  // logical shape (see shape_exact)
  bool shape_exact = true;     // false: plugin mode, K padded / experts flattened
  std::optional<DType> source_dtype;  // known in tq mode
  // Quantized:
  quant::TqSpec spec;
  int64_t rows = 0;  // product of all but the last dim
  int64_t cols = 0;  // K (padded in plugin mode)
  StoredTensor packed, norms;
  // Passthrough:
  StoredTensor data;

  uint64_t stored_bytes() const {
    return quantized ? packed.info->nbytes() + norms.info->nbytes() : data.info->nbytes();
  }
};

class TqCheckpoint {
 public:
  // Opens a checkpoint at a directory or URI. Local shards are memory-mapped (and hashed with
  // kChecksums); remote shards are downloaded into memory and always stream-verified against the
  // manifest: a mismatch is DATA_LOSS naming the file, counted by the observer.
  static absl::StatusOr<std::unique_ptr<TqCheckpoint>> Open(const std::string& uri,
                                                            VerifyLevel verify,
                                                            const StoreOptions& options = {});
  // The same over an open store, which must outlive the checkpoint.
  static absl::StatusOr<std::unique_ptr<TqCheckpoint>> Open(ObjectStore& store, VerifyLevel verify,
                                                            StorageObserver* observer = nullptr);

  TqCheckpointMode mode() const { return mode_; }
  const std::string& uri() const { return uri_; }
  const std::vector<TqTensor>& tensors() const { return tensors_; }
  const TqTensor* Find(absl::string_view name) const;
  // tq mode only.
  const std::optional<Manifest>& manifest() const { return manifest_; }
  // sha256 of tq_manifest.json's bytes (the checkpoint's identity); empty in plugin mode.
  const std::string& manifest_sha256() const { return manifest_sha256_; }
  int default_bits() const { return bits_; }
  int group_size() const { return group_size_; }
  uint64_t file_bytes() const { return file_bytes_; }

  // Dequantized weights, rows x cols floats.
  absl::StatusOr<std::vector<float>> Dequantize(const TqTensor& t) const;

 private:
  std::unique_ptr<ObjectStore> owned_store_;
  std::string uri_;
  TqCheckpointMode mode_ = TqCheckpointMode::kPlugin;
  int bits_ = 0;
  int group_size_ = 0;
  uint64_t file_bytes_ = 0;
  std::optional<Manifest> manifest_;
  std::string manifest_sha256_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<TqTensor> tensors_;
};

// Checks every file a tq-format checkpoint's manifest lists (exists, size, sha256), streaming.
struct VerifyReport {
  int files_checked = 0;
  uint64_t bytes_checked = 0;
  std::vector<std::string> problems;  // one line per bad file, naming it
  bool ok() const { return problems.empty(); }
};
// Errors when the manifest itself is missing (FAILED_PRECONDITION) or invalid; a report
// otherwise.
absl::StatusOr<VerifyReport> VerifyCheckpoint(ObjectStore& store, StorageObserver* observer = nullptr);

}  // namespace tq

#endif  // TQSERVE_ENGINE_CHECKPOINT_TQ_CHECKPOINT_H_
