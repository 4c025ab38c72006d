// Decode attention over a packed (or BF16) paged KV cache. Contract: kernels/cuda/kv_attention.h.
#include "kernels/cuda/kv_attention.h"
#include "kernels/cuda/code_spread.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/polar_bucket.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace tq::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarps = 4;           // per CTA
constexpr int kThreads = kWarps * kWarp;
constexpr int kMaxBits = 4;         // values; keys also kBoundaryKeyBits
constexpr int kBoundaryKeyBits = 8;  // the plugin presets' boundary-layer keys
constexpr unsigned kFull = 0xffffffffu;

// Format codes of the templates: 0 = BF16, 2/3/4/8 = PolarQuant with that many bits.
constexpr int FormatCode(const KvVectorFormat& f) {
  return f.kind == KvVectorKind::kBf16 ? 0 : f.bits;
}

__host__ __device__ constexpr int VectorBytes(int code, int d) {
  return code == 0 ? 2 * d : d * code / 8 + 4;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

__device__ __forceinline__ float Bf16Lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float Bf16Hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// In-place natural-order Walsh–Hadamard transform of `count` vectors of kD floats in shared
// memory (pairs (i, i + h), lower a + b, upper a − b, as quant::FwhtInPlace), all threads.
template <int kD>
__device__ void FwhtShared(float* v, int count) {
  for (int h = 1; h < kD; h *= 2) {
    for (int p = threadIdx.x; p < count * (kD / 2); p += blockDim.x) {
      const int vec = p / (kD / 2), t = p % (kD / 2);
      const int i = (t / h) * 2 * h + (t % h);
      float* x = v + vec * kD;
      const float a = x[i], b = x[i + h];
      x[i] = a + b;
      x[i + h] = a - b;
    }
    __syncthreads();
  }
}

__device__ __forceinline__ void CpAsync(void* smem, const void* gmem, int bytes) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  if (bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(gmem));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(gmem));
  }
}

// The address of position j's vector of KV head kvh.
__device__ __forceinline__ const uint8_t* VectorAt(const uint8_t* cache, const int32_t* table, int64_t j,
                                                   int block_size, int num_kv_heads, int kvh, int bytes,
                                                   KvCacheLayout layout) {
  const int64_t block = table[j / block_size];
  const int64_t slot = j % block_size;
  const int64_t index = layout == KvCacheLayout::kHeadMajor ? (block * num_kv_heads + kvh) * block_size + slot
                                                             : (block * block_size + slot) * num_kv_heads + kvh;
  return cache + index * bytes;
}

constexpr int64_t kMinSplitPositions = 128;

// Codebooks in shared memory: up to 4 bits one copy per lane (entry v of lane l at v·32 + l, no
// bank conflicts), 8 bits a single copy (256 entries).
constexpr int kCodebookFloats = (1 << kMaxBits) * kWarp > (1 << kBoundaryKeyBits) ? (1 << kMaxBits) * kWarp
                                                                                  : (1 << kBoundaryKeyBits);
template <int kF>
__device__ __forceinline__ int CodebookIndex(uint32_t v, int lane) {
  return kF <= kMaxBits ? static_cast<int>(v) * kWarp + lane : static_cast<int>(v);
}
template <int kF>
__device__ void LoadCodebook(const float* codebook, float* cb) {
  if constexpr (kF != 0) {
    constexpr int kCopies = kF <= kMaxBits ? kWarp : 1;
    for (int i = threadIdx.x; i < (1 << kF) * kCopies; i += blockDim.x) cb[i] = codebook[i / kCopies];
  }
}

// Scores of one key (this lane's) for kG heads: s[h] = q_rot[h] · key (q_rot already scaled).
template <int kD, int kG, int kF>
__device__ __forceinline__ void ScoreKey(const uint8_t* key, const float (*q_rot)[kD], const float* cb,
                                         int lane, float (&s)[kG]) {
#pragma unroll
  for (int h = 0; h < kG; ++h) s[h] = 0.0f;
  if constexpr (kF == 0) {
    const uint4* k4 = reinterpret_cast<const uint4*>(key);
    uint4 kw[kD / 8];  // every load in flight before the first use
#pragma unroll
    for (int c = 0; c < kD / 8; ++c) kw[c] = k4[c];
#pragma unroll
    for (int c = 0; c < kD / 8; ++c) {
      const uint4 w = kw[c];
      const float kv[8] = {Bf16Lo(w.x), Bf16Hi(w.x), Bf16Lo(w.y), Bf16Hi(w.y),
                           Bf16Lo(w.z), Bf16Hi(w.z), Bf16Lo(w.w), Bf16Hi(w.w)};
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        const float4 qa = *reinterpret_cast<const float4*>(&q_rot[h][8 * c]);
        const float4 qb = *reinterpret_cast<const float4*>(&q_rot[h][8 * c + 4]);
        s[h] += qa.x * kv[0] + qa.y * kv[1] + qa.z * kv[2] + qa.w * kv[3] + qb.x * kv[4] + qb.y * kv[5] +
                qb.z * kv[6] + qb.w * kv[7];
      }
    }
  } else {
    constexpr int kWords = kD * kF / 32;
    constexpr uint32_t kMask = (1u << kF) - 1u;
    const uint32_t* kw = reinterpret_cast<const uint32_t*>(key);
    uint32_t w[kWords];
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = kw[i];
    const float gain = __uint_as_float(kw[kWords]);
#pragma unroll
    for (int i = 0; i < kD; i += 4) {
      float c[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int pos = (i + e) * kF, wi = pos >> 5, off = pos & 31;
        uint32_t v;
        if (off + kF <= 32) {
          v = w[wi] >> off;
        } else {
          v = __funnelshift_r(w[wi], w[wi + 1], off);
        }
        c[e] = cb[CodebookIndex<kF>(v & kMask, lane)];
      }
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        const float4 q = *reinterpret_cast<const float4*>(&q_rot[h][i]);
        s[h] += q.x * c[0] + q.y * c[1] + q.z * c[2] + q.w * c[3];
      }
    }
#pragma unroll
    for (int h = 0; h < kG; ++h) s[h] *= gain;
  }
}

// acc[h][e] += p[h] · value[kDpl·lane + e] (the value in the attention space; kDpl = kD / 32).
template <int kD, int kG, int kF>
__device__ __forceinline__ void AccumulateValue(const uint8_t* value, const float* p, const float* cb, int lane,
                                                float (&acc)[kG][kD / kWarp]) {
  constexpr int kDpl = kD / kWarp;
  float v[kDpl];
  float g = 1.0f;
  if constexpr (kF == 0 && kDpl == 4) {
    const uint2 w = reinterpret_cast<const uint2*>(value)[lane];
    v[0] = Bf16Lo(w.x), v[1] = Bf16Hi(w.x), v[2] = Bf16Lo(w.y), v[3] = Bf16Hi(w.y);
  } else if constexpr (kF == 0 && kDpl == 2) {
    const uint32_t w = reinterpret_cast<const uint32_t*>(value)[lane];
    v[0] = Bf16Lo(w), v[1] = Bf16Hi(w);
  } else if constexpr (kF == 0) {
    v[0] = __uint_as_float(static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(value)[lane]) << 16);
  } else {
    constexpr int kWords = kD * kF / 32;
    constexpr uint32_t kMask = (1u << kF) - 1u;
    const uint32_t* vw = reinterpret_cast<const uint32_t*>(value);
    const int pos = kDpl * kF * lane, wi = pos >> 5, off = pos & 31;
    uint32_t bits = vw[wi] >> off;
    if (off + kDpl * kF > 32) bits = __funnelshift_r(vw[wi], vw[min(wi + 1, kWords - 1)], off);
    g = __uint_as_float(vw[kWords]);
#pragma unroll
    for (int e = 0; e < kDpl; ++e) v[e] = cb[((bits >> (e * kF)) & kMask) * kWarp + lane];
  }
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    const float pg = p[h * kWarp] * g;
#pragma unroll
    for (int e = 0; e < kDpl; ++e) acc[h][e] += pg * v[e];
  }
}

struct KernelArgs {
  PackedAttentionParams p;
  int group;  // query heads per KV head (<= kG)
};

// The workspace entry of one (row, head, split): m, l, then kD sums.
__device__ __forceinline__ float* SplitPartials(const PackedAttentionParams& p, int64_t row, int head, int split,
                                                int kd) {
  return p.workspace + ((row * p.num_heads + head) * p.splits + split) * (kd + 2);
}

