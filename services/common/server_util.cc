#include "services/common/server_util.h"

#include <arpa/inet.h>
#include <grpcpp/security/server_credentials.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "prometheus/text_serializer.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/manifest.h"
#include "services/common/log.h"

namespace tq {

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& host, int port,
                                                                    std::shared_ptr<prometheus::Registry> registry) {
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->registry_ = std::move(registry);
  m->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (m->listen_fd_ < 0) return absl::InternalError(absl::StrCat("metrics: socket: ", std::strerror(errno)));
  const int one = 1;
  ::setsockopt(m->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("metrics: \"", host, "\" is not an IPv4 address"));
  }
  if (::bind(m->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(m->listen_fd_, 64) != 0) {
    const std::string why = std::strerror(errno);
    ::close(m->listen_fd_);
    m->listen_fd_ = -1;
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", host, ":", port, ": ", why));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(m->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  m->port_ = ntohs(addr.sin_port);
  m->thread_ = std::thread([p = m.get()] { p->Serve(); });
  return m;
}

MetricsServer::~MetricsServer() {
  stop_.store(true);
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  // Connection threads end within their 5 s socket timeouts.
  std::unique_lock<std::mutex> l(mu_);
  idle_.wait(l, [&] { return active_ == 0; });
}

void MetricsServer::Serve() {
  while (!stop_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    // One thread per connection (at most kMaxConnections at once; beyond, inline), so a client
    // that sends nothing cannot hold up scrapes.
    {
      std::lock_guard<std::mutex> l(mu_);
      if (active_ >= kMaxConnections) {
        Handle(fd);
        ::close(fd);
        continue;
      }
      ++active_;
    }
    std::thread([this, fd] {
      Handle(fd);
      ::close(fd);
      std::lock_guard<std::mutex> l(mu_);
      if (--active_ == 0) idle_.notify_all();
    }).detach();
  }
}

void MetricsServer::Handle(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  // Read the request head (up to 8 KiB; the body, if any, is ignored).
  std::string req;
  char buf[2048];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return;
    req.append(buf, static_cast<size_t>(n));
  }
  const size_t eol = req.find("\r\n");
  const std::string line = req.substr(0, eol);
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  const bool get = line.rfind("GET ", 0) == 0;
  const std::string path = get ? line.substr(4, line.find(' ', 4) - 4) : "";
  if (!get) {
    status = "405 Method Not Allowed";
    body = "only GET\n";
  } else if (path == "/metrics" || path.rfind("/metrics?", 0) == 0) {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, registry_->Collect());
    body = out.str();
  } else if (path == "/healthz") {
    body = "ok\n";
  } else {
    status = "404 Not Found";
    body = "not found; metrics are at /metrics\n";
  }
  const std::string head = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                        "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n");
  const std::string all = head + body;
  size_t sent = 0;
  while (sent < all.size()) {
    const ssize_t n = ::send(fd, all.data() + sent, all.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
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

grpc::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing authorization: Bearer <token>");
  }
  if (std::string(it->second.data(), it->second.size()) != "Bearer " + token) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token");
  }
  return grpc::Status::OK;
}

void ParseServerFlags(int argc, char** argv, const std::string& program, const std::string& usage,
                      const std::string& main_file) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [main_file](absl::string_view file) { return absl::EndsWith(file, main_file); };
  config.version_string = [program] { return absl::StrCat(program, " ", kTqserveVersion, "\n"); };
  absl::SetFlagsUsageConfig(config);
  absl::ParseCommandLine(argc, argv);
}

sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

void WritePortFile(const std::string& path, int grpc_port, int metrics_port) {
  if (path.empty()) return;
  std::ofstream(path + ".tmp") << grpc_port << " " << metrics_port << "\n";
  std::rename((path + ".tmp").c_str(), path.c_str());
}

}  // namespace tq
