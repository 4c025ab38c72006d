#include "kernels/quant/rotation.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>

namespace tq::quant {

const RotationSigns& GetRotationSigns(int group) {
  if (!IsPowerOfTwo(group)) {
    std::fprintf(stderr, "GetRotationSigns: group %d is not a power of two\n", group);
    std::abort();
  }
  static std::mutex mu;
  static auto* cache = new std::map<int, std::unique_ptr<RotationSigns>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*cache)[group];
  if (!slot) {
    slot = std::make_unique<RotationSigns>();
    std::mt19937 gen(kRotationSeed);
    slot->signs1.resize(group);
    slot->signs2.resize(group);
    for (int i = 0; i < group; ++i) slot->signs1[i] = (gen() % 2) ? 1.0f : -1.0f;
    for (int i = 0; i < group; ++i) slot->signs2[i] = (gen() % 2) ? 1.0f : -1.0f;
  }
  return *slot;
}

void FwhtInPlace(float* x, int n) {
  for (int h = 1; h < n; h *= 2) {
    for (int i = 0; i < n; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        const float a = x[j];
        const float b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}

void RotateForwardReference(const float* x, float* y, int group, int block) {
  const RotationSigns& s = GetRotationSigns(group);
  const float div = RotationDivisor(block);
  for (int i = 0; i < group; ++i) y[i] = x[i] * s.signs1[i];
  for (int b = 0; b < group; b += block) FwhtInPlace(y + b, block);
  for (int i = 0; i < group; ++i) y[i] = (y[i] / div) * s.signs2[i];
}

void RotateInverseReference(const float* y, float* x, int group, int block) {
  const RotationSigns& s = GetRotationSigns(group);
  const float div = RotationDivisor(block);
  for (int i = 0; i < group; ++i) x[i] = y[i] * s.signs2[i];
  for (int b = 0; b < group; b += block) FwhtInPlace(x + b, block);
  for (int i = 0; i < group; ++i) x[i] = (x[i] / div) * s.signs1[i];
}

}  // namespace tq::quant
