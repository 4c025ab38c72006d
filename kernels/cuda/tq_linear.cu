// TQ linear-layer kernels on CUDA: rotation of the activations, the tensor-core GEMV / small-M
// kernel and dequantization. Contract and math: kernels/cuda/tq_linear.h.
#include "kernels/cuda/tq_linear.h"

#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rms_norm.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace tq::cuda {
namespace {

constexpr int kG = kTqCudaGroupSize;  // 128: one warp holds a group, 4 values per lane
constexpr int kWarps = 8;             // warps per CTA of every kernel here
constexpr int kThreads = kWarps * 32;
constexpr unsigned kFullMask = 0xffffffffu;

// ---------------------------------------------------------------------------------------------
// Rotation constants. Seed-42 sign diagonals for G = 128 (quant::GetRotationSigns(128),
// ALGORITHMS.md §1.2): bit i of the 128-bit little-endian word set = sign −1 for element i.
// tq_linear_test checks the GPU rotation bitwise against cpu::TqRotateInput, which reads the
// signs from quant::GetRotationSigns.
__device__ __forceinline__ uint32_t SignNibble(int which, int lane) {
  const int q = lane >> 3;
  uint32_t w;
  if (which == 1) {
    w = q == 0 ? 0xc028bdddu : q == 1 ? 0xfe5483e8u : q == 2 ? 0x00b54509u : 0x9a94a018u;
  } else {
    w = q == 0 ? 0x57de2ff8u : q == 1 ? 0xdbbf19a3u : q == 2 ? 0x3afe2dc7u : 0xebda4034u;
  }
  return (w >> ((lane & 7) * 4)) & 0xfu;  // elements 4·lane .. 4·lane + 3
}

__device__ __forceinline__ float SignOf(uint32_t nibble, int j) {
  return ((nibble >> j) & 1u) ? -1.0f : 1.0f;
}

// quant::RotationDivisor: float(sqrt(block)) for a power of two.
float RotationDivisorHost(int block) {
  double s = 1.0;
  int b = block;
  while (b >= 4) {
    s *= 2.0;
    b /= 4;
  }
  if (b == 2) s *= 1.4142135623730950488;
  return static_cast<float>(s);
}

// Natural-order Walsh–Hadamard butterflies over a warp-held group (v[j] = element 4·lane + j),
// blocks of `block` elements: pairs (i, i + h) for h = 1, 2, ..., block/2, the lower slot taking
// a + b and the upper a − b, exactly quant::FwhtInPlace's float32 operations.
__device__ __forceinline__ void FwhtWarp(float (&v)[4], int lane, int block) {
  if (block >= 2) {
    const float a0 = v[0], b0 = v[1], a1 = v[2], b1 = v[3];
    v[0] = a0 + b0;
    v[1] = a0 - b0;
    v[2] = a1 + b1;
    v[3] = a1 - b1;
  }
  if (block >= 4) {
    const float a0 = v[0], b0 = v[2], a1 = v[1], b1 = v[3];
    v[0] = a0 + b0;
    v[2] = a0 - b0;
    v[1] = a1 + b1;
    v[3] = a1 - b1;
  }
  for (int h = 4; h < block; h *= 2) {
    const int lane_mask = h >> 2;
    const bool upper = (lane & lane_mask) != 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float partner = __shfl_xor_sync(kFullMask, v[j], lane_mask);
      v[j] = upper ? partner - v[j] : v[j] + partner;  // a − b (we hold b) or a + b
    }
  }
}

// cpu::TqRotateInput on one group: v·s1, butterflies, (v · inv_div) · s2.
__device__ __forceinline__ void RotateForwardWarp(float (&v)[4], int lane, int block,
                                                  float inv_div) {
  const uint32_t s1 = SignNibble(1, lane), s2 = SignNibble(2, lane);
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = v[j] * SignOf(s1, j);
  FwhtWarp(v, lane, block);
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = (v[j] * inv_div) * SignOf(s2, j);
}

__device__ __forceinline__ float ActToFloat(float v) { return v; }
__device__ __forceinline__ float ActToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

// The 4 elements col0 .. col0+3 of an activation row (zero at and beyond k).
template <typename InT>
__device__ __forceinline__ void LoadActSlice(const InT* row, int k, int col0, bool vec,
                                             float (&v)[4]) {
  if (vec && col0 < k) {  // k % 4 == 0 and the row 8/16-byte aligned (host-checked)
    if constexpr (sizeof(InT) == 4) {
      const float4 q = *reinterpret_cast<const float4*>(row + col0);
      v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
      const uint2 q = *reinterpret_cast<const uint2*>(row + col0);
      v[0] = __uint_as_float(q.x << 16);
      v[1] = __uint_as_float(q.x & 0xffff0000u);
      v[2] = __uint_as_float(q.y << 16);
      v[3] = __uint_as_float(q.y & 0xffff0000u);
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = col0 + j < k ? ActToFloat(row[col0 + j]) : 0.0f;
}

// The largest magnitude of the warp's group (4 values per lane), in every lane; NaNs are skipped
// by fmaxf unless a lane holds nothing else.
__device__ __forceinline__ float WarpAbsMax(const float (&v)[4]) {
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, o));
  return amax;
}

// Scales the warp's group by the power of two 2^e that brings its largest finite magnitude into
// [2^13, 2^14) and rounds to fp16 (4 halves of this lane packed in a uint2); *inv_scale = 2^-e.
__device__ __forceinline__ uint2 ScaleToHalf4(const float (&v)[4], float* inv_scale) {
  const float amax = WarpAbsMax(v);
  int e = 0;
  if (amax > 0.0f && amax <= 3.402823466e38f) {  // finite, non-zero (NaN fails both tests)
    int ex;
    frexpf(amax, &ex);  // amax in [2^(ex-1), 2^ex)
    e = min(126, max(-126, 14 - ex));
  }
  const float scale = __int_as_float((127 + e) << 23);
  *inv_scale = __int_as_float((127 - e) << 23);
  const __half2 lo = __floats2half2_rn(v[0] * scale, v[1] * scale);
  const __half2 hi = __floats2half2_rn(v[2] * scale, v[3] * scale);
  return make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
}

// (f)'s activation format for the warp's group: q = rint(v · (127 / amax)) as 4 int8 of this lane
// (little-endian in the word), *scale = amax / 127; a group with NaN or Inf gives q = 0 and a NaN
// scale, an all-zero group q = 0 and scale 0 (tq_gemv_int8_reference.cc does the same in the same
// float32 operations).
__device__ __forceinline__ uint32_t QuantizeInt8x4(const float (&v)[4], float* scale) {
  bool finite = true;
#pragma unroll
  for (int j = 0; j < 4; ++j) finite = finite && isfinite(v[j]);
  finite = __all_sync(kFullMask, finite);
  const float amax = WarpAbsMax(v);  // used only when every value is finite
  if (!finite || amax == 0.0f) {
    *scale = finite ? 0.0f : __int_as_float(0x7fc00000);
    return 0u;
  }
  const float inv = __fdiv_rn(127.0f, amax);
  *scale = __fdiv_rn(amax, 127.0f);
  uint32_t word = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int q = max(-127, min(127, __float2int_rn(__fmul_rn(v[j], inv))));
    word |= (static_cast<uint32_t>(q) & 0xffu) << (8 * j);
  }
  return word;
}

// ---------------------------------------------------------------------------------------------
// Small PTX wrappers (sm_80+).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void CpAsync4(void* smem, const void* gmem, bool valid) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem),
               "r"(valid ? 4 : 0));
}

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// D = A·B + D for one m16n8k16 tile, fp16 operands, fp32 accumulators (PTX ISA fragment layout:
// a0 = (row g, k 2t..2t+1), a1 = (row g+8, same k), a2 = (row g, k 2t+8..), a3 = (row g+8, k 2t+8..);
// b0 = (k 2t..2t+1, col g), b1 = (k 2t+8.., col g); c0,c1 = (row g, cols 2t, 2t+1), c2,c3 = row g+8;
// g = lane / 4, t = lane % 4).
__device__ __forceinline__ void Mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// ---------------------------------------------------------------------------------------------
// (a) Rotation kernel: one warp per (row, group). kGated (float input only): the input is
// silu(g) · u of a [g | u] row (g at x, u at x + k), computed as nn_ops' SiluMul computes it.
template <typename InT, bool kGated = false>
__global__ void __launch_bounds__(kThreads) RotateInputKernel(const InT* __restrict__ x, int m,
                                                              int k, int64_t ldx, int groups,
                                                              int block, float inv_div, bool vec,
                                                              float* __restrict__ x_rot,
                                                              __half* __restrict__ x_h,
                                                              float* __restrict__ x_scale,
                                                              int8_t* __restrict__ x_q,
                                                              float* __restrict__ x_qscale) {
  const int lane = threadIdx.x & 31;
  const int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  PdlEnter();  // x is the previous kernel's output; the GEMV after it may start loading weights
  if (task >= static_cast<int64_t>(m) * groups) return;  // whole warps exit together
  const int64_t i = task / groups;
  const int g = static_cast<int>(task - i * groups);
  float v[4];
  LoadActSlice(x + i * ldx, k, g * kG + 4 * lane, vec, v);
  if constexpr (kGated) {
    float u[4];
    LoadActSlice(x + i * ldx + k, k, g * kG + 4 * lane, vec, u);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = v[j] / (1.0f + expf(-v[j])) * u[j];
  }
  RotateForwardWarp(v, lane, block, inv_div);
  const int64_t at = i * static_cast<int64_t>(groups) * kG + g * kG + 4 * lane;
  if (x_rot != nullptr) *reinterpret_cast<float4*>(x_rot + at) = make_float4(v[0], v[1], v[2], v[3]);
  if (x_h != nullptr) {
    float inv;
    const uint2 h = ScaleToHalf4(v, &inv);
    *reinterpret_cast<uint2*>(x_h + at) = h;
    if (lane == 0) x_scale[task] = inv;
  }
  if (x_q != nullptr) {
    float qscale;
    *reinterpret_cast<uint32_t*>(x_q + at) = QuantizeInt8x4(v, &qscale);
    if (lane == 0) x_qscale[task] = qscale;
  }
}

// (g) The residual add, RMSNorm and int8 rotation in one CTA per row: the norm of nn_ops'
// RmsNormRows (rms_norm.cuh: same block size, same sums) and the float operations of
// RotateInputKernel: a thread per float4 of the row, so each warp holds whole groups of 128
// (k % 128 == 0), 4 values per lane as the rotation wants them.
template <bool kAdd>
__global__ void AddRmsNormRotateInt8Kernel(float* __restrict__ x, int64_t ldx, const float* __restrict__ a,
                                           int64_t lda, const float* __restrict__ w, int k, float eps,
                                           float* __restrict__ y, int64_t ldy, int block, float inv_div,
                                           int8_t* __restrict__ x_q, float* __restrict__ x_qscale) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x & 31;
  float4* x4 = reinterpret_cast<float4*>(x + row * ldx);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const float inv = RowInvRms<kAdd>(x4, kAdd ? reinterpret_cast<const float4*>(a + row * lda) : nullptr, k, eps);
  const int groups = k / kG;
  for (int c = threadIdx.x; c < k / 4; c += blockDim.x) {  // warp-uniform: k / 4 is a multiple of 32
    const float4 o = RmsNormed(x4, inv, w4, c);
    reinterpret_cast<float4*>(y + row * ldy)[c] = o;
    float r[4] = {o.x, o.y, o.z, o.w};
    RotateForwardWarp(r, lane, block, inv_div);
    const int g = c / 32;  // this warp's group
    float qscale;
    *reinterpret_cast<uint32_t*>(x_q + row * k + 4 * c) = QuantizeInt8x4(r, &qscale);
    if (lane == 0) x_qscale[row * groups + g] = qscale;
  }
}

