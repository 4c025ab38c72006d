// File: engine/sampling/sampler.h
//
// Next-token selection from one row of logits, per request:
//   greedy (temperature 0): the argmax, ties to the lowest id (as torch.argmax);
//   otherwise logits / temperature, then top-k, top-p (nucleus: the smallest set of most likely
//   tokens whose probability reaches p), min-p (drop tokens below min_p × the top probability),
//   renormalize and draw with the request's own generator. A request with a seed draws the same
//   tokens every time, whatever else runs in the batch.
//
// Usage:
//   TQ_RETURN_IF_ERROR(ValidateSamplingParams(p));
//   Sampler s(p);
//   int32_t tok = s.Sample(logits, vocab);
#ifndef TQSERVE_ENGINE_SAMPLING_SAMPLER_H_
#define TQSERVE_ENGINE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "absl/status/status.h"

namespace tq {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  std::optional<uint64_t> seed;  // unset: a random seed
};

// InvalidArgument naming the field for temperature < 0 or non-finite, top_k < 0,
// top_p outside (0, 1], min_p outside [0, 1].
absl::Status ValidateSamplingParams(const SamplingParams& p);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks a token from logits[0..vocab). `logprob` (optional) receives log p(token) under the
  // unfiltered softmax of logits / temperature (of the raw logits when greedy).
  int32_t Sample(const float* logits, int64_t vocab, float* logprob = nullptr);

  const SamplingParams& params() const { return params_; }
  // The request's random stream for sampling on the device (kernels/cuda/sampling.h): its seed,
  // or a random key when it has none; and the index of its next device draw (counted here).
  uint64_t stream_key() const { return key_; }
  uint64_t TakeDrawIndex() { return draws_++; }
  bool greedy() const { return params_.temperature == 0.0f; }

 private:
  int64_t Draw(const std::vector<double>& p, int64_t keep);
  int32_t SampleNucleus(const float* logits, int64_t vocab, float t, float max_logit, double z);

  SamplingParams params_;
  uint64_t key_ = 0;
  uint64_t draws_ = 0;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;  // scratch
};

// The argmax of x[0..n), lowest index on ties.
int32_t ArgMax(const float* x, int64_t n);

}  // namespace tq

#endif  // TQSERVE_ENGINE_SAMPLING_SAMPLER_H_
