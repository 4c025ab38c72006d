// MoE routing on the device. Contract: kernels/cuda/moe_ops.h.
#include "kernels/cuda/moe_ops.h"
#include "kernels/cuda/pdl.cuh"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace tq::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarps = 4;  // tokens per CTA
constexpr unsigned kFull = 0xffffffffu;

// (value, index) is better than (v2, i2): larger value, or equal value and lower index.
__device__ __forceinline__ bool Better(float v, int i, float v2, int i2) { return v > v2 || (v == v2 && i < i2); }

// One warp per token; lane l holds experts l, l + 32, ... (kPer of them).
template <int kPer>
__global__ void __launch_bounds__(kWarps * kWarp)
    TopKKernel(const float* __restrict__ logits, int64_t ld, int64_t tokens, MoeRouting r, int32_t* __restrict__ ids,
               float* __restrict__ weights) {
  PdlEnter();
  const int lane = threadIdx.x % kWarp;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarp;
  if (t >= tokens) return;  // warp-uniform
  const float* row = logits + t * ld;
  float score[kPer], choice[kPer];
  float big = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = lane + kWarp * i;
    score[i] = e < r.num_experts ? row[e] : -INFINITY;
    big = fmaxf(big, score[i]);
  }
  if (r.softmax) {
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) big = fmaxf(big, __shfl_xor_sync(kFull, big, o));
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      score[i] = lane + kWarp * i < r.num_experts ? expf(score[i] - big) : 0.0f;
      sum += score[i];
    }
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) sum += __shfl_xor_sync(kFull, sum, o);
#pragma unroll
    for (int i = 0; i < kPer; ++i) score[i] /= sum;
  } else {
#pragma unroll
    for (int i = 0; i < kPer; ++i) score[i] = 1.0f / (1.0f + expf(-score[i]));
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = lane + kWarp * i;
    choice[i] = e < r.num_experts ? score[i] + (r.bias != nullptr ? r.bias[e] : 0.0f) : -INFINITY;
  }
  if (r.n_group > 1) {
    // Group scores: the sum of each group's two best choices (lane g ends with group g's).
    const int per_group = r.num_experts / r.n_group;
    float my_group = -INFINITY;
    for (int g = 0; g < r.n_group; ++g) {
      float a = -INFINITY, b = -INFINITY;  // this lane's best two in group g
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const int e = lane + kWarp * i;
        if (e < r.num_experts && e / per_group == g) {
          if (choice[i] > a) {
            b = a;
            a = choice[i];
          } else if (choice[i] > b) {
            b = choice[i];
          }
        }
      }
#pragma unroll
      for (int o = 16; o >= 1; o >>= 1) {  // merge the lanes' pairs: the two largest of four
        const float a2 = __shfl_xor_sync(kFull, a, o), b2 = __shfl_xor_sync(kFull, b, o);
        const float hi = fmaxf(a, a2), lo = fminf(a, a2);
        b = fmaxf(lo, fmaxf(b, b2));
        a = hi;
      }
      if (lane == g) my_group = a + b;
    }
    // Keep the topk_group best groups (ties to the lower group), as a stable sort would.
    bool kept = false;
    for (int k = 0; k < r.topk_group; ++k) {
      float bv = lane < r.n_group && !kept ? my_group : -INFINITY;
      int bg = lane < r.n_group && !kept ? lane : 1 << 30;
#pragma unroll
      for (int o = 16; o >= 1; o >>= 1) {
        const float v2 = __shfl_xor_sync(kFull, bv, o);
        const int g2 = __shfl_xor_sync(kFull, bg, o);
        if (Better(v2, g2, bv, bg)) bv = v2, bg = g2;
      }
      if (lane == bg) kept = true;
    }
    const unsigned kept_mask = __ballot_sync(kFull, kept);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = lane + kWarp * i;
      if (e < r.num_experts && !((kept_mask >> (e / per_group)) & 1u)) choice[i] = 0.0f;
    }
  }
  float picked_sum = 0.0f;
  for (int k = 0; k < r.top_k; ++k) {
    // This lane's best (choice, expert, score), then the warp's.
    float bv = -INFINITY, bs = 0.0f;
    int bi = 1 << 30;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = lane + kWarp * i;
      if (e < r.num_experts && Better(choice[i], e, bv, bi)) bv = choice[i], bi = e, bs = score[i];
    }
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) {
      const float v2 = __shfl_xor_sync(kFull, bv, o), s2 = __shfl_xor_sync(kFull, bs, o);
      const int i2 = __shfl_xor_sync(kFull, bi, o);
      if (Better(v2, i2, bv, bi)) bv = v2, bi = i2, bs = s2;
    }
    // The owner takes the chosen expert out of the running.
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      if (lane + kWarp * i == bi) choice[i] = -INFINITY;
    }
    if (lane == 0) {
      ids[t * r.top_k + k] = bi;
      weights[t * r.top_k + k] = bs;
    }
    picked_sum += bs;  // in selection order, as the CPU sums
  }
  if (lane == 0) {
    for (int k = 0; k < r.top_k; ++k) {
      float w = weights[t * r.top_k + k];
      if (r.normalize) w /= (picked_sum + 1e-20f);
      weights[t * r.top_k + k] = w * r.scale;
    }
  }
}