// An empty split (a short row) contributes nothing: m = -inf, l = 0, zero sums for its heads.
template <int kD>
__device__ void WriteEmptySplit(const PackedAttentionParams& p, int64_t row, int kvh, int group, int split) {
  for (int h = 0; h < group; ++h) {
    float* ws = SplitPartials(p, row, kvh * group + h, split, kD);
    if (threadIdx.x == 0) ws[0] = -INFINITY, ws[1] = 0.0f;
    if (threadIdx.x < kD) ws[2 + threadIdx.x] = 0.0f;
  }
}

// The group's queries in the key attention space, scaled, into q_rot[kRows][kD] (rows past
// `group` zero): scale · R q with R = D2·H·D1 / divisor when `rotate`, else scale · q. All
// threads; ends with a barrier.
template <int kD, int kRows>
__device__ void RotateQueries(const PackedAttentionParams& p, int64_t row, int kvh, int group, bool rotate,
                              float (*q_rot)[kD]) {
  const float* q = p.q + row * p.ldq + static_cast<int64_t>(kvh) * group * kD;
  const float* ks = rotate ? p.k_format.signs : nullptr;
  for (int i = threadIdx.x; i < kRows * kD; i += blockDim.x) {
    const int h = i / kD, c = i % kD;
    const float x = h < group ? q[h * kD + c] : 0.0f;
    q_rot[h][c] = ks != nullptr ? x * ks[c] : x;
  }
  __syncthreads();
  if (rotate) {
    FwhtShared<kD>(&q_rot[0][0], group);
    const float inv = 1.0f / p.k_format.divisor;
    for (int i = threadIdx.x; i < group * kD; i += blockDim.x) {
      const int h = i / kD, c = i % kD;
      const float y = q_rot[h][c] * inv;
      q_rot[h][c] = (ks != nullptr ? y * ks[kD + c] : y) * p.scale;
    }
  } else {
    for (int i = threadIdx.x; i < group * kD; i += blockDim.x) (&q_rot[0][0])[i] *= p.scale;
  }
  __syncthreads();
}

// Merges the CTA's kWarps partial softmaxes (m_s, l_s, acc_s, already in shared memory and
// synchronized) of each head and writes the split's (m, l, sums).
template <int kD, int kRows>
__device__ void WriteSplit(const PackedAttentionParams& p, int64_t row, int kvh, int group, int split,
                           const float (*m_s)[kRows], const float (*l_s)[kRows], const float (*acc_s)[kRows][kD]) {
  const int tid = threadIdx.x;
  for (int h = 0; h < group; ++h) {
    float big = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) big = fmaxf(big, m_s[w][h]);
    float sum_l = 0.0f, sum_a = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = m_s[w][h] == -INFINITY ? 0.0f : __expf(m_s[w][h] - big);
      sum_l += l_s[w][h] * f;
      if (tid < kD) sum_a += acc_s[w][h][tid] * f;
    }
    float* ws = SplitPartials(p, row, kvh * group + h, split, kD);
    if (tid == 0) ws[0] = big, ws[1] = sum_l;
    if (tid < kD) ws[2 + tid] = sum_a;
  }
}

// Grid (rows, num_kv_heads, splits). Writes per (row, head, split): m, l, acc[kD].
template <int kD, int kG, int kKF, int kVF>
__global__ void __launch_bounds__(kThreads) SplitKernel(const KernelArgs a) {
  PdlEnter();
  constexpr int kDpl = kD / kWarp;
  const PackedAttentionParams& p = a.p;
  const int64_t row = blockIdx.x;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  __shared__ __align__(16) float q_rot[kG][kD];
  __shared__ float cbk[kCodebookFloats], cbv[(1 << kMaxBits) * kWarp];
  __shared__ float p_s[kWarps][kG][kWarp];
  __shared__ float m_s[kWarps][kG], l_s[kWarps][kG];
  // Scratch: each warp's tile of values in the loop, then the warps' sums for the merge.
  constexpr int kTileBytes = kWarp * VectorBytes(kVF, kD);
  constexpr int kScratch = kWarps * kTileBytes > kWarps * kG * kD * 4 ? kWarps * kTileBytes : kWarps * kG * kD * 4;
  __shared__ __align__(16) uint8_t scratch[kScratch];
  uint8_t* const v_tile = scratch + warp * kTileBytes;
  float (*const acc_s)[kG][kD] = reinterpret_cast<float (*)[kG][kD]>(scratch);

  // This split's positions [lo, hi) of the row's range [first, n).
  const int64_t n = static_cast<int64_t>(p.positions[row]) + 1;
  const int64_t first = p.window > 0 && n > p.window ? n - p.window : 0;
  int64_t chunk = (n - first + p.splits - 1) / p.splits;
  chunk = chunk < kMinSplitPositions ? kMinSplitPositions : chunk;
  const int64_t lo = first + split * chunk, hi = n < lo + chunk ? n : lo + chunk;
  if (lo >= hi) {
    WriteEmptySplit<kD>(p, row, kvh, a.group, split);
    return;
  }

  // 1. The group's queries in the key attention space, scaled: scale · R q (or scale · q).
  LoadCodebook<kKF>(p.k_format.codebook, cbk);
  LoadCodebook<kVF>(p.v_format.codebook, cbv);
  RotateQueries<kD, kG>(p, row, kvh, a.group, kKF != 0, q_rot);

  // 2. This split's positions, 32 per warp at a time.
  const int32_t* table = p.block_table + p.table_offset[row];
  constexpr int kKB = VectorBytes(kKF, kD), kVB = VectorBytes(kVF, kD);
  float m[kG], l[kG], acc[kG][kDpl];
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < kDpl; ++e) acc[h][e] = 0.0f;
  }
  // One online-softmax step of a 32-position tile: s (this lane's scores, valid or not) rescale
  // the running sums; the tile's weights go to p_s[warp].
  auto online_step = [&](const float (&s)[kG], bool valid) {
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      const float sv = valid ? s[h] : -INFINITY;
      const float m_new = fmaxf(m[h], WarpMax(sv));  // finite: lane 0 is valid
      const float corr = m[h] == -INFINITY ? 0.0f : __expf(m[h] - m_new);
      const float e = valid ? __expf(sv - m_new) : 0.0f;
      l[h] = l[h] * corr + WarpSum(e);
#pragma unroll
      for (int d = 0; d < kDpl; ++d) acc[h][d] *= corr;
      m[h] = m_new;
      p_s[warp][h][lane] = e;
    }
  };
  // 2a. Sink positions [lo, min(hi, sink_tokens)): fp32 vectors in the attention space.
  const int64_t sink_hi = hi < p.sink_tokens ? hi : static_cast<int64_t>(p.sink_tokens);
  if (lo < sink_hi) {
    const int64_t stride = static_cast<int64_t>(p.num_kv_heads) * kD;  // floats per sink position
    const int64_t base = static_cast<int64_t>(p.sink_slot[row]) * p.sink_tokens * stride + kvh * kD;
    const float *sk = p.sink_k + base, *sv = p.sink_v + base;
    for (int64_t tb = lo + warp * kWarp; tb < sink_hi; tb += kWarps * kWarp) {
      const int64_t j = tb + lane;
      const bool valid = j < sink_hi;
      const int cnt = sink_hi - tb < kWarp ? static_cast<int>(sink_hi - tb) : kWarp;
      float s[kG];
#pragma unroll
      for (int h = 0; h < kG; ++h) s[h] = 0.0f;
      if (valid) {
        const float* kv = sk + j * stride;
        for (int c = 0; c < kD; ++c) {
          const float k = kv[c];
#pragma unroll
          for (int h = 0; h < kG; ++h) s[h] += q_rot[h][c] * k;
        }
      }
      online_step(s, valid);
      __syncwarp();
      for (int jj = 0; jj < cnt; ++jj) {
        const float* vv = sv + (tb + jj) * stride + kDpl * lane;
#pragma unroll
        for (int h = 0; h < kG; ++h) {
          const float pw = p_s[warp][h][jj];
#pragma unroll
          for (int e = 0; e < kDpl; ++e) acc[h][e] += pw * vv[e];
        }
      }
      __syncwarp();
    }
  }
  // 2b. The cached positions [max(lo, sink_hi), hi).
  const int64_t start = lo > sink_hi ? lo : sink_hi;
  for (int64_t tb = start + warp * kWarp; tb < hi; tb += kWarps * kWarp) {
    const int64_t j = tb + lane;
    const bool valid = j < hi;
    const int cnt = hi - tb < kWarp ? static_cast<int>(hi - tb) : kWarp;
    // The tile's values into shared memory (cp.async: in flight while the keys are scored).
    {
      constexpr int kChunk = kVF == 0 ? 16 : 4;
      constexpr int kPer = kVB / kChunk;
      uint8_t* dst = v_tile;
      for (int i = lane; i < cnt * kPer; i += kWarp) {
        const int vec = i / kPer, part = i - vec * kPer;
        const uint8_t* src = VectorAt(p.v_cache, table, tb + vec, p.block_size, p.num_kv_heads, kvh, kVB, p.layout);
        CpAsync(dst + vec * kVB + part * kChunk, src + part * kChunk, kChunk);
      }
      asm volatile("cp.async.commit_group;\n" ::);
    }
    float s[kG];
    if (valid) {
      const uint8_t* key = VectorAt(p.k_cache, table, j, p.block_size, p.num_kv_heads, kvh, kKB, p.layout);
      ScoreKey<kD, kG, kKF>(key, q_rot, cbk, lane, s);
    }
    online_step(s, valid);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncwarp();
    for (int jj = 0; jj < cnt; ++jj) {
      AccumulateValue<kD, kG, kVF>(v_tile + jj * kVB, &p_s[warp][0][jj], cbv, lane, acc);
    }
    __syncwarp();
  }

  // 3. Merge the 4 warps; write this split's (m, l, acc).
  __syncthreads();  // acc_s reuses the value tiles
  if (lane == 0) {
#pragma unroll
    for (int h = 0; h < kG; ++h) m_s[warp][h] = m[h], l_s[warp][h] = l[h];
  }
