#include "engine/model/cuda_transformer.h"

#include "absl/strings/str_cat.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

#include "engine/model/moe.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/kv_attention.h"
#include "kernels/cuda/mla_ops.h"
#include "kernels/cuda/moe_ops.h"
#include "kernels/cuda/nn_ops.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/tq_linear_runner.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/tq_quantize.h"
#endif
#include <string>
#include <unordered_map>

#include "kernels/cuda/mla_attention.h"
#include "kernels/quant/kv_quant.h"
#include "kernels/util/status_macros.h"

namespace tq {

namespace {

constexpr char kCudaKvFormats[] =
    "the CUDA backend stores the KV cache as bf16 or as the PolarQuant presets turbo3, turbo4 and k4v3 "
    "without QJL (sink=N and boundary=N allowed)";

// How the CUDA kernels store one layer's K or V codec: 0 = bf16, b = PolarQuant codes of b bits
// + fp32 corrected gain (kernels/cuda/kv_attention.h); else UNIMPLEMENTED.
absl::StatusOr<int> DeviceKvBits(const KvCodec& codec, bool key, const std::string& format_name) {
  if (std::string(codec.name()) == "bf16") return 0;
  const quant::KvMseQuantizer* q = codec.mse_quantizer();
  if (q != nullptr && q->spec().gain == quant::KvGain::kNormCorrected && q->spec().norm_type == quant::KvScalar::kF32) {
    const int bits = q->spec().bits;
    if ((bits >= 2 && bits <= 4) || (key && bits == 8)) return bits;
  }
  return absl::UnimplementedError(absl::StrCat(kCudaKvFormats, "; got \"", format_name, "\" whose ",
                                               key ? "keys" : "values", " are ", codec.name()));
}

}  // namespace

namespace {

// Every layer's K and V codec as the kernels store them: keys and values of one family per layer,
// or (mla) bf16 keys — k_pe passed through — with any value codec the kernels store for the
// latent c. *packed: some layer stores PolarQuant codes.
absl::Status CheckLayerCodecs(const KvCacheFormat& f, bool mla, bool* packed) {
  *packed = false;
  if (f.qjl) return absl::UnimplementedError(absl::StrCat(kCudaKvFormats, "; got \"", f.name, "\" (QJL keys)"));
  for (int l = 0; l < f.num_layers(); ++l) {
    TQ_ASSIGN_OR_RETURN(const int kb, DeviceKvBits(*f.keys[l], true, f.name));
    TQ_ASSIGN_OR_RETURN(const int vb, DeviceKvBits(*f.values[l], false, f.name));
    if (mla && kb != 0) {
      return absl::UnimplementedError(absl::StrCat("KV cache \"", f.name, "\" on CUDA for an MLA model: k_pe (the keys) ",
                                                   "must be bf16 (MakeMlaKvCacheFormat)"));
    }
    if (!mla && (kb == 0) != (vb == 0)) {
      return absl::UnimplementedError(absl::StrCat(kCudaKvFormats, "; \"", f.name, "\" stores layer ", l,
                                                   "'s keys and values in different families"));
    }
    *packed = *packed || vb != 0;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaTransformer::CheckKvFormat(const KvCacheFormat& f, int num_heads, int num_kv_heads, int head_dim) {
  if (f.keys.empty() && f.sink_tokens == 0) return absl::OkStatus();  // bf16
  bool packed = false;
  TQ_RETURN_IF_ERROR(CheckLayerCodecs(f, /*mla=*/false, &packed));
  const bool needs_split_kernel = packed || f.sink_tokens > 0;
#if TQ_HAVE_CUDA
  if (needs_split_kernel) {
    cuda::PackedAttentionParams probe;
    probe.num_heads = num_heads;
    probe.num_kv_heads = num_kv_heads;
    probe.head_dim = head_dim;
    if (const char* why = cuda::PackedAttentionUnsupportedReason(probe)) {
      return absl::UnimplementedError(absl::StrCat("KV cache \"", f.name, "\" on CUDA: ", why, " (this model: ",
                                                   num_heads, " heads, ", num_kv_heads, " KV heads, head_dim ",
                                                   head_dim, "); use --kv-cache bf16"));
    }
  }
#else
  (void)num_heads, (void)num_kv_heads, (void)head_dim, (void)needs_split_kernel;
#endif
  return absl::OkStatus();
}

absl::Status CudaTransformer::CheckMlaKvFormat(const KvCacheFormat& f) {
  if (f.keys.empty() && f.sink_tokens == 0) return absl::OkStatus();  // bf16
  bool packed = false;
  TQ_RETURN_IF_ERROR(CheckLayerCodecs(f, /*mla=*/true, &packed));
  if ((packed || f.sink_tokens > 0) && !MlaKernelSupports(f.value_dim(), f.head_dim)) {
    return absl::UnimplementedError(absl::StrCat(
        "KV cache \"", f.name, "\" on CUDA for an MLA model: the latent (", f.value_dim(), " values) and k_pe (",
        f.head_dim, ") must each be a multiple of 16 and at most 512; use --kv-cache bf16"));
  }
  return absl::OkStatus();
}

bool CudaTransformer::MlaKernelSupports(int kv_lora_rank, int rope_dim) {
  return cuda::MlaPartDimSupported(kv_lora_rank) && cuda::MlaPartDimSupported(rope_dim);
}

#if !TQ_HAVE_CUDA

struct CudaTransformer::State {};

absl::StatusOr<std::unique_ptr<CudaTransformer>> CudaTransformer::Create(const ModelConfig&, const ModelWeights&,
                                                                         const RopeTable&, const CudaRunnerOptions&) {
  return absl::UnimplementedError("this build has no CUDA support (built without the CUDA toolkit); use --device cpu");
}
CudaTransformer::~CudaTransformer() = default;
absl::Status CudaTransformer::Forward(const ForwardBatch&, PagedKvCache&, std::vector<float>*) {
  return absl::UnimplementedError("this build has no CUDA support");
}
absl::Status CudaTransformer::ForwardSample(const ForwardBatch&, PagedKvCache&, const std::vector<RowSampling>&,
                                            std::vector<SampledToken>*) {
  return absl::UnimplementedError("this build has no CUDA support");
}
std::string CudaTransformer::Describe() const { return "cuda: not built"; }

#else  // TQ_HAVE_CUDA

namespace {

// A device allocation freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      p_ = o.p_, bytes_ = o.bytes_;
      o.p_ = nullptr, o.bytes_ = 0;
    }
    return *this;
  }
  void Reset() {
    if (p_ != nullptr) cudaFree(p_);
    p_ = nullptr, bytes_ = 0;
  }
  absl::Status Allocate(size_t bytes) {
    Reset();
    TQ_CUDA_RETURN_IF_ERROR(cudaMalloc(&p_, bytes == 0 ? 1 : bytes));
    bytes_ = bytes;
    return absl::OkStatus();
  }
  // Grows (never shrinks) to at least `bytes`; contents are not kept.
  absl::Status Reserve(size_t bytes) { return bytes <= bytes_ && p_ != nullptr ? absl::OkStatus() : Allocate(bytes); }
  absl::Status Upload(const void* host, size_t bytes) {
    TQ_RETURN_IF_ERROR(Allocate(bytes));
    TQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(p_, host, bytes, cudaMemcpyHostToDevice));
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (fast, truly asynchronous copies), freed on destruction.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (p_ != nullptr) cudaFreeHost(p_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  // Grows (never shrinks) to at least `bytes`; contents are not kept.
  absl::Status Reserve(size_t bytes) {
    if (bytes <= bytes_ && p_ != nullptr) return absl::OkStatus();
    if (p_ != nullptr) cudaFreeHost(p_);
    p_ = nullptr, bytes_ = 0;
    TQ_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p_, bytes == 0 ? 1 : bytes));
    bytes_ = bytes;
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

cuda::DType ToDeviceType(cpu::WeightType t) {
  switch (t) {
    case cpu::WeightType::kBF16:
      return cuda::DType::kBF16;
    case cpu::WeightType::kF16:
      return cuda::DType::kF16;
    default:
      return cuda::DType::kF32;
  }
}

size_t TypeBytes(cuda::DType t) { return t == cuda::DType::kF32 ? 4 : 2; }

// TQ kernels run through one of two runners: `graph` (decode batches captured in CUDA graphs;
// its scratch is reserved at load for m <= kMaxGraphBatch and never moves) and `eager` (any m).
struct TqRunners {
  cuda::TqLinearRunner* graph = nullptr;
  cuda::TqLinearRunner* eager = nullptr;
};

// A linear layer on the device: TQ codes (run by the TQ kernels), or dense weights.
// Whether every part is TQ codes of one format (bits, group size, rotation block) that `runner`'s
// device runs: then they can stay codes on the device.
bool TqCodesFit(const std::vector<const Linear*>& parts, const cuda::TqLinearRunner& runner) {
  const Linear& f = *parts[0];
  for (const Linear* p : parts) {
    if (!p->quantized() || !f.quantized() || p->tq().bits != f.tq().bits ||
        p->tq().group_size != f.tq().group_size || p->tq().rotation_block != f.tq().rotation_block) {
      return false;
    }
  }
  return runner.CheckFormat(f.tq().bits, f.tq().group_size, f.tq().rotation_block).ok();
}

// A residual add and RMSNorm not launched yet: x += a (a may be null), h = RmsNorm(x) · w. The
// linear that reads h launches it: fused with its int8 rotation at m = 1 on the int8 GEMV
// (TqLinearRunner::RunAddRmsNormInt8), else as AddRmsNormRows / RmsNormRows first (Launch).
struct PendingNorm {
  float* x = nullptr;
  const float* a = nullptr;
  const float* w = nullptr;
  int64_t width = 0;
  float eps = 0.0f;
  float* h = nullptr;
  bool fuse = true;  // may fuse into an int8 GEMV's rotation (TQ_CUDA_NORM_ROTATE=0: never)

  cudaError_t Launch(int64_t m, cudaStream_t stream) const {
    return a != nullptr ? cuda::AddRmsNormRows(x, width, a, width, w, m, width, eps, h, width, stream)
                        : cuda::RmsNormRows(x, width, w, m, width, eps, h, width, stream);
  }
};

struct DeviceLinear {
  int64_t n = 0, k = 0;
  bool tq = false;
  cuda::DType dtype = cuda::DType::kF32;
  DeviceBuffer w;     // dense weights, or the packed codes
  DeviceBuffer gains, codebook;
  cuda::TqCudaWeights tqw;
  DeviceBuffer bias;  // empty: none

  // Binds the row-wise concatenation of `parts` (same k) as one layer: q/k/v and gate/up become
  // one launch each. TQ parts with one format stay codes; dense parts of one type stay as stored;
  // anything else (mixed bit widths under the kurtosis policy, mixed types) is dequantized to
  // fp32 once. Logical layers are counted in *tq_layers / *dense_layers.
  absl::Status BindRows(const std::vector<const Linear*>& parts, bool dequantize, const cuda::TqLinearRunner& runner,
                        uint64_t* bytes, int* tq_layers, int* dense_layers) {
    n = 0;
    k = parts[0]->k();
    bool same_dense = true;
    const Linear& first = *parts[0];
    for (const Linear* p : parts) {
      if (p->k() != k) return absl::InternalError("BindRows: parts with different k");
      n += p->n();
      same_dense = same_dense && !p->quantized() && !first.quantized() && p->dense_type() == first.dense_type();
    }
    if (!dequantize && TqCodesFit(parts, runner)) {
      const cpu::TqLinearParams& f = first.tq();
      const int64_t groups = (k + f.group_size - 1) / f.group_size;
      const size_t row_bytes = static_cast<size_t>(groups) * (f.group_size * f.bits / 8);
      std::vector<uint8_t> packed;
      std::vector<float> gain;
      packed.reserve(static_cast<size_t>(n) * row_bytes);
      gain.reserve(static_cast<size_t>(n) * groups);
      for (const Linear* p : parts) {
        packed.insert(packed.end(), p->tq().packed, p->tq().packed + p->n() * row_bytes);
        gain.insert(gain.end(), p->tq().gains, p->tq().gains + p->n() * groups);
      }
      TQ_RETURN_IF_ERROR(w.Upload(packed.data(), packed.size()));
      TQ_RETURN_IF_ERROR(gains.Upload(gain.data(), gain.size() * sizeof(float)));
      TQ_RETURN_IF_ERROR(codebook.Upload(f.codebook, (size_t{1} << f.bits) * sizeof(float)));
      tqw.n = n;
      tqw.k = k;
      tqw.bits = f.bits;
      tqw.group_size = f.group_size;
      tqw.rotation_block = f.rotation_block;
      tqw.packed = w.as<uint8_t>();
      tqw.gains = gains.as<float>();
      tqw.codebook = codebook.as<float>();
      tq = runner.CheckSupported(tqw).ok();
      if (tq) {
        *bytes += w.bytes() + gains.bytes() + codebook.bytes();
      } else {
        w.Reset();
        gains.Reset();
        codebook.Reset();
      }
    }
    if (!tq) {
      if (k % 8 != 0) return absl::UnimplementedError(absl::StrCat("CUDA dense layers need k % 8 == 0, got ", k));
      if (same_dense) {
        dtype = ToDeviceType(first.dense_type());
        const size_t row = static_cast<size_t>(k) * TypeBytes(dtype);
        std::vector<uint8_t> all;
        all.reserve(static_cast<size_t>(n) * row);
        for (const Linear* p : parts) {
          const auto* src = static_cast<const uint8_t*>(p->dense_data());
          all.insert(all.end(), src, src + p->n() * row);
        }
        TQ_RETURN_IF_ERROR(w.Upload(all.data(), all.size()));
      } else {
        // fp32 of every part: TQ dequantized (the CPU's dequantized path), 16-bit widened.
        std::vector<float> dense;
        dense.reserve(static_cast<size_t>(n) * k);
        for (const Linear* p : parts) {
          TQ_ASSIGN_OR_RETURN(std::vector<float> part, p->ToFloat());
          dense.insert(dense.end(), part.begin(), part.end());
        }
        dtype = cuda::DType::kF32;
        TQ_RETURN_IF_ERROR(w.Upload(dense.data(), dense.size() * sizeof(float)));
      }
      *bytes += w.bytes();
    }
    (tq ? *tq_layers : *dense_layers) += static_cast<int>(parts.size());
    bool any_bias = false;
    for (const Linear* p : parts) any_bias = any_bias || !p->bias().empty();
    if (any_bias) {
      std::vector<float> b;
      for (const Linear* p : parts) {
        if (p->bias().empty()) {
          b.insert(b.end(), static_cast<size_t>(p->n()), 0.0f);
        } else {
          b.insert(b.end(), p->bias().begin(), p->bias().end());
        }
      }
      TQ_RETURN_IF_ERROR(bias.Upload(b.data(), b.size() * sizeof(float)));
      *bytes += bias.bytes();
    }
    return absl::OkStatus();
  }

  // A TQ layer over codes another DeviceLinear owns (one expert of DeviceExperts).
  static DeviceLinear TqView(const cuda::TqCudaWeights& w) {
    DeviceLinear v;
    v.n = w.n;
    v.k = w.k;
    v.tq = true;
    v.tqw = w;
    return v;
  }

  // Scratch of the graph runner for every decode batch size it may capture.
  absl::Status ReserveForGraphs(cuda::TqLinearRunner& runner, int64_t max_m, cudaStream_t stream) const {
    if (!tq) return absl::OkStatus();
    for (int64_t m = 1; m <= max_m; ++m) {
      TQ_RETURN_IF_ERROR(runner.Reserve(tqw, m, GraphKernel(runner, m), nullptr, stream));
    }
    return absl::OkStatus();
  }

  // Inside graphs only the tensor-core paths run (no cuBLAS, no dequantized scratch).
  cuda::TqKernel GraphKernel(const cuda::TqLinearRunner& runner, int64_t m) const {
    const cuda::TqKernel kk = runner.KernelFor(tqw, m);
    return kk == cuda::TqKernel::kDequantCublas ? cuda::TqKernel::kMmaFused : kk;
  }

  absl::Status Run(const float* x, int64_t m, float* y, cudaStream_t stream, const TqRunners& runners,
                   bool graph_mode) const {
    if (tq) {
      cuda::TqLinearRunner& r = graph_mode ? *runners.graph : *runners.eager;
      TQ_RETURN_IF_ERROR(r.Run(tqw, x, cuda::TqActType::kF32, m, k, y, nullptr, n, stream,
                               graph_mode ? GraphKernel(r, m) : cuda::TqKernel::kUnsupported));
      return AddBias(y, m, stream);
    }
    TQ_CUDA_RETURN_IF_ERROR(
        cuda::DenseLinear(w.as<void>(), dtype, n, k, x, k, m, bias.as<float>(), y, n, stream));
    return absl::OkStatus();
  }

  // y = h · Wᵀ + bias for h = the pending norm's output (written to norm.h either way): fused
  // with the int8 rotation when this layer runs m rows on the int8 GEMV, else the norm, then Run.
  absl::Status RunNormed(const PendingNorm& norm, int64_t m, float* y, cudaStream_t stream, const TqRunners& runners,
                         bool graph_mode) const {
    if (tq && norm.fuse && norm.width == k && k % cuda::kTqCudaGroupSize == 0 && n > 0) {
      cuda::TqLinearRunner& r = graph_mode ? *runners.graph : *runners.eager;
      if (r.KernelFor(tqw, m) == cuda::TqKernel::kInt8Gemv) {
        TQ_RETURN_IF_ERROR(r.RunAddRmsNormInt8(tqw, norm.x, norm.width, norm.a, norm.width, norm.w, norm.eps, m,
                                               norm.h, norm.width, y, n, stream));
        return AddBias(y, m, stream);
      }
    }
    TQ_CUDA_RETURN_IF_ERROR(norm.Launch(m, stream));
    return Run(norm.h, m, y, stream, runners, graph_mode);
  }

  // y = (silu(g) · u) · Wᵀ + bias for SwiGLU rows [g | u] (gate_up, row stride 2k) when this layer
  // runs m rows on the int8 GEMV, SiLU·mul fused into its rotation; *ran = false (nothing done)
  // otherwise.
  absl::Status RunSiluMulInt8(const float* gate_up, int64_t m, float* y, cudaStream_t stream,
                              const TqRunners& runners, bool graph_mode, bool* ran) const {
    *ran = false;
    if (!tq) return absl::OkStatus();
    cuda::TqLinearRunner& r = graph_mode ? *runners.graph : *runners.eager;
    if (r.KernelFor(tqw, m) != cuda::TqKernel::kInt8Gemv) return absl::OkStatus();
    TQ_RETURN_IF_ERROR(r.RunSiluMulInt8(tqw, gate_up, 2 * k, m, y, n, stream));
    *ran = true;
    return AddBias(y, m, stream);
  }

 private:
  absl::Status AddBias(float* y, int64_t m, cudaStream_t stream) const {
    if (bias.bytes() > 0) TQ_CUDA_RETURN_IF_ERROR(cuda::AddBiasRows(y, n, bias.as<float>(), m, n, stream));
    return absl::OkStatus();
  }
};

constexpr int64_t kMaxGraphBatch = 64;
// MoE decode steps of up to this many tokens route on the device and replay a graph (two grouped
// expert launches per layer whatever the batch: T · top-k grid planes of one m = 1 problem each,
// so the planes' re-reads of shared experts grow with T; larger steps take the host routing,
// which runs each active expert once over its tokens).
constexpr int64_t kMoeGraphBatch = 16;

constexpr int32_t kPagedDecodeMaxContext = 128;

// How one layer's K or V vectors are stored on the device (CheckKvFormat accepted the codec):
// bf16, or PolarQuant codes + fp32 gain with the codec's codebook, boundaries and signs.
struct DeviceKvSide {
  cuda::KvVectorFormat format;   // what the attention kernel reads
  cuda::KvPolarEncoder encoder;  // what the writer does (kPolar)
  DeviceBuffer centroids, boundaries, signs;
  int64_t bytes = 0;             // per vector
  int64_t stride = 0;            // MLA latent parts: bytes between slots (bytes rounded up to 4)

  absl::Status Bind(const KvCodec& codec, int head_dim) {
    const quant::KvMseQuantizer* q = codec.mse_quantizer();
    if (q == nullptr) {  // bf16
      bytes = 2 * static_cast<int64_t>(head_dim);
      return absl::OkStatus();
    }
    const quant::KvRotation& rot = q->rotation();
    TQ_RETURN_IF_ERROR(centroids.Upload(q->codebook().centroids.data(), q->codebook().centroids.size() * sizeof(float)));
    TQ_RETURN_IF_ERROR(
        boundaries.Upload(q->codebook().boundaries.data(), q->codebook().boundaries.size() * sizeof(float)));
    if (q->spec().signs) {
      const std::vector<float> sg = rot.signs12();
      TQ_RETURN_IF_ERROR(signs.Upload(sg.data(), sg.size() * sizeof(float)));
    }
    format.kind = cuda::KvVectorKind::kPolar;
    format.bits = q->spec().bits;
    format.codebook = centroids.as<float>();
    format.signs = q->spec().signs ? signs.as<float>() : nullptr;
    format.divisor = rot.divisor();
    encoder.bits = format.bits;
    encoder.centroids = centroids.as<float>();
    encoder.boundaries = boundaries.as<float>();
    encoder.signs = format.signs;
    encoder.divisor = format.divisor;
    encoder.ties_up = q->spec().ties_up;
    bytes = cuda::KvVectorBytes(format, head_dim);
    if (bytes != codec.BytesPerVector(head_dim)) {
      return absl::InternalError(absl::StrCat("KV codec ", codec.name(), ": ", codec.BytesPerVector(head_dim),
                                              " bytes per vector on the CPU, ", bytes, " on the GPU"));
    }
    return absl::OkStatus();
  }
  bool packed() const { return format.kind == cuda::KvVectorKind::kPolar; }
  // The writer's rotation into the attention space for sink vectors (0: the identity).
  float sink_divisor() const { return packed() ? format.divisor : 0.0f; }
};

// One SwiGLU MLP on the device: gate and up fused row-wise.
struct DeviceMlp {
  DeviceLinear gate_up, down;

  // out[m, down.n] = down(silu(gate(x)) * up(x)); gu [m, 2 · width] and act [m, width] are
  // scratch, width = down.k.
  absl::Status Run(const float* x, int64_t m, float* gu, float* act, float* out, cudaStream_t stream,
                   const TqRunners& runners, bool graph_mode) const {
    TQ_RETURN_IF_ERROR(gate_up.Run(x, m, gu, stream, runners, graph_mode));
    return RunDown(m, gu, act, out, stream, runners, graph_mode);
  }
  // The same for x = the pending norm's output (DeviceLinear::RunNormed).
  absl::Status RunNormed(const PendingNorm& norm, int64_t m, float* gu, float* act, float* out, cudaStream_t stream,
                         const TqRunners& runners, bool graph_mode) const {
    TQ_RETURN_IF_ERROR(gate_up.RunNormed(norm, m, gu, stream, runners, graph_mode));
    return RunDown(m, gu, act, out, stream, runners, graph_mode);
  }

 private:
  absl::Status RunDown(int64_t m, float* gu, float* act, float* out, cudaStream_t stream, const TqRunners& runners,
                       bool graph_mode) const {
    const int64_t w = down.k;
    bool fused = false;
    TQ_RETURN_IF_ERROR(down.RunSiluMulInt8(gu, m, out, stream, runners, graph_mode, &fused));
    if (fused) return absl::OkStatus();
    TQ_CUDA_RETURN_IF_ERROR(cuda::SiluMul(gu, 2 * w, gu + w, 2 * w, m, w, act, w, stream));
    return down.Run(act, m, out, stream, runners, graph_mode);
  }
};

// Every expert's gate|up rows back to back in one layer and every expert's down rows in another
// (DeviceLinear::BindRows over all experts, TQ codes of one format): a kernel picks an expert by
// a device index (TqLinearRunner::RunExpert; the graph-captured decode), the host path through
// per-expert views (`views`, DeviceMlps over these codes). ok = false when the experts are not all
// TQ codes of one format and shape the TQ kernels take.
struct DeviceExperts {
  bool ok = false;
  DeviceLinear gate_up_all, down_all;  // own the codes
  cuda::TqCudaWeights gu, down;        // expert 0
  int64_t gu_packed_stride = 0, gu_gains_stride = 0, down_packed_stride = 0, down_gains_stride = 0;

  absl::Status Bind(const std::vector<ExpertWeights>& xs, const cuda::TqLinearRunner& runner,
                    std::vector<DeviceMlp>* views, uint64_t* bytes, int* tq_layers, int* dense_layers) {
    ok = false;
    if (xs.empty()) return absl::OkStatus();
    const int64_t im = xs[0].gate.n(), h = xs[0].gate.k(), E = static_cast<int64_t>(xs.size());
    std::vector<const Linear*> gu_parts, down_parts;
    for (const ExpertWeights& x : xs) {
      // Equal shapes: expert e sits at e strides.
      if (x.gate.n() != im || x.gate.k() != h || x.up.n() != im || x.up.k() != h || x.down.n() != h ||
          x.down.k() != im) {
        return absl::OkStatus();
      }
      gu_parts.push_back(&x.gate);
      gu_parts.push_back(&x.up);
      down_parts.push_back(&x.down);
    }
    std::vector<const Linear*> all = gu_parts;
    all.insert(all.end(), down_parts.begin(), down_parts.end());
    if (!TqCodesFit(all, runner)) return absl::OkStatus();  // checked first: no dense fallback upload
    int tq = 0, dense = 0;
    uint64_t b = 0;
    TQ_RETURN_IF_ERROR(gate_up_all.BindRows(gu_parts, false, runner, &b, &tq, &dense));
    TQ_RETURN_IF_ERROR(down_all.BindRows(down_parts, false, runner, &b, &tq, &dense));
    if (!gate_up_all.tq || !down_all.tq) {  // not expected after TqCodesFit
      gate_up_all = DeviceLinear();
      down_all = DeviceLinear();
      return absl::OkStatus();
    }
    *bytes += b;
    *tq_layers += tq;
    *dense_layers += dense;
    gu = gate_up_all.tqw;
    gu.n = 2 * im;
    down = down_all.tqw;
    down.n = h;
    gu_packed_stride = static_cast<int64_t>(gate_up_all.w.bytes()) / E;
    gu_gains_stride = static_cast<int64_t>(gate_up_all.gains.bytes() / sizeof(float)) / E;
    down_packed_stride = static_cast<int64_t>(down_all.w.bytes()) / E;
    down_gains_stride = static_cast<int64_t>(down_all.gains.bytes() / sizeof(float)) / E;
    views->resize(E);
    for (int64_t e = 0; e < E; ++e) {
      cuda::TqCudaWeights g = gu, d = down;
      g.packed += e * gu_packed_stride;
      g.gains += e * gu_gains_stride;
      d.packed += e * down_packed_stride;
      d.gains += e * down_gains_stride;
      (*views)[e].gate_up = DeviceLinear::TqView(g);
      (*views)[e].down = DeviceLinear::TqView(d);
    }
    ok = true;
    return absl::OkStatus();
  }
};

struct DeviceLayer {
  DeviceLinear qkv, o;  // q/k/v fused row-wise
  // MLA (DeepseekV3): q_a, q_b, kv_a linears, their norms, kv_b_proj in fp32 (W_uk | W_uv per
  // head, kernels/cuda/mla_ops.h); the latent cache [c | k_pe]: in k_cache (bf16, latent_dim
  // values per slot), or as the CPU stores it — c packed in v_cache with v_side's codec, k_pe
  // bf16 in k_cache (slot strides v_side / k_side.stride).
  DeviceLinear q_a, q_b, kv_a;
  DeviceBuffer q_a_norm, kv_a_norm, kvb;
  DeviceMlp mlp;        // dense layers
  DeviceBuffer input_norm, post_norm, q_norm, k_norm;
  // MoE layers (engine/model/moe.h): the router and every expert (only the routed ones run),
  // the shared experts if any. Routing runs on the host from the router logits.
  bool moe = false;
  DeviceLinear router;
  std::vector<float> router_bias;  // host (e_score_correction_bias; empty: none)
  DeviceBuffer router_bias_dev;    // the same on the device (device routing)
  std::vector<DeviceMlp> experts;  // one per expert (views over `packed_experts` when it holds them)
  DeviceExperts packed_experts;
  bool device_routing = false;     // packed_experts and a router MoeTopK takes (graph-capturable)
  bool has_shared = false;
  DeviceMlp shared;
  DeviceKvSide k_side, v_side;
  DeviceBuffer k_cache, v_cache;
  // [sink slots, sink_tokens, num_kv_heads, head_dim] fp32 (MLA: [.., rope] k_pe, [.., kv_lora_rank] c)
  DeviceBuffer sink_k, sink_v;
};

}  // namespace

struct CudaTransformer::State {
  ModelConfig cfg;
  KvCacheOptions kv;
  int device = 0;
  cudaStream_t stream = nullptr;
  DeviceBuffer embed;
  cuda::DType embed_dtype = cuda::DType::kBF16;
  std::vector<DeviceLayer> layers;
  DeviceBuffer final_norm;
  DeviceLinear lm_head;
  DeviceBuffer cos, sin;
  // Step inputs.
  DeviceBuffer ids, positions, slots, table_offset, tables, logit_rows, sink_slot;
  // Activations.
  DeviceBuffer x, h, qkv, attn, tmp, gate, gate_up, sel, normed, logits;
  // MLA activations: q_a output, q, kv_a output [c | k_pe], the absorbed query and the
  // attention output per head (r + rope each).
  DeviceBuffer mla_qa, mla_q, mla_kva, mla_qabs, mla_olat;
  // Split-K decode attention (kernels/cuda/kv_attention.h) when it supports the shapes, else the
  // one-CTA-per-head PagedAttention; its split partials.
  bool split_attention = false;
  bool split_always = false;  // also short decode steps: TQ_CUDA_ATTENTION=split, a packed cache, sinks
  bool attention_tensor_cores = true;  // packed layers the tensor-core kernel takes (TQ_CUDA_ATTENTION_TC=0: off)
  // Norms fused into the next linear's int8 rotation at m = 1 (PendingNorm; TQ_CUDA_NORM_ROTATE=0: off).
  bool fuse_norm_rotation = true;
  bool split_now = false;     // this step's choice (see Forward)
  bool packed_kv = false;     // some layer stores PolarQuant codes (the split-K kernel reads them)
  bool mla_kernel = false;    // MLA attention by cuda::MlaAttention (else PagedAttention, bf16 latent only)
  // Sink positions (kv_codec.h sink=N): a slot of every layer's sink store per sequence.
  int sink_tokens = 0;
  int64_t sink_capacity = 0;  // slots allocated
  std::unordered_map<SeqHandle, int32_t> sink_slots;
  std::vector<int32_t> free_sink_slots;
  int multiprocessors = 1;
  int64_t max_positions = 0;
  DeviceBuffer attn_ws;
  // MoE scratch (RunMoe): router logits, per-expert token rows and weights, expert activations.
  bool has_moe = false;
  int64_t moe_width = 0;  // max(moe_intermediate_size, shared experts' width)
  DeviceBuffer router_logits, moe_rows, moe_weights, moe_in, moe_gu, moe_act, moe_eout;
  // Host staging in page-locked memory: the router logits, then per (token, expert) pair its
  // token row and weight (rows first, weights after T·K entries). Reused by the next MoE layer
  // only after that layer's synchronization, which follows these uploads in the stream.
  PinnedBuffer router_host, route_host;
  // ForwardSample: the rows' sampling parameters, masked ids and results (host staging, device).
  PinnedBuffer sample_host;
  DeviceBuffer sample_dev;
  int64_t capacity_tokens = 0, capacity_rows = 0;
  bool use_graphs = true;
  // Decode graphs captured with programmatic dependent launch between the kernels (sm_90+;
  // kernels/cuda/launch.h); TQ_CUDA_PDL=0 turns it off (A/B measurements).
  bool programmatic_launch = false;
  std::map<int64_t, cudaGraphExec_t> graphs;  // 2 · decode batch size + split_now -> captured step
  std::unique_ptr<cuda::TqLinearRunner> graph_runner, eager_runner;

