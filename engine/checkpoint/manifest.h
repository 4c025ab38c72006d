// File: engine/checkpoint/manifest.h
//
// `tq_manifest.json`: the record that makes a tq-mode checkpoint complete. It is written last;
// a checkpoint directory without it is incomplete and never served. It lists every other file
// of the checkpoint with size and sha256, every logical tensor with how it is stored (bit width,
// group size, rotation, gain mode, or passthrough dtype), the source checkpoint's digest and the
// tool version. docs/FORMAT.md specifies each field.
#ifndef TQSERVE_ENGINE_CHECKPOINT_MANIFEST_H_
#define TQSERVE_ENGINE_CHECKPOINT_MANIFEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/util/file_util.h"  // IsSafeRelativeName

namespace tq {

inline constexpr char kManifestName[] = "tq_manifest.json";
inline constexpr char kTqConfigName[] = "tq_config.json";
inline constexpr int kManifestVersion = 1;
inline constexpr char kTqserveVersion[] = "0.1.0";

struct ManifestFile {
  std::string name;  // relative to the checkpoint root, no '/' components that escape it
  uint64_t size = 0;
  std::string sha256;  // lowercase hex
};

struct ManifestTensor {
  std::string name;  // logical tensor name (the source checkpoint's)
  bool quantized = false;
  std::vector<int64_t> shape;  // logical shape (unpadded)
  std::string source_dtype;    // e.g. "BF16"
  // Quantized tensors: stored as `<name>.tq_packed` (U8) + `<name>.tq_norms` (F32).
  int bits = 0;
  int group_size = 0;
  int rotation_block = 0;  // == group_size for the full rotation
  std::string gain;        // "nc", "ls" or "raw"
  // Passthrough tensors: stored under `name` in this dtype.
  std::string dtype;
  std::optional<double> kurtosis;
  std::string reason;
};

struct Manifest {
  int version = kManifestVersion;
  std::string tool = "tqserve";
  std::string tool_version = kTqserveVersion;
  std::string created_at;  // RFC 3339 UTC
  // Defaults of the job (per-tensor values above are authoritative).
  int bits = 3;
  int group_size = 128;
  std::string gain = "ls";
  std::string policy = "uniform";
  double kurtosis_plus_one = 4.0;
  double kurtosis_keep = 15.0;
  int rotation_seed = 42;
  int torch_norm_lanes = 8;
  // Source checkpoint.
  std::string source_uri;
  std::string source_digest;  // sha256 over the sorted "name size sha256\n" lines of its files
  std::vector<ManifestFile> source_files;
  uint64_t source_tensor_bytes = 0;
  std::vector<ManifestTensor> tensors;
  std::vector<ManifestFile> files;  // every file of the checkpoint except the manifest

  const ManifestTensor* FindTensor(absl::string_view name) const;
  const ManifestFile* FindFile(absl::string_view name) const;
};

// Deterministic, pretty-printed JSON (fixed key order).
std::string SerializeManifest(const Manifest& m);

// Strict: unknown version, missing or mistyped fields, duplicate or escaping file names,
// inconsistent tensor records all fail with InvalidArgument naming `origin` and the field.
absl::StatusOr<Manifest> ParseManifest(absl::string_view json, absl::string_view origin);

// sha256 over "name size sha256\n" lines sorted by name: the digest of a set of files.
std::string DigestOfFiles(std::vector<ManifestFile> files);

}  // namespace tq

#endif  // TQSERVE_ENGINE_CHECKPOINT_MANIFEST_H_
