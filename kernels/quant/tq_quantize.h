// File: kernels/quant/tq_quantize.h
//
// TQ ("scalar HIGGS") weight quantization of row-major float matrices, CPU reference.
//
// A weight matrix [rows, cols] is zero-padded on the input (column) side to a multiple of the
// group size G and split into groups of G consecutive columns. Each group w (ALGORITHMS.md §1.1):
//   n   = ||w||_2            (float32, torch's vectorized reduction order, see TorchNorm below)
//   u   = w / n              (n = 0 -> divisor 1)
//   y   = D2 · H · D1 · u    (rotation.h)
//   idx = searchsorted_left(boundaries, y)        (codebook.h)
//   stored gain, by GainMode:
//     kRaw            n
//     kNormCorrected  n / ||D1·H·D2·c[idx]||       (plugin default; reconstruction norm in float32)
//     kLeastSquares   n · <y, c[idx]> / ||c[idx]||^2   (ours; minimizes ||w - g·R^T c[idx]||)
// Dequantization: ŵ = (D1 · H · D2 · c[idx]) * gain, padding columns dropped.
//
// Output layout = the plugin's checkpoint layout: `packed` is uint8 [rows * n_groups,
// BytesPerGroup()] (row-major over (row, group)), `gains` is float32 [rows, n_groups].
//
// The float32 operations and their order are those of the plugin on torch's CPU backend, so the
// bytes match the plugin's for the same input (norm correction mode). Results do not depend on
// the instruction set used here: the AVX2 and portable builds perform identical IEEE operations
// (no FMA contraction, no reassociation).
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(TqQuantizer q, TqQuantizer::Create({.bits = 3, .group_size = 128}));
//   std::vector<uint8_t> packed(q.PackedSize(rows, cols));
//   std::vector<float> gains(q.GainsSize(rows, cols));
//   q.QuantizeRows(w, rows, cols, packed.data(), gains.data());
#ifndef TQSERVE_KERNELS_QUANT_TQ_QUANTIZE_H_
#define TQSERVE_KERNELS_QUANT_TQ_QUANTIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/rotation.h"

namespace tq::quant {

enum class GainMode {
  kRaw = 0,
  kNormCorrected = 1,  // the plugin's ("nc")
  kLeastSquares = 2,   // ours ("ls")
};

const char* GainModeName(GainMode m);  // "raw", "nc", "ls"
absl::StatusOr<GainMode> ParseGainMode(const std::string& s);

struct TqSpec {
  int bits = 3;            // 2, 3 or 4
  int group_size = 128;    // G: a power of two in [16, 1024]
  int rotation_block = 0;  // B: 0 or G = full WHT; a power of two < G = block-diagonal (§1.6)
  GainMode gain = GainMode::kNormCorrected;
  // Accumulator lanes of torch's vectorized float L2 norm that the plugin's norms go through.
  // 8 reproduces torch 2.11 bit for bit (measured on the GPU machine's AVX-512 Xeon: its
  // linalg.norm reduction runs 8-wide there too). Only affects the last bit of norms.
  int torch_norm_lanes = 8;

  int block() const { return rotation_block == 0 ? group_size : rotation_block; }
  int bytes_per_group() const { return group_size * bits / 8; }
  std::string DebugString() const;
};

// Validates a spec: bits in {2,3,4}, G power of two in [16, 1024], B power of two in [2, G],
// torch_norm_lanes in {1, 4, 8, 16} and dividing G.
absl::Status ValidateSpec(const TqSpec& spec);

class TqQuantizer {
 public:
  static absl::StatusOr<TqQuantizer> Create(const TqSpec& spec);

  const TqSpec& spec() const { return spec_; }
  const Codebook& codebook() const { return *codebook_; }

  int64_t GroupsPerRow(int64_t cols) const { return (cols + spec_.group_size - 1) / spec_.group_size; }
  int64_t PackedSize(int64_t rows, int64_t cols) const {
    return rows * GroupsPerRow(cols) * spec_.bytes_per_group();
  }
  int64_t GainsSize(int64_t rows, int64_t cols) const { return rows * GroupsPerRow(cols); }

  // Quantizes rows [0, rows) of the row-major matrix `w` (row stride = cols). The caller
  // guarantees finite inputs (use CountNonFinite to check).
  void QuantizeRows(const float* w, int64_t rows, int64_t cols, uint8_t* packed, float* gains) const;

  // Inverse: writes rows x cols floats.
  void DequantizeRows(const uint8_t* packed, const float* gains, int64_t rows, int64_t cols,
                      float* out) const;

 private:
  explicit TqQuantizer(const TqSpec& spec, const Codebook* cb) : spec_(spec), codebook_(cb) {}
  TqSpec spec_;
  const Codebook* codebook_;
};

// Number of NaN/Inf values in x[0..n).
int64_t CountNonFinite(const float* x, int64_t n);

// Name of the kernel variant the quantizer runs on this CPU ("avx2" or "portable").
const char* QuantKernelIsa();

}  // namespace tq::quant

#endif  // TQSERVE_KERNELS_QUANT_TQ_QUANTIZE_H_
