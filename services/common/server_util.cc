#include "services/common/server_util.h"

#include <arpa/inet.h>
#include <grpcpp/security/server_credentials.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "CivetServer.h"
#include "absl/strings/str_cat.h"
#include "services/common/log.h"

namespace tq {
namespace {

// civetweb (behind prometheus::Exposer) cannot bind port 0: ask the kernel for a free port.
int PickFreePort(const std::string& host) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) addr.sin_addr.s_addr = INADDR_ANY;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsExposer(const std::string& host, int port) {
  if (port == 0) port = PickFreePort(host);
  static CivetCallbacks callbacks = [] {
    CivetCallbacks c{};
    c.log_message = [](const mg_connection*, const char* message) {
      LogWarning(absl::StrCat("metrics http server: ", message));
      return 1;
    };
    return c;
  }();
  try {
    return std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port), 2, &callbacks);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", host, ":", port, ": ", e.what()));
  }
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const std::string& cert_file,
                                                                              const std::string& key_file) {
  if (cert_file.empty() && key_file.empty()) return grpc::InsecureServerCredentials();
  auto cert = ReadTextFile(cert_file);
  auto key = ReadTextFile(key_file);
  if (cert_file.empty() || key_file.empty() || !cert.ok() || !key.ok()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key must both name readable PEM files");
  }
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key + "\n", *cert + "\n"});
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::string> ResolveAuthToken(const std::string& token, const std::string& file) {
  if (file.empty()) return token;
  return ReadTextFile(file);
}

void WritePortFile(const std::string& path, int grpc_port, int metrics_port) {
  if (path.empty()) return;
  std::ofstream(path + ".tmp") << grpc_port << " " << metrics_port << "\n";
  std::rename((path + ".tmp").c_str(), path.c_str());
}

}  // namespace tq
