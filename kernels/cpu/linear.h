// File: kernels/cpu/linear.h
//
// CPU linear-layer kernels: y = x · Wᵀ for a weight W [n, k] stored either as TQ packed codes
// (docs/FORMAT.md §1) or densely as F32 / BF16 / F16. They take raw pointers, compute one slice
// [n_begin, n_end) of output features on the calling thread (an engine parallelizes by giving
// each thread its own slice) and know nothing of the engine. A column's value does not depend
// on the slice it was computed in. The only allocation is a per-thread activation panel
// (256 KiB, more when 8·k floats exceed that), made by the first m > 1 call on a thread and then
// reused.
//
// TQ math (FWHT on the input, ALGORITHMS.md §3.1). A TQ row j is cut into groups of G = group_size
// input columns (k zero-padded to Kp = TqPaddedK(k, G)); group g dequantizes to
//   ŵ[j, g] = gain[j, g] · R_gᵀ c[idx[j, g, :]],      R_g = D2 · H_B · D1   (orthonormal)
// with c the codebook, H_B the block-diagonal Walsh–Hadamard matrix (block B = rotation_block,
// B = G when 0) normalized by 1/sqrt(B) and D1, D2 the ±1 sign diagonals of quant::rotation.h.
// Hence
//   y[i, j] = Σ_g ⟨ŵ[j, g], x[i, g]⟩ = Σ_g gain[j, g] · Σ_t c[idx[j, g, t]] · x_rot[i, g·G + t],
//   x_rot[i, g] = R_g · x[i, g]   (quant::RotateForwardReference applied to each input group).
// The activation is rotated once per token (TqRotateInput, O(k log G)), then TqLinear streams the
// packed codes once and accumulates codebook values times x_rot: no weight is ever dequantized
// to memory, and no inverse rotation runs.
//
// Layouts (row-major, the checkpoint's own, FORMAT.md §1.2):
//   packed   uint8   [n · groups, G · bits / 8]   group (j, g) at byte (j · groups + g) · G·bits/8
//   gains    float32 [n, groups]                  (the checkpoint's `.tq_norms`)
//   codebook float32 [2^bits]                      quant::GetCodebook(bits, G).centroids
//   x        float32 [m, k], row stride ldx ≥ k
//   x_rot    float32 [m, Kp], row stride Kp        (zero-padded: padding columns are 0)
//   y        float32 [m, ≥ n_end], row stride ldy; only columns [n_begin, n_end) are written.
// Dense weights: w [n, k] row-major of the given type, no padding.
//
// Instruction sets. The kernels are compiled twice (BUILD.bazel): AVX2+FMA+F16C and portable
// C++; the AVX2 build runs when the CPU has all three (LinearKernelIsa()). Both accumulate in
// float32 in different orders, so results agree to float32 rounding, not bit for bit.
//
// Batch invariance. Within one build, y[i, :] is bitwise the same whatever m is, whatever place
// row i has in the batch, whatever the other rows hold (NaN included) and whatever slice
// [n_begin, n_end) computes a column: each output is summed in one canonical order fixed by k
// alone (linear_isa.cc), which the m == 1 GEMV and the m > 1 blocked path both follow. An engine
// that batches the tokens of several sequences into one call therefore gets, for each sequence,
// the bits it would get running alone. TqRotateInput is row-wise too (each row depends only on its
// own input row). The two builds still differ from each other.
//   m == 1 (decode GEMV), AVX2: each packed byte is read once, 4 rows at a time (2 for 4 bits)
//     sharing the x_rot loads, the next rows prefetched meanwhile; eight 3-bit codes come from
//     one 4-byte broadcast + variable shift and index an in-register codebook (vpermps; 4 bits
//     use two tables and a blend), FMA'd against x_rot, the gain folded into the table per group;
//     one accumulator per row (the rows are the independent FMA chains).
//   m > 1 (prefill, batched decode): activation rows are packed in blocks that fit half of L2
//     (at least 8 rows); per block, 3 weight rows x 1024 columns at a time are decoded (or
//     converted from BF16/F16) once into a float32 tile that a 4x3 register-blocked FMA kernel
//     reuses for every activation row of the block; each output's accumulator carries over
//     from one 1024-column block to the next.
//
// Usage (one layer, one thread owning output features [n0, n1)):
//   tq::cpu::TqLinearParams p{.packed = codes, .gains = norms,
//                             .codebook = tq::quant::GetCodebook(3, 128).centroids.data(),
//                             .n = 4096, .k = 4096, .bits = 3, .group_size = 128};
//   std::vector<float> x_rot(m * tq::cpu::TqPaddedK(p.k, p.group_size));
//   tq::cpu::TqRotateInput(x, m, p.k, /*ldx=*/p.k, p.group_size, p.rotation_block, x_rot.data());
//   tq::cpu::TqLinear(p, x_rot.data(), m, y, /*ldy=*/p.n, n0, n1);
//   // BF16 weights:
//   tq::cpu::DenseLinear(tq::cpu::WeightType::kBF16, w, n, k, x, m, k, y, n, n0, n1);
#ifndef TQSERVE_KERNELS_CPU_LINEAR_H_
#define TQSERVE_KERNELS_CPU_LINEAR_H_

