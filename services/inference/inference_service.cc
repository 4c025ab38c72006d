#include "services/inference/inference_service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/manifest.h"
#include "services/common/grpc_status.h"
#include "services/common/log.h"
#include "services/common/server_util.h"

namespace tq::inference {
namespace {

using Clock = std::chrono::steady_clock;
namespace pb = tq::inference::v1;

double Ms(double seconds) { return seconds * 1000.0; }

// Events of one request, handed from the engine's step thread to the RPC's thread.
struct EventQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<GenerationEvent> events;
};

grpc::Status Invalid(const std::string& m) { return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, m); }

const char* OpenAiReason(pb::FinishReason r) {
  switch (r) {
    case pb::FINISH_REASON_EOS:
    case pb::FINISH_REASON_STOP_SEQUENCE:
      return "stop";
    case pb::FINISH_REASON_LENGTH:
    case pb::FINISH_REASON_TIME_LIMIT:
      return "length";
    default:
      return "abort";
  }
}

void FillComplete(const GenerationEvent& ev, pb::Complete* c) {
  pb::FinishReason r = pb::FINISH_REASON_UNSPECIFIED;
  switch (ev.finish_reason) {
    case FinishReason::kStop:
      if (ev.eos) {
        r = pb::FINISH_REASON_EOS;
      } else {
        r = pb::FINISH_REASON_STOP_SEQUENCE;
      }
      if (ev.stop_token_id >= 0) {
        c->set_stop_token_id(ev.stop_token_id);
      } else {
        c->set_stop_string(ev.stop_string);
      }
      break;
    case FinishReason::kLength:
      r = pb::FINISH_REASON_LENGTH;
      break;
    case FinishReason::kAbort:
      r = pb::FINISH_REASON_CANCELLED;
      break;
    case FinishReason::kTimeLimit:
      r = pb::FINISH_REASON_TIME_LIMIT;
      break;
    case FinishReason::kError:
    case FinishReason::kNone:
      r = pb::FINISH_REASON_ERROR;
      c->set_error(ev.status.ok() ? std::string("engine error") : std::string(ev.status.message()));
      break;
  }
  c->set_finish_reason(r);
  c->set_openai_finish_reason(OpenAiReason(r));
  c->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(ev.prompt_tokens));
  c->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(ev.completion_tokens));
  c->mutable_usage()->set_cached_tokens(0);
  pb::Timings* t = c->mutable_timings();
  t->set_queue_ms(Ms(ev.queue_s));
  t->set_e2e_ms(Ms(ev.total_s));
  if (ev.completion_tokens > 0) {
    t->set_ttft_ms(Ms(ev.first_token_s));
    t->set_prefill_ms(Ms(std::max(0.0, ev.first_token_s - ev.queue_s)));
    t->set_decode_ms(Ms(std::max(0.0, ev.total_s - ev.first_token_s)));
  }
}

}  // namespace

InferenceService::InferenceService(const ServiceOptions& options, InferenceMetrics* metrics)
    : options_(options), metrics_(metrics) {}

void InferenceService::SetEngine(Engine* engine) { engine_.store(engine); }

void InferenceService::SetReady(bool ready) { ready_.store(ready); }

void InferenceService::SetStartupPhase(const std::string& phase, double seconds) {
  std::lock_guard<std::mutex> l(mu_);
  startup_phases_[phase] = seconds;
}

void InferenceService::BeginDrain() { draining_.store(true); }

bool InferenceService::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  return idle_cv_.wait_for(l, timeout, [&] { return in_flight_.load() == 0; });
}

int InferenceService::AbortAll() {
  Engine* e = engine_.load();
  if (e == nullptr) return 0;
  std::lock_guard<std::mutex> l(mu_);
  int n = 0;
  for (auto& [id, a] : active_) {
    if (a.engine_id != 0 && e->Abort(a.engine_id)) {
      a.shutdown = true;
      ++n;
    }
  }
  return n;
}

grpc::Status InferenceService::Authorize(grpc::ServerContext* ctx) const {
  grpc::Status s = CheckBearerToken(*ctx, options_.auth_token);
  if (!s.ok() && metrics_) metrics_->OnRejected(RejectReason::kUnauthenticated);
  return s;
}

