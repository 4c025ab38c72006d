// Token sampling on the device. Contract and algorithm: kernels/cuda/sampling.h; the CPU
// reference: kernels/cuda/sampling_reference.cc.
#include "kernels/cuda/sampling.h"

#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/philox.h"

namespace tq::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBand = 2048;    // candidates sorted in shared memory
constexpr int kPerThread = 8;  // contiguous elements per thread in an index-order scan tile
constexpr unsigned kFull = 0xffffffffu;

struct Smem {
  float band_c[kBand];
  int band_id[kBand];
  double d[kWarps];
  double d_total;
  float f[kWarps];
  int i[kWarps];
  int band_n;
};

// The scaled logit: logits / t, +inf clamped to the largest float, NaN kept.
__device__ __forceinline__ float Scaled(float l, float t) {
  const float c = l / t;
  return c > FLT_MAX ? FLT_MAX : c;
}

// (c, i) comes no later than (bc, bi) in sampling order (c descending, ties to the lower id).
__device__ __forceinline__ bool NoLater(float c, int i, float bc, int bi) { return c > bc || (c == bc && i <= bi); }
__device__ __forceinline__ bool Before(float c, int i, float c2, int i2) { return c > c2 || (c == c2 && i < i2); }

struct Add {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Min {
  __device__ int operator()(int a, int b) const { return min(a, b); }
};
struct MaxF {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// A block-wide reduction by `op`: a butterfly within each warp, the warps' results through
// `scratch` (kWarps entries), a butterfly over them — the same order every run; every thread
// gets the result.
template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op, T* scratch) {
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  v = scratch[threadIdx.x & 31];
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
__device__ double BlockSum(double v, Smem& s) { return BlockReduce(v, Add{}, s.d); }
__device__ int BlockSumInt(int v, Smem& s) { return BlockReduce(v, Add{}, s.i); }
__device__ int BlockMinInt(int v, Smem& s) { return BlockReduce(v, Min{}, s.i); }
__device__ int BlockMaxInt(int v, Smem& s) { return -BlockMinInt(-v, s); }
__device__ float BlockMaxFloat(float v, Smem& s) { return BlockReduce(v, MaxF{}, s.f); }
__device__ float BlockMinFloat(float v, Smem& s) { return -BlockMaxFloat(-v, s); }

// Within a warp: the inclusive prefix sum of v in lane order (*incl) and the exclusive one (returned).
__device__ double WarpScan(double v, double* incl) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += y;
  }
  *incl = v;
  const double excl = __shfl_up_sync(kFull, v, 1);
  return lane == 0 ? 0.0 : excl;
}

// Exclusive prefix sum of v in thread order; *total gets the block's sum (same for all threads).
__device__ double BlockExclusiveScan(double v, double* total, Smem& s) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  double incl;
  const double excl = WarpScan(v, &incl);
  __syncthreads();
  if (lane == 31) s.d[w] = incl;
  __syncthreads();
  if (w == 0) {  // the warps' sums, scanned the same way
    double warps_incl;
    const double warps_excl = WarpScan(s.d[lane], &warps_incl);
    s.d[lane] = warps_excl;
    if (lane == 31) s.d_total = warps_incl;
  }
  __syncthreads();
  *total = s.d_total;
  return s.d[w] + excl;
}

// The first index i, in index order, at which the running sum of weight(i) satisfies
// reached(sum); -1 if the whole row does not. Tiles of kThreads × kPerThread elements, each
// thread a contiguous run, one block scan per tile.
template <typename Weight, typename Reached>
__device__ int FindFirstReaching(int vocab, Weight weight, Reached reached, Smem& s) {
  double acc = 0.0;
  for (int base = 0; base < vocab; base += kThreads * kPerThread) {
    const int first = base + threadIdx.x * kPerThread;
    double w[kPerThread];
    double mine = 0.0;
#pragma unroll
    for (int e = 0; e < kPerThread; ++e) {
      w[e] = first + e < vocab ? weight(first + e) : 0.0;
      mine += w[e];
    }
    double tile = 0.0;
    const double excl = BlockExclusiveScan(mine, &tile, s);
    if (reached(acc + tile)) {
      int found = INT_MAX;
      double run = acc + excl;
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        run += w[e];
        if (found == INT_MAX && w[e] > 0.0 && reached(run)) found = first + e;
      }
      const int idx = BlockMinInt(found, s);
      if (idx != INT_MAX) return idx;
    }
    acc += tile;
  }
  return -1;
}