  ~State() {
    for (auto& [n, g] : graphs) cudaGraphExecDestroy(g);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
  absl::Status Compute(int64_t T, int64_t R, bool graph_mode);
  absl::Status RunMoe(const DeviceLayer& L, const float* h, int64_t T, float* out, bool graph_mode);
  // MLA attention of one layer (DeepseekV3): h [T, hidden] in, the per-head values [T, heads ·
  // v_head_dim] out (before o_proj); writes the layer's latent cache.
  absl::Status MlaAttention(const DeviceLayer& L, const float* h, int64_t T, float* out, const TqRunners& runners,
                            bool graph_mode);
  absl::Status RunMoeOnDevice(const DeviceLayer& L, const float* h, int64_t T, float* out);
  absl::Status RunShared(const DeviceLayer& L, const float* h, int64_t T, float* out, bool graph_mode);
  // Device routing of decode steps (RunMoeOnDevice): [kMoeGraphBatch, top_k] ids and weights.
  DeviceBuffer topk_ids, topk_weights;
  absl::Status Run(int64_t T, int64_t R, bool decode_only);

  void DropGraphs() {
    for (auto& [n, g] : graphs) cudaGraphExecDestroy(g);
    graphs.clear();
  }

  // Bytes of one sink slot of one layer's K (or V) store.
  size_t SinkSlotBytes(bool value) const {
    const int64_t vector = static_cast<int64_t>(cfg.kv_cache_heads()) *
                           (value ? cfg.kv_cache_value_dim() : cfg.kv_cache_key_dim());
    return static_cast<size_t>(sink_tokens) * vector * sizeof(float);
  }

  // Grows every layer's sink stores to `slots` slots, keeping their contents.
  absl::Status GrowSinkStores(int64_t slots, uint64_t* kv_bytes) {
    if (slots <= sink_capacity) return absl::OkStatus();
    DropGraphs();
    for (DeviceLayer& L : layers) {
      for (const bool value : {false, true}) {
        DeviceBuffer* store = value ? &L.sink_v : &L.sink_k;
        DeviceBuffer grown;
        TQ_RETURN_IF_ERROR(grown.Allocate(slots * SinkSlotBytes(value)));
        if (sink_capacity > 0) {
          TQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(grown.as<void>(), store->as<void>(), sink_capacity * SinkSlotBytes(value),
                                             cudaMemcpyDeviceToDevice));
        }
        *store = std::move(grown);
      }
    }
    *kv_bytes += layers.size() * (slots - sink_capacity) * (SinkSlotBytes(false) + SinkSlotBytes(true));
    for (int64_t s = slots - 1; s >= sink_capacity; --s) free_sink_slots.push_back(static_cast<int32_t>(s));
    sink_capacity = slots;
    return absl::OkStatus();
  }

