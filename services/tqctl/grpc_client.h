// File: services/tqctl/grpc_client.h
//
// How tqctl reaches a server: HOST:PORT, optional TLS (a CA bundle) and a bearer token
// (--token or $TQ_AUTH_TOKEN); and Ctrl-C handling for calls that a user may interrupt.
#ifndef TQSERVE_SERVICES_TQCTL_GRPC_CLIENT_H_
#define TQSERVE_SERVICES_TQCTL_GRPC_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace tq::tqctl {

struct ServerTarget {
  std::string address;  // HOST:PORT
  std::string tls_ca;   // PEM file; empty = plaintext
  std::string token;    // bearer token; empty = none
};

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ServerTarget& target);
// Adds the bearer token (if any) to a call.
void Authorize(const ServerTarget& target, grpc::ClientContext* ctx);

// Turns SIGINT / SIGTERM into a callback (typically ClientContext::TryCancel, which makes the
// server abort the work). Create it before the first gRPC channel: it blocks the signals in the
// calling thread, and threads created afterwards (gRPC's) inherit that, so no other thread takes
// the default action. A second signal exits at once with status 130.
class InterruptWatcher {
 public:
  explicit InterruptWatcher(std::function<void()> on_interrupt);
  ~InterruptWatcher();  // stops watching (the signals stay blocked)
  InterruptWatcher(const InterruptWatcher&) = delete;
  InterruptWatcher& operator=(const InterruptWatcher&) = delete;

  bool interrupted() const { return interrupted_; }

 private:
  std::function<void()> on_interrupt_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> interrupted_{false};
  std::thread thread_;
};

}  // namespace tq::tqctl

#endif  // TQSERVE_SERVICES_TQCTL_GRPC_CLIENT_H_
