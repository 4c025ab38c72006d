// File: engine/checkpoint/tensor_policy.h
//
// Which tensors of a Hugging Face checkpoint are quantized, at what bit width, and what the
// others are stored as. Two rule sets:
//
// kPlugin — turboquant-plus-vllm's `save_tq3_checkpoint` (ALGORITHMS.md §1.5), reproduced
//   exactly: a tensor is quantized when it is a 2-D `*.weight` or a 3-D tensor whose name
//   contains "expert", its name (lower-cased) contains none of lm_head/embed/norm/head, and
//   one of its last two dims is >= 128. That includes MoE router gates (`mlp.gate.weight`)
//   and `conv1d` weights. Every other floating-point tensor is stored as float16 (a range risk:
//   bf16 values above 65504 become inf), integer tensors unchanged.
//
// kTq — ours: the same structural test, but embeddings, lm_head, norms, router gates
//   (`*.gate.weight`, `*shared_expert_gate*`, `*router*`) and `conv1d` stay unquantized, and
//   everything unquantized keeps its source dtype. Optional per-tensor bit widths by excess
//   kurtosis κ (BitPolicy::kKurtosis): κ < t1 → base bits, t1 ≤ κ < t2 → base+1 (max 4),
//   κ ≥ t2 → kept in the source dtype. Optional block-diagonal rotation for dense 2-D weights
//   (MoE experts keep the full rotation, as in the plugin).
#ifndef TQSERVE_ENGINE_CHECKPOINT_TENSOR_POLICY_H_
#define TQSERVE_ENGINE_CHECKPOINT_TENSOR_POLICY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/format/dtype.h"

namespace tq {

enum class CheckpointFormat { kTq, kPlugin };
const char* CheckpointFormatName(CheckpointFormat f);  // "tq", "plugin"
absl::StatusOr<CheckpointFormat> ParseCheckpointFormat(absl::string_view s);

enum class BitPolicy { kUniform, kKurtosis };
const char* BitPolicyName(BitPolicy p);  // "uniform", "kurtosis"
absl::StatusOr<BitPolicy> ParseBitPolicy(absl::string_view s);

struct KurtosisThresholds {
  double plus_one = 4.0;  // t1: from here on, base+1 bits
  double keep = 15.0;     // t2: from here on, keep the source dtype
};

struct TensorDecision {
  bool quantize = false;
  int bits = 0;            // when quantized
  int rotation_block = 0;  // when quantized; 0 = full group
  DType stored_dtype = DType::kF32;  // when not quantized
  std::string reason;      // why it is (not) quantized, for inspect and the manifest
};

struct PolicyOptions {
  CheckpointFormat format = CheckpointFormat::kTq;
  int bits = 3;
  int rotation_block = 0;  // kTq only: block-diagonal WHT for dense 2-D weights
  // When non-empty, the block-diagonal rotation applies only to tensors whose name contains
  // one of these substrings (per-tensor selection); otherwise to every dense 2-D weight.
  std::vector<std::string> rotation_block_include;
  BitPolicy policy = BitPolicy::kUniform;
  KurtosisThresholds thresholds;
};

// The structural decision (no data needed). For kKurtosis, quantized tensors are then
// refined with ApplyKurtosis.
TensorDecision DecideTensor(const PolicyOptions& opt, const std::string& name, DType dtype,
                            const std::vector<int64_t>& shape);

// Updates a quantize decision from the tensor's excess kurtosis.
void ApplyKurtosis(const PolicyOptions& opt, double kurtosis, DType source_dtype,
                   TensorDecision* d);

// Excess kurtosis of n floats, m4/m2^2 - 3 around the mean (float64 accumulation).
// Returns 0 for constant data.
double ExcessKurtosis(const float* x, int64_t n);

}  // namespace tq

#endif  // TQSERVE_ENGINE_CHECKPOINT_TENSOR_POLICY_H_