#pragma unroll
  for (int h = 0; h < kG; ++h) {
#pragma unroll
    for (int e = 0; e < kDpl; ++e) acc_s[warp][h][kDpl * lane + e] = acc[h][e];
  }
  __syncthreads();
  WriteSplit<kD, kG>(p, row, kvh, a.group, split, m_s, l_s, acc_s);
}

// ---------------------------------------------------------------------------------------------
// The tensor-core split kernel (packed 2-4-bit K and V, head_dim 128, G <= 8, block_size a
// multiple of 16). Same grid and workspace as SplitKernel (splits of whole 16-position tiles); a
// warp takes 16 positions at a time, staged in shared memory by cp.async kStages tiles ahead,
// and computes with mma.sync m16n8k16 (fp16 operands, fp32 accumulators):
//   Sᵀ = K·Qᵀ    A = the tile's keys (rows), decoded from their codes; B = the group's rotated
//                queries (columns = heads, zero past G), each head scaled by a power of two into
//                [0.5, 1) (undone exactly on the scores); 8 k-steps over the 128 dims.
//   Oᵀ += Vᵀ·Pᵀ  A = the values (rows = dims, 8 m-tiles), decoded two keys per register;
//                B = softmax weight × value gain / the largest gain so far (in [0, 1]), moved
//                from Sᵀ's accumulator layout to a B fragment through 256 bytes of shared memory.
// Centroids come from byte tables in registers (PRMT), never from shared memory: lane
// (g = lane / 4, t = lane % 4) decodes dims [32t, 32t + 32) of keys g and g + 8 (the k order
// permuted to match Qᵀ's fragment) and dims [16g, 16g + 16) of keys 2t, 2t + 1, 2t + 8, 2t + 9.
// Online softmax in fp32 per head (lane: heads 2t and 2t + 1); sinks, after the tiles, in fp32 as
// SplitKernel's.
namespace tc {

constexpr int kD = 128;
constexpr int kTile = 16;   // positions per warp step
constexpr int kMaxG = 8;    // query heads per KV head (the n8 columns of Sᵀ and Oᵀ)
constexpr int kStages = 4;  // tiles in flight per warp (cp.async ring in shared memory)
constexpr int kMinBlocks = 4;  // resident CTAs per SM the registers must allow (128 registers)

// 4 codes (code t at bit kBits·t of u) as bytes (code t in the low bits of byte t).
template <int kBits>
__device__ __forceinline__ uint32_t CodesToBytes(uint32_t u) {
  uint32_t t = Mux(u, u << (16 - 2 * kBits), 0x0000ffffu);
  t = Mux(t, t << (8 - kBits), 0x00ff00ffu);
  return t & ((1u << kBits) - 1u) * 0x01010101u;
}

// A codebook of 2^kBits 16-bit values as byte tables: lo[i] holds the low bytes of entries
// 4i..4i+3, hi[i] the high bytes.
template <int kBits>
struct ByteTable {
  static constexpr int kWords = (1 << kBits) / 4;
  uint32_t lo[kWords], hi[kWords];
};

template <int kBits>
__device__ __forceinline__ ByteTable<kBits> MakeTable(const float* __restrict__ codebook) {
  ByteTable<kBits> t;
#pragma unroll
  for (int i = 0; i < ByteTable<kBits>::kWords; ++i) {
    t.lo[i] = 0u;
    t.hi[i] = 0u;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      const float c = codebook[4 * i + b];
      const uint32_t h = __half_as_ushort(__float2half_rn(c));
      t.lo[i] |= (h & 0xffu) << (8 * b);
      t.hi[i] |= (h >> 8) << (8 * b);
    }
  }
  return t;
}

// The 16-bit table entries of the 4 codes in the selector's nibbles 0-3, as two pairs:
// r0 = (entry[n0], entry[n1]), r1 = (entry[n2], entry[n3]) (first element in the low half).
template <int kBits>
__device__ __forceinline__ void Lookup4(uint32_t sel, const ByteTable<kBits>& t, uint32_t& r0, uint32_t& r1) {
  uint32_t lo, hi;
  if constexpr (kBits == 4) {  // entries 0-7 and 8-15 separately, then bit 3 of each code picks
    const uint32_t s7 = sel & 0x7777u, pick = ((sel >> 1) & 0x4444u) | 0x3210u;
    lo = __byte_perm(__byte_perm(t.lo[0], t.lo[1], s7), __byte_perm(t.lo[2], t.lo[3], s7), pick);
    hi = __byte_perm(__byte_perm(t.hi[0], t.hi[1], s7), __byte_perm(t.hi[2], t.hi[3], s7), pick);
  } else if constexpr (kBits == 3) {
    lo = __byte_perm(t.lo[0], t.lo[1], sel);
    hi = __byte_perm(t.hi[0], t.hi[1], sel);
  } else {
    lo = __byte_perm(t.lo[0], t.lo[0], sel);
    hi = __byte_perm(t.hi[0], t.hi[0], sel);
  }
  r0 = __byte_perm(lo, hi, 0x5140);
  r1 = __byte_perm(lo, hi, 0x7362);
}

// c += A·B, m16n8k16, fp16 operands, fp32 accumulators (fragments as the PTX ISA's figures).
__device__ __forceinline__ void Mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t PackF16(float a, float b) {
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// A lane's words of one tile: the codes of keys g and g + 8 (kKBits words of dims [32t, 32t + 32)
// each) with their K and V gains, and the value codes of dims [16g, 16g + 16) of keys 2t, 2t + 1,
// 2t + 8, 2t + 9 (two words each, shifted into place at decode).
template <int kKBits, int kVBits>
struct TileData {
  uint32_t k[2][kKBits];
  float kg[2], vg[2];
  uint32_t v[4][2];
};

// Which of the tile's 16 keys a lane reads for the gains and values: 2t, 2t + 1, 2t + 8, 2t + 9.
__device__ __forceinline__ int PairKey(int i, int t) { return 2 * t + (i & 1) + 8 * (i >> 1); }

// A lane's words of one tile staged in shared memory (16 K vectors, then 16 V vectors, each
// packed back to back). Keys outside [first_valid, last_valid] (masked: their words may be
// stale) get a zero value gain.
template <int kKBits, int kVBits>
__device__ __forceinline__ void ReadTile(const uint8_t* stage, int first_valid, int last_valid, int g, int t,
                                         TileData<kKBits, kVBits>& d) {
  constexpr int kKB = kD * kKBits / 8 + 4, kVB = kD * kVBits / 8 + 4;
  const uint8_t* vb = stage + kTile * kKB;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int key = g + 8 * h;
    const uint8_t* kvec = stage + key * kKB;
    const uint32_t* src = reinterpret_cast<const uint32_t*>(kvec) + kKBits * t;
#pragma unroll
    for (int w = 0; w < kKBits; ++w) d.k[h][w] = src[w];
    d.kg[h] = *reinterpret_cast<const float*>(kvec + kKB - 4);
    const bool ok = key >= first_valid && key <= last_valid;
    d.vg[h] = ok ? *reinterpret_cast<const float*>(vb + key * kVB + kVB - 4) : 0.0f;  // garbage · 0 may be NaN
  }
  constexpr int kVBit = 16 * kVBits;  // value bits per lane per key
  const int word = (kVBit * g) >> 5;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t* vw = reinterpret_cast<const uint32_t*>(vb + PairKey(i, t) * kVB) + word;
    d.v[i][0] = vw[0];
    d.v[i][1] = kVBits != 2 ? vw[1] : 0u;
  }
}

