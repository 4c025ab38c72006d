#include "services/tqctl/inference_client.h"

#include <chrono>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tq::tqctl {

absl::Status StatusFromGrpc(const grpc::Status& status, const grpc::ClientContext& ctx) {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (message.empty()) message = "(no message)";
  const auto& trailers = ctx.GetServerTrailingMetadata();
  if (auto it = trailers.find("retry-after-ms"); it != trailers.end()) {
    absl::StrAppend(&message, " (the server suggests retrying after ",
                    std::string(it->second.data(), it->second.size()), " ms)");
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), message);
}

absl::StatusOr<StreamedGeneration> StreamGenerate(
    inference_v1::Inference::StubInterface& stub, grpc::ClientContext& ctx,
    const inference_v1::GenerateRequest& request,
    const std::function<void(const inference_v1::Chunk&)>& on_chunk) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  auto since_start = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  StreamedGeneration g;
  g.request_id = request.request_id();
  std::unique_ptr<grpc::ClientReaderInterface<inference_v1::GenerateResponse>> stream =
      stub.Generate(&ctx, request);
  inference_v1::GenerateResponse response;
  bool completed = false;
  std::string protocol_error;
  while (stream->Read(&response)) {
    const double t = since_start();
    if (!response.request_id().empty()) g.request_id = response.request_id();
    if (completed && protocol_error.empty()) {
      protocol_error = "the server sent a message after the stream's `complete` message";
    }
    if (response.has_chunk()) {
      const inference_v1::Chunk& chunk = response.chunk();
      if (chunk.token_ids_size() > 0 || !chunk.text().empty()) {
        if (g.token_chunk_s.empty()) g.first_token_s = t;
        g.token_chunk_s.push_back(t);
      }
      g.token_ids.insert(g.token_ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
      g.logprobs.insert(g.logprobs.end(), chunk.logprobs().begin(), chunk.logprobs().end());
      g.text += chunk.text();
      if (on_chunk) on_chunk(chunk);
    } else if (response.has_complete()) {
      completed = true;
      g.complete = response.complete();
      g.complete_s = t;
    } else if (protocol_error.empty()) {
      protocol_error = "the server sent a response with neither a chunk nor a complete message";
    }
  }
  const grpc::Status status = stream->Finish();
  if (!status.ok()) return StatusFromGrpc(status, ctx);
  if (!protocol_error.empty()) return absl::InternalError(protocol_error);
  if (!completed) {
    return absl::InternalError("the stream ended without a `complete` message");
  }
  if (g.token_chunk_s.empty()) g.first_token_s = g.complete_s;  // nothing generated
  return g;
}

std::string FinishReasonLabel(inference_v1::FinishReason reason) {
  switch (reason) {
    case inference_v1::FINISH_REASON_EOS:
      return "eos";
    case inference_v1::FINISH_REASON_STOP_SEQUENCE:
      return "stop_sequence";
    case inference_v1::FINISH_REASON_LENGTH:
      return "length";
    case inference_v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    case inference_v1::FINISH_REASON_TIME_LIMIT:
      return "time_limit";
    case inference_v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return absl::StrCat("unspecified(", static_cast<int>(reason), ")");
  }
}

std::string DescribeCompletion(const StreamedGeneration& g) {
  const inference_v1::Complete& c = g.complete;
  std::string out = absl::StrCat("finish: ", FinishReasonLabel(c.finish_reason()));
  switch (c.matched_stop_case()) {
    case inference_v1::Complete::kStopString:
      absl::StrAppend(&out, " (string \"", absl::CHexEscape(c.stop_string()), "\")");
      break;
    case inference_v1::Complete::kStopTokenId:
      absl::StrAppend(&out, " (token ", c.stop_token_id(), ")");
      break;
    default:
      break;
  }
  if (!c.error().empty()) absl::StrAppend(&out, " (", c.error(), ")");
  absl::StrAppendFormat(&out, "; usage: prompt %d, completion %d", c.usage().prompt_tokens(),
                        c.usage().completion_tokens());
  if (c.usage().cached_tokens() > 0) absl::StrAppendFormat(&out, ", cached %d", c.usage().cached_tokens());
  absl::StrAppend(&out, " tokens");
  const double decode_s = g.complete_s - g.first_token_s;
  const uint32_t n = c.usage().completion_tokens();
  absl::StrAppendFormat(&out, "; ttft %.1f ms, e2e %.1f ms, %.1f tokens/s after the first",
                        g.first_token_s * 1e3, g.complete_s * 1e3,
                        n > 1 && decode_s > 0 ? (n - 1) / decode_s : 0.0);
  const inference_v1::Timings& t = c.timings();
  absl::StrAppendFormat(&out, "; server: queue %.1f, prefill %.1f, ttft %.1f, decode %.1f, e2e %.1f ms",
                        t.queue_ms(), t.prefill_ms(), t.ttft_ms(), t.decode_ms(), t.e2e_ms());
  if (!g.request_id.empty()) absl::StrAppend(&out, "; request ", g.request_id);
  return out;
}

}  // namespace tq::tqctl
