// File: engine/storage/object_store.h
//
// One interface over the places checkpoints live: a local directory (`file:///abs/dir` or a
// plain path) and an S3-compatible bucket prefix (`s3://bucket/prefix`). A store is opened at a
// URI and addresses objects by keys relative to it ("model.safetensors", "sub/x.json").
//
// Writes become visible atomically when committed: a file store writes "<key>.partial" and
// renames it; S3 completes a multipart upload (or a single PUT for small objects). An
// uncommitted writer leaves nothing behind when destroyed. Memory stays bounded however large an
// object is: reads stream to a sink, writers hold at most a few parts.
//
// S3 configuration follows the AWS conventions (engine/storage/s3_config.h): AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION,
// AWS_ENDPOINT_URL_S3 then AWS_ENDPOINT_URL, and a path-style switch.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(auto store, OpenObjectStore("s3://models/llama-tq3"));
//   TQ_ASSIGN_OR_RETURN(std::string manifest, ReadObject(*store, "tq_manifest.json"));
#ifndef TQSERVE_ENGINE_STORAGE_OBJECT_STORE_H_
#define TQSERVE_ENGINE_STORAGE_OBJECT_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tq {

struct ObjectInfo {
  std::string key;  // relative to the store
  uint64_t size = 0;
  std::string etag;  // S3 ETag (quoted); empty for files
};

struct ListPage {
  std::vector<ObjectInfo> objects;  // sorted by key
  std::string next_token;           // empty when this is the last page
};

// Receives consecutive chunks of an object; a non-OK status stops the read and is returned.
using ChunkSink = std::function<absl::Status(absl::string_view chunk)>;

// Counters of what a store does, for metrics. Implementations must be thread-safe.
class StorageObserver {
 public:
  virtual ~StorageObserver() = default;
  virtual void OnBytesRead(uint64_t n) = 0;
  virtual void OnBytesWritten(uint64_t n) = 0;
  // A failed S3 request (before any retry), by S3 error code or transport failure
  // ("SlowDown", "InternalError", "HTTP503", "ConnectionReset", "Timeout", ...).
  virtual void OnRequestError(absl::string_view code) = 0;
  virtual void OnRetry() = 0;
  // A file whose bytes did not match its manifest's sha256 or size.
  virtual void OnChecksumFailure() {}
};

// Sequential writer: Append..., then Commit. Destroying it uncommitted aborts the write.
class ObjectWriter {
 public:
  virtual ~ObjectWriter() = default;
  virtual absl::Status Append(absl::string_view data) = 0;
  virtual absl::Status Commit() = 0;
  virtual void Abort() = 0;
};

// Writer of an object of known size whose bytes arrive in any order, each exactly once.
// Commit fails unless every byte was written.
class RandomAccessObjectWriter {
 public:
  virtual ~RandomAccessObjectWriter() = default;
  virtual absl::Status WriteAt(uint64_t offset, absl::string_view data) = 0;
  virtual absl::Status Commit() = 0;
  virtual void Abort() = 0;
};

class ObjectStore {
 public:
  // Reads to the end of the object.
  static constexpr uint64_t kToEnd = ~uint64_t{0};

  virtual ~ObjectStore() = default;

  // The URI of the store root ("file:///m/x", "s3://bucket/prefix") and of one key.
  virtual std::string Uri() const = 0;
  std::string Uri(absl::string_view key) const;

  // NOT_FOUND when the object does not exist.
  virtual absl::StatusOr<ObjectInfo> Head(absl::string_view key) = 0;

  // Streams bytes [offset, offset + length) (clamped to the object) to `sink`.
  virtual absl::Status Read(absl::string_view key, uint64_t offset, uint64_t length,
                            const ChunkSink& sink) = 0;

  // The last `n` bytes (an S3 suffix range "bytes=-n").
  virtual absl::StatusOr<std::string> ReadSuffix(absl::string_view key, uint64_t n) = 0;

  // One page of the objects whose keys start with `prefix`, after `token`.
  virtual absl::StatusOr<ListPage> List(absl::string_view prefix, absl::string_view token,
                                        int max_keys) = 0;

  virtual absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view key) = 0;
  virtual absl::StatusOr<std::unique_ptr<RandomAccessObjectWriter>> NewRandomAccessWriter(
      absl::string_view key, uint64_t size) = 0;

  // OK when the object does not exist.
  virtual absl::Status Delete(absl::string_view key) = 0;

  // The local file behind `key` when the store is a filesystem (lets readers mmap).
  virtual std::optional<std::string> LocalPath(absl::string_view key) const { return std::nullopt; }
};

struct StoreOptions {
  StorageObserver* observer = nullptr;  // not owned; may be null
};

// Opens the store at `uri`: "s3://bucket[/prefix]", "file:///abs/path" or a plain path.
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(absl::string_view uri,
                                                             const StoreOptions& options = {});

// Whole-object helpers.
absl::StatusOr<std::string> ReadObject(ObjectStore& store, absl::string_view key);
absl::Status WriteObject(ObjectStore& store, absl::string_view key, absl::string_view data);
// Every object under `prefix`, all pages.
absl::StatusOr<std::vector<ObjectInfo>> ListAll(ObjectStore& store, absl::string_view prefix);

}  // namespace tq

#endif  // TQSERVE_ENGINE_STORAGE_OBJECT_STORE_H_
