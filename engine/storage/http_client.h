// File: engine/storage/http_client.h
//
// A blocking HTTP/1.1 client over libcurl for the S3 backend: one request per call, streamed
// response bodies, stall and connect timeouts, connection reuse per thread. Retries are the
// caller's (they depend on S3 semantics).
#ifndef TQSERVE_ENGINE_STORAGE_HTTP_CLIENT_H_
#define TQSERVE_ENGINE_STORAGE_HTTP_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tq {

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, PUT, POST, DELETE
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  absl::string_view body;            // request body for PUT/POST
  // Receives the body of a 2xx response in chunks; returning false aborts the transfer.
  // Without it a 2xx body is collected in HttpResponse::body.
  std::function<bool(absl::string_view)> on_body;
  int connect_timeout_s = 10;
  int stall_timeout_s = 30;  // fail when the transfer moves < 1 byte/s for this long
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;         // non-2xx bodies (first 1 MiB), or 2xx without on_body
  uint64_t streamed = 0;    // bytes passed to on_body
  bool sink_aborted = false;  // on_body returned false
};

// OK when an HTTP response arrived (any status). Transport failures (refused, reset, timeout,
// DNS) are UNAVAILABLE with curl's message; a sink abort is ABORTED.
absl::Status PerformHttp(const HttpRequest& request, HttpResponse* response);

}  // namespace tq

#endif  // TQSERVE_ENGINE_STORAGE_HTTP_CLIENT_H_