  // The sink slot of a sequence: its own, or a free one for a sequence starting at position 0
  // (slots of sequences the cache has freed are reclaimed; the stores grow when all are taken).
  absl::StatusOr<int32_t> SinkSlot(SeqHandle h, int64_t start_pos, const PagedKvCache& cache, uint64_t* kv_bytes) {
    auto it = sink_slots.find(h);
    if (it != sink_slots.end()) return it->second;
    if (start_pos > 0) {
      return absl::InternalError(absl::StrCat("sequence ", h, " continues at position ", start_pos,
                                              " but its sink positions were never written on this device"));
    }
    if (free_sink_slots.empty()) {
      for (auto s = sink_slots.begin(); s != sink_slots.end();) {
        if (cache.BlockTable(s->first).empty()) {
          free_sink_slots.push_back(s->second);
          s = sink_slots.erase(s);
        } else {
          ++s;
        }
      }
    }
    if (free_sink_slots.empty()) TQ_RETURN_IF_ERROR(GrowSinkStores(2 * sink_capacity, kv_bytes));
    const int32_t slot = free_sink_slots.back();
    free_sink_slots.pop_back();
    sink_slots.emplace(h, slot);
    return slot;
  }

  // Position splits of the attention of a T-row step: fixed per T (not per context), so that a
  // captured graph serves every context length (the kernel skips splits a row does not reach).
  int AttentionSplits(int64_t T) const {
    if (cfg.is_mla()) return cuda::PlanMlaAttentionSplits(T, cfg.num_heads, max_positions, multiprocessors);
    return cuda::PlanAttentionSplits(T, cfg.num_kv_heads, max_positions, multiprocessors);
  }

