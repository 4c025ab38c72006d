// File: kernels/cuda/sampling.h
//
// Token sampling on the device: one row of logits per sequence in, one token and its
// log-probability out, so that a decode step copies 8 bytes per sequence to the host instead of
// a vocabulary of floats and the host does no per-token work over the vocabulary.
//
// What a row draws (the CPU reference, kernels/cuda/sampling_reference.h, is this text as code):
//   c_i = logits_i / t (t = temperature; 1 when greedy), masked ids set to −inf first; NaN and
//   −inf entries are never drawn; +inf counts as the largest float.
//   m = max c, z = Σ exp(c_i − m). logprob(token) = c_token − m − log z (the unfiltered softmax,
//   as the host sampler reports it).
//   Greedy (temperature 0): the first index of the maximum.
//   Otherwise the candidates in sampling order (c descending, ties to the lower id) are cut to a
//   prefix: top-k (its first k), then top-p (its first element at which the running sum of
//   exp(c − m) reaches top_p × the sum over the top-k prefix), then min-p (c − m ≥ log min_p).
//   u = PhiloxUniform(key, index) × Σ_kept exp(c − m); the token is the first kept id, in index
//   order, at which the running sum of exp(c − m) exceeds u.
// That is the host sampler's distribution (engine/sampling/sampler.h: same filters, same order)
// drawn with another generator and another walk, so seeds give different tokens on CPU and GPU.
//
// The kernel: one CTA of 1024 threads per row. One pass for m and the argmax (it stores c in
// place), one for z; each prefix cut by a value bisection (one pass over the row per halving,
// ~8–16) until the boundary band holds ≤ 2,048 candidates, which are sorted in shared memory and
// walked in order; then one pass for the kept mass and a tiled scan for the draw. Sums in double
// over fp32 exp terms.
//
// Usage:
//   std::vector<SampleRowParams> p(rows);  // temperature, filters, key, index, masked range
//   cudaError_t e = tq::cuda::SampleRows(logits, ld, rows, vocab, p_dev, masked_dev, out_dev, stream);
#ifndef TQSERVE_KERNELS_CUDA_SAMPLING_H_
#define TQSERVE_KERNELS_CUDA_SAMPLING_H_

#include <cstdint>

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tq::cuda {

struct SampleRowParams {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  uint64_t key = 0;          // the request's random stream (its seed)
  uint64_t index = 0;        // which draw of that stream
  // masked[masked_begin, masked_end) are ids set to −inf in this row before sampling.
  int32_t masked_begin = 0;
  int32_t masked_end = 0;
};

struct SampleRowResult {
  int32_t token = 0;
  float logprob = 0.0f;
  int32_t kept = 0;  // size of the kept prefix (1 when greedy)
};

#if TQ_HAVE_CUDA
// logits: rows × vocab fp32 with row stride ld, used as scratch: each row is overwritten with
// its scaled values c (masked entries −inf).
// params, masked and out are device pointers. cudaErrorInvalidValue for vocab < 1 or > 2^30,
// ld < vocab, rows < 0.
cudaError_t SampleRows(float* logits, int64_t ld, int64_t rows, int64_t vocab, const SampleRowParams* params,
                       const int32_t* masked, SampleRowResult* out, cudaStream_t stream);
#endif

}  // namespace tq::cuda

#endif  // TQSERVE_KERNELS_CUDA_SAMPLING_H_