// One warp copies the 16 vectors of kB bytes at src + k·stride (k = 0..15) to dst, packed back to
// back, with cp.async: 16-byte pieces when they are contiguous (head-major; dst and src 16-byte
// aligned), else 4-byte words.
template <int kB>
__device__ __forceinline__ void CopyVectors(uint8_t* dst, const uint8_t* src, int64_t stride, int lane) {
  if (stride == kB) {
    for (int c = lane; c < kB; c += kWarp) CpAsync(dst + 16 * c, src + 16 * c, 16);
  } else {
    constexpr int kW = kB / 4;
    for (int i = lane; i < kTile * kW; i += kWarp) {
      const int v = i / kW, w = i - v * kW;
      CpAsync(dst + 4 * i, src + v * stride + 4 * w, 4);
    }
  }
}

// The 16 codes of dims [16g, 16g + 16) of one value (w: the two words from bit 16·kVBits·g
// rounded down to a word), as 4 words of bytes (code in byte order).
template <int kVBits>
__device__ __forceinline__ void ValueBytes(const uint32_t (&w)[2], int g, uint32_t (&b)[4]) {
  if constexpr (kVBits == 3) {  // 48 bits from bit 0 or 16 of w[0]
    const int off = (48 * g) & 31;
    const uint32_t lo = __funnelshift_r(w[0], w[1], off), hi = w[1] >> off;
    b[0] = CodesToBytes<3>(lo);
    b[1] = CodesToBytes<3>(lo >> 12);
    b[2] = CodesToBytes<3>(__funnelshift_r(lo, hi, 24));
    b[3] = CodesToBytes<3>(hi >> 4);
  } else if constexpr (kVBits == 4) {
    b[0] = CodesToBytes<4>(w[0]);
    b[1] = CodesToBytes<4>(w[0] >> 16);
    b[2] = CodesToBytes<4>(w[1]);
    b[3] = CodesToBytes<4>(w[1] >> 16);
  } else {
    b[0] = CodesToBytes<2>(w[0]);
    b[1] = CodesToBytes<2>(w[0] >> 8);
    b[2] = CodesToBytes<2>(w[0] >> 16);
    b[3] = CodesToBytes<2>(w[0] >> 24);
  }
}

template <int kKBits, int kVBits>
__global__ void __launch_bounds__(kThreads, kMinBlocks) TcSplitKernel(const KernelArgs a) {
  PdlEnter();
  const PackedAttentionParams& p = a.p;
  const int64_t row = blockIdx.x;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  const int g = lane / 4, t = lane % 4;
  const int group = a.group;
  constexpr int kKB = kD * kKBits / 8 + 4, kVB = kD * kVBits / 8 + 4;
  constexpr int kStageBytes = kTile * (kKB + kVB);  // a multiple of 16
  // 8-bit (boundary-layer) keys: 3 tiles in flight, so the rings fit the 48 KB of static shared memory.
  constexpr int kSt = kKBits == kBoundaryKeyBits ? 3 : kStages;
  __shared__ __align__(16) float q_rot[kMaxG][kD];
  __shared__ float m_s[kWarps][kMaxG], l_s[kWarps][kMaxG];
  // Each warp's ring of kSt tiles in flight; after the loop, the warps' sums for the merge.
  constexpr int kRingBytes = kWarps * kSt * kStageBytes;
  constexpr int kMergeBytes = kWarps * kMaxG * kD * 4;
  __shared__ __align__(16) uint8_t ring[kRingBytes > kMergeBytes ? kRingBytes : kMergeBytes];
  uint8_t* const my_ring = ring + warp * kSt * kStageBytes;
  float (*const acc_s)[kMaxG][kD] = reinterpret_cast<float (*)[kMaxG][kD]>(ring);
  __shared__ float qmul_s[kMaxG];                        // 2^e of each head's query scaling
  __shared__ __align__(16) __half pt_s[kWarps][kMaxG][kTile];  // each warp's Pᵀ fragment exchange

  // This split's positions [lo, hi): chunks of whole tiles from the tile holding `first`.
  const int64_t n = static_cast<int64_t>(p.positions[row]) + 1;
  const int64_t first = p.window > 0 && n > p.window ? n - p.window : 0;
  const int64_t base = first & ~static_cast<int64_t>(kTile - 1);
  int64_t chunk = (n - base + p.splits - 1) / p.splits;
  chunk = chunk < kMinSplitPositions ? kMinSplitPositions : (chunk + kTile - 1) & ~static_cast<int64_t>(kTile - 1);
  const int64_t lo_raw = base + split * chunk;
  const int64_t lo = lo_raw > first ? lo_raw : first, hi = n < lo_raw + chunk ? n : lo_raw + chunk;
  if (lo >= hi) {
    WriteEmptySplit<kD>(p, row, kvh, group, split);
    return;
  }

  // 1. The group's queries in the key attention space, scaled (as SplitKernel).
  RotateQueries<kD, kMaxG>(p, row, kvh, group, true, q_rot);
  // This lane's B fragments of Qᵀ: head g, dims 32t + 4ks + {0, 1} (qa) and {2, 3} (qb), times
  // 2^-e where 2^e bounds the head's largest |q| (so fp16 keeps 11 bits of every element).
  uint32_t qa[8], qb[8];
  {
    float big = 0.0f;
    const float* qr = q_rot[g] + 32 * t;
#pragma unroll
    for (int i = 0; i < 32; ++i) big = fmaxf(big, fabsf(qr[i]));
    big = fmaxf(big, __shfl_xor_sync(kFull, big, 1));
    big = fmaxf(big, __shfl_xor_sync(kFull, big, 2));
    int e = 0;
    if (big > 0.0f && big <= 3.0e38f) (void)frexpf(big, &e);
    e = e < -100 ? -100 : e > 100 ? 100 : e;
    const float down = ldexpf(1.0f, -e);
    if (warp == 0 && t == 0) qmul_s[g] = ldexpf(1.0f, e);
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      qa[s] = PackF16(qr[4 * s] * down, qr[4 * s + 1] * down);
      qb[s] = PackF16(qr[4 * s + 2] * down, qr[4 * s + 3] * down);
    }
  }
  // Key centroids: byte-permute tables in registers (2-4 bits), or 256 fp16 entries in shared
  // memory (8 bits).
  using KeyTable = std::conditional_t<(kKBits <= kMaxBits), ByteTable<(kKBits <= kMaxBits ? kKBits : 2)>, int>;
  KeyTable ktab{};
  __shared__ __half ktab8[kKBits == kBoundaryKeyBits ? 256 : 1];
  if constexpr (kKBits <= kMaxBits) {
    ktab = MakeTable<kKBits>(p.k_format.codebook);
  } else {
    for (int i = tid; i < 256; i += kThreads) ktab8[i] = __float2half_rn(p.k_format.codebook[i]);
  }
  const ByteTable<kVBits> vtab = MakeTable<kVBits>(p.v_format.codebook);
  __syncthreads();
  const float qm0 = qmul_s[2 * t], qm1 = qmul_s[2 * t + 1];

  // Lane (g, t) keeps the running softmax of heads 2t (m0, l0) and 2t + 1 (m1, l1) — l over its
  // keys only — the largest value gain so far (gm), and Oᵀ / gm for dims 16g + mt (acc[mt][0] head
  // 2t, [1] head 2t + 1) and 16g + 8 + mt ([2], [3]), mt = 0..7.
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f, gm = 0.0f;
  float acc[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  // 2a. Cached positions [start, hi) in tiles of 16 (tile-aligned; keys outside are masked).
  const int64_t sink_hi = hi < p.sink_tokens ? hi : static_cast<int64_t>(p.sink_tokens);
  const int64_t start = lo > sink_hi ? lo : sink_hi;
  const int32_t* table = p.block_table + p.table_offset[row];
  const bool head_major = p.layout == KvCacheLayout::kHeadMajor;
  const int64_t stride_k = head_major ? kKB : static_cast<int64_t>(p.num_kv_heads) * kKB;
  const int64_t stride_v = head_major ? kVB : static_cast<int64_t>(p.num_kv_heads) * kVB;
  const int bs = p.block_size;
  const int bs_shift = (bs & (bs - 1)) == 0 ? __ffs(bs) - 1 : -1;  // the engine's 16: shifts
  // Tile t0 (in block `blk`, a multiple of 16 within it) into stage `stage` of this warp's ring.
  auto issue = [&](int stage, int64_t t0, int64_t blk) {
    const int64_t slot = bs_shift >= 0 ? static_cast<int>(t0) & (bs - 1) : static_cast<int>(t0) % bs;
    const int64_t vec = head_major ? (blk * p.num_kv_heads + kvh) * bs + slot : (blk * bs + slot) * p.num_kv_heads + kvh;
    uint8_t* dst = my_ring + stage * kStageBytes;
    CopyVectors<kKB>(dst, p.k_cache + vec * kKB, stride_k, lane);
    CopyVectors<kVB>(dst + kTile * kKB, p.v_cache + vec * kVB, stride_v, lane);
  };
  auto block_of = [&](int64_t t0) -> int64_t {
    if (t0 >= hi) return 0;
    return table[bs_shift >= 0 ? static_cast<int>(t0) >> bs_shift : static_cast<int>(t0) / bs];
  };
  const int64_t tile0 = (start & ~static_cast<int64_t>(kTile - 1)) + static_cast<int64_t>(warp) * kTile;
  constexpr int64_t kStep = static_cast<int64_t>(kWarps) * kTile;
  {
    int64_t blk[kSt];
#pragma unroll
    for (int st = 0; st < kSt; ++st) blk[st] = block_of(tile0 + st * kStep);
#pragma unroll
    for (int st = 0; st < kSt; ++st) {
      if (tile0 + st * kStep < hi) issue(st, tile0 + st * kStep, blk[st]);
      asm volatile("cp.async.commit_group;\n" ::);
    }
  }
  int64_t t_ahead = tile0 + kSt * kStep;  // the next tile to issue, and its block (loaded early)
  int64_t blk_ahead = block_of(t_ahead);
  int stage = 0;
  __half* const pt = &pt_s[warp][0][0];
  for (int64_t t0 = tile0; t0 < hi; t0 += kStep) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kSt - 1));
    __syncwarp();
    const int64_t fv = start - t0, lv = hi - 1 - t0;
    TileData<kKBits, kVBits> cur;
    ReadTile<kKBits, kVBits>(my_ring + stage * kStageBytes, fv < 0 ? 0 : static_cast<int>(fv),
                             lv > kTile - 1 ? kTile - 1 : static_cast<int>(lv), g, t, cur);
    __syncwarp();  // every lane has its words: the stage may be refilled
    if (t_ahead < hi) issue(stage, t_ahead, blk_ahead);
    asm volatile("cp.async.commit_group;\n" ::);
    t_ahead += kStep;
    blk_ahead = block_of(t_ahead);
    stage = stage + 1 == kSt ? 0 : stage + 1;
    // Sᵀ = K·Qᵀ: rows = the tile's keys (A: keys g and g + 8, decoded here), columns = heads.
    float sacc[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)
