// File: engine/model/cuda_transformer.h
//
// The decoder's forward pass on one CUDA GPU (Llama/Mistral/Qwen2/Qwen3, Qwen3-MoE and
// DeepSeek-V3 with absorbed MLA over a bf16 or packed latent cache, kernels/cuda/mla_ops.h and
// mla_attention.h): the same
// function as the CPU Transformer / MlaTransformer (engine/model/transformer.h,
// mla_transformer.h), with the weights uploaded once at load and the KV cache in GPU memory.
// MoE layers run the routed experts only: prefill and larger steps route on the host from the
// router logits (engine/model/moe.h RouteMoeToken); decode steps of up to kMoeGraphBatch tokens
// of a model whose experts are TQ codes of one format route on the device
// (kernels/cuda/moe_ops.h) and replay CUDA graphs. The engine's PagedKvCache keeps the bookkeeping (blocks, free list, block tables,
// created with host_storage = false); this runner owns the K/V pools on the device,
// [num_layers][num_blocks, block_size, num_kv_heads, bytes per vector] each, and reads the block
// tables every step.
//
// KV cache formats (engine/kv_cache/kv_codec.h) on the GPU: bf16, and the plugin presets turbo3,
// turbo4 and k4v3 without QJL (for MLA models the latent c in the value codec, k_pe in bf16, as
// the CPU stores them) — PolarQuant codes + fp32 corrected gain, the CPU codec's bytes
// (kernels/cuda/kv_attention.h writes them and attends over them without a dequantized copy),
// including their boundary layers (8-bit keys) and sink positions (bf16 vectors kept per
// sequence, on the device in the attention space, max_num_seqs sequences at once).
// CheckKvFormat says why any other format (fp8, the vLLM presets, qjl=1) is refused.
//
// Per step: the batch's token ids, positions, cache slots and block tables go up (small copies);
// embedding, RMSNorm, the linear layers, q/k norms, RoPE, K/V writes, paged attention, SwiGLU and
// the residuals run as kernels on one stream (kernels/cuda/nn_ops.h); only the requested logits
// rows come back.
//
// Linear layers: dense BF16/F16/F32 weights are used as stored. TQ layers run from the packed
// codes when the TQ CUDA kernels support their shape; otherwise (and with dequantize_tq) they are
// dequantized once at load to fp32 on the device — the same function, more memory.
//
// Without the CUDA toolkit, Create returns UNIMPLEMENTED.
#ifndef TQSERVE_ENGINE_MODEL_CUDA_TRANSFORMER_H_
#define TQSERVE_ENGINE_MODEL_CUDA_TRANSFORMER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache/paged_kv_cache.h"
#include "engine/model/model_config.h"
#include "engine/model/model_runner.h"
#include "engine/model/rope.h"
#include "engine/model/transformer.h"
#include "engine/model/weights.h"

namespace tq {

struct CudaRunnerOptions {
  int device = 0;               // CUDA device ordinal
  KvCacheOptions kv;            // the engine cache's geometry (num_blocks etc.)
  KvCacheFormat kv_format;      // the cache's codecs (empty: bf16 for every layer)
  int max_num_seqs = 32;        // sequences at once (sink-position stores)
  bool dequantize_tq = false;   // run TQ layers from dequantized fp32 weights
  bool cuda_graphs = true;      // replay decode-only steps (<= 64 sequences) as CUDA graphs
  bool int8_gemv = false;       // m = 1 TQ3 layers on the int8-activation GEMV (opt-in, W3A8)
  bool int8_gemv_all_rows = false;  // ... and every m, row by row (evaluation)
};

class CudaTransformer : public ModelRunner {
 public:
  // Uploads the weights and allocates the KV pools. The checkpoint's bytes may be released
  // afterwards (nothing on the host is referenced by the runner).
  static absl::StatusOr<std::unique_ptr<CudaTransformer>> Create(const ModelConfig& cfg, const ModelWeights& weights,
                                                                 const RopeTable& rope,
                                                                 const CudaRunnerOptions& options);
  ~CudaTransformer() override;

  // OK if the CUDA kernels store and read this KV cache format for `num_kv_heads` /
  // `num_heads` heads of `head_dim`; else UNIMPLEMENTED (or INVALID_ARGUMENT) saying what is
  // supported. Host-only: works in builds without CUDA and on machines without a GPU.
  static absl::Status CheckKvFormat(const KvCacheFormat& format, int num_heads, int num_kv_heads, int head_dim);
  // The same for an MLA model's latent cache (MakeMlaKvCacheFormat: k_pe as the keys, of
  // format.head_dim values, the latent c as the values, of format.value_dim()). Host-only.
  static absl::Status CheckMlaKvFormat(const KvCacheFormat& format);
  // Whether the MLA attention kernel (kernels/cuda/mla_attention.h: packed latents, sinks, each
  // latent read once per 16 heads) takes a latent c of kv_lora_rank values and k_pe of rope_dim;
  // a bf16 latent of other widths runs on PagedAttention.
  static bool MlaKernelSupports(int kv_lora_rank, int rope_dim);

  absl::Status Forward(const ForwardBatch& batch, PagedKvCache& cache, std::vector<float>* logits) override;
  // Samples each logits row on the GPU (kernels/cuda/sampling.h): 8 bytes per row come back
  // instead of vocab floats. INVALID_ARGUMENT for a masked id outside the vocabulary or a row
  // count that is not the batch's.
  bool SamplesOnDevice() const override { return true; }
  absl::Status ForwardSample(const ForwardBatch& batch, PagedKvCache& cache, const std::vector<RowSampling>& rows,
                             std::vector<SampledToken>* tokens) override;
  int64_t max_positions() const override { return max_positions_; }
  const char* device() const override { return "cuda"; }
  // "cuda: <device>; 42 TQ layers from codes, 1 dense; CUDA graphs for decode".
  std::string Describe() const override;
  int tq_layers_on_codes() const { return tq_on_codes_; }

  // Device memory the weights and the KV pools occupy.
  uint64_t weight_device_bytes() const { return weight_bytes_; }
  uint64_t kv_device_bytes() const { return kv_bytes_; }
  // "NVIDIA H100 80GB HBM3, sm_90, 132 SMs".
  const std::string& device_description() const { return description_; }

  struct State;  // device buffers (defined in the .cc)

 private:
  CudaTransformer() = default;
  // Uploads the step's description and runs it on the stream (not synchronized); *rows gets the
  // number of logits rows it leaves on the device.
  absl::Status RunStep(const ForwardBatch& batch, PagedKvCache& cache, int64_t* rows);
  std::unique_ptr<State> state_;
  int64_t max_positions_ = 0;
  uint64_t weight_bytes_ = 0, kv_bytes_ = 0;
  int tq_on_codes_ = 0, dense_layers_ = 0;
  bool graphs_ = false;
  std::string description_;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_CUDA_TRANSFORMER_H_
