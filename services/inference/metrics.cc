#include "services/inference/metrics.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tq::inference {
namespace {

using prometheus::Histogram;

// vLLM's bucket edges (vllm/v1/metrics/loggers.py).
const Histogram::BucketBoundaries kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                                  0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                                  20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
// vLLM's ITL edges plus 1, 2.5, 5 and 7.5 ms (SERVING.md §7.2: fast decode hides below 10 ms).
const Histogram::BucketBoundaries kItlBuckets = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
                                                 0.075, 0.1,    0.15,  0.2,    0.3,  0.4,   0.5,
                                                 0.75,  1.0,    2.5,   5.0,    7.5,  10.0,  20.0,
                                                 40.0,  80.0};
const Histogram::BucketBoundaries kRequestLatencyBuckets = {
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0};
const Histogram::BucketBoundaries kIterationTokenBuckets = {1,   8,    16,   32,   64,  128,
                                                            256, 512,  1024, 2048, 4096, 8192,
                                                            16384};
const Histogram::BucketBoundaries kStepBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};

// 1-2-5 buckets up to max_len (vLLM's build_1_2_5_buckets).
Histogram::BucketBoundaries OneTwoFive(int64_t max_len) {
  Histogram::BucketBoundaries b;
  for (double mant = 1;; mant *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      if (m * mant > static_cast<double>(std::max<int64_t>(max_len, 1))) return b;
      b.push_back(m * mant);
    }
  }
}

const char* RejectName(RejectReason r) {
  switch (r) {
    case RejectReason::kInvalid:
      return "invalid";
    case RejectReason::kQueueFull:
      return "queue_full";
    case RejectReason::kTokenBudget:
      return "token_budget";
    case RejectReason::kUnavailable:
      return "unavailable";
    case RejectReason::kUnauthenticated:
      return "unauthenticated";
    case RejectReason::kDuplicate:
      return "duplicate_id";
  }
  return "other";
}

const char* CancelName(CancelSource s) {
  switch (s) {
    case CancelSource::kClient:
      return "client";
    case CancelSource::kDeadline:
      return "deadline";
    case CancelSource::kAbort:
      return "abort";
    case CancelSource::kTimeLimit:
      return "time_limit";
    case CancelSource::kShutdown:
      return "shutdown";
  }
  return "other";
}

}  // namespace

