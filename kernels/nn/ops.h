// File: kernels/nn/ops.h
//
// Transformer building blocks on the CPU, fp32, raw pointers: RMSNorm, rotary embedding
// (Hugging Face "rotate_half" layout), SwiGLU, the embedding lookup, softmax/log-softmax and
// one-query attention over contiguous K/V rows. These are the CPU backend and the reference the
// CUDA kernels are compared with. The vector primitives (Dot, Axpy) use AVX2+FMA when the CPU
// has them (runtime dispatch) and a portable loop otherwise.
//
// Numerics follow transformers' fp32 eager modules:
//   RmsNorm:   y = w * (x * rsqrt(mean(x^2) + eps))
//   Rope:      y[i] = x[i]·cos_i − x[i+d/2]·sin_i,  y[i+d/2] = x[i+d/2]·cos_i + x[i]·sin_i
//   SiluMul:   y = g / (1 + exp(−g)) * u
//   Attention: softmax(q·Kᵀ · scale) · V, softmax in fp32 with the max subtracted.
//
// Usage:
//   RmsNorm(x, w, hidden, eps, y);
//   ApplyRope(q, head_dim, num_heads, cos, sin);
#ifndef TQSERVE_KERNELS_NN_OPS_H_
#define TQSERVE_KERNELS_NN_OPS_H_

#include <cstdint>
#include <limits>

namespace tq::nn {

// Σ a[i]·b[i] (fp32, lane-parallel accumulation).
float Dot(const float* a, const float* b, int64_t n);
// y[i] += alpha · x[i].
void Axpy(float alpha, const float* x, float* y, int64_t n);

// Index of the first maximum of x[0..n), NaNs never chosen (0 when n == 0 or every value is
// NaN). The sampler's greedy pick.
int64_t ArgMaxFirst(const float* x, int64_t n);

// Σ exp((x[i] − shift) · scale) for shift >= max(x) and scale > 0 (every exponent ≤ 0): a
// polynomial exp with Cody–Waite range reduction (relative error ~1e-7 per term, exponents
// below −87, −inf included, count as exp(−87) ≈ 1.6e-38, NaN as 0), summed in fp32 per block of 256
// values and in double across blocks (relative error ~1e-6 of the sum). The log-sum-exp of
// vocabulary-sized logits for sampling's log-probabilities, ~10x faster than a double std::exp
// loop. Terms whose exponent is below `min_exponent` count 0 (the mass of a band of logits).
double SumExpShifted(const float* x, int64_t n, float shift, float scale,
                     float min_exponent = -std::numeric_limits<float>::infinity());

// One row of n values. `w` may be null (no weight). In place is allowed (y == x).
void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* y);

// Rotates `num_heads` consecutive heads of `head_dim` values in place. cos/sin hold head_dim/2
// values for this token's position (already multiplied by the RoPE attention factor).
void ApplyRope(float* x, int head_dim, int num_heads, const float* cos, const float* sin);

// y[i] = silu(g[i]) · u[i].
void SiluMul(const float* g, const float* u, int64_t n, float* y);

// In-place softmax of n values; returns log(Σ exp(x − max)) + max (the log-sum-exp).
float SoftmaxInPlace(float* x, int64_t n);
// log-sum-exp of n values without modifying them.
float LogSumExp(const float* x, int64_t n);

// Attention for one query vector over `len` keys/values (rows of `d` floats with strides ldk,
// ldv): out[d] = Σ_j softmax_j(scale · q·k_j) v_j. `scores` is scratch of `len` floats.
void AttendOne(const float* q, const float* k, int64_t ldk, const float* v, int64_t ldv,
               int64_t len, int d, float scale, float* scores, float* out);

// Name of the vector ISA in use ("avx2" or "portable").
const char* NnKernelIsa();

}  // namespace tq::nn

#endif  // TQSERVE_KERNELS_NN_OPS_H_