// `row` holds the scaled values c (after the first pass). The element of the allowed set (finite c no later than the bound (bc, bi)) at which the
// running sum of weights in sampling order first reaches `target`: weight 1 (counting, top-k)
// or exp(c − m) (mass, top-p). `n_allowed` is the allowed set's size. Bisection on the value
// until the band [lo, hi) that holds the answer has ≤ kBand members, then the band sorted and
// scanned; a band of one repeated value (more than kBand ties) is resolved by id order instead.
// Results for every thread: (*rc, *ri) the element.
__device__ void SearchPrefix(const float* row, int vocab, float m, float cmin, int n_allowed, float bc,
                             int bi, bool mass, double target, float* rc, int* ri, Smem& s) {
  auto allowed = [&](float c, int i) { return c > -INFINITY && NoLater(c, i, bc, bi); };
  auto w_of = [&](float c) { return mass ? static_cast<double>(expf(c - m)) : 1.0; };
  float lo = cmin, hi = INFINITY;  // the answer's value lies in [lo, hi); hi = inf: no upper end
  double g_hi = 0.0;               // weight of the allowed elements with c >= hi
  int n_band = n_allowed;
  bool ties = false;
  while (n_band > kBand) {
    const float upper = hi == INFINITY ? m : nextafterf(hi, -INFINITY);  // the band's largest possible value
    if (upper <= lo) {
      ties = true;  // every band member has the value lo
      break;
    }
    float mid = 0.5f * lo + 0.5f * upper;
    if (mid <= lo) mid = nextafterf(lo, INFINITY);
    double wu = 0.0;
    int nu = 0, nl = 0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float c = row[i];
      if (!allowed(c, i) || c < lo || c >= hi) continue;
      if (c >= mid) {
        wu += w_of(c);
        ++nu;
      } else {
        ++nl;
      }
    }
    wu = BlockSum(wu, s);
    nu = BlockSumInt(nu, s);
    nl = BlockSumInt(nl, s);
    if (g_hi + wu >= target) {
      lo = mid;
      n_band = nu;
    } else {
      hi = mid;
      g_hi += wu;
      n_band = nl;
    }
  }
  if (ties) {
    // j-th tie in id order, j the smallest count with g_hi + j · w ≥ target.
    const double w = w_of(lo);
    double j = ceil((target - g_hi) / w);
    j = fmin(fmax(j, 1.0), static_cast<double>(n_band));
    const float v = lo;
    const int idx = FindFirstReaching(
        vocab,
        [&](int i) {
          const float c = row[i];
          return c == v && allowed(c, i) ? 1.0 : 0.0;
        },
        [&](double run) { return run >= j; }, s);
    *rc = v;
    *ri = idx;  // found: j ≤ n_band
    return;
  }
  // Gather the band (order of arrival), sort it in sampling order, scan it.
  if (threadIdx.x == 0) s.band_n = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float c = row[i];
    if (allowed(c, i) && c >= lo && c < hi) {
      const int k = atomicAdd(&s.band_n, 1);
      s.band_c[k] = c;
      s.band_id[k] = i;
    }
  }
  __syncthreads();
  const int n = s.band_n;
  int size = 2;
  while (size < n) size <<= 1;
  for (int k = n + threadIdx.x; k < size; k += kThreads) {
    s.band_c[k] = -INFINITY;
    s.band_id[k] = INT_MAX;
  }
  __syncthreads();
  for (int k = 2; k <= size; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int a = threadIdx.x; a < size; a += kThreads) {
        const int b = a ^ j;
        if (b <= a) continue;
        const float ca = s.band_c[a], cb = s.band_c[b];
        const int ia = s.band_id[a], ib = s.band_id[b];
        const bool first_half = (a & k) == 0;
        if (first_half ? Before(cb, ib, ca, ia) : Before(ca, ia, cb, ib)) {
          s.band_c[a] = cb;
          s.band_c[b] = ca;
          s.band_id[a] = ib;
          s.band_id[b] = ia;
        }
      }
      __syncthreads();
    }
  }
  // Thread x holds sorted positions 2x, 2x + 1 (kBand = 2 · kThreads).
  const int p0 = 2 * threadIdx.x, p1 = p0 + 1;
  const double w0 = p0 < n ? w_of(s.band_c[p0]) : 0.0, w1 = p1 < n ? w_of(s.band_c[p1]) : 0.0;
  double total = 0.0;
  const double excl = g_hi + BlockExclusiveScan(w0 + w1, &total, s);
  int found = INT_MAX;
  if (p0 < n && excl + w0 >= target) {
    found = p0;
  } else if (p1 < n && excl + w0 + w1 >= target) {
    found = p1;
  }
  int pos = BlockMinInt(found, s);
  if (pos == INT_MAX) pos = n - 1;  // not reached within rounding: the band's last element
  *rc = s.band_c[pos];
  *ri = s.band_id[pos];
  __syncthreads();  // the band arrays are reused by the next search
}