#include <cstdint>

#include "absl/status/status.h"

namespace tq::cpu {

struct TqLinearParams {
  const uint8_t* packed = nullptr;   // [n * groups, group_size * bits / 8]
  const float* gains = nullptr;      // [n, groups]
  const float* codebook = nullptr;   // 2^bits centroids
  int64_t n = 0;                     // output features
  int64_t k = 0;                     // input features (unpadded)
  int bits = 3;                      // 2, 3 or 4
  int group_size = 128;              // power of two, 16..1024
  int rotation_block = 0;            // 0 or group_size = full rotation; else block-diagonal block size
};

// Number of groups of a row of k inputs.
inline int64_t TqGroups(int64_t k, int group_size) { return (k + group_size - 1) / group_size; }

// Row length of x_rot: groups * group_size.
inline int64_t TqPaddedK(int64_t k, int group_size) {
  return TqGroups(k, group_size) * group_size;
}

// OK if `p` describes a layout the kernels can run: non-null pointers, n, k >= 0, bits in
// {2, 3, 4}, group_size a power of two in [16, 1024], rotation_block 0 or a power of two in
// [2, group_size]. The kernels themselves do not check (call this once when a model loads).
absl::Status ValidateTqLinearParams(const TqLinearParams& p);

// x: [m, k] with row stride ldx. x_rot: [m, TqPaddedK] (padding zero-filled), not overlapping x.
// Rotates each group forward: x_rot_g = D2 · H_B · D1 · x_g / sqrt(B), B = rotation_block
// (0 = group_size).
void TqRotateInput(const float* x, int64_t m, int64_t k, int64_t ldx, int group_size,
                   int rotation_block, float* x_rot);

// y[i*ldy + j] = Σ_g gains[j,g] Σ_t codebook[idx(j,g,t)] * x_rot[i*TqPaddedK + g*G + t],
// for i < m, n_begin <= j < n_end. Overwrites y (only those entries).
void TqLinear(const TqLinearParams& p, const float* x_rot, int64_t m, float* y, int64_t ldy,
              int64_t n_begin, int64_t n_end);

enum class WeightType { kF32, kBF16, kF16 };

// W row-major [n, k] of that type; y[i*ldy + j] = Σ_t W[j,t] x[i*ldx + t] for i < m,
// n_begin <= j < n_end. Overwrites y (only those entries).
void DenseLinear(WeightType type, const void* w, int64_t n, int64_t k, const float* x, int64_t m,
                 int64_t ldx, float* y, int64_t ldy, int64_t n_begin, int64_t n_end);

// The instruction set the kernels above run on this CPU: "avx2" (AVX2 + FMA + F16C) or
// "portable".
const char* LinearKernelIsa();

// Scalar references with float64 accumulation (tests, debugging). Same contracts as TqLinear and
// DenseLinear; the TQ reference unpacks codes with quant::UnpackIndices.
void TqLinearReference(const TqLinearParams& p, const float* x_rot, int64_t m, float* y,
                       int64_t ldy, int64_t n_begin, int64_t n_end);
void DenseLinearReference(WeightType type, const void* w, int64_t n, int64_t k, const float* x,
                          int64_t m, int64_t ldx, float* y, int64_t ldy, int64_t n_begin,
                          int64_t n_end);

}  // namespace tq::cpu

#endif  // TQSERVE_KERNELS_CPU_LINEAR_H_
