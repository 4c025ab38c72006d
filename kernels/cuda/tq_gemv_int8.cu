// (f) of kernels/cuda/tq_linear.h: the TQ3 GEMV on int8 activations (W3A8) of one-token decode
// steps (blockIdx.y = activation row: m rows run as m independent GEMVs).
//
// Work split: a lane owns one group of 128 codes (48 bytes: three 16-byte loads per row) and
// keeps that group's 128 int8 activations in 32 registers; a warp owns a slice of 32 consecutive
// groups and a chunk of rows, two rows at a time with the next two rows' codes loaded before the
// current ones are decoded. Per 8 codes (one 24-bit unit): 3 shifts + 3 LOP3 muxes + 1 mask turn
// the 3-bit fields into 8 nibbles (a PRMT selector), 2 PRMT look up 8 int8 centroids, 2 dp4a
// multiply them with the activations (docs/gpu/tq_linear_notes.md run 16 counts the SASS).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "kernels/cuda/code_spread.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/tq_linear.h"

namespace tq::cuda {
namespace {

constexpr int kG = kTqCudaGroupSize;
constexpr int kGroupBytes = kG * 3 / 8;  // 48
constexpr int kSliceGroups = 32;         // a lane per group
constexpr int kMaxSliceWarps = 8;
constexpr int kMaxRowsPerChunk = 256;
constexpr int kRows = 2;                 // rows decoded per step (and prefetched)
constexpr unsigned kFullMask = 0xffffffffu;

// acc + Σ_t c8[code t] · x[t] over the unit's 8 codes; xa holds x[0..3], xb x[4..7] (int8 each).
__device__ __forceinline__ int DotUnit(uint32_t u, uint32_t cb_lo, uint32_t cb_hi, int xa, int xb,
                                       int acc) {
  const uint32_t s = CodesToNibbles<3>(u);
  const int v0 = static_cast<int>(__byte_perm(cb_lo, cb_hi, s));        // selector bits 0..15
  const int v1 = static_cast<int>(__byte_perm(cb_lo, cb_hi, s >> 16));
  acc = __dp4a(v0, xa, acc);
  return __dp4a(v1, xb, acc);
}

// The int32 dot of one group's 128 codes (three 16-byte words of the packed row) with x.
__device__ __forceinline__ int DotGroup(const uint4 (&c)[3], const int (&xw)[32], uint32_t cb_lo,
                                        uint32_t cb_hi) {
  const uint32_t w[12] = {c[0].x, c[0].y, c[0].z, c[0].w, c[1].x, c[1].y,
                          c[1].z, c[1].w, c[2].x, c[2].y, c[2].z, c[2].w};
  int d = 0;
#pragma unroll
  for (int t = 0; t < 4; ++t) {  // 96 bits = 4 units
    const uint32_t a = w[3 * t], b = w[3 * t + 1], e = w[3 * t + 2];
    d = DotUnit(a, cb_lo, cb_hi, xw[8 * t], xw[8 * t + 1], d);
    d = DotUnit(__funnelshift_r(a, b, 24), cb_lo, cb_hi, xw[8 * t + 2], xw[8 * t + 3], d);
    d = DotUnit(__funnelshift_r(b, e, 16), cb_lo, cb_hi, xw[8 * t + 4], xw[8 * t + 5], d);
    d = DotUnit(e >> 8, cb_lo, cb_hi, xw[8 * t + 6], xw[8 * t + 7], d);
  }
  return d;
}

struct GemvParams {
  const uint8_t* packed;
  const float* gains;
  const float* codebook;
  const int8_t* x_q;
  const float* x_qscale;
  float* y_f32;
  __nv_bfloat16* y_bf16;
  int64_t ldy, kp;  // output row stride; x_q row stride (padded k)
  int n, groups, slices, slice_warps, chunks_per_cta, rows_per_chunk;
};

__global__ void __launch_bounds__(kMaxSliceWarps * 32) TqGemvInt8Kernel(const GemvParams p) {
  extern __shared__ float red[];  // [chunks_per_cta][slice_warps][rows_per_chunk]
  // Activation row blockIdx.y: its own x_q, scales and y row (rows are independent problems).
  const int64_t xrow = blockIdx.y;
  const int8_t* x_q = p.x_q + xrow * p.kp;
  const float* x_qscale = p.x_qscale + xrow * p.groups;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int sw = warp % p.slice_warps;
  const int chunk_in_cta = warp / p.slice_warps;
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * p.chunks_per_cta + chunk_in_cta;
  const int64_t r0 = chunk * p.rows_per_chunk;
  const int64_t r1 = min(static_cast<int64_t>(p.n), r0 + p.rows_per_chunk);
  float* my_red = red + (chunk_in_cta * p.slice_warps + sw) * p.rows_per_chunk;

  // The int8 codebook (tq_gemv_int8_reference.cc: MakeTqInt8Codebook), bytes 0..3 / 4..7.
  uint32_t cb_lo = 0, cb_hi = 0;
  float out_scale;
  {
    float c[8], amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      c[i] = __ldg(p.codebook + i);
      amax = fmaxf(amax, fabsf(c[i]));
    }
    const float s = __fdiv_rn(127.0f, amax);
    out_scale = __fdiv_rn(amax, 127.0f);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t b = static_cast<uint32_t>(__float2int_rn(__fmul_rn(c[i], s))) & 0xffu;
      if (i < 4) cb_lo |= b << (8 * i);
      else cb_hi |= b << (8 * (i - 4));
    }
  }

