// File: services/compression/proto_convert.h
//
// tq.compression.v1 messages <-> engine types, shared by the server and tqctl.
#ifndef TQSERVE_SERVICES_COMPRESSION_PROTO_CONVERT_H_
#define TQSERVE_SERVICES_COMPRESSION_PROTO_CONVERT_H_

#include "absl/status/statusor.h"
#include "engine/compress/compressor.h"
#include "proto/tq/compression/v1/compression.pb.h"
#include "services/compression/job_manager.h"

namespace tq::compression {

// Engine options from a request; INVALID_ARGUMENT names the bad field.
absl::StatusOr<CompressOptions> FromProto(const v1::CompressRequest& request);
// A request carrying `options` (every option set explicitly).
v1::CompressRequest ToProtoRequest(const CompressOptions& options, bool detach);
// The proto view of a job.
v1::Job ToProto(const JobSnapshot& job);

}  // namespace tq::compression

#endif  // TQSERVE_SERVICES_COMPRESSION_PROTO_CONVERT_H_