  // The step's block tables, positions and rows, as both attention kernels' params take them.
  template <typename P>
  void BindStepTables(P& ap, int64_t T) const {
    ap.block_table = tables.as<int32_t>();
    ap.table_offset = table_offset.as<int32_t>();
    ap.positions = positions.as<int32_t>();
    ap.rows = T;
    ap.block_size = kv.block_size;
  }

  // Grows the step buffers; captured graphs refer to the old addresses and are dropped.
  absl::Status EnsureCapacity(int64_t T, int64_t R) {
    const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
    if (T > capacity_tokens || R > capacity_rows) DropGraphs();
    if (split_attention || mla_kernel) {
      const size_t need =
          mla_kernel ? cuda::MlaAttentionWorkspaceBytes(T, cfg.num_heads, cfg.mla.latent_dim(), AttentionSplits(T))
                     : cuda::PackedAttentionWorkspaceBytes(T, cfg.num_heads, cfg.head_dim, AttentionSplits(T));
      if (need > attn_ws.bytes()) {
        DropGraphs();
        TQ_RETURN_IF_ERROR(attn_ws.Reserve(need));
      }
    }
    if (T > capacity_tokens) {
      const int64_t t = std::max<int64_t>(T, 64);
      const int64_t qkv_n = cfg.q_size() + 2 * cfg.kv_size();
      const int64_t attn_n = std::max<int64_t>(cfg.q_size(), static_cast<int64_t>(cfg.num_heads) * cfg.mla.v_head_dim);
      for (auto [buf, n] : {std::pair<DeviceBuffer*, int64_t>{&x, H}, {&h, H}, {&qkv, qkv_n}, {&attn, attn_n},
                            {&tmp, H}, {&gate, I}, {&gate_up, 2 * I}}) {
        TQ_RETURN_IF_ERROR(buf->Reserve(static_cast<size_t>(t * n) * sizeof(float)));
      }
      if (cfg.is_mla()) {
        const MlaConfig& m = cfg.mla;
        const int64_t nh = cfg.num_heads, lat = m.latent_dim();
        for (auto [buf, n] : {std::pair<DeviceBuffer*, int64_t>{&mla_qa, m.q_lora_rank}, {&mla_q, nh * m.qk_head_dim()},
                              {&mla_kva, lat}, {&mla_qabs, nh * lat}, {&mla_olat, nh * lat}}) {
          TQ_RETURN_IF_ERROR(buf->Reserve(static_cast<size_t>(t * n) * sizeof(float)));
        }
      }
      TQ_RETURN_IF_ERROR(ids.Reserve(t * sizeof(int32_t)));
      TQ_RETURN_IF_ERROR(positions.Reserve(t * sizeof(int32_t)));
      TQ_RETURN_IF_ERROR(slots.Reserve(t * sizeof(int64_t)));
      TQ_RETURN_IF_ERROR(table_offset.Reserve(t * sizeof(int32_t)));
      TQ_RETURN_IF_ERROR(sink_slot.Reserve(t * sizeof(int32_t)));
      if (has_moe) {
        const int64_t E = cfg.moe.n_routed_experts, K = cfg.moe.num_experts_per_tok;
        TQ_RETURN_IF_ERROR(router_logits.Reserve(static_cast<size_t>(t * E) * sizeof(float)));
        TQ_RETURN_IF_ERROR(moe_rows.Reserve(static_cast<size_t>(t * K) * sizeof(int32_t)));
        TQ_RETURN_IF_ERROR(moe_weights.Reserve(static_cast<size_t>(t * K) * sizeof(float)));
        for (auto [buf, n] : {std::pair<DeviceBuffer*, int64_t>{&moe_in, H}, {&moe_eout, H}, {&moe_gu, 2 * moe_width},
                              {&moe_act, moe_width}}) {
          TQ_RETURN_IF_ERROR(buf->Reserve(static_cast<size_t>(t * n) * sizeof(float)));
        }
      }
      capacity_tokens = t;
    }
    if (R > capacity_rows) {
      const int64_t r = std::max<int64_t>(R, 8);
      TQ_RETURN_IF_ERROR(sel.Reserve(static_cast<size_t>(r * H) * sizeof(float)));
      TQ_RETURN_IF_ERROR(normed.Reserve(static_cast<size_t>(r * H) * sizeof(float)));
      TQ_RETURN_IF_ERROR(logits.Reserve(static_cast<size_t>(r * cfg.vocab_size) * sizeof(float)));
      TQ_RETURN_IF_ERROR(logit_rows.Reserve(r * sizeof(int32_t)));
      capacity_rows = r;
    }
    return absl::OkStatus();
  }
};

absl::Status CudaTransformer::State::Compute(int64_t T, int64_t R, bool graph_mode) {
  const TqRunners runners{graph_runner.get(), eager_runner.get()};
  const int64_t H = cfg.hidden_size, qs = cfg.q_size(), kvs = cfg.kv_size();
  const int64_t ld = qs + 2 * kvs;  // row stride of the fused q|k|v output
  const int d = cfg.head_dim;
  cudaStream_t st = stream;
  float *xs = x.as<float>(), *hs = h.as<float>(), *qv = qkv.as<float>(), *kv_k = qv + qs, *kv_v = qv + qs + kvs,
        *at = attn.as<float>(), *tm = tmp.as<float>(), *gu = gate_up.as<float>(), *gt = gate.as<float>();
  const int32_t* pos = positions.as<int32_t>();
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  TQ_CUDA_RETURN_IF_ERROR(cuda::EmbedRows(embed.as<void>(), embed_dtype, ids.as<int32_t>(), T, H, xs, st));
  // Each layer's input norm comes from the previous layer's last residual add; the linear that
  // reads a norm's output launches it (PendingNorm: fused with the int8 rotation at m = 1).
  auto norm_of = [&](const float* a, const DeviceBuffer& w) {
    return PendingNorm{xs, a, w.as<float>(), H, eps, hs, fuse_norm_rotation};
  };
  for (int l = 0; l < cfg.num_layers; ++l) {
    const DeviceLayer& L = layers[l];
    const PendingNorm input_norm = norm_of(l == 0 ? nullptr : tm, L.input_norm);
    if (cfg.is_mla()) {
      TQ_CUDA_RETURN_IF_ERROR(input_norm.Launch(T, st));
      TQ_RETURN_IF_ERROR(MlaAttention(L, hs, T, at, runners, graph_mode));
    } else {
      TQ_RETURN_IF_ERROR(L.qkv.RunNormed(input_norm, T, qv, st, runners, graph_mode));
      if (cfg.qk_norm) {
        TQ_CUDA_RETURN_IF_ERROR(cuda::RmsNormHeads(qv, ld, T, cfg.num_heads, d, L.q_norm.as<float>(), eps, st));
        TQ_CUDA_RETURN_IF_ERROR(cuda::RmsNormHeads(kv_k, ld, T, cfg.num_kv_heads, d, L.k_norm.as<float>(), eps, st));
      }
      // q and k heads are adjacent in the fused q|k|v rows and rotate alike: one launch for both.
      TQ_CUDA_RETURN_IF_ERROR(
          cuda::ApplyRope(qv, ld, T, cfg.num_heads + cfg.num_kv_heads, d, pos, cos.as<float>(), sin.as<float>(), st));
      if (L.k_side.packed()) {  // CheckKvFormat: K and V of a layer are both packed or both bf16
        TQ_CUDA_RETURN_IF_ERROR(cuda::WriteKvPolar(kv_k, ld, T, cfg.num_kv_heads, d, slots.as<int64_t>(),
                                                   L.k_side.encoder, L.k_cache.as<uint8_t>(), st));
        TQ_CUDA_RETURN_IF_ERROR(cuda::WriteKvPolar(kv_v, ld, T, cfg.num_kv_heads, d, slots.as<int64_t>(),
                                                   L.v_side.encoder, L.v_cache.as<uint8_t>(), st));
      } else {
        TQ_CUDA_RETURN_IF_ERROR(cuda::WriteKvBf16(kv_k, kv_v, ld, T, cfg.num_kv_heads, d, slots.as<int64_t>(),
                                                  L.k_cache.as<uint16_t>(), L.v_cache.as<uint16_t>(), st));
      }
      if (sink_tokens > 0) {  // sink positions also go to the sequence's sink store
        for (const auto& [x_side, side, store] : {std::tuple{kv_k, &L.k_side, &L.sink_k}, {kv_v, &L.v_side, &L.sink_v}}) {
          TQ_CUDA_RETURN_IF_ERROR(cuda::WriteKvSinks(x_side, ld, T, cfg.num_kv_heads, d, pos, sink_slot.as<int32_t>(),
                                                     sink_tokens, side->format.signs, side->sink_divisor(),
                                                     store->as<float>(), st));
        }
      }
      // The fields both attention kernels share (their caches differ only in the pointer type).
      auto attention_shape = [&](auto& ap) {
        BindStepTables(ap, T);
        ap.q = qv;
        ap.ldq = ld;
        ap.num_heads = cfg.num_heads;
        ap.num_kv_heads = cfg.num_kv_heads;
        ap.head_dim = d;
        ap.window = cfg.sliding_window[l];
        ap.scale = 1.0f / std::sqrt(static_cast<float>(d));
        ap.out = at;
        ap.ldo = qs;
      };
      if (split_now) {
        cuda::PackedAttentionParams ap;  // the engine's slot-major layout
        attention_shape(ap);
        ap.k_cache = L.k_cache.as<uint8_t>();
        ap.v_cache = L.v_cache.as<uint8_t>();
        ap.k_format = L.k_side.format;
        ap.v_format = L.v_side.format;
        ap.layout = cuda::KvCacheLayout::kSlotMajor;
        ap.tensor_cores = attention_tensor_cores;
        if (sink_tokens > 0) {
          ap.sink_tokens = sink_tokens;
          ap.sink_k = L.sink_k.as<float>();
          ap.sink_v = L.sink_v.as<float>();
          ap.sink_slot = sink_slot.as<int32_t>();
        }
        ap.splits = AttentionSplits(T);
        ap.workspace = attn_ws.as<float>();
        ap.workspace_bytes = attn_ws.bytes();
        TQ_CUDA_RETURN_IF_ERROR(cuda::PackedAttention(ap, st));
      } else {
        cuda::PagedAttentionParams ap;
        attention_shape(ap);
        ap.k_cache = L.k_cache.as<uint16_t>();
        ap.v_cache = L.v_cache.as<uint16_t>();
        TQ_CUDA_RETURN_IF_ERROR(cuda::PagedAttention(ap, st));
      }
    }
    TQ_RETURN_IF_ERROR(L.o.Run(at, T, tm, st, runners, graph_mode));
    const PendingNorm post_norm = norm_of(tm, L.post_norm);
    if (L.moe) {
      TQ_CUDA_RETURN_IF_ERROR(post_norm.Launch(T, st));
      TQ_RETURN_IF_ERROR(RunMoe(L, hs, T, tm, graph_mode));
    } else {
      TQ_RETURN_IF_ERROR(L.mlp.RunNormed(post_norm, T, gu, gt, tm, st, runners, graph_mode));
    }
    if (l + 1 == cfg.num_layers) TQ_CUDA_RETURN_IF_ERROR(cuda::AddInPlace(xs, tm, T * H, st));
  }
  if (R > 0) {
    TQ_CUDA_RETURN_IF_ERROR(cuda::GatherRows(xs, logit_rows.as<int32_t>(), R, H, sel.as<float>(), st));
    TQ_CUDA_RETURN_IF_ERROR(
        cuda::RmsNormRows(sel.as<float>(), H, final_norm.as<float>(), R, H, eps, normed.as<float>(), H, st));
    TQ_RETURN_IF_ERROR(lm_head.Run(normed.as<float>(), R, logits.as<float>(), st, runners, graph_mode));
  }
  return absl::OkStatus();
}

// The MoE MLP of layer L on h[T, H] into out[T, H], as the CPU's MoeBlock::Run (moe.h): router
// logits on the device, routing on the host (the same RouteMoeToken, so the same experts and
// weights for the same logits), then per routed expert in id order: gather its tokens, gate|up,
// SiLU·mul, down, out[token] += weight · result; then the shared experts. Only the routed experts'
// weights are read. The logits' copy to the host synchronizes the stream (no CUDA graphs).
absl::Status CudaTransformer::State::MlaAttention(const DeviceLayer& L, const float* h, int64_t T, float* out,
                                                  const TqRunners& runners, bool graph_mode) {
  const MlaConfig& m = cfg.mla;
  const int nh = cfg.num_heads, nope = m.qk_nope_head_dim, rope = m.qk_rope_head_dim, dv = m.v_head_dim;
  const int r = m.kv_lora_rank, qkd = m.qk_head_dim(), lat = m.latent_dim();
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  cudaStream_t st = stream;
  float *qa = mla_qa.as<float>(), *q = mla_q.as<float>(), *kva = mla_kva.as<float>(), *qabs = mla_qabs.as<float>(),
        *olat = mla_olat.as<float>();
  const int32_t* pos = positions.as<int32_t>();
  // q = q_b(RMSNorm(q_a(h))); [c | k_pe] = kv_a(h), c normalized; RoPE of q_pe and k_pe.
  TQ_RETURN_IF_ERROR(L.q_a.Run(h, T, qa, st, runners, graph_mode));
  TQ_CUDA_RETURN_IF_ERROR(
      cuda::RmsNormRows(qa, m.q_lora_rank, L.q_a_norm.as<float>(), T, m.q_lora_rank, eps, qa, m.q_lora_rank, st));
  TQ_RETURN_IF_ERROR(L.q_b.Run(qa, T, q, st, runners, graph_mode));
  TQ_RETURN_IF_ERROR(L.kv_a.Run(h, T, kva, st, runners, graph_mode));
  TQ_CUDA_RETURN_IF_ERROR(cuda::RmsNormRows(kva, lat, L.kv_a_norm.as<float>(), T, r, eps, kva, lat, st));
  TQ_CUDA_RETURN_IF_ERROR(cuda::MlaRope(kva, lat, T, 1, lat, r, rope, m.rope_interleave, pos, cos.as<float>(),
                                        sin.as<float>(), st));
  TQ_CUDA_RETURN_IF_ERROR(cuda::MlaRope(q, static_cast<int64_t>(nh) * qkd, T, nh, qkd, nope, rope, m.rope_interleave,
                                        pos, cos.as<float>(), sin.as<float>(), st));
  // The latent [c | k_pe]: bf16 in one pool, or as the CPU stores it (c packed, k_pe bf16).
  const int64_t* slot_ids = slots.as<int64_t>();
  if (L.v_side.packed()) {
    TQ_CUDA_RETURN_IF_ERROR(cuda::WriteLatentPolar(kva, lat, T, r, slot_ids, L.v_side.encoder, L.v_cache.as<uint8_t>(),
                                                   L.v_side.stride, st));
    uint16_t* pe = L.k_cache.as<uint16_t>();
    TQ_CUDA_RETURN_IF_ERROR(cuda::WriteKvBf16(kva + r, kva + r, lat, T, 1, rope, slot_ids, pe, pe, st));
  } else {
    uint16_t* latent = L.k_cache.as<uint16_t>();
    TQ_CUDA_RETURN_IF_ERROR(cuda::WriteKvBf16(kva, kva, lat, T, 1, lat, slot_ids, latent, latent, st));
  }
  if (sink_tokens > 0) {  // sink positions also go to the sequence's sink stores (bf16, attention space)
    for (const auto& [offset, dim, side, store] :
         {std::tuple{r, rope, &L.k_side, &L.sink_k}, {0, r, &L.v_side, &L.sink_v}}) {
      TQ_CUDA_RETURN_IF_ERROR(cuda::WriteLatentSinks(kva + offset, lat, T, dim, pos, sink_slot.as<int32_t>(),
                                                     sink_tokens, side->format.signs, side->sink_divisor(),
                                                     store->as<float>(), st));
    }
  }
  TQ_CUDA_RETURN_IF_ERROR(cuda::MlaAbsorbQuery(q, static_cast<int64_t>(nh) * qkd, T, nh, nope, rope, dv, r,
                                               L.kvb.as<float>(), qabs, st));
  if (mla_kernel) {  // each latent read once per 16 heads; only r values per head are needed
    cuda::MlaAttentionParams ap;
    BindStepTables(ap, T);
    ap.q = qabs;
    ap.ldq = static_cast<int64_t>(nh) * lat;
    ap.lo_dim = r;     // c: the V slot
    ap.hi_dim = rope;  // k_pe: the K slot
    ap.lo.format = L.v_side.format;
    ap.hi.format = L.k_side.format;
    if (L.v_side.packed()) {
      ap.lo.cache = L.v_cache.as<uint8_t>();
      ap.lo.stride = L.v_side.stride;
      ap.hi.cache = L.k_cache.as<uint8_t>();
      ap.hi.stride = L.k_side.stride;
    } else {
      ap.lo.cache = L.k_cache.as<uint8_t>();
      ap.hi.cache = ap.lo.cache + 2 * r;
      ap.lo.stride = ap.hi.stride = 2 * static_cast<int64_t>(lat);
    }
    ap.num_heads = nh;
    ap.scale = MlaSoftmaxScale(cfg);  // from the per-head key width, not the latent's
    ap.out = olat;
    ap.out_dim = r;
    ap.ldo = static_cast<int64_t>(nh) * r;
    if (sink_tokens > 0) {
      ap.sink_tokens = sink_tokens;
      ap.sink_slot = sink_slot.as<int32_t>();
      ap.lo.sinks = L.sink_v.as<float>();
      ap.hi.sinks = L.sink_k.as<float>();
    }
    ap.tensor_cores = attention_tensor_cores;  // packed latents (TQ_CUDA_ATTENTION_TC=0: the fp32 kernel)
    ap.splits = AttentionSplits(T);
    ap.workspace = attn_ws.as<float>();
    ap.workspace_bytes = attn_ws.bytes();
    TQ_CUDA_RETURN_IF_ERROR(cuda::MlaAttention(ap, st));
    TQ_CUDA_RETURN_IF_ERROR(cuda::MlaOutput(olat, r, T, nh, nope, dv, r, L.kvb.as<float>(), out, st));
    return absl::OkStatus();
  }
  uint16_t* latent = L.k_cache.as<uint16_t>();
  cuda::PagedAttentionParams ap;
  BindStepTables(ap, T);
  ap.q = qabs;
  ap.ldq = static_cast<int64_t>(nh) * lat;
  ap.k_cache = latent;
  ap.v_cache = latent;
  ap.num_heads = nh;
  ap.num_kv_heads = 1;
  ap.head_dim = lat;
  ap.scale = MlaSoftmaxScale(cfg);  // from the per-head key width, not the latent's
  ap.out = olat;
  ap.ldo = static_cast<int64_t>(nh) * lat;
  TQ_CUDA_RETURN_IF_ERROR(cuda::PagedAttention(ap, st));
  TQ_CUDA_RETURN_IF_ERROR(cuda::MlaOutput(olat, lat, T, nh, nope, dv, r, L.kvb.as<float>(), out, st));
  return absl::OkStatus();
}

absl::Status CudaTransformer::State::RunMoe(const DeviceLayer& L, const float* h, int64_t T, float* out,
                                            bool graph_mode) {
  if (graph_mode) return RunMoeOnDevice(L, h, T, out);
  const TqRunners runners{graph_runner.get(), eager_runner.get()};
  const MoeConfig& moe = cfg.moe;
  const int E = moe.n_routed_experts;
  const int64_t H = cfg.hidden_size;
  cudaStream_t st = stream;
  TQ_RETURN_IF_ERROR(L.router.Run(h, T, router_logits.as<float>(), st, runners, false));
  const size_t logits = static_cast<size_t>(T) * E;
  TQ_RETURN_IF_ERROR(router_host.Reserve(logits * sizeof(float)));
  TQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(router_host.as<void>(), router_logits.as<void>(), logits * sizeof(float),
                                          cudaMemcpyDeviceToHost, st));
  TQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  std::vector<std::vector<std::pair<int32_t, float>>> routed(E);
  std::vector<int> ex;
  std::vector<float> wt;
  const float* bias = L.router_bias.empty() ? nullptr : L.router_bias.data();
  for (int64_t t = 0; t < T; ++t) {
    RouteMoeToken(moe, router_host.as<float>() + t * E, bias, &ex, &wt);
    for (size_t i = 0; i < ex.size(); ++i) routed[ex[i]].push_back({static_cast<int32_t>(t), wt[i]});
  }
  size_t pairs = 0;
  for (const auto& toks : routed) pairs += toks.size();
  if (pairs * sizeof(int32_t) > moe_rows.bytes()) {
    return absl::InternalError("MoE routing produced more (token, expert) pairs than reserved");
  }
  TQ_RETURN_IF_ERROR(route_host.Reserve(2 * pairs * sizeof(int32_t)));
  int32_t* rows_h = route_host.as<int32_t>();
  float* weights_h = reinterpret_cast<float*>(rows_h + pairs);
  size_t i = 0;
  for (const auto& toks : routed) {
    for (const auto& [t, w] : toks) rows_h[i] = t, weights_h[i] = w, ++i;
  }
  TQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(moe_rows.as<void>(), rows_h, pairs * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  TQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(moe_weights.as<void>(), weights_h, pairs * sizeof(float), cudaMemcpyHostToDevice, st));
  TQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, static_cast<size_t>(T * H) * sizeof(float), st));
  float *in = moe_in.as<float>(), *gu = moe_gu.as<float>(), *act = moe_act.as<float>(), *eo = moe_eout.as<float>();
  int64_t off = 0;
  for (int e = 0; e < E; ++e) {
    const int64_t n = static_cast<int64_t>(routed[e].size());
    if (n == 0) continue;  // only the active experts' weights are read
    const int32_t* rows = moe_rows.as<int32_t>() + off;
    // Every token (always so at batch 1): the rows are 0..T-1 in order (routed in token order,
    // a token at most once per expert), so h itself, no gather.
    const bool all_tokens = n == T;
    if (!all_tokens) TQ_CUDA_RETURN_IF_ERROR(cuda::GatherRows(h, rows, n, H, in, st));
    TQ_RETURN_IF_ERROR(L.experts[e].Run(all_tokens ? h : in, n, gu, act, eo, st, runners, false));
    TQ_CUDA_RETURN_IF_ERROR(cuda::AddScaledRows(eo, rows, moe_weights.as<float>() + off, n, H, out, H, st));
    off += n;
  }
  return RunShared(L, h, T, out, false);
}