// ---------------------------------------------------------------------------------------------
// (d) Dequantization: one warp per (row, group), as quant::TqQuantizer::DequantizeRows:
// t = c[idx] · s2, butterflies, (t / div) · s1, t · gain.
template <int kBits, typename OutT>
__global__ void __launch_bounds__(kThreads) DequantKernel(const uint8_t* __restrict__ packed,
                                                          const float* __restrict__ gains,
                                                          const float* __restrict__ codebook,
                                                          int64_t n, int k, int groups, int block,
                                                          float div, bool vec,
                                                          OutT* __restrict__ out, int64_t ldw) {
  constexpr int kBpg = kG * kBits / 8;  // bytes per group: 32 / 48 / 64
  constexpr int kWordsPerGroup = kBpg / 4;
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  const int lane = threadIdx.x & 31;
  const float cb = codebook[lane & kMask];  // lane i holds c[i mod 2^bits]
  const uint32_t s1 = SignNibble(1, lane), s2 = SignNibble(2, lane);
  const int64_t tasks = n * groups;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); task < tasks;
       task += stride) {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(packed + task * kBpg);
    const uint32_t word = lane < kWordsPerGroup ? src[lane] : 0u;
    // This lane's 4 codes: bits [4·bits·lane, 4·bits·(lane+1)) of the group.
    const int bit0 = 4 * kBits * lane;
    const int wi = bit0 >> 5;
    const uint32_t lo = __shfl_sync(kFullMask, word, wi);
    const uint32_t hi = __shfl_sync(kFullMask, word, min(wi + 1, 31));
    const uint32_t codes = __funnelshift_r(lo, hi, bit0 & 31);
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float c = __shfl_sync(kFullMask, cb, (codes >> (kBits * j)) & kMask);
      v[j] = c * SignOf(s2, j);
    }
    FwhtWarp(v, lane, block);
    const float gain = gains[task];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = ((v[j] / div) * SignOf(s1, j)) * gain;
    const int64_t row = task / groups;
    const int col0 = static_cast<int>(task - row * groups) * kG + 4 * lane;
    OutT* dst = out + row * ldw + col0;
    if (vec) {
      if (col0 < k) {
        if constexpr (sizeof(OutT) == 4) {
          *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
          const __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]);
          const __nv_bfloat162 b = __floats2bfloat162_rn(v[2], v[3]);
          *reinterpret_cast<uint2*>(dst) = make_uint2(*reinterpret_cast<const uint32_t*>(&a),
                                                      *reinterpret_cast<const uint32_t*>(&b));
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (col0 + j < k) {
          if constexpr (sizeof(OutT) == 4) {
            dst[j] = v[j];
          } else {
            dst[j] = __float2bfloat16_rn(v[j]);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (b)/(c) The tensor-core kernel.
//
// Work decomposition. A work unit is a tile of T activation rows (T = 8 or 16, one m16n8k16 M
// tile, the upper 8 rows unused when T = 8) and a K range of `gr` groups (split s of `splits`).
// The grid is persistent: CTA c (8 warps) serves unit c % units and the row blocks (R = 8·n_tiles
// weight rows each) slot, slot + cpu, ... (slot = c / units). It builds the pair table and its
// activation tile once, then its warps split the K range into 8 contiguous pieces and each warp
// streams its piece of every row block through a private 3-stage cp.async pipeline (kGt groups per
// stage; codes and gains) that runs on across row blocks, so loads stay in flight through the
// per-row-block epilogue: the 8 warp partials are summed in shared memory (fixed order), then
// either stored or, with splits > 1, written to the workspace; the last CTA of a (row block,
// token tile) (atomic counter) sums the splits in order and stores y.
//
// Fragment mapping (PTX m16n8k16; the K order inside a group is free as long as A and B agree):
// A = weights (16 rows per tile), B = activations (8 tokens per tile), g = lane/4, t = lane%4.
// Lane (g, t) owns columns [32t, 32t + 32) of every group; k-step s (0..7) uses columns
// 32t + 4s + {0,1} as the mma's k = 2t, 2t+1 and 32t + 4s + {2,3} as k = 2t+8, 2t+9. So a lane's
// codes of one weight row and group are contiguous (8 / 12 / 16 bytes at byte t·(4·bits) of the
// group) and each code pair (2·bits bits) is one A register (rows g and g+8), looked up in a table
// of fp16 pairs (entry v of copy `lane` at byte v·128 + lane·4: 32 copies, one per bank,
// conflict-free). B registers are the activation pairs of token g; C/D hold rows g, g+8 x tokens
// 2t, 2t+1.
//
// Shared memory (dynamic):
//   lut      uint32 [4^bits][32]       fp16 pairs (c[lo], c[hi]) of every 2-code value
//   x        fp16, per activation row x_row_bytes = gr·256 + 64; group gl at gl·256, the 8
//            columns 32t + 8q .. +8 at q·64 + t·16 (conflict-free 16-byte reads)
//   x_scale  float [T][gr]
//   warps    8 × warp_bytes: nbuf stages of [R rows × row_stride bytes of codes]
//            [kGt × R gains], reused for the warp's partial sums at the end.
constexpr int kStages = 3;  // pipeline depth (stages in flight + 1)

template <int kBits>
struct MmaBits {
  static constexpr int kBpg = kG * kBits / 8;          // 32 / 48 / 64 bytes per group
  static constexpr int kLaneBytes = kBpg / 4;          // 8 / 12 / 16 bytes per lane and group
  static constexpr int kLaneWords = kLaneBytes / 4;    // 2 / 3 / 4
  static constexpr int kPairBits = 2 * kBits;
  static constexpr int kLutEntries = 1 << kPairBits;   // 16 / 64 / 256
  // Groups per pipeline stage: small stages keep 3 CTAs per SM within shared memory.
  static constexpr int kGt = kBits == 2 ? 4 : 2;
  // Row stride of a stage, padded so that the 32 lanes' code reads hit distinct banks:
  // TQ3 LDS.32 at 12t + 4w needs stride ≡ 16 (mod 32); TQ2 LDS.64 ≡ 32 (mod 128);
  // TQ4 LDS.128 ≡ 64 (mod 128).
  static constexpr int kRowStride =
      kBits == 3 ? kGt * kBpg + 16 : kGt * kBpg + (kBits == 4 ? 64 : 32);
};

int GroupsPerStageHost(int bits) { return bits == 2 ? MmaBits<2>::kGt : MmaBits<3>::kGt; }

int RowStrideHost(int bits) {
  switch (bits) {
    case 2:
      return MmaBits<2>::kRowStride;
    case 3:
      return MmaBits<3>::kRowStride;
    default:
      return MmaBits<4>::kRowStride;
  }
}

struct MmaKernelParams {
  const uint8_t* packed;
  const float* gains;
  const float* codebook;
  int n, k, groups, m;
  const void* x;
  int64_t ldx;
  bool x_vec;
  const __half* x_h;
  const float* x_scale;
  int block;
  float inv_div;
  float* y_f32;
  __nv_bfloat16* y_bf16;
  int64_t ldy;
  float* ws;
  uint32_t* counters;
  int splits, gr;
  int x_row_bytes;
  int off_x, off_xs, off_warps, warp_bytes, off_red;
  // Persistent schedule: CTA c serves work unit c % units (= token tile + K split) and the row
  // blocks slot, slot + cpu, ... (slot = c / units).
  int units, tok_tiles, row_blocks, cpu;
  // Expert selection (TqMmaArgs::expert): null, or the device indices of the experts to run,
  // one per grid plane (blockIdx.y): plane s runs expert expert[s] on activation rows starting at
  // (s / x_plane_div) · m, writes output rows from s · m, and has its own split-K counters
  // (tiles_per_plane apart) and partial sums (ws_plane_floats apart).
  const int32_t* expert;
  int64_t expert_packed_stride, expert_gains_stride;
  int planes, x_plane_div, tiles_per_plane;
  int64_t ws_plane_floats;
};

// Issues one stage: codes of rows [r0, r0+R) x groups [g0, min(g0+B::kGt, g_end)) and their gains
// (transposed: gains[gl][r]). Missing rows / groups are zero-filled.
template <int kBits, int kRows>
__device__ __forceinline__ void IssueStage(const MmaKernelParams& p, unsigned char* buf, int r0,
                                           int g0, int g_end, int lane, int plane) {
  using B = MmaBits<kBits>;
  constexpr int kChunksPerRow = B::kGt * B::kBpg / 16;
  static_assert((kRows * kChunksPerRow) % 32 == 0 && (kRows * B::kGt) % 32 == 0, "whole warps");
  const uint8_t* packed = p.packed;
  const float* gains = p.gains;
  if (p.expert != nullptr) {  // MoE: the routed expert's codes and gains
    const int64_t e = __ldg(p.expert + plane);
    packed += e * p.expert_packed_stride;
    gains += e * p.expert_gains_stride;
  }
#pragma unroll
  for (int i = 0; i < kRows * kChunksPerRow / 32; ++i) {
    const int c = i * 32 + lane;
    const int r = c / kChunksPerRow, q = c - r * kChunksPerRow;
    const int row = r0 + r, g = g0 + (q * 16) / B::kBpg;
    const bool ok = row < p.n && g < g_end;
    const uint8_t* src = ok ? packed + (static_cast<int64_t>(row) * p.groups + g0) * B::kBpg + q * 16 : packed;
    CpAsync16(buf + r * B::kRowStride + q * 16, src, ok);
  }
  float* gs = reinterpret_cast<float*>(buf + kRows * B::kRowStride);
#pragma unroll
  for (int i = 0; i < kRows * B::kGt / 32; ++i) {
    const int c = i * 32 + lane;
    const int r = c / B::kGt, gl = c - r * B::kGt;
    const int row = r0 + r, g = g0 + gl;
    const bool ok = row < p.n && g < g_end;
    CpAsync4(gs + gl * kRows + r, ok ? gains + static_cast<int64_t>(row) * p.groups + g : gains, ok);
  }
}

// The pair table entry of code pair p (0..15) of a lane's chunk (bits [p·2·bits, +2·bits) of the
// little-endian words): the table sits at the start of dynamic shared memory, entry v of copy
// `lane` at byte v·128 + lane·4, so the byte offset is (field << 7) | lane4: one shift, one LOP3
// and a load with the shared-memory base folded into its address.
template <int kBits, int kWords>
__device__ __forceinline__ uint32_t LutLookup(const unsigned char* smem, uint32_t lane4,
                                              const uint32_t (&w)[kWords], int p) {
  constexpr int kPairBits = 2 * kBits;
  constexpr uint32_t kFieldMask = ((1u << kPairBits) - 1u) << 7;
  const int pos = p * kPairBits;
  const int wi = pos >> 5, off = pos & 31;
  uint32_t v;
  if (off + kPairBits <= 32) {
    v = off >= 7 ? w[wi] >> (off - 7) : w[wi] << (7 - off);
  } else {  // crosses into the next word; off > 32 - kPairBits >= 24
    v = __funnelshift_r(w[wi], w[min(wi + 1, kWords - 1)], off - 7);
  }
  return *reinterpret_cast<const uint32_t*>(smem + ((v & kFieldMask) | lane4));
}

template <int kBits>
__device__ __forceinline__ void LoadLaneCodes(const unsigned char* p,
                                              uint32_t (&w)[MmaBits<kBits>::kLaneWords]) {
  if constexpr (kBits == 4) {
    const uint4 q = *reinterpret_cast<const uint4*>(p);
    w[0] = q.x, w[1] = q.y, w[2] = q.z, w[3] = q.w;
  } else if constexpr (kBits == 2) {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    w[0] = q.x, w[1] = q.y;
  } else {
    const uint32_t* u = reinterpret_cast<const uint32_t*>(p);
    w[0] = u[0], w[1] = u[1], w[2] = u[2];
  }
}

// N warp-held groups at once (independent shuffle chains interleave): RotateForwardWarp and
// ScaleToHalf4 on each, bit for bit.
template <int kN>
__device__ __forceinline__ void RotateScaleWarpN(float (&v)[kN][4], int lane, int block,
                                                 float inv_div, uint2 (&h)[kN],
                                                 float (&inv_scale)[kN]) {
  const uint32_t s1 = SignNibble(1, lane), s2 = SignNibble(2, lane);
#pragma unroll
  for (int b = 0; b < kN; ++b) {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[b][j] = v[b][j] * SignOf(s1, j);
  }
  if (block >= 2) {
#pragma unroll
    for (int b = 0; b < kN; ++b) {
      const float a0 = v[b][0], b0 = v[b][1], a1 = v[b][2], b1 = v[b][3];
      v[b][0] = a0 + b0;
      v[b][1] = a0 - b0;
      v[b][2] = a1 + b1;
      v[b][3] = a1 - b1;
    }
  }
  if (block >= 4) {
#pragma unroll
    for (int b = 0; b < kN; ++b) {
      const float a0 = v[b][0], b0 = v[b][2], a1 = v[b][1], b1 = v[b][3];
      v[b][0] = a0 + b0;
      v[b][2] = a0 - b0;
      v[b][1] = a1 + b1;
      v[b][3] = a1 - b1;
    }
  }
  for (int hh = 4; hh < block; hh *= 2) {
    const int lane_mask = hh >> 2;
    const bool upper = (lane & lane_mask) != 0;
#pragma unroll
    for (int b = 0; b < kN; ++b) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float partner = __shfl_xor_sync(kFullMask, v[b][j], lane_mask);
        v[b][j] = upper ? partner - v[b][j] : v[b][j] + partner;
      }
    }
  }
  float amax[kN];
#pragma unroll
  for (int b = 0; b < kN; ++b) {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[b][j] = (v[b][j] * inv_div) * SignOf(s2, j);
    amax[b] = fmaxf(fmaxf(fabsf(v[b][0]), fabsf(v[b][1])), fmaxf(fabsf(v[b][2]), fabsf(v[b][3])));
  }
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) {
#pragma unroll
    for (int b = 0; b < kN; ++b) amax[b] = fmaxf(amax[b], __shfl_xor_sync(kFullMask, amax[b], o));
  }
#pragma unroll
  for (int b = 0; b < kN; ++b) {
    int e = 0;
    if (amax[b] > 0.0f && amax[b] <= 3.402823466e38f) {
      int ex;
      frexpf(amax[b], &ex);
      e = min(126, max(-126, 14 - ex));
    }
    const float scale = __int_as_float((127 + e) << 23);
    inv_scale[b] = __int_as_float((127 - e) << 23);
    const __half2 lo = __floats2half2_rn(v[b][0] * scale, v[b][1] * scale);
    const __half2 hi = __floats2half2_rn(v[b][2] * scale, v[b][3] * scale);
    h[b] = make_uint2(*reinterpret_cast<const uint32_t*>(&lo),
                      *reinterpret_cast<const uint32_t*>(&hi));
  }
}

