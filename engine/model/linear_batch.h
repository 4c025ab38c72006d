// File: engine/model/linear_batch.h
//
// Runs CPU linear layers that share one input x [m, k] (q/k/v, gate/up, ...) over a thread pool:
// TQ layers get one rotated copy of x per distinct (group size, rotation block), and the output
// rows of all the layers are split over the pool together. Used by every CPU forward pass
// (Transformer, MlaTransformer). Not thread-safe: one per model, called from its step.
#ifndef TQSERVE_ENGINE_MODEL_LINEAR_BATCH_H_
#define TQSERVE_ENGINE_MODEL_LINEAR_BATCH_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "engine/model/weights.h"
#include "engine/util/thread_pool.h"

namespace tq {

class LinearBatch {
 public:
  struct Job {
    const Linear* linear;
    float* y;  // [m, linear->n()]
  };
  // `pool` must outlive this object.
  explicit LinearBatch(ThreadPool* pool) : pool_(pool) {}
  // y = x · Wᵀ (+ b) for every job; x is [m, k] with row stride k (the jobs' common k).
  void Run(const std::vector<Job>& jobs, const float* x, int64_t m);

 private:
  ThreadPool* pool_;
  // Rotated copies of x, reused across calls.
  std::vector<std::vector<float>> rotated_;
  std::vector<std::pair<int, int>> rotated_keys_;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_LINEAR_BATCH_H_