InferenceMetrics::InferenceMetrics(prometheus::Registry& r, const MetricsOptions& o)
    : options_(o), registry_(r), labels_({{"model_name", o.model_name}, {"engine", "0"}}) {
  const std::string& p = o.prefix;
  auto gauge = [&](const std::string& name, const std::string& help) {
    return &prometheus::BuildGauge().Name(p + name).Help(help).Register(r).Add(labels_);
  };
  auto counter = [&](const std::string& name, const std::string& help) {
    return &prometheus::BuildCounter().Name(p + name).Help(help).Register(r).Add(labels_);
  };
  auto histogram = [&](const std::string& name, const std::string& help, const Histogram::BucketBoundaries& b) {
    return &prometheus::BuildHistogram().Name(p + name).Help(help).Register(r).Add(labels_, b);
  };
  running_ = gauge("num_requests_running", "Number of requests in model execution batches.");
  waiting_ = gauge("num_requests_waiting", "Number of requests waiting to be processed.");
  kv_usage_ = gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.");
  prompt_tokens_ = counter("prompt_tokens_total", "Number of prefill tokens processed.");
  generation_tokens_ = counter("generation_tokens_total", "Number of generation tokens processed.");
  preemptions_ = counter("num_preemptions_total", "Cumulative number of preemption from the engine.");
  prefix_queries_ = counter("prefix_cache_queries_total",
                            "Prefix cache queries, in terms of number of queried tokens (no prefix cache yet: 0).");
  prefix_hits_ = counter("prefix_cache_hits_total",
                         "Prefix cache hits, in terms of number of cached tokens (no prefix cache yet: 0).");
  success_ = &prometheus::BuildCounter()
                  .Name(p + "request_success_total")
                  .Help("Count of successfully processed requests, by finished_reason (stop, length, abort).")
                  .Register(r);
  for (const char* reason : {"stop", "length", "abort"}) {
    auto l = labels_;
    l["finished_reason"] = reason;
    success_->Add(l);
  }
  ttft_ = histogram("time_to_first_token_seconds", "Histogram of time to first token in seconds.", kTtftBuckets);
  itl_ = histogram("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", kItlBuckets);
  e2e_ = histogram("e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                   kRequestLatencyBuckets);
  queue_ = histogram("request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                     kRequestLatencyBuckets);
  inference_ = histogram("request_inference_time_seconds",
                         "Histogram of time spent in RUNNING phase for request.", kRequestLatencyBuckets);
  prefill_ = histogram("request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.",
                       kRequestLatencyBuckets);
  decode_ = histogram("request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.",
                      kRequestLatencyBuckets);
  const auto tokens = OneTwoFive(o.max_model_len);
  prompt_hist_ = histogram("request_prompt_tokens", "Number of prefill tokens processed.", tokens);
  generation_hist_ = histogram("request_generation_tokens", "Number of generation tokens processed.", tokens);
  max_tokens_hist_ = histogram("request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokens);
  // vLLM names this histogram "..._total", which Prometheus' lint rejects for a non-counter; the
  // compatibility prefix (with a colon, already outside the lint) keeps vLLM's name.
  const bool vllm_names = p.find(':') != std::string::npos;
  iteration_tokens_ = histogram(vllm_names ? "iteration_tokens_total" : "iteration_tokens",
                                "Histogram of number of tokens per engine_step.",
                                kIterationTokenBuckets);
  cache_config_ = &prometheus::BuildGauge()
                       .Name(p + "cache_config_info")
                       .Help("Information of the KV cache configuration (value 1; the configuration is in the labels).")
                       .Register(r);

  startup_ = &prometheus::BuildGauge()
                  .Name("tq_startup_phase_seconds")
                  .Help("Seconds each startup phase took: open (download/map), verify (checksums), bind, "
                        "tokenizer, kv_alloc, warmup.")
                  .Register(r);
  load_bytes_per_second_ = &prometheus::BuildGauge()
                                .Name("tq_weights_load_bytes_per_second")
                                .Help("Weight bytes loaded (and verified) per second at startup.")
                                .Register(r)
                                .Add({});
  checksum_failures_ = &prometheus::BuildCounter()
                            .Name("tq_checksum_failures_total")
                            .Help("Checkpoint files whose size or sha256 did not match the manifest.")
                            .Register(r)
                            .Add({});
  rejected_ = &prometheus::BuildCounter()
                   .Name("tq_requests_rejected_total")
                   .Help("Requests turned away before admission, by reason (invalid, queue_full, token_budget, "
                         "unavailable, unauthenticated, duplicate_id).")
                   .Register(r);
  cancelled_ = &prometheus::BuildCounter()
                    .Name("tq_requests_cancelled_total")
                    .Help("Requests ended early, by source (client, deadline, abort, time_limit, shutdown).")
                    .Register(r);
  for (RejectReason x : {RejectReason::kInvalid, RejectReason::kQueueFull, RejectReason::kTokenBudget,
                         RejectReason::kUnavailable, RejectReason::kUnauthenticated, RejectReason::kDuplicate}) {
    rejected_->Add({{"reason", RejectName(x)}});
  }
  for (CancelSource x : {CancelSource::kClient, CancelSource::kDeadline, CancelSource::kAbort,
                         CancelSource::kTimeLimit, CancelSource::kShutdown}) {
    cancelled_->Add({{"source", CancelName(x)}});
  }
  kv_bytes_per_token_ = &prometheus::BuildGauge()
                             .Name("tq_kv_bytes_per_token")
                             .Help("KV-cache bytes per token position, all layers, by layer kind (mha, mla).")
                             .Register(r);
  kv_capacity_tokens_ = &prometheus::BuildGauge()
                             .Name("tq_kv_cache_capacity_tokens")
                             .Help("Token positions the KV cache holds.")
                             .Register(r)
                             .Add({});
  model_info_ = &prometheus::BuildGauge()
                     .Name("tq_model_info")
                     .Help("The served model (value 1; its description is in the labels).")
                     .Register(r);
  ready_ = &prometheus::BuildGauge()
                .Name("tq_server_ready")
                .Help("1 while the server reports SERVING (weights verified, KV allocated, warmed up, not draining).")
                .Register(r)
                .Add({});
  step_seconds_ = &prometheus::BuildHistogram()
                       .Name("tq_engine_step_seconds")
                       .Help("Wall time of one engine step (one batched forward pass and sampling).")
                       .Register(r)
                       .Add({}, kStepBuckets);
}

void InferenceMetrics::SetModel(const ModelInfo& info, const std::string& device, int tp) {
  std::vector<std::string> bits;
  for (int b : info.tq_bits) bits.push_back(absl::StrCat(b));
  model_info_
      ->Add({{"model_name", options_.model_name},
             {"architecture", info.config.architecture},
             {"format", info.checkpoint_kind},
             {"tq_bits", bits.empty() ? "16" : absl::StrJoin(bits, ",")},
             {"codebook", bits.empty() ? "none" : "lloyd-max-gaussian"},
             {"gain", info.tq_gain},
             {"policy", info.tq_policy},
             {"kv_codec", info.kv_codec},
             {"device", device},
             {"tp", absl::StrCat(tp)},
             {"manifest_sha256", info.manifest_sha256}})
      .Set(1);
  cache_config_
      ->Add({{"model_name", options_.model_name},
             {"engine", "0"},
             {"block_size", absl::StrCat(info.kv_block_size)},
             {"cache_dtype", info.kv_codec},
             {"num_gpu_blocks", absl::StrCat(info.kv_block_size > 0 ? info.kv_capacity_tokens / info.kv_block_size : 0)},
             {"num_cpu_blocks", "0"},
             {"enable_prefix_caching", "False"}})
      .Set(1);
  kv_bytes_per_token_->Add({{"layer_kind", "mha"}}).Set(static_cast<double>(info.kv_bytes_per_token));
  kv_capacity_tokens_->Set(static_cast<double>(info.kv_capacity_tokens));
  const double load_s = info.load.open_s + info.load.verify_s;
  if (load_s > 0) load_bytes_per_second_->Set(static_cast<double>(info.weight_file_bytes) / load_s);
  SetStartupPhase("open", info.load.open_s);
  SetStartupPhase("verify", info.load.verify_s);
  SetStartupPhase("bind", info.load.bind_s);
  SetStartupPhase("tokenizer", info.tokenizer_s);
  SetStartupPhase("kv_alloc", info.kv_alloc_s);
}

void InferenceMetrics::SetStartupPhase(const std::string& phase, double seconds) {
  startup_->Add({{"phase", phase}}).Set(seconds);
}

void InferenceMetrics::SetReady(bool ready) { ready_->Set(ready ? 1 : 0); }

void InferenceMetrics::OnChecksumFailure() { checksum_failures_->Increment(); }

void InferenceMetrics::UpdateEngineStats(const EngineStats& s) {
  running_->Set(s.running);
  waiting_->Set(s.waiting);
  kv_usage_->Set(s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0);
  std::lock_guard<std::mutex> l(mu_);
  if (s.preemptions > last_preemptions_) {
    preemptions_->Increment(static_cast<double>(s.preemptions - last_preemptions_));
    last_preemptions_ = s.preemptions;
  }
}

void InferenceMetrics::OnStep(const StepInfo& step) {
  iteration_tokens_->Observe(static_cast<double>(step.tokens));
  step_seconds_->Observe(step.seconds);
  if (step.prefill_tokens > 0) prompt_tokens_->Increment(static_cast<double>(step.prefill_tokens));
}

void InferenceMetrics::OnRejected(RejectReason reason) { rejected_->Add({{"reason", RejectName(reason)}}).Increment(); }

void InferenceMetrics::OnCancelled(CancelSource source) {
  cancelled_->Add({{"source", CancelName(source)}}).Increment();
}

void InferenceMetrics::OnFinished(const GenerationEvent& ev, int64_t max_tokens_param) {
  const char* reason = "abort";
  switch (ev.finish_reason) {
    case FinishReason::kStop:
      reason = "stop";
      break;
    case FinishReason::kLength:
    case FinishReason::kTimeLimit:
      reason = "length";
      break;
    default:
      break;
  }
  auto l = labels_;
  l["finished_reason"] = reason;
  success_->Add(l).Increment();
  e2e_->Observe(ev.total_s);
  queue_->Observe(ev.queue_s);
  inference_->Observe(std::max(0.0, ev.total_s - ev.queue_s));
  if (ev.completion_tokens > 0) {
    prefill_->Observe(std::max(0.0, ev.first_token_s - ev.queue_s));
    decode_->Observe(std::max(0.0, ev.total_s - ev.first_token_s));
  }
  prompt_hist_->Observe(static_cast<double>(ev.prompt_tokens));
  generation_hist_->Observe(static_cast<double>(ev.completion_tokens));
  max_tokens_hist_->Observe(static_cast<double>(max_tokens_param));
}

}  // namespace tq::inference
