// CUDA kernels of a dense decoder step besides the TQ linear layers (see nn_ops.h).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/nn_ops.h"
#include "kernels/cuda/block_sum.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rms_norm.cuh"

namespace tq::cuda {
namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ float Bf16ToFloat(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

// Round to nearest even, NaN kept quiet (the CPU codec's rounding, engine/kv_cache).
__device__ __forceinline__ uint16_t FloatToBf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__device__ __forceinline__ float Load(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kBF16:
      return Bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::kF16:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

__global__ void EmbedKernel(const void* table, DType dtype, const int32_t* ids, int64_t hidden, float* x) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  const int64_t base = static_cast<int64_t>(ids[row]) * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) x[row * hidden + c] = Load(table, dtype, base + c);
}

// One CTA per row. With n % 4 == 0 and 16-byte aligned rows (the engine's hidden states) each
// thread moves float4s, and the launch gives up to n / 4 threads, so a 4096-wide row is one load
// per thread (all in flight at once) instead of a dependent loop of 16.
// kAdd: x += a first (written back; each thread re-reads only what it wrote), so the launch is
// bitwise AddInPlace followed by the plain norm.
template <bool kAdd>
__global__ void RmsNormKernel(float* x, int64_t ldx, const float* a, int64_t lda, const float* w, int64_t n,
                              float eps, float* y, int64_t ldy) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  float* xr = x + row * ldx;
  const float* ar = kAdd ? a + row * lda : nullptr;
  float* yr = y + row * ldy;
  const uintptr_t addr_bits = reinterpret_cast<uintptr_t>(xr) | reinterpret_cast<uintptr_t>(yr) |
                              reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(ar);
  const bool vec = n % 4 == 0 && addr_bits % 16 == 0;  // decided per row (ldx, ldy may differ)
  if (vec) {  // rms_norm.cuh (the fused norm + int8 rotation of tq_linear computes the same)
    float4* x4 = reinterpret_cast<float4*>(xr);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    const float inv = RowInvRms<kAdd>(x4, reinterpret_cast<const float4*>(ar), n, eps);
    float4* y4 = reinterpret_cast<float4*>(yr);
    for (int64_t c = threadIdx.x; c < n / 4; c += blockDim.x) y4[c] = RmsNormed(x4, inv, w4, c);
    return;
  }
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    if (kAdd) xr[c] += ar[c];
    ss += xr[c] * xr[c];
  }
  ss = BlockSum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(n) + eps);
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    const float v = xr[c] * inv;
    yr[c] = w != nullptr ? v * w[c] : v;
  }
}

__global__ void RmsNormHeadsKernel(float* x, int64_t ld, int heads, int head_dim, const float* w, float eps) {
  PdlEnter();
  const int64_t row = blockIdx.x / heads;
  const int head = static_cast<int>(blockIdx.x % heads);
  float* p = x + row * ld + static_cast<int64_t>(head) * head_dim;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) ss += p[c] * p[c];
  ss = BlockSum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(head_dim) + eps);
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) p[c] = p[c] * inv * w[c];
}

__global__ void RopeKernel(float* x, int64_t ld, int heads, int head_dim, const int32_t* positions,
                           const float* cos_t, const float* sin_t) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  const int half = head_dim / 2;
  const int64_t pos = positions[row];
  const float* c = cos_t + pos * half;
  const float* s = sin_t + pos * half;
  float* xr = x + row * ld;
  for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    float* p = xr + h * head_dim;
    const float x1 = p[i], x2 = p[i + half];
    p[i] = x1 * c[i] - x2 * s[i];
    p[i + half] = x2 * c[i] + x1 * s[i];
  }
}

__global__ void WriteKvKernel(const float* k, const float* v, int64_t ld, int64_t width, const int64_t* slots,
                              uint16_t* k_cache, uint16_t* v_cache) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  const int64_t dst = slots[row] * width;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
    k_cache[dst + j] = FloatToBf16(k[row * ld + j]);
    v_cache[dst + j] = FloatToBf16(v[row * ld + j]);
  }
}

