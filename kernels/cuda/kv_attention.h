// File: kernels/cuda/kv_attention.h
//
// Decode attention that reads a paged KV cache in a KV codec's packed form (or BF16) directly:
// the query is rotated once, keys are scored from their codes in the rotated space, values are
// summed from their codes in the rotated space and rotated back once per head — no dequantized
// copy of the cache (issue 7; CPU reference: engine/kv_cache/kv_compressor.h ScoreKeys /
// AccumulateValues, kernels/quant/kv_quant.h).
//
// Flash-decoding: the positions of each (row, KV head) are split across `splits` CTAs. A CTA
// (4 warps) serves all G = num_heads / num_kv_heads query heads of its KV head (the GQA group
// shares every key and value it reads), 32 positions per warp at a time: the tile's values are
// copied to shared memory (cp.async) while lane j scores key j of the tile for the G heads (its
// whole key loaded at once), the warp updates an online softmax per head, then lane i
// accumulates dimensions 4i..4i+3 of the tile's values. A second kernel merges the splits (log-sum-exp),
// divides, and applies Rᵀ to packed values.
//
// Vector formats (head_dim d = 32, 64 or 128; one format for K and one for V):
//   kBf16   2d bytes of bf16 bits.
//   kPolar  PolarQuant / TurboQuant_mse with a stored gain (quant::KvMseQuantizer with fp32 gain,
//           i.e. the plugin presets turbo3, turbo4 and k4v3 with qjl=0, and the vLLM-style keys
//           whose gain is corrected at encode): [codes: d·bits/8 bytes, packed as
//           kernels/quant/packing.h | fp32 gain g]. The vector is g · Rᵀ c[idx] with
//           R = D2·H·D1 / divisor (signs may be absent: plain Hadamard). bits 2, 3 or 4; keys
//           also 8 (the plugin presets' boundary layers).
//
// Cache layouts (per layer; K and V separately):
//   kHeadMajor [num_blocks, num_kv_heads, block_size, bytes] — the positions of one KV head
//              within a block are contiguous (whole sectors for a warp's tile of packed vectors);
//   kSlotMajor [num_blocks, block_size, num_kv_heads, bytes] — the engine's BF16 cache
//              (kernels/cuda/nn_ops.h).
// Sinks (engine/kv_cache/kv_codec.h sink=N): positions [0, sink_tokens) of every sequence are read
// from a side store of fp32 vectors already in the attention space (R·x for packed formats; the
// CPU's ToAttention of its bf16 sink vector; written by WriteKvSinks), [slot, position, KV head,
// head_dim] for K and for V, row t using slot sink_slot[t]; their cache slots are not read.
// Row t attends to positions [lo, positions[t]] of its sequence through block_table +
// table_offset[t] (block ids in position order), lo = max(0, positions[t] − window + 1) when
// window > 0, else 0 (causal, optional sliding window). A split covers at least 128 positions;
// splits beyond the row's length do nothing (so a fixed split count serves any context, as CUDA
// graphs need).
//
// Tensor cores (packed 2-4-bit K and V, or 8-bit boundary-layer keys with 3- or 4-bit values;
// head_dim 128, G <= 8, block_size a multiple of 16; see tensor_cores below): a warp takes 16
// positions at a time, staged in shared memory by cp.async four tiles ahead (three with 8-bit
// keys); each lane decodes its codes with byte-permute tables in registers (8-bit keys: a 256-entry
// fp16 table in shared memory) straight into mma.sync m16n8k16 fragments: Sᵀ = K·Qᵀ (the tile's keys as rows), then Oᵀ = Vᵀ·Pᵀ with the
// weights passed through shared memory; online softmax in fp32. When `splits` asks for more CTAs
// than fit on the device at once it uses one wave of them (longer splits).
//
// Precision: the fp32 kernel is fp32 throughout (codebook, gains, rotation, scores, softmax,
// sums); results equal the CPU reference up to float summation order (~1e-6 relative). The
// tensor-core kernel multiplies fp16 operands with fp32 accumulation: the query scaled per head by
// a power of two into [0.5, 1), the centroids, and softmax weight × value gain / the largest gain
// so far (in [0, 1]); ~2^-11 relative per product (kv_attention_test bounds it at 4e-3 on outputs
// of magnitude ~1, against 2e-4 for the fp32 kernel).
//
// Usage:
//   tq::cuda::PackedAttentionParams p;  // q, caches, formats, tables, shapes, out
//   p.splits = tq::cuda::PlanAttentionSplits(rows, num_kv_heads, max_context, sms);
//   // workspace: PackedAttentionWorkspaceBytes(rows, num_heads, head_dim, p.splits) bytes
//   cudaError_t e = tq::cuda::PackedAttention(p, stream);
#ifndef TQSERVE_KERNELS_CUDA_KV_ATTENTION_H_
#define TQSERVE_KERNELS_CUDA_KV_ATTENTION_H_

#include <cstddef>
#include <cstdint>

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

