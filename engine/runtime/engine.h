// File: engine/runtime/engine.h
//
// The inference engine's C++ API: load a model (TQ or BF16 checkpoint, from file:// or s3://),
// submit generation requests, receive their tokens as a stream of events, abort them. Services
// (gRPC) and tools (tqctl generate / eval-ppl) are thin adapters over this header.
//
// Scheduling (one step thread): continuous batching under a token budget. Each step first
// gives every running sequence in decode its one token, then fills the remaining budget with
// prefill chunks (chunked prefill: a long prompt is spread over several steps without stalling
// the decodes), admitting waiting requests while there are sequence slots and KV blocks. When
// the KV cache runs out, the most recently admitted sequence is preempted (its blocks freed,
// recomputed later from its tokens). Aborted requests leave at the start of the next step,
// returning their KV blocks.
//
// Events are delivered on the step thread, in order, one per step per request that produced
// something; the last one has `finished` set. Callbacks must not block.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(auto engine, Engine::Create({.model_uri = "/models/qwen3-tq3"}));
//   GenerationRequest r;  r.prompt = "Hello";  r.max_tokens = 32;  r.sampling.temperature = 0;
//   TQ_ASSIGN_OR_RETURN(uint64_t id, engine->Submit(r, [](const GenerationEvent& e) {
//     std::cout << e.text;  if (e.finished) ...;
//   }));
#ifndef TQSERVE_ENGINE_RUNTIME_ENGINE_H_
#define TQSERVE_ENGINE_RUNTIME_ENGINE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache/paged_kv_cache.h"
#include "engine/model/model_config.h"
#include "engine/model/model_runner.h"
#include "engine/model/transformer.h"
#include "engine/model/weights.h"
#include "engine/sampling/sampler.h"
#include "engine/storage/object_store.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/util/thread_pool.h"

namespace tq {

struct EngineOptions {
  std::string model_uri;
  StoreOptions store;
  bool verify_checksums = true;  // sha256 of every TQ checkpoint file against its manifest
  int threads = 0;               // compute threads; 0 = all hardware threads
  // KV cache codec name with options (engine/kv_cache/kv_codec.h): bf16, fp32, fp8, k8v4,
  // 4bit_nc, k3v4_nc, 3bit_nc, turbo4, turbo3, k4v3, e.g. "turbo3:sink=4,boundary=0".
  // The CUDA backend: bf16 only.
  std::string kv_codec = "bf16";
  std::string device = "cpu";     // "cpu" or "cuda" (engine/model/cuda_transformer.h)
  int cuda_device = 0;            // CUDA device ordinal
  bool cuda_graphs = true;        // CUDA: replay decode steps as CUDA graphs
  // Sample where the logits are when the backend can (CUDA: kernels/cuda/sampling.h — the host
  // sampler's distribution, another generator, so a seed draws other tokens than on the CPU);
  // false: every backend copies the logits to the host and samples there.
  bool device_sampling = true;
  // CUDA, opt-in: one-token decode steps run TQ3 layers through the int8-activation GEMV
  // (kernels/cuda/tq_linear.h (f), W3A8: x_rot and the codebook rounded to int8; faster, not
  // the checkpoint's float arithmetic; perplexity in docs/BENCHMARKS.md §9).
  bool tq_int8_gemv = false;
  // With tq_int8_gemv: every TQ3 linear of every step on that kernel, row by row (slow for
  // prefill; for measuring the W3A8 arithmetic, e.g. tqctl eval-ppl --int8-gemv).
  bool tq_int8_gemv_all_rows = false;
  int kv_block_size = 16;         // token positions per KV block
  int64_t kv_cache_bytes = 0;     // 0 = room for max_num_seqs full contexts, at most 1 GiB
  int64_t max_model_len = 0;      // 0 = config max_position_embeddings
  int max_num_seqs = 32;          // sequences running at once
  int64_t max_num_batched_tokens = 512;  // token budget of one step
  int max_waiting = 1024;         // queued requests beyond this -> RESOURCE_EXHAUSTED
  int64_t max_waiting_tokens = 0; // queued prompt tokens beyond this -> RESOURCE_EXHAUSTED (0: no limit)
  // Called on the step thread after every step that ran the model (metrics); must not block.
  std::function<void(const struct StepInfo&)> on_step;
  bool dequantize_tq = false;     // compute TQ layers from dequantized fp32 weights (tests)
  // Test seam: wraps the model runner the engine built (e.g. to emulate a backend that samples
  // on the device, engine_test); unset = none.
  std::function<std::unique_ptr<ModelRunner>(std::unique_ptr<ModelRunner>)> wrap_model;
};

struct StepInfo {
  int64_t tokens = 0;     // tokens run through the model (prefill chunks + decodes)
  int sequences = 0;      // sequences in the batch
  int64_t prefill_tokens = 0;
  double seconds = 0;     // wall time of the step
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError, kTimeLimit };
// "stop", "length", "abort", "error", "time_limit"
const char* FinishReasonName(FinishReason r);

struct GenerationRequest {
  std::string prompt;               // tokenized unless prompt_ids is set
  std::vector<int32_t> prompt_ids;  // used as is when not empty
  SamplingParams sampling;
  int64_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;  // besides the model's eos ids
  std::vector<std::string> stop;        // stop strings; not included in the output text
  bool ignore_eos = false;
  int64_t min_tokens = 0;  // eos and stop token ids cannot be sampled before this many tokens
  // When set, the request finishes with kTimeLimit at the first step after this time.
  std::chrono::steady_clock::time_point deadline{};
};

struct GenerationEvent {
  uint64_t request_id = 0;
  std::vector<int32_t> token_ids;  // tokens produced since the last event
  std::vector<float> logprobs;     // log p of each of those tokens (softmax of logits / T)
  std::string text;                // text produced since the last event (whole UTF-8)
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_reason;         // "string:<stop>", "token:<id>", "aborted", "time limit", ...
  // kStop details: the matched stop string, or the token id (eos = it was an eos id).
  std::string stop_string;
  int32_t stop_token_id = -1;
  bool eos = false;
  absl::Status status;             // set when finish_reason == kError
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // Filled on the final event, seconds.
  double queue_s = 0;        // submit -> first scheduled
  double first_token_s = 0;  // submit -> first token
  double total_s = 0;        // submit -> finish
};

using EventCallback = std::function<void(const GenerationEvent&)>;

struct EngineStats {
  int running = 0;
  int waiting = 0;
  int64_t waiting_tokens = 0;      // prompt tokens of the waiting requests
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_bytes_per_token = 0;
  uint64_t steps = 0;
  uint64_t prompt_tokens = 0;      // computed in prefill (incl. recomputation)
  uint64_t generated_tokens = 0;
  uint64_t preemptions = 0;
  uint64_t finished_requests = 0;
  uint64_t aborted_requests = 0;
};

struct ModelInfo {
  std::string uri;
  std::string checkpoint_kind;  // "hf", "tq", "tq-plugin"
  ModelConfig config;
  int64_t max_model_len = 0;
  uint64_t weight_file_bytes = 0;
  uint64_t linear_weight_bytes = 0;
  uint64_t quantized_linears = 0, dense_linears = 0;
  std::string kv_codec;            // canonical: the preset and all its options
  std::string kv_layout;           // KvCacheFormat::Describe(): codecs and bytes per layer
  std::string device;              // "cpu" or "cuda"
  std::string runner;              // how the model runs (ModelRunner::Describe)
  int64_t kv_capacity_tokens = 0;  // KV blocks x block size
  int kv_block_size = 0;
  int64_t kv_bytes_per_token = 0;
  // TQ checkpoints.
  std::vector<int> tq_bits;        // distinct bit widths of the quantized linears, ascending
  int tq_group_size = 0;
  std::string tq_gain;             // gain mode of the quantized linears ("nc", "ls", "raw", "mixed")
  std::string tq_policy;           // manifest policy ("uniform", "kurtosis"); plugin: "uniform"
  std::string manifest_sha256;
  double tq_bits_per_weight = 0;   // stored bits (codes + norms) / weights, quantized tensors
  LoadTimings load;
  double tokenizer_s = 0;
  double kv_alloc_s = 0;
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  // Aborts what is still running and stops the step thread.
  ~Engine();