constexpr int kAttnWarps = 4;
// Dimensions per lane: 8 for head_dim <= 256; 18 for wider heads up to 576 (an MLA latent:
// DeepSeek-V3's kv_lora_rank 512 + rope 64, read as one KV head).
constexpr int kNarrowDimsPerLane = 8, kWideDimsPerLane = 18;

template <int kMaxDimsPerLane>
__global__ void __launch_bounds__(kAttnWarps * kWarp) PagedAttentionKernel(PagedAttentionParams p) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  const int head = blockIdx.y;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int d = p.head_dim;
  const int per_lane = (d + kWarp - 1) / kWarp;
  const int kvh = head / (p.num_heads / p.num_kv_heads);
  const int64_t pos = p.positions[row];
  const int64_t lo = p.window > 0 ? max(static_cast<int64_t>(0), pos - p.window + 1) : 0;
  const int32_t* table = p.block_table + p.table_offset[row];
  const float* q = p.q + row * p.ldq + static_cast<int64_t>(head) * d;

  float qr[kMaxDimsPerLane], acc[kMaxDimsPerLane];
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    qr[i] = lane + i * kWarp < d ? q[lane + i * kWarp] * p.scale : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int64_t width = static_cast<int64_t>(p.num_kv_heads) * d;
  for (int64_t j = lo + warp; j <= pos; j += kAttnWarps) {
    const int64_t slot = static_cast<int64_t>(table[j / p.block_size]) * p.block_size + j % p.block_size;
    const uint16_t* kp = p.k_cache + slot * width + static_cast<int64_t>(kvh) * d;
    const uint16_t* vp = p.v_cache + slot * width + static_cast<int64_t>(kvh) * d;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerLane; ++i) {
      if (i < per_lane && lane + i * kWarp < d) s += qr[i] * Bf16ToFloat(kp[lane + i * kWarp]);
    }
    s = WarpSum(s);
    const float m_new = fmaxf(m, s);
    const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float e = expf(s - m_new);
    l = l * corr + e;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerLane; ++i) {
      if (i < per_lane && lane + i * kWarp < d) acc[i] = acc[i] * corr + e * Bf16ToFloat(vp[lane + i * kWarp]);
    }
    m = m_new;
  }
  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
  __shared__ float sm_acc[kAttnWarps][kMaxDimsPerLane * kWarp];
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    if (i < per_lane && lane + i * kWarp < d) sm_acc[warp][lane + i * kWarp] = acc[i];
  }
  __syncthreads();
  float big = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) big = fmaxf(big, sm_m[w]);
  float denom = 0.0f;
  float f[kAttnWarps];
  for (int w = 0; w < kAttnWarps; ++w) {
    f[w] = sm_m[w] == -INFINITY ? 0.0f : expf(sm_m[w] - big);
    denom += sm_l[w] * f[w];
  }
  float* out = p.out + row * p.ldo + static_cast<int64_t>(head) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float num = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w) num += sm_acc[w][c] * f[w];
    out[c] = num / denom;
  }
}

__global__ void SiluMulKernel(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t n, float* y,
                              int64_t ldy) {
  PdlEnter();
  const int64_t row = blockIdx.y;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < n;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float a = g[row * ldg + c];
    y[row * ldy + c] = a / (1.0f + expf(-a)) * u[row * ldu + c];
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  PdlEnter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += y[i];
  }
}

__global__ void AddBiasKernel(float* y, int64_t ldy, const float* bias, int64_t n) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) y[row * ldy + c] += bias[c];
}

__global__ void GatherRowsKernel(const float* x, const int32_t* index, int64_t n, float* y) {
  PdlEnter();
  const int64_t row = blockIdx.x;
  const float* src = x + static_cast<int64_t>(index[row]) * n;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) y[row * n + c] = src[c];
}

__global__ void AddScaledRowsKernel(const float* x, const int32_t* rows, const float* w, int64_t n, float* y,
                                    int64_t ldy) {
  PdlEnter();
  const int64_t i = blockIdx.x;
  const float a = w[i];
  float* dst = y + static_cast<int64_t>(rows[i]) * ldy;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) dst[c] += a * x[i * n + c];
}

constexpr int kDenseWarps = 8;  // output features per CTA
constexpr int kDenseRows = 8;   // activation rows per CTA

