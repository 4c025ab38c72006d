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

namespace tq {

struct ForwardBatch;

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  // Runs one step. `logits` becomes rows × vocab floats (resized, every element overwritten, so
  // a vector kept across steps is not zero-filled again): for each sequence in order, its last
  // token (kLast) or every token (kAll). The cache's block tables
  // must have room for every position of the batch.
  virtual absl::Status Forward(const ForwardBatch& batch, PagedKvCache& cache, std::vector<float>* logits) = 0;
  virtual int64_t max_positions() const = 0;
  // "cpu" or "cuda".
  virtual const char* device() const = 0;
  // One line on how the model runs (device, which kernels serve which layers).
  virtual std::string Describe() const = 0;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_MODEL_RUNNER_H_
