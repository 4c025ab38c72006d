// File: services/common/server_util.h
//
// Plumbing shared by the server binaries: reading secrets from files, the Prometheus /metrics
// endpoint (prometheus-cpp's civetweb exposer, with port 0 = any free port), server
// credentials (plaintext or TLS), the bearer token from a flag or a file, and the port file
// tests and scripts wait for.
#ifndef TQSERVE_SERVICES_COMMON_SERVER_UTIL_H_
#define TQSERVE_SERVICES_COMMON_SERVER_UTIL_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"

namespace tq {

// A text file's content without trailing whitespace (PEM files, tokens).
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

// Serves /metrics on host:port (port 0: a free port chosen first). Logs civetweb's errors.
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsExposer(const std::string& host, int port);

// Plaintext when both are empty; TLS from PEM files otherwise (both required).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const std::string& cert_file,
                                                                              const std::string& key_file);

// The bearer token: `file` wins when set; `token` otherwise (may be empty: no auth).
absl::StatusOr<std::string> ResolveAuthToken(const std::string& token, const std::string& file);

// Writes "grpc_port metrics_port\n" atomically (write + rename). No-op for an empty path.
void WritePortFile(const std::string& path, int grpc_port, int metrics_port);

}  // namespace tq

#endif  // TQSERVE_SERVICES_COMMON_SERVER_UTIL_H_
