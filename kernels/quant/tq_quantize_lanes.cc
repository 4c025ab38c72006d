// Lane-parallel TQ group kernels. Compiled twice (see BUILD.bazel): TQ_ISA_NS = avx2 with
// -mavx2, and TQ_ISA_NS = portable. Both builds use -ffp-contract=off and no fast-math, so the
// compiler may vectorize but never changes a rounding: the two produce identical bytes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

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

// t[i][g] = src[g][i] for g < count, 0 for the unused lanes.
inline void LoadTransposed(const float* const* src, int count, int group, Tile& t) {
  static const float kZeros[kMaxGroup] = {};
  const float* rows[W];
  for (int g = 0; g < W; ++g) rows[g] = g < count ? src[g] : kZeros;
#if defined(__AVX2__)
  // 8x8 blocks transposed in registers (pure data movement: same values as the loop below).
  for (int i = 0; i < group; i += 8) {
    __m256 r0 = _mm256_loadu_ps(rows[0] + i), r1 = _mm256_loadu_ps(rows[1] + i);
    __m256 r2 = _mm256_loadu_ps(rows[2] + i), r3 = _mm256_loadu_ps(rows[3] + i);
    __m256 r4 = _mm256_loadu_ps(rows[4] + i), r5 = _mm256_loadu_ps(rows[5] + i);
    __m256 r6 = _mm256_loadu_ps(rows[6] + i), r7 = _mm256_loadu_ps(rows[7] + i);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_store_ps(t[i + 0], _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(t[i + 1], _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(t[i + 2], _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(t[i + 3], _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(t[i + 4], _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(t[i + 5], _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(t[i + 6], _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(t[i + 7], _mm256_permute2f128_ps(u3, u7, 0x31));
  }
#else
  for (int g = 0; g < W; ++g) {
    const float* r = rows[g];
    for (int i = 0; i < group; ++i) t[i][g] = r[i];
  }
#endif
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

// Per-thread scratch on the heap: large thread_local arrays would enlarge every thread's static
// TLS block (64+ KiB) and make thread creation with small stacks fail in any program linking
// this library (seen with civetweb's worker threads).
struct Scratch {
  alignas(64) Tile t;
  alignas(64) int32_t idx[kMaxGroup][W];
};

Scratch& ThreadScratch() {
  thread_local std::unique_ptr<Scratch> scratch;
  if (!scratch) scratch = std::make_unique<Scratch>();
  return *scratch;
}

}  // namespace

void QuantizeGroups(const GroupKernelParams& p, const float* const* src, int count,
                    uint8_t* packed, float* gains) {
  Scratch& scratch = ThreadScratch();
  Tile& t = scratch.t;
  auto& idx = scratch.idx;
  const int G = p.group;

  LoadTransposed(src, count, G, t);

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
  Tile& t = ThreadScratch().t;
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
