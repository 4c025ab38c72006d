#include "services/compression/compression_service.h"

#include "services/compression/proto_convert.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/catalog.h"
#include "services/common/grpc_status.h"
#include "services/common/log.h"
#include "services/common/server_util.h"

namespace tq::compression {
grpc::Status CompressionService::Authorize(grpc::ServerContext* ctx) const {
  return CheckBearerToken(*ctx, options_.auth_token);
}

grpc::Status CompressionService::Compress(grpc::ServerContext* ctx,
                                          const v1::CompressRequest* request,
                                          grpc::ServerWriter<v1::CompressUpdate>* writer) {
  grpc::Status auth = Authorize(ctx);
  if (!auth.ok()) return auth;
  auto options = FromProto(*request);
  if (!options.ok()) return ToGrpcStatus(options.status());
  auto id = jobs_->Submit(*options);
  if (!id.ok()) return ToGrpcStatus(id.status());
  LogInfo("job queued", {{"job_id", *id}, {"source", options->source},
                         {"destination", options->destination}, {"peer", ctx->peer()}});
  uint64_t seen = 0;
  while (true) {
    auto snap = jobs_->WaitForChange(*id, seen, std::chrono::milliseconds(250));
    if (!snap.ok()) return ToGrpcStatus(snap.status());
    if (ctx->IsCancelled()) {
      if (!request->detach()) {
        (void)jobs_->Cancel(*id);
        LogInfo("job cancelled: the caller went away", {{"job_id", *id}});
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the stream");
    }
    if (snap->version == seen) continue;
    seen = snap->version;
    v1::CompressUpdate update;
    *update.mutable_job() = ToProto(*snap);
    if (!writer->Write(update)) {
      if (!request->detach()) (void)jobs_->Cancel(*id);
      return grpc::Status(grpc::StatusCode::CANCELLED, "the caller went away");
    }
    if (IsFinal(snap->state)) {
      if (snap->state == JobState::kSucceeded) return grpc::Status::OK;
      return ToGrpcStatus(snap->status);
    }
  }
}

grpc::Status CompressionService::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* request,
                                        v1::Job* response) {
  grpc::Status auth = Authorize(ctx);
  if (!auth.ok()) return auth;
  auto snap = jobs_->Get(request->job_id());
  if (!snap.ok()) return ToGrpcStatus(snap.status());
  *response = ToProto(*snap);
  return grpc::Status::OK;
}

grpc::Status CompressionService::CancelJob(grpc::ServerContext* ctx,
                                           const v1::CancelJobRequest* request, v1::Job* response) {
  grpc::Status auth = Authorize(ctx);
  if (!auth.ok()) return auth;
  auto snap = jobs_->Cancel(request->job_id());
  if (!snap.ok()) return ToGrpcStatus(snap.status());
  LogInfo("job cancel requested", {{"job_id", request->job_id()}, {"peer", ctx->peer()}});
  *response = ToProto(*snap);
  return grpc::Status::OK;
}

grpc::Status CompressionService::ListCheckpoints(grpc::ServerContext* ctx,
                                                 const v1::ListCheckpointsRequest* request,
                                                 v1::ListCheckpointsResponse* response) {
  grpc::Status auth = Authorize(ctx);
  if (!auth.ok()) return auth;
  if (request->prefix_uri().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prefix_uri is required");
  }
  const int page_size = request->page_size() <= 0 ? 100 : std::min(request->page_size(), 1000);
  StoreOptions so;
  so.observer = options_.observer;
  auto store = OpenObjectStore(request->prefix_uri(), so);
  if (!store.ok()) return ToGrpcStatus(store.status());
  auto entries = tq::ListCheckpoints(**store);
  if (!entries.ok()) return ToGrpcStatus(entries.status());
  for (const CatalogEntry& e : *entries) {
    if (!request->page_token().empty() && e.uri <= request->page_token()) continue;
    if (response->checkpoints_size() == page_size) {
      response->set_next_page_token(response->checkpoints(page_size - 1).uri());
      break;
    }
    v1::Checkpoint* c = response->add_checkpoints();
    c->set_uri(e.uri);
    c->set_complete(e.complete);
    c->set_format(e.format);
    c->set_bits(e.bits);
    c->set_group_size(e.group_size);
    c->set_manifest_sha256(e.manifest_sha256);
    c->set_source_uri(e.source_uri);
    c->set_total_bytes(e.total_bytes);
    c->set_problem(e.problem);
  }
  return grpc::Status::OK;
}

}  // namespace tq::compression
