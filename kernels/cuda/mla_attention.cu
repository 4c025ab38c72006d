// MLA decode attention over a bf16 or packed latent cache. Contract: kernels/cuda/mla_attention.h.
#include "kernels/cuda/mla_attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/polar_bucket.cuh"

namespace tq::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kTile = 16;                  // positions decoded per step
constexpr int kHg = kMlaHeadsPerCta;       // query heads per CTA
constexpr int kHeadBlock = 4;              // heads per thread in the score and sum loops
constexpr int kMaxLatent = 2 * kMaxMlaPartDim;
// Sum units (4 latent values × 4 heads) per thread at the largest latent and group.
constexpr int kMaxUnits = (kMaxLatent / 4) * (kHg / kHeadBlock) / kThreads;
constexpr int kMinSplitPositions = 64;
constexpr int kMaxCodebook = 256;

// fp32 row stride of the query and tile arrays in shared memory: ≡ 16 (mod 32) floats, so the
// eight lanes of a 16-byte access phase (two positions × four column quads) hit distinct banks.
__host__ __device__ constexpr int PaddedLatent(int latent) { return (latent + 31) / 32 * 32 + 16; }

// Code widths of a packed part (8 bits: the plugin presets' boundary-layer keys' codec).
__host__ __device__ constexpr bool PackedBitsSupported(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

__host__ __device__ inline int FormatBits(const KvVectorFormat& f) {
  return f.kind == KvVectorKind::kBf16 ? 0 : f.bits;
}

__host__ __device__ inline int64_t PartBytes(const KvVectorFormat& f, int d) {
  return f.kind == KvVectorKind::kBf16 ? 2 * static_cast<int64_t>(d) : static_cast<int64_t>(d) * f.bits / 8 + 4;
}

// The largest power of two dividing d (quant::KvRotationBlock).
__host__ __device__ inline int RotationBlock(int d) { return d & -d; }

// The weighted sums a split forms: lo's values when the output needs no more, else the latent's.
__host__ __device__ inline int SumDim(const MlaAttentionParams& p) {
  return p.out_dim <= p.lo_dim ? p.lo_dim : p.lo_dim + p.hi_dim;
}

struct SmemLayout {
  int lp;                                   // padded latent stride (floats)
  int lo_words, hi_words;                   // 4-byte words of one stored part vector
  size_t q, x, s, alpha, m, l, cb_lo, cb_hi, slot, raw, red, ph, qmul, gain, bytes;  // offsets in floats; bytes
};

// stages: tiles of stored bytes in flight (the tensor-core kernel stages two ahead).
__host__ __device__ inline SmemLayout MakeLayout(int latent, int lo_bytes, int hi_bytes, int stages) {
  SmemLayout s;
  s.lp = PaddedLatent(latent);
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
  s.slot = s.cb_hi + kMaxCodebook;                      // [3][kTile] int64 (tiles in flight and planned)
  s.raw = s.slot + 3 * 2 * kTile;                       // [stages][kTile][lo_words + hi_words] stored bytes
  // Tensor-core kernel: partial scores of the 4 k-quarters, the fp16 weights of both parts
  // ([2][16][24]), the heads' query scales, the tile's gains ([2][kTile]).
  s.red = s.raw + static_cast<size_t>(stages) * kTile * (s.lo_words + s.hi_words);
  s.ph = s.red + 4 * kHg * kTile;
  s.qmul = s.ph + 2 * kHg * 24 / 2;
  s.gain = s.qmul + kHg;
  s.bytes = (s.gain + 2 * kTile) * sizeof(float);
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

// R·v, or Rᵀ·v when `inverse`, in place for `count` vectors of d values `stride` floats apart, all
// threads of the CTA, with the float operations of quant::KvRotation::Forward / Inverse:
// R = D2·H·D1 / divisor (signs: D1 then D2, 2·d floats, or null for plain H). Ends with a barrier.
__device__ __forceinline__ void RotateShared(float* v, int count, int stride, int d, const float* signs, float divisor,
                             bool inverse) {
  const float* first = signs == nullptr ? nullptr : inverse ? signs + d : signs;
  const float* last = signs == nullptr ? nullptr : inverse ? signs : signs + d;
  if (first != nullptr) {
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
      const float sg = first[i];
      for (int vec = 0; vec < count; ++vec) v[static_cast<size_t>(vec) * stride + i] *= sg;
    }
  }
  BlockFwhtShared(v, count, stride, d);  // its first barrier publishes the signs' products
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float sg = last != nullptr ? last[i] : 1.0f;
    for (int vec = 0; vec < count; ++vec) {
      float y = v[static_cast<size_t>(vec) * stride + i] / divisor;
      if (last != nullptr) y = y * sg;
      v[static_cast<size_t>(vec) * stride + i] = y;
    }
  }
  __syncthreads();
}

