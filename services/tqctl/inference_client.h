// File: services/tqctl/inference_client.h
//
// Client helpers of the inference service (tq.inference.v1.Inference) for tqctl generate /
// info / bench: one streamed Generate call read to its end and timed on the client, gRPC
// errors as absl::Status (with the server's retry hint), names of finish reasons.
#ifndef TQSERVE_SERVICES_TQCTL_INFERENCE_CLIENT_H_
#define TQSERVE_SERVICES_TQCTL_INFERENCE_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/tq/inference/v1/inference.grpc.pb.h"

namespace tq::tqctl {

namespace inference_v1 = ::tq::inference::v1;

// What one Generate stream delivered.
struct StreamedGeneration {
  std::string request_id;
  std::vector<int32_t> token_ids;  // all chunks' token ids (when stream.token_ids)
  std::vector<float> logprobs;     // when stream.logprobs
  std::string text;                // all chunks' text (when stream.text)
  inference_v1::Complete complete;
  // Client-side times in seconds since the call was started.
  double first_token_s = 0;            // the first chunk that carried a token (or text)
  double complete_s = 0;               // the `complete` message
  std::vector<double> token_chunk_s;   // each chunk that carried a token (or text)
};

// Runs `request` on `stub` with `ctx` (authorized, with any deadline, by the caller) and reads
// the stream to its end; `on_chunk` (may be empty) sees every chunk as it arrives. A stream
// that ends with a non-OK status is that error (see StatusFromGrpc); one that ends OK without a
// `complete` message, or with messages after it, is INTERNAL. The `complete` message's finish
// reason is the caller's to judge (ERROR and CANCELLED end a stream with OK too).
absl::StatusOr<StreamedGeneration> StreamGenerate(
    inference_v1::Inference::StubInterface& stub, grpc::ClientContext& ctx,
    const inference_v1::GenerateRequest& request,
    const std::function<void(const inference_v1::Chunk&)>& on_chunk);

// A finished call's status as absl::Status, the message completed with the server's
// "retry-after-ms" trailer when there is one.
absl::Status StatusFromGrpc(const grpc::Status& status, const grpc::ClientContext& ctx);

// "eos", "stop_sequence", "length", "cancelled", "time_limit", "error", "unspecified".
std::string FinishReasonLabel(inference_v1::FinishReason reason);

// One line about a completed stream: finish reason (and what matched), usage, client-side TTFT,
// E2E and decode speed, the server's timings.
std::string DescribeCompletion(const StreamedGeneration& g);

}  // namespace tq::tqctl

#endif  // TQSERVE_SERVICES_TQCTL_INFERENCE_CLIENT_H_
