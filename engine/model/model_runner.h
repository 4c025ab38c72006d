// File: engine/model/model_runner.h
//
// What the engine's scheduler needs from a model backend: one forward step over a flat batch of
// tokens from many sequences (engine/model/transformer.h defines the batch), writing K/V for
// the batch's positions and returning the logits the batch asks for. Implemented by the CPU
// Transformer and by CudaTransformer (engine/model/cuda_transformer.h).
#ifndef TQSERVE_ENGINE_MODEL_MODEL_RUNNER_H_
#define TQSERVE_ENGINE_MODEL_MODEL_RUNNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/kv_cache/paged_kv_cache.h"
#include "kernels/cuda/sampling.h"

namespace tq {

struct ForwardBatch;

// Sampling of one logits row on the device (ForwardSample): the request's filters and random
// stream (key, draw index) as the device sampler takes them — kernels/cuda/sampling.h says what
// is drawn: the host sampler's distribution, another generator — and the ids to mask with −inf
// first (the runner sets params' masked range when it lays them out).
struct RowSampling {
  cuda::SampleRowParams params;
  std::vector<int32_t> masked;  // each in [0, vocab)
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;  // log p(token) under the unfiltered softmax of logits / temperature
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  // Runs one step. `logits` becomes rows × vocab floats (resized, every element overwritten, so
  // a vector kept across steps is not zero-filled again): for each sequence in order, its last
  // token (kLast) or every token (kAll). The cache's block tables
  // must have room for every position of the batch.
  virtual absl::Status Forward(const ForwardBatch& batch, PagedKvCache& cache, std::vector<float>* logits) = 0;
  // True when ForwardSample is implemented: the runner samples its logits rows where they are
  // (the CUDA backend), so only the tokens come back.
  virtual bool SamplesOnDevice() const { return false; }
  // Forward, then one token per logits row (`rows[i]` for row i; the batch must ask for exactly
  // rows.size() rows), instead of the logits. UNIMPLEMENTED unless SamplesOnDevice().
  virtual absl::Status ForwardSample(const ForwardBatch& batch, PagedKvCache& cache,
                                     const std::vector<RowSampling>& rows, std::vector<SampledToken>* tokens) {
    return absl::UnimplementedError(std::string(device()) + " backend does not sample on the device");
  }
  virtual int64_t max_positions() const = 0;
  // "cpu" or "cuda".
  virtual const char* device() const = 0;
  // One line on how the model runs (device, which kernels serve which layers).
  virtual std::string Describe() const = 0;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_MODEL_RUNNER_H_