__global__ void CombineKernel(const float* __restrict__ eo, const float* __restrict__ w, int top_k, int64_t n,
                              float* __restrict__ out, int64_t ldo) {
  PdlEnter();
  const int64_t t = blockIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n) return;
  float acc = 0.0f;
  for (int i = 0; i < top_k; ++i) acc = fmaf(w[t * top_k + i], eo[(t * top_k + i) * n + c], acc);
  out[t * ldo + c] = acc;
}

}  // namespace

cudaError_t MoeCombine(const float* expert_out, const float* weights, int64_t tokens, int top_k, int64_t n,
                       float* out, int64_t ldo, cudaStream_t stream) {
  if (tokens < 0 || tokens > 65535 || top_k < 1 || n < 0 || ldo < n) return cudaErrorInvalidValue;
  if (tokens == 0 || n == 0) return cudaSuccess;
  if (expert_out == nullptr || weights == nullptr || out == nullptr) return cudaErrorInvalidValue;
  constexpr int kThreads = 256;
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), static_cast<unsigned>(tokens));
  (void)LaunchKernel(CombineKernel, grid, kThreads, 0, stream, expert_out, weights, top_k, n, out, ldo);
  return cudaGetLastError();
}

cudaError_t MoeTopK(const float* logits, int64_t ld, int64_t tokens, const MoeRouting& r, int32_t* ids,
                    float* weights, cudaStream_t stream) {
  if (tokens < 0 || r.num_experts < 1 || r.num_experts > kMoeMaxExperts || r.top_k < 1 ||
      r.top_k > r.num_experts || ld < r.num_experts) {
    return cudaErrorInvalidValue;
  }
  if (r.n_group < 1 || r.n_group > kWarp || r.num_experts % r.n_group != 0 ||
      (r.n_group > 1 && (r.topk_group < 1 || r.topk_group > r.n_group))) {
    return cudaErrorInvalidValue;
  }
  if (tokens == 0) return cudaSuccess;
  if (logits == nullptr || ids == nullptr || weights == nullptr) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>((tokens + kWarps - 1) / kWarps);
  const int per = (r.num_experts + kWarp - 1) / kWarp;
  if (per <= 1) {
    (void)LaunchKernel(TopKKernel<1>, blocks, kWarps * kWarp, 0, stream, logits, ld, tokens, r, ids, weights);
  } else if (per <= 2) {
    (void)LaunchKernel(TopKKernel<2>, blocks, kWarps * kWarp, 0, stream, logits, ld, tokens, r, ids, weights);
  } else if (per <= 4) {
    (void)LaunchKernel(TopKKernel<4>, blocks, kWarps * kWarp, 0, stream, logits, ld, tokens, r, ids, weights);
  } else {
    (void)LaunchKernel(TopKKernel<8>, blocks, kWarps * kWarp, 0, stream, logits, ld, tokens, r, ids, weights);
  }
  return cudaGetLastError();
}

}  // namespace tq::cuda
