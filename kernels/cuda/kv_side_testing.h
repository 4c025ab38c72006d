// File: kernels/cuda/kv_side_testing.h
//
// What the KV attention tests and benchmarks share (testonly): one side of a KV vector format —
// bf16, or PolarQuant with the turbo presets' settings (signs, fp32 corrected gain) at d values —
// encoded on the CPU (kernels/quant/kv_quant.h), and its device codebook and signs as a
// KvVectorFormat (kernels/cuda/kv_attention.h). Used by kv_attention_test and mla_attention_test
// (KvSide, DeviceKvFormat, ShuffledBlockTables) and their benchmarks (DeviceKvFormat's buffers
// freed on destruction; UploadContiguousTables, FillRandomBf16).
#ifndef TQSERVE_KERNELS_CUDA_KV_SIDE_TESTING_H_
#define TQSERVE_KERNELS_CUDA_KV_SIDE_TESTING_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/quant/kv_quant.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/kv_attention.h"

namespace tq::cuda {

// How a side's vectors are stored: bits 0 = bf16, else PolarQuant codes + fp32 corrected gain.
struct KvSide {
  int d = 128;
  int bits = 0;
  std::unique_ptr<quant::KvMseQuantizer> q;
  int64_t bytes() const { return bits == 0 ? 2 * d : q->bytes(); }
  // Stores x at dst and writes what the cache then holds, decoded, to `decoded`.
  void Encode(const float* x, uint8_t* dst, float* decoded) const {
    if (bits == 0) {
      for (int i = 0; i < d; ++i) {
        const uint16_t b = cpu::FloatToBf16(x[i]);
        std::memcpy(dst + 2 * i, &b, 2);
        decoded[i] = cpu::Bf16ToFloat(b);
      }
    } else {
      q->Encode(x, dst);
      q->Decode(dst, decoded);
    }
  }
};

inline KvSide MakeKvSide(int d, int bits, uint32_t seed) {
  KvSide s;
  s.d = d;
  s.bits = bits;
  if (bits != 0) {
    quant::KvMseSpec spec;
    spec.dim = d;
    spec.bits = bits;
    spec.signs = true;
    spec.seed = seed;
    spec.gain = quant::KvGain::kNormCorrected;
    spec.norm_type = quant::KvScalar::kF32;
    s.q = std::make_unique<quant::KvMseQuantizer>(spec);
  }
  return s;
}

// A side's codebook and signs on the device and the format pointing at them (bf16: no buffers).
class DeviceKvFormat {
 public:
  explicit DeviceKvFormat(const KvSide& s) {
    if (s.bits == 0) return;
    const std::vector<float>& cb = s.q->codebook().centroids;
    const std::vector<float> sg = s.q->rotation().signs12();
    codebook_ = Upload(cb);
    signs_ = Upload(sg);
    f.kind = KvVectorKind::kPolar;
    f.bits = s.bits;
    f.codebook = codebook_;
    f.signs = signs_;
    f.divisor = s.q->rotation().divisor();
  }
  ~DeviceKvFormat() {
    cudaFree(codebook_);
    cudaFree(signs_);
  }
  DeviceKvFormat(const DeviceKvFormat&) = delete;
  DeviceKvFormat& operator=(const DeviceKvFormat&) = delete;
  // False when an allocation or copy failed (the format then points at nothing).
  bool ok() const { return ok_; }

  KvVectorFormat f;

 private:
  float* Upload(const std::vector<float>& v) {
    float* p = nullptr;
    if (cudaMalloc(reinterpret_cast<void**>(&p), v.size() * sizeof(float)) != cudaSuccess ||
        cudaMemcpy(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
      ok_ = false;
    }
    return p;
  }
  float* codebook_ = nullptr;
  float* signs_ = nullptr;
  bool ok_ = true;
};

// Block tables of positions.size() sequences of positions[r] + 1 positions in blocks of block_size, the
// blocks of all of them handed out in a shuffled order: `table` (flat block ids, sequence by
// sequence) and `offset` (where each sequence's ids start). Returns the number of blocks.
inline int ShuffledBlockTables(const std::vector<int32_t>& positions, int block_size, std::mt19937& rng,
                               std::vector<int32_t>* table, std::vector<int32_t>* offset) {
  int total = 0;
  for (const int32_t p : positions) total += (p + block_size) / block_size;
  std::vector<int32_t> ids(total);
  for (int i = 0; i < total; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), rng);
  int next = 0;
  for (const int32_t p : positions) {
    offset->push_back(static_cast<int32_t>(table->size()));
    for (int b = 0; b < (p + block_size) / block_size; ++b) table->push_back(ids[next++]);
  }
  return total;
}

// Block tables of `rows` sequences of `context` positions in consecutive blocks of block_size
// (sequence r in blocks [r · per_row, (r + 1) · per_row)) and each row's position context − 1, in
// new device allocations the caller frees; *blocks: the number of blocks.
inline cudaError_t UploadContiguousTables(int rows, int64_t context, int block_size, int32_t** table,
                                          int32_t** offset, int32_t** positions, int64_t* blocks) {
  const int64_t per_row = (context + block_size - 1) / block_size;
  *blocks = per_row * rows;
  std::vector<int32_t> t(*blocks), off(rows), pos(rows, static_cast<int32_t>(context - 1));
  for (int64_t i = 0; i < *blocks; ++i) t[i] = static_cast<int32_t>(i);
  for (int r = 0; r < rows; ++r) off[r] = static_cast<int32_t>(r * per_row);
  for (const auto& [dst, src] : {std::pair{table, &t}, {offset, &off}, {positions, &pos}}) {
    const size_t bytes = src->size() * sizeof(int32_t);
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(dst), bytes);
    if (e == cudaSuccess) e = cudaMemcpy(*dst, src->data(), bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// `bytes` random bytes that read as bf16 N(0, 1) values (and as fp32 numbers of modest size) at
// device address dst.
inline cudaError_t FillRandomBf16(void* dst, size_t bytes, uint32_t seed) {
  std::vector<uint16_t> host((bytes + 1) / 2);
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& h : host) h = cpu::FloatToBf16(nd(gen));
  return cudaMemcpy(dst, host.data(), bytes, cudaMemcpyHostToDevice);
}

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_KV_SIDE_TESTING_H_
