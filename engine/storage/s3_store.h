// File: engine/storage/s3_store.h
//
// The S3 backend of ObjectStore: path-style or virtual-hosted addressing, SigV4 signing with the
// payload's sha256, ranged GETs (including suffix ranges), HEAD, ListObjectsV2 pagination,
// DELETE, single PUTs for small objects and multipart uploads (parts >= 5 MiB) for large ones.
//
// Faults: 5xx, 429, 408, timeouts, stalls and connection resets are retried with exponential
// backoff and full jitter (a read resumes where it broke off); 403/404/400 and invalid
// credentials fail at once. Every error names the URI, the HTTP status and the S3 error code.
//
// Configuration from the environment (S3Config::FromEnv), AWS conventions:
//   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
//   AWS_REGION, else AWS_DEFAULT_REGION (default us-east-1)
//   AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (default https://s3.<region>.amazonaws.com)
//   AWS_S3_ADDRESSING_STYLE=path|virtual or AWS_S3_FORCE_PATH_STYLE=true|false
//     (default: path style with a custom endpoint, virtual-hosted on AWS)
//   TQ_S3_MAX_ATTEMPTS (default 6), TQ_S3_RETRY_BASE_MS (100), TQ_S3_RETRY_MAX_MS (5000),
//   TQ_S3_STALL_TIMEOUT_S (30), TQ_S3_CONNECT_TIMEOUT_S (10), TQ_S3_PART_BYTES (16 MiB)
#ifndef TQSERVE_ENGINE_STORAGE_S3_STORE_H_
#define TQSERVE_ENGINE_STORAGE_S3_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/storage/object_store.h"
#include "engine/storage/sigv4.h"

namespace tq {

inline constexpr uint64_t kMinS3PartBytes = uint64_t{5} << 20;
inline constexpr int kMaxS3Parts = 10000;

struct S3Config {
  SigV4Credentials credentials;
  std::string endpoint;  // scheme://host[:port], no trailing slash
  bool path_style = true;
  int max_attempts = 6;
  int retry_base_ms = 100;
  int retry_max_ms = 5000;
  int stall_timeout_s = 30;
  int connect_timeout_s = 10;
  uint64_t part_bytes = uint64_t{16} << 20;
  int upload_concurrency = 4;  // parts in flight per writer

  static absl::StatusOr<S3Config> FromEnv();
};

// `bucket_and_prefix` is what follows "s3://": "bucket" or "bucket/some/prefix".
absl::StatusOr<std::unique_ptr<ObjectStore>> NewS3ObjectStore(const S3Config& config,
                                                              absl::string_view bucket_and_prefix,
                                                              StorageObserver* observer);

// Creates the bucket of an s3:// URI (tests and tools); OK if it exists and is ours.
absl::Status CreateS3Bucket(const S3Config& config, absl::string_view bucket);

// The <Code> and <Message> of an S3 XML error body ("" when absent).
struct S3Error {
  std::string code;
  std::string message;
};
S3Error ParseS3Error(absl::string_view xml);

}  // namespace tq

#endif  // TQSERVE_ENGINE_STORAGE_S3_STORE_H_