// Eight consecutive weights of row `j` starting at column c, as floats.
__device__ __forceinline__ void LoadWeights8(const void* w, DType t, int64_t off, float* out) {
  if (t == DType::kF32) {
    const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(w) + off);
    const float4 b = *reinterpret_cast<const float4*>(static_cast<const float*>(w) + off + 4);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
    return;
  }
  const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(w) + off);
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint16_t lo = static_cast<uint16_t>(words[i] & 0xffffu), hi = static_cast<uint16_t>(words[i] >> 16);
    if (t == DType::kBF16) {
      out[2 * i] = Bf16ToFloat(lo);
      out[2 * i + 1] = Bf16ToFloat(hi);
    } else {
      out[2 * i] = __half2float(__ushort_as_half(lo));
      out[2 * i + 1] = __half2float(__ushort_as_half(hi));
    }
  }
}

__global__ void __launch_bounds__(kDenseWarps * kWarp)
    DenseLinearKernel(const void* w, DType dtype, int64_t n, int64_t k, const float* x, int64_t ldx, int64_t m,
                      const float* bias, float* y, int64_t ldy) {
  PdlEnter();
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kDenseWarps + warp;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kDenseRows;
  if (j >= n) return;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kDenseRows), m - r0));
  float acc[kDenseRows];
#pragma unroll
  for (int r = 0; r < kDenseRows; ++r) acc[r] = 0.0f;
  // Unrolled so that several 16-byte weight loads per lane are in flight (bandwidth at m = 1).
#pragma unroll 4
  for (int64_t c = static_cast<int64_t>(lane) * 8; c < k; c += kWarp * 8) {
    float wv[8];
    LoadWeights8(w, dtype, j * k + c, wv);
#pragma unroll
    for (int r = 0; r < kDenseRows; ++r) {
      if (r < rows) {
        const float* xr = x + (r0 + r) * ldx + c;
        const float4 a = *reinterpret_cast<const float4*>(xr);
        const float4 b = *reinterpret_cast<const float4*>(xr + 4);
        acc[r] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w + wv[4] * b.x + wv[5] * b.y +
                  wv[6] * b.z + wv[7] * b.w;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kDenseRows; ++r) {
    const float s = WarpSum(acc[r]);
    if (lane == 0 && r < rows) y[(r0 + r) * ldy + j] = s + (bias != nullptr ? bias[j] : 0.0f);
  }
}

// Decode (m = 1): a CTA of kDenseGemvThreads threads computes kDenseGemvRows output features,
// the K range split across all its threads (8 columns each per pass, two passes in flight), so
// every thread has 2 · kDenseGemvRows independent 16-byte weight loads outstanding and each x
// chunk serves kDenseGemvRows rows; per-thread partial sums, then warp sums and a fixed-order sum
// over the warps.
constexpr int kDenseGemvThreads = 256;
constexpr int kDenseGemvRows = 4;

__global__ void __launch_bounds__(kDenseGemvThreads)
    DenseGemvKernel(const void* w, DType dtype, int64_t n, int64_t k, const float* x, const float* bias, float* y) {
  PdlEnter();
  constexpr int kWarps = kDenseGemvThreads / kWarp;
  constexpr int64_t kPass = kDenseGemvThreads * 8;
  __shared__ float red[kDenseGemvRows][kWarps];
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kDenseGemvRows;
  const int outs = static_cast<int>(min(static_cast<int64_t>(kDenseGemvRows), n - j0));
  float acc[kDenseGemvRows];
#pragma unroll
  for (int i = 0; i < kDenseGemvRows; ++i) acc[i] = 0.0f;
  for (int64_t base = static_cast<int64_t>(tid) * 8; base < k; base += 2 * kPass) {
    float wv[2][kDenseGemvRows][8];
    float4 xa[2], xb[2];
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const int64_t c = base + p * kPass;
      if (c < k) {
        xa[p] = *reinterpret_cast<const float4*>(x + c);
        xb[p] = *reinterpret_cast<const float4*>(x + c + 4);
#pragma unroll
        for (int i = 0; i < kDenseGemvRows; ++i) {
          // A missing feature (past n) re-reads the last one; its sum is not stored.
          LoadWeights8(w, dtype, (j0 + min(i, outs - 1)) * k + c, wv[p][i]);
        }
      }
    }
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      if (base + p * kPass < k) {
#pragma unroll
        for (int i = 0; i < kDenseGemvRows; ++i) {
          const float* v = wv[p][i];
          acc[i] += v[0] * xa[p].x + v[1] * xa[p].y + v[2] * xa[p].z + v[3] * xa[p].w + v[4] * xb[p].x +
                    v[5] * xb[p].y + v[6] * xb[p].z + v[7] * xb[p].w;
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kDenseGemvRows; ++i) {
    const float s = WarpSum(acc[i]);
    if (lane == 0) red[i][warp] = s;
  }
  __syncthreads();
  if (tid < outs) {
    float s = 0.0f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) s += red[tid][wi];
    y[j0 + tid] = s + (bias != nullptr ? bias[j0 + tid] : 0.0f);
  }
}

// A thread per item in whole warps, 64..1024 (one CTA per row, items independent).
int ThreadPerItem(int64_t items) {
  return static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(64, (items + kWarp - 1) / kWarp * kWarp)));
}

