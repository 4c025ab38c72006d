#include "engine/checkpoint/tensor_policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tq {

const char* CheckpointFormatName(CheckpointFormat f) {
  return f == CheckpointFormat::kPlugin ? "plugin" : "tq";
}

absl::StatusOr<CheckpointFormat> ParseCheckpointFormat(absl::string_view s) {
  if (s == "tq") return CheckpointFormat::kTq;
  if (s == "plugin") return CheckpointFormat::kPlugin;
  return absl::InvalidArgumentError(absl::StrCat("unknown format '", s, "' (expected tq or plugin)"));
}

const char* BitPolicyName(BitPolicy p) { return p == BitPolicy::kKurtosis ? "kurtosis" : "uniform"; }

absl::StatusOr<BitPolicy> ParseBitPolicy(absl::string_view s) {
  if (s == "uniform") return BitPolicy::kUniform;
  if (s == "kurtosis") return BitPolicy::kKurtosis;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown bit policy '", s, "' (expected uniform or kurtosis)"));
}

namespace {

bool IsRouterGate(const std::string& lower) {
  return absl::EndsWith(lower, ".gate.weight") || lower == "gate.weight" ||
         absl::StrContains(lower, "shared_expert_gate") || absl::StrContains(lower, "router");
}

}  // namespace

TensorDecision DecideTensor(const PolicyOptions& opt, const std::string& name, DType dtype,
                            const std::vector<int64_t>& shape) {
  const std::string lower = absl::AsciiStrToLower(name);
  const int nd = static_cast<int>(shape.size());
  const bool is_weight_2d = absl::EndsWith(name, ".weight") && nd == 2;
  const bool is_expert_3d = nd == 3 && absl::StrContains(lower, "expert");
  const bool large = (nd >= 1 && shape[nd - 1] >= 128) || (nd >= 2 && shape[nd - 2] >= 128);
  const bool plugin = opt.format == CheckpointFormat::kPlugin;

  TensorDecision d;
  auto keep = [&](std::string reason) {
    d.quantize = false;
    d.stored_dtype = plugin && IsFloatingPoint(dtype) ? DType::kF16 : dtype;
    d.reason = std::move(reason);
    return d;
  };
  if (!is_weight_2d && !is_expert_3d) return keep(nd <= 1 ? "1-D tensor" : "not a weight matrix");
  for (const char* p : {"lm_head", "embed", "norm", "head"}) {
    if (absl::StrContains(lower, p)) return keep(absl::StrCat("name contains '", p, "'"));
  }
  if (!plugin) {
    if (IsRouterGate(lower)) return keep("MoE router gate");
    if (absl::StrContains(lower, "conv1d")) return keep("conv1d");
  }
  if (!large) return keep("both matrix dims < 128");
  if (dtype != DType::kBF16 && dtype != DType::kF16 && dtype != DType::kF32 &&
      dtype != DType::kF64) {
    return keep(absl::StrCat("dtype ", DTypeName(dtype), " is not quantized"));
  }
  d.quantize = true;
  d.bits = opt.bits;
  const bool expert = absl::StrContains(lower, "expert");
  bool selected = opt.rotation_block_include.empty();
  for (const std::string& inc : opt.rotation_block_include) selected |= absl::StrContains(name, inc);
  d.rotation_block = (!plugin && nd == 2 && !expert && selected) ? opt.rotation_block : 0;
  d.reason = is_expert_3d ? "3-D expert tensor" : "2-D weight";
  return d;
}

void ApplyKurtosis(const PolicyOptions& opt, double kurtosis, DType source_dtype,
                   TensorDecision* d) {
  if (!d->quantize || opt.policy != BitPolicy::kKurtosis) return;
  const std::string k = absl::StrFormat("%.2f", kurtosis);
  if (kurtosis >= opt.thresholds.keep) {
    d->quantize = false;
    d->stored_dtype = source_dtype;
    d->reason = absl::StrCat("excess kurtosis ", k, " >= ", opt.thresholds.keep, ": kept");
  } else if (kurtosis >= opt.thresholds.plus_one) {
    d->bits = std::min(4, opt.bits + 1);
    d->reason = absl::StrCat("excess kurtosis ", k, " >= ", opt.thresholds.plus_one, ": +1 bit");
  } else {
    d->reason = absl::StrCat("excess kurtosis ", k, ": base bits");
  }
}

double ExcessKurtosis(const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  const double mean = s / n;
  double m2 = 0, m4 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = x[i] - mean;
    const double d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  m2 /= n;
  m4 /= n;
  if (m2 <= 0) return 0.0;
  return m4 / (m2 * m2) - 3.0;
}

}  // namespace tq
