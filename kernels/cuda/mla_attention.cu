// MLA decode attention over a bf16 or packed latent cache. Contract: kernels/cuda/mla_attention.h.
#include "kernels/cuda/mla_attention.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/pdl.cuh"

namespace tq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kTile = 16;                  // positions decoded per step
constexpr int kHg = kMlaHeadsPerCta;       // query heads per CTA
constexpr int kHeadBlock = 4;              // heads per thread in the score and sum loops
constexpr int kMaxLatent = 2 * kMaxMlaHalfDim;
// Sum units (4 latent values × 4 heads) per thread at the largest latent and group.
constexpr int kMaxUnits = (kMaxLatent / 4) * (kHg / kHeadBlock) / kThreads;
constexpr int kMinSplitPositions = 64;
constexpr int kMaxCodebook = 256;

// fp32 row stride of the query and tile arrays in shared memory: ≡ 16 (mod 32) floats, so the
// eight lanes of a 16-byte access phase (two positions × four column quads) hit distinct banks.
__host__ __device__ constexpr int PaddedLatent(int latent) { return latent + 16; }

__host__ __device__ inline int FormatBits(const KvVectorFormat& f) {
  return f.kind == KvVectorKind::kBf16 ? 0 : f.bits;
}

__host__ __device__ inline int64_t HalfBytes(const KvVectorFormat& f, int d) {
  return f.kind == KvVectorKind::kBf16 ? 2 * static_cast<int64_t>(d) : static_cast<int64_t>(d) * f.bits / 8 + 4;
}

// The largest power of two dividing d (quant::KvRotationBlock).
__host__ __device__ inline int RotationBlock(int d) { return d & -d; }

struct SmemLayout {
  int lp;                                   // padded latent stride (floats)
  int lo_words, hi_words;                   // 4-byte words of one stored half vector
  size_t q, x, s, alpha, m, l, cb_lo, cb_hi, slot, raw, bytes;  // offsets in floats, total in bytes
};

__host__ __device__ inline SmemLayout MakeLayout(int half, int lo_bytes, int hi_bytes) {
  SmemLayout s;
  s.lp = PaddedLatent(2 * half);
  s.lo_words = (lo_bytes + 3) / 4;
  s.hi_words = (hi_bytes + 3) / 4;
  s.q = 0;
  s.x = s.q + static_cast<size_t>(kHg) * s.lp;
  s.s = s.x + static_cast<size_t>(kTile) * s.lp;
  s.alpha = s.s + kTile * kHg;
  s.m = s.alpha + kHg;
  s.l = s.m + kHg;
  s.cb_lo = s.l + kHg;
  s.cb_hi = s.cb_lo + kMaxCodebook;
  s.slot = s.cb_hi + kMaxCodebook;                      // 2 × kTile int64 (ping-pong by tile)
  s.raw = s.slot + 2 * 2 * kTile;                       // kTile × (lo_words + hi_words) stored bytes
  s.bytes = (s.raw + static_cast<size_t>(kTile) * (s.lo_words + s.hi_words)) * sizeof(float);
  return s;
}

__device__ __forceinline__ void CpAsync4(void* smem_dst, const void* gmem) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(gmem));
}

// In-place natural-order FWHT of `count` vectors (stride `stride` floats) of d values in blocks of
// B = RotationBlock(d): the butterflies of quant::FwhtInPlace, all threads of the CTA.
__device__ void BlockFwhtShared(float* v, int count, int stride, int d) {
  const int block = RotationBlock(d);
  const int pairs = d / 2;
  for (int h = 1; h < block; h *= 2) {
    __syncthreads();
    for (int k = threadIdx.x; k < count * pairs; k += blockDim.x) {
      const int vec = k / pairs, e = k % pairs;
      const int i = (e / h) * 2 * h + e % h;
      float* p = v + static_cast<size_t>(vec) * stride;
      const float a = p[i], b = p[i + h];
      p[i] = a + b;
      p[i + h] = a - b;
    }
  }
  __syncthreads();
}

// Code j of a packed vector (little-endian bit stream, kernels/quant/packing.h).
__device__ __forceinline__ int LoadCode(const uint8_t* __restrict__ v, int j, int bits) {
  switch (bits) {
    case 8:
      return v[j];
    case 4:
      return (v[j >> 1] >> ((j & 1) * 4)) & 15;
    case 2:
      return (v[j >> 2] >> ((j & 3) * 2)) & 3;
    default: {  // 3 bits: the code may straddle two bytes (the gain follows the last byte)
      const int bit = 3 * j;
      const int w = v[bit >> 3] | (v[(bit >> 3) + 1] << 8);
      return (w >> (bit & 7)) & 7;
    }
  }
}

