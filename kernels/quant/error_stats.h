// File: kernels/quant/error_stats.h
//
// Reconstruction error of the TQ format on i.i.d. Gaussian weights (ALGORITHMS.md §5):
// NMSE = Σ‖w−ŵ‖² / Σ‖w‖² and the mean per-row cosine, for a bit width and gain mode. Used by
// the error tests and by tq_error_report (docs/BENCHMARKS.md).
#ifndef TQSERVE_KERNELS_QUANT_ERROR_STATS_H_
#define TQSERVE_KERNELS_QUANT_ERROR_STATS_H_

#include <cstdint>

#include "kernels/quant/tq_quantize.h"

namespace tq::quant {

struct ErrorStats {
  double nmse = 0;
  double mean_cosine = 0;
};

// `rows` rows of `group_size` N(0,1) values (seeded), quantized with `spec`, then decoded.
ErrorStats MeasureGaussianError(const TqSpec& spec, int64_t rows, uint32_t seed);

}  // namespace tq::quant

#endif  // TQSERVE_KERNELS_QUANT_ERROR_STATS_H_