// out += the shared experts' MLP of h (if the layer has them).
absl::Status CudaTransformer::State::RunShared(const DeviceLayer& L, const float* h, int64_t T, float* out,
                                               bool graph_mode) {
  if (!L.has_shared) return absl::OkStatus();
  const TqRunners runners{graph_runner.get(), eager_runner.get()};
  float *gu = moe_gu.as<float>(), *act = moe_act.as<float>(), *eo = moe_eout.as<float>();
  TQ_RETURN_IF_ERROR(L.shared.Run(h, T, gu, act, eo, stream, runners, graph_mode));
  TQ_CUDA_RETURN_IF_ERROR(cuda::AddInPlace(out, eo, T * cfg.hidden_size, stream));
  return absl::OkStatus();
}

// The same MoE MLP for a decode step of T <= kMoeGraphBatch tokens with nothing on the host:
// MoeTopK routes on the device (kernels/cuda/moe_ops.h, RouteMoeToken's contract); one grouped
// TQ launch runs gate|up for all T · top_k (token, slot) pairs, each on its expert by device
// index (TqLinearRunner::RunExpert slots), one SiLU·mul covers them, one grouped launch runs the
// down projections, and MoeCombine adds each token's slots weighted, in slot order — five
// kernels per layer whatever the routing, all capturable in the step's CUDA graph. The sums per
// token are in slot order (the host path: expert id order), so results differ in the last bits.
absl::Status CudaTransformer::State::RunMoeOnDevice(const DeviceLayer& L, const float* h, int64_t T, float* out) {
  const MoeConfig& moe = cfg.moe;
  const int K = moe.num_experts_per_tok;
  if (!L.device_routing || T > kMoeGraphBatch || T * K > capacity_tokens) {
    return absl::InternalError("MoE layer without device routing inside a captured step");
  }
  const TqRunners runners{graph_runner.get(), eager_runner.get()};
  const int64_t H = cfg.hidden_size, Im = moe.moe_intermediate_size;
  cudaStream_t st = stream;
  TQ_RETURN_IF_ERROR(L.router.Run(h, T, router_logits.as<float>(), st, runners, true));
  cuda::MoeRouting r;
  r.num_experts = moe.n_routed_experts;
  r.top_k = K;
  r.softmax = moe.softmax_scoring;
  r.normalize = moe.norm_topk_prob;
  r.scale = static_cast<float>(moe.routed_scaling_factor);
  r.bias = L.router_bias.empty() ? nullptr : L.router_bias_dev.as<float>();
  r.n_group = moe.n_group;
  r.topk_group = moe.topk_group;
  int32_t* ids = topk_ids.as<int32_t>();
  float* wts = topk_weights.as<float>();
  TQ_CUDA_RETURN_IF_ERROR(cuda::MoeTopK(router_logits.as<float>(), r.num_experts, T, r, ids, wts, st));
  float *gu = moe_gu.as<float>(), *act = moe_act.as<float>(), *eo = moe_eout.as<float>();
  const DeviceExperts& X = L.packed_experts;
  cuda::TqLinearRunner& run = *graph_runner;
  const int slots = static_cast<int>(T * K);
  // gate|up: slot s reads token s / K's row of h.
  TQ_RETURN_IF_ERROR(run.RunExpert(X.gu, ids, X.gu_packed_stride, X.gu_gains_stride, h, cuda::TqActType::kF32, 1, H,
                                   gu, 2 * Im, st, slots, K));
  TQ_CUDA_RETURN_IF_ERROR(cuda::SiluMul(gu, 2 * Im, gu + Im, 2 * Im, slots, Im, act, Im, st));
  // down: slot s reads its own activation row.
  TQ_RETURN_IF_ERROR(run.RunExpert(X.down, ids, X.down_packed_stride, X.down_gains_stride, act,
                                   cuda::TqActType::kF32, 1, Im, eo, H, st, slots, 1));
  TQ_CUDA_RETURN_IF_ERROR(cuda::MoeCombine(eo, wts, T, K, H, out, H, st));
  return RunShared(L, h, T, out, true);
}

