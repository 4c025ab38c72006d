// File: engine/storage/sigv4.h
//
// AWS Signature Version 4 for S3 requests (docs.aws.amazon.com/AmazonS3/latest/API/
// sig-v4-header-based-auth.html), in-house with OpenSSL HMAC-SHA256, so that canonicalization is
// ours to test (libcurl 7.88's CURLOPT_AWS_SIGV4 neither sorts nor encodes query parameters).
//
//   SigV4Request r{"GET", "bucket.s3.amazonaws.com", "/key", {{"prefix", "a/"}}, {...}, hash};
//   std::string authorization = SignV4(r, creds, "20130524T000000Z");
#ifndef TQSERVE_ENGINE_STORAGE_SIGV4_H_
#define TQSERVE_ENGINE_STORAGE_SIGV4_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace tq {

struct SigV4Credentials {
  std::string access_key;
  std::string secret_key;
  std::string session_token;  // optional (sent as x-amz-security-token, and signed)
  std::string region = "us-east-1";
  std::string service = "s3";
};

struct SigV4Request {
  std::string method;
  std::string host;  // as sent in the Host header (with :port when not default)
  std::string path;  // canonical URI: already percent-encoded, e.g. "/bucket/a%20b"
  std::vector<std::pair<std::string, std::string>> query;  // raw (unencoded) names and values
  // Headers to sign besides host (names lowercase), e.g. x-amz-content-sha256, x-amz-date, range.
  std::map<std::string, std::string> headers;
  std::string payload_sha256;  // hex; also the x-amz-content-sha256 value
};

// RFC 3986 percent-encoding as AWS requires: unreserved characters (A-Z a-z 0-9 - . _ ~) pass,
// '/' passes when encode_slash is false, everything else becomes %XX (uppercase hex).
std::string UriEncode(absl::string_view s, bool encode_slash);

// "a=1&b=&c=x%2Fy": sorted by name, then value; names and values encoded.
std::string CanonicalQueryString(std::vector<std::pair<std::string, std::string>> query);

std::string CanonicalRequest(const SigV4Request& r);

// The Authorization header value. `amz_date` is "YYYYMMDDTHHMMSSZ" and must also be in
// r.headers["x-amz-date"].
std::string SignV4(const SigV4Request& r, const SigV4Credentials& creds, absl::string_view amz_date);

// sha256 hex of the empty payload.
inline constexpr char kEmptySha256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

}  // namespace tq

#endif  // TQSERVE_ENGINE_STORAGE_SIGV4_H_
