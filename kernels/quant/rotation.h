// File: kernels/quant/rotation.h
//
// The randomized Walsh–Hadamard rotation of TQ weights (ALGORITHMS.md §1.1–1.2, §1.6):
//
//   y = D2 · H · D1 · u,     u = w / ||w||  (one group of G values)
//
// D1 = diag(signs1), D2 = diag(signs2), both ±1 of length G. H is the natural-order (Sylvester)
// Walsh–Hadamard matrix divided by sqrt(B) (orthonormal); the butterfly pairs (i, i+h) for
// h = 1, 2, 4, ..., B/2 write a+b to the lower slot and a-b to the upper one. With B = G it is
// the full rotation of the plugin; with B < G (block-diagonal variant, §1.6) H = blockdiag(H_B,
// ..., H_B), each block normalized by 1/sqrt(B), signs still full length G.
//
// Signs: mt19937 seeded with 42, signs1[i] = 2*(next() % 2) - 1 for i < G, then signs2 drawn
// next from the same stream. This is exactly what torch.Generator('cpu').manual_seed(42) +
// torch.randint(0, 2, (G,)) computes, so G = 128 reproduces the plugin's constants (checked
// against ALGORITHMS.md §1.2); other powers of two use the same rule (our extension: the
// plugin only ships G = 128, and pads non-power-of-two groups, which we refuse).
#ifndef TQSERVE_KERNELS_QUANT_ROTATION_H_
#define TQSERVE_KERNELS_QUANT_ROTATION_H_

#include <cstdint>
#include <vector>

namespace tq::quant {

inline constexpr uint32_t kRotationSeed = 42;

struct RotationSigns {
  std::vector<float> signs1;  // D1, applied first
  std::vector<float> signs2;  // D2, applied last
};

// Signs for a group of `group` values (a power of two). Cached and thread-safe.
const RotationSigns& GetRotationSigns(int group);

// Unnormalized in-place natural-order Walsh–Hadamard butterflies over n (a power of two) values.
void FwhtInPlace(float* x, int n);

// The rotation normalizer 1/sqrt(B) is applied as a float32 division by (float)sqrt(B), which
// is what `x / math.sqrt(n)` does on a float32 tensor.
inline float RotationDivisor(int block) {
  // sqrt of a power of two: exact for even exponents, correctly rounded otherwise.
  double s = 1.0;
  int b = block;
  while (b >= 4) {
    s *= 2.0;
    b /= 4;
  }
  if (b == 2) s *= 1.4142135623730950488;
  return static_cast<float>(s);
}

// Scalar reference transforms of one group (G values, block B dividing G):
//   forward: y = D2 · H_B · D1 · x
//   inverse: x = D1 · H_B · D2 · y   (H_B is symmetric and orthonormal)
void RotateForwardReference(const float* x, float* y, int group, int block);
void RotateInverseReference(const float* y, float* x, int group, int block);

inline bool IsPowerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

}  // namespace tq::quant

#endif  // TQSERVE_KERNELS_QUANT_ROTATION_H_
