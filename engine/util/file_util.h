// File: engine/util/file_util.h
//
// Local-filesystem helpers with absl::Status errors that name the path and the OS error.
// A full disk is reported as ResourceExhausted ("no space left on device writing <path>").
#ifndef TQSERVE_ENGINE_UTIL_FILE_UTIL_H_
#define TQSERVE_ENGINE_UTIL_FILE_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tq {

absl::StatusOr<std::string> ReadFile(const std::string& path);

// A read-only descriptor of a regular file (the caller closes it) and the file's size.
struct OpenedFile {
  int fd = -1;
  uint64_t size = 0;
};
absl::StatusOr<OpenedFile> OpenRegularFileForRead(const std::string& path);

// Writes `contents` to `path` atomically: a temporary file in the same directory, fsync,
// rename over the destination.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view contents);

// Creates the directory and its parents if missing.
absl::Status MakeDirs(const std::string& path);

bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);

// Names (not paths) of the entries of a directory, sorted.
absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path);

absl::Status RemoveFile(const std::string& path);  // OK if already gone
absl::Status RenameFile(const std::string& from, const std::string& to);

std::string JoinPath(absl::string_view a, absl::string_view b);

// "file:///abs/dir" or a plain path -> the local path. Other schemes (s3://) are Unimplemented
// until an object store handles them.
absl::StatusOr<std::string> LocalPathFromUri(absl::string_view uri);
std::string Basename(absl::string_view path);

// A relative name that stays inside its root: no leading '/', no empty, "." or ".." components.
bool IsSafeRelativeName(absl::string_view name);

// Maps errno to a Status: ENOSPC/EDQUOT/EFBIG -> ResourceExhausted, ENOENT -> NotFound,
// EACCES/EPERM/EROFS -> PermissionDenied, else Internal.
absl::Status ErrnoToStatus(int err, absl::string_view what);

// A file written at arbitrary offsets (pwrite), with its full size reserved up front so that a
// full disk fails at creation rather than half way through.
class RandomAccessOutputFile {
 public:
  // Creates (truncates) `path` and reserves `size` bytes.
  static absl::StatusOr<std::unique_ptr<RandomAccessOutputFile>> Create(const std::string& path,
                                                                        uint64_t size);
  ~RandomAccessOutputFile();
  RandomAccessOutputFile(const RandomAccessOutputFile&) = delete;
  RandomAccessOutputFile& operator=(const RandomAccessOutputFile&) = delete;

  absl::Status WriteAt(uint64_t offset, const void* data, size_t n);
  // fdatasync + close.
  absl::Status Close();
  const std::string& path() const { return path_; }

 private:
  RandomAccessOutputFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_UTIL_FILE_UTIL_H_
