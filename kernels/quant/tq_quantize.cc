#include "kernels/quant/tq_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/quant/tq_quantize_lanes.h"

namespace tq::quant {
namespace {

bool CpuHasAvx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

GroupKernelParams MakeParams(const TqSpec& spec, const Codebook& cb) {
  const RotationSigns& signs = GetRotationSigns(spec.group_size);
  GroupKernelParams p;
  p.group = spec.group_size;
  p.block = spec.block();
  p.bits = spec.bits;
  p.gain_mode = static_cast<int>(spec.gain);
  p.norm_lanes = spec.torch_norm_lanes;
  p.divisor = RotationDivisor(spec.block());
  p.signs1 = signs.signs1.data();
  p.signs2 = signs.signs2.data();
  p.centroids = cb.centroids.data();
  p.boundaries = cb.boundaries.data();
  return p;
}

// Where group k of a row-major [rows, cols] matrix lives: the offset of its first element and
// how many of its G columns are real (the rest is zero padding).
struct GroupSpan {
  int64_t offset;
  int64_t valid;
};

inline GroupSpan LocateGroup(int64_t k, int64_t groups_per_row, int64_t cols, int group) {
  const int64_t r = k / groups_per_row, j = k % groups_per_row;
  return {r * cols + j * group, std::min<int64_t>(group, cols - j * group)};
}

}  // namespace

const char* GainModeName(GainMode m) {
  switch (m) {
    case GainMode::kRaw:
      return "raw";
    case GainMode::kNormCorrected:
      return "nc";
    case GainMode::kLeastSquares:
      return "ls";
  }
  return "?";
}

absl::StatusOr<GainMode> ParseGainMode(const std::string& s) {
  if (s == "raw") return GainMode::kRaw;
  if (s == "nc") return GainMode::kNormCorrected;
  if (s == "ls") return GainMode::kLeastSquares;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown gain mode '", s, "' (expected nc, ls or raw)"));
}

std::string TqSpec::DebugString() const {
  return absl::StrCat("TQ", bits, " G=", group_size, " B=", block(), " gain=", GainModeName(gain));
}

absl::Status ValidateSpec(const TqSpec& spec) {
  if (spec.bits < 2 || spec.bits > 4) {
    return absl::InvalidArgumentError(absl::StrCat("bits must be 2, 3 or 4, got ", spec.bits));
  }
  if (!IsPowerOfTwo(spec.group_size) || spec.group_size < 16 || spec.group_size > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group size must be a power of two in [16, 1024], got ", spec.group_size));
  }
  const int b = spec.block();
  if (!IsPowerOfTwo(b) || b < 2 || b > spec.group_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rotation block must be a power of two in [2, group size], got ", spec.rotation_block));
  }
  const int l = spec.torch_norm_lanes;
  if ((l != 1 && l != 4 && l != 8 && l != 16) || spec.group_size % l != 0) {
    return absl::InvalidArgumentError(absl::StrCat("torch_norm_lanes must be 1, 4, 8 or 16, got ", l));
  }
  return absl::OkStatus();
}

absl::StatusOr<TqQuantizer> TqQuantizer::Create(const TqSpec& spec) {
  absl::Status st = ValidateSpec(spec);
  if (!st.ok()) return st;
  return TqQuantizer(spec, &GetCodebook(spec.bits, spec.group_size));
}

void TqQuantizer::QuantizeRows(const float* w, int64_t rows, int64_t cols, uint8_t* packed,
                               float* gains) const {
  const GroupKernelParams p = MakeParams(spec_, *codebook_);
  const int G = spec_.group_size;
  const int64_t ngr = GroupsPerRow(cols);
  const int64_t total = rows * ngr;
  const int64_t bpg = spec_.bytes_per_group();
  const bool avx2 = CpuHasAvx2();
  // Zero-padded copies of partial groups (the last group of each row when cols % G != 0).
  std::vector<float> pad(static_cast<size_t>(kLanes) * G);
  const float* src[kLanes];
  for (int64_t k0 = 0; k0 < total; k0 += kLanes) {
    const int count = static_cast<int>(std::min<int64_t>(kLanes, total - k0));
    for (int g = 0; g < count; ++g) {
      const GroupSpan at = LocateGroup(k0 + g, ngr, cols, G);
      if (at.valid == G) {
        src[g] = w + at.offset;
      } else {
        float* dstp = pad.data() + static_cast<size_t>(g) * G;
        std::memcpy(dstp, w + at.offset, at.valid * sizeof(float));
        std::fill(dstp + at.valid, dstp + G, 0.0f);
        src[g] = dstp;
      }
    }
    if (avx2) {
      avx2::QuantizeGroups(p, src, count, packed + k0 * bpg, gains + k0);
    } else {
      portable::QuantizeGroups(p, src, count, packed + k0 * bpg, gains + k0);
    }
  }
}

void TqQuantizer::DequantizeRows(const uint8_t* packed, const float* gains, int64_t rows,
                                 int64_t cols, float* out) const {
  const GroupKernelParams p = MakeParams(spec_, *codebook_);
  const int G = spec_.group_size;
  const int64_t ngr = GroupsPerRow(cols);
  const int64_t total = rows * ngr;
  const int64_t bpg = spec_.bytes_per_group();
  const bool avx2 = CpuHasAvx2();
  std::vector<float> pad(static_cast<size_t>(kLanes) * G);
  float* dst[kLanes];
  for (int64_t k0 = 0; k0 < total; k0 += kLanes) {
    const int count = static_cast<int>(std::min<int64_t>(kLanes, total - k0));
    for (int g = 0; g < count; ++g) {
      const GroupSpan at = LocateGroup(k0 + g, ngr, cols, G);
      dst[g] = at.valid == G ? out + at.offset : pad.data() + static_cast<size_t>(g) * G;
    }
    if (avx2) {
      avx2::DequantizeGroups(p, packed + k0 * bpg, gains + k0, count, dst);
    } else {
      portable::DequantizeGroups(p, packed + k0 * bpg, gains + k0, count, dst);
    }
    for (int g = 0; g < count; ++g) {
      const GroupSpan at = LocateGroup(k0 + g, ngr, cols, G);
      if (at.valid != G) std::memcpy(out + at.offset, dst[g], at.valid * sizeof(float));
    }
  }
}

int64_t CountNonFinite(const float* x, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += std::isfinite(x[i]) ? 0 : 1;
  return bad;
}

const char* QuantKernelIsa() { return CpuHasAvx2() ? "avx2" : "portable"; }

}  // namespace tq::quant