__device__ __forceinline__ float LoadBytesFloat(const uint8_t* p) {
  const uint32_t u = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                     (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
  return __uint_as_float(u);
}

// The 8 codes of group g (codes 8g .. 8g + 7) of a packed vector of b-bit codes: b bytes from
// byte b·g, code i at bits b·i.
__device__ __forceinline__ uint64_t LoadCodeGroup(const uint8_t* __restrict__ vec, int g, int b) {
  const uint8_t* src = vec + b * g;
  uint64_t w = 0;
  for (int k = 0; k < b; ++k) w |= static_cast<uint64_t>(src[k]) << (8 * k);
  return w;
}

// Partial results of one split: m and l per head, the weighted latent sums (attention space).
struct Workspace {
  float* ml;   // [rows, heads, splits, 2]
  float* acc;  // [rows, heads, splits, SumDim]
};

__host__ __device__ inline Workspace SplitWorkspace(float* base, int64_t rows, int heads, int splits) {
  Workspace w;
  w.ml = base;
  w.acc = base + rows * heads * splits * 2;
  return w;
}

// What both split kernels share: the CTA's split range, head group and shared arrays; the
// staging of a tile's stored bytes; the queries' rotation; the partial results' write.
struct SplitCta {
  int lo_dim, hi_dim, latent, sum_dim, lp, pw, lo_words;
  int64_t row, lo, hi, ws_row;
  int h0, hg, bits_lo, bits_hi;
  float *q_s, *x_s, *s_s, *alpha_s, *m_s, *l_s, *cb_lo, *cb_hi;
  int64_t* slots_s;  // [3][kTile]
  uint32_t* raw_s;   // [stages][kTile][lo_words + hi_words]
  Workspace ws;
};

// Fields of part hf by selection (indexing an array of the parameter's parts would copy the
// parameters to local memory); its width and its first value's index in the latent.
#define TQ_PART(hf, field) ((hf) ? p.hi.field : p.lo.field)
#define TQ_BITS(hf) ((hf) ? c.bits_hi : c.bits_lo)
#define TQ_DIM(hf) ((hf) ? c.hi_dim : c.lo_dim)
#define TQ_OFF(hf) ((hf) ? c.lo_dim : 0)

__device__ __forceinline__ SplitCta MakeSplitCta(const MlaAttentionParams& p, float* smem, int stages) {
  SplitCta c;
  c.lo_dim = p.lo_dim;
  c.hi_dim = p.hi_dim;
  c.latent = c.lo_dim + c.hi_dim;
  c.sum_dim = SumDim(p);
  const SmemLayout lay = MakeLayout(c.latent, PartBytes(p.lo.format, c.lo_dim), PartBytes(p.hi.format, c.hi_dim), stages);
  c.lp = lay.lp;
  c.pw = lay.lo_words + lay.hi_words;
  c.lo_words = lay.lo_words;
  c.q_s = smem + lay.q;
  c.x_s = smem + lay.x;
  c.s_s = smem + lay.s;
  c.alpha_s = smem + lay.alpha;
  c.m_s = smem + lay.m;
  c.l_s = smem + lay.l;
  c.cb_lo = smem + lay.cb_lo;
  c.cb_hi = smem + lay.cb_hi;
  c.slots_s = reinterpret_cast<int64_t*>(smem + lay.slot);
  c.raw_s = reinterpret_cast<uint32_t*>(smem + lay.raw);
  c.row = blockIdx.z;
  c.h0 = blockIdx.y * kHg;
  c.hg = min(kHg, p.num_heads - c.h0);
  c.bits_lo = FormatBits(p.lo.format);
  c.bits_hi = FormatBits(p.hi.format);
  const int64_t n = static_cast<int64_t>(p.positions[c.row]) + 1;
  int64_t chunk = (n + p.splits - 1) / p.splits;
  if (chunk < kMinSplitPositions) chunk = kMinSplitPositions;
  chunk = (chunk + kTile - 1) / kTile * kTile;
  c.lo = static_cast<int64_t>(blockIdx.x) * chunk;
  c.hi = n < c.lo + chunk ? n : c.lo + chunk;
  c.ws_row = (c.row * p.num_heads + c.h0) * p.splits + blockIdx.x;  // head h0's entry
  c.ws = SplitWorkspace(p.workspace, p.rows, p.num_heads, p.splits);
  return c;
}

// Step k of a tile's decode loop (k < kTile · latent / 8): 8 values, group g of part hf of
// position t.
struct TileGroup {
  int t, hf, g;
};
__device__ __forceinline__ TileGroup TileGroupAt(const SplitCta& c, int k) {
  const int lo_groups = c.lo_dim / 8, per_pos = c.latent / 8;
  TileGroup x;
  x.t = k / per_pos;
  const int rem = k - x.t * per_pos;
  x.hf = rem >= lo_groups;
  x.g = rem - (x.hf ? lo_groups : 0);
  return x;
}

// The stored bytes of part hf of position t in a staged tile (stage: raw_s of that stage).
__device__ __forceinline__ const uint32_t* StagedPart(const SplitCta& c, const uint32_t* stage, int t, int hf) {
  return stage + t * c.pw + (hf ? c.lo_words : 0);
}

// The centroids of the 8 codes of group g of a stored b-bit vector; its gain.
__device__ __forceinline__ void Centroids8(const uint32_t* vec, int g, int b, const float* cb, float (&v)[8]) {
  const uint64_t w = LoadCodeGroup(reinterpret_cast<const uint8_t*>(vec), g, b);
  const uint32_t mask = (1u << b) - 1u;
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = cb[static_cast<uint32_t>(w >> (b * i)) & mask];
}
__device__ __forceinline__ float StoredGain(const uint32_t* vec, int dim, int b) {
  return LoadBytesFloat(reinterpret_cast<const uint8_t*>(vec) + dim * b / 8);
}

// The split's softmax state (m, l per head of the group) to the workspace.
__device__ __forceinline__ void WriteSoftmaxState(const MlaAttentionParams& p, const SplitCta& c) {
  if (threadIdx.x < c.hg) {
    c.ws.ml[(c.ws_row + static_cast<int64_t>(threadIdx.x) * p.splits) * 2] = c.m_s[threadIdx.x];
    c.ws.ml[(c.ws_row + static_cast<int64_t>(threadIdx.x) * p.splits) * 2 + 1] = c.l_s[threadIdx.x];
  }
}

// An empty split (the row is shorter than the planned splits): m = -inf, l = 0, zero sums.
__device__ __forceinline__ void WriteEmptySplit(const MlaAttentionParams& p, const SplitCta& c) {
  for (int h = threadIdx.x; h < c.hg; h += kThreads) {
    c.ws.ml[(c.ws_row + static_cast<int64_t>(h) * p.splits) * 2] = -INFINITY;
    c.ws.ml[(c.ws_row + static_cast<int64_t>(h) * p.splits) * 2 + 1] = 0.0f;
  }
  for (int64_t e = threadIdx.x; e < static_cast<int64_t>(c.hg) * c.sum_dim; e += kThreads) {
    c.ws.acc[(c.ws_row + (e / c.sum_dim) * p.splits) * c.sum_dim + e % c.sum_dim] = 0.0f;
  }
}

// The slots of the tile at `base` (-1: past the split; -2: a sink, read from the side store),
// by threads < kTile, into slots_s[buf].
__device__ __forceinline__ void PlanTile(const MlaAttentionParams& p, const SplitCta& c, int64_t base, int buf) {
  if (threadIdx.x < kTile) {
    const int64_t pos = base + threadIdx.x;
    int64_t slot = -1;
    if (pos < c.hi) {
      if (pos < p.sink_tokens) {
        slot = -2;
      } else {
        const int32_t blk = p.block_table[p.table_offset[c.row] + pos / p.block_size];
        slot = static_cast<int64_t>(blk) * p.block_size + pos % p.block_size;
      }
    }
    c.slots_s[buf * kTile + threadIdx.x] = slot;
  }
}

// The stored bytes of the tile planned in slots_s[buf] into stage `stage` of raw_s (cp.async,
// 4-byte words; strides and cache pointers are 4-byte aligned), one commit group (empty when no
// slot is stored): in flight while earlier tiles compute.
__device__ __forceinline__ void StageTile(const MlaAttentionParams& p, const SplitCta& c, int buf, int stage) {
  uint32_t* raw = c.raw_s + stage * kTile * c.pw;
  for (int t = 0; t < kTile; ++t) {
    const int64_t slot = c.slots_s[buf * kTile + t];
    if (slot < 0) continue;  // uniform across the CTA
    const uint8_t* lo_src = p.lo.cache + slot * p.lo.stride;
    const uint8_t* hi_src = p.hi.cache + slot * p.hi.stride;
    for (int w = threadIdx.x; w < c.pw; w += kThreads) {
      const uint8_t* src = w < c.lo_words ? lo_src + 4 * w : hi_src + 4 * (w - c.lo_words);
      CpAsync4(raw + t * c.pw + w, src);
    }
  }
  asm volatile("cp.async.commit_group;\n" ::);
}

// The group's queries into q_s (fp32), each packed part rotated into its attention space (R q);
// rows past the group are zero. latent / 4 <= kThreads: one column quad per thread, its 16 loads
// issued together. Also the codebooks and the softmax state. Ends with a barrier.
__device__ __forceinline__ void LoadQueries(const MlaAttentionParams& p, const SplitCta& c) {
  const int tid = threadIdx.x, lp = c.lp;
  if (tid < c.latent / 4) {
    float4 v[kHg];
#pragma unroll
    for (int h = 0; h < kHg; ++h) {
      v[h] = h < c.hg ? reinterpret_cast<const float4*>(p.q + c.row * p.ldq +
                                                        static_cast<int64_t>(c.h0 + h) * c.latent)[tid]
                      : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int h = 0; h < kHg; ++h) *reinterpret_cast<float4*>(c.q_s + h * lp + 4 * tid) = v[h];
  }
  if (tid < kHg) {
    c.m_s[tid] = -INFINITY;
    c.l_s[tid] = 0.0f;
  }
  for (int hf = 0; hf < 2; ++hf) {
    if (TQ_BITS(hf) == 0) continue;
    const int entries = 1 << TQ_BITS(hf);
    const float* codebook = TQ_PART(hf, format.codebook);
    float* cb = hf ? c.cb_hi : c.cb_lo;
    for (int k = tid; k < entries; k += kThreads) cb[k] = codebook[k];
    __syncthreads();  // the queries are in q_s
    RotateShared(c.q_s + TQ_OFF(hf), c.hg, lp, TQ_DIM(hf), TQ_PART(hf, format.signs), TQ_PART(hf, format.divisor),
                 false);
  }
  __syncthreads();
}

// grid (splits, head groups, rows), kThreads threads.
__global__ void __launch_bounds__(kThreads, 2) MlaSplitKernel(const MlaAttentionParams p) {
  PdlEnter();
  extern __shared__ float4 smem4[];
  const SplitCta c = MakeSplitCta(p, reinterpret_cast<float*>(smem4), 1);
  if (c.lo >= c.hi) {
    WriteEmptySplit(p, c);
    return;
  }
  const int latent = c.latent, lp = c.lp, hg = c.hg, tid = threadIdx.x;
  const int64_t row = c.row, lo = c.lo, hi = c.hi, ws_row = c.ws_row;
  float *q_s = c.q_s, *x_s = c.x_s, *s_s = c.s_s, *alpha_s = c.alpha_s, *m_s = c.m_s, *l_s = c.l_s;
  const float *cb_lo = c.cb_lo, *cb_hi = c.cb_hi;
  const int64_t* slots_s = c.slots_s;
  const uint32_t* raw_s = c.raw_s;
  const Workspace ws = c.ws;
  // The first tile's copies fly while the queries are prepared.
  PlanTile(p, c, lo, 0);
  __syncthreads();
  StageTile(p, c, 0, 0);
  LoadQueries(p, c);

  // Score mapping: thread = (position t, block of four heads, column-quad phase cq).
  const int cq = tid & 3, su = tid >> 2;
  const int st = su % kTile, shb = su / kTile;
  const bool score_active = shb * kHeadBlock < hg;  // warp-uniform (a warp covers one head block)
  // Sum mapping: unit = (column quad, head block); thread tid takes units tid + kThreads·k.
  const int quads = c.sum_dim / 4, head_blocks = (hg + kHeadBlock - 1) / kHeadBlock;
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
    // Decode the tile into the attention space, 8 values per step: bf16 from 4 words, or
    // gain × centroid of 8 codes (b bytes).
    {
      for (int k = tid; k < kTile * latent / 8; k += kThreads) {
        const auto [t, hf, g] = TileGroupAt(c, k);
        const int dim = TQ_DIM(hf);
        const int64_t slot = slot_s[t];
        float v[8];
        if (slot == -1) {  // past the split: zeros (scored -inf, weighted 0)
#pragma unroll
          for (int i = 0; i < 8; ++i) v[i] = 0.0f;
        } else if (slot == -2) {
          const float* src =
              TQ_PART(hf, sinks) + (static_cast<int64_t>(p.sink_slot[row]) * p.sink_tokens + base + t) * dim + 8 * g;
#pragma unroll
          for (int i = 0; i < 8; ++i) v[i] = src[i];
        } else {
          const uint32_t* words = StagedPart(c, raw_s, t, hf);
          const int b = TQ_BITS(hf);
          if (b == 0) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const uint32_t u = words[4 * g + i];
              v[2 * i] = __uint_as_float(u << 16);
              v[2 * i + 1] = __uint_as_float(u & 0xffff0000u);
            }
          } else {
            const float gain = StoredGain(words, dim, b);
            Centroids8(words, g, b, hf ? cb_hi : cb_lo, v);
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] = gain * v[i];
          }
        }
        float4* dst = reinterpret_cast<float4*>(x_s + t * lp + TQ_OFF(hf) + 8 * g);
        dst[0] = make_float4(v[0], v[1], v[2], v[3]);
        dst[1] = make_float4(v[4], v[5], v[6], v[7]);
      }
    }
    if (base + kTile < hi) PlanTile(p, c, base + kTile, buf ^ 1);
    __syncthreads();  // raw_s is free, the next slots are planned
    if (base + kTile < hi) StageTile(p, c, buf ^ 1, 0);
    // Scores: lanes cq = 0..3 of a (position, head block) split the latent in interleaved quads.
    if (score_active) {
      // Two independent sums per head (x·x + y·y and z·z + w·w): shorter FMA chains.
      float dot[kHeadBlock] = {0.0f, 0.0f, 0.0f, 0.0f}, dot2[kHeadBlock] = {0.0f, 0.0f, 0.0f, 0.0f};
      const float* xr = x_s + st * lp;
      const float* qr = q_s + shb * kHeadBlock * lp;
#pragma unroll 2
      for (int i = 4 * cq; i < latent; i += 16) {
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
      const int h = shb * kHeadBlock + cq;
      const bool valid = slot_s[st] != -1;
      const float mine = cq == 0 ? dot[0] : cq == 1 ? dot[1] : cq == 2 ? dot[2] : dot[3];
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
  WriteSoftmaxState(p, c);
#pragma unroll
  for (int k = 0; k < kMaxUnits; ++k) {
    const int u = tid + k * kThreads;
    if (u < units) {
      const int qd = u % quads, hb = u / quads;
#pragma unroll
      for (int j = 0; j < kHeadBlock; ++j) {
        const int h = hb * kHeadBlock + j;
        if (h < hg) {
          *reinterpret_cast<float4*>(ws.acc + (ws_row + static_cast<int64_t>(h) * p.splits) * c.sum_dim + 4 * qd) =
              acc[k][j];
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor cores (a packed part): a 16-head × 16-position tile is one m16n8k16 problem per 16
// latent values for the scores and per 8 latent values for the sums. fp16 operands: the queries
// scaled per head by a power of two into [0.5, 1), the centroids (gains kept out, applied to the
// fp32 scores) or a bf16 part's values as fp16 (gain 1; exact within fp16's normal range, clamped
// to ±65504 beyond), and softmax weight × gain / the largest gain so far (in [0, 1]).

constexpr int kMaxNt = kMaxLatent / 8 / (kThreads / kWarp);  // sum n-tiles per warp at the widest sums
constexpr int kPhStride = 24;                                 // halves per row of the weights

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const __half* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void LdMatrixX2(uint32_t (&r)[2], const __half* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
}
__device__ __forceinline__ void LdMatrixX2Trans(uint32_t (&r)[2], const __half* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
}
__device__ __forceinline__ uint32_t PackHalf2(float a, float b) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Two bf16 values (low half first) as fp16, clamped to fp16's largest finite value.
__device__ __forceinline__ uint32_t Bf16PairToHalf2(uint32_t u) {
  constexpr float kMax = 65504.0f;
  const float a = fminf(fmaxf(__uint_as_float(u << 16), -kMax), kMax);
  const float b = fminf(fmaxf(__uint_as_float(u & 0xffff0000u), -kMax), kMax);
  return PackHalf2(a, b);
}

// c += A·B, m16n8k16, fp16 operands, fp32 accumulators (fragments as the PTX ISA's figures).
__device__ __forceinline__ void Mma16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// grid (splits, head groups, rows), kThreads threads; SumDim <= 64 · kNt (kNt sum n-tiles of 8
// values per warp).
template <int kNt>
__global__ void __launch_bounds__(kThreads, 2) MlaTcSplitKernel(const MlaAttentionParams p) {
  PdlEnter();
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const SplitCta c = MakeSplitCta(p, smem, 2);
  if (c.lo >= c.hi) {
    WriteEmptySplit(p, c);
    return;
  }
  const SmemLayout lay = MakeLayout(c.latent, PartBytes(p.lo.format, c.lo_dim), PartBytes(p.hi.format, c.hi_dim), 2);
  const int latent = c.latent, hg = c.hg, tid = threadIdx.x;
  const int lane = tid % kWarp, warp = tid / kWarp;
  const int xs = latent + 8;                            // fp16 row stride of the query and tile arrays
  __half* qh = reinterpret_cast<__half*>(c.x_s);        // [kHg][xs] queries (the fp32 tile's space)
  __half* xh = reinterpret_cast<__half*>(c.q_s);        // [kTile][xs] centroids (the fp32 queries' space)
  float* red = smem + lay.red;                          // [4][kHg][kTile]
  __half* ph = reinterpret_cast<__half*>(smem + lay.ph);  // [2][kHg][kPhStride]
  float* qmul = smem + lay.qmul;                        // [kHg]
  float* gain_s = smem + lay.gain;                      // [2][kTile]
  // Two tiles in flight from the start (slots planned two tiles ahead, stored bytes staged two
  // ahead in two stages).
  PlanTile(p, c, c.lo, 0);
  PlanTile(p, c, c.lo + kTile, 1);
  __syncthreads();
  StageTile(p, c, 0, 0);
  StageTile(p, c, 1, 1);
  LoadQueries(p, c);
  // Per head: scale by 2^-e into [0.5, 1) (exact), fp16; warp w takes heads 2w and 2w + 1.
  for (int h = 2 * warp; h < 2 * warp + 2; ++h) {
    float big = 0.0f;
    if (h < hg) {
      for (int i = lane; i < latent; i += kWarp) big = fmaxf(big, fabsf(c.q_s[h * c.lp + i]));
    }
    for (int o = 16; o >= 1; o >>= 1) big = fmaxf(big, __shfl_xor_sync(0xffffffffu, big, o));
    int e = 0;
    if (big > 0.0f && big <= 3.0e38f) (void)frexpf(big, &e);
    const float down = ldexpf(1.0f, -e);
    if (lane == 0) qmul[h] = ldexpf(1.0f, e);
    for (int i = lane; i < latent; i += kWarp) {
      qh[h * xs + i] = __float2half_rn(h < hg ? c.q_s[h * c.lp + i] * down : 0.0f);
    }
  }
  __syncthreads();  // q_s is dead: its space holds the tiles from here

  const int k16 = latent / 16, nt8 = c.sum_dim / 8;
  const int snt = warp & 1, kq = warp >> 1;  // scores: this warp's 8 positions and k-quarter
  const int r = lane / 4, q2 = 2 * (lane % 4);  // fragment row (head) and column pair
  float acc[kNt][4];
#pragma unroll
  for (int j = 0; j < kNt; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
  float gm_lo = 0.0f, gm_hi = 0.0f;  // the largest gain so far per part (CTA-uniform)

  int k = 0;
  for (int64_t base = c.lo; base < c.hi; base += kTile, ++k) {
    const int sb = k % 3, stage = k & 1;
    asm volatile("cp.async.wait_group 1;\n" ::);  // this tile's group is complete (the next may fly)
    __syncthreads();
    const int64_t* slot_s = c.slots_s + sb * kTile;
    const uint32_t* raw = c.raw_s + stage * kTile * c.pw;
    PlanTile(p, c, base + 2 * kTile, (k + 2) % 3);  // its loads overlap the decode
    // Decode: centroids in fp16, 8 codes (b bytes) per step, their gains to gain_s; bf16 parts
    // as fp16, 8 values per step, gain 1. Sink positions: one warp each per part, scaled by their
    // largest |value| (that scale is their gain).
    if (tid < 2 * kTile) {
      const int t = tid % kTile, hf = tid / kTile;
      const int64_t slot = slot_s[t];
      const int b = TQ_BITS(hf);
      if (slot != -2) {
        gain_s[hf * kTile + t] = slot < 0 ? 0.0f : b == 0 ? 1.0f : StoredGain(StagedPart(c, raw, t, hf), TQ_DIM(hf), b);
      }
    }
    for (int t = warp; t < kTile; t += kThreads / kWarp) {
      if (slot_s[t] != -2) continue;
      for (int hf = 0; hf < 2; ++hf) {
        const int dim = TQ_DIM(hf);
        const float* row_sinks = TQ_PART(hf, sinks) + (static_cast<int64_t>(p.sink_slot[c.row]) * p.sink_tokens + base + t) * dim;
        __half* dst = xh + t * xs + TQ_OFF(hf);
        float big = 0.0f;
        for (int j = lane; j < dim; j += kWarp) big = fmaxf(big, fabsf(row_sinks[j]));
        for (int o = 16; o >= 1; o >>= 1) big = fmaxf(big, __shfl_xor_sync(0xffffffffu, big, o));
        const float inv = big > 0.0f ? 1.0f / big : 0.0f;
        for (int j = lane; j < dim; j += kWarp) dst[j] = __float2half_rn(row_sinks[j] * inv);
        if (lane == 0) gain_s[hf * kTile + t] = big;
      }
    }
    {
      for (int k = tid; k < kTile * latent / 8; k += kThreads) {
        const auto [t, hf, g] = TileGroupAt(c, k);
        const int b = TQ_BITS(hf);
        const int64_t slot = slot_s[t];
        if (slot == -2) continue;
        uint4 out = make_uint4(0u, 0u, 0u, 0u);  // past the split: zeros
        if (slot >= 0 && b == 0) {
          const uint32_t* u = StagedPart(c, raw, t, hf) + 4 * g;  // 4-byte aligned only
          out = make_uint4(Bf16PairToHalf2(u[0]), Bf16PairToHalf2(u[1]), Bf16PairToHalf2(u[2]), Bf16PairToHalf2(u[3]));
        } else if (slot >= 0) {
          float v[8];
          Centroids8(StagedPart(c, raw, t, hf), g, b, hf ? c.cb_hi : c.cb_lo, v);
          out = make_uint4(PackHalf2(v[0], v[1]), PackHalf2(v[2], v[3]), PackHalf2(v[4], v[5]), PackHalf2(v[6], v[7]));
        }
        *reinterpret_cast<uint4*>(xh + t * xs + TQ_OFF(hf) + 8 * g) = out;
      }
    }
    __syncthreads();  // this stage is free, the slots two tiles ahead are planned; the tile is decoded
    StageTile(p, c, (k + 2) % 3, stage);
    // Scores: this warp's positions snt·8.. over k-steps kq, kq + 4, ..; lo and hi apart (gains;
    // both widths are multiples of 16, so no k-step straddles them).
    {
      float s_lo[4] = {0.0f, 0.0f, 0.0f, 0.0f}, s_hi[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int ks = kq; ks < k16; ks += 4) {
        uint32_t a[4], b[2];
        LdMatrixX4(a, qh + (lane % 16) * xs + 16 * ks + (lane / 16) * 8);
        LdMatrixX2(b, xh + (snt * 8 + lane % 8) * xs + 16 * ks + ((lane / 8) & 1) * 8);
        if (16 * ks < c.lo_dim) {
          Mma16816(s_lo, a, b);
        } else {
          Mma16816(s_hi, a, b);
        }
      }
      const int t0 = snt * 8 + q2;
      const float gl0 = gain_s[t0], gl1 = gain_s[t0 + 1], gh0 = gain_s[kTile + t0], gh1 = gain_s[kTile + t0 + 1];
      float* rw = red + kq * kHg * kTile;
      rw[r * kTile + t0] = s_lo[0] * gl0 + s_hi[0] * gh0;
      rw[r * kTile + t0 + 1] = s_lo[1] * gl1 + s_hi[1] * gh1;
      rw[(r + 8) * kTile + t0] = s_lo[2] * gl0 + s_hi[2] * gh0;
      rw[(r + 8) * kTile + t0 + 1] = s_lo[3] * gl1 + s_hi[3] * gh1;
    }
    __syncthreads();
    // Online softmax (16 lanes per head, one per position) and the fp16 weights × gain / max gain.
    float r_lo, r_hi;
    {
      const int h = tid >> 4, t = tid & 15;
      const bool live = h < hg;
      float sc = -INFINITY;
      if (live && slot_s[t] != -1) {
        const float dot = red[h * kTile + t] + red[kHg * kTile + h * kTile + t] + red[2 * kHg * kTile + h * kTile + t] +
                          red[3 * kHg * kTile + h * kTile + t];
        sc = dot * qmul[h] * p.scale;  // the queries were scaled by 1 / qmul
      }
      float mx = sc;
#pragma unroll
      for (int o = 8; o >= 1; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = c.m_s[h];
      const float m_new = fmaxf(m_old, mx);
      const float e = live && sc != -INFINITY ? expf(sc - m_new) : 0.0f;
      float sum = e;
#pragma unroll
      for (int o = 8; o >= 1; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      const float gl = gain_s[t], gh = gain_s[kTile + t];
      float tl = gl, th = gh;
#pragma unroll
      for (int o = 8; o >= 1; o >>= 1) {
        tl = fmaxf(tl, __shfl_xor_sync(0xffffffffu, tl, o));
        th = fmaxf(th, __shfl_xor_sync(0xffffffffu, th, o));
      }
      const float nl = fmaxf(gm_lo, tl), nh = fmaxf(gm_hi, th);
      r_lo = nl > 0.0f ? gm_lo / nl : 0.0f;
      r_hi = nh > 0.0f ? gm_hi / nh : 0.0f;
      gm_lo = nl;
      gm_hi = nh;
      ph[h * kPhStride + t] = __float2half_rn(nl > 0.0f ? e * (gl / nl) : 0.0f);
      ph[kHg * kPhStride + h * kPhStride + t] = __float2half_rn(nh > 0.0f ? e * (gh / nh) : 0.0f);
      if (t == 0) {
        const float alpha = live ? expf(m_old - m_new) : 0.0f;  // m_old = -inf on the first tile: 0
        c.alpha_s[h] = alpha;
        c.l_s[h] = live ? c.l_s[h] * alpha + sum : 0.0f;
        c.m_s[h] = m_new;
      }
    }
    __syncthreads();
    // Sums: Oᵀ tiles of 8 latent values, this warp's n-tiles warp, warp + 8, ..
    {
      uint32_t pa_lo[4], pa_hi[4];
      LdMatrixX4(pa_lo, ph + (lane % 16) * kPhStride + (lane / 16) * 8);
      LdMatrixX4(pa_hi, ph + kHg * kPhStride + (lane % 16) * kPhStride + (lane / 16) * 8);
      const float a0 = c.alpha_s[r], a1 = c.alpha_s[r + 8];
#pragma unroll
      for (int jj = 0; jj < kNt; ++jj) {
        const int j = warp + 8 * jj;
        if (j < nt8) {
          const bool upper = 8 * j >= c.lo_dim;
          const float rh = upper ? r_hi : r_lo;
          acc[jj][0] *= a0 * rh;
          acc[jj][1] *= a0 * rh;
          acc[jj][2] *= a1 * rh;
          acc[jj][3] *= a1 * rh;
          uint32_t b[2];
          LdMatrixX2Trans(b, xh + (lane % 16) * xs + 8 * j);
          if (upper) {
            Mma16816(acc[jj], pa_hi, b);
          } else {
            Mma16816(acc[jj], pa_lo, b);
          }
        }
      }
    }
    __syncthreads();  // xh, ph, red and gain_s are rewritten by the next tile
  }

  // The split's partial results: the sums times the largest gains.
  WriteSoftmaxState(p, c);
#pragma unroll
  for (int jj = 0; jj < kNt; ++jj) {
    const int j = warp + 8 * jj;
    if (j < nt8) {
      const float g = 8 * j >= c.lo_dim ? gm_hi : gm_lo;
      const int col = 8 * j + q2;
      if (r < hg) {
        *reinterpret_cast<float2*>(c.ws.acc + (c.ws_row + static_cast<int64_t>(r) * p.splits) * c.sum_dim + col) =
            make_float2(acc[jj][0] * g, acc[jj][1] * g);
      }
      if (r + 8 < hg) {
        *reinterpret_cast<float2*>(c.ws.acc + (c.ws_row + static_cast<int64_t>(r + 8) * p.splits) * c.sum_dim + col) =
            make_float2(acc[jj][2] * g, acc[jj][3] * g);
      }
    }
  }
}

#undef TQ_PART
#undef TQ_BITS
#undef TQ_DIM
#undef TQ_OFF

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

// The merge, grid (rows · heads, latent / kMergeDims), kThreads threads: kMergeDims latent values
// × kThreads / kMergeDims groups of splits (splits <= kThreads: the weights one per thread), many
// loads in flight; the result, divided by the softmax sum, goes to out (no packed part summed) or
// back to split 0's sums for MlaFinishKernel (a packed part: Rᵀ needs the whole part).
constexpr int kMergeDims = 32;
constexpr int kMergeGroups = kThreads / kMergeDims;

__host__ __device__ inline bool AnyPacked(const MlaAttentionParams& p) {
  return p.lo.format.kind == KvVectorKind::kPolar || p.hi.format.kind == KvVectorKind::kPolar;
}

// Whether the merged sums need Rᵀ (MlaFinishKernel): a packed part among the summed values.
__host__ __device__ inline bool SumsPacked(const MlaAttentionParams& p) {
  return p.lo.format.kind == KvVectorKind::kPolar ||
         (SumDim(p) > p.lo_dim && p.hi.format.kind == KvVectorKind::kPolar);
}

__global__ void __launch_bounds__(kThreads) MlaMergeKernel(const MlaAttentionParams p) {
  PdlEnter();
  __shared__ float w_s[kMaxAttentionSplits];
  __shared__ float red_s[kThreads / kWarp];
  __shared__ float part_s[kMergeGroups][kMergeDims];
  const int latent = SumDim(p);  // the workspace's sums per head and split
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
  const int d = blockIdx.y * kMergeDims + threadIdx.x % kMergeDims, g = threadIdx.x / kMergeDims;
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;  // four independent sums: four loads in flight
  if (d < latent) {
    const float* src = ws.acc + entry * latent + d;
    int k = g;
    for (; k + 3 * kMergeGroups < p.splits; k += 4 * kMergeGroups) {
      a0 = fmaf(w_s[k], src[static_cast<int64_t>(k) * latent], a0);
      a1 = fmaf(w_s[k + kMergeGroups], src[static_cast<int64_t>(k + kMergeGroups) * latent], a1);
      a2 = fmaf(w_s[k + 2 * kMergeGroups], src[static_cast<int64_t>(k + 2 * kMergeGroups) * latent], a2);
      a3 = fmaf(w_s[k + 3 * kMergeGroups], src[static_cast<int64_t>(k + 3 * kMergeGroups) * latent], a3);
    }
    for (; k < p.splits; k += kMergeGroups) a0 = fmaf(w_s[k], src[static_cast<int64_t>(k) * latent], a0);
  }
  part_s[g][threadIdx.x % kMergeDims] = (a0 + a1) + (a2 + a3);
  __syncthreads();
  if (threadIdx.x < kMergeDims && d < latent) {
    float sum = 0.0f;
    for (int k = 0; k < kMergeGroups; ++k) sum += part_s[k][threadIdx.x];
    const float o = sum / total;
    if (SumsPacked(p)) {
      ws.acc[entry * latent + d] = o;  // split 0's sums of this value were read above (this CTA)
    } else if (d < p.out_dim) {
      p.out[row * p.ldo + static_cast<int64_t>(h) * p.out_dim + d] = o;
    }
  }
}

// Packed parts: grid rows · heads, kThreads threads: Rᵀ = D1·H·D2 / divisor per packed part
// (quant::KvRotation::Inverse) of the merged values, then the first out_dim values.
__global__ void __launch_bounds__(kThreads) MlaFinishKernel(const MlaAttentionParams p) {
  PdlEnter();
  __shared__ float o_s[kMaxLatent];
  const int sums = SumDim(p);
  const int64_t row = blockIdx.x / p.num_heads;
  const int h = static_cast<int>(blockIdx.x % p.num_heads);
  const Workspace ws = SplitWorkspace(p.workspace, p.rows, p.num_heads, p.splits);
  const float* merged = ws.acc + (row * p.num_heads + h) * p.splits * sums;
  for (int i = threadIdx.x; i < sums; i += blockDim.x) o_s[i] = merged[i];
  __syncthreads();
  if (p.lo.format.kind != KvVectorKind::kBf16) {
    RotateShared(o_s, 1, p.lo_dim, p.lo_dim, p.lo.format.signs, p.lo.format.divisor, true);
  }
  if (sums > p.lo_dim && p.hi.format.kind != KvVectorKind::kBf16) {
    RotateShared(o_s + p.lo_dim, 1, p.hi_dim, p.hi_dim, p.hi.format.signs, p.hi.format.divisor, true);
  }
  float* out = p.out + row * p.ldo + static_cast<int64_t>(h) * p.out_dim;
  for (int i = threadIdx.x; i < p.out_dim; i += blockDim.x) out[i] = o_s[i];
}

// One CTA (kWriterThreads) per row: the part in shared memory, R·(x/n) by the butterflies of
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
    WriteLatentPolarKernel(const float* __restrict__ x, int64_t ld, int dim, const int64_t* __restrict__ slots,
                           const KvPolarEncoder enc, uint8_t* __restrict__ cache, int64_t stride) {
  PdlEnter();
  __shared__ float y[kMaxMlaPartDim];
  __shared__ uint8_t idx[kMaxMlaPartDim];
  __shared__ double red[kWriterThreads / kWarp];
  const int64_t row = blockIdx.x;
  const float* v = x + row * ld;
  double ss = 0.0;
  for (int i = threadIdx.x; i < dim; i += kWriterThreads) {
    const float a = v[i];
    y[i] = a;
    ss += static_cast<double>(a) * a;
  }
  const float n = static_cast<float>(sqrt(BlockSumDouble(ss, red)));
  const float div = n > 0.0f ? n : 1.0f;
  for (int i = threadIdx.x; i < dim; i += kWriterThreads) y[i] = y[i] / div;
  RotateShared(y, 1, dim, dim, enc.signs, enc.divisor, false);
  double cs = 0.0;
  for (int i = threadIdx.x; i < dim; i += kWriterThreads) {
    const int lo = PolarBucket(enc, enc.bits, y[i]);
    idx[i] = static_cast<uint8_t>(lo);
    const float c = enc.centroids[lo];
    cs += static_cast<double>(c) * c;
  }
  const float cn = static_cast<float>(sqrt(BlockSumDouble(cs, red)));  // its barriers publish idx
  const float g = cn > 0.0f ? n / cn : n;
  uint8_t* dst = cache + slots[row] * stride;
  const int bits = enc.bits, code_bytes = dim * bits / 8;
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
    WriteLatentSinksKernel(const float* __restrict__ x, int64_t ld, int dim, const int32_t* __restrict__ positions,
                           const int32_t* __restrict__ sink_slot, int sink_tokens, const float* __restrict__ signs,
                           float divisor, float* __restrict__ store) {
  PdlEnter();
  __shared__ float y[kMaxMlaPartDim];
  const int64_t row = blockIdx.x;
  const int pos = positions[row];
  if (pos < 0 || pos >= sink_tokens) return;  // CTA-uniform
  const float* v = x + row * ld;
  for (int i = threadIdx.x; i < dim; i += kWriterThreads) {
    y[i] = __bfloat162float(__float2bfloat16_rn(v[i]));  // the CPU's bf16 sink store
  }
  if (divisor > 0.0f) {
    RotateShared(y, 1, dim, dim, signs, divisor, false);  // the attention space: R·x
  } else {
    __syncthreads();
  }
  float* dst = store + (static_cast<int64_t>(sink_slot[row]) * sink_tokens + pos) * dim;
  for (int i = threadIdx.x; i < dim; i += kWriterThreads) dst[i] = y[i];
}

bool ValidPart(const MlaLatentPart& h, int dim, int sink_tokens) {
  const KvVectorFormat& f = h.format;
  if (f.kind == KvVectorKind::kPolar) {
    if (!PackedBitsSupported(f.bits) || f.codebook == nullptr || !(f.divisor > 0.0f)) {
      return false;
    }
  } else if (f.kind != KvVectorKind::kBf16) {
    return false;
  }
  if (h.cache == nullptr || h.stride < PartBytes(f, dim) || h.stride % 4 != 0 ||
      reinterpret_cast<uintptr_t>(h.cache) % 4 != 0) {
    return false;
  }
  return sink_tokens == 0 || h.sinks != nullptr;
}

}  // namespace

bool MlaUsesTensorCores(const MlaAttentionParams& p) { return p.tensor_cores && AnyPacked(p); }

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
  if (!MlaPartDimSupported(p.lo_dim) || !MlaPartDimSupported(p.hi_dim)) {
    return "lo_dim and hi_dim must be multiples of 16 in [16, 512]";
  }
  if (p.rows < 0 || p.rows > 65535 || p.num_heads <= 0) return "rows must be in [0, 65535] and num_heads positive";
  if (p.splits < 1 || p.splits > kMaxAttentionSplits) return "splits must be in [1, kMaxAttentionSplits]";
  if (p.block_size <= 0) return "block_size must be positive";
  if (p.out_dim < 1 || p.out_dim > p.lo_dim + p.hi_dim) return "out_dim must be in [1, latent_dim]";
  if (p.sink_tokens < 0 || (p.sink_tokens > 0 && p.sink_slot == nullptr)) return "sinks need sink_slot";
  if (!ValidPart(p.lo, p.lo_dim, p.sink_tokens) || !ValidPart(p.hi, p.hi_dim, p.sink_tokens)) {
    return "each part needs a 4-byte aligned cache, a stride of at least its vector bytes and a multiple of 4, bf16 or 2/3/4/8-bit PolarQuant with a "
           "codebook and a positive divisor, and sink stores when sink_tokens > 0";
  }
  const int latent = p.lo_dim + p.hi_dim;
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
  const int stages = MlaUsesTensorCores(p) ? 2 : 1;
  const int latent = p.lo_dim + p.hi_dim, sums = SumDim(p);
  const size_t smem =
      MakeLayout(latent, PartBytes(p.lo.format, p.lo_dim), PartBytes(p.hi.format, p.hi_dim), stages).bytes;
  // The largest shared memory the kernels may need (bf16 parts of kMaxMlaPartDim; one stage for
  // the fp32 kernel, two for tensor cores), within what the device lets a CTA have.
  static const int optin = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
      return 48 << 10;
    }
    return v;
  }();
  const int widest = 2 * kMaxMlaPartDim;
  const int max_fp32 = std::min(optin, static_cast<int>(MakeLayout(widest, widest, widest, 1).bytes));
  const int max_tc = std::min(optin, static_cast<int>(MakeLayout(widest, widest, widest, 2).bytes));
  if (smem > static_cast<size_t>(stages == 2 ? max_tc : max_fp32)) return cudaErrorInvalidValue;
  static const cudaError_t attr = cudaFuncSetAttribute(MlaSplitKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_fp32);
  // Tensor cores: the instantiation with the fewest sum n-tiles per warp that covers the sums.
  void (*kernel)(MlaAttentionParams) = MlaSplitKernel;
  if (MlaUsesTensorCores(p)) {
    kernel = sums <= 64 * 3 ? MlaTcSplitKernel<3> : sums <= 64 * 9 ? MlaTcSplitKernel<9> : MlaTcSplitKernel<kMaxNt>;
  }
  static const cudaError_t attr_tc3 =
      cudaFuncSetAttribute(MlaTcSplitKernel<3>, cudaFuncAttributeMaxDynamicSharedMemorySize, max_tc);
  static const cudaError_t attr_tc9 =
      cudaFuncSetAttribute(MlaTcSplitKernel<9>, cudaFuncAttributeMaxDynamicSharedMemorySize, max_tc);
  static const cudaError_t attr_tc16 =
      cudaFuncSetAttribute(MlaTcSplitKernel<kMaxNt>, cudaFuncAttributeMaxDynamicSharedMemorySize, max_tc);
  for (const cudaError_t a : {attr, attr_tc3, attr_tc9, attr_tc16}) {
    if (a != cudaSuccess) return a;
  }
  const dim3 grid(p.splits, (p.num_heads + kHg - 1) / kHg, static_cast<unsigned>(p.rows));
  cudaError_t e = LaunchKernel(kernel, grid, dim3(kThreads), smem, stream, p);
  if (e != cudaSuccess) return e;
  const unsigned heads_total = static_cast<unsigned>(p.rows * p.num_heads);
  e = LaunchKernel(MlaMergeKernel, dim3(heads_total, (sums + kMergeDims - 1) / kMergeDims), dim3(kThreads), 0,
                   stream, p);
  if (e != cudaSuccess || !SumsPacked(p)) return e != cudaSuccess ? e : cudaGetLastError();
  e = LaunchKernel(MlaFinishKernel, dim3(heads_total), dim3(kThreads), 0,
                   stream, p);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

cudaError_t WriteLatentPolar(const float* x, int64_t ld, int64_t rows, int dim, const int64_t* slots,
                             const KvPolarEncoder& enc, uint8_t* cache, int64_t stride, cudaStream_t stream) {
  if (rows < 0 || !MlaPartDimSupported(dim) || !PackedBitsSupported(enc.bits) || ld < dim || !(enc.divisor > 0.0f) ||
      stride < static_cast<int64_t>(dim) * enc.bits / 8 + 4) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  if (x == nullptr || slots == nullptr || cache == nullptr || enc.centroids == nullptr || enc.boundaries == nullptr) {
    return cudaErrorInvalidValue;
  }
  const cudaError_t e = LaunchKernel(WriteLatentPolarKernel, dim3(static_cast<unsigned>(rows)), dim3(kWriterThreads), 0,
                                     stream, x, ld, dim, slots, enc, cache, stride);
  return e != cudaSuccess ? e : cudaGetLastError();
}

cudaError_t WriteLatentSinks(const float* x, int64_t ld, int64_t rows, int dim, const int32_t* positions,
                             const int32_t* sink_slot, int sink_tokens, const float* signs, float divisor, float* store,
                             cudaStream_t stream) {
  if (rows < 0 || !MlaPartDimSupported(dim) || sink_tokens < 0 || ld < dim || divisor < 0.0f ||
      (signs != nullptr && divisor == 0.0f)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0 || sink_tokens == 0) return cudaSuccess;
  if (x == nullptr || positions == nullptr || sink_slot == nullptr || store == nullptr) return cudaErrorInvalidValue;
  const cudaError_t e =
      LaunchKernel(WriteLatentSinksKernel, dim3(static_cast<unsigned>(rows)), dim3(kWriterThreads), 0, stream, x, ld,
                   dim, positions, sink_slot, sink_tokens, signs, divisor, store);
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace tq::cuda