__device__ __forceinline__ float LoadBytesFloat(const uint8_t* p) {
  const uint32_t u = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                     (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
  return __uint_as_float(u);
}

// Partial results of one split: m and l per head, the weighted latent sums (attention space).
struct Workspace {
  float* ml;   // [rows, heads, splits, 2]
  float* acc;  // [rows, heads, splits, latent]
};

__host__ __device__ inline Workspace SplitWorkspace(float* base, int64_t rows, int heads, int splits) {
  Workspace w;
  w.ml = base;
  w.acc = base + rows * heads * splits * 2;
  return w;
}

// grid (splits, head groups, rows), kThreads threads.
__global__ void __launch_bounds__(kThreads, 2) MlaSplitKernel(const MlaAttentionParams p) {
  PdlEnter();
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int half = p.half_dim, latent = 2 * half;
  const SmemLayout lay = MakeLayout(half, HalfBytes(p.lo.format, half), HalfBytes(p.hi.format, half));
  const int lp = lay.lp;
  float* q_s = smem + lay.q;
  float* x_s = smem + lay.x;
  float* s_s = smem + lay.s;
  float* alpha_s = smem + lay.alpha;
  float* m_s = smem + lay.m;  // per head: running max and sum of the online softmax
  float* l_s = smem + lay.l;
  float* cb_lo = smem + lay.cb_lo;
  float* cb_hi = smem + lay.cb_hi;
  int64_t* slots_s = reinterpret_cast<int64_t*>(smem + lay.slot);  // [2][kTile]
  uint32_t* raw_s = reinterpret_cast<uint32_t*>(smem + lay.raw);    // [kTile][lo_words + hi_words]
  const int pw = lay.lo_words + lay.hi_words;

  const int split = blockIdx.x, group = blockIdx.y;
  const int64_t row = blockIdx.z;
  const int h0 = group * kHg;
  const int hg = min(kHg, p.num_heads - h0);
  const int tid = threadIdx.x;
  // Fields of half hf by selection (indexing an array of the parameter's halves would copy the
  // parameters to local memory).
  const int bits_lo = FormatBits(p.lo.format), bits_hi = FormatBits(p.hi.format);
#define TQ_HALF(hf, field) ((hf) ? p.hi.field : p.lo.field)
#define TQ_BITS(hf) ((hf) ? bits_hi : bits_lo)

  // Range of this split.
  const int64_t n = static_cast<int64_t>(p.positions[row]) + 1;
  int64_t chunk = (n + p.splits - 1) / p.splits;
  if (chunk < kMinSplitPositions) chunk = kMinSplitPositions;
  chunk = (chunk + kTile - 1) / kTile * kTile;
  const int64_t lo = static_cast<int64_t>(split) * chunk;
  const int64_t hi = n < lo + chunk ? n : lo + chunk;

  const int64_t ws_row = (row * p.num_heads + h0) * p.splits + split;  // head h0's entry
  Workspace ws = SplitWorkspace(p.workspace, p.rows, p.num_heads, p.splits);
  if (lo >= hi) {  // an empty split (the row is shorter than the planned splits)
    for (int h = tid; h < hg; h += kThreads) {
      ws.ml[(ws_row + static_cast<int64_t>(h) * p.splits) * 2] = -INFINITY;
      ws.ml[(ws_row + static_cast<int64_t>(h) * p.splits) * 2 + 1] = 0.0f;
    }
    for (int64_t e = tid; e < static_cast<int64_t>(hg) * latent; e += kThreads) {
      ws.acc[(ws_row + (e / latent) * p.splits) * latent + e % latent] = 0.0f;
    }
    return;
  }

  // The slots of the tile at `base` (-1: past the split; -2: a sink, read from the side store),
  // by threads < kTile, into slots_s[buf].
  auto plan_tile = [&](int64_t base, int buf) {
    if (tid < kTile) {
      const int64_t pos = base + tid;
      int64_t slot = -1;
      if (pos < hi) {
        if (pos < p.sink_tokens) {
          slot = -2;
        } else {
          const int32_t blk = p.block_table[p.table_offset[row] + pos / p.block_size];
          slot = static_cast<int64_t>(blk) * p.block_size + pos % p.block_size;
        }
      }
      slots_s[buf * kTile + tid] = slot;
    }
  };
  // The stored bytes of the tile planned in slots_s[buf] into raw_s (cp.async, 4-byte words;
  // strides and cache pointers are 4-byte aligned): in flight while the previous tile computes.
  auto stage_tile = [&](int buf) {
    for (int t = 0; t < kTile; ++t) {
      const int64_t slot = slots_s[buf * kTile + t];
      if (slot < 0) continue;  // uniform across the CTA
      const uint8_t* lo_src = p.lo.cache + slot * p.lo.stride;
      const uint8_t* hi_src = p.hi.cache + slot * p.hi.stride;
      for (int w = tid; w < pw; w += kThreads) {
        const uint8_t* src = w < lay.lo_words ? lo_src + 4 * w : hi_src + 4 * (w - lay.lo_words);
        CpAsync4(raw_s + t * pw + w, src);
      }
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };

  // The first tile's copies fly while the queries are prepared.
  plan_tile(lo, 0);
  __syncthreads();
  stage_tile(0);

  // The group's queries, each packed half rotated into its attention space (R q); rows past the
  // group are zero (the score loop reads heads in blocks of four). latent / 4 <= kThreads: one
  // column quad per thread, its 16 loads issued together.
  if (tid < latent / 4) {
    float4 v[kHg];
#pragma unroll
    for (int h = 0; h < kHg; ++h) {
      v[h] = h < hg ? reinterpret_cast<const float4*>(p.q + row * p.ldq + static_cast<int64_t>(h0 + h) * latent)[tid]
                    : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int h = 0; h < kHg; ++h) *reinterpret_cast<float4*>(q_s + h * lp + 4 * tid) = v[h];
  }
  if (tid < kHg) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  for (int hf = 0; hf < 2; ++hf) {
    if (TQ_BITS(hf) == 0) continue;
    const int entries = 1 << TQ_BITS(hf);
    const float* codebook = TQ_HALF(hf, format.codebook);
    float* cb = hf ? cb_hi : cb_lo;
    for (int c = tid; c < entries; c += kThreads) cb[c] = codebook[c];
    const float* signs = TQ_HALF(hf, format.signs);
    const float divisor = TQ_HALF(hf, format.divisor);
    float* qh = q_s + hf * half;
    __syncthreads();
    if (signs != nullptr) {  // D1
      for (int i = tid; i < half; i += kThreads) {
        const float sg = signs[i];
        for (int h = 0; h < hg; ++h) qh[h * lp + i] *= sg;
      }
    }
    BlockFwhtShared(qh, hg, lp, half);
    for (int i = tid; i < half; i += kThreads) {  // / divisor, then D2
      const float sg = signs != nullptr ? signs[half + i] : 1.0f;
      for (int h = 0; h < hg; ++h) {
        float y = qh[h * lp + i] / divisor;
        if (signs != nullptr) y = y * sg;
        qh[h * lp + i] = y;
      }
    }
  }
  __syncthreads();

  // Score mapping: thread = (position t, block of four heads, column-quad phase c).
  const int c = tid & 3, su = tid >> 2;
  const int st = su % kTile, shb = su / kTile;
  const bool score_active = shb * kHeadBlock < hg;  // warp-uniform (a warp covers one head block)
  // Sum mapping: unit = (column quad, head block); thread tid takes units tid + kThreads·k.
  const int quads = latent / 4, head_blocks = (hg + kHeadBlock - 1) / kHeadBlock;
  const int units = quads * head_blocks;
  float4 acc[kMaxUnits][kHeadBlock];
#pragma unroll
  for (int k = 0; k < kMaxUnits; ++k) {
#pragma unroll
    for (int j = 0; j < kHeadBlock; ++j) acc[k][j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }

  int buf = 0;
  for (int64_t base = lo; base < hi; base += kTile, buf ^= 1) {
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();  // the tile's bytes (every thread's copies) and slots are in
    const int64_t* slot_s = slots_s + buf * kTile;
    // Decode the tile into the attention space: per position and half, bf16 pairs from 4-byte
    // words, or gain × centroid per code.
    for (int t = 0; t < kTile; ++t) {
      const int64_t slot = slot_s[t];
      if (slot == -1) {  // past the split: zeros (scored -inf, weighted 0)
        for (int i = tid; i < latent; i += kThreads) x_s[t * lp + i] = 0.0f;
        continue;
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float* dst = x_s + t * lp + hf * half;
        if (slot == -2) {
          const float* src = TQ_HALF(hf, sinks) + (static_cast<int64_t>(p.sink_slot[row]) * p.sink_tokens + base + t) * half;
          for (int j = tid; j < half; j += kThreads) dst[j] = src[j];
          continue;
        }
        const uint32_t* words = raw_s + t * pw + (hf ? lay.lo_words : 0);
        const int b = TQ_BITS(hf);
        if (b == 0) {
          for (int w = tid; w < half / 2; w += kThreads) {
            const uint32_t u = words[w];
            *reinterpret_cast<float2*>(dst + 2 * w) = make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
          }
        } else {
          const uint8_t* vec = reinterpret_cast<const uint8_t*>(words);
          const float gain = LoadBytesFloat(vec + half * b / 8);
          const float* cb = hf ? cb_hi : cb_lo;
          for (int j = tid; j < half; j += kThreads) dst[j] = gain * cb[LoadCode(vec, j, b)];
        }
      }
    }
    if (base + kTile < hi) plan_tile(base + kTile, buf ^ 1);
    __syncthreads();  // raw_s is free, the next slots are planned
    if (base + kTile < hi) stage_tile(buf ^ 1);
    // Scores: lanes c = 0..3 of a (position, head block) split the latent in interleaved quads.
    if (score_active) {
      // Two independent sums per head (x·x + y·y and z·z + w·w): shorter FMA chains.
      float dot[kHeadBlock] = {0.0f, 0.0f, 0.0f, 0.0f}, dot2[kHeadBlock] = {0.0f, 0.0f, 0.0f, 0.0f};
      const float* xr = x_s + st * lp;
      const float* qr = q_s + shb * kHeadBlock * lp;
#pragma unroll 2
      for (int i = 4 * c; i < latent; i += 16) {
        const float4 xv = *reinterpret_cast<const float4*>(xr + i);
#pragma unroll
        for (int j = 0; j < kHeadBlock; ++j) {
          const float4 qv = *reinterpret_cast<const float4*>(qr + j * lp + i);
          dot[j] = fmaf(qv.x, xv.x, fmaf(qv.y, xv.y, dot[j]));
          dot2[j] = fmaf(qv.z, xv.z, fmaf(qv.w, xv.w, dot2[j]));
        }
      }
#pragma unroll
      for (int j = 0; j < kHeadBlock; ++j) {
        dot[j] += dot2[j];
        dot[j] += __shfl_xor_sync(0xffffffffu, dot[j], 1);
        dot[j] += __shfl_xor_sync(0xffffffffu, dot[j], 2);
      }
      const int h = shb * kHeadBlock + c;
      const bool valid = slot_s[st] != -1;
      const float mine = c == 0 ? dot[0] : c == 1 ? dot[1] : c == 2 ? dot[2] : dot[3];
      if (h < hg) s_s[st * kHg + h] = valid ? mine * p.scale : -INFINITY;
    }
    __syncthreads();
    // Online softmax: 16 lanes per head (one per position), two heads per warp.
    {
      const int h = tid >> 4, t = tid & 15;
      const bool live = h < hg;
      const float sc = live ? s_s[t * kHg + h] : -INFINITY;
      float mx = sc;
#pragma unroll
      for (int o = 8; o >= 1; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = m_s[h];
      const float m_new = fmaxf(m_old, mx);
      const float e = live ? expf(sc - m_new) : 0.0f;  // masked: exp(-inf) = 0
      float sum = e;
#pragma unroll
      for (int o = 8; o >= 1; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      s_s[t * kHg + h] = e;
      if (t == 0) {
        const float alpha = live ? expf(m_old - m_new) : 0.0f;  // m_old = -inf on the first tile: 0
        alpha_s[h] = alpha;
        l_s[h] = live ? l_s[h] * alpha + sum : 0.0f;
        m_s[h] = m_new;
      }
    }
    __syncthreads();
    // Weighted sums of the tile's latents.
#pragma unroll
    for (int k = 0; k < kMaxUnits; ++k) {
      const int u = tid + k * kThreads;
      if (u < units) {
        const int qd = u % quads, hb = u / quads;
        const float4 al = *reinterpret_cast<const float4*>(alpha_s + hb * kHeadBlock);
        const float a4[kHeadBlock] = {al.x, al.y, al.z, al.w};
#pragma unroll
        for (int j = 0; j < kHeadBlock; ++j) {
          acc[k][j].x *= a4[j];
          acc[k][j].y *= a4[j];
          acc[k][j].z *= a4[j];
          acc[k][j].w *= a4[j];
        }
#pragma unroll 4
        for (int t = 0; t < kTile; ++t) {
          const float4 xv = *reinterpret_cast<const float4*>(x_s + t * lp + 4 * qd);
          const float4 pv = *reinterpret_cast<const float4*>(s_s + t * kHg + hb * kHeadBlock);
          const float p4[kHeadBlock] = {pv.x, pv.y, pv.z, pv.w};
#pragma unroll
          for (int j = 0; j < kHeadBlock; ++j) {
            acc[k][j].x = fmaf(p4[j], xv.x, acc[k][j].x);
            acc[k][j].y = fmaf(p4[j], xv.y, acc[k][j].y);
            acc[k][j].z = fmaf(p4[j], xv.z, acc[k][j].z);
            acc[k][j].w = fmaf(p4[j], xv.w, acc[k][j].w);
          }
        }
      }
    }
    __syncthreads();  // x_s, s_s and slot_s are rewritten by the next tile
  }

  // The split's partial results.
  if (tid < hg) {
    ws.ml[(ws_row + static_cast<int64_t>(tid) * p.splits) * 2] = m_s[tid];
    ws.ml[(ws_row + static_cast<int64_t>(tid) * p.splits) * 2 + 1] = l_s[tid];
  }
#pragma unroll
  for (int k = 0; k < kMaxUnits; ++k) {
    const int u = tid + k * kThreads;
    if (u < units) {
      const int qd = u % quads, hb = u / quads;
#pragma unroll
      for (int j = 0; j < kHeadBlock; ++j) {
        const int h = hb * kHeadBlock + j;
        if (h < hg) {
          *reinterpret_cast<float4*>(ws.acc + (ws_row + static_cast<int64_t>(h) * p.splits) * latent + 4 * qd) =
              acc[k][j];
        }
      }
    }
  }
}

#undef TQ_HALF
#undef TQ_BITS

// Sum (or max) over the CTA's threads; every thread gets the result.
template <bool kMax>
__device__ float BlockReduce(float v, float* red) {
  for (int o = 16; o >= 1; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, u) : v + u;
  }
  const int warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  __syncthreads();  // red is reused by consecutive reductions
  if (threadIdx.x % kWarp == 0) red[warp] = v;
  __syncthreads();
  v = red[0];
  for (int w = 1; w < warps; ++w) v = kMax ? fmaxf(v, red[w]) : v + red[w];
  return v;
}

// grid rows · heads, kThreads threads: merges the splits (splits <= kThreads: one per thread),
// divides, applies Rᵀ per packed half, writes the first out_dim values.
__global__ void __launch_bounds__(kThreads) MlaMergeKernel(const MlaAttentionParams p) {
  PdlEnter();
  __shared__ float o_s[2 * kMaxMlaHalfDim];
  __shared__ float w_s[kMaxAttentionSplits];
  __shared__ float red_s[kThreads / kWarp];
  const int half = p.half_dim, latent = 2 * half;
  const int64_t row = blockIdx.x / p.num_heads;
  const int h = static_cast<int>(blockIdx.x % p.num_heads);
  const Workspace ws = SplitWorkspace(p.workspace, p.rows, p.num_heads, p.splits);
  const int64_t entry = (row * p.num_heads + h) * p.splits;
  const int s = threadIdx.x;
  const float m = s < p.splits ? ws.ml[(entry + s) * 2] : -INFINITY;
  const float mx = BlockReduce<true>(m, red_s);
  const float w = m == -INFINITY ? 0.0f : expf(m - mx);
  if (s < p.splits) w_s[s] = w;
  const float total = BlockReduce<false>(s < p.splits ? w * ws.ml[(entry + s) * 2 + 1] : 0.0f, red_s);
  const float inv = 1.0f / total;
  for (int i = threadIdx.x; i < latent; i += blockDim.x) {
    // Four independent sums keep four loads in flight.
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    const float* src = ws.acc + entry * latent + i;
    int k = 0;
    for (; k + 4 <= p.splits; k += 4) {
      a0 = fmaf(w_s[k], src[static_cast<int64_t>(k) * latent], a0);
      a1 = fmaf(w_s[k + 1], src[static_cast<int64_t>(k + 1) * latent], a1);
      a2 = fmaf(w_s[k + 2], src[static_cast<int64_t>(k + 2) * latent], a2);
      a3 = fmaf(w_s[k + 3], src[static_cast<int64_t>(k + 3) * latent], a3);
    }
    for (; k < p.splits; ++k) a0 = fmaf(w_s[k], src[static_cast<int64_t>(k) * latent], a0);
    o_s[i] = ((a0 + a1) + (a2 + a3)) * inv;
  }
  // Rᵀ = D1·H·D2 / divisor per packed half (quant::KvRotation::Inverse).
  for (int hf = 0; hf < 2; ++hf) {
    if ((hf ? p.hi.format.kind : p.lo.format.kind) == KvVectorKind::kBf16) continue;
    const float* signs = hf ? p.hi.format.signs : p.lo.format.signs;
    const float divisor = hf ? p.hi.format.divisor : p.lo.format.divisor;
    __syncthreads();
    if (signs != nullptr) {
      for (int i = threadIdx.x; i < half; i += blockDim.x) o_s[hf * half + i] *= signs[half + i];
    }
    BlockFwhtShared(o_s + hf * half, 1, half, half);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      float x = o_s[hf * half + i] / divisor;
      if (signs != nullptr) x = x * signs[i];
      o_s[hf * half + i] = x;
    }
  }
  __syncthreads();
  float* out = p.out + row * p.ldo + static_cast<int64_t>(h) * p.out_dim;
  for (int i = threadIdx.x; i < p.out_dim; i += blockDim.x) out[i] = o_s[i];
}

// One CTA (kWriterThreads) per row: the half in shared memory, R·(x/n) by the butterflies of
// quant::FwhtInPlace per block, buckets, the corrected gain, the packed bytes.
constexpr int kWriterThreads = 128;

__device__ double BlockSumDouble(double v, double* red) {
  for (int o = 16; o >= 1; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % kWarp == 0) red[threadIdx.x / kWarp] = v;
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < kWriterThreads / kWarp; ++w) s += red[w];
  return s;
}

__global__ void __launch_bounds__(kWriterThreads)
    WriteLatentHalfPolarKernel(const float* __restrict__ x, int64_t ld, int half, const int64_t* __restrict__ slots,
                               const KvPolarEncoder enc, uint8_t* __restrict__ cache, int64_t stride) {
  PdlEnter();
  __shared__ float y[kMaxMlaHalfDim];
  __shared__ uint8_t idx[kMaxMlaHalfDim];
  __shared__ double red[kWriterThreads / kWarp];
  const int64_t row = blockIdx.x;
  const float* v = x + row * ld;
  double ss = 0.0;
  for (int i = threadIdx.x; i < half; i += kWriterThreads) {
    const float a = v[i];
    y[i] = a;
    ss += static_cast<double>(a) * a;
  }
  const float n = static_cast<float>(sqrt(BlockSumDouble(ss, red)));
  const float div = n > 0.0f ? n : 1.0f;
  for (int i = threadIdx.x; i < half; i += kWriterThreads) {
    float u = y[i] / div;
    if (enc.signs != nullptr) u = u * enc.signs[i];
    y[i] = u;
  }
  BlockFwhtShared(y, 1, half, half);
  double cs = 0.0;
  for (int i = threadIdx.x; i < half; i += kWriterThreads) {
    float r = y[i] / enc.divisor;
    if (enc.signs != nullptr) r = r * enc.signs[half + i];
    // idx = the number of boundaries below r (sorted: a binary search; NaN compares false -> 0).
    int lo = 0, top = (1 << enc.bits) - 1;
    while (lo < top) {
      const int mid = (lo + top) / 2;
      const float bd = enc.boundaries[mid];
      if (enc.ties_up ? bd <= r : bd < r) {
        lo = mid + 1;
      } else {
        top = mid;
      }
    }
    idx[i] = static_cast<uint8_t>(lo);
    const float c = enc.centroids[lo];
    cs += static_cast<double>(c) * c;
  }
  const float cn = static_cast<float>(sqrt(BlockSumDouble(cs, red)));  // its barriers publish idx
  const float g = cn > 0.0f ? n / cn : n;
  uint8_t* dst = cache + slots[row] * stride;
  const int bits = enc.bits, code_bytes = half * bits / 8;
  for (int k = threadIdx.x; k < code_bytes; k += kWriterThreads) {
    uint32_t byte = 0;
    for (int b = 0; b < 8; ++b) {
      const int bit = 8 * k + b;
      byte |= ((static_cast<uint32_t>(idx[bit / bits]) >> (bit % bits)) & 1u) << b;
    }
    dst[k] = static_cast<uint8_t>(byte);
  }
  if (threadIdx.x < 4) dst[code_bytes + threadIdx.x] = static_cast<uint8_t>(__float_as_uint(g) >> (8 * threadIdx.x));
}

__global__ void __launch_bounds__(kWriterThreads)
    WriteLatentHalfSinksKernel(const float* __restrict__ x, int64_t ld, int half, const int32_t* __restrict__ positions,
                               const int32_t* __restrict__ sink_slot, int sink_tokens, const float* __restrict__ signs,
                               float divisor, float* __restrict__ store) {
  PdlEnter();
  __shared__ float y[kMaxMlaHalfDim];
  const int64_t row = blockIdx.x;
  const int pos = positions[row];
  if (pos < 0 || pos >= sink_tokens) return;  // CTA-uniform
  const float* v = x + row * ld;
  for (int i = threadIdx.x; i < half; i += kWriterThreads) {
    float a = __bfloat162float(__float2bfloat16_rn(v[i]));  // the CPU's bf16 sink store
    if (signs != nullptr && divisor > 0.0f) a = a * signs[i];
    y[i] = a;
  }
  if (divisor > 0.0f) {  // the attention space: R·x (kv_quant.h KvRotation::Forward)
    BlockFwhtShared(y, 1, half, half);
    for (int i = threadIdx.x; i < half; i += kWriterThreads) {
      float a = y[i] / divisor;
      if (signs != nullptr) a = a * signs[half + i];
      y[i] = a;
    }
  }
  __syncthreads();
  float* dst = store + (static_cast<int64_t>(sink_slot[row]) * sink_tokens + pos) * half;
  for (int i = threadIdx.x; i < half; i += kWriterThreads) dst[i] = y[i];
}

bool ValidHalf(const MlaLatentHalf& h, int half_dim, int sink_tokens) {
  const KvVectorFormat& f = h.format;
  if (f.kind == KvVectorKind::kPolar) {
    if (!(f.bits == 2 || f.bits == 3 || f.bits == 4 || f.bits == 8) || f.codebook == nullptr || !(f.divisor > 0.0f)) {
      return false;
    }
  } else if (f.kind != KvVectorKind::kBf16) {
    return false;
  }
  if (h.cache == nullptr || h.stride < HalfBytes(f, half_dim) || h.stride % 4 != 0 ||
      reinterpret_cast<uintptr_t>(h.cache) % 4 != 0) {
    return false;
  }
  return sink_tokens == 0 || h.sinks != nullptr;
}

}  // namespace

int PlanMlaAttentionSplits(int64_t rows, int num_heads, int64_t max_context, int multiprocessors) {
  const int64_t groups = (std::max(1, num_heads) + kHg - 1) / kHg;
  const int64_t units = std::max<int64_t>(1, rows * groups);
  const int64_t want = (4 * std::max(1, multiprocessors) + units - 1) / units;
  const int64_t most = std::max<int64_t>(1, max_context / kMinSplitPositions);
  return static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(most, kMaxAttentionSplits)));
}

