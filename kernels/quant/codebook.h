// File: kernels/quant/codebook.h
//
// Lloyd–Max scalar codebooks for the coordinates of a randomly rotated unit vector of dimension
// d, which are ~N(0, 1/d). Computed exactly as turboquant-plus-vllm's `optimal_centroids`
// (ALGORITHMS.md §1.3), so centroids and boundaries match the plugin to the last float32 bit:
//   1 bit : ±sqrt(2/(pi*d))
//   2 bits: {-1.51, -0.453, 0.453, 1.51} / sqrt(d)           (hardcoded in the plugin)
//   >=3   : Lloyd's algorithm on N(0, 1/d) in float64, starting from the boundaries at the
//           quantiles ppf(i/n), exactly 100 iterations of (centroids = conditional means,
//           boundaries = midpoints), then rounded to float32.
// Boundaries are the float32 midpoints of adjacent float32 centroids, (c[i] + c[i+1]) / 2.
//
// Usage:
//   const Codebook& cb = GetCodebook(3, 128);
//   int idx = cb.Index(y);   // searchsorted-left: a value on a boundary takes the lower index
#ifndef TQSERVE_KERNELS_QUANT_CODEBOOK_H_
#define TQSERVE_KERNELS_QUANT_CODEBOOK_H_

#include <vector>

namespace tq::quant {

// Number of Lloyd iterations the plugin runs (not converged at 4 bits, see ALGORITHMS.md §1.3).
inline constexpr int kLloydIterations = 100;

struct Codebook {
  int bits = 0;
  int dim = 0;
  std::vector<float> centroids;   // 2^bits values, ascending
  std::vector<float> boundaries;  // 2^bits - 1 midpoints, ascending

  int size() const { return static_cast<int>(centroids.size()); }

  // torch.searchsorted(boundaries, y) with side='left': the number of boundaries < y.
  int Index(float y) const {
    int i = 0;
    for (float b : boundaries) i += (b < y) ? 1 : 0;
    return i;
  }
};

// Computes the codebook (float64 Lloyd–Max, then float32). bits in [1, 8], dim >= 1.
Codebook ComputeCodebook(int bits, int dim);

// Cached, thread-safe; the reference stays valid for the life of the process.
// bits in [1, 8], dim >= 1 (callers validate; out-of-range values abort).
const Codebook& GetCodebook(int bits, int dim);

// Standard normal helpers in float64 (exposed for tests).
double NormalCdf(double x);
double NormalSf(double x);
double NormalPdf(double x);
double NormalPpf(double p);  // inverse CDF, p in (0, 1)

}  // namespace tq::quant

#endif  // TQSERVE_KERNELS_QUANT_CODEBOOK_H_