// Rotates the CTA's activation tile (rows [t0, t0+mt), groups [ga, ga+gr_cta)) into shared
// memory as fp16 + per-group scales (the "fused" prologue), 4 groups per warp at a time.
template <typename InT>
__device__ __forceinline__ void FusedRotate(const MmaKernelParams& p, unsigned char* xsm,
                                            float* xsc, int t0, int mt, int ga, int gr_cta,
                                            int warp, int lane) {  // t0: absolute x row
  constexpr int kBatch = 4;
  const InT* x = static_cast<const InT*>(p.x);
  const int tasks = mt * gr_cta;
  for (int base = warp * kBatch; base < tasks; base += kWarps * kBatch) {  // warp-uniform
    float v[kBatch][4];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int task = base + b;
      if (task < tasks) {
        const int t = task / gr_cta, gl = task - t * gr_cta;
        LoadActSlice(x + static_cast<int64_t>(t0 + t) * p.ldx, p.k, (ga + gl) * kG + 4 * lane,
                     p.x_vec, v[b]);
      } else {
        v[b][0] = v[b][1] = v[b][2] = v[b][3] = 0.0f;
      }
    }
    uint2 h[kBatch];
    float inv[kBatch];
    RotateScaleWarpN<kBatch>(v, lane, p.block, p.inv_div, h, inv);
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int task = base + b;
      if (task < tasks) {
        const int t = task / gr_cta, gl = task - t * gr_cta;
        // Columns 4·lane .. +3 = lane t' = lane/8's chunk q = (lane/2)%4, half (lane%2).
        *reinterpret_cast<uint2*>(xsm + t * p.x_row_bytes + gl * 256 + ((lane >> 1) & 3) * 64 +
                                  (lane >> 3) * 16 + (lane & 1) * 8) = h[b];
        if (lane == 0) xsc[t * p.gr + gl] = inv[b];
      }
    }
  }
}

__device__ __forceinline__ void StoreY(const MmaKernelParams& p, int tok, int row, float v) {
  const int64_t at = static_cast<int64_t>(tok) * p.ldy + row;
  if (p.y_f32 != nullptr) p.y_f32[at] = v;
  if (p.y_bf16 != nullptr) p.y_bf16[at] = __float2bfloat16_rn(v);
}

// kNT: 16-row weight tiles per row block (mma M); kTT: 8-row activation tiles per token tile
// (mma N), all served by one decode of each weight fragment.
// kMode: 0 = fused, float32 x; 1 = fused, bf16 x; 2 = separate (x_h / x_scale from global).
template <int kBits, int kNT, int kTT, int kMode>
__global__ void __launch_bounds__(kThreads, (kNT == 1 && kTT == 1) ? 3 : 1)
    TqMmaKernel(const MmaKernelParams p) {
  PdlEnter();
  using B = MmaBits<kBits>;
  constexpr int kRows = 16 * kNT;
  constexpr int kTile = 8 * kTT;
  constexpr int kStageBytes = kRows * B::kRowStride + B::kGt * kRows * 4;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_last;
  uint32_t* lut = reinterpret_cast<uint32_t*>(smem);
  unsigned char* xsm = smem + p.off_x;
  float* xsc = reinterpret_cast<float*>(smem + p.off_xs);
  float* red_all = reinterpret_cast<float*>(smem + p.off_red);  // [kWarps][kTile][kRows]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gid = lane >> 2, tig = lane & 3;
  unsigned char* wsm = smem + p.off_warps + warp * p.warp_bytes;

  const int unit = blockIdx.x % p.units;
  const int slot = blockIdx.x / p.units;
  // Grid plane (expert slot; 0 unless TqMmaArgs::expert_slots): its x rows, y rows, split-K state.
  const int plane = blockIdx.y;
  const int x_t0 = (plane / p.x_plane_div) * p.m;
  const int y_t0 = plane * p.m;
  float* const ws = p.splits > 1 ? p.ws + plane * p.ws_plane_floats : nullptr;
  uint32_t* const counters = p.splits > 1 ? p.counters + plane * p.tiles_per_plane : nullptr;
  const int tok_tile = unit % p.tok_tiles;
  const int split = unit / p.tok_tiles;
  const int t0 = tok_tile * kTile;
  const int mt = min(kTile, p.m - t0);
  const int ga = split * p.gr;
  const int gb = min(p.groups, ga + p.gr);
  const int gr_cta = gb - ga;
  const int gw = (gr_cta + kWarps - 1) / kWarps;
  const int wg0 = ga + warp * gw;
  const int wg1 = min(gb, wg0 + gw);
  // Every warp walks the same item sequence (nst stages per row block, empty ones included), so
  // the CTA-wide barriers of the per-row-block epilogue line up.
  const int nst = max(1, (gw + B::kGt - 1) / B::kGt);
  const int my_rbs = slot < p.row_blocks ? (p.row_blocks - 1 - slot) / p.cpu + 1 : 0;
  const int items = my_rbs * nst;

  auto issue = [&](int item) {
    const int rbi = item / nst, st = item - rbi * nst;
    const int g0 = wg0 + st * B::kGt;
    if (g0 < wg1) {
      IssueStage<kBits, kRows>(p, wsm + (item % kStages) * kStageBytes,
                               (slot + rbi * p.cpu) * kRows, g0, wg1, lane, plane);
    }
  };

  // 1. Separate mode: the fp16 activation tile (the oldest cp.async group).
  if constexpr (kMode == 2) {
    const int chunks = mt * gr_cta * 16;  // 16 bytes = 8 columns each
    for (int c = tid; c < chunks; c += kThreads) {
      const int t = c / (gr_cta * 16);
      const int rem = c - t * gr_cta * 16;
      const int gl = rem >> 4, ch = rem & 15;  // columns 8·ch .. +8 = lane t' = ch/4, q = ch%4
      const __half* src = p.x_h + static_cast<int64_t>(x_t0 + t0 + t) * p.groups * kG +
                          static_cast<int64_t>(ga + gl) * kG + ch * 8;
      CpAsync16(xsm + t * p.x_row_bytes + gl * 256 + (ch & 3) * 64 + (ch >> 2) * 16, src, true);
    }
    for (int c = tid; c < mt * gr_cta; c += kThreads) {
      const int t = c / gr_cta, gl = c - t * gr_cta;
      CpAsync4(xsc + t * p.gr + gl, p.x_scale + static_cast<int64_t>(x_t0 + t0 + t) * p.groups + ga + gl,
               true);
    }
  }
  CpAsyncCommit();

  // 2. The first items of this warp's weight stream.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < items) issue(s);
    CpAsyncCommit();
  }

  // 3. The pair table: lut[v·32 + copy] = (fp16(c[v mod 2^bits]), fp16(c[v / 2^bits])).
  {
    const float cb = p.codebook[lane & ((1 << kBits) - 1)];
    for (int i = tid; i < B::kLutEntries * 32; i += kThreads) {  // a multiple of kThreads
      const int v = i >> 5;
      const float lo = __shfl_sync(kFullMask, cb, v & ((1 << kBits) - 1));
      const float hi = __shfl_sync(kFullMask, cb, v >> kBits);
      const __half2 h = __floats2half2_rn(lo, hi);
      lut[i] = *reinterpret_cast<const uint32_t*>(&h);
    }
  }

  // 4. Fused mode: rotate the activation tile while the weights are in flight.
  if constexpr (kMode == 0) FusedRotate<float>(p, xsm, xsc, x_t0 + t0, mt, ga, gr_cta, warp, lane);
  if constexpr (kMode == 1) FusedRotate<__nv_bfloat16>(p, xsm, xsc, x_t0 + t0, mt, ga, gr_cta, warp, lane);
  CpAsyncWait<kStages - 2>();
  __syncthreads();

  // 5. Main loop over (row block, stage) items; the pipeline runs across row blocks.
  // Fragments (PTX m16n8k16): A = weights, lane (g, t) holds rows g and g+8 of each 16-row tile;
  // B = activations, lane (g, t) supplies token g of each 8-token tile; C/D: rows g, g+8 x
  // tokens 2t, 2t+1.
  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4u;
  float acc[kNT][kTT][4];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
    for (int tt = 0; tt < kTT; ++tt) acc[nt][tt][0] = acc[nt][tt][1] = acc[nt][tt][2] = acc[nt][tt][3] = 0.0f;
  }

  for (int item = 0; item < items; ++item) {
    CpAsyncWait<kStages - 2>();
    __syncwarp();
    if (item + kStages - 1 < items) issue(item + kStages - 1);
    CpAsyncCommit();

    const int rbi = item / nst, st = item - rbi * nst;
    const unsigned char* buf = wsm + (item % kStages) * kStageBytes;
    const float* gs_all = reinterpret_cast<const float*>(buf + kRows * B::kRowStride);
    const int g_first = wg0 + st * B::kGt;
    const int count = min(B::kGt, wg1 - g_first);
#pragma unroll 1
    for (int gl = 0; gl < count; ++gl) {
      const int xl = g_first + gl - ga;
      uint32_t cw[kNT][2][B::kLaneWords];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          LoadLaneCodes<kBits>(buf + (nt * 16 + gid + 8 * h) * B::kRowStride + gl * B::kBpg +
                                   tig * B::kLaneBytes,
                               cw[nt][h]);
        }
      }
      // Two accumulator chains per tile (even / odd k-steps) halve the mma dependency chain.
      float c[kNT][kTT][4], d[kNT][kTT][4];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int tt = 0; tt < kTT; ++tt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) c[nt][tt][e] = d[nt][tt][e] = 0.0f;
        }
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // k-steps 2q, 2q+1: columns 32t + 8q .. +8 of each lane
        uint4 xq[kTT];
