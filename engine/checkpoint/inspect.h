// File: engine/checkpoint/inspect.h
//
// What a TQ checkpoint holds: per tensor how it is stored and what it costs, totals, the
// compression ratio against the source, and — when the source checkpoint is given — the
// normalized squared error ||W - Ŵ||² / ||W||² of every quantized tensor (decoded in row blocks,
// so memory stays bounded).
#ifndef TQSERVE_ENGINE_CHECKPOINT_INSPECT_H_
#define TQSERVE_ENGINE_CHECKPOINT_INSPECT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/tq_checkpoint.h"

namespace tq {

struct TensorStats {
  std::string name;
  bool quantized = false;
  std::vector<int64_t> shape;
  bool shape_exact = true;
  int bits = 0;
  int group_size = 0;
  int rotation_block = 0;
  std::string gain;
  std::string dtype;  // stored dtype of passthrough tensors
  uint64_t stored_bytes = 0;
  uint64_t source_bytes = 0;  // 0 when unknown
  int64_t params = 0;
  std::optional<double> nmse;
  std::optional<double> kurtosis;
  std::string reason;
};

struct CheckpointReport {
  std::string dir;
  std::string mode;  // "tq" or "plugin"
  std::string manifest_sha256;
  std::string source_uri;
  std::string source_digest;
  std::vector<TensorStats> tensors;
  int quantized = 0;
  int passthrough = 0;
  uint64_t stored_tensor_bytes = 0;
  uint64_t file_bytes = 0;
  uint64_t source_tensor_bytes = 0;  // from the manifest or the source checkpoint
  int64_t quantized_params = 0;
  uint64_t quantized_bytes = 0;
  std::optional<double> weighted_nmse;  // sum of errors / sum of energies over quantized tensors

  double ratio() const {
    return stored_tensor_bytes ? double(source_tensor_bytes) / stored_tensor_bytes : 0.0;
  }
  double bits_per_quantized_weight() const {
    return quantized_params ? 8.0 * quantized_bytes / quantized_params : 0.0;
  }
};

// `dir` and `source_dir` are directories or URIs; `source_dir` may be empty. `threads`
// parallelizes the error measurement (0 = all).
absl::StatusOr<CheckpointReport> InspectCheckpoint(const std::string& dir,
                                                   const std::string& source_dir, int threads);

}  // namespace tq

#endif  // TQSERVE_ENGINE_CHECKPOINT_INSPECT_H_