#pragma unroll
    for (int u = 0; u < 4; ++u) {  // 8 dims (two k-steps) at a time
      uint32_t a0, a1, a2, a3, c0, c1, c2, c3;
      if constexpr (kKBits == kBoundaryKeyBits) {  // byte codes: dims 8u.. are words 2u and 2u + 1
        auto pair = [&](uint32_t w, int shift) {  // the entries of bytes shift/8 and shift/8 + 1
          return static_cast<uint32_t>(__half_as_ushort(ktab8[(w >> shift) & 0xffu])) |
                 (static_cast<uint32_t>(__half_as_ushort(ktab8[(w >> (shift + 8)) & 0xffu])) << 16);
        };
        a0 = pair(cur.k[0][2 * u], 0);  // key g: dims 8u + {0, 1}, {2, 3}, {4, 5}, {6, 7}
        a2 = pair(cur.k[0][2 * u], 16);
        c0 = pair(cur.k[0][2 * u + 1], 0);
        c2 = pair(cur.k[0][2 * u + 1], 16);
        a1 = pair(cur.k[1][2 * u], 0);  // key g + 8
        a3 = pair(cur.k[1][2 * u], 16);
        c1 = pair(cur.k[1][2 * u + 1], 0);
        c3 = pair(cur.k[1][2 * u + 1], 16);
      } else {
        uint32_t nib[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          uint32_t bits;
          const uint32_t* w = cur.k[h];
          if constexpr (kKBits == 3) {
            bits = u == 0 ? w[0] : u == 1 ? __funnelshift_r(w[0], w[1], 24)
                                 : u == 2 ? __funnelshift_r(w[1], w[2], 16) : w[2] >> 8;
          } else if constexpr (kKBits == 4) {
            bits = w[u];
          } else {
            bits = w[u / 2] >> (16 * (u & 1));
          }
          nib[h] = CodesToNibbles<kKBits>(bits);
        }
        Lookup4<kKBits>(nib[0], ktab, a0, a2);        // key g: dims 8u + {0, 1}, {2, 3}
        Lookup4<kKBits>(nib[1], ktab, a1, a3);        // key g + 8
        Lookup4<kKBits>(nib[0] >> 16, ktab, c0, c2);  // dims 8u + {4, 5}, {6, 7}
        Lookup4<kKBits>(nib[1] >> 16, ktab, c1, c3);
      }
      Mma(sacc, a0, a1, a2, a3, qa[2 * u], qb[2 * u]);
      Mma(sacc, c0, c1, c2, c3, qa[2 * u + 1], qb[2 * u + 1]);
    }
    // Online softmax per head over the tile's 16 keys (reduced across g); masked keys weigh 0.
    const bool ok0 = g >= fv && g <= lv, ok1 = g + 8 >= fv && g + 8 <= lv;
    float sc[4];
    sc[0] = ok0 ? sacc[0] * qm0 * cur.kg[0] : -INFINITY;
    sc[1] = ok0 ? sacc[1] * qm1 * cur.kg[0] : -INFINITY;
    sc[2] = ok1 ? sacc[2] * qm0 * cur.kg[1] : -INFINITY;
    sc[3] = ok1 ? sacc[3] * qm1 * cur.kg[1] : -INFINITY;
    float mx0 = fmaxf(sc[0], sc[2]), mx1 = fmaxf(sc[1], sc[3]);
    float gx = fmaxf(fabsf(cur.vg[0]), fabsf(cur.vg[1]));
#pragma unroll
    for (int o = 4; o <= 16; o *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(kFull, mx0, o));
      mx1 = fmaxf(mx1, __shfl_xor_sync(kFull, mx1, o));
      gx = fmaxf(gx, __shfl_xor_sync(kFull, gx, o));
    }
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1), gm_new = fmaxf(gm, gx);
    const float inv_gm = gm_new > 0.0f ? 1.0f / gm_new : 0.0f, gscale = gm * inv_gm;
    const float f0 = m0 == -INFINITY ? 0.0f : __expf(m0 - n0), f1 = m1 == -INFINITY ? 0.0f : __expf(m1 - n1);
    float e[4];
    e[0] = sc[0] == -INFINITY ? 0.0f : __expf(sc[0] - n0);
    e[1] = sc[1] == -INFINITY ? 0.0f : __expf(sc[1] - n1);
    e[2] = sc[2] == -INFINITY ? 0.0f : __expf(sc[2] - n0);
    e[3] = sc[3] == -INFINITY ? 0.0f : __expf(sc[3] - n1);
    l0 = l0 * f0 + (e[0] + e[2]);
    l1 = l1 * f1 + (e[1] + e[3]);
    m0 = n0;
    m1 = n1;
    gm = gm_new;
    const float corr0 = f0 * gscale, corr1 = f1 * gscale;
    if (corr0 != 1.0f || corr1 != 1.0f) {  // a running max or the largest gain moved
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i][0] *= corr0, acc[i][1] *= corr1, acc[i][2] *= corr0, acc[i][3] *= corr1;
    }
    // Pᵀ (weights × value gain / gm) through shared memory: written as (key, head) pairs, read as
    // the B fragment of P·V (keys 2t, 2t + 1 and 2t + 8, 2t + 9 of head g).
    const float v0 = cur.vg[0] * inv_gm, v1 = cur.vg[1] * inv_gm;
    pt[(2 * t) * kTile + g] = __float2half_rn(e[0] * v0);
    pt[(2 * t + 1) * kTile + g] = __float2half_rn(e[1] * v0);
    pt[(2 * t) * kTile + g + 8] = __float2half_rn(e[2] * v1);
    pt[(2 * t + 1) * kTile + g + 8] = __float2half_rn(e[3] * v1);
    __syncwarp();
    const uint32_t pb0 = *reinterpret_cast<const uint32_t*>(pt + g * kTile + 2 * t);
    const uint32_t pb1 = *reinterpret_cast<const uint32_t*>(pt + g * kTile + 2 * t + 8);
    // Oᵀ += Vᵀ·Pᵀ: rows = dims 16g + mt and 16g + 8 + mt of m-tile mt, two keys per register.
    uint32_t vb[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) ValueBytes<kVBits>(cur.v[i], g, vb[i]);
    uint32_t x[16], y[16];  // dim 16g + d of keys (2t, 2t + 1) and (2t + 8, 2t + 9)
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t sel01 = vb[0][w] | (vb[1][w] << 4), sel89 = vb[2][w] | (vb[3][w] << 4);
      Lookup4<kVBits>(sel01, vtab, x[4 * w], x[4 * w + 1]);
      Lookup4<kVBits>(sel01 >> 16, vtab, x[4 * w + 2], x[4 * w + 3]);
      Lookup4<kVBits>(sel89, vtab, y[4 * w], y[4 * w + 1]);
      Lookup4<kVBits>(sel89 >> 16, vtab, y[4 * w + 2], y[4 * w + 3]);
    }