#pragma unroll
        for (int tt = 0; tt < kTT; ++tt) {
          const int tok = tt * 8 + gid;
          xq[tt] = tok < mt ? *reinterpret_cast<const uint4*>(xsm + tok * p.x_row_bytes + xl * 256 +
                                                              q * 64 + tig * 16)
                            : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int ks = 2 * q + half;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            const uint32_t a0 = LutLookup<kBits>(smem, lane4, cw[nt][0], 2 * ks);
            const uint32_t a1 = LutLookup<kBits>(smem, lane4, cw[nt][1], 2 * ks);
            const uint32_t a2 = LutLookup<kBits>(smem, lane4, cw[nt][0], 2 * ks + 1);
            const uint32_t a3 = LutLookup<kBits>(smem, lane4, cw[nt][1], 2 * ks + 1);
#pragma unroll
            for (int tt = 0; tt < kTT; ++tt) {
              const uint32_t b0 = half ? xq[tt].z : xq[tt].x;
              const uint32_t b1 = half ? xq[tt].w : xq[tt].y;
              Mma16816(half ? d[nt][tt] : c[nt][tt], a0, a1, a2, a3, b0, b1);
            }
          }
        }
      }
      // Per-group scales: gain (rows g, g+8) x activation scale (tokens 2t, 2t+1).
      const float* gs = gs_all + gl * kRows;
#pragma unroll
      for (int tt = 0; tt < kTT; ++tt) {
        const int tok = tt * 8 + 2 * tig;
        const float xs0 = tok < mt ? xsc[tok * p.gr + xl] : 0.0f;
        const float xs1 = tok + 1 < mt ? xsc[(tok + 1) * p.gr + xl] : 0.0f;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          const float g0 = gs[nt * 16 + gid], g1 = gs[nt * 16 + gid + 8];
          acc[nt][tt][0] = fmaf(c[nt][tt][0] + d[nt][tt][0], g0 * xs0, acc[nt][tt][0]);
          acc[nt][tt][1] = fmaf(c[nt][tt][1] + d[nt][tt][1], g0 * xs1, acc[nt][tt][1]);
          acc[nt][tt][2] = fmaf(c[nt][tt][2] + d[nt][tt][2], g1 * xs0, acc[nt][tt][2]);
          acc[nt][tt][3] = fmaf(c[nt][tt][3] + d[nt][tt][3], g1 * xs1, acc[nt][tt][3]);
        }
      }
    }
    __syncwarp();
    if (st != nst - 1) continue;

    // 6. Row block done: sum the 8 warp partials (fixed order), then store or reduce across
    // splits. The next items' loads are already in flight.
    const int rb = slot + rbi * p.cpu;
    const int r0 = rb * kRows;
    float* red = red_all + warp * kTile * kRows;  // [token][row]
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int tt = 0; tt < kTT; ++tt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          red[(tt * 8 + 2 * tig + (e & 1)) * kRows + nt * 16 + gid + (e >> 1) * 8] = acc[nt][tt][e];
          acc[nt][tt][e] = 0.0f;
        }
      }
    }
    __syncthreads();
    const int outs = mt * kRows;
    for (int idx = tid; idx < outs; idx += kThreads) {
      const int tok = idx / kRows, r = idx - tok * kRows;
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += red_all[w * kTile * kRows + idx];
      const int row = r0 + r;
      if (row < p.n) {
        if (p.splits == 1) {
          StoreY(p, y_t0 + t0 + tok, row, sum);
        } else {
          ws[(static_cast<int64_t>(split) * p.m + t0 + tok) * p.n + row] = sum;
        }
      }
    }
    if (p.splits > 1) {
      __threadfence();
      __syncthreads();
      const unsigned tile = static_cast<unsigned>(rb) * p.tok_tiles + tok_tile;
      if (tid == 0) {
        s_last = atomicAdd(counters + tile, 1u) == static_cast<unsigned>(p.splits - 1);
      }
      __syncthreads();
      if (s_last) {
        __threadfence();
        for (int idx = tid; idx < outs; idx += kThreads) {
          const int tok = idx / kRows, r = idx - tok * kRows;
          const int row = r0 + r;
          if (row >= p.n) continue;
          float sum = 0.0f;
          for (int sp = 0; sp < p.splits; ++sp) {
            sum += __ldcg(ws + (static_cast<int64_t>(sp) * p.m + t0 + tok) * p.n + row);
          }
          StoreY(p, y_t0 + t0 + tok, row, sum);
        }
        if (tid == 0) counters[tile] = 0u;  // ready for the next launch
      }
    }
    __syncthreads();  // red_all and s_last are reused by the next row block
  }
  CpAsyncWait<0>();
}

// ---------------------------------------------------------------------------------------------
// (c) The TQ GEMM (larger m): each CTA owns a tile of kBM activation rows x 128 weight rows and a
// K range of whole groups (one group = one K step). Per step it decodes the 128 x 128 weight tile
// from the packed codes into shared memory as fp16 (codebook pair table as in the mma kernel;
// c · gain computed in fp32, rounded once), runs mma.sync m16n8k16 (fp16, fp32 accumulation) over
// it and the fp16 x_rot tile (the separate rotation's output) with ldmatrix fragments into
// per-step partial sums, and adds those times the (row, group) activation scale. Each weight code
// is decoded once per kBM activation rows (the mma kernel decodes it once per 8-32 rows).
//
// Pipeline (cp.async, one commit group per step): the codes + gains ring is kGemmCodeStages deep
// (the HBM stream: ~4 steps in flight per SM cover its latency), the x ring kGemmXStages (L2,
// prefetched 2 steps ahead); the decoded tile is double-buffered, so step s+1 is decoded while
// step s is multiplied, with one CTA barrier per step. Warps: 2 (M) x 4 (N), warp tile
// (kBM/2) x 32.
//
// Shared memory: pair table [4^bits][32 copies] u32 | decoded tiles 2 x [128][136] fp16 |
// x ring kGemmXStages x { [kBM][136] fp16, scales [kBM] f32 } | code ring kGemmCodeStages x { codes [128][bytes per
// group], gains [128] f32 }.
constexpr int kGemmBN = 128;               // weight rows per CTA tile
constexpr int kGemmLd = kG + 8;            // halves per shared-memory row (conflict-free ldmatrix)
constexpr int kGemmRowBytes = kGemmLd * 2;
constexpr int kGemmCodeStages = 5;         // codes issued this many steps ahead
constexpr int kGemmXStages = 3;            // x issued kGemmXAhead steps ahead
constexpr int kGemmXAhead = 2;

template <int kBits, int kBM>
struct GemmLayout {
  static constexpr int kBpg = kG * kBits / 8;
  static constexpr int kLut = (1 << (2 * kBits)) * 32 * 4;
  static constexpr int kW = kGemmBN * kGemmRowBytes;
  static constexpr int kXScales = kBM * kGemmRowBytes;  // scale offset inside an x stage
  static constexpr int kX = kXScales + kBM * 4;
  static constexpr int kCodes = kGemmBN * kBpg;
  static constexpr int kCodeStage = kCodes + kGemmBN * 4;
  static constexpr int kOffW = kLut;
  static constexpr int kOffX = kLut + 2 * kW;
  static constexpr int kOffCodes = kOffX + kGemmXStages * kX;
  static constexpr int kSmem = kOffCodes + kGemmCodeStages * kCodeStage;
};

size_t GemmSmemHost(int bits, int bm) {
  const size_t lut = static_cast<size_t>(1) << (2 * bits + 7);
  const size_t bpg = static_cast<size_t>(kG) * bits / 8;
  return lut + 2 * kGemmBN * kGemmRowBytes +
         kGemmXStages * static_cast<size_t>(bm) * (kGemmRowBytes + 4) +
         kGemmCodeStages * (kGemmBN * bpg + kGemmBN * 4);
}

