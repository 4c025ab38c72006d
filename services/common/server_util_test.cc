// The built-in /metrics HTTP server: serves the registry in the Prometheus text format, answers
// 404/405 for anything else, survives a client that sends nothing, and stops cleanly.
#include "services/common/server_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace tq {
namespace {

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` and reads the whole response (the server closes the connection).
std::string Exchange(int port, const std::string& request) {
  const int fd = Connect(port);
  if (fd < 0) return "";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

TEST(MetricsServerTest, ServesTheRegistry) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("tq_test_total").Help("a test counter").Register(*registry).Add({}).Increment(3);
  auto server = MetricsServer::Start("127.0.0.1", 0, registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  const std::string ok = Exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(ok.find("\r\n\r\n# HELP tq_test_total a test counter\n"), std::string::npos) << ok;
  EXPECT_NE(ok.find("\ntq_test_total 3"), std::string::npos) << ok;
  // Content-Length matches the body.
  const size_t body = ok.find("\r\n\r\n") + 4;
  const size_t cl = ok.find("Content-Length: ") + 16;
  EXPECT_EQ(std::stoul(ok.substr(cl)), ok.size() - body);
  EXPECT_EQ(Exchange(port, "GET /healthz HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 200 OK", 0), 0u);
  EXPECT_EQ(Exchange(port, "GET /other HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(Exchange(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").rfind("HTTP/1.1 405", 0), 0u);
  EXPECT_EQ(Exchange(port, "garbage\r\n\r\n").rfind("HTTP/1.1 405", 0), 0u);
}

TEST(MetricsServerTest, ASilentClientDoesNotBlockForever) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto server = MetricsServer::Start("127.0.0.1", 0, registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  const int silent = Connect(port);  // connects and sends nothing
  ASSERT_GE(silent, 0);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string r = Exchange(port, "GET /metrics HTTP/1.1\r\n\r\n");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK", 0), 0u);
  EXPECT_LT(s, 2.0);  // served at once, beside the silent connection
  ::close(silent);
}

TEST(MetricsServerTest, BadAddressesAreRefusedAndStopIsClean) {
  auto registry = std::make_shared<prometheus::Registry>();
  EXPECT_FALSE(MetricsServer::Start("not-an-ip", 0, registry).ok());
  auto a = MetricsServer::Start("127.0.0.1", 0, registry);
  ASSERT_TRUE(a.ok());
  auto b = MetricsServer::Start("127.0.0.1", (*a)->port(), registry);  // port in use
  EXPECT_FALSE(b.ok());
  const auto t0 = std::chrono::steady_clock::now();
  a->reset();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  // Stopping waits for a connection in progress (bounded by its 5 s timeout), then returns.
  auto c = MetricsServer::Start("127.0.0.1", 0, registry);
  ASSERT_TRUE(c.ok());
  const int silent = Connect((*c)->port());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto t1 = std::chrono::steady_clock::now();
  c->reset();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), 7.0);
  ::close(silent);
}

}  // namespace
}  // namespace tq