int ThreadsFor(int64_t n) {
  if (n >= 1024) return 256;
  if (n >= 256) return 128;
  return 64;
}

}  // namespace

cudaError_t EmbedRows(const void* table, DType dtype, const int32_t* ids, int64_t rows, int64_t hidden, float* x,
                      cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  (void)LaunchKernel(EmbedKernel, static_cast<unsigned>(rows), ThreadsFor(hidden), 0, stream,
                     table, dtype, ids, hidden, x);
  return cudaGetLastError();
}

cudaError_t RmsNormRows(const float* x, int64_t ldx, const float* w, int64_t rows, int64_t n, float eps, float* y,
                        int64_t ldy, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  // A thread per float4 of the row.
  // (x is only read without kAdd.)
  (void)LaunchKernel(RmsNormKernel<false>, static_cast<unsigned>(rows), RmsNormThreads(n), 0, stream,
                     const_cast<float*>(x), ldx, nullptr, 0, w, n, eps, y, ldy);
  return cudaGetLastError();
}

cudaError_t AddRmsNormRows(float* x, int64_t ldx, const float* a, int64_t lda, const float* w, int64_t rows,
                           int64_t n, float eps, float* y, int64_t ldy, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  (void)LaunchKernel(RmsNormKernel<true>, static_cast<unsigned>(rows), RmsNormThreads(n), 0, stream,
                     x, ldx, a, lda, w, n, eps, y, ldy);
  return cudaGetLastError();
}

cudaError_t RmsNormHeads(float* x, int64_t ld, int64_t rows, int heads, int head_dim, const float* w, float eps,
                         cudaStream_t stream) {
  if (rows == 0 || heads == 0) return cudaSuccess;
  (void)LaunchKernel(RmsNormHeadsKernel, static_cast<unsigned>(rows * heads), 64, 0, stream,
                     x, ld, heads, head_dim, w, eps);
  return cudaGetLastError();
}

cudaError_t ApplyRope(float* x, int64_t ld, int64_t rows, int heads, int head_dim, const int32_t* positions,
                      const float* cos, const float* sin, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (head_dim % 2 != 0) return cudaErrorInvalidValue;
  // A thread per rotated pair: the pairs' loads are independent, so more threads keep more of
  // them in flight than a loop over few threads.
  const int threads = ThreadPerItem(static_cast<int64_t>(heads) * head_dim / 2);
  (void)LaunchKernel(RopeKernel, static_cast<unsigned>(rows), threads, 0, stream,
                     x, ld, heads, head_dim, positions, cos, sin);
  return cudaGetLastError();
}

cudaError_t WriteKvBf16(const float* k, const float* v, int64_t ld, int64_t rows, int num_kv_heads, int head_dim,
                        const int64_t* slots, uint16_t* k_cache, uint16_t* v_cache, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int64_t width = static_cast<int64_t>(num_kv_heads) * head_dim;
  (void)LaunchKernel(WriteKvKernel, static_cast<unsigned>(rows), ThreadsFor(width), 0, stream,
                     k, v, ld, width, slots, k_cache, v_cache);
  return cudaGetLastError();
}