struct GemmParams {
  const uint8_t* packed;
  const float* gains;
  const float* codebook;
  int n, groups, m;
  const __half* x;        // x_rot fp16 [m, groups * 128]
  const float* x_scale;   // [m, groups]
  float* y_f32;
  __nv_bfloat16* y_bf16;
  int64_t ldy;
  float* ws;  // [splits, m, n] partials when splits > 1
  int splits, gr;
};

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem_row) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

template <int kBits, int kBM>
__global__ void __launch_bounds__(kThreads, 1) TqGemmKernel(const GemmParams p) {
  using L = GemmLayout<kBits, kBM>;
  constexpr int kMT = kBM / 32;            // m16 tiles per warp
  constexpr int kNT = 4;                   // n8 tiles per warp
  constexpr int kHalfWords = L::kBpg / 8;  // one thread decodes half a group row: 64 codes
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;
  const int n0 = blockIdx.x * kGemmBN;
  const int m0 = blockIdx.y * kBM;
  const int split = blockIdx.z;
  const int g_begin = split * p.gr;
  const int steps = min(p.groups, g_begin + p.gr) - g_begin;  // >= 1 (host-checked)

  auto x_slot = [&](int s) { return smem + L::kOffX + (s % kGemmXStages) * L::kX; };
  auto code_slot = [&](int s) { return smem + L::kOffCodes + (s % kGemmCodeStages) * L::kCodeStage; };
  auto issue_x = [&](int s) {
    unsigned char* st = x_slot(s);
    const int g = g_begin + s;
#pragma unroll
    for (int i = 0; i < kBM * 16 / kThreads; ++i) {  // 16 chunks of 16 B per row
      const int c = i * kThreads + tid;
      const int r = c >> 4, ch = c & 15;
      const bool ok = m0 + r < p.m;
      const __half* src =
          ok ? p.x + static_cast<int64_t>(m0 + r) * p.groups * kG + g * kG + ch * 8 : p.x;
      CpAsync16(st + r * kGemmRowBytes + ch * 16, src, ok);
    }
    if (tid < kBM) {  // rows past m: scale 0 (and x 0)
      const bool ok = m0 + tid < p.m;
      CpAsync4(st + L::kXScales + tid * 4,
               ok ? p.x_scale + static_cast<int64_t>(m0 + tid) * p.groups + g : p.x_scale, ok);
    }
  };
  auto issue_codes = [&](int s) {
    unsigned char* st = code_slot(s);
    const int g = g_begin + s;
    constexpr int kChunks = L::kBpg / 16;
    for (int c = tid; c < kGemmBN * kChunks; c += kThreads) {
      const int r = c / kChunks, q = c - r * kChunks;
      const bool ok = n0 + r < p.n;
      const uint8_t* src =
          ok ? p.packed + (static_cast<int64_t>(n0 + r) * p.groups + g) * L::kBpg + q * 16
             : p.packed;
      CpAsync16(st + r * L::kBpg + q * 16, src, ok);
    }
    if (tid < kGemmBN) {
      const bool ok = n0 + tid < p.n;
      CpAsync4(st + L::kCodes + tid * 4,
               ok ? p.gains + static_cast<int64_t>(n0 + tid) * p.groups + g : p.gains, ok);
    }
  };

  // Thread (r, h) decodes codes [64h, 64h + 64) of weight row r into fp16 pairs of c · gain.
  const uint32_t lane4 = static_cast<uint32_t>(lane) * 4u;
  auto decode = [&](int s, int buf) {
    const unsigned char* st = code_slot(s);
    const int r = tid & (kGemmBN - 1), h = tid >> 7;
    const unsigned char* src = st + r * L::kBpg + h * (L::kBpg / 2);
    uint32_t w[kHalfWords];
    if constexpr (kHalfWords % 4 == 0) {
#pragma unroll
      for (int i = 0; i < kHalfWords / 4; ++i) {
        const uint4 q = reinterpret_cast<const uint4*>(src)[i];
        w[4 * i] = q.x, w[4 * i + 1] = q.y, w[4 * i + 2] = q.z, w[4 * i + 3] = q.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < kHalfWords / 2; ++i) {
        const uint2 q = reinterpret_cast<const uint2*>(src)[i];
        w[2 * i] = q.x, w[2 * i + 1] = q.y;
      }
    }
    const float gain = *reinterpret_cast<const float*>(st + L::kCodes + r * 4);
    unsigned char* dst = smem + L::kOffW + buf * L::kW + r * kGemmRowBytes + h * 128;
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      uint32_t o[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        uint32_t v = LutLookup<kBits, kHalfWords>(smem, lane4, w, 4 * q + e);
        const float2 c = __half22float2(*reinterpret_cast<const __half2*>(&v));
        const __half2 prod = __floats2half2_rn(c.x * gain, c.y * gain);
        o[e] = *reinterpret_cast<const uint32_t*>(&prod);
      }
      *reinterpret_cast<uint4*>(dst + q * 16) = make_uint4(o[0], o[1], o[2], o[3]);
    }
  };

  float acc[kMT][kNT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
  }
  auto compute = [&](int s, int buf) {
    const unsigned char* xs = x_slot(s);
    const unsigned char* wt = smem + L::kOffW + buf * L::kW;
    float part[kMT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) part[mt][nt][0] = part[mt][nt][1] = part[mt][nt][2] = part[mt][nt][3] = 0.0f;
    }
#pragma unroll
    for (int ks = 0; ks < kG / 16; ++ks) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        const int row = warp_m * (kBM / 2) + mt * 16 + (lane & 15);
        LdMatrixX4(a[mt], xs + row * kGemmRowBytes + (ks * 16 + (lane >> 4) * 8) * 2);
      }
      uint32_t b[kNT][2];
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        const int nrow = warp_n * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
        uint32_t t[4];
        LdMatrixX4(t, wt + nrow * kGemmRowBytes + (ks * 16 + ((lane >> 3) & 1) * 8) * 2);
        b[2 * np][0] = t[0], b[2 * np][1] = t[1], b[2 * np + 1][0] = t[2], b[2 * np + 1][1] = t[3];
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          Mma16816(part[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
        }
      }
    }
    // This group's sums times the activation scale of rows g and g + 8 of each m16 tile.
    const float* xsc = reinterpret_cast<const float*>(xs + L::kXScales);
    const int gid = lane >> 2;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const int r = warp_m * (kBM / 2) + mt * 16 + gid;
      const float s0 = xsc[r], s1 = xsc[r + 8];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        acc[mt][nt][0] = fmaf(part[mt][nt][0], s0, acc[mt][nt][0]);
        acc[mt][nt][1] = fmaf(part[mt][nt][1], s0, acc[mt][nt][1]);
        acc[mt][nt][2] = fmaf(part[mt][nt][2], s1, acc[mt][nt][2]);
        acc[mt][nt][3] = fmaf(part[mt][nt][3], s1, acc[mt][nt][3]);
      }
    }
  };

  // Prologue: groups P_j = {codes(j), x(j) for j < kGemmXAhead}, j < kGemmCodeStages; the pair
  // table (fp16 pairs, as the mma kernel's); step 0 decoded. Step s's group G_s = {codes(s + kGemmCodeStages),
  // x(s + kGemmXAhead)}. At the top of step s, x(s) and codes(s + 1) lie in all but the newest
  // kGemmXAhead - 1 groups.
  static_assert(kGemmCodeStages > kGemmXAhead && kGemmXStages == kGemmXAhead + 1, "pipeline");
#pragma unroll
  for (int j = 0; j < kGemmCodeStages; ++j) {
    if (j < steps) issue_codes(j);
    if (j < kGemmXAhead && j < steps) issue_x(j);
    CpAsyncCommit();
  }
  {
    const float cb = p.codebook[lane & ((1 << kBits) - 1)];
    uint32_t* lut = reinterpret_cast<uint32_t*>(smem);
    for (int i = tid; i < (1 << (2 * kBits)) * 32; i += kThreads) {  // a multiple of kThreads
      const int v = i >> 5;
      const float lo = __shfl_sync(kFullMask, cb, v & ((1 << kBits) - 1));
      const float hi = __shfl_sync(kFullMask, cb, v >> kBits);
      const __half2 h2 = __floats2half2_rn(lo, hi);
      lut[i] = *reinterpret_cast<const uint32_t*>(&h2);
    }
  }
  CpAsyncWait<kGemmCodeStages - 1>();
  __syncthreads();
  decode(0, 0);
  for (int s = 0; s < steps; ++s) {
    CpAsyncWait<kGemmXAhead - 1>();  // x(s), codes(s + 1): this thread's part
    __syncthreads();  // everyone's; decode(s) visible; compute(s - 1) and decode(s) done
    if (s + kGemmCodeStages < steps) issue_codes(s + kGemmCodeStages);
    if (s + kGemmXAhead < steps) issue_x(s + kGemmXAhead);
    CpAsyncCommit();
    if (s + 1 < steps) decode(s + 1, (s + 1) & 1);
    compute(s, s & 1);
  }

  // Epilogue: rows m0 + warp_m·kBM/2 + mt·16 + g (+8), columns n0 + warp_n·32 + nt·8 + 2t (+1).
  const int gid = lane >> 2, tig = lane & 3;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = m0 + warp_m * (kBM / 2) + mt * 16 + gid + (e >> 1) * 8;
        const int col = n0 + warp_n * 32 + nt * 8 + 2 * tig + (e & 1);
        if (row >= p.m || col >= p.n) continue;
        const float v = acc[mt][nt][e];
        if (p.splits > 1) {
          p.ws[(static_cast<int64_t>(split) * p.m + row) * p.n + col] = v;
        } else {
          const int64_t at = static_cast<int64_t>(row) * p.ldy + col;
          if (p.y_f32 != nullptr) p.y_f32[at] = v;
          if (p.y_bf16 != nullptr) p.y_bf16[at] = __float2bfloat16_rn(v);
        }
      }
    }
  }
}

