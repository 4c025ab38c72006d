// Lane-parallel TQ group kernels. Compiled twice (see BUILD.bazel): TQ_ISA_NS = avx2 with
// -mavx2, and TQ_ISA_NS = portable. Both builds use -ffp-contract=off and no fast-math, so the
// compiler may vectorize but never changes a rounding: the two produce identical bytes.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/quant/packing.h"
#include "kernels/quant/tq_quantize_lanes.h"

#ifndef TQ_ISA_NS
#error "TQ_ISA_NS must be defined by the build"
#endif

namespace tq::quant::TQ_ISA_NS {
namespace {

constexpr int W = kLanes;
constexpr int kMaxGroup = 1024;
constexpr int kMaxNormLanes = 16;

using Tile = float[kMaxGroup][W];

// Natural-order Walsh–Hadamard butterflies over each block of B rows of the tile.
inline void FwhtTile(Tile& t, int group, int block) {
  for (int base = 0; base < group; base += block) {
    for (int h = 1; h < block; h *= 2) {
      for (int i = base; i < base + block; i += 2 * h) {
        for (int j = i; j < i + h; ++j) {
          float* lo = t[j];
          float* hi = t[j + h];
          for (int g = 0; g < W; ++g) {
            const float a = lo[g];
            const float b = hi[g];
            lo[g] = a + b;
            hi[g] = a - b;
          }
        }
      }
    }
  }
}

// torch's float32 L2 norm over the last dim (ReduceOpsKernel.cpp, vectorized path): `lanes`
// accumulators take acc[j] += x[d+j]*x[d+j] (multiply, then add), the accumulators are folded
// left to right, a remainder is added to the first, then sqrt in float.
inline void TorchNormTile(const Tile& t, int group, int lanes, float* out) {
  float acc[kMaxNormLanes][W];
  for (int j = 0; j < lanes; ++j)
    for (int g = 0; g < W; ++g) acc[j][g] = 0.0f;
  int d = 0;
  for (; d + lanes <= group; d += lanes) {
    for (int j = 0; j < lanes; ++j) {
      const float* row = t[d + j];
      for (int g = 0; g < W; ++g) {
        const float sq = row[g] * row[g];
        acc[j][g] = acc[j][g] + sq;
      }
    }
  }
  float s[W];
  for (int g = 0; g < W; ++g) s[g] = acc[0][g];
  for (int j = 1; j < lanes; ++j)
    for (int g = 0; g < W; ++g) s[g] = s[g] + acc[j][g];
  for (; d < group; ++d) {
    for (int g = 0; g < W; ++g) {
      const float sq = t[d][g] * t[d][g];
      s[g] = s[g] + sq;
    }
  }
  for (int g = 0; g < W; ++g) out[g] = std::sqrt(s[g]);
}

}  // namespace

void QuantizeGroups(const GroupKernelParams& p, const float* const* src, int count,
                    uint8_t* packed, float* gains) {
  alignas(64) static thread_local Tile t;
  alignas(64) static thread_local int32_t idx[kMaxGroup][W];
  const int G = p.group;

  for (int i = 0; i < G; ++i) {
    for (int g = 0; g < W; ++g) t[i][g] = g < count ? src[g][i] : 0.0f;
  }

  float norm[W], safe[W];
  TorchNormTile(t, G, p.norm_lanes, norm);
  for (int g = 0; g < W; ++g) safe[g] = norm[g] > 0.0f ? norm[g] : 1.0f;

  // u = w / n, then D1.
  for (int i = 0; i < G; ++i) {
    const float s1 = p.signs1[i];
    for (int g = 0; g < W; ++g) t[i][g] = (t[i][g] / safe[g]) * s1;
  }
  FwhtTile(t, G, p.block);
  // Normalize, then D2: y.
  const float div = p.divisor;
  for (int i = 0; i < G; ++i) {
    const float s2 = p.signs2[i];
    for (int g = 0; g < W; ++g) t[i][g] = (t[i][g] / div) * s2;
  }

  // searchsorted-left: the number of boundaries strictly below y.
  const int nb = (1 << p.bits) - 1;
  for (int i = 0; i < G; ++i) {
    int32_t k[W] = {};
    for (int b = 0; b < nb; ++b) {
      const float bv = p.boundaries[b];
      for (int g = 0; g < W; ++g) k[g] += bv < t[i][g] ? 1 : 0;
    }
    for (int g = 0; g < W; ++g) idx[i][g] = k[g];
  }

  switch (p.gain_mode) {
    case 0:  // raw
      for (int g = 0; g < count; ++g) gains[g] = norm[g];
      break;
    case 1: {  // norm correction: n / ||R^T c[idx]|| in float32, as the plugin
      for (int i = 0; i < G; ++i) {
        const float s2 = p.signs2[i];
        for (int g = 0; g < W; ++g) t[i][g] = p.centroids[idx[i][g]] * s2;
      }
      FwhtTile(t, G, p.block);
      for (int i = 0; i < G; ++i) {
        const float s1 = p.signs1[i];
        for (int g = 0; g < W; ++g) t[i][g] = (t[i][g] / div) * s1;
      }
      float recon[W];
      TorchNormTile(t, G, p.norm_lanes, recon);
      for (int g = 0; g < count; ++g) {
        const float r = recon[g] > 0.0f ? recon[g] : 1.0f;
        gains[g] = norm[g] / r;
      }
      break;
    }
    default: {  // least squares: n * <y, c> / ||c||^2, accumulated in float64
      double dot[W] = {}, cc[W] = {};
      for (int i = 0; i < G; ++i) {
        for (int g = 0; g < W; ++g) {
          const double c = p.centroids[idx[i][g]];
          dot[g] += static_cast<double>(t[i][g]) * c;
          cc[g] += c * c;
        }
      }
      for (int g = 0; g < count; ++g) {
        gains[g] = cc[g] > 0.0 ? static_cast<float>(norm[g] * dot[g] / cc[g]) : norm[g];
      }
      break;
    }
  }

  uint8_t row[kMaxGroup];
  const int bpg = G * p.bits / 8;
  for (int g = 0; g < count; ++g) {
    for (int i = 0; i < G; ++i) row[i] = static_cast<uint8_t>(idx[i][g]);
    PackIndices(row, G, p.bits, packed + static_cast<int64_t>(g) * bpg);
  }
}

void DequantizeGroups(const GroupKernelParams& p, const uint8_t* packed, const float* gains,
                      int count, float* const* dst) {
  alignas(64) static thread_local Tile t;
  const int G = p.group;
  const int bpg = G * p.bits / 8;
  uint8_t row[kMaxGroup];
  for (int g = 0; g < W; ++g) {
    if (g < count) {
      UnpackIndices(packed + static_cast<int64_t>(g) * bpg, G, p.bits, row);
      for (int i = 0; i < G; ++i) t[i][g] = p.centroids[row[i]];
    } else {
      for (int i = 0; i < G; ++i) t[i][g] = 0.0f;
    }
  }
  for (int i = 0; i < G; ++i) {
    const float s2 = p.signs2[i];
    for (int g = 0; g < W; ++g) t[i][g] = t[i][g] * s2;
  }
  FwhtTile(t, G, p.block);
  const float div = p.divisor;
  for (int i = 0; i < G; ++i) {
    const float s1 = p.signs1[i];
    for (int g = 0; g < W; ++g) t[i][g] = (t[i][g] / div) * s1;
  }
  for (int g = 0; g < count; ++g) {
    const float gain = gains[g];
    float* out = dst[g];
    for (int i = 0; i < G; ++i) out[i] = t[i][g] * gain;
  }
}

}  // namespace tq::quant::TQ_ISA_NS