// Decode-only steps of up to kMaxGraphBatch sequences replay a CUDA graph captured once per
// batch size (all buffers they touch have fixed addresses); other steps launch eagerly.
absl::Status CudaTransformer::State::Run(int64_t T, int64_t R, bool decode_only) {
  if (!use_graphs || !decode_only || T > (has_moe ? kMoeGraphBatch : kMaxGraphBatch) || R != T) {
    return Compute(T, R, false);
  }
  const int64_t key = 2 * T + (split_now ? 1 : 0);
  auto it = graphs.find(key);
  if (it == graphs.end()) {
    cudaGraph_t graph = nullptr;
    TQ_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    absl::Status captured;
    {
      cuda::ScopedProgrammaticLaunch pdl(programmatic_launch);
      captured = Compute(T, R, true);
    }
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    TQ_RETURN_IF_ERROR(captured);
    TQ_CUDA_RETURN_IF_ERROR(end);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    TQ_CUDA_RETURN_IF_ERROR(inst);
    it = graphs.emplace(key, exec).first;
  }
  TQ_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CudaTransformer>> CudaTransformer::Create(const ModelConfig& cfg,
                                                                         const ModelWeights& weights,
                                                                         const RopeTable& rope,
                                                                         const CudaRunnerOptions& options) {
  int count = 0;
  TQ_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.device, " does not exist (", count,
                                                   " visible)"));
  }
  TQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  const int attention_dim = cfg.is_mla() ? cfg.mla.latent_dim() : cfg.head_dim;  // what PagedAttention reads
  // MLA: the latent [c | k_pe] read by MlaAttention (bf16, or c packed; sinks) when it takes
  // their widths, else (bf16 only) by PagedAttention as one KV head of latent_dim.
  const bool mla_kernel = cfg.is_mla() && MlaKernelSupports(cfg.mla.kv_lora_rank, cfg.rope_dim());
  if (cfg.is_mla()) {
    TQ_RETURN_IF_ERROR(CheckMlaKvFormat(options.kv_format));
    if (cfg.mla.q_lora_rank <= 0) {
      return absl::UnimplementedError("MLA on CUDA needs q_lora_rank > 0 (q_a_proj / q_b_proj)");
    }
  } else {
    TQ_RETURN_IF_ERROR(CheckKvFormat(options.kv_format, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim));
  }
  if (!options.kv_format.keys.empty() && options.kv_format.num_layers() != cfg.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache format for ", options.kv_format.num_layers(),
                                                   " layers, model has ", cfg.num_layers));
  }
  if (!mla_kernel && !cuda::PagedAttentionSupports(attention_dim)) {
    return absl::UnimplementedError(absl::StrCat("CUDA attention supports even head_dim up to 576, got ",
                                                 attention_dim, cfg.is_mla() ? " (MLA: kv_lora_rank + qk_rope_head_dim)" : ""));
  }
  if (cfg.hidden_size % 8 != 0 || cfg.intermediate_size % 8 != 0) {
    return absl::UnimplementedError("CUDA backend needs hidden and intermediate sizes that are multiples of 8");
  }
  std::unique_ptr<CudaTransformer> r(new CudaTransformer());
  r->state_ = std::make_unique<State>();
  State& s = *r->state_;
  s.cfg = cfg;
  s.kv = options.kv;
  s.device = options.device;
  r->max_positions_ = rope.max_positions();
  cudaDeviceProp prop;
  TQ_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options.device));
  r->description_ = absl::StrCat(prop.name, ", sm_", prop.major, prop.minor, ", ", prop.multiProcessorCount, " SMs");
  s.multiprocessors = prop.multiProcessorCount;
  {
    const char* pdl = std::getenv("TQ_CUDA_PDL");
    s.programmatic_launch = prop.major >= 9 && !(pdl != nullptr && std::strcmp(pdl, "0") == 0);
  }
  s.max_positions = rope.max_positions();
  {
    cuda::PackedAttentionParams probe;
    probe.num_heads = cfg.num_heads;
    probe.num_kv_heads = cfg.num_kv_heads;
    probe.head_dim = cfg.head_dim;
    s.split_attention = !cfg.is_mla() && cuda::PackedAttentionUnsupportedReason(probe) == nullptr;
    s.mla_kernel = mla_kernel;
    // A packed cache or sinks: only the split-K kernel reads them (CheckKvFormat made sure it can).
    s.sink_tokens = options.kv_format.sink_tokens;
    for (const auto& codec : options.kv_format.keys) s.packed_kv = s.packed_kv || codec->mse_quantizer() != nullptr;
    const bool split_only = s.packed_kv || s.sink_tokens > 0;
    // TQ_CUDA_ATTENTION=paged / split forces one kernel for every step (A/B measurements; a
    // packed cache ignores "paged").
    const char* force = std::getenv("TQ_CUDA_ATTENTION");
    if (force != nullptr && std::strcmp(force, "paged") == 0 && !split_only) s.split_attention = false;
    s.split_always = s.split_attention && (split_only || (force != nullptr && std::strcmp(force, "split") == 0));
    // TQ_CUDA_ATTENTION_TC=0 keeps packed layers on the fp32 split kernel (A/B of the
    // tensor-core kernel's fp16 operands, kernels/cuda/kv_attention.h).
    const char* tc = std::getenv("TQ_CUDA_ATTENTION_TC");
    s.attention_tensor_cores = !(tc != nullptr && std::strcmp(tc, "0") == 0);
    // TQ_CUDA_NORM_ROTATE=0 launches each RMSNorm apart from the int8 rotation after it (A/B).
    const char* nr = std::getenv("TQ_CUDA_NORM_ROTATE");
    s.fuse_norm_rotation = !(nr != nullptr && std::strcmp(nr, "0") == 0);
    absl::StrAppend(&r->description_, s.split_attention ? ", split-K attention"
                                      : s.mla_kernel    ? ", MLA attention (latent read once per 16 heads)"
                                                        : ", paged attention");
    if (!options.kv_format.name.empty()) absl::StrAppend(&r->description_, ", KV ", options.kv_format.name);
  }
  TQ_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  TQ_ASSIGN_OR_RETURN(s.graph_runner, cuda::TqLinearRunner::Create(options.device));
  TQ_ASSIGN_OR_RETURN(s.eager_runner, cuda::TqLinearRunner::Create(options.device));
  s.graph_runner->set_int8_gemv(options.int8_gemv, options.int8_gemv_all_rows);
  s.eager_runner->set_int8_gemv(options.int8_gemv, options.int8_gemv_all_rows);
  if (options.int8_gemv) {
    absl::StrAppend(&r->description_, options.int8_gemv_all_rows ? ", int8-activation TQ3 GEMV for every row"
                                                                 : ", int8-activation TQ3 GEMV at m = 1");
  }

  uint64_t bytes = 0;
  switch (weights.embed_dtype) {
    case tq::DType::kBF16:
      s.embed_dtype = cuda::DType::kBF16;
      break;
    case tq::DType::kF16:
      s.embed_dtype = cuda::DType::kF16;
      break;
    case tq::DType::kF32:
      s.embed_dtype = cuda::DType::kF32;
      break;
    default:
      return absl::UnimplementedError("CUDA backend: embedding dtype must be BF16, F16 or F32");
  }
  const size_t embed_bytes = static_cast<size_t>(cfg.vocab_size) * cfg.hidden_size * TypeBytes(s.embed_dtype);
  TQ_RETURN_IF_ERROR(s.embed.Upload(weights.embed, embed_bytes));
  bytes += embed_bytes;
  auto upload_floats = [&](DeviceBuffer& b, const std::vector<float>& v) -> absl::Status {
    if (v.empty()) return absl::OkStatus();
    bytes += v.size() * sizeof(float);
    return b.Upload(v.data(), v.size() * sizeof(float));
  };
  s.layers.resize(cfg.num_layers);
  const size_t vectors = static_cast<size_t>(s.kv.num_blocks) * s.kv.block_size * cfg.num_kv_heads;
  for (int l = 0; l < cfg.num_layers; ++l) {
    const LayerWeights& L = weights.layers[l];
    DeviceLayer& D = s.layers[l];
    int* tq_n = &r->tq_on_codes_;
    int* dense_n = &r->dense_layers_;
    if (cfg.is_mla()) {
      for (auto [dst, src] : {std::pair<DeviceLinear*, const Linear*>{&D.q_a, &L.q_a}, {&D.q_b, &L.q_b}, {&D.kv_a, &L.kv_a}}) {
        TQ_RETURN_IF_ERROR(dst->BindRows({src}, options.dequantize_tq, *s.eager_runner, &bytes, tq_n, dense_n));
      }
      TQ_RETURN_IF_ERROR(upload_floats(D.q_a_norm, L.q_a_norm));
      TQ_RETURN_IF_ERROR(upload_floats(D.kv_a_norm, L.kv_a_norm));
      auto kvb = L.kv_b.ToFloat();  // W_uk | W_uv per head, fp32 (dequantized once when TQ)
      if (!kvb.ok()) return absl::Status(kvb.status().code(), absl::StrCat("layer ", l, " kv_b_proj: ", kvb.status().message()));
      const MlaConfig& m = cfg.mla;
      const size_t want = static_cast<size_t>(cfg.num_heads) * (m.qk_nope_head_dim + m.v_head_dim) * m.kv_lora_rank;
      if (kvb->size() != want) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, " kv_b_proj has ", kvb->size(), " values, expected ",
                                                       want));
      }
      TQ_RETURN_IF_ERROR(upload_floats(D.kvb, *kvb));
      ++*dense_n;  // kv_b_proj runs dequantized (fp32 W_uk / W_uv), whatever its checkpoint format
    } else {
      TQ_RETURN_IF_ERROR(D.qkv.BindRows({&L.q, &L.k, &L.v}, options.dequantize_tq, *s.eager_runner, &bytes, tq_n, dense_n));
    }
    TQ_RETURN_IF_ERROR(D.o.BindRows({&L.o}, options.dequantize_tq, *s.eager_runner, &bytes, tq_n, dense_n));
    auto bind_mlp = [&](const Linear& gate, const Linear& up, const Linear& down, DeviceLinear* gate_up,
                        DeviceLinear* down_out) -> absl::Status {
      TQ_RETURN_IF_ERROR(gate_up->BindRows({&gate, &up}, options.dequantize_tq, *s.eager_runner, &bytes, tq_n, dense_n));
      return down_out->BindRows({&down}, options.dequantize_tq, *s.eager_runner, &bytes, tq_n, dense_n);
    };
    if (L.moe) {
      D.moe = s.has_moe = true;
      TQ_RETURN_IF_ERROR(D.router.BindRows({&L.router}, false, *s.eager_runner, &bytes, tq_n, dense_n));
      D.router_bias = L.router_bias;
      if (static_cast<int>(L.experts.size()) != cfg.moe.n_routed_experts) {  // before any expert is uploaded
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, ": ", L.experts.size(), " experts, config says ",
                                                       cfg.moe.n_routed_experts));
      }
      if (!options.dequantize_tq) {
        TQ_RETURN_IF_ERROR(D.packed_experts.Bind(L.experts, *s.eager_runner, &D.experts, &bytes, tq_n, dense_n));
      }
      if (D.packed_experts.ok) {  // every expert from its codes, back to back
        D.device_routing = cfg.moe.n_group <= 32 && cfg.moe.n_routed_experts <= cuda::kMoeMaxExperts;
        if (D.device_routing) TQ_RETURN_IF_ERROR(upload_floats(D.router_bias_dev, L.router_bias));
      } else {
        D.experts.resize(L.experts.size());
        for (size_t e = 0; e < L.experts.size(); ++e) {
          const ExpertWeights& X = L.experts[e];
          TQ_RETURN_IF_ERROR(bind_mlp(X.gate, X.up, X.down, &D.experts[e].gate_up, &D.experts[e].down));
        }
      }
      s.moe_width = std::max(s.moe_width, cfg.moe.moe_intermediate_size);
      if (L.has_shared) {
        D.has_shared = true;
        TQ_RETURN_IF_ERROR(bind_mlp(L.shared.gate, L.shared.up, L.shared.down, &D.shared.gate_up, &D.shared.down));
        s.moe_width = std::max(s.moe_width, D.shared.down.k);
      }
    } else {
      TQ_RETURN_IF_ERROR(bind_mlp(L.gate, L.up, L.down, &D.mlp.gate_up, &D.mlp.down));
    }
    TQ_RETURN_IF_ERROR(upload_floats(D.input_norm, L.input_norm));
    TQ_RETURN_IF_ERROR(upload_floats(D.post_norm, L.post_attention_norm));
    TQ_RETURN_IF_ERROR(upload_floats(D.q_norm, L.q_norm));
    TQ_RETURN_IF_ERROR(upload_floats(D.k_norm, L.k_norm));
    if (cfg.is_mla()) {  // one latent per position: bf16 in one pool, or c packed + k_pe bf16
      const size_t positions = static_cast<size_t>(s.kv.num_blocks) * s.kv.block_size;
      if (!options.kv_format.values.empty() && options.kv_format.values[l]->mse_quantizer() != nullptr) {
        TQ_RETURN_IF_ERROR(D.k_side.Bind(*options.kv_format.keys[l], cfg.kv_cache_key_dim()));
        TQ_RETURN_IF_ERROR(D.v_side.Bind(*options.kv_format.values[l], cfg.kv_cache_value_dim()));
        for (DeviceKvSide* side : {&D.k_side, &D.v_side}) side->stride = (side->bytes + 3) / 4 * 4;
        TQ_RETURN_IF_ERROR(D.k_cache.Allocate(positions * D.k_side.stride));
        TQ_RETURN_IF_ERROR(D.v_cache.Allocate(positions * D.v_side.stride));
        r->kv_bytes_ += positions * (D.k_side.stride + D.v_side.stride);
      } else {
        D.k_side.bytes = D.k_side.stride = 2 * static_cast<int64_t>(cfg.mla.latent_dim());
        TQ_RETURN_IF_ERROR(D.k_cache.Allocate(positions * D.k_side.bytes));
        r->kv_bytes_ += positions * D.k_side.bytes;
      }
      continue;
    }
    if (!options.kv_format.keys.empty()) {
      TQ_RETURN_IF_ERROR(D.k_side.Bind(*options.kv_format.keys[l], cfg.head_dim));
      TQ_RETURN_IF_ERROR(D.v_side.Bind(*options.kv_format.values[l], cfg.head_dim));
    } else {
      D.k_side.bytes = D.v_side.bytes = 2 * static_cast<int64_t>(cfg.head_dim);
    }
    TQ_RETURN_IF_ERROR(D.k_cache.Allocate(vectors * D.k_side.bytes));
    TQ_RETURN_IF_ERROR(D.v_cache.Allocate(vectors * D.v_side.bytes));
    r->kv_bytes_ += vectors * (D.k_side.bytes + D.v_side.bytes);
  }
  if (s.sink_tokens > 0) TQ_RETURN_IF_ERROR(s.GrowSinkStores(std::max(1, options.max_num_seqs), &r->kv_bytes_));
  TQ_RETURN_IF_ERROR(upload_floats(s.final_norm, weights.final_norm));
  TQ_RETURN_IF_ERROR(s.lm_head.BindRows({&weights.lm_head}, options.dequantize_tq, *s.eager_runner, &bytes,
                                        &r->tq_on_codes_, &r->dense_layers_));
  // RoPE tables [max_positions, head_dim / 2].
  const size_t half = cfg.head_dim / 2;
  const size_t table = static_cast<size_t>(rope.max_positions()) * half * sizeof(float);
  TQ_RETURN_IF_ERROR(s.cos.Upload(rope.cos(0), table));
  TQ_RETURN_IF_ERROR(s.sin.Upload(rope.sin(0), table));
  r->weight_bytes_ = bytes;
  // MoE decode steps are captured only when every MoE layer routes on the device (TQ experts of
  // one format; the host routing of the others synchronizes mid-step).
  bool moe_on_device = true;
  for (const DeviceLayer& L : s.layers) moe_on_device = moe_on_device && (!L.moe || L.device_routing);
  r->graphs_ = options.cuda_graphs && moe_on_device;
  // Step buffers for the largest graph-captured decode batch, and block tables for every block.
  s.use_graphs = r->graphs_;
  if (s.use_graphs) {
    for (const DeviceLayer& L : s.layers) {
      for (const DeviceLinear* lin : {&L.qkv, &L.o, &L.mlp.gate_up, &L.mlp.down, &L.q_a, &L.q_b, &L.kv_a}) {
        TQ_RETURN_IF_ERROR(lin->ReserveForGraphs(*s.graph_runner, kMaxGraphBatch, s.stream));
      }
    }
    TQ_RETURN_IF_ERROR(s.lm_head.ReserveForGraphs(*s.graph_runner, kMaxGraphBatch, s.stream));
    for (const DeviceLayer& L : s.layers) {
      if (!L.moe) continue;
      TQ_RETURN_IF_ERROR(L.router.ReserveForGraphs(*s.graph_runner, kMoeGraphBatch, s.stream));
      TQ_RETURN_IF_ERROR(L.shared.gate_up.ReserveForGraphs(*s.graph_runner, kMoeGraphBatch, s.stream));
      TQ_RETURN_IF_ERROR(L.shared.down.ReserveForGraphs(*s.graph_runner, kMoeGraphBatch, s.stream));
      if (!L.packed_experts.ok) continue;
      for (const cuda::TqCudaWeights* w : {&L.packed_experts.gu, &L.packed_experts.down}) {
        TQ_RETURN_IF_ERROR(s.graph_runner->Reserve(*w, 1, cuda::TqKernel::kMmaFused, nullptr, s.stream, nullptr,
                                                   static_cast<int>(kMoeGraphBatch * cfg.moe.num_experts_per_tok)));
      }
    }
  }
  // Grouped MoE decode (RunMoeOnDevice) keeps kMoeGraphBatch · top-k expert rows in the step buffers.
  const int64_t step_rows =
      std::max<int64_t>(kMaxGraphBatch, s.has_moe ? kMoeGraphBatch * cfg.moe.num_experts_per_tok : 0);
  TQ_RETURN_IF_ERROR(s.EnsureCapacity(step_rows, kMaxGraphBatch));
  if (s.has_moe) {
    const size_t slots = static_cast<size_t>(kMoeGraphBatch) * cfg.moe.num_experts_per_tok;
    TQ_RETURN_IF_ERROR(s.topk_ids.Allocate(slots * sizeof(int32_t)));
    TQ_RETURN_IF_ERROR(s.topk_weights.Allocate(slots * sizeof(float)));
  }
  TQ_RETURN_IF_ERROR(s.tables.Allocate(static_cast<size_t>(std::max<int64_t>(1, s.kv.num_blocks)) * sizeof(int32_t)));
  return r;
}