#pragma unroll
    for (int mt = 0; mt < 8; ++mt) Mma(acc[mt], x[mt], x[8 + mt], y[mt], y[8 + mt], pb0, pb1);
  }
  // The sums in their own units: acc · gm.
  if (gm == 0.0f) gm = 1.0f;  // no tile (or only zero gains): the sinks' units
  const float inv_gm = 1.0f / gm;

  // 2b. Sinks [lo, sink_hi), a position per warp at a time, in fp32 (added in units of gm); lane
  // (g, t) scores heads 2t and 2t + 1 over dims [16g, 16g + 16), summed across g.
  if (lo < sink_hi) {
    const int64_t stride = static_cast<int64_t>(p.num_kv_heads) * kD;
    const int64_t sbase = static_cast<int64_t>(p.sink_slot[row]) * p.sink_tokens * stride + kvh * kD;
    for (int64_t j = lo + warp; j < sink_hi; j += kWarps) {
      const float* sk = p.sink_k + sbase + j * stride + 16 * g;
      const float* sv = p.sink_v + sbase + j * stride + 16 * g;
      const float *qr0 = q_rot[2 * t] + 16 * g, *qr1 = q_rot[2 * t + 1] + 16 * g;
      float s0 = 0.0f, s1 = 0.0f;
#pragma unroll 4
      for (int i = 0; i < 16; ++i) s0 += qr0[i] * sk[i], s1 += qr1[i] * sk[i];
#pragma unroll
      for (int o = 4; o <= 16; o *= 2) s0 += __shfl_xor_sync(kFull, s0, o), s1 += __shfl_xor_sync(kFull, s1, o);
      const float n0 = fmaxf(m0, s0), n1 = fmaxf(m1, s1);
      const float f0 = m0 == -INFINITY ? 0.0f : __expf(m0 - n0), f1 = m1 == -INFINITY ? 0.0f : __expf(m1 - n1);
      const float e0 = __expf(s0 - n0), e1 = __expf(s1 - n1);
      l0 = l0 * f0 + (g == 0 ? e0 : 0.0f);
      l1 = l1 * f1 + (g == 0 ? e1 : 0.0f);
      const float w0 = e0 * inv_gm, w1 = e1 * inv_gm;
#pragma unroll
      for (int mt = 0; mt < 8; ++mt) {
        acc[mt][0] = acc[mt][0] * f0 + w0 * sv[mt];
        acc[mt][1] = acc[mt][1] * f1 + w1 * sv[mt];
        acc[mt][2] = acc[mt][2] * f0 + w0 * sv[8 + mt];
        acc[mt][3] = acc[mt][3] * f1 + w1 * sv[8 + mt];
      }
      m0 = n0;
      m1 = n1;
    }
  }
#pragma unroll
  for (int o = 4; o <= 16; o *= 2) l0 += __shfl_xor_sync(kFull, l0, o), l1 += __shfl_xor_sync(kFull, l1, o);

  // 3. Merge the 4 warps (as SplitKernel).
  asm volatile("cp.async.wait_group 0;\n" ::);
  __syncthreads();  // acc_s reuses the rings
  if (g == 0) {
    m_s[warp][2 * t] = m0, l_s[warp][2 * t] = l0;
    m_s[warp][2 * t + 1] = m1, l_s[warp][2 * t + 1] = l1;
  }
#pragma unroll
  for (int mt = 0; mt < 8; ++mt) {
    acc_s[warp][2 * t][16 * g + mt] = acc[mt][0] * gm;
    acc_s[warp][2 * t + 1][16 * g + mt] = acc[mt][1] * gm;
    acc_s[warp][2 * t][16 * g + 8 + mt] = acc[mt][2] * gm;
    acc_s[warp][2 * t + 1][16 * g + 8 + mt] = acc[mt][3] * gm;
  }
  __syncthreads();
  WriteSplit<kD, kMaxG>(p, row, kvh, group, split, m_s, l_s, acc_s);
}

}  // namespace tc

// Grid (rows, num_heads): merges the splits, divides, maps values back (Rᵀ) when packed.
template <int kD, bool kRotateBack>
__global__ void __launch_bounds__(kThreads) MergeKernel(const PackedAttentionParams p) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  const int head = blockIdx.y, tid = threadIdx.x;
  const int c = tid < kD ? tid : kD - 1;  // threads beyond head_dim only join the barriers
  __shared__ float y[kD];
  const float* ws = p.workspace + (row * p.num_heads + head) * p.splits * (kD + 2);
  // Unrolled so that eight splits' loads are in flight at once (a split count of 100+ would
  // otherwise be as many dependent L2 round trips).
  float big = -INFINITY;
#pragma unroll 8
  for (int s = 0; s < p.splits; ++s) big = fmaxf(big, ws[s * (kD + 2)]);
  float sum_l = 0.0f, sum_a = 0.0f;
#pragma unroll 8
  for (int s = 0; s < p.splits; ++s) {
    const float ms = ws[s * (kD + 2)];
    const float f = ms == -INFINITY ? 0.0f : __expf(ms - big);
    sum_l += ws[s * (kD + 2) + 1] * f;
    sum_a += ws[s * (kD + 2) + 2 + c] * f;
  }
  float v = sum_l > 0.0f ? sum_a / sum_l : 0.0f;
  if constexpr (kRotateBack) {  // x = Rᵀ y = D1·H·D2·y / divisor
    const float* sg = p.v_format.signs;
    if (tid < kD) y[tid] = sg != nullptr ? v * sg[kD + tid] : v;
    __syncthreads();
    FwhtShared<kD>(y, 1);
    v = y[c] / p.v_format.divisor;
    if (sg != nullptr) v *= sg[c];
  }
  if (tid < kD) p.out[row * p.ldo + static_cast<int64_t>(head) * kD + tid] = v;
}

// `split` over grid (rows, num_kv_heads, p.splits), then the merge over (rows, num_heads).
template <int kD, bool kRotateBack>
cudaError_t LaunchSplitAndMerge(void (*split)(KernelArgs), const PackedAttentionParams& p, int group,
                                cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.num_kv_heads),
                  static_cast<unsigned>(p.splits));
  (void)LaunchKernel(split, grid, kThreads, 0, stream, KernelArgs{p, group});
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const dim3 merge(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.num_heads));
  (void)LaunchKernel(MergeKernel<kD, kRotateBack>, merge, kThreads, 0, stream, p);
  return cudaGetLastError();
}

template <int kD, int kG, int kKF, int kVF>
cudaError_t LaunchSplit(const PackedAttentionParams& p, int group, cudaStream_t stream) {
  return LaunchSplitAndMerge<kD, (kVF != 0)>(SplitKernel<kD, kG, kKF, kVF>, p, group, stream);
}

// The tensor-core split kernel, then the merge (as LaunchSplit). When p.splits would launch more
// CTAs than fit on the device at once, the split count drops to one wave of resident CTAs (longer
// splits amortize each CTA's query rotation and pipeline fill, and the merge reads fewer
// partials); the workspace then holds fewer splits.
template <int kKF, int kVF>
cudaError_t LaunchTc(const PackedAttentionParams& p, int group, cudaStream_t stream) {
  static std::atomic<int> per_sm{0};
  int occ = per_sm.load(std::memory_order_relaxed);
  if (occ == 0) {
    const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, tc::TcSplitKernel<kKF, kVF>, kThreads, 0);
    if (e != cudaSuccess) return e;
    per_sm.store(occ, std::memory_order_relaxed);
  }
  int device = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  PackedAttentionParams q = p;
  const int64_t units = p.rows * p.num_kv_heads, resident = static_cast<int64_t>(std::max(occ, 1)) * sms;
  if (units * p.splits > resident) q.splits = static_cast<int>(std::max<int64_t>(1, resident / units));
  return LaunchSplitAndMerge<tc::kD, true>(tc::TcSplitKernel<kKF, kVF>, q, group, stream);
}

