// File: services/inference/inference_service.h
//
// tq.inference.v1.Inference over the engine (engine/runtime/engine.h): a thin adapter that
// validates requests, streams engine events as Chunk/Complete messages, maps errors to gRPC
// status codes, aborts requests whose callers went away (cancel, deadline) and drains.
//
// Lifecycle: the service is registered before the model is loaded; until SetEngine() and
// SetReady(true) every RPC but health answers UNAVAILABLE ("loading"). BeginDrain() turns new
// requests away with UNAVAILABLE while running ones go on; AbortAll() ends what is left.
#ifndef TQSERVE_SERVICES_INFERENCE_INFERENCE_SERVICE_H_
#define TQSERVE_SERVICES_INFERENCE_INFERENCE_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "engine/runtime/engine.h"
#include "proto/tq/inference/v1/inference.grpc.pb.h"
#include "services/inference/metrics.h"

namespace tq::inference {

struct ServiceOptions {
  std::string auth_token;        // non-empty: require "authorization: Bearer <token>"
  std::string device = "cpu";
  int tensor_parallel_size = 1;
  // How often a streaming call checks whether its caller is gone (client cancel, deadline).
  std::chrono::milliseconds cancel_poll{5};
  int64_t default_max_tokens = 16;
  int max_stop_strings = 16;
  int max_stop_string_bytes = 256;
  int max_stop_token_ids = 64;
  int retry_after_ms = 500;      // hint sent with RESOURCE_EXHAUSTED
};

class InferenceService final : public tq::inference::v1::Inference::Service {
 public:
  InferenceService(const ServiceOptions& options, InferenceMetrics* metrics);

  // The engine, once loaded (not owned; must outlive the service's calls).
  void SetEngine(Engine* engine);
  void SetReady(bool ready);
  void SetStartupPhase(const std::string& phase, double seconds);
  void BeginDrain();
  // Requests still streaming.
  int in_flight() const { return in_flight_.load(); }
  // Waits until no request is in flight or `timeout` passes; true if none is left.
  bool WaitIdle(std::chrono::milliseconds timeout);
  // Aborts every running request (their streams end with CANCELLED); returns how many.
  int AbortAll();

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Abort(grpc::ServerContext* ctx, const v1::AbortRequest* req, v1::AbortResponse* resp) override;
  grpc::Status GetModelInfo(grpc::ServerContext* ctx, const v1::GetModelInfoRequest* req,
                            v1::ModelInfo* resp) override;
  grpc::Status GetLoads(grpc::ServerContext* ctx, const v1::GetLoadsRequest* req, v1::Loads* resp) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                        v1::TokenizeResponse* resp) override;

 private:
  struct Active {
    uint64_t engine_id = 0;
    bool aborted_by_rpc = false;
    bool shutdown = false;
  };
  grpc::Status Authorize(grpc::ServerContext* ctx) const;
  // Engine, or UNAVAILABLE while loading / draining (new requests only).
  grpc::Status Available(bool new_request, Engine** engine);
  grpc::Status Reject(RejectReason reason, grpc::StatusCode code, const std::string& message);

  ServiceOptions options_;
  InferenceMetrics* metrics_;
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};
  std::atomic<uint64_t> next_request_{1};

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<std::string, Active> active_;            // request id -> state
  std::map<std::string, double> startup_phases_;
};

}  // namespace tq::inference

#endif  // TQSERVE_SERVICES_INFERENCE_INFERENCE_SERVICE_H_
