#include "engine/model/rope.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace tq {
namespace {

constexpr double kPi = 3.14159265358979323846;

// transformers: (dim * log(max_pos / (num_rotations * 2π))) / (2 * log(base)).
double YarnCorrectionDim(double num_rotations, int dim, double base, double max_pos) {
  return (dim * std::log(max_pos / (num_rotations * 2.0 * kPi))) / (2.0 * std::log(base));
}

}  // namespace

absl::Status ComputeRopeFrequencies(const RopeConfig& rope, int head_dim, std::vector<float>* inv_freq,
                                    float* attention_factor) {
  if (head_dim < 2 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("RoPE head_dim must be even, got ", head_dim));
  }
  const int half = head_dim / 2;
  // Base frequencies as torch computes them in float32: base ** (arange(0, d, 2) / d).
  std::vector<float> pos_freqs(half);
  std::vector<float> base(half);
  for (int i = 0; i < half; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    pos_freqs[i] = static_cast<float>(std::pow(rope.theta, static_cast<double>(expo)));
    base[i] = 1.0f / pos_freqs[i];
  }
  inv_freq->assign(half, 0.0f);
  *attention_factor = 1.0f;
  switch (rope.type) {
    case RopeType::kDefault:
      *inv_freq = base;
      break;
    case RopeType::kLinear:
      for (int i = 0; i < half; ++i) (*inv_freq)[i] = base[i] / static_cast<float>(rope.factor);
      break;
    case RopeType::kLlama3: {
      const double old_len = static_cast<double>(rope.original_max_position_embeddings);
      const double low_wavelen = old_len / rope.low_freq_factor;
      const double high_wavelen = old_len / rope.high_freq_factor;
      for (int i = 0; i < half; ++i) {
        const float f = base[i];
        const float wavelen = static_cast<float>(2.0 * kPi) / f;
        float out = wavelen > low_wavelen ? f / static_cast<float>(rope.factor) : f;
        const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (medium) {
          const float smooth = (static_cast<float>(old_len) / wavelen - static_cast<float>(rope.low_freq_factor)) /
                               static_cast<float>(rope.high_freq_factor - rope.low_freq_factor);
          out = (1.0f - smooth) * out / static_cast<float>(rope.factor) + smooth * out;
        }
        (*inv_freq)[i] = out;
      }
      break;
    }
    case RopeType::kYarn: {
      const double factor = rope.factor;
      if (rope.attention_factor > 0) {
        *attention_factor = static_cast<float>(rope.attention_factor);
      } else if (rope.mscale > 0 && rope.mscale_all_dim > 0) {
        *attention_factor = static_cast<float>(YarnMscale(factor, rope.mscale) /
                                               YarnMscale(factor, rope.mscale_all_dim));
      } else {
        *attention_factor = static_cast<float>(YarnMscale(factor, 1.0));
      }
      const double orig = static_cast<double>(rope.original_max_position_embeddings);
      double low = YarnCorrectionDim(rope.beta_fast, head_dim, rope.theta, orig);
      double high = YarnCorrectionDim(rope.beta_slow, head_dim, rope.theta, orig);
      if (rope.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(head_dim - 1));
      if (low == high) high += 0.001;
      for (int i = 0; i < half; ++i) {
        const float ramp = std::clamp(static_cast<float>((static_cast<float>(i) - low) / (high - low)), 0.0f, 1.0f);
        const float extrapolation_factor = 1.0f - ramp;
        const float extra = 1.0f / pos_freqs[i];
        const float inter = 1.0f / (static_cast<float>(factor) * pos_freqs[i]);
        (*inv_freq)[i] = inter * (1.0f - extrapolation_factor) + extra * extrapolation_factor;
      }
      break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RopeTable> RopeTable::Create(const RopeConfig& rope, int head_dim, int64_t max_positions) {
  if (max_positions < 1) return absl::InvalidArgumentError("RoPE table needs at least one position");
  RopeTable t;
  absl::Status s = ComputeRopeFrequencies(rope, head_dim, &t.inv_freq_, &t.attention_factor_);
  if (!s.ok()) return s;
  t.half_ = head_dim / 2;
  t.max_positions_ = max_positions;
  t.cos_.resize(static_cast<size_t>(max_positions) * t.half_);
  t.sin_.resize(t.cos_.size());
  for (int64_t p = 0; p < max_positions; ++p) {
    for (int i = 0; i < t.half_; ++i) {
      const float angle = t.inv_freq_[i] * static_cast<float>(p);  // float32, as torch
      t.cos_[p * t.half_ + i] = static_cast<float>(std::cos(static_cast<double>(angle))) * t.attention_factor_;
      t.sin_[p * t.half_ + i] = static_cast<float>(std::sin(static_cast<double>(angle))) * t.attention_factor_;
    }
  }
  return t;
}

}  // namespace tq