CudaTransformer::~CudaTransformer() = default;

std::string CudaTransformer::Describe() const {
  return absl::StrCat("cuda: ", description_, "; ", tq_on_codes_, " TQ layers from codes, ", dense_layers_,
                      " dense/dequantized; ", weight_bytes_ / 1e6, " MB weights, ", kv_bytes_ / 1e6,
                      " MB KV on the device; CUDA graphs for decode ", graphs_ ? "on" : "off");
}

absl::Status CudaTransformer::RunStep(const ForwardBatch& batch, PagedKvCache& cache, int64_t* rows_out) {
  State& s = *state_;
  const ModelConfig& cfg = s.cfg;
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  *rows_out = 0;
  if (T == 0) return absl::OkStatus();
  TQ_RETURN_IF_ERROR(ValidateForwardBatch(batch, cache, max_positions_, cfg.vocab_size));
  const int bs = s.kv.block_size;
  TQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(s.device));

  // Host-side step description.
  std::vector<int32_t> pos(T), table_off(T), rows, tables, sink_slot;
  std::vector<int64_t> slots(T);
  int64_t t = 0;
  for (const ForwardSequence& seq : batch.seqs) {
    const std::vector<int64_t>& table = cache.BlockTable(seq.kv);
    if (s.sink_tokens > 0) {  // this sequence's slot in the sink stores
      TQ_ASSIGN_OR_RETURN(const int32_t slot, s.SinkSlot(seq.kv, seq.start_pos, cache, &kv_bytes_));
      sink_slot.insert(sink_slot.end(), static_cast<size_t>(seq.num_tokens), slot);
    }
    const int32_t off = static_cast<int32_t>(tables.size());
    for (int64_t b : table) tables.push_back(static_cast<int32_t>(b));
    for (int64_t i = 0; i < seq.num_tokens; ++i, ++t) {
      const int64_t p = seq.start_pos + i;
      pos[t] = static_cast<int32_t>(p);
      table_off[t] = off;
      slots[t] = table[p / bs] * bs + p % bs;
      if (seq.logits == LogitsMode::kAll || (seq.logits == LogitsMode::kLast && i == seq.num_tokens - 1)) {
        rows.push_back(static_cast<int32_t>(t));
      }
    }
  }
  const int64_t R = static_cast<int64_t>(rows.size());
  TQ_RETURN_IF_ERROR(s.EnsureCapacity(T, R));
  if (tables.size() * sizeof(int32_t) > s.tables.bytes()) {
    s.DropGraphs();
    TQ_RETURN_IF_ERROR(s.tables.Reserve(tables.size() * sizeof(int32_t)));
  }
  bool decode_only = true;
  for (const ForwardSequence& seq : batch.seqs) {
    decode_only = decode_only && seq.num_tokens == 1 && seq.logits == LogitsMode::kLast;
  }
  // Attention kernel of this step: split-K (kernels/cuda/kv_attention.h) for prefill and for
  // decode steps whose longest context exceeds one split (kPagedDecodeMaxContext positions);
  // below that the one-CTA-per-head PagedAttention has less fixed cost (docs/BENCHMARKS.md §12).
  const int32_t longest = T > 0 ? *std::max_element(pos.begin(), pos.end()) + 1 : 0;
  s.split_now = s.split_attention && (s.split_always || !decode_only || longest > kPagedDecodeMaxContext);
  cudaStream_t st = s.stream;
  TQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s.ids.as<void>(), batch.tokens.data(), T * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  TQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s.positions.as<void>(), pos.data(), T * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  TQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s.slots.as<void>(), slots.data(), T * sizeof(int64_t), cudaMemcpyHostToDevice, st));
  TQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(s.table_offset.as<void>(), table_off.data(), T * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  TQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.tables.as<void>(), tables.data(), tables.size() * sizeof(int32_t),
                                          cudaMemcpyHostToDevice, st));
  if (R > 0) {
    TQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(s.logit_rows.as<void>(), rows.data(), R * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  }
  if (s.sink_tokens > 0) {
    TQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(s.sink_slot.as<void>(), sink_slot.data(), T * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  }

  TQ_RETURN_IF_ERROR(s.Run(T, R, decode_only));
  *rows_out = R;
  return absl::OkStatus();
}

absl::Status CudaTransformer::Forward(const ForwardBatch& batch, PagedKvCache& cache, std::vector<float>* logits) {
  State& s = *state_;
  int64_t R = 0;
  TQ_RETURN_IF_ERROR(RunStep(batch, cache, &R));
  logits->resize(static_cast<size_t>(R) * s.cfg.vocab_size);
  if (R > 0) {
    TQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits->data(), s.logits.as<void>(), logits->size() * sizeof(float),
                                            cudaMemcpyDeviceToHost, s.stream));
  }
  TQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
  return absl::OkStatus();
}