template <int kD, int kKF, int kVF>
cudaError_t LaunchGroup(const PackedAttentionParams& p, int group, cudaStream_t stream) {
  if (group <= 1) return LaunchSplit<kD, 1, kKF, kVF>(p, group, stream);
  if (group <= 2) return LaunchSplit<kD, 2, kKF, kVF>(p, group, stream);
  if (group <= 4) return LaunchSplit<kD, 4, kKF, kVF>(p, group, stream);
  return LaunchSplit<kD, 8, kKF, kVF>(p, group, stream);
}

template <int kKF, int kVF>
cudaError_t LaunchDim(const PackedAttentionParams& p, int group, cudaStream_t stream) {
  switch (p.head_dim) {
    case 32:
      return LaunchGroup<32, kKF, kVF>(p, group, stream);
    case 64:
      return LaunchGroup<64, kKF, kVF>(p, group, stream);
    default:
      return LaunchGroup<128, kKF, kVF>(p, group, stream);
  }
}

// Values: BF16 or 2-4 bits; keys also 8 bits (boundary layers).
bool ValidFormat(const KvVectorFormat& f, bool key) {
  if (f.kind == KvVectorKind::kBf16) return true;
  const bool bits_ok = (f.bits >= 2 && f.bits <= kMaxBits) || (key && f.bits == kBoundaryKeyBits);
  return f.kind == KvVectorKind::kPolar && bits_ok && f.codebook != nullptr && f.divisor > 0.0f;
}

// Natural-order FWHT of a vector of 32·kDpl floats held by a warp (lane l: elements kDpl·l ..
// kDpl·l + kDpl − 1): pairs (j, j + h) within a lane, then across lanes — the butterflies and
// sums of quant::FwhtInPlace, so the results are bitwise the CPU's.
template <int kDpl>
__device__ __forceinline__ void FwhtWarp(float (&y)[kDpl], int lane) {
  for (int h = 1; h < kDpl; h *= 2) {
#pragma unroll
    for (int e = 0; e < kDpl; ++e) {
      if ((e & h) == 0) {
        const float a = y[e], b = y[e + h];
        y[e] = a + b;
        y[e + h] = a - b;
      }
    }
  }
  for (int m = 1; m < kWarp; m *= 2) {
    const bool upper = (lane & m) != 0;
#pragma unroll
    for (int e = 0; e < kDpl; ++e) {
      const float partner = __shfl_xor_sync(kFull, y[e], m);
      y[e] = upper ? partner - y[e] : y[e] + partner;
    }
  }
}

// One warp per (row, KV head): lane holds elements kDpl·lane .. +kDpl (kDpl = kD / 32).
template <int kD, int kBits>
__global__ void __launch_bounds__(kThreads) WritePolarKernel(const float* __restrict__ x, int64_t ld, int64_t rows,
                                                             int num_kv_heads, const int64_t* __restrict__ slots,
                                                             const KvPolarEncoder enc, uint8_t* __restrict__ cache) {
  PdlEnter();
  constexpr int kDpl = kD / kWarp;
  constexpr int kWords = kD * kBits / 32;
  constexpr int kBytes = VectorBytes(kBits, kD);
  __shared__ uint32_t words[kWarps][kWords];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (task >= rows * num_kv_heads) return;  // warp-uniform
  const int64_t row = task / num_kv_heads;
  const int head = static_cast<int>(task % num_kv_heads);
  const float* v = x + row * ld + static_cast<int64_t>(head) * kD + kDpl * lane;
  float y[kDpl];
  double ss = 0.0;
#pragma unroll
  for (int e = 0; e < kDpl; ++e) {
    y[e] = v[e];
    ss += static_cast<double>(y[e]) * y[e];
  }
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) ss += __shfl_xor_sync(kFull, ss, o);
  const float n = static_cast<float>(sqrt(ss));
  const float div = n > 0.0f ? n : 1.0f;
#pragma unroll
  for (int e = 0; e < kDpl; ++e) {
    y[e] = y[e] / div;
    if (enc.signs != nullptr) y[e] = y[e] * enc.signs[kDpl * lane + e];
  }
  FwhtWarp<kDpl>(y, lane);
  uint32_t code = 0;  // this lane's kDpl codes, code e at bits e·kBits
  double cs = 0.0;
#pragma unroll
  for (int e = 0; e < kDpl; ++e) {
    float r = y[e] / enc.divisor;
    if (enc.signs != nullptr) r = r * enc.signs[kD + kDpl * lane + e];
    const int idx = PolarBucket(enc, kBits, r);
    code |= static_cast<uint32_t>(idx) << (e * kBits);
    const float c = enc.centroids[idx];
    cs += static_cast<double>(c) * c;
  }
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) cs += __shfl_xor_sync(kFull, cs, o);
  const float cn = static_cast<float>(sqrt(cs));
  const float g = cn > 0.0f ? n / cn : n;
  // Pack: this lane's kDpl·kBits bits at bit kDpl·kBits·lane of the little-endian code stream.
  for (int w = lane; w < kWords; w += kWarp) words[warp][w] = 0u;
  __syncwarp();
  const int pos = kDpl * kBits * lane, wi = pos >> 5, off = pos & 31;
  atomicOr(&words[warp][wi], code << off);
  if (off + kDpl * kBits > 32) atomicOr(&words[warp][wi + 1], code >> (32 - off));
  __syncwarp();
  const int64_t slot = slots[row];
  uint32_t* dst = reinterpret_cast<uint32_t*>(cache + (slot * num_kv_heads + head) * kBytes);
  for (int w = lane; w < kWords; w += kWarp) dst[w] = words[warp][w];
  if (lane == 0) dst[kWords] = __float_as_uint(g);
}

template <int kD>
cudaError_t LaunchWritePolar(const float* x, int64_t ld, int64_t rows, int num_kv_heads, const int64_t* slots,
                             const KvPolarEncoder& enc, uint8_t* cache, cudaStream_t stream) {
  const int64_t tasks = rows * num_kv_heads;
  const unsigned blocks = static_cast<unsigned>((tasks + kWarps - 1) / kWarps);
  switch (enc.bits) {
    case 2:
      (void)LaunchKernel(WritePolarKernel<kD, 2>, blocks, kThreads, 0, stream,
                         x, ld, rows, num_kv_heads, slots, enc, cache);
      break;
    case 3:
      (void)LaunchKernel(WritePolarKernel<kD, 3>, blocks, kThreads, 0, stream,
                         x, ld, rows, num_kv_heads, slots, enc, cache);
      break;
    case kBoundaryKeyBits:
      (void)LaunchKernel(WritePolarKernel<kD, kBoundaryKeyBits>, blocks, kThreads, 0, stream,
                         x, ld, rows, num_kv_heads, slots, enc, cache);
      break;
    default:
      (void)LaunchKernel(WritePolarKernel<kD, 4>, blocks, kThreads, 0, stream,
                         x, ld, rows, num_kv_heads, slots, enc, cache);
      break;
  }
  return cudaGetLastError();
}

// One warp per (row, KV head) of rows whose position is a sink: R·bf16(x) (or bf16(x)) in fp32.
template <int kD>
__global__ void __launch_bounds__(kThreads)
    WriteSinksKernel(const float* __restrict__ x, int64_t ld, int64_t rows, int num_kv_heads,
                     const int32_t* __restrict__ positions, const int32_t* __restrict__ sink_slot, int sink_tokens,
                     const float* __restrict__ signs, float divisor, float* __restrict__ store) {
  PdlEnter();
  constexpr int kDpl = kD / kWarp;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (task >= rows * num_kv_heads) return;  // warp-uniform
  const int64_t row = task / num_kv_heads;
  const int head = static_cast<int>(task % num_kv_heads);
  const int pos = positions[row];
  if (pos < 0 || pos >= sink_tokens) return;
  const float* v = x + row * ld + static_cast<int64_t>(head) * kD + kDpl * lane;
  float y[kDpl];
#pragma unroll
  for (int e = 0; e < kDpl; ++e) {
    y[e] = __bfloat162float(__float2bfloat16_rn(v[e]));  // the CPU's bf16 sink store
    if (signs != nullptr) y[e] = y[e] * signs[kDpl * lane + e];
  }
  if (divisor > 0.0f) {  // the attention space: R·x (kv_quant.h KvRotation::Forward)
    FwhtWarp<kDpl>(y, lane);
#pragma unroll
    for (int e = 0; e < kDpl; ++e) {
      y[e] = y[e] / divisor;
      if (signs != nullptr) y[e] = y[e] * signs[kD + kDpl * lane + e];
    }
  }
  float* dst = store + ((static_cast<int64_t>(sink_slot[row]) * sink_tokens + pos) * num_kv_heads + head) * kD;
#pragma unroll
  for (int e = 0; e < kDpl; ++e) dst[kDpl * lane + e] = y[e];
}

}  // namespace

