// Multi-head Latent Attention pieces. Contract: kernels/cuda/mla_ops.h.
#include "kernels/cuda/mla_ops.h"
#include "kernels/cuda/pdl.cuh"

#include <cuda_runtime.h>

#include <cstdint>

namespace tq::cuda {
namespace {

// One CTA per (row, head), one thread per pair; values loaded before any is written.
__global__ void MlaRopeKernel(float* __restrict__ x, int64_t ld, int heads, int64_t head_stride, int64_t offset,
                              int rope_dim, bool interleave, const int32_t* __restrict__ positions,
                              const float* __restrict__ cos, const float* __restrict__ sin) {
  PdlEnter();
  const int64_t row = blockIdx.x / heads;
  const int h = static_cast<int>(blockIdx.x % heads);
  const int half = rope_dim / 2;
  const int i = threadIdx.x;
  float* v = x + row * ld + h * head_stride + offset;
  float a = 0.0f, b = 0.0f;
  if (i < half) {
    a = interleave ? v[2 * i] : v[i];
    b = interleave ? v[2 * i + 1] : v[i + half];
  }
  __syncthreads();
  if (i < half) {
    const int64_t p = positions[row];
    const float c = cos[p * half + i], s = sin[p * half + i];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

// One CTA per (row, head): the head's q_nope in shared memory, threads over j < r.
__global__ void MlaAbsorbQueryKernel(const float* __restrict__ q, int64_t ldq, int heads, int nope, int rope, int dv,
                                     int r, const float* __restrict__ kvb, float* __restrict__ out) {
  PdlEnter();
  extern __shared__ float qs[];
  const int64_t row = blockIdx.x / heads;
  const int h = static_cast<int>(blockIdx.x % heads);
  const float* qh = q + row * ldq + static_cast<int64_t>(h) * (nope + rope);
  float* o = out + (row * heads + h) * static_cast<int64_t>(r + rope);
  for (int i = threadIdx.x; i < nope; i += blockDim.x) qs[i] = qh[i];
  for (int k = threadIdx.x; k < rope; k += blockDim.x) o[r + k] = qh[nope + k];
  __syncthreads();
  const float* w = kvb + static_cast<int64_t>(h) * (nope + dv) * r;
  for (int j = threadIdx.x; j < r; j += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < nope; ++i) acc = fmaf(qs[i], w[static_cast<int64_t>(i) * r + j], acc);
    o[j] = acc;
  }
}

// One CTA per (row, head): the head's attention output in shared memory, a warp per output e.
__global__ void MlaOutputKernel(const float* __restrict__ o, int64_t ldh, int heads, int nope, int dv, int r,
                                const float* __restrict__ kvb, float* __restrict__ out) {
  PdlEnter();
  extern __shared__ float os[];
  const int64_t row = blockIdx.x / heads;
  const int h = static_cast<int>(blockIdx.x % heads);
  const float* oh = o + (row * heads + h) * ldh;
  for (int j = threadIdx.x; j < r; j += blockDim.x) os[j] = oh[j];
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int e = warp; e < dv; e += warps) {
    const float* w = kvb + (static_cast<int64_t>(h) * (nope + dv) + nope + e) * r;
    float acc = 0.0f;
    for (int j = lane; j < r; j += 32) acc = fmaf(w[j], os[j], acc);
#pragma unroll
    for (int s = 16; s >= 1; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
    if (lane == 0) out[row * static_cast<int64_t>(heads) * dv + static_cast<int64_t>(h) * dv + e] = acc;
  }
}

bool GridOk(int64_t rows, int heads) { return rows >= 0 && heads > 0 && rows * heads < (int64_t{1} << 31); }

}  // namespace

cudaError_t MlaRope(float* x, int64_t ld, int64_t rows, int heads, int64_t head_stride, int64_t offset,
                    int rope_dim, bool interleave, const int32_t* positions, const float* cos, const float* sin,
                    cudaStream_t stream) {
  if (!GridOk(rows, heads) || rope_dim < 2 || rope_dim % 2 != 0 || rope_dim > 2048) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const int threads = (rope_dim / 2 + 31) / 32 * 32;
  (void)LaunchKernel(MlaRopeKernel, static_cast<unsigned>(rows * heads), threads, 0, stream,
                     x, ld, heads, head_stride, offset, rope_dim, interleave, positions, cos, sin);
  return cudaGetLastError();
}

cudaError_t MlaAbsorbQuery(const float* q, int64_t ldq, int64_t rows, int heads, int nope, int rope, int dv, int r,
                           const float* kvb, float* out, cudaStream_t stream) {
  if (!GridOk(rows, heads) || nope < 1 || rope < 0 || dv < 1 || r < 1 || nope > 8192) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  (void)LaunchKernel(MlaAbsorbQueryKernel, static_cast<unsigned>(rows * heads), 256, nope * sizeof(float), stream,
                     q, ldq, heads, nope, rope, dv, r, kvb, out);
  return cudaGetLastError();
}

cudaError_t MlaOutput(const float* o, int64_t ldh, int64_t rows, int heads, int nope, int dv, int r,
                      const float* kvb, float* out, cudaStream_t stream) {
  if (!GridOk(rows, heads) || nope < 0 || dv < 1 || r < 1 || r > 8192 || ldh < r) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  (void)LaunchKernel(MlaOutputKernel, static_cast<unsigned>(rows * heads), 256, r * sizeof(float), stream,
                     o, ldh, heads, nope, dv, r, kvb, out);
  return cudaGetLastError();
}

}  // namespace tq::cuda
