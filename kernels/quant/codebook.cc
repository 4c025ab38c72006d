#include "kernels/quant/codebook.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

namespace tq::quant {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// E[X | a < X < b] for X ~ N(0, sigma^2); +-infinity allowed for a/b. Same case split as the
// plugin's `_gaussian_conditional_expectation`.
double ConditionalMean(double sigma, double a, double b) {
  const double a_std = std::isfinite(a) ? a / sigma : a;
  const double b_std = std::isfinite(b) ? b / sigma : b;
  double prob;
  if (!std::isfinite(a_std)) {
    prob = NormalCdf(b_std);
  } else if (!std::isfinite(b_std)) {
    prob = NormalSf(a_std);
  } else {
    prob = NormalCdf(b_std) - NormalCdf(a_std);
  }
  if (prob < 1e-15) {
    if (std::isfinite(a) && !std::isfinite(b)) return a + sigma;
    if (!std::isfinite(a) && std::isfinite(b)) return b - sigma;
    return (a + b) / 2.0;
  }
  const double pdf_diff = NormalPdf(a_std) - NormalPdf(b_std);
  return sigma * pdf_diff / prob;
}

std::vector<double> LloydGaussian(int n, double sigma) {
  std::vector<double> boundaries(n - 1);
  for (int i = 1; i < n; ++i) boundaries[i - 1] = NormalPpf(static_cast<double>(i) / n) * sigma;
  std::vector<double> centroids(n, 0.0);
  const double inf = std::numeric_limits<double>::infinity();
  for (int it = 0; it < kLloydIterations; ++it) {
    centroids[0] = ConditionalMean(sigma, -inf, boundaries[0]);
    for (int i = 1; i < n - 1; ++i) {
      centroids[i] = ConditionalMean(sigma, boundaries[i - 1], boundaries[i]);
    }
    centroids[n - 1] = ConditionalMean(sigma, boundaries[n - 2], inf);
    for (int i = 0; i < n - 1; ++i) boundaries[i] = (centroids[i] + centroids[i + 1]) / 2;
  }
  std::sort(centroids.begin(), centroids.end());
  return centroids;
}

}  // namespace

double NormalCdf(double x) { return 0.5 * std::erfc(-x * kInvSqrt2); }
double NormalSf(double x) { return 0.5 * std::erfc(x * kInvSqrt2); }
double NormalPdf(double x) { return kInvSqrt2Pi * std::exp(-0.5 * x * x); }

// Acklam's rational approximation (relative error < 1.2e-9), then two Halley steps on the
// erfc-based CDF, which brings it to float64 round-off.
double NormalPpf(double p) {
  if (p <= 0.0) return -std::numeric_limits<double>::infinity();
  if (p >= 1.0) return std::numeric_limits<double>::infinity();
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                             -2.759285104469687e+02, 1.383577518672690e+02,
                             -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                             -1.556989798598866e+02, 6.680131188771972e+01,
                             -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                             -2.400758277161838e+00, -2.549732539343734e+00,
                             4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                             2.445134137142996e+00, 3.754408661907416e+00};
  const double plow = 0.02425, phigh = 1 - plow;
  double x;
  if (p < plow) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= phigh) {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  for (int i = 0; i < 2; ++i) {
    const double e = NormalCdf(x) - p;
    const double u = e / NormalPdf(x);
    x = x - u / (1 + x * u / 2);
  }
  return x;
}

Codebook ComputeCodebook(int bits, int dim) {
  if (bits < 1 || bits > 8 || dim < 1) {
    std::fprintf(stderr, "ComputeCodebook: unsupported bits=%d dim=%d\n", bits, dim);
    std::abort();
  }
  const int n = 1 << bits;
  std::vector<double> c64;
  if (bits == 1) {
    const double c = std::sqrt(2.0 / (M_PI * dim));
    c64 = {-c, c};
  } else if (bits == 2) {
    const double s = std::sqrt(static_cast<double>(dim));
    c64 = {-1.51 / s, -0.453 / s, 0.453 / s, 1.51 / s};
  } else {
    c64 = LloydGaussian(n, 1.0 / std::sqrt(static_cast<double>(dim)));
  }
  Codebook cb;
  cb.bits = bits;
  cb.dim = dim;
  cb.centroids.resize(n);
  for (int i = 0; i < n; ++i) cb.centroids[i] = static_cast<float>(c64[i]);
  cb.boundaries.resize(n - 1);
  for (int i = 0; i < n - 1; ++i) {
    // float32 arithmetic, as torch: (centroids[:-1] + centroids[1:]) / 2
    const float sum = cb.centroids[i] + cb.centroids[i + 1];
    cb.boundaries[i] = sum / 2.0f;
  }
  return cb;
}

const Codebook& GetCodebook(int bits, int dim) {
  static std::mutex mu;
  static auto* cache = new std::map<std::pair<int, int>, std::unique_ptr<Codebook>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*cache)[{bits, dim}];
  if (!slot) slot = std::make_unique<Codebook>(ComputeCodebook(bits, dim));
  return *slot;
}

}  // namespace tq::quant