namespace tq::cuda {

enum class KvVectorKind : int { kBf16 = 0, kPolar = 1 };
enum class KvCacheLayout : int { kHeadMajor = 0, kSlotMajor = 1 };

struct KvVectorFormat {
  KvVectorKind kind = KvVectorKind::kBf16;
  int bits = 0;                     // kPolar: 2, 3 or 4 (keys also 8)
  const float* codebook = nullptr;  // kPolar: 2^bits centroids (device)
  const float* signs = nullptr;     // kPolar: D1 then D2 (2·d floats, device), or null (plain H)
  float divisor = 1.0f;             // kPolar: the rotation's divisor (sqrt(d))
};

// Bytes of one stored vector of `head_dim` values.
int64_t KvVectorBytes(const KvVectorFormat& f, int head_dim);

struct PackedAttentionParams {
  const float* q = nullptr;  // [rows, num_heads * head_dim], row stride ldq
  int64_t ldq = 0;
  const uint8_t* k_cache = nullptr;  // layout above
  const uint8_t* v_cache = nullptr;
  KvVectorFormat k_format, v_format;
  const int32_t* block_table = nullptr;   // flat block ids of all sequences
  const int32_t* table_offset = nullptr;  // [rows]: where the row's sequence table starts
  const int32_t* positions = nullptr;     // [rows]: the row attends to [0, positions[row]]
  int64_t rows = 0;
  int num_heads = 0;
  int num_kv_heads = 0;  // divides num_heads; num_heads / num_kv_heads <= 8
  int head_dim = 128;    // 32, 64 or 128
  int block_size = 0;
  KvCacheLayout layout = KvCacheLayout::kHeadMajor;
  int64_t window = 0;    // 0: full causal
  float scale = 0.0f;    // usually 1/sqrt(head_dim)
  float* out = nullptr;  // [rows, num_heads * head_dim], row stride ldo
  int64_t ldo = 0;
  int sink_tokens = 0;                // > 0: sinks (above) from sink_k / sink_v
  const float* sink_k = nullptr;
  const float* sink_v = nullptr;
  const int32_t* sink_slot = nullptr;  // [rows]
  // Packed K and V of 2-4 bits (K = V bits, or 4-bit K with 3-bit V; 8-bit K with 3- or 4-bit V)
  // at head_dim 128, G <= 8 and block_size a multiple of 16 run on tensor cores (fp16 operands, fp32 accumulation; see
  // Precision) unless this is false; everything else runs the fp32 kernel.
  bool tensor_cores = true;
  int splits = 1;        // position splits per (row, KV head), 1..kMaxAttentionSplits
  float* workspace = nullptr;  // PackedAttentionWorkspaceBytes
  size_t workspace_bytes = 0;
};

inline constexpr int kMaxAttentionSplits = 256;

// Splits for `rows` rows of up to `max_context` positions on a device of `multiprocessors` SMs:
// about eight CTAs per SM, at least 128 positions per split.
int PlanAttentionSplits(int64_t rows, int num_kv_heads, int64_t max_context, int multiprocessors);

// Bytes of fp32 partial results (m, l and head_dim sums per row, head and split).
size_t PackedAttentionWorkspaceBytes(int64_t rows, int num_heads, int head_dim, int splits);

// nullptr when the kernel supports these shapes and formats; else a static string saying why not.
const char* PackedAttentionUnsupportedReason(const PackedAttentionParams& p);

cudaError_t PackedAttention(const PackedAttentionParams& p, cudaStream_t stream);

// Whether PackedAttention runs these parameters on the tensor-core kernel (above).
bool UseTensorCores(const PackedAttentionParams& p);

// ---------------------------------------------------------------------------------------------
// The writer: K or V rows into a slot-major packed cache, as quant::KvMseQuantizer::Encode does
// (fp32 gain, norm corrected at encode — the plugin presets): n = ‖x‖ (double sum), y = R·(x/n),
// idx_i = the number of boundaries below y_i (ties_up: at or below), g = n / ‖c[idx]‖, packed as
// kernels/quant/packing.h, then g. The same float operations in the same order as the CPU, so
// the codes are bitwise equal (the gain within an ulp: the double sums are reduced in another
// order). head_dim 32, 64 or 128; bits 2, 3, 4 or 8.
struct KvPolarEncoder {
  int bits = 3;
  const float* centroids = nullptr;   // 2^bits (device)
  const float* boundaries = nullptr;  // 2^bits - 1 (device)
  const float* signs = nullptr;       // D1 then D2 (2·head_dim, device), or null
  float divisor = 1.0f;
  bool ties_up = false;               // vLLM's `y >= mid`; the plugin's searchsorted: false
};

// x: rows × (num_kv_heads · head_dim) fp32, row stride ld; row r's head h goes to the vector
// at slot slots[r] (= block · block_size + offset) of `cache` ([num_blocks, block_size,
// num_kv_heads, bytes], bytes = KvVectorBytes of the format).
cudaError_t WriteKvPolar(const float* x, int64_t ld, int64_t rows, int num_kv_heads, int head_dim,
                         const int64_t* slots, const KvPolarEncoder& enc, uint8_t* cache, cudaStream_t stream);

// The sink writer: rows whose positions[r] < sink_tokens store each head's vector, rounded to
// bf16 (round to nearest even) and mapped to the attention space — R·x with R = D2·H·D1 / divisor
// (signs null: plain Hadamard), or unchanged when divisor == 0 — as fp32 at
// store[((sink_slot[r] · sink_tokens + positions[r]) · num_kv_heads + head) · head_dim]; other
// rows are skipped. head_dim 32, 64 or 128.
cudaError_t WriteKvSinks(const float* x, int64_t ld, int64_t rows, int num_kv_heads, int head_dim,
                         const int32_t* positions, const int32_t* sink_slot, int sink_tokens, const float* signs,
                         float divisor, float* store, cudaStream_t stream);

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_KV_ATTENTION_H_