// Sums the split-K partials in split order (deterministic) and stores y.
__global__ void __launch_bounds__(kThreads) GemmSplitReduceKernel(const float* __restrict__ ws,
                                                                  int splits, int m, int n,
                                                                  float* __restrict__ y_f32,
                                                                  __nv_bfloat16* __restrict__ y_bf16,
                                                                  int64_t ldy) {
  const int64_t total = static_cast<int64_t>(m) * n;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += ws[s * total + i];
    const int64_t row = i / n, col = i - row * n;
    if (y_f32 != nullptr) y_f32[row * ldy + col] = sum;
    if (y_bf16 != nullptr) y_bf16[row * ldy + col] = __float2bfloat16_rn(sum);
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

constexpr size_t kMaxSharedBytes = 160 * 1024;  // fits sm_80 (163 KB) and sm_90 (227 KB)

size_t Round16(size_t v) { return (v + 15) & ~size_t{15}; }

struct MmaGeometry {
  int groups, splits, gr;
  int tile, tok_tiles, rows, row_blocks;
  int nbuf, stage_bytes, warp_bytes, lut_bytes;
  int x_rows, x_row_bytes;
  size_t off_x, off_xs, off_red, off_warps, smem;
};

MmaGeometry Geometry(int64_t m, int64_t n, int64_t k, int bits, const TqMmaConfig& cfg) {
  MmaGeometry g{};
  g.groups = static_cast<int>(TqCudaGroups(k));
  int s = std::max(1, std::min(cfg.splits, std::max(1, g.groups)));
  g.gr = (g.groups + s - 1) / s;
  g.splits = std::max(1, (g.groups + g.gr - 1) / g.gr);
  g.tile = m <= 8 ? 8 : m <= 16 ? 16 : 32;  // 8 x (1, 2 or 4) activation rows per decode
  g.tok_tiles = static_cast<int>((m + g.tile - 1) / g.tile);
  g.rows = 16 * cfg.n_tiles;
  g.row_blocks = static_cast<int>((n + g.rows - 1) / g.rows);
  g.nbuf = kStages;  // the pipeline runs across row blocks
  g.stage_bytes = g.rows * RowStrideHost(bits) + GroupsPerStageHost(bits) * g.rows * 4;
  g.warp_bytes = static_cast<int>(Round16(static_cast<size_t>(g.nbuf) * g.stage_bytes));
  g.lut_bytes = (1 << (2 * bits)) * 32 * 4;
  g.x_rows = static_cast<int>(std::min<int64_t>(g.tile, m));
  g.x_row_bytes = g.gr * 256 + 64;
  g.off_x = g.lut_bytes;
  g.off_xs = g.off_x + Round16(static_cast<size_t>(g.x_rows) * g.x_row_bytes);
  g.off_red = g.off_xs + Round16(static_cast<size_t>(g.x_rows) * g.gr * 4);
  g.off_warps = g.off_red + static_cast<size_t>(kWarps) * g.tile * g.rows * 4;
  g.smem = g.off_warps + static_cast<size_t>(kWarps) * g.warp_bytes;
  return g;
}

bool ValidNTiles(int nt) { return nt == 1 || nt == 2; }

// Launches the persistent grid: `ctas` CTAs (0 = as many as fit on the device at once), each
// serving one work unit and a strided share of its row blocks.
template <int kBits, int kNT, int kTT, int kMode>
cudaError_t LaunchMmaInstance(MmaKernelParams p, int ctas, size_t smem, cudaStream_t stream) {
  auto kernel = TqMmaKernel<kBits, kNT, kTT, kMode>;
  static std::atomic<size_t> attr_bytes{0};
  if (smem > 48 * 1024 && attr_bytes.load() < smem) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMaxSharedBytes));
    if (err != cudaSuccess) return err;
    attr_bytes.store(kMaxSharedBytes);
  }
  if (ctas <= 0) {
    int device = 0, sms = 0, per_sm = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess) {
      err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
    }
    if (err != cudaSuccess) return err;
    ctas = std::max(1, per_sm) * sms;
    // Grouped experts: the planes share the device (one wave in all, each CTA serving several
    // row blocks, instead of every plane filling the device with one-block CTAs).
    if (p.planes > 1) ctas = std::max(p.units, ctas / p.planes);
  }
  p.cpu = std::max(1, std::min(p.row_blocks, ctas / p.units));
  const int64_t grid = static_cast<int64_t>(p.units) * p.cpu;
  if (grid > 0x7fffffff) return cudaErrorInvalidConfiguration;
  (void)LaunchKernel(kernel, dim3(static_cast<unsigned>(grid), static_cast<unsigned>(p.planes)), kThreads, smem,
                     stream, p);
  return cudaGetLastError();
}

template <int kBits, int kNT, int kTT>
cudaError_t LaunchMmaMode(int mode, const MmaKernelParams& p, int grid, size_t smem,
                          cudaStream_t stream) {
  switch (mode) {
    case 0:
      return LaunchMmaInstance<kBits, kNT, kTT, 0>(p, grid, smem, stream);
    case 1:
      return LaunchMmaInstance<kBits, kNT, kTT, 1>(p, grid, smem, stream);
    default:
      return LaunchMmaInstance<kBits, kNT, kTT, 2>(p, grid, smem, stream);
  }
}

template <int kBits, int kNT>
cudaError_t LaunchMmaTT(int tt, int mode, const MmaKernelParams& p, int grid, size_t smem,
                        cudaStream_t stream) {
  switch (tt) {
    case 1:
      return LaunchMmaMode<kBits, kNT, 1>(mode, p, grid, smem, stream);
    case 2:
      return LaunchMmaMode<kBits, kNT, 2>(mode, p, grid, smem, stream);
    default:
      return LaunchMmaMode<kBits, kNT, 4>(mode, p, grid, smem, stream);
  }
}

template <int kBits>
cudaError_t LaunchMmaNT(int nt, int tt, int mode, const MmaKernelParams& p, int grid,
                        size_t smem, cudaStream_t stream) {
  return nt == 1 ? LaunchMmaTT<kBits, 1>(tt, mode, p, grid, smem, stream)
                 : LaunchMmaTT<kBits, 2>(tt, mode, p, grid, smem, stream);
}

bool Aligned(const void* p, size_t a) { return (reinterpret_cast<uintptr_t>(p) % a) == 0; }

bool ValidRotationBlock(int block) {
  if (block == 0) return true;
  return block >= 2 && block <= kG && (block & (block - 1)) == 0;
}

// y[i, 0..n) = 0 for i < m in each non-null output (k = 0: an empty sum).
cudaError_t ZeroOutputs(float* y_f32, uint16_t* y_bf16, int64_t m, int64_t n, int64_t ldy,
                        cudaStream_t stream) {
  cudaError_t e = cudaSuccess;
  if (y_f32 != nullptr) {
    e = cudaMemset2DAsync(y_f32, ldy * sizeof(float), 0, n * sizeof(float), m, stream);
  }
  if (e == cudaSuccess && y_bf16 != nullptr) {
    e = cudaMemset2DAsync(y_bf16, ldy * 2, 0, n * 2, m, stream);
  }
  return e;
}