bool PagedAttentionSupports(int head_dim) {
  return head_dim > 0 && head_dim % 2 == 0 && head_dim <= kWideDimsPerLane * kWarp;
}

cudaError_t PagedAttention(const PagedAttentionParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  if (!PagedAttentionSupports(p.head_dim) || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 ||
      p.block_size <= 0) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.num_heads));
  if (p.head_dim <= kNarrowDimsPerLane * kWarp) {
    (void)LaunchKernel(PagedAttentionKernel<kNarrowDimsPerLane>, grid, kAttnWarps * kWarp, 0, stream, p);
  } else {
    (void)LaunchKernel(PagedAttentionKernel<kWideDimsPerLane>, grid, kAttnWarps * kWarp, 0, stream, p);
  }
  return cudaGetLastError();
}

cudaError_t SiluMul(const float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int64_t n, float* y,
                    int64_t ldy, cudaStream_t stream) {
  if (rows == 0 || n == 0) return cudaSuccess;
  const unsigned bx = static_cast<unsigned>((n + 255) / 256 < 64 ? (n + 255) / 256 : 64);
  (void)LaunchKernel(SiluMulKernel, dim3(bx, static_cast<unsigned>(rows)), 256, 0, stream,
                     g, ldg, u, ldu, n, y, ldy);
  return cudaGetLastError();
}

cudaError_t AddInPlace(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + 255) / 256;
  (void)LaunchKernel(AddKernel, static_cast<unsigned>(blocks < 4096 ? blocks : 4096), 256, 0, stream,
                     x, y, n);
  return cudaGetLastError();
}

cudaError_t AddBiasRows(float* y, int64_t ldy, const float* bias, int64_t rows, int64_t n, cudaStream_t stream) {
  if (rows == 0 || n == 0) return cudaSuccess;
  (void)LaunchKernel(AddBiasKernel, static_cast<unsigned>(rows), ThreadsFor(n), 0, stream, y, ldy, bias, n);
  return cudaGetLastError();
}

cudaError_t GatherRows(const float* x, const int32_t* index, int64_t rows, int64_t n, float* y, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  (void)LaunchKernel(GatherRowsKernel, static_cast<unsigned>(rows), ThreadsFor(n), 0, stream, x, index, n, y);
  return cudaGetLastError();
}

cudaError_t AddScaledRows(const float* x, const int32_t* rows, const float* w, int64_t count, int64_t n, float* y,
                          int64_t ldy, cudaStream_t stream) {
  if (count < 0 || n < 0 || ldy < n) return cudaErrorInvalidValue;
  if (count == 0 || n == 0) return cudaSuccess;
  (void)LaunchKernel(AddScaledRowsKernel, static_cast<unsigned>(count), ThreadsFor(n), 0, stream,
                     x, rows, w, n, y, ldy);
  return cudaGetLastError();
}

cudaError_t DenseLinear(const void* w, DType dtype, int64_t n, int64_t k, const float* x, int64_t ldx, int64_t m,
                        const float* bias, float* y, int64_t ldy, cudaStream_t stream) {
  if (m == 0 || n == 0) return cudaSuccess;
  if (k % 8 != 0 || ldx % 4 != 0) return cudaErrorInvalidValue;
  if (m == 1) {
    const int64_t ctas = (n + kDenseGemvRows - 1) / kDenseGemvRows;
    if (ctas > 0x7fffffff) return cudaErrorInvalidValue;
    (void)LaunchKernel(DenseGemvKernel, static_cast<unsigned>(ctas), kDenseGemvThreads, 0, stream,
                       w, dtype, n, k, x, bias, y);
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>((n + kDenseWarps - 1) / kDenseWarps),
                  static_cast<unsigned>((m + kDenseRows - 1) / kDenseRows));
  (void)LaunchKernel(DenseLinearKernel, grid, kDenseWarps * kWarp, 0, stream,
                     w, dtype, n, k, x, ldx, m, bias, y, ldy);
  return cudaGetLastError();
}

}  // namespace tq::cuda
