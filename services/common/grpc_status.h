// File: services/common/grpc_status.h
//
// absl::Status <-> grpc::Status (the canonical codes are the same numbers).
#ifndef TQSERVE_SERVICES_COMMON_GRPC_STATUS_H_
#define TQSERVE_SERVICES_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace tq {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace tq

#endif  // TQSERVE_SERVICES_COMMON_GRPC_STATUS_H_