bool ValidWeights(const TqCudaWeights& w) {
  return w.packed != nullptr && w.gains != nullptr && w.codebook != nullptr && w.n >= 0 &&
         w.k >= 0 && w.n < (int64_t{1} << 31) && w.k < (int64_t{1} << 31) &&
         (w.bits == 2 || w.bits == 3 || w.bits == 4) && w.group_size == kG &&
         ValidRotationBlock(w.rotation_block) && Aligned(w.packed, 16) && Aligned(w.gains, 4);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// (a)
namespace {

// The rotation kernel's launch for every output form, after the caller's checks: f32 / bf16 input
// (gated: silu(g) · u of float [g | u] rows), x_rot / fp16 x_rot + scales / int8 x_q + scales.
cudaError_t LaunchRotate(const void* x, TqActType x_type, bool gated, int64_t m, int64_t k, int64_t ldx,
                         int rotation_block, float* x_rot, uint16_t* x_rot_f16, float* x_scale, int8_t* x_q,
                         float* x_qscale, cudaStream_t stream, bool programmatic) {
  const int groups = static_cast<int>(TqCudaGroups(k));
  const int block = rotation_block == 0 ? kG : rotation_block;
  const float inv_div = 1.0f / RotationDivisorHost(block);
  const int64_t tasks = m * groups;
  const unsigned blocks = static_cast<unsigned>((tasks + kWarps - 1) / kWarps);
  const int m32 = static_cast<int>(m), k32 = static_cast<int>(k);
  __half* const x_h = reinterpret_cast<__half*>(x_rot_f16);
  if (x_type == TqActType::kF32) {
    const bool vec = k % 4 == 0 && ldx % 4 == 0 && Aligned(x, 16);
    return LaunchKernelWith(programmatic, gated ? RotateInputKernel<float, true> : RotateInputKernel<float, false>,
                            blocks, kThreads, 0, stream, static_cast<const float*>(x), m32, k32, ldx, groups,
                            block, inv_div, vec, x_rot, x_h, x_scale, x_q, x_qscale);
  }
  if (gated) return cudaErrorInvalidValue;
  const bool vec = k % 4 == 0 && ldx % 4 == 0 && Aligned(x, 8);
  return LaunchKernelWith(programmatic, RotateInputKernel<__nv_bfloat16>, blocks, kThreads, 0, stream,
                          static_cast<const __nv_bfloat16*>(x), m32, k32, ldx, groups, block, inv_div, vec, x_rot,
                          x_h, x_scale, x_q, x_qscale);
}

// LaunchTqRotateInputInt8 (gated = false) and LaunchTqSiluMulRotateInt8 (gated, float input).
cudaError_t LaunchRotateInt8(const void* x, TqActType x_type, bool gated, int64_t m, int64_t k,
                             int64_t ldx, int rotation_block, int8_t* x_q, float* x_qscale,
                             cudaStream_t stream, bool programmatic) {
  if (m < 0 || k < 0 || ldx < (gated ? 2 * k : k) || m >= (int64_t{1} << 31) || k >= (int64_t{1} << 31) ||
      !ValidRotationBlock(rotation_block) || x_q == nullptr || x_qscale == nullptr ||
      (m > 0 && k > 0 && x == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (m == 0 || k == 0) return cudaSuccess;
  if (!Aligned(x_q, 4)) return cudaErrorMisalignedAddress;
  return LaunchRotate(x, x_type, gated, m, k, ldx, rotation_block, nullptr, nullptr, nullptr, x_q, x_qscale, stream,
                      programmatic);
}

}  // namespace

cudaError_t LaunchTqRotateInput(const void* x, TqActType x_type, int64_t m, int64_t k, int64_t ldx,
                                int rotation_block, float* x_rot, uint16_t* x_rot_f16,
                                float* x_scale, cudaStream_t stream) {
  if (m < 0 || k < 0 || ldx < k || m >= (int64_t{1} << 31) || k >= (int64_t{1} << 31) ||
      !ValidRotationBlock(rotation_block) || (x_rot_f16 == nullptr) != (x_scale == nullptr) ||
      (m > 0 && k > 0 && x == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (m == 0 || k == 0) return cudaSuccess;
  if ((x_rot != nullptr && !Aligned(x_rot, 16)) || (x_rot_f16 != nullptr && !Aligned(x_rot_f16, 8))) {
    return cudaErrorMisalignedAddress;
  }
  (void)LaunchRotate(x, x_type, false, m, k, ldx, rotation_block, x_rot, x_rot_f16, x_scale, nullptr, nullptr, stream,
                     ProgrammaticLaunchOnThisThread());
  return cudaGetLastError();
}

cudaError_t LaunchTqRotateInputInt8(const void* x, TqActType x_type, int64_t m, int64_t k,
                                    int64_t ldx, int rotation_block, int8_t* x_q,
                                    float* x_qscale, cudaStream_t stream, bool programmatic) {
  return LaunchRotateInt8(x, x_type, false, m, k, ldx, rotation_block, x_q, x_qscale, stream, programmatic);
}

cudaError_t LaunchTqAddRmsNormRotateInt8(float* x, int64_t ldx, const float* a, int64_t lda, const float* w,
                                         int64_t m, int64_t k, float eps, float* y, int64_t ldy, int rotation_block,
                                         int8_t* x_q, float* x_qscale, cudaStream_t stream, bool programmatic) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y) |
                         reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(a);
  if (m < 0 || m > 65535 || k <= 0 || k % kG != 0 || k >= (int64_t{1} << 31) || ldx < k || ldy < k ||
      ldx % 4 != 0 || ldy % 4 != 0 || (a != nullptr && (lda < k || lda % 4 != 0)) || bits % 16 != 0 ||
      !ValidRotationBlock(rotation_block) || x_q == nullptr || x_qscale == nullptr ||
      (m > 0 && (x == nullptr || y == nullptr))) {
    return cudaErrorInvalidValue;
  }
  if (m == 0) return cudaSuccess;
  if (!Aligned(x_q, 4)) return cudaErrorMisalignedAddress;
  const int block = rotation_block == 0 ? kG : rotation_block;
  const float inv_div = 1.0f / RotationDivisorHost(block);
  const int threads = RmsNormThreads(k);  // nn_ops' RmsNormRows block: the same partial sums
  const cudaError_t e =
      a != nullptr ? LaunchKernelWith(programmatic, AddRmsNormRotateInt8Kernel<true>, static_cast<unsigned>(m), threads,
                                      0, stream, x, ldx, a, lda, w, static_cast<int>(k), eps, y, ldy, block, inv_div,
                                      x_q, x_qscale)
                   : LaunchKernelWith(programmatic, AddRmsNormRotateInt8Kernel<false>, static_cast<unsigned>(m),
                                      threads, 0, stream, x, ldx, a, lda, w, static_cast<int>(k), eps, y, ldy, block,
                                      inv_div, x_q, x_qscale);
  return e != cudaSuccess ? e : cudaGetLastError();
}

cudaError_t LaunchTqSiluMulRotateInt8(const float* gate_up, int64_t ld, int64_t m, int64_t k,
                                      int rotation_block, int8_t* x_q, float* x_qscale,
                                      cudaStream_t stream, bool programmatic) {
  return LaunchRotateInt8(gate_up, TqActType::kF32, true, m, k, ld, rotation_block, x_q, x_qscale, stream,
                          programmatic);
}

// ---------------------------------------------------------------------------------------------
// (b), (c)
TqMmaConfig NormalizeTqMmaConfig(int64_t m, int64_t n, int64_t k, int bits, TqMmaConfig cfg) {
  if (!ValidNTiles(cfg.n_tiles)) cfg.n_tiles = cfg.n_tiles > 2 ? 2 : 1;
  MmaGeometry g = Geometry(m, n, k, bits, cfg);
  cfg.splits = g.splits;
  // Shrink until one CTA's shared memory fits: first the activation tile (more splits), then
  // the weight stages (fewer rows).
  while (g.smem > kMaxSharedBytes) {
    const size_t x_bytes = g.off_warps - g.off_x;
    const size_t w_bytes = g.smem - g.off_warps;
    if ((x_bytes >= w_bytes || cfg.n_tiles == 1) && g.gr > 1) {
      cfg.splits = (g.groups + g.gr - 2) / (g.gr - 1);  // the next smaller K range per split
    } else if (cfg.n_tiles > 1) {
      cfg.n_tiles /= 2;
    } else {
      break;  // cannot happen for G = 128 and bits <= 4
    }
    g = Geometry(m, n, k, bits, cfg);
    cfg.splits = g.splits;
  }
  return cfg;
}

TqMmaConfig PlanTqMma(int64_t m, int64_t n, int64_t k, int bits, int multiprocessors) {
  // The fastest tilings of the m = 1 sweeps on an H100 (docs/BENCHMARKS.md §8, runs 5-6):
  // small n (k/v projections): 16-row blocks and 2-4 K splits for enough CTAs; long K (>= 96
  // groups): 4 splits; wide layers (n >= 12288): 16-row blocks, no split; the rest: 32-row
  // blocks, no split. The rotation is fused into the kernel for m <= 2 (each CTA rotates its
  // whole activation tile, which grows with m).
  (void)multiprocessors;  // the persistent grid sizes itself from the device
  TqMmaConfig cfg;
  cfg.fused_rotation = m <= 2;
  const int64_t groups = TqCudaGroups(k);
  if (n <= 2048) {
    cfg.n_tiles = 1;
    cfg.splits = groups <= 32 ? 2 : 4;
  } else if (groups >= 96) {
    cfg.n_tiles = n <= 4096 ? 2 : 1;
    cfg.splits = 4;
  } else {
    cfg.n_tiles = n >= 12288 ? 1 : 2;
    cfg.splits = 1;
  }
  cfg.splits = static_cast<int>(std::min<int64_t>(cfg.splits, std::max<int64_t>(1, groups / kWarps)));
  return NormalizeTqMmaConfig(m, n, k, bits, cfg);
}

// Split-K workspace layout: the tile counters first, at a fixed place for every shape (so that a
// launch of another shape, whose partial sums follow the counter block, never writes over them:
// they stay zero between launches), then the partial sums.
constexpr size_t kMmaCounterBytes = static_cast<size_t>(kTqMmaMaxTiles) * sizeof(uint32_t);

size_t TqMmaWorkspaceBytes(int64_t m, int64_t n, int64_t k, int bits, const TqMmaConfig& cfg,
                           int expert_slots) {
  const TqMmaConfig c = NormalizeTqMmaConfig(m, n, k, bits, cfg);
  const MmaGeometry g = Geometry(m, n, k, bits, c);
  if (g.splits <= 1) return 0;
  const size_t planes = static_cast<size_t>(std::max(1, expert_slots));
  return kMmaCounterBytes + planes * g.splits * m * n * sizeof(float);
}

size_t TqMmaSharedBytes(int64_t m, int64_t n, int64_t k, int bits, const TqMmaConfig& cfg) {
  const TqMmaConfig c = NormalizeTqMmaConfig(m, n, k, bits, cfg);
  return Geometry(m, n, k, bits, c).smem;
}

cudaError_t LaunchTqLinearMma(const TqMmaArgs& a, const TqMmaConfig& cfg_in, cudaStream_t stream) {
  const TqCudaWeights& w = a.w;
  if (!ValidWeights(w) || a.m < 0 || a.m >= (int64_t{1} << 31) ||
      (a.y_f32 == nullptr && a.y_bf16 == nullptr) || a.ldy < w.n) {
    return cudaErrorInvalidValue;
  }
  // Grouped experts: one grid plane per slot.
  if (a.expert_slots < 0 || a.expert_slots > kTqMmaMaxExpertSlots ||
      (a.expert_slots > 0 && (a.expert == nullptr || a.x_slot_div < 1))) {
    return cudaErrorInvalidValue;
  }
  const int planes = a.expert_slots > 0 ? static_cast<int>(a.expert_slots) : 1;
  if (a.m == 0 || w.n == 0) return cudaSuccess;
  const TqMmaConfig cfg = NormalizeTqMmaConfig(a.m, w.n, w.k, w.bits, cfg_in);
  const MmaGeometry g = Geometry(a.m, w.n, w.k, w.bits, cfg);
  if (g.smem > kMaxSharedBytes) return cudaErrorInvalidConfiguration;
  if (cfg.fused_rotation) {
    if (a.x == nullptr || a.ldx < w.k) return cudaErrorInvalidValue;
  } else {
    if (a.x_rot_f16 == nullptr || a.x_scale == nullptr) return cudaErrorInvalidValue;
    if (!Aligned(a.x_rot_f16, 16) || !Aligned(a.x_scale, 4)) return cudaErrorMisalignedAddress;
  }
  if (w.k == 0) {  // no inputs: y = 0
    return ZeroOutputs(a.y_f32, a.y_bf16, a.m * planes, w.n, a.ldy, stream);
  }
  const size_t ws_need = TqMmaWorkspaceBytes(a.m, w.n, w.k, w.bits, cfg, planes);
  if (ws_need > 0 && (a.workspace == nullptr || a.workspace_bytes < ws_need ||
                      static_cast<int64_t>(g.tok_tiles) * g.row_blocks * planes > kTqMmaMaxTiles)) {
    return cudaErrorInvalidValue;
  }
  MmaKernelParams p{};
  p.packed = w.packed;
  p.gains = w.gains;
  p.codebook = w.codebook;
  p.expert = a.expert;
  p.expert_packed_stride = a.expert_packed_stride;
  p.expert_gains_stride = a.expert_gains_stride;
  p.planes = planes;
  p.x_plane_div = a.expert_slots > 0 ? static_cast<int>(a.x_slot_div) : 1;
  p.tiles_per_plane = g.tok_tiles * g.row_blocks;
  p.ws_plane_floats = static_cast<int64_t>(g.splits) * a.m * w.n;
  p.n = static_cast<int>(w.n);
  p.k = static_cast<int>(w.k);
  p.groups = g.groups;
  p.m = static_cast<int>(a.m);
  p.x = a.x;
  p.ldx = a.ldx;
  const size_t act_bytes = a.x_type == TqActType::kF32 ? 4 : 2;
  p.x_vec = w.k % 4 == 0 && a.ldx % 4 == 0 && a.x != nullptr && Aligned(a.x, 4 * act_bytes);
  p.x_h = reinterpret_cast<const __half*>(a.x_rot_f16);
  p.x_scale = a.x_scale;
  const int block = w.rotation_block == 0 ? kG : w.rotation_block;
  p.block = block;
  p.inv_div = 1.0f / RotationDivisorHost(block);
  p.y_f32 = a.y_f32;
  p.y_bf16 = reinterpret_cast<__nv_bfloat16*>(a.y_bf16);
  p.ldy = a.ldy;
  if (g.splits > 1) {
    p.counters = static_cast<uint32_t*>(a.workspace);
    p.ws = reinterpret_cast<float*>(static_cast<char*>(a.workspace) + kMmaCounterBytes);
  }
  p.splits = g.splits;
  p.gr = g.gr;
  p.x_row_bytes = g.x_row_bytes;
  p.off_x = static_cast<int>(g.off_x);
  p.off_xs = static_cast<int>(g.off_xs);
  p.off_warps = static_cast<int>(g.off_warps);
  p.off_red = static_cast<int>(g.off_red);
  p.warp_bytes = g.warp_bytes;
  p.units = g.tok_tiles * g.splits;
  p.tok_tiles = g.tok_tiles;
  p.row_blocks = g.row_blocks;
  const int grid = cfg.ctas;
  const int mode = cfg.fused_rotation ? (a.x_type == TqActType::kF32 ? 0 : 1) : 2;
  const int tt = g.tile / 8;
  switch (w.bits) {
    case 2:
      return LaunchMmaNT<2>(cfg.n_tiles, tt, mode, p, grid, g.smem, stream);
    case 3:
      return LaunchMmaNT<3>(cfg.n_tiles, tt, mode, p, grid, g.smem, stream);
    default:
      return LaunchMmaNT<4>(cfg.n_tiles, tt, mode, p, grid, g.smem, stream);
  }
}

// ---------------------------------------------------------------------------------------------
// (c) GEMM, host side.
namespace {

// cudaDevAttrMaxSharedMemoryPerBlockOptin by compute capability (for host-only planning).
size_t MaxSharedOptin(int sm_major, int sm_minor) {
  if (sm_major >= 9) return 227 * 1024;
  if (sm_major == 8 && (sm_minor == 0 || sm_minor == 7)) return 163 * 1024;
  return 99 * 1024;
}

}  // namespace

size_t TqGemmSharedBytes(int bits, int bm) { return GemmSmemHost(bits, bm); }

TqGemmConfig NormalizeTqGemmConfig(int64_t m, int64_t n, int64_t k, TqGemmConfig cfg) {
  cfg.bm = cfg.bm == 128 ? 128 : 64;
  const int64_t groups = TqCudaGroups(k);
  int64_t splits = std::max<int64_t>(1, std::min<int64_t>(cfg.splits, groups));
  const int64_t gr = (groups + splits - 1) / splits;
  cfg.splits = static_cast<int>(std::max<int64_t>(1, (groups + gr - 1) / gr));
  (void)m;
  (void)n;
  return cfg;
}

TqGemmConfig PlanTqGemm(int64_t m, int64_t n, int64_t k, int bits, int multiprocessors,
                        int sm_major, int sm_minor) {
  TqGemmConfig cfg;
  const size_t limit = MaxSharedOptin(sm_major, sm_minor);
  cfg.bm = m > 64 && GemmSmemHost(bits, 128) <= limit ? 128 : 64;
  if (GemmSmemHost(bits, cfg.bm) > limit) {
    cfg.bm = 0;  // does not fit this device
    return cfg;
  }
  // One CTA per SM (the tile's shared memory): split K until the tiles fill about one wave,
  // keeping at least 2 groups per split.
  const int64_t tiles = ((n + kGemmBN - 1) / kGemmBN) * ((m + cfg.bm - 1) / cfg.bm);
  const int64_t groups = TqCudaGroups(k);
  int64_t splits = std::max<int64_t>(1, multiprocessors / std::max<int64_t>(1, tiles));
  splits = std::min<int64_t>({splits, std::max<int64_t>(1, groups / 2), 16});
  cfg.splits = static_cast<int>(splits);
  return NormalizeTqGemmConfig(m, n, k, cfg);
}

size_t TqGemmWorkspaceBytes(int64_t m, int64_t n, int64_t k, const TqGemmConfig& cfg) {
  const TqGemmConfig c = NormalizeTqGemmConfig(m, n, k, cfg);
  return c.splits > 1 ? static_cast<size_t>(c.splits) * m * n * sizeof(float) : 0;
}

namespace {

template <int kBits, int kBM>
cudaError_t LaunchGemmInstance(const GemmParams& p, dim3 grid, cudaStream_t stream) {
  using L = GemmLayout<kBits, kBM>;
  auto kernel = TqGemmKernel<kBits, kBM>;
  static std::atomic<bool> attr_set{false};
  if (!attr_set.load()) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kSmem);
    if (err != cudaSuccess) return err;
    attr_set.store(true);
  }
  kernel<<<grid, kThreads, L::kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <int kBits>
cudaError_t LaunchGemmBits(int bm, const GemmParams& p, dim3 grid, cudaStream_t stream) {
  if (bm != 128) return LaunchGemmInstance<kBits, 64>(p, grid, stream);
  // TQ4's 128-row tile (pair table 32 KB) needs more shared memory than any device has.
  if constexpr (GemmLayout<kBits, 128>::kSmem > 227 * 1024) {
    return cudaErrorInvalidConfiguration;
  } else {
    return LaunchGemmInstance<kBits, 128>(p, grid, stream);
  }
}

}  // namespace

cudaError_t LaunchTqGemm(const TqGemmArgs& a, const TqGemmConfig& cfg_in, cudaStream_t stream) {
  const TqCudaWeights& w = a.w;
  if (!ValidWeights(w) || a.m < 0 || a.m >= (int64_t{1} << 31) ||
      (a.y_f32 == nullptr && a.y_bf16 == nullptr) || a.ldy < w.n ||
      (a.m > 0 && w.k > 0 && (a.x_rot_f16 == nullptr || a.x_scale == nullptr)) ||
      cfg_in.bm == 0) {
    return cudaErrorInvalidValue;
  }
  if (a.m == 0 || w.n == 0) return cudaSuccess;
  if ((a.x_rot_f16 != nullptr && !Aligned(a.x_rot_f16, 16)) ||
      (a.x_scale != nullptr && !Aligned(a.x_scale, 4))) {
    return cudaErrorMisalignedAddress;
  }
  if (w.k == 0) {
    return ZeroOutputs(a.y_f32, a.y_bf16, a.m, w.n, a.ldy, stream);
  }
  const TqGemmConfig cfg = NormalizeTqGemmConfig(a.m, w.n, w.k, cfg_in);
  int device = 0, optin = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (err != cudaSuccess) return err;
  if (GemmSmemHost(w.bits, cfg.bm) > static_cast<size_t>(optin)) {
    return cudaErrorInvalidConfiguration;
  }
  const size_t ws_need = TqGemmWorkspaceBytes(a.m, w.n, w.k, cfg);
  if (ws_need > 0 && (a.workspace == nullptr || a.workspace_bytes < ws_need)) {
    return cudaErrorInvalidValue;
  }
  GemmParams p{};
  p.packed = w.packed;
  p.gains = w.gains;
  p.codebook = w.codebook;
  p.n = static_cast<int>(w.n);
  p.groups = static_cast<int>(TqCudaGroups(w.k));
  p.m = static_cast<int>(a.m);
  p.x = reinterpret_cast<const __half*>(a.x_rot_f16);
  p.x_scale = a.x_scale;
  p.y_f32 = a.y_f32;
  p.y_bf16 = reinterpret_cast<__nv_bfloat16*>(a.y_bf16);
  p.ldy = a.ldy;
  p.splits = cfg.splits;
  p.gr = (p.groups + cfg.splits - 1) / cfg.splits;
  p.ws = cfg.splits > 1 ? static_cast<float*>(a.workspace) : nullptr;
  const int64_t m_tiles = (a.m + cfg.bm - 1) / cfg.bm;
  if (m_tiles > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>((w.n + kGemmBN - 1) / kGemmBN),
                  static_cast<unsigned>(m_tiles), static_cast<unsigned>(cfg.splits));
  switch (w.bits) {
    case 2:
      err = LaunchGemmBits<2>(cfg.bm, p, grid, stream);
      break;
    case 3:
      err = LaunchGemmBits<3>(cfg.bm, p, grid, stream);
      break;
    default:
      err = LaunchGemmBits<4>(cfg.bm, p, grid, stream);
      break;
  }
  if (err != cudaSuccess || cfg.splits == 1) return err;
  const int64_t total = a.m * w.n;
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 4096));
  GemmSplitReduceKernel<<<blocks, kThreads, 0, stream>>>(p.ws, cfg.splits, p.m, p.n, a.y_f32,
                                                         p.y_bf16, a.ldy);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// (d)
cudaError_t LaunchTqDequantize(const TqCudaWeights& w, float* w_f32, uint16_t* w_bf16, int64_t ldw,
                               cudaStream_t stream) {
  if (!ValidWeights(w) || ldw < w.k || (w_f32 == nullptr) == (w_bf16 == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (w.n == 0 || w.k == 0) return cudaSuccess;
  const int groups = static_cast<int>(TqCudaGroups(w.k));
  const int block = w.rotation_block == 0 ? kG : w.rotation_block;
  const float div = RotationDivisorHost(block);
  const int64_t tasks = w.n * groups;
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>((tasks + kWarps - 1) / kWarps, int64_t{1} << 20));
  const bool vec = w.k % 4 == 0 && ldw % 4 == 0 &&
                   (w_f32 != nullptr ? Aligned(w_f32, 16) : Aligned(w_bf16, 8));
#define TQ_DEQUANT_LAUNCH(BITS)                                                                 \
  if (w_f32 != nullptr) {                                                                       \
    DequantKernel<BITS, float><<<blocks, kThreads, 0, stream>>>(                                \
        w.packed, w.gains, w.codebook, w.n, static_cast<int>(w.k), groups, block, div, vec,     \
        w_f32, ldw);                                                                            \
  } else {                                                                                      \
    DequantKernel<BITS, __nv_bfloat16><<<blocks, kThreads, 0, stream>>>(                        \
        w.packed, w.gains, w.codebook, w.n, static_cast<int>(w.k), groups, block, div, vec,     \
        reinterpret_cast<__nv_bfloat16*>(w_bf16), ldw);                                         \
  }
  switch (w.bits) {
    case 2:
      TQ_DEQUANT_LAUNCH(2)
      break;
    case 3:
      TQ_DEQUANT_LAUNCH(3)
      break;
    default:
      TQ_DEQUANT_LAUNCH(4)
      break;
  }
#undef TQ_DEQUANT_LAUNCH
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// (e)
const char* TqKernelName(TqKernel kernel) {
  switch (kernel) {
    case TqKernel::kMmaFused:
      return "mma_fused";
    case TqKernel::kMmaSeparate:
      return "mma_separate";
    case TqKernel::kDequantCublas:
      return "dequant_cublas";
    case TqKernel::kGemm:
      return "gemm";
    case TqKernel::kInt8Gemv:
      return "int8_gemv";
    default:
      return "unsupported";
  }
}

const char* TqCudaUnsupportedReason(int bits, int group_size, int rotation_block, int sm_major,
                                    int sm_minor) {
  (void)sm_minor;
  if (bits != 2 && bits != 3 && bits != 4) return "bits must be 2, 3 or 4";
  if (group_size != kG) return "the CUDA TQ kernels support group size 128 only";
  if (!ValidRotationBlock(rotation_block)) {
    return "rotation_block must be 0 (full) or a power of two in [2, 128]";
  }
  if (sm_major < 8) return "needs compute capability 8.0 or newer (cp.async, mma.sync f16)";
  return nullptr;
}

TqKernel SelectTqKernel(int bits, int group_size, int rotation_block, int64_t m, int sm_major,
                        int sm_minor) {
  if (TqCudaUnsupportedReason(bits, group_size, rotation_block, sm_major, sm_minor) != nullptr) {
    return TqKernel::kUnsupported;
  }
  // Crossovers measured on an H100/H200 (docs/BENCHMARKS.md §8): fused rotation while it is
  // cheap, separate rotation for small m, then the GEMM where its shared memory fits the device
  // (else dequantize + cuBLAS).
  // H200 (§8, m sweeps): the GEMM wins from m = 32 on every shape (from m = 16 on 4096 x 4096
  // only) up to m = 256; dequantize + cuBLAS wins from m = 512.
  if (m <= 2) return TqKernel::kMmaFused;
  if (m <= 16) return TqKernel::kMmaSeparate;
  if (m <= 256 && GemmSmemHost(bits, 64) <= MaxSharedOptin(sm_major, sm_minor)) {
    return TqKernel::kGemm;
  }
  return TqKernel::kDequantCublas;
}

}  // namespace tq::cuda
