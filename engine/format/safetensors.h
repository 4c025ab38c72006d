// File: engine/format/safetensors.h
//
// The safetensors file format (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON header, then the tensor data. The header maps
// each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to the
// data section), plus an optional "__metadata__" object of strings.
//
// Reading validates everything before any byte of tensor data is trusted; every malformed file
// gets an InvalidArgument/DataLoss error that names the file and what is wrong with it
// (truncated file, header length past EOF, invalid JSON or UTF-8, duplicate names, unknown
// dtype, negative or overflowing shapes, shape x dtype != byte length, offsets out of range,
// overlapping, or leaving gaps). Never a crash: the parser is fuzzed (tests/fuzz).
//
// Writing reproduces the reference implementation byte for byte: tensors sorted by dtype
// (descending safetensors enum order) then name, compact JSON, "__metadata__" first, the header
// padded with spaces to a multiple of 8.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open("/m/model.safetensors"));
//   for (const TensorInfo& t : file->header().tensors) {
//     absl::string_view bytes = file->Data(t);
//   }
#ifndef TQSERVE_ENGINE_FORMAT_SAFETENSORS_H_
#define TQSERVE_ENGINE_FORMAT_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/dtype.h"

namespace tq {

// Largest header we accept (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // data_offsets, relative to the data section
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
  uint64_t header_bytes = 0;  // N, the JSON length including padding
  uint64_t data_bytes = 0;    // size of the data section

  uint64_t data_start() const { return 8 + header_bytes; }
  const TensorInfo* Find(absl::string_view name) const;
};

// Reads the 8-byte header length and checks it against the file size.
absl::StatusOr<uint64_t> ParseSafetensorsHeaderLength(absl::string_view first8, uint64_t file_size,
                                                      absl::string_view origin);

// Parses and validates the JSON header. `data_bytes` is the size of the data section
// (file size - 8 - header length): every tensor must lie inside it and together they must tile
// it exactly. `origin` names the file in error messages.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json,
                                                         uint64_t data_bytes,
                                                         absl::string_view origin);

// Parses a complete in-memory file.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsBuffer(absl::string_view file,
                                                         absl::string_view origin);

// A memory-mapped, validated safetensors file.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // A validated file held in memory (e.g. downloaded); `name` is used in errors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBuffer(const std::string& name,
                                                                     std::string bytes);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  uint64_t file_size() const { return size_; }
  // The bytes of a tensor of this file's header.
  absl::string_view Data(const TensorInfo& t) const {
    return absl::string_view(base_ + header_.data_start() + t.begin, t.nbytes());
  }
  // Advises the kernel that a tensor's pages are no longer needed (keeps RSS bounded when a
  // large file is streamed tensor by tensor).
  void Release(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  const char* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  std::string buffer_;  // FromBuffer
  SafetensorsHeader header_;
};

// One tensor to write: name, dtype, shape and byte size (data supplied separately).
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  uint64_t nbytes() const;
};

// The reference writer's layout: tensors sorted by (dtype desc, name), their data offsets,
// and the serialized, padded header.
struct SafetensorsLayout {
  std::vector<TensorInfo> tensors;  // in file order, with offsets
  std::string header;               // JSON + padding (length is a multiple of 8)
  uint64_t data_bytes = 0;

  uint64_t file_size() const { return 8 + header.size() + data_bytes; }
  const TensorInfo* Find(absl::string_view name) const;
};

// Fails on duplicate names or a shape/size overflow.
absl::StatusOr<SafetensorsLayout> PlanSafetensors(
    std::vector<TensorSpec> tensors, const std::map<std::string, std::string>& metadata = {});

// Serializes a whole file in memory (small files and tests). `data` maps name -> bytes.
absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorSpec>& tensors, const std::map<std::string, std::string>& data,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace tq

#endif  // TQSERVE_ENGINE_FORMAT_SAFETENSORS_H_