grpc::Status InferenceService::Reject(RejectReason reason, grpc::StatusCode code, const std::string& message) {
  if (metrics_) metrics_->OnRejected(reason);
  return grpc::Status(code, message);
}

grpc::Status InferenceService::Available(bool new_request, Engine** engine) {
  *engine = engine_.load();
  if (*engine == nullptr || !ready_.load()) {
    return Reject(RejectReason::kUnavailable, grpc::StatusCode::UNAVAILABLE,
                  "the server is not ready yet (loading the model or warming up)");
  }
  if (new_request && draining_.load()) {
    return Reject(RejectReason::kUnavailable, grpc::StatusCode::UNAVAILABLE,
                  "the server is draining (shutting down); retry on another replica");
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::Generate(grpc::ServerContext* ctx, const pb::GenerateRequest* req,
                                        grpc::ServerWriter<pb::GenerateResponse>* writer) {
  const auto arrival = Clock::now();
  if (grpc::Status a = Authorize(ctx); !a.ok()) return a;
  Engine* engine = nullptr;
  if (grpc::Status a = Available(true, &engine); !a.ok()) return a;

  // Request -> GenerationRequest.
  GenerationRequest r;
  auto invalid = [&](const std::string& m) { return Reject(RejectReason::kInvalid, grpc::StatusCode::INVALID_ARGUMENT, m); };
  switch (req->input_case()) {
    case pb::GenerateRequest::kText:
      if (req->text().empty()) return invalid("text: the prompt is empty");
      if (engine->tokenizer() == nullptr) {
        return invalid("text: this model has no tokenizer.json; send token_ids instead");
      }
      r.prompt = req->text();
      break;
    case pb::GenerateRequest::kTokenIds:
      if (req->token_ids().ids().empty()) return invalid("token_ids: the prompt is empty");
      r.prompt_ids.assign(req->token_ids().ids().begin(), req->token_ids().ids().end());
      break;
    default:
      return invalid("input: set one of text or token_ids");
  }
  if (req->request_id().size() > 256) return invalid("request_id: longer than 256 bytes");
  const pb::SamplingParams& sp = req->sampling();
  if (sp.has_temperature()) r.sampling.temperature = sp.temperature();
  if (sp.has_top_p()) r.sampling.top_p = sp.top_p();
  if (sp.has_top_k()) r.sampling.top_k = sp.top_k();
  if (sp.has_min_p()) r.sampling.min_p = sp.min_p();
  if (sp.has_seed()) r.sampling.seed = sp.seed();
  const pb::StoppingCriteria& st = req->stopping();
  r.max_tokens = st.has_max_tokens() ? static_cast<int64_t>(st.max_tokens()) : options_.default_max_tokens;
  if (r.max_tokens < 1) return invalid("stopping.max_tokens: must be >= 1");
  r.min_tokens = st.has_min_tokens() ? static_cast<int64_t>(st.min_tokens()) : 0;
  if (r.min_tokens > r.max_tokens) {
    return invalid(absl::StrCat("stopping.min_tokens (", r.min_tokens, ") exceeds max_tokens (", r.max_tokens, ")"));
  }
  if (st.stop_size() > options_.max_stop_strings) {
    return invalid(absl::StrCat("stopping.stop: at most ", options_.max_stop_strings, " stop strings"));
  }
  for (const std::string& s : st.stop()) {
    if (s.empty() || static_cast<int>(s.size()) > options_.max_stop_string_bytes) {
      return invalid(absl::StrCat("stopping.stop: each stop string must be 1..", options_.max_stop_string_bytes,
                                  " bytes"));
    }
    r.stop.push_back(s);
  }
  if (st.stop_token_ids_size() > options_.max_stop_token_ids) {
    return invalid(absl::StrCat("stopping.stop_token_ids: at most ", options_.max_stop_token_ids));
  }
  r.stop_token_ids.assign(st.stop_token_ids().begin(), st.stop_token_ids().end());
  r.ignore_eos = st.ignore_eos();
  if (req->has_time_limit_ms() && req->time_limit_ms() > 0) {
    r.deadline = arrival + std::chrono::milliseconds(req->time_limit_ms());
  }
  const bool want_text = !req->stream().has_text() || req->stream().text();
  const bool want_ids = !req->stream().has_token_ids() || req->stream().token_ids();
  const bool want_logprobs = req->stream().logprobs();
  const int64_t max_tokens = r.max_tokens;

  std::string rid = req->request_id();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (rid.empty()) {
      do {
        rid = absl::StrCat("req-", next_request_.fetch_add(1));
      } while (active_.count(rid));
    } else if (active_.count(rid)) {
      return Reject(RejectReason::kDuplicate, grpc::StatusCode::ALREADY_EXISTS,
                    absl::StrCat("request_id \"", rid, "\" is already running"));
    }
    active_[rid] = Active{};
    in_flight_.fetch_add(1);
  }
  auto leave = [&] {
    std::lock_guard<std::mutex> l(mu_);
    active_.erase(rid);
    in_flight_.fetch_sub(1);
    idle_cv_.notify_all();
  };

  auto queue = std::make_shared<EventQueue>();
  absl::StatusOr<uint64_t> submitted = engine->Submit(std::move(r), [queue](const GenerationEvent& ev) {
    {
      std::lock_guard<std::mutex> l(queue->mu);
      queue->events.push_back(ev);
    }
    queue->cv.notify_one();
  });
  if (!submitted.ok()) {
    leave();
    const absl::Status& s = submitted.status();
    RejectReason why = RejectReason::kInvalid;
    if (s.code() == absl::StatusCode::kResourceExhausted) {
      why = absl::StrContains(s.message(), "token budget") ? RejectReason::kTokenBudget : RejectReason::kQueueFull;
      ctx->AddTrailingMetadata("retry-after-ms", absl::StrCat(options_.retry_after_ms));
    } else if (s.code() == absl::StatusCode::kUnavailable) {
      why = RejectReason::kUnavailable;
    }
    if (metrics_) metrics_->OnRejected(why);
    return ToGrpcStatus(s);
  }
  const uint64_t engine_id = *submitted;
  {
    std::lock_guard<std::mutex> l(mu_);
    active_[rid].engine_id = engine_id;
  }

  // Stream.
  auto last_token_time = arrival;
  bool got_token = false;
  GenerationEvent final_event;
  bool finished = false;
  bool caller_gone = false;
  while (!finished) {
    std::deque<GenerationEvent> batch;
    {
      std::unique_lock<std::mutex> l(queue->mu);
      queue->cv.wait_for(l, options_.cancel_poll, [&] { return !queue->events.empty(); });
      batch.swap(queue->events);
    }
    if (batch.empty()) {
      if (ctx->IsCancelled()) {
        caller_gone = true;
        break;
      }
      continue;
    }
    pb::GenerateResponse chunk_msg;
    chunk_msg.set_request_id(rid);
    pb::Chunk* chunk = chunk_msg.mutable_chunk();
    bool has_content = false;
    const auto now = Clock::now();
    for (GenerationEvent& ev : batch) {
      if (!ev.token_ids.empty()) {
        const double gap = std::chrono::duration<double>(now - last_token_time).count();
        if (metrics_) {
          if (!got_token) {
            metrics_->OnFirstToken(gap);
          } else {
            metrics_->OnInterTokenLatency(gap / static_cast<double>(ev.token_ids.size()));
          }
          metrics_->OnTokens(static_cast<int64_t>(ev.token_ids.size()));
        }
        got_token = true;
        last_token_time = now;
      }
      if (want_ids && !ev.token_ids.empty()) {
        chunk->mutable_token_ids()->Add(ev.token_ids.begin(), ev.token_ids.end());
        has_content = true;
      }
      if (want_logprobs && !ev.logprobs.empty()) {
        chunk->mutable_logprobs()->Add(ev.logprobs.begin(), ev.logprobs.end());
        has_content = true;
      }
      if (want_text && !ev.text.empty()) {
        chunk->mutable_text()->append(ev.text);
        has_content = true;
      }
      chunk->set_prompt_tokens(static_cast<uint32_t>(ev.prompt_tokens));
      chunk->set_completion_tokens(static_cast<uint32_t>(ev.completion_tokens));
      if (ev.finished) {
        final_event = std::move(ev);
        finished = true;
        break;
      }
    }
    if (has_content && !writer->Write(chunk_msg)) {
      caller_gone = true;
      if (finished) break;
      break;
    }
  }

  grpc::Status result = grpc::Status::OK;
  if (caller_gone && !finished) {
    // The caller cancelled or its deadline passed: abort in the engine and wait for the final
    // event, so the request's KV blocks are free before the RPC returns.
    engine->Abort(engine_id);
    std::unique_lock<std::mutex> l(queue->mu);
    queue->cv.wait_for(l, std::chrono::seconds(30), [&] {
      for (const GenerationEvent& ev : queue->events) {
        if (ev.finished) return true;
      }
      return false;
    });
    for (GenerationEvent& ev : queue->events) {
      if (ev.finished) {
        final_event = std::move(ev);
        finished = true;
      }
    }
    l.unlock();
    const bool deadline = ctx->deadline() <= std::chrono::system_clock::now();
    if (metrics_) metrics_->OnCancelled(deadline ? CancelSource::kDeadline : CancelSource::kClient);
    result = deadline ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded; request aborted")
                      : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client; request aborted");
  } else if (finished) {
    pb::GenerateResponse done;
    done.set_request_id(rid);
    FillComplete(final_event, done.mutable_complete());
    if (!caller_gone) writer->Write(done);
    if (metrics_) {
      if (final_event.finish_reason == FinishReason::kAbort) {
        bool shutdown;
        {
          std::lock_guard<std::mutex> l(mu_);
          shutdown = active_[rid].shutdown;
        }
        metrics_->OnCancelled(shutdown ? CancelSource::kShutdown : CancelSource::kAbort);
      } else if (final_event.finish_reason == FinishReason::kTimeLimit) {
        metrics_->OnCancelled(CancelSource::kTimeLimit);
      }
    }
  }
  if (finished && metrics_) metrics_->OnFinished(final_event, max_tokens);
  if (metrics_) metrics_->UpdateEngineStats(engine->stats());
  LogFields f = {{"request_id", rid},
                 {"finish_reason", finished ? FinishReasonName(final_event.finish_reason) : "unknown"},
                 {"prompt_tokens", absl::StrCat(final_event.prompt_tokens)},
                 {"completion_tokens", absl::StrCat(final_event.completion_tokens)},
                 {"ttft_ms", absl::StrCat(static_cast<int64_t>(Ms(final_event.first_token_s)))},
                 {"e2e_ms", absl::StrCat(static_cast<int64_t>(Ms(final_event.total_s)))}};
  if (!result.ok()) f.push_back({"status", result.error_message()});
  if (final_event.finish_reason == FinishReason::kError) f.push_back({"error", final_event.status.ToString()});
  LogInfo("request finished", f);
  leave();
  return result;
}

grpc::Status InferenceService::Abort(grpc::ServerContext* ctx, const pb::AbortRequest* req, pb::AbortResponse* resp) {
  if (grpc::Status a = Authorize(ctx); !a.ok()) return a;
  Engine* engine = engine_.load();
  std::lock_guard<std::mutex> l(mu_);
  for (const std::string& id : req->request_ids()) {
    auto it = active_.find(id);
    if (engine != nullptr && it != active_.end() && it->second.engine_id != 0 && engine->Abort(it->second.engine_id)) {
      it->second.aborted_by_rpc = true;
      resp->add_aborted(id);
    } else {
      resp->add_not_found(id);
    }
  }
  if (resp->aborted_size() > 0) {
    LogInfo("abort", {{"requests", absl::StrCat(resp->aborted_size())}, {"reason", req->reason()}});
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetModelInfo(grpc::ServerContext* ctx, const pb::GetModelInfoRequest*,
                                            pb::ModelInfo* resp) {
  if (grpc::Status a = Authorize(ctx); !a.ok()) return a;
  Engine* engine = nullptr;
  if (grpc::Status a = Available(false, &engine); !a.ok()) return a;
  const ModelInfo& m = engine->model_info();
  resp->set_model_uri(m.uri);
  resp->set_architecture(m.config.architecture);
  resp->set_model_type(ModelArchName(m.config.arch));
  resp->set_checkpoint_format(m.checkpoint_kind);
  pb::QuantizationInfo* q = resp->mutable_quantization();
  for (int b : m.tq_bits) q->add_bits(b);
  q->set_group_size(m.tq_group_size);
  q->set_codebook(m.tq_bits.empty() ? "" : "lloyd-max-gaussian");
  q->set_gain(m.tq_gain);
  q->set_policy(m.tq_policy);
  q->set_bits_per_weight(m.tq_bits_per_weight);
  q->set_quantized_linears(static_cast<uint32_t>(m.quantized_linears));
  q->set_dense_linears(static_cast<uint32_t>(m.dense_linears));
  resp->set_manifest_sha256(m.manifest_sha256);
  resp->set_kv_codec(m.kv_codec);
  resp->set_kv_bytes_per_token(static_cast<uint64_t>(m.kv_bytes_per_token));
  resp->set_kv_capacity_tokens(static_cast<uint64_t>(m.kv_capacity_tokens));
  resp->set_max_context_length(static_cast<uint64_t>(m.max_model_len));
  for (int32_t id : m.config.eos_token_ids) resp->add_eos_token_ids(id);
  resp->set_vocab_size(static_cast<uint32_t>(m.config.vocab_size));
  resp->set_num_layers(static_cast<uint32_t>(m.config.num_layers));
  resp->set_hidden_size(static_cast<uint32_t>(m.config.hidden_size));
  resp->set_tensor_parallel_size(static_cast<uint32_t>(options_.tensor_parallel_size));
  resp->set_device(options_.device);
  resp->set_weight_bytes(m.weight_file_bytes);
  resp->set_server_version(kTqserveVersion);
  resp->set_has_tokenizer(engine->tokenizer() != nullptr);
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetLoads(grpc::ServerContext* ctx, const pb::GetLoadsRequest*, pb::Loads* resp) {
  if (grpc::Status a = Authorize(ctx); !a.ok()) return a;
  resp->set_ready(ready_.load() && !draining_.load());
  resp->set_draining(draining_.load());
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [phase, s] : startup_phases_) (*resp->mutable_startup_phase_seconds())[phase] = s;
  }
  Engine* engine = engine_.load();
  if (engine == nullptr) return grpc::Status::OK;
  const EngineStats s = engine->stats();
  resp->set_running(static_cast<uint32_t>(s.running));
  resp->set_waiting(static_cast<uint32_t>(s.waiting));
  resp->set_waiting_tokens(static_cast<uint64_t>(s.waiting_tokens));
  resp->set_kv_blocks_used(static_cast<uint64_t>(s.kv_blocks_used));
  resp->set_kv_blocks_total(static_cast<uint64_t>(s.kv_blocks_total));
  resp->set_kv_cache_usage(s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0);
  resp->set_kv_capacity_tokens(static_cast<uint64_t>(engine->model_info().kv_capacity_tokens));
  resp->set_requests_finished(s.finished_requests);
  resp->set_requests_aborted(s.aborted_requests);
  resp->set_prompt_tokens(s.prompt_tokens);
  resp->set_generation_tokens(s.generated_tokens);
  resp->set_preemptions(s.preemptions);
  return grpc::Status::OK;
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext* ctx, const pb::TokenizeRequest* req,
                                        pb::TokenizeResponse* resp) {
  if (grpc::Status a = Authorize(ctx); !a.ok()) return a;
  Engine* engine = nullptr;
  if (grpc::Status a = Available(false, &engine); !a.ok()) return a;
  const Tokenizer* tok = engine->tokenizer();
  if (tok == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this model has no tokenizer.json");
  }
  std::vector<int32_t> ids;
  switch (req->input_case()) {
    case pb::TokenizeRequest::kText:
      ids = tok->Encode(req->text());
      resp->set_text(req->text());
      break;
    case pb::TokenizeRequest::kTokenIds: {
      ids.assign(req->token_ids().ids().begin(), req->token_ids().ids().end());
      auto text = tok->Decode(ids);
      if (!text.ok()) return Invalid(absl::StrCat("token_ids: ", text.status().message()));
      resp->set_text(*text);
      break;
    }
    default:
      return Invalid("input: set one of text or token_ids");
  }
  for (int32_t id : ids) {
    resp->add_token_ids(id);
    resp->add_tokens(std::string(tok->IdToToken(id)));
  }
  return grpc::Status::OK;
}

}  // namespace tq::inference
