// File: engine/model/weights.h
//
// The weights of a dense Llama-family model, bound to the tensors of a checkpoint without
// copying the big ones: TQ linear layers point at their packed codes and gains, BF16/F16/F32
// layers at their source bytes (memory-mapped local shards, or shards downloaded and
// stream-verified from S3). Small vectors (norms, biases) are converted to fp32.
//
// A checkpoint is either
//   - a TQ checkpoint (tq_config.json present; ours with tq_manifest.json, whose sizes and
//     sha256 are verified while loading, or the plugin's format), or
//   - a Hugging Face checkpoint (config.json + BF16/F16/F32 safetensors), the baseline.
//
// DeepseekV3 (MLA + MoE): see LayerWeights. The tensors of the multi-token-prediction layers
// (model.layers.[num_hidden_layers, num_hidden_layers + num_nextn_predict_layers)) are ignored;
// layers beyond those are refused.
//
// Every tensor the config implies must be present with the implied shape; a missing tensor, a
// wrong shape, an unsupported dtype or an unexpected quantization is InvalidArgument naming the
// tensor.
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(auto ckpt, ModelCheckpoint::Open("s3://models/llama-tq3", {}));
//   TQ_ASSIGN_OR_RETURN(ModelConfig cfg, ParseModelConfig(ckpt->config_json(), ...));
//   TQ_ASSIGN_OR_RETURN(auto weights, LoadModelWeights(*ckpt, cfg, {}));
#ifndef TQSERVE_ENGINE_MODEL_WEIGHTS_H_
#define TQSERVE_ENGINE_MODEL_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint/source_checkpoint.h"
#include "engine/checkpoint/tq_checkpoint.h"
#include "engine/format/dtype.h"
#include "engine/model/model_config.h"
#include "engine/storage/object_store.h"
#include "engine/util/thread_pool.h"
#include "kernels/cpu/linear.h"

namespace tq {

// One tensor as the model sees it.
struct WeightTensor {
  std::string name;
  bool quantized = false;
  std::vector<int64_t> shape;  // dense: the stored shape; quantized: logical (see shape_exact)
  // Dense.
  DType dtype = DType::kF32;
  absl::string_view bytes;
  // Quantized.
  quant::TqSpec spec;
  int64_t rows = 0, cols = 0;  // cols may be padded to the group size (plugin format)
  absl::string_view packed, gains;
};

struct CheckpointOpenOptions {
  StoreOptions store;
  // Verify every file's sha256 against tq_manifest.json (always done for remote shards).
  bool verify_checksums = true;
};

// Timings of the phases of loading, in seconds.
struct LoadTimings {
  double open_s = 0;     // store, headers, manifest, shard download/mapping
  double verify_s = 0;   // checksums (local; remote shards are verified while downloading)
  double bind_s = 0;     // binding tensors to layers, converting small vectors
};

class ModelCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<ModelCheckpoint>> Open(const std::string& uri,
                                                               const CheckpointOpenOptions& options);

  enum class Kind { kHuggingFace, kTq, kTqPlugin };
  Kind kind() const { return kind_; }
  const char* kind_name() const;
  const std::string& uri() const { return uri_; }
  const std::string& config_json() const { return config_json_; }
  const std::string& generation_config_json() const { return generation_config_json_; }
  // Raw tokenizer.json ("" if the checkpoint has none).
  const std::string& tokenizer_json() const { return tokenizer_json_; }
  // Bytes of all weight files.
  uint64_t weight_bytes() const { return weight_bytes_; }
  // TQ checkpoints: the manifest's sha256 and its policy ("uniform", "kurtosis"); empty otherwise
  // (a plugin-format checkpoint has no manifest: policy "uniform").
  std::string manifest_sha256() const;
  std::string quant_policy() const;
  const LoadTimings& timings() const { return timings_; }
  LoadTimings& mutable_timings() { return timings_; }

  const WeightTensor* Find(absl::string_view name) const;
  const std::vector<WeightTensor>& tensors() const { return tensors_; }

 private:
  Kind kind_ = Kind::kHuggingFace;
  std::string uri_;
  std::unique_ptr<ObjectStore> store_;
  std::unique_ptr<TqCheckpoint> tq_;
  std::unique_ptr<SourceCheckpoint> hf_;
  std::vector<TensorBytes> hf_bytes_;  // keeps HF tensor bytes alive
  std::vector<WeightTensor> tensors_;
  std::string config_json_, generation_config_json_, tokenizer_json_;
  uint64_t weight_bytes_ = 0;
  LoadTimings timings_;
};