absl::Status CudaTransformer::ForwardSample(const ForwardBatch& batch, PagedKvCache& cache,
                                            const std::vector<RowSampling>& rows, std::vector<SampledToken>* tokens) {
  State& s = *state_;
  const int64_t vocab = s.cfg.vocab_size;
  // The rows' parameters first: nothing runs for a bad request.
  std::vector<cuda::SampleRowParams> params(rows.size());
  std::vector<int32_t> masked;
  for (size_t i = 0; i < rows.size(); ++i) {
    const RowSampling& r = rows[i];
    cuda::SampleRowParams& p = params[i] = r.params;
    p.masked_begin = static_cast<int32_t>(masked.size());
    for (int32_t id : r.masked) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("sampling row ", i, ": masked token id ", id,
                                                       " outside the vocabulary of ", vocab));
      }
      masked.push_back(id);
    }
    p.masked_end = static_cast<int32_t>(masked.size());
  }
  int64_t R = 0;
  TQ_RETURN_IF_ERROR(RunStep(batch, cache, &R));
  if (R != static_cast<int64_t>(rows.size())) {
    TQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardSample: the batch asks for ", R, " logits rows, ", rows.size(), " samplings given"));
  }
  tokens->assign(rows.size(), SampledToken{});
  if (R > 0) {
    // Parameters, masked ids and results staged in page-locked memory: one buffer, three parts.
    const size_t params_bytes = params.size() * sizeof(cuda::SampleRowParams);
    const size_t masked_bytes = masked.size() * sizeof(int32_t);
    const size_t out_bytes = params.size() * sizeof(cuda::SampleRowResult);
    const size_t out_at = (params_bytes + masked_bytes + 15) / 16 * 16;
    TQ_RETURN_IF_ERROR(s.sample_host.Reserve(out_at + out_bytes));
    TQ_RETURN_IF_ERROR(s.sample_dev.Reserve(out_at + out_bytes));
    char* h = s.sample_host.as<char>();
    std::memcpy(h, params.data(), params_bytes);
    if (masked_bytes > 0) std::memcpy(h + params_bytes, masked.data(), masked_bytes);
    char* d = s.sample_dev.as<char>();
    TQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(d, h, params_bytes + masked_bytes, cudaMemcpyHostToDevice, s.stream));
    auto* d_out = reinterpret_cast<cuda::SampleRowResult*>(d + out_at);
    TQ_CUDA_RETURN_IF_ERROR(cuda::SampleRows(s.logits.as<float>(), vocab, R,
                                             vocab, reinterpret_cast<const cuda::SampleRowParams*>(d),
                                             reinterpret_cast<const int32_t*>(d + params_bytes), d_out, s.stream));
    TQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h + out_at, d_out, out_bytes, cudaMemcpyDeviceToHost, s.stream));
    TQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
    const auto* out = reinterpret_cast<const cuda::SampleRowResult*>(h + out_at);
    for (int64_t i = 0; i < R; ++i) (*tokens)[i] = SampledToken{out[i].token, out[i].logprob};
    return absl::OkStatus();
  }
  TQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
  return absl::OkStatus();
}

#endif  // TQ_HAVE_CUDA

}  // namespace tq
