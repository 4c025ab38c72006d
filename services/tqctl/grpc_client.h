// File: services/tqctl/grpc_client.h
//
// How tqctl reaches a server: HOST:PORT, optional TLS (a CA bundle) and a bearer token
// (--token or $TQ_AUTH_TOKEN).
#ifndef TQSERVE_SERVICES_TQCTL_GRPC_CLIENT_H_
#define TQSERVE_SERVICES_TQCTL_GRPC_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

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

}  // namespace tq::tqctl

#endif  // TQSERVE_SERVICES_TQCTL_GRPC_CLIENT_H_
