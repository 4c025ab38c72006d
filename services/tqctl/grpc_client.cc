#include "services/tqctl/grpc_client.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace tq::tqctl {

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ServerTarget& target) {
  if (target.address.empty()) return absl::InvalidArgumentError("no server address");
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!target.tls_ca.empty()) {
    std::ifstream in(target.tls_ca);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read --tls-ca ", target.tls_ca));
    std::stringstream ss;
    ss << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ss.str();
    creds = grpc::SslCredentials(ssl);
  }
  return grpc::CreateChannel(target.address, creds);
}

void Authorize(const ServerTarget& target, grpc::ClientContext* ctx) {
  std::string token = target.token;
  if (token.empty()) {
    const char* env = std::getenv("TQ_AUTH_TOKEN");
    if (env != nullptr) token = env;
  }
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
}

InterruptWatcher::InterruptWatcher(std::function<void()> on_interrupt)
    : on_interrupt_(std::move(on_interrupt)) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  thread_ = std::thread([this, signals] {
    const timespec tick{0, 100 * 1000 * 1000};
    while (!stop_) {
      if (sigtimedwait(&signals, nullptr, &tick) <= 0) continue;
      if (interrupted_.exchange(true)) _exit(130);
      on_interrupt_();
    }
  });
}

InterruptWatcher::~InterruptWatcher() {
  stop_ = true;
  thread_.join();
}

}  // namespace tq::tqctl
