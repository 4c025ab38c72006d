#include "kernels/quant/error_stats.h"

#include <cmath>
#include <random>
#include <vector>

namespace tq::quant {

ErrorStats MeasureGaussianError(const TqSpec& spec, int64_t rows, uint32_t seed) {
  auto q = TqQuantizer::Create(spec);
  if (!q.ok()) return {};
  const int64_t cols = spec.group_size;
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd;
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = nd(gen);
  std::vector<uint8_t> packed(q->PackedSize(rows, cols));
  std::vector<float> gains(q->GainsSize(rows, cols));
  q->QuantizeRows(w.data(), rows, cols, packed.data(), gains.data());
  std::vector<float> back(w.size());
  q->DequantizeRows(packed.data(), gains.data(), rows, cols, back.data());
  double err = 0, ref = 0, cos_sum = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double dot = 0, a2 = 0, b2 = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double a = w[r * cols + c], b = back[r * cols + c];
      err += (a - b) * (a - b);
      dot += a * b;
      a2 += a * a;
      b2 += b * b;
    }
    ref += a2;
    cos_sum += dot / std::sqrt(a2 * b2);
  }
  return {err / ref, cos_sum / rows};
}

}  // namespace tq::quant
