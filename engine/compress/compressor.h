// File: engine/compress/compressor.h
//
// The streaming compressor: a BF16/FP16/FP32 Hugging Face checkpoint directory in, a TQ
// checkpoint directory out. One source tensor at a time, each quantized by all threads over its
// rows; the output layout (shards, tensor order, offsets) is planned from the source headers
// before any weight is read, so every output byte is written once, in place, and peak memory
// is about one source tensor plus its compressed form.
//
// Output (docs/FORMAT.md):
//   format kPlugin — exactly turboquant-plus-vllm's `save_tq3_checkpoint` layout and bytes:
//     model.safetensors or model-XXXXX-of-NNNNN.safetensors (5 GiB limit) + index,
//     tq_config.json, config/tokenizer/*.json copied.
//   format kTq — the same tensor naming and sharding, our policy (source dtypes kept, router
//     gates unquantized, optional kurtosis bit widths and LS gain), tq_config.json with a
//     "tqserve" section, and tq_manifest.json written last.
//
// Publishing: shards are written as "<name>.partial" and renamed when complete; an existing
// manifest in the destination is removed before anything else is written (so a rerun is never
// mistaken for the old, complete checkpoint), tq_config.json and then the manifest come last.
// On any error the partial files are deleted and no manifest exists.
//
// Usage:
//   CompressOptions opt;
//   opt.source = "/models/llama"; opt.destination = "/models/llama-tq3";
//   TQ_ASSIGN_OR_RETURN(CompressResult r, Compress(opt, [](const CompressProgress& p) {...}));
#ifndef TQSERVE_ENGINE_COMPRESS_COMPRESSOR_H_
#define TQSERVE_ENGINE_COMPRESS_COMPRESSOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/tensor_policy.h"
#include "engine/format/dtype.h"
#include "engine/storage/object_store.h"
#include "kernels/quant/tq_quantize.h"

namespace tq {

inline constexpr uint64_t kDefaultMaxShardBytes = uint64_t{5} << 30;  // the plugin's 5 GiB

struct CompressOptions {
  std::string source;       // source checkpoint: a directory, file:// or s3:// URI
  std::string destination;  // output: a directory (created if missing), file:// or s3:// URI
  CheckpointFormat format = CheckpointFormat::kTq;
  int bits = 3;
  int group_size = 128;
  // Default: least squares for kTq, norm correction (the plugin's) for kPlugin.
  std::optional<quant::GainMode> gain;
  BitPolicy policy = BitPolicy::kUniform;
  KurtosisThresholds thresholds;
  int rotation_block = 0;  // kTq only
  std::vector<std::string> rotation_block_include;  // see PolicyOptions
  int threads = 0;         // 0 = all hardware threads
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
  // Recorded as tq_config.json's "original_model"; default: `source` as given.
  std::string original_model;
  int torch_norm_lanes = 8;
  // Checked between tensors; when it becomes true the job stops with CANCELLED and cleans up.
  const std::atomic<bool>* cancel = nullptr;
  // Counts bytes and S3 errors of both stores (metrics); may be null.
  StorageObserver* observer = nullptr;
};

struct CompressProgress {
  std::string phase;  // "plan", "analyze", "compress", "publish", "done"
  int tensors_done = 0;
  int tensors_total = 0;
  uint64_t bytes_in_done = 0;  // source tensor bytes processed
  uint64_t bytes_in_total = 0;
  uint64_t bytes_out_done = 0;  // output tensor bytes written
  uint64_t bytes_out_total = 0;
  double elapsed_s = 0;
  std::string current;  // tensor being processed
};

struct TensorReport {
  std::string name;
  std::vector<int64_t> shape;
  DType source_dtype = DType::kBF16;
  bool quantized = false;
  int bits = 0;
  DType stored_dtype = DType::kBF16;  // passthrough
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  std::optional<double> kurtosis;
  std::string reason;
};

struct CompressResult {
  int quantized = 0;
  int passthrough = 0;
  uint64_t source_tensor_bytes = 0;
  uint64_t output_tensor_bytes = 0;
  uint64_t output_file_bytes = 0;  // every file written
  double seconds = 0;
  int threads = 1;
  std::string kernel_isa;
  std::string manifest_sha256;  // kTq only
  std::string destination_uri;
  std::vector<std::string> files;
  std::vector<TensorReport> tensors;

  double ratio() const {
    return output_tensor_bytes ? double(source_tensor_bytes) / output_tensor_bytes : 0.0;
  }
};

using ProgressFn = std::function<void(const CompressProgress&)>;

absl::StatusOr<CompressResult> Compress(const CompressOptions& options,
                                        const ProgressFn& progress = nullptr);

// The checks Compress makes on its options before touching any storage (bits, group size,
// rotation block, format/policy combinations, thresholds, shard size).
absl::Status ValidateCompressOptions(const CompressOptions& options);

}  // namespace tq

#endif  // TQSERVE_ENGINE_COMPRESS_COMPRESSOR_H_