// A linear layer y = x Wᵀ (+ b), W [n, k], computed from TQ codes or dense weights.
class Linear {
 public:
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  bool quantized() const { return quantized_; }
  const cpu::TqLinearParams& tq() const { return tq_; }
  // Bytes the weights occupy (codes + gains, or dense bytes).
  uint64_t weight_bytes() const { return weight_bytes_; }
  const std::vector<float>& bias() const { return bias_; }
  // The weights as fp32 [n, k] row-major (TQ layers dequantized, 16-bit types widened).
  absl::StatusOr<std::vector<float>> ToFloat() const;
  // Dense layers (and dequantized TQ layers): the weights [n, k] and their type.
  cpu::WeightType dense_type() const { return dense_type_; }
  const void* dense_data() const { return dense_; }
  // Rows [n_begin, n_end) of y (row stride ldy) for m rows of input. `x_rot` is the rotated
  // input (cpu::TqRotateInput with this layer's group/block) for TQ layers, unused otherwise.
  void ForwardSlice(const float* x, const float* x_rot, int64_t m, float* y, int64_t ldy,
                    int64_t n_begin, int64_t n_end) const;
  // (group_size, rotation_block) of the input rotation this layer needs; (0, 0) for dense.
  std::pair<int, int> RotationKey() const {
    return quantized_ ? std::make_pair(tq_.group_size, tq_.rotation_block) : std::make_pair(0, 0);
  }
  std::string DebugString() const;

  // Binds a checkpoint tensor as W [n, k]. Quantized tensors may be dequantized to fp32 (a
  // second code path with the same function, for tests). Bias: optional fp32 of length n.
  static absl::StatusOr<Linear> Bind(const WeightTensor& w, int64_t n, int64_t k, bool dequantize);
  void SetBias(std::vector<float> bias) { bias_ = std::move(bias); }

 private:
  int64_t n_ = 0, k_ = 0;
  bool quantized_ = false;
  cpu::TqLinearParams tq_;
  cpu::WeightType dense_type_ = cpu::WeightType::kF32;
  const void* dense_ = nullptr;
  std::shared_ptr<std::vector<float>> owned_;  // dequantized weights
  std::vector<float> bias_;
  uint64_t weight_bytes_ = 0;
};

// One SwiGLU MLP: down(silu(gate(x)) * up(x)).
struct ExpertWeights {
  Linear gate, up, down;
};

struct LayerWeights {
  Linear q, k, v, o, gate, up, down;  // MLA: o, and gate/up/down on dense layers
  std::vector<float> input_norm, post_attention_norm;
  std::vector<float> q_norm, k_norm;  // Qwen3 (head_dim)
  // DeepseekV3 MLA: q = q_b(RMSNorm(q_a(h))), [kv_c | k_pe] = kv_a(h), [k_nope | v] = kv_b(RMSNorm(kv_c)).
  Linear q_a, q_b, kv_a, kv_b;
  std::vector<float> q_a_norm, kv_a_norm;
  // DeepseekV3 MoE layers: the router [n_routed_experts, hidden], its e_score_correction_bias,
  // the routed experts and the shared experts (one MLP n_shared_experts x moe_intermediate wide).
  bool moe = false;
  Linear router;
  std::vector<float> router_bias;
  std::vector<ExpertWeights> experts;
  bool has_shared = false;
  ExpertWeights shared;
};

struct ModelWeights {
  // Embedding table [vocab, hidden] in its stored dtype.
  DType embed_dtype = DType::kBF16;
  const uint8_t* embed = nullptr;
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  Linear lm_head;  // the embedding itself when tied
  uint64_t linear_weight_bytes = 0;  // all linear layers incl. lm_head
  uint64_t quantized_linears = 0, dense_linears = 0;

  // Copies row `token` of the embedding table into out[hidden] as fp32.
  void Embed(int32_t token, int64_t hidden, float* out) const;
};

struct BindOptions {
  // Compute TQ layers from fp32 weights dequantized at load time instead of from the codes.
  bool dequantize_tq = false;
};

absl::StatusOr<std::unique_ptr<ModelWeights>> BindModelWeights(ModelCheckpoint& ckpt,
                                                               const ModelConfig& cfg,
                                                               const BindOptions& options);

}  // namespace tq

#endif  // TQSERVE_ENGINE_MODEL_WEIGHTS_H_
