// File: engine/model/rope.h
//
// Rotary position embedding tables, computed the way transformers' `modeling_rope_utils` does
// for the supported RoPE types (default, linear, llama3, yarn): inverse frequencies in float32,
// angles as float32 products `inv_freq · position`, then cos/sin scaled by the attention factor
// (yarn's mscale; 1 otherwise). Tables are built once for positions [0, max_positions).
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(RopeTable rope, RopeTable::Create(cfg.rope, cfg.head_dim, 4096));
//   nn::ApplyRope(q, head_dim, heads, rope.cos(pos), rope.sin(pos));
#ifndef TQSERVE_ENGINE_MODEL_ROPE_H_
#define TQSERVE_ENGINE_MODEL_ROPE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"

namespace tq {

class RopeTable {
 public:
  static absl::StatusOr<RopeTable> Create(const RopeConfig& rope, int head_dim, int64_t max_positions);

  // head_dim/2 values each; pos < max_positions().
  const float* cos(int64_t pos) const { return cos_.data() + pos * half_; }
  const float* sin(int64_t pos) const { return sin_.data() + pos * half_; }
  int64_t max_positions() const { return max_positions_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  float attention_factor() const { return attention_factor_; }

 private:
  int half_ = 0;
  int64_t max_positions_ = 0;
  float attention_factor_ = 1.0f;
  std::vector<float> inv_freq_;
  std::vector<float> cos_, sin_;
};

// The inverse frequencies and attention factor alone (exposed for tests).
absl::Status ComputeRopeFrequencies(const RopeConfig& rope, int head_dim, std::vector<float>* inv_freq,
                                    float* attention_factor);

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_ROPE_H_
