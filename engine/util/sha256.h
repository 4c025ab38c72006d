// File: engine/util/sha256.h
//
// Incremental SHA-256 (OpenSSL; uses the CPU's SHA extensions where present).
//   Sha256 h; h.Update(bytes); std::string hex = h.HexDigest();
#ifndef TQSERVE_ENGINE_UTIL_SHA256_H_
#define TQSERVE_ENGINE_UTIL_SHA256_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tq {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n);
  void Update(absl::string_view s) { Update(s.data(), s.size()); }
  // Finishes the hash; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(absl::string_view data);

// Streams a file through SHA-256 with a bounded buffer. Returns the hex digest and its size.
struct FileDigest {
  std::string sha256;
  uint64_t size = 0;
};
absl::StatusOr<FileDigest> Sha256File(const std::string& path);

}  // namespace tq

#endif  // TQSERVE_ENGINE_UTIL_SHA256_H_