  bool waited = false;
  if (r0 < r1) {
    for (int slice = sw; slice < p.slices; slice += p.slice_warps) {
      const int g = slice * kSliceGroups + lane;
      const bool active = g < p.groups;
      const int gc = min(g, p.groups - 1);
      uint4 c[kRows][3];
      float gn[kRows];
      auto load = [&](int64_t rb) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int64_t row = min(rb + r, r1 - 1);
          const uint4* src = reinterpret_cast<const uint4*>(
              p.packed + (row * p.groups + gc) * kGroupBytes);
          c[r][0] = __ldg(src);
          c[r][1] = __ldg(src + 1);
          c[r][2] = __ldg(src + 2);
          gn[r] = __ldg(p.gains + row * p.groups + gc);
        }
      };
      load(r0);  // weights only: before the wait on the kernel that writes x_q
      if (!waited) {
        PdlWait();  // the rotation that writes x_q
        waited = true;
      }
      int xw[32];
      {
        const int4* xp = reinterpret_cast<const int4*>(x_q + static_cast<int64_t>(gc) * kG);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const int4 v = __ldg(xp + i);
          xw[4 * i] = v.x;
          xw[4 * i + 1] = v.y;
          xw[4 * i + 2] = v.z;
          xw[4 * i + 3] = v.w;
        }
      }
      const float sx = __ldg(x_qscale + gc);
      for (int64_t rb = r0; rb < r1; rb += kRows) {
        uint4 cc[kRows][3];
        float gg[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          cc[r][0] = c[r][0];
          cc[r][1] = c[r][1];
          cc[r][2] = c[r][2];
          gg[r] = gn[r];
        }
        if (rb + kRows < r1) load(rb + kRows);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int d = DotGroup(cc[r], xw, cb_lo, cb_hi);
          float v = active ? static_cast<float>(d) * (gg[r] * sx) : 0.0f;
#pragma unroll
          for (int o = 16; o >= 1; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
          if (lane == 0 && rb + r < r1) {
            float* dst = my_red + (rb + r - r0);
            *dst = slice == sw ? v : *dst + v;
          }
        }
      }
    }
  }
  if (!waited) PdlWait();  // y may still be read by an earlier kernel
  PdlLaunchDependents();   // the next kernel's launch overlaps the reduction below
  __syncthreads();
  const int rows_cta = p.chunks_per_cta * p.rows_per_chunk;
  for (int i = threadIdx.x; i < rows_cta; i += blockDim.x) {
    const int ci = i / p.rows_per_chunk, ri = i - ci * p.rows_per_chunk;
    const int64_t row = (static_cast<int64_t>(blockIdx.x) * p.chunks_per_cta + ci) * p.rows_per_chunk + ri;
    if (row >= p.n) continue;
    const float* part = red + ci * p.slice_warps * p.rows_per_chunk + ri;
    float sum = 0.0f;
    for (int s = 0; s < p.slice_warps; ++s) sum += part[s * p.rows_per_chunk];
    const float y = sum * out_scale;
    if (p.y_f32 != nullptr) p.y_f32[xrow * p.ldy + row] = y;
    if (p.y_bf16 != nullptr) p.y_bf16[xrow * p.ldy + row] = __float2bfloat16_rn(y);
  }
}

bool Aligned(const void* ptr, size_t a) { return reinterpret_cast<uintptr_t>(ptr) % a == 0; }

}  // namespace

const char* TqGemvInt8UnsupportedReason(int bits, int group_size, int sm_major) {
  if (bits != 3) return "the int8 GEMV decodes TQ3 only";
  if (group_size != kG) return "the int8 GEMV needs group size 128";
  if (sm_major < 8) return "the int8 GEMV needs compute capability 8.0 or newer";
  return nullptr;
}

