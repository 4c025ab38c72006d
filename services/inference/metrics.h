// File: services/inference/metrics.h
//
// Prometheus metrics of the inference server.
//
// The vLLM-compatible set carries vLLM's names, semantics and bucket edges under a switchable
// prefix ("vllm:" by default, so existing vLLM dashboards and autoscalers work unchanged; e.g.
// "tq:" to avoid clashing with a real vLLM in the same Prometheus), labelled
// {model_name, engine="0"}. Inter-token latency buckets extend below vLLM's 10 ms floor
// (1, 2.5, 5, 7.5 ms). The tqserve series are always named tq_*.
//
// `promtool check metrics` lints colons in names (vLLM's convention; its design doc concedes the
// point): with the default prefix it reports exactly those; with a prefix such as "tq_" the whole
// exposition is lint-clean (vLLM's histogram "iteration_tokens_total" is then "iteration_tokens").
//
// Thread safety: every method may be called from any thread.
#ifndef TQSERVE_SERVICES_INFERENCE_METRICS_H_
#define TQSERVE_SERVICES_INFERENCE_METRICS_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "engine/runtime/engine.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace tq::inference {

// Why the server turned a request away (tq_requests_rejected_total{reason}).
enum class RejectReason { kInvalid, kQueueFull, kTokenBudget, kUnavailable, kUnauthenticated, kDuplicate };
// Who ended a request early (tq_requests_cancelled_total{source}).
enum class CancelSource { kClient, kDeadline, kAbort, kTimeLimit, kShutdown };

struct MetricsOptions {
  std::string prefix = "vllm:";  // of the vLLM-compatible set
  std::string model_name;
  int64_t max_model_len = 0;     // top of the token-count histograms' 1-2-5 buckets
};

class InferenceMetrics {
 public:
  InferenceMetrics(prometheus::Registry& registry, const MetricsOptions& options);

  // Startup: once, after the engine is created / warm-up ran.
  void SetModel(const ModelInfo& info, const std::string& device, int tensor_parallel_size);
  void SetStartupPhase(const std::string& phase, double seconds);
  void SetReady(bool ready);
  void OnChecksumFailure();

  // Engine state (called periodically and after request transitions).
  void UpdateEngineStats(const EngineStats& stats);
  // One engine step (from the engine's step thread).
  void OnStep(const StepInfo& step);

  // Requests.
  void OnRejected(RejectReason reason);
  void OnCancelled(CancelSource source);
  void OnTokens(int64_t n) { generation_tokens_->Increment(static_cast<double>(n)); }
  void OnInterTokenLatency(double seconds) { itl_->Observe(seconds); }
  void OnFirstToken(double ttft_seconds) { ttft_->Observe(ttft_seconds); }
  // The final event of a request that was accepted (any finish reason).
  void OnFinished(const GenerationEvent& final_event, int64_t max_tokens_param);

 private:
  MetricsOptions options_;
  prometheus::Registry& registry_;
  std::map<std::string, std::string> labels_;

  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_usage_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Counter* preemptions_;
  prometheus::Counter* prefix_queries_;
  prometheus::Counter* prefix_hits_;
  prometheus::Family<prometheus::Counter>* success_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_;
  prometheus::Histogram* inference_;
  prometheus::Histogram* prefill_;
  prometheus::Histogram* decode_;
  prometheus::Histogram* prompt_hist_;
  prometheus::Histogram* generation_hist_;
  prometheus::Histogram* max_tokens_hist_;
  prometheus::Histogram* iteration_tokens_;
  prometheus::Family<prometheus::Gauge>* cache_config_;

  prometheus::Family<prometheus::Gauge>* startup_;
  prometheus::Gauge* load_bytes_per_second_;
  prometheus::Counter* checksum_failures_;
  prometheus::Family<prometheus::Counter>* rejected_;
  prometheus::Family<prometheus::Counter>* cancelled_;
  prometheus::Family<prometheus::Gauge>* kv_bytes_per_token_;
  prometheus::Gauge* kv_capacity_tokens_;
  prometheus::Family<prometheus::Gauge>* model_info_;
  prometheus::Gauge* ready_;
  prometheus::Histogram* step_seconds_;

  std::mutex mu_;
  uint64_t last_preemptions_ = 0;
};

}  // namespace tq::inference

#endif  // TQSERVE_SERVICES_INFERENCE_METRICS_H_