size_t MlaAttentionWorkspaceBytes(int64_t rows, int num_heads, int latent_dim, int splits) {
  return static_cast<size_t>(rows) * num_heads * splits * (latent_dim + 2) * sizeof(float);
}

const char* MlaAttentionUnsupportedReason(const MlaAttentionParams& p) {
  if (p.half_dim < 16 || p.half_dim > kMaxMlaHalfDim || p.half_dim % 16 != 0) {
    return "half_dim must be a multiple of 16 in [16, 512]";
  }
  if (p.rows < 0 || p.rows > 65535 || p.num_heads <= 0) return "rows must be in [0, 65535] and num_heads positive";
  if (p.splits < 1 || p.splits > kMaxAttentionSplits) return "splits must be in [1, kMaxAttentionSplits]";
  if (p.block_size <= 0) return "block_size must be positive";
  if (p.out_dim < 1 || p.out_dim > 2 * p.half_dim) return "out_dim must be in [1, latent_dim]";
  if (p.sink_tokens < 0 || (p.sink_tokens > 0 && p.sink_slot == nullptr)) return "sinks need sink_slot";
  if (!ValidHalf(p.lo, p.half_dim, p.sink_tokens) || !ValidHalf(p.hi, p.half_dim, p.sink_tokens)) {
    return "each half needs a 4-byte aligned cache, a stride of at least its vector bytes and a multiple of 4, bf16 or 2/3/4/8-bit PolarQuant with a "
           "codebook and a positive divisor, and sink stores when sink_tokens > 0";
  }
  const int latent = 2 * p.half_dim;
  if (p.ldq < static_cast<int64_t>(p.num_heads) * latent || p.ldo < static_cast<int64_t>(p.num_heads) * p.out_dim) {
    return "ldq / ldo too small for num_heads heads";
  }
  if (p.rows > 0 && (p.q == nullptr || p.out == nullptr || p.block_table == nullptr || p.table_offset == nullptr ||
                     p.positions == nullptr || p.workspace == nullptr)) {
    return "a required pointer is null";
  }
  if (p.workspace_bytes < MlaAttentionWorkspaceBytes(p.rows, p.num_heads, latent, p.splits)) {
    return "workspace_bytes below MlaAttentionWorkspaceBytes";
  }
  if (reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0 || reinterpret_cast<uintptr_t>(p.q) % 16 != 0 ||
      p.ldq % 4 != 0) {
    return "q and workspace must be 16-byte aligned and ldq a multiple of 4";
  }
  return nullptr;
}