__global__ void __launch_bounds__(kThreads)
    SampleKernel(float* __restrict__ logits, int64_t ld, int vocab, const SampleRowParams* __restrict__ params,
                 const int32_t* __restrict__ masked, SampleRowResult* __restrict__ out) {
  __shared__ Smem s;
  const SampleRowParams p = params[blockIdx.x];
  float* row = logits + static_cast<int64_t>(blockIdx.x) * ld;
  for (int j = p.masked_begin + threadIdx.x; j < p.masked_end; j += kThreads) row[masked[j]] = -INFINITY;
  __syncthreads();
  const bool greedy = p.temperature == 0.0f;
  const float t = greedy ? 1.0f : p.temperature;

  // Pass 1: the maximum, its first index, the smallest finite value, the finite count.
  float tmax = -INFINITY, tmin = INFINITY;
  int targ = INT_MAX, tcount = 0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float c = Scaled(row[i], t);
    row[i] = c;  // later passes read the scaled value (no division per pass)
    if (c > tmax) {
      tmax = c;
      targ = i;
    }
    if (c > -INFINITY) {
      tmin = fminf(tmin, c);
      ++tcount;
    }
  }
  const float m = BlockMaxFloat(tmax, s);
  const int arg = BlockMinInt(tmax == m ? targ : INT_MAX, s);
  const float cmin = BlockMinFloat(tmin, s);
  const int n_valid = BlockSumInt(tcount, s);
  SampleRowResult r;
  if (n_valid == 0) {  // every entry −inf or NaN: nothing to draw
    r.token = 0;
    r.logprob = -INFINITY;
    r.kept = 0;
    if (threadIdx.x == 0) out[blockIdx.x] = r;
    return;
  }
  // Pass 2: z = Σ exp(c − m).
  double tz = 0.0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float c = row[i];
    if (c > -INFINITY) tz += static_cast<double>(expf(c - m));
  }
  const double z = BlockSum(tz, s);
  const double log_z = log(z);
  auto logprob = [&](int id) { return static_cast<float>(static_cast<double>(row[id]) - m - log_z); };
  if (greedy) {
    if (threadIdx.x == 0) out[blockIdx.x] = SampleRowResult{arg, logprob(arg), 1};
    return;
  }

  // The kept prefix: top-k, then top-p within it (bound = its last element), then min-p.
  float bc = -INFINITY;
  int bi = INT_MAX;
  int n_allowed = n_valid;
  if (p.top_k > 0 && p.top_k < n_valid) {
    SearchPrefix(row, vocab, m, cmin, n_allowed, bc, bi, /*mass=*/false, p.top_k, &bc, &bi, s);
    n_allowed = p.top_k;
  }
  if (p.top_p < 1.0f) {
    double mass = 0.0;  // of the allowed set (z when there is no top-k)
    if (n_allowed == n_valid) {
      mass = z;
    } else {
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        const float c = row[i];
        if (c > -INFINITY && NoLater(c, i, bc, bi)) mass += static_cast<double>(expf(c - m));
      }
      mass = BlockSum(mass, s);
    }
    SearchPrefix(row, vocab, m, cmin, n_allowed, bc, bi, /*mass=*/true, static_cast<double>(p.top_p) * mass, &bc,
                 &bi, s);
  }
  const double min_p_cut = p.min_p > 0.0f ? log(static_cast<double>(p.min_p)) : -INFINITY;
  auto is_kept = [&](float c, int i) {
    return c > -INFINITY && NoLater(c, i, bc, bi) && static_cast<double>(c) - m >= min_p_cut;
  };
  auto kept_weight = [&](int i) {
    const float c = row[i];
    return is_kept(c, i) ? static_cast<double>(expf(c - m)) : 0.0;
  };
  // Pass: the kept mass, count and last id; then the draw.
  double total = 0.0;
  int kept = 0, last = -1;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float c = row[i];
    if (is_kept(c, i)) {
      total += static_cast<double>(expf(c - m));
      ++kept;
      last = i;
    }
  }
  total = BlockSum(total, s);
  kept = BlockSumInt(kept, s);
  last = BlockMaxInt(last, s);
  const double u = PhiloxUniform(p.key, p.index) * total;
  int token = FindFirstReaching(vocab, kept_weight, [&](double run) { return u < run; }, s);
  if (token < 0) token = last >= 0 ? last : arg;  // u within rounding of the total
  if (threadIdx.x == 0) out[blockIdx.x] = SampleRowResult{token, logprob(token), kept};
}

}  // namespace

cudaError_t SampleRows(float* logits, int64_t ld, int64_t rows, int64_t vocab, const SampleRowParams* params,
                       const int32_t* masked, SampleRowResult* out, cudaStream_t stream) {
  if (vocab < 1 || vocab > (int64_t{1} << 30) || ld < vocab || rows < 0 || rows > INT_MAX) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  SampleKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, ld, static_cast<int>(vocab), params,
                                                                    masked, out);
  return cudaGetLastError();
}

}  // namespace tq::cuda
