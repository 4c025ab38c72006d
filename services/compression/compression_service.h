// File: services/compression/compression_service.h
//
// tq.compression.v1.Compression over a JobManager: proto <-> engine conversion, request
// validation, optional bearer-token auth, progress streaming, cancellation on disconnect.
#ifndef TQSERVE_SERVICES_COMPRESSION_COMPRESSION_SERVICE_H_
#define TQSERVE_SERVICES_COMPRESSION_COMPRESSION_SERVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "proto/tq/compression/v1/compression.grpc.pb.h"
#include "services/compression/job_manager.h"

namespace tq::compression {

struct ServiceOptions {
  std::string auth_token;  // when set, requests need "authorization: Bearer <token>"
  StorageObserver* observer = nullptr;  // storage events of ListCheckpoints
};

class CompressionService final : public v1::Compression::Service {
 public:
  CompressionService(JobManager* jobs, ServiceOptions options)
      : jobs_(jobs), options_(std::move(options)) {}

  grpc::Status Compress(grpc::ServerContext* ctx, const v1::CompressRequest* request,
                        grpc::ServerWriter<v1::CompressUpdate>* writer) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status ListCheckpoints(grpc::ServerContext* ctx, const v1::ListCheckpointsRequest* request,
                               v1::ListCheckpointsResponse* response) override;

 private:
  grpc::Status Authorize(grpc::ServerContext* ctx) const;

  JobManager* jobs_;
  ServiceOptions options_;
};

}  // namespace tq::compression

#endif  // TQSERVE_SERVICES_COMPRESSION_COMPRESSION_SERVICE_H_