cudaError_t MlaAttention(const MlaAttentionParams& p, cudaStream_t stream) {
  if (MlaAttentionUnsupportedReason(p) != nullptr) return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  const size_t smem = MakeLayout(p.half_dim, HalfBytes(p.lo.format, p.half_dim), HalfBytes(p.hi.format, p.half_dim)).bytes;
  static const cudaError_t attr =
      cudaFuncSetAttribute(MlaSplitKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(MakeLayout(kMaxMlaHalfDim, 4 * kMaxMlaHalfDim, 4 * kMaxMlaHalfDim).bytes));
  if (attr != cudaSuccess) return attr;
  const dim3 grid(p.splits, (p.num_heads + kHg - 1) / kHg, static_cast<unsigned>(p.rows));
  cudaError_t e = LaunchKernel(MlaSplitKernel, grid, dim3(kThreads), smem, stream, p);
  if (e != cudaSuccess) return e;
  e = LaunchKernel(MlaMergeKernel, dim3(static_cast<unsigned>(p.rows * p.num_heads)), dim3(kThreads), 0,
                   stream, p);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

cudaError_t WriteLatentHalfPolar(const float* x, int64_t ld, int64_t rows, int half_dim, const int64_t* slots,
                                 const KvPolarEncoder& enc, uint8_t* cache, int64_t stride, cudaStream_t stream) {
  const bool bits_ok = enc.bits == 2 || enc.bits == 3 || enc.bits == 4 || enc.bits == 8;
  if (rows < 0 || half_dim < 16 || half_dim > kMaxMlaHalfDim || half_dim % 16 != 0 || !bits_ok || ld < half_dim ||
      !(enc.divisor > 0.0f) || stride < static_cast<int64_t>(half_dim) * enc.bits / 8 + 4) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  if (x == nullptr || slots == nullptr || cache == nullptr || enc.centroids == nullptr || enc.boundaries == nullptr) {
    return cudaErrorInvalidValue;
  }
  const cudaError_t e = LaunchKernel(WriteLatentHalfPolarKernel, dim3(static_cast<unsigned>(rows)),
                                     dim3(kWriterThreads), 0, stream, x, ld, half_dim, slots, enc, cache, stride);
  return e != cudaSuccess ? e : cudaGetLastError();
}

cudaError_t WriteLatentHalfSinks(const float* x, int64_t ld, int64_t rows, int half_dim, const int32_t* positions,
                                 const int32_t* sink_slot, int sink_tokens, const float* signs, float divisor,
                                 float* store, cudaStream_t stream) {
  if (rows < 0 || half_dim < 16 || half_dim > kMaxMlaHalfDim || half_dim % 16 != 0 || sink_tokens < 0 ||
      ld < half_dim || divisor < 0.0f || (signs != nullptr && divisor == 0.0f)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0 || sink_tokens == 0) return cudaSuccess;
  if (x == nullptr || positions == nullptr || sink_slot == nullptr || store == nullptr) return cudaErrorInvalidValue;
  const cudaError_t e =
      LaunchKernel(WriteLatentHalfSinksKernel, dim3(static_cast<unsigned>(rows)), dim3(kWriterThreads), 0, stream, x,
                   ld, half_dim, positions, sink_slot, sink_tokens, signs, divisor, store);
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace tq::cuda