bool UseTensorCores(const PackedAttentionParams& p) {
  const int kf = FormatCode(p.k_format), vf = FormatCode(p.v_format);
  const bool formats = (kf == vf && kf >= 2 && kf <= 4) || (kf == 4 && vf == 3) ||
                       (kf == kBoundaryKeyBits && (vf == 3 || vf == 4));
  return p.tensor_cores && formats && p.head_dim == tc::kD && p.num_kv_heads > 0 &&
         p.num_heads / p.num_kv_heads <= tc::kMaxG && p.block_size > 0 && p.block_size % tc::kTile == 0;
}

cudaError_t WriteKvSinks(const float* x, int64_t ld, int64_t rows, int num_kv_heads, int head_dim,
                         const int32_t* positions, const int32_t* sink_slot, int sink_tokens, const float* signs,
                         float divisor, float* store, cudaStream_t stream) {
  if (rows < 0 || num_kv_heads <= 0 || (head_dim != 32 && head_dim != 64 && head_dim != 128) || sink_tokens < 0 ||
      ld < static_cast<int64_t>(num_kv_heads) * head_dim || divisor < 0.0f || (signs != nullptr && divisor == 0.0f)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0 || sink_tokens == 0) return cudaSuccess;
  if (x == nullptr || positions == nullptr || sink_slot == nullptr || store == nullptr) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>((rows * num_kv_heads + kWarps - 1) / kWarps);
  switch (head_dim) {
    case 32:
      (void)LaunchKernel(WriteSinksKernel<32>, blocks, kThreads, 0, stream,
                         x, ld, rows, num_kv_heads, positions, sink_slot,
                         sink_tokens, signs, divisor, store);
      break;
    case 64:
      (void)LaunchKernel(WriteSinksKernel<64>, blocks, kThreads, 0, stream,
                         x, ld, rows, num_kv_heads, positions, sink_slot,
                         sink_tokens, signs, divisor, store);
      break;
    default:
      (void)LaunchKernel(WriteSinksKernel<128>, blocks, kThreads, 0, stream,
                         x, ld, rows, num_kv_heads, positions, sink_slot,
                         sink_tokens, signs, divisor, store);
      break;
  }
  return cudaGetLastError();
}

cudaError_t WriteKvPolar(const float* x, int64_t ld, int64_t rows, int num_kv_heads, int head_dim,
                         const int64_t* slots, const KvPolarEncoder& enc, uint8_t* cache, cudaStream_t stream) {
  const bool bits_ok = (enc.bits >= 2 && enc.bits <= kMaxBits) || enc.bits == kBoundaryKeyBits;
  if (rows < 0 || num_kv_heads <= 0 || (head_dim != 32 && head_dim != 64 && head_dim != 128) || !bits_ok || ld < static_cast<int64_t>(num_kv_heads) * head_dim || !(enc.divisor > 0.0f)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  if (x == nullptr || slots == nullptr || cache == nullptr || enc.centroids == nullptr ||
      enc.boundaries == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (reinterpret_cast<uintptr_t>(cache) % 4 != 0) return cudaErrorMisalignedAddress;
  switch (head_dim) {
    case 32:
      return LaunchWritePolar<32>(x, ld, rows, num_kv_heads, slots, enc, cache, stream);
    case 64:
      return LaunchWritePolar<64>(x, ld, rows, num_kv_heads, slots, enc, cache, stream);
    default:
      return LaunchWritePolar<128>(x, ld, rows, num_kv_heads, slots, enc, cache, stream);
  }
}

int64_t KvVectorBytes(const KvVectorFormat& f, int head_dim) { return VectorBytes(FormatCode(f), head_dim); }

int PlanAttentionSplits(int64_t rows, int num_kv_heads, int64_t max_context, int multiprocessors) {
  const int64_t units = std::max<int64_t>(1, rows * std::max(1, num_kv_heads));
  const int64_t want = (8 * std::max(1, multiprocessors) + units - 1) / units;
  const int64_t most = std::max<int64_t>(1, max_context / 128);
  return static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(most, kMaxAttentionSplits)));
}

size_t PackedAttentionWorkspaceBytes(int64_t rows, int num_heads, int head_dim, int splits) {
  return static_cast<size_t>(rows) * num_heads * splits * (head_dim + 2) * sizeof(float);
}

const char* PackedAttentionUnsupportedReason(const PackedAttentionParams& p) {
  if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 128) {
    return "packed KV attention needs head_dim 32, 64 or 128";
  }
  if (p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) return "num_heads must be a multiple of num_kv_heads";
  if (p.num_heads / p.num_kv_heads > 8) return "more than 8 query heads per KV head";
  if (!ValidFormat(p.k_format, true) || !ValidFormat(p.v_format, false)) {
    return "KV vector format must be BF16 or PolarQuant with 2-4 bits (keys also 8) and a codebook";
  }
  if (p.sink_tokens < 0) return "negative sink_tokens";
  const int kf = FormatCode(p.k_format), vf = FormatCode(p.v_format);
  const bool instantiated = (kf == 0 && vf == 0) || (kf != 0 && vf != 0);
  if (!instantiated) return "K and V must both be BF16 or both PolarQuant";
  return nullptr;
}

cudaError_t PackedAttention(const PackedAttentionParams& p, cudaStream_t stream) {
  if (PackedAttentionUnsupportedReason(p) != nullptr || p.rows < 0 || p.block_size <= 0 || p.splits < 1 ||
      p.window < 0 || (p.layout != KvCacheLayout::kHeadMajor && p.layout != KvCacheLayout::kSlotMajor) ||
      p.splits > kMaxAttentionSplits || p.ldq < static_cast<int64_t>(p.num_heads) * p.head_dim ||
      p.ldo < static_cast<int64_t>(p.num_heads) * p.head_dim) {
    return cudaErrorInvalidValue;
  }
  if (p.rows == 0) return cudaSuccess;
  if (p.sink_tokens > 0 && (p.sink_k == nullptr || p.sink_v == nullptr || p.sink_slot == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (p.q == nullptr || p.k_cache == nullptr || p.v_cache == nullptr || p.block_table == nullptr ||
      p.table_offset == nullptr || p.positions == nullptr || p.out == nullptr || p.workspace == nullptr ||
      p.workspace_bytes < PackedAttentionWorkspaceBytes(p.rows, p.num_heads, p.head_dim, p.splits)) {
    return cudaErrorInvalidValue;
  }
  if (reinterpret_cast<uintptr_t>(p.k_cache) % 16 != 0 || reinterpret_cast<uintptr_t>(p.v_cache) % 16 != 0) {
    return cudaErrorMisalignedAddress;
  }
  const int group = p.num_heads / p.num_kv_heads;
  const int kf = FormatCode(p.k_format), vf = FormatCode(p.v_format);
  if (UseTensorCores(p)) {
    if (kf == 3) return LaunchTc<3, 3>(p, group, stream);
    if (kf == 2) return LaunchTc<2, 2>(p, group, stream);
    if (kf == kBoundaryKeyBits) {
      return vf == 4 ? LaunchTc<kBoundaryKeyBits, 4>(p, group, stream) : LaunchTc<kBoundaryKeyBits, 3>(p, group, stream);
    }
    return vf == 4 ? LaunchTc<4, 4>(p, group, stream) : LaunchTc<4, 3>(p, group, stream);
  }
  if (kf == 0) return LaunchDim<0, 0>(p, group, stream);
  if (kf == 2) {
    return vf == 2 ? LaunchDim<2, 2>(p, group, stream)
                   : vf == 3 ? LaunchDim<2, 3>(p, group, stream) : LaunchDim<2, 4>(p, group, stream);
  }
  if (kf == 3) {
    return vf == 2 ? LaunchDim<3, 2>(p, group, stream)
                   : vf == 3 ? LaunchDim<3, 3>(p, group, stream) : LaunchDim<3, 4>(p, group, stream);
  }
  if (kf == kBoundaryKeyBits) {
    return vf == 2 ? LaunchDim<kBoundaryKeyBits, 2>(p, group, stream)
                   : vf == 3 ? LaunchDim<kBoundaryKeyBits, 3>(p, group, stream)
                             : LaunchDim<kBoundaryKeyBits, 4>(p, group, stream);
  }
  return vf == 2 ? LaunchDim<4, 2>(p, group, stream)
                 : vf == 3 ? LaunchDim<4, 3>(p, group, stream) : LaunchDim<4, 4>(p, group, stream);
}

}  // namespace tq::cuda
