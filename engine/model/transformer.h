// File: engine/model/transformer.h
//
// The forward pass of a dense Llama-family decoder on the CPU, over a flat batch of tokens from
// any number of sequences (continuous batching: a step mixes prefill chunks and single decode
// tokens). Keys and values go to the paged KV cache; attention reads them back through the
// cache's codecs, so every token attends exactly to what the cache holds (also within a
// prefill chunk). Compressed codecs are read in their attention space (kv_codec.h): the query
// is rotated once per head, keys are scored in the rotated space, and the weighted sum of
// values is inverse-rotated once per head.
//
// Per layer (transformers' LlamaDecoderLayer, fp32):
//   h = RMSNorm(x);  q,k,v = h·Wqkvᵀ (+b);  [Qwen3: RMSNorm per head of q and k];  RoPE(q, k)
//   cache[pos] = k, v;  a = softmax(q·Kᵀ/√d + causal/sliding mask)·V;  x += a·Woᵀ (+b)
//   h = RMSNorm(x);  x += (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ   (Qwen3-MoE layers: the experts of moe.h)
// then logits = RMSNorm(x)·W_lmᵀ for the rows that need them.
//
// TQ layers rotate their input once per (group size, rotation block) and share it: q/k/v read
// one rotated copy of h, gate/up another.
//
// Usage:
//   Transformer model(cfg, weights, std::move(rope), &pool);
//   ForwardBatch b; b.tokens = {...}; b.seqs = {{handle, start, n, /*logits=*/LogitsMode::kLast}};
//   TQ_RETURN_IF_ERROR(model.Forward(b, cache, &logits));   // logits: rows x vocab
#ifndef TQSERVE_ENGINE_MODEL_TRANSFORMER_H_
#define TQSERVE_ENGINE_MODEL_TRANSFORMER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/kv_cache/paged_kv_cache.h"
#include "engine/model/model_config.h"
#include "engine/model/linear_batch.h"
#include "engine/model/moe.h"
#include "engine/model/model_runner.h"
#include "engine/model/rope.h"
#include "engine/model/weights.h"
#include "engine/util/thread_pool.h"

namespace tq {

enum class LogitsMode { kNone, kLast, kAll };

// One sequence's slice of a forward batch: tokens [offset, offset + num_tokens) of
// ForwardBatch::tokens, at positions start_pos, start_pos + 1, ... The cache must already have
// room for start_pos + num_tokens positions and hold positions [0, start_pos).
struct ForwardSequence {
  SeqHandle kv = 0;
  int64_t start_pos = 0;
  int64_t num_tokens = 0;
  LogitsMode logits = LogitsMode::kLast;
};

struct ForwardBatch {
  std::vector<int32_t> tokens;
  std::vector<ForwardSequence> seqs;  // in token order
};

// Checks a step's batch (as both CPU decoders need it): every slice non-empty, within
// max_positions and the cache's reserved space, the slices covering the tokens exactly, every
// token id in [0, vocab_size). InvalidArgument / OutOfRange / Internal naming the problem.
absl::Status ValidateForwardBatch(const ForwardBatch& batch, const PagedKvCache& cache, int64_t max_positions,
                                  int64_t vocab_size);

// The position and the sequence index (into batch.seqs) of every token of the batch.
void TokenPositions(const ForwardBatch& batch, std::vector<int64_t>* pos, std::vector<size_t>* seq_of);

// The feed-forward step of a decoder layer on the CPU, shared by Transformer and MlaTransformer:
// x[T, H] += MLP(RMSNorm(x; post_attention_norm)) — the dense SwiGLU, or the MoE of moe.h when
// the layer has one. Holds its scratch (one per model runner).
class FeedForward {
 public:
  void Run(const ModelConfig& cfg, const LayerWeights& L, float* x, int64_t T, LinearBatch& linears,
           ThreadPool* pool);

 private:
  std::vector<float> h_, gate_, up_, out_;
  MoeBlock moe_;
};

// The final step of the CPU decoders: the rows of x [tokens, H] that `batch` asks logits for
// (each sequence's last token, or every token), RMSNorm(final_norm), then the lm_head; logits
// is resized to rows × vocab.
void ComputeLogits(const ModelConfig& cfg, const ModelWeights& w, const ForwardBatch& batch, const float* x,
                   LinearBatch& linears, std::vector<float>* logits);

class Transformer : public ModelRunner {
 public:
  // `weights` and `pool` must outlive the model.
  Transformer(const ModelConfig& cfg, const ModelWeights& weights, RopeTable rope, ThreadPool* pool);

  const ModelConfig& config() const { return cfg_; }
  int64_t max_positions() const override { return rope_.max_positions(); }
  const char* device() const override { return "cpu"; }
  std::string Describe() const override;

  // Runs one step. Appends logits (vocab floats per row) to `logits` (cleared first): for each
  // sequence in order, its last token (kLast) or every token (kAll).
  absl::Status Forward(const ForwardBatch& batch, PagedKvCache& cache, std::vector<float>* logits) override;

 private:
  using LinearJob = LinearBatch::Job;
  void RunLinears(const std::vector<LinearJob>& jobs, const float* x, int64_t m) { linears_.Run(jobs, x, m); }
  void Attention(int layer, const ForwardBatch& batch, PagedKvCache& cache);

  const ModelConfig cfg_;
  const ModelWeights& w_;
  RopeTable rope_;
  ThreadPool* pool_;
  // Scratch, reused across steps.
  std::vector<float> x_, h_, q_, k_, v_, attn_, tmp_;
  LinearBatch linears_;
  FeedForward ffn_;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_TRANSFORMER_H_