  // Validates and queues a request. Errors: INVALID_ARGUMENT (empty prompt, ids outside the
  // vocabulary, prompt too long for the context or the whole cache, bad sampling values,
  // max_tokens < 1, a text prompt without a tokenizer), RESOURCE_EXHAUSTED (queue full),
  // UNAVAILABLE (shutting down).
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, EventCallback callback);
  // Asks to abort; the request's final event (reason abort) follows within one step. False if
  // the id is unknown or already finished.
  bool Abort(uint64_t request_id);

  const ModelInfo& model_info() const { return info_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  EngineStats stats() const;

  // Negative log-likelihoods (natural log) of tokens[1..] of each sequence given its prefix,
  // computed without a carried context (each sequence starts at position 0). Runs between
  // steps; sequences must fit the context.
  absl::StatusOr<std::vector<std::vector<float>>> Score(const std::vector<std::vector<int32_t>>& seqs);

 private:
  struct Sequence;
  Engine() = default;
  void Loop();
  void Step();
  bool HasWork() const;
  int64_t WaitingTokensLocked() const;  // mu_ held
  void Finish(Sequence& s, FinishReason reason, const std::string& stop_reason, absl::Status status,
              GenerationEvent* ev);
  void AppendText(Sequence& s, int32_t token, bool finishing, GenerationEvent* ev);

  EngineOptions options_;
  ModelInfo info_;
  std::unique_ptr<ModelCheckpoint> ckpt_;
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<ModelRunner> model_;
  // The step loop's logits, kept across steps: rows × vocabulary floats (4.9 MB at 8 rows of
  // 152K) are not allocated and faulted in again every step.
  std::vector<float> step_logits_;
  std::unique_ptr<PagedKvCache> cache_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<int32_t> eos_ids_;
  int64_t context_limit_ = 0;  // min(max_model_len, cache positions)

  // Guards the model and the cache (the step thread and Score).
  std::mutex model_mu_;
  // Guards everything below.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t next_id_ = 1;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;  // step thread only (moved under mu_)
  std::unordered_map<uint64_t, bool> abort_requested_;  // id -> pending abort
  EngineStats stats_;
  std::thread thread_;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_RUNTIME_ENGINE_H_
