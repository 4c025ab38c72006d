// Prints the TQ reconstruction-error table of docs/BENCHMARKS.md: NMSE and mean cosine on
// 65,536 i.i.d. Gaussian rows of 128 for 2/3/4 bits and each gain mode.
//   bazel run -c opt //kernels/quant:tq_error_report
#include <cstdio>

#include "kernels/quant/error_stats.h"

int main() {
  using namespace tq::quant;
  std::printf("| bits | gain | NMSE | mean cosine |\n|---|---|---|---|\n");
  for (int bits : {2, 3, 4}) {
    for (GainMode g : {GainMode::kRaw, GainMode::kNormCorrected, GainMode::kLeastSquares}) {
      TqSpec spec;
      spec.bits = bits;
      spec.gain = g;
      const ErrorStats s = MeasureGaussianError(spec, 65536, 2024);
      std::printf("| %d | %s | %.6f | %.5f |\n", bits, GainModeName(g), s.nmse, s.mean_cosine);
    }
  }
  return 0;
}
