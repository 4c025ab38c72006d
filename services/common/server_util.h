// File: services/common/server_util.h
//
// Plumbing shared by the server binaries: reading secrets from files, the Prometheus /metrics
// endpoint, server credentials (plaintext or TLS), the bearer token from a flag or a file, and
// the port file tests and scripts wait for.
//
// /metrics is served by a small built-in HTTP/1.1 server (an accept thread and one thread per
// connection, GET /metrics and GET /healthz) rather than prometheus-cpp's civetweb exposer: civetweb creates its threads with a
// fixed small stack, which fails once a process links libraries with large static TLS (cuBLAS
// 13 on glibc 2.39: "Cannot create threads").
#ifndef TQSERVE_SERVICES_COMMON_SERVER_UTIL_H_
#define TQSERVE_SERVICES_COMMON_SERVER_UTIL_H_

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>
#include <signal.h>

#include <memory>
#include <string>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace tq {

// A text file's content without trailing whitespace (PEM files, tokens).
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

// Serves the registry's metrics in the Prometheus text format on http://host:port/metrics until
// destroyed. Port 0 picks a free port.
class MetricsServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& host, int port,
                                                              std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  void Serve();
  void Handle(int fd);

  int listen_fd_ = -1;
  int port_ = 0;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  static constexpr int kMaxConnections = 8;
  std::mutex mu_;
  std::condition_variable idle_;
  int active_ = 0;  // connection threads running
};

// Plaintext when both are empty; TLS from PEM files otherwise (both required).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const std::string& cert_file,
                                                                              const std::string& key_file);

// The bearer token: `file` wins when set; `token` otherwise (may be empty: no auth).
absl::StatusOr<std::string> ResolveAuthToken(const std::string& token, const std::string& file);

// OK when `token` is empty or the call carries "authorization: Bearer <token>"; otherwise
// UNAUTHENTICATED saying whether the header was missing or wrong.
grpc::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token);

// Sets the --help text (flags of `main_file` only) and --version, then parses the flags.
void ParseServerFlags(int argc, char** argv, const std::string& program, const std::string& usage,
                      const std::string& main_file);

// Blocks SIGTERM and SIGINT in the calling thread (and every thread started after it) so that
// one thread can sigwait() for them; call before starting any thread. Returns the set.
sigset_t BlockShutdownSignals();

// Writes "grpc_port metrics_port\n" atomically (write + rename). No-op for an empty path.
void WritePortFile(const std::string& path, int grpc_port, int metrics_port);

}  // namespace tq

#endif  // TQSERVE_SERVICES_COMMON_SERVER_UTIL_H_