namespace {

// A CTA: slice_warps warps over the K slices (more slices than warps loop) for chunks_per_cta
// row chunks.
struct CtaShape {
  int slices, slice_warps, chunks_per_cta;
  int warps() const { return slice_warps * chunks_per_cta; }
};
CtaShape ShapeFor(int64_t k) {
  CtaShape c;
  c.slices = static_cast<int>((TqCudaGroups(k) + kSliceGroups - 1) / kSliceGroups);
  c.slice_warps = std::min(c.slices, kMaxSliceWarps);
  c.chunks_per_cta = std::max(1, 4 / c.slice_warps);
  return c;
}

// CTAs of `warps` warps that fit on one multiprocessor of the current device (cached per size;
// the kernel's registers, not its few KB of shared memory, set it).
int ResidentCtas(int warps) {
  static std::atomic<int> cache[kMaxSliceWarps + 1] = {};
  int v = cache[warps].load(std::memory_order_relaxed);
  if (v == 0) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, TqGemvInt8Kernel, warps * 32,
                                                      sizeof(float) * warps * kMaxRowsPerChunk) != cudaSuccess ||
        v < 1) {
      (void)cudaGetLastError();
      v = 1;
    }
    cache[warps].store(v, std::memory_order_relaxed);
  }
  return v;
}

}  // namespace

TqGemvInt8Config PlanTqGemvInt8(int64_t n, int64_t k, int multiprocessors) {
  TqGemvInt8Config cfg;
  const CtaShape shape = ShapeFor(k);
  const int chunks_per_cta = shape.chunks_per_cta, warps_per_cta = shape.warps();
  // About 8 (small layers) or 16 (n·k ≥ 50M) warps per SM; beyond one wave of resident CTAs,
  // rounded up to whole waves: a last wave of a few CTAs (7-warp CTAs of K = 28672 fit twice per SM) ran
  // the whole layer ~35% slower (tq_linear_notes.md run 16).
  const int64_t sms = std::max(1, multiprocessors);
  const int64_t target_ctas = (sms * (n * k >= (int64_t{50} << 20) ? 16 : 8) + warps_per_cta - 1) / warps_per_cta;
  const int64_t wave = sms * ResidentCtas(warps_per_cta);
  const int64_t ctas = target_ctas <= wave ? target_ctas : (target_ctas + wave - 1) / wave * wave;
  int64_t rows = (n + ctas * chunks_per_cta - 1) / (ctas * chunks_per_cta);
  rows = std::min<int64_t>(kMaxRowsPerChunk, std::max<int64_t>(kRows, (rows + 1) & ~int64_t{1}));
  cfg.rows_per_chunk = static_cast<int>(rows);
  return cfg;
}

cudaError_t LaunchTqGemvInt8(const TqGemvInt8Args& a, const TqGemvInt8Config& cfg,
                             cudaStream_t stream) {
  const TqCudaWeights& w = a.w;
  if (w.bits != 3 || w.group_size != kG || w.n < 0 || w.k < 0 || w.n >= (int64_t{1} << 31) ||
      w.k >= (int64_t{1} << 31) || a.m < 0 || a.m > 65535 || a.ldy < w.n || cfg.rows_per_chunk < 1 || cfg.rows_per_chunk > kMaxRowsPerChunk ||
      (a.y_f32 == nullptr && a.y_bf16 == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (w.n == 0 || a.m == 0) return cudaSuccess;
  if (w.k == 0 || w.packed == nullptr || w.gains == nullptr || w.codebook == nullptr ||
      a.x_q == nullptr || a.x_qscale == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (!Aligned(w.packed, 16) || !Aligned(w.gains, 4) || !Aligned(a.x_q, 16)) {
    return cudaErrorMisalignedAddress;
  }
  GemvParams p;
  p.packed = w.packed;
  p.gains = w.gains;
  p.codebook = w.codebook;
  p.x_q = a.x_q;
  p.x_qscale = a.x_qscale;
  p.y_f32 = a.y_f32;
  p.y_bf16 = reinterpret_cast<__nv_bfloat16*>(a.y_bf16);
  p.ldy = a.ldy;
  p.kp = TqCudaPaddedK(w.k);
  p.n = static_cast<int>(w.n);
  p.groups = static_cast<int>(TqCudaGroups(w.k));
  const CtaShape shape = ShapeFor(w.k);
  p.slices = shape.slices;
  p.slice_warps = shape.slice_warps;
  p.chunks_per_cta = shape.chunks_per_cta;
  p.rows_per_chunk = cfg.rows_per_chunk;
  const int64_t chunks = (w.n + p.rows_per_chunk - 1) / p.rows_per_chunk;
  const int64_t ctas = (chunks + p.chunks_per_cta - 1) / p.chunks_per_cta;
  if (ctas >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  const size_t smem = sizeof(float) * shape.warps() * p.rows_per_chunk;
  return LaunchKernelWith(cfg.programmatic, TqGemvInt8Kernel,
                          dim3(static_cast<unsigned>(ctas), static_cast<unsigned>(a.m)), shape.warps() * 32,
                          smem, stream, p);
}

}  // namespace tq::cuda
