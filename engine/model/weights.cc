#include "engine/model/weights.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "kernels/cpu/half.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/tq_quantize.h"
#include "kernels/util/status_macros.h"

namespace tq {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

absl::StatusOr<std::string> ReadOptional(ObjectStore& store, absl::string_view key) {
  auto r = ReadObject(store, key);
  if (r.status().code() == absl::StatusCode::kNotFound) return std::string();
  return r;
}

std::string ShapeString(const std::vector<int64_t>& s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

absl::Status TensorError(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": ", what));
}

absl::StatusOr<cpu::WeightType> DenseType(const WeightTensor& w) {
  switch (w.dtype) {
    case DType::kF32:
      return cpu::WeightType::kF32;
    case DType::kBF16:
      return cpu::WeightType::kBF16;
    case DType::kF16:
      return cpu::WeightType::kF16;
    default:
      return TensorError(w.name, absl::StrCat("dtype ", DTypeName(w.dtype),
                                              " is not supported for weights (BF16, F16, F32)"));
  }
}

// A 1-D fp32 copy of a dense vector tensor of length n.
absl::StatusOr<std::vector<float>> LoadVector(const ModelCheckpoint& ckpt, const std::string& name, int64_t n) {
  const WeightTensor* w = ckpt.Find(name);
  if (w == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor \"", name, "\""));
  if (w->quantized) return TensorError(name, "is quantized; a vector must be stored in a float dtype");
  if (w->shape != std::vector<int64_t>{n}) {
    return TensorError(name, absl::StrCat("shape ", ShapeString(w->shape), ", expected [", n, "]"));
  }
  std::vector<float> out(n);
  TQ_RETURN_IF_ERROR(ConvertToFloat(w->dtype, w->bytes.data(), n, out.data()));
  for (float f : out) {
    if (!std::isfinite(f)) return TensorError(name, "holds NaN or Inf");
  }
  return out;
}

absl::StatusOr<Linear> BindLinear(const ModelCheckpoint& ckpt, const std::string& prefix, int64_t n,
                                  int64_t k, bool with_bias, const BindOptions& options) {
  const std::string wname = prefix + ".weight";
  const WeightTensor* w = ckpt.Find(wname);
  if (w == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor \"", wname, "\""));
  TQ_ASSIGN_OR_RETURN(Linear lin, Linear::Bind(*w, n, k, options.dequantize_tq));
  if (with_bias) {
    TQ_ASSIGN_OR_RETURN(std::vector<float> b, LoadVector(ckpt, prefix + ".bias", n));
    lin.SetBias(std::move(b));
  } else if (ckpt.Find(prefix + ".bias") != nullptr) {
    return TensorError(prefix + ".bias", "present but the config declares no bias for this layer");
  }
  return lin;
}


absl::StatusOr<ExpertWeights> BindExpert(const ModelCheckpoint& ckpt, const std::string& prefix, int64_t h,
                                         int64_t inter, const BindOptions& options) {
  ExpertWeights e;
  TQ_ASSIGN_OR_RETURN(e.gate, BindLinear(ckpt, prefix + "gate_proj", inter, h, false, options));
  TQ_ASSIGN_OR_RETURN(e.up, BindLinear(ckpt, prefix + "up_proj", inter, h, false, options));
  TQ_ASSIGN_OR_RETURN(e.down, BindLinear(ckpt, prefix + "down_proj", h, inter, false, options));
  return e;
}

// One DeepseekV3 decoder layer: MLA attention, then a dense MLP or the MoE.
absl::Status BindMoe(const ModelCheckpoint& ckpt, const ModelConfig& cfg, const std::string& p,
                     const BindOptions& options, LayerWeights* L);

absl::Status BindMlaLayer(const ModelCheckpoint& ckpt, const ModelConfig& cfg, int l, const BindOptions& options,
                          LayerWeights* L) {
  const std::string p = absl::StrCat("model.layers.", l, ".");
  const int64_t h = cfg.hidden_size;
  const MlaConfig& m = cfg.mla;
  const int64_t nh = cfg.num_heads;
  TQ_ASSIGN_OR_RETURN(L->q_a, BindLinear(ckpt, p + "self_attn.q_a_proj", m.q_lora_rank, h, false, options));
  TQ_ASSIGN_OR_RETURN(L->q_a_norm, LoadVector(ckpt, p + "self_attn.q_a_layernorm.weight", m.q_lora_rank));
  TQ_ASSIGN_OR_RETURN(L->q_b, BindLinear(ckpt, p + "self_attn.q_b_proj", nh * m.qk_head_dim(), m.q_lora_rank,
                                         false, options));
  TQ_ASSIGN_OR_RETURN(L->kv_a, BindLinear(ckpt, p + "self_attn.kv_a_proj_with_mqa", m.latent_dim(), h, false, options));
  TQ_ASSIGN_OR_RETURN(L->kv_a_norm, LoadVector(ckpt, p + "self_attn.kv_a_layernorm.weight", m.kv_lora_rank));
  TQ_ASSIGN_OR_RETURN(L->kv_b, BindLinear(ckpt, p + "self_attn.kv_b_proj", nh * (m.qk_nope_head_dim + m.v_head_dim),
                                          m.kv_lora_rank, false, options));
  TQ_ASSIGN_OR_RETURN(L->o, BindLinear(ckpt, p + "self_attn.o_proj", h, nh * m.v_head_dim, false, options));
  TQ_ASSIGN_OR_RETURN(L->input_norm, LoadVector(ckpt, p + "input_layernorm.weight", h));
  TQ_ASSIGN_OR_RETURN(L->post_attention_norm, LoadVector(ckpt, p + "post_attention_layernorm.weight", h));
  if (!cfg.is_moe_layer(l)) {
    TQ_ASSIGN_OR_RETURN(L->gate, BindLinear(ckpt, p + "mlp.gate_proj", cfg.intermediate_size, h, false, options));
    TQ_ASSIGN_OR_RETURN(L->up, BindLinear(ckpt, p + "mlp.up_proj", cfg.intermediate_size, h, false, options));
    TQ_ASSIGN_OR_RETURN(L->down, BindLinear(ckpt, p + "mlp.down_proj", h, cfg.intermediate_size, false, options));
    return absl::OkStatus();
  }
  return BindMoe(ckpt, cfg, p, options, L);
}

// The MoE MLP of a layer (engine/model/moe.h): the router (kept in full precision), the routed
// experts and, for DeepSeek-V3, the score-correction bias and the shared experts.
absl::Status BindMoe(const ModelCheckpoint& ckpt, const ModelConfig& cfg, const std::string& p,
                     const BindOptions& options, LayerWeights* L) {
  const int64_t h = cfg.hidden_size;
  const MoeConfig& e = cfg.moe;
  L->moe = true;
  // The router stays in full precision (transformers computes it in fp32).
  TQ_ASSIGN_OR_RETURN(L->router, BindLinear(ckpt, p + "mlp.gate", e.n_routed_experts, h, false, BindOptions{true}));
  if (L->router.quantized()) return TensorError(p + "mlp.gate.weight", "the MoE router must not be quantized");
  if (cfg.arch == ModelArch::kDeepseekV3) {
    TQ_ASSIGN_OR_RETURN(L->router_bias,
                        LoadVector(ckpt, p + "mlp.gate.e_score_correction_bias", e.n_routed_experts));
  }
  L->experts.reserve(e.n_routed_experts);
  for (int x = 0; x < e.n_routed_experts; ++x) {
    TQ_ASSIGN_OR_RETURN(ExpertWeights ew, BindExpert(ckpt, absl::StrCat(p, "mlp.experts.", x, "."), h,
                                                     e.moe_intermediate_size, options));
    L->experts.push_back(std::move(ew));
  }
  if (e.n_shared_experts > 0) {
    L->has_shared = true;
    TQ_ASSIGN_OR_RETURN(L->shared, BindExpert(ckpt, p + "mlp.shared_experts.", h,
                                              e.moe_intermediate_size * e.n_shared_experts, options));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ModelCheckpoint::manifest_sha256() const { return tq_ ? tq_->manifest_sha256() : ""; }

std::string ModelCheckpoint::quant_policy() const {
  if (!tq_) return "";
  return tq_->manifest() ? tq_->manifest()->policy : "uniform";
}

const char* ModelCheckpoint::kind_name() const {
  switch (kind_) {
    case Kind::kHuggingFace:
      return "hf";
    case Kind::kTq:
      return "tq";
    case Kind::kTqPlugin:
      return "tq-plugin";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<ModelCheckpoint>> ModelCheckpoint::Open(const std::string& uri,
                                                                       const CheckpointOpenOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  auto ck = std::unique_ptr<ModelCheckpoint>(new ModelCheckpoint());
  ck->uri_ = uri;
  TQ_ASSIGN_OR_RETURN(ck->store_, OpenObjectStore(uri, options.store));
  ObjectStore& store = *ck->store_;
  TQ_ASSIGN_OR_RETURN(ck->config_json_, ReadOptional(store, "config.json"));
  if (ck->config_json_.empty()) {
    return absl::NotFoundError(absl::StrCat(uri, ": no config.json (not a model checkpoint)"));
  }
  TQ_ASSIGN_OR_RETURN(ck->generation_config_json_, ReadOptional(store, "generation_config.json"));
  TQ_ASSIGN_OR_RETURN(ck->tokenizer_json_, ReadOptional(store, "tokenizer.json"));
  TQ_ASSIGN_OR_RETURN(std::string tq_config, ReadOptional(store, "tq_config.json"));

  if (!tq_config.empty()) {
    // Local shards: the checksum pass is timed on its own (remote shards are verified while
    // they download, inside open).
    const bool local = store.LocalPath("config.json").has_value();
    const VerifyLevel level = options.verify_checksums ? VerifyLevel::kChecksums : VerifyLevel::kSizes;
    auto tv = std::chrono::steady_clock::now();
    TQ_ASSIGN_OR_RETURN(ck->tq_, TqCheckpoint::Open(store, level, options.store.observer));
    if (local && options.verify_checksums) ck->timings_.verify_s = Seconds(tv);
    ck->kind_ = ck->tq_->mode() == TqCheckpointMode::kTq ? Kind::kTq : Kind::kTqPlugin;
    ck->weight_bytes_ = ck->tq_->file_bytes();
    for (const TqTensor& t : ck->tq_->tensors()) {
      WeightTensor w;
      w.name = t.name;
      w.quantized = t.quantized;
      w.shape = t.shape;
      if (t.quantized) {
        w.spec = t.spec;
        w.rows = t.rows;
        w.cols = t.cols;
        w.packed = t.packed.data();
        w.gains = t.norms.data();
      } else {
        w.dtype = t.data.info->dtype;
        w.shape = t.data.info->shape;
        w.bytes = t.data.data();
      }
      ck->tensors_.push_back(std::move(w));
    }
  } else {
    TQ_ASSIGN_OR_RETURN(ck->hf_, SourceCheckpoint::Open(store, options.store.observer));
    ck->kind_ = Kind::kHuggingFace;
    ck->hf_bytes_.reserve(ck->hf_->tensors().size());
    for (const SourceTensor& t : ck->hf_->tensors()) {
      TQ_ASSIGN_OR_RETURN(TensorBytes b, t.Fetch());
      WeightTensor w;
      w.name = t.name();
      w.dtype = t.info->dtype;
      w.shape = t.info->shape;
      w.bytes = b.data();
      ck->hf_bytes_.push_back(std::move(b));
      ck->tensors_.push_back(std::move(w));
    }
    ck->weight_bytes_ = ck->hf_->tensor_bytes();
  }
  ck->timings_.open_s = Seconds(t0) - ck->timings_.verify_s;
  return ck;
}

const WeightTensor* ModelCheckpoint::Find(absl::string_view name) const {
  for (const WeightTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<Linear> Linear::Bind(const WeightTensor& w, int64_t n, int64_t k, bool dequantize) {
  Linear lin;
  lin.n_ = n;
  lin.k_ = k;
  if (!w.quantized) {
    if (w.shape != std::vector<int64_t>{n, k}) {
      return TensorError(w.name, absl::StrCat("shape ", ShapeString(w.shape), ", expected [", n, ", ", k, "]"));
    }
    TQ_ASSIGN_OR_RETURN(lin.dense_type_, DenseType(w));
    lin.dense_ = w.bytes.data();
    lin.weight_bytes_ = w.bytes.size();
    return lin;
  }
  const int g = w.spec.group_size;
  const int64_t groups = (k + g - 1) / g;
  // Plugin-format tensors report K padded to the group size; ours the exact K.
  if (w.rows != n || (w.cols != k && w.cols != groups * g)) {
    return TensorError(w.name, absl::StrCat("quantized as ", w.rows, "x", w.cols, ", expected ", n, "x", k));
  }
  TQ_RETURN_IF_ERROR(quant::ValidateSpec(w.spec));
  const int64_t bpg = w.spec.bytes_per_group();
  if (static_cast<int64_t>(w.packed.size()) != n * groups * bpg ||
      static_cast<int64_t>(w.gains.size()) != n * groups * 4) {
    return TensorError(w.name, "packed codes or gains have the wrong size");
  }
  lin.weight_bytes_ = w.packed.size() + w.gains.size();
  if (dequantize) {
    TQ_ASSIGN_OR_RETURN(quant::TqQuantizer q, quant::TqQuantizer::Create(w.spec));
    auto full = std::make_shared<std::vector<float>>(static_cast<size_t>(n) * groups * g);
    std::vector<float> gains(static_cast<size_t>(n) * groups);
    std::memcpy(gains.data(), w.gains.data(), w.gains.size());
    q.DequantizeRows(reinterpret_cast<const uint8_t*>(w.packed.data()), gains.data(), n, groups * g,
                     full->data());
    auto dense = std::make_shared<std::vector<float>>(static_cast<size_t>(n) * k);
    for (int64_t r = 0; r < n; ++r) {
      std::memcpy(dense->data() + r * k, full->data() + r * groups * g, k * sizeof(float));
    }
    lin.owned_ = dense;
    lin.dense_type_ = cpu::WeightType::kF32;
    lin.dense_ = dense->data();
    return lin;
  }
  lin.quantized_ = true;
  lin.tq_.packed = reinterpret_cast<const uint8_t*>(w.packed.data());
  lin.tq_.gains = reinterpret_cast<const float*>(w.gains.data());
  lin.tq_.codebook = quant::GetCodebook(w.spec.bits, g).centroids.data();
  lin.tq_.n = n;
  lin.tq_.k = k;
  lin.tq_.bits = w.spec.bits;
  lin.tq_.group_size = g;
  lin.tq_.rotation_block = w.spec.block() == g ? 0 : w.spec.block();
  return lin;
}

absl::StatusOr<std::vector<float>> Linear::ToFloat() const {
  std::vector<float> out(static_cast<size_t>(n_) * k_);
  if (quantized_) {
    quant::TqSpec spec;
    spec.bits = tq_.bits;
    spec.group_size = tq_.group_size;
    spec.rotation_block = tq_.rotation_block;
    TQ_ASSIGN_OR_RETURN(quant::TqQuantizer q, quant::TqQuantizer::Create(spec));
    const int64_t kp = (k_ + tq_.group_size - 1) / tq_.group_size * tq_.group_size;
    std::vector<float> full(static_cast<size_t>(n_) * kp);
    q.DequantizeRows(tq_.packed, tq_.gains, n_, kp, full.data());
    for (int64_t r = 0; r < n_; ++r) std::memcpy(out.data() + r * k_, full.data() + r * kp, k_ * sizeof(float));
    return out;
  }
  for (int64_t i = 0; i < n_ * k_; ++i) {
    switch (dense_type_) {
      case cpu::WeightType::kBF16:
        out[i] = cpu::Bf16ToFloat(static_cast<const uint16_t*>(dense_)[i]);
        break;
      case cpu::WeightType::kF16:
        out[i] = cpu::HalfToFloat(static_cast<const uint16_t*>(dense_)[i]);
        break;
      default:
        out[i] = static_cast<const float*>(dense_)[i];
    }
  }
  return out;
}

void Linear::ForwardSlice(const float* x, const float* x_rot, int64_t m, float* y, int64_t ldy,
                          int64_t n_begin, int64_t n_end) const {
  if (quantized_) {
    cpu::TqLinear(tq_, x_rot, m, y, ldy, n_begin, n_end);
  } else {
    cpu::DenseLinear(dense_type_, dense_, n_, k_, x, m, k_, y, ldy, n_begin, n_end);
  }
  if (!bias_.empty()) {
    for (int64_t i = 0; i < m; ++i) {
      float* row = y + i * ldy;
      for (int64_t j = n_begin; j < n_end; ++j) row[j] += bias_[j];
    }
  }
}

std::string Linear::DebugString() const {
  if (quantized_) {
    return absl::StrCat("TQ", tq_.bits, " ", n_, "x", k_, " G", tq_.group_size,
                        tq_.rotation_block ? absl::StrCat(" B", tq_.rotation_block) : "");
  }
  return absl::StrCat("dense ", n_, "x", k_);
}

void ModelWeights::Embed(int32_t token, int64_t hidden, float* out) const {
  const int64_t esize = DTypeSize(embed_dtype);
  ConvertToFloat(embed_dtype, embed + static_cast<int64_t>(token) * hidden * esize, hidden, out).IgnoreError();
}

absl::StatusOr<std::unique_ptr<ModelWeights>> BindModelWeights(ModelCheckpoint& ckpt,
                                                               const ModelConfig& cfg,
                                                               const BindOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  auto mw = std::make_unique<ModelWeights>();
  const int64_t h = cfg.hidden_size;
  // Embedding.
  const WeightTensor* emb = ckpt.Find("model.embed_tokens.weight");
  if (emb == nullptr) return absl::InvalidArgumentError("missing tensor \"model.embed_tokens.weight\"");
  if (emb->quantized) return TensorError(emb->name, "the embedding must be stored in a float dtype");
  if (emb->shape != std::vector<int64_t>{cfg.vocab_size, h}) {
    return TensorError(emb->name, absl::StrCat("shape ", ShapeString(emb->shape), ", expected [",
                                               cfg.vocab_size, ", ", h, "]"));
  }
  TQ_RETURN_IF_ERROR(DenseType(*emb).status());
  mw->embed_dtype = emb->dtype;
  mw->embed = reinterpret_cast<const uint8_t*>(emb->bytes.data());

  mw->layers.resize(cfg.num_layers);
  for (int l = 0; l < cfg.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    LayerWeights& L = mw->layers[l];
    if (cfg.is_mla()) {
      TQ_RETURN_IF_ERROR(BindMlaLayer(ckpt, cfg, l, options, &L));
      continue;
    }
    TQ_ASSIGN_OR_RETURN(L.q, BindLinear(ckpt, p + "self_attn.q_proj", cfg.q_size(), h, cfg.attention_bias, options));
    TQ_ASSIGN_OR_RETURN(L.k, BindLinear(ckpt, p + "self_attn.k_proj", cfg.kv_size(), h, cfg.attention_bias, options));
    TQ_ASSIGN_OR_RETURN(L.v, BindLinear(ckpt, p + "self_attn.v_proj", cfg.kv_size(), h, cfg.attention_bias, options));
    TQ_ASSIGN_OR_RETURN(L.o, BindLinear(ckpt, p + "self_attn.o_proj", h, cfg.q_size(), cfg.attention_out_bias, options));
    if (cfg.is_moe_layer(l)) {  // Qwen3-MoE
      TQ_RETURN_IF_ERROR(BindMoe(ckpt, cfg, p, options, &L));
    } else {
      TQ_ASSIGN_OR_RETURN(L.gate,
                          BindLinear(ckpt, p + "mlp.gate_proj", cfg.intermediate_size, h, cfg.mlp_bias, options));
      TQ_ASSIGN_OR_RETURN(L.up, BindLinear(ckpt, p + "mlp.up_proj", cfg.intermediate_size, h, cfg.mlp_bias, options));
      TQ_ASSIGN_OR_RETURN(L.down,
                          BindLinear(ckpt, p + "mlp.down_proj", h, cfg.intermediate_size, cfg.mlp_bias, options));
    }
    TQ_ASSIGN_OR_RETURN(L.input_norm, LoadVector(ckpt, p + "input_layernorm.weight", h));
    TQ_ASSIGN_OR_RETURN(L.post_attention_norm, LoadVector(ckpt, p + "post_attention_layernorm.weight", h));
    if (cfg.qk_norm) {
      TQ_ASSIGN_OR_RETURN(L.q_norm, LoadVector(ckpt, p + "self_attn.q_norm.weight", cfg.head_dim));
      TQ_ASSIGN_OR_RETURN(L.k_norm, LoadVector(ckpt, p + "self_attn.k_norm.weight", cfg.head_dim));
    }
  }
  TQ_ASSIGN_OR_RETURN(mw->final_norm, LoadVector(ckpt, "model.norm.weight", h));
  const WeightTensor* head = ckpt.Find("lm_head.weight");
  if (cfg.tie_word_embeddings || head == nullptr) {
    if (!cfg.tie_word_embeddings) {
      return absl::InvalidArgumentError(
          "missing tensor \"lm_head.weight\" (config.json: tie_word_embeddings is false)");
    }
    TQ_ASSIGN_OR_RETURN(mw->lm_head, Linear::Bind(*emb, cfg.vocab_size, h, false));
  } else {
    TQ_ASSIGN_OR_RETURN(mw->lm_head, Linear::Bind(*head, cfg.vocab_size, h, options.dequantize_tq));
  }
  // Layer count check: tensors of layers beyond num_hidden_layers mean a config mismatch.
  // DeepseekV3: the next num_nextn_predict_layers layers are MTP layers, deliberately skipped.
  if (cfg.is_mla()) {
    const int64_t mtp_end = int64_t{cfg.num_layers} + cfg.moe.num_nextn_predict_layers;
    for (const WeightTensor& t : ckpt.tensors()) {
      absl::string_view name = t.name;
      if (!absl::ConsumePrefix(&name, "model.layers.")) continue;
      const size_t dot = name.find('.');
      int64_t index = 0;
      if (dot == absl::string_view::npos || !absl::SimpleAtoi(name.substr(0, dot), &index)) continue;
      if (index >= mtp_end) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor \"", t.name, "\": layer ", index, " is beyond num_hidden_layers = ", cfg.num_layers,
            " plus num_nextn_predict_layers = ", cfg.moe.num_nextn_predict_layers));
      }
    }
  } else if (ckpt.Find(absl::StrCat("model.layers.", cfg.num_layers, ".input_layernorm.weight")) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint has more layers than num_hidden_layers = ",
                                                   cfg.num_layers));
  }
  auto count = [&](const Linear& lin) {
    mw->linear_weight_bytes += lin.weight_bytes();
    (lin.quantized() ? mw->quantized_linears : mw->dense_linears) += 1;
  };
  for (const LayerWeights& L : mw->layers) {
    if (!cfg.is_mla()) {
      for (const Linear* lin : {&L.q, &L.k, &L.v, &L.o}) count(*lin);
    } else {
      for (const Linear* lin : {&L.q_a, &L.q_b, &L.kv_a, &L.kv_b, &L.o}) count(*lin);
    }
    if (!L.moe) {
      for (const Linear* lin : {&L.gate, &L.up, &L.down}) count(*lin);
      continue;
    }
    count(L.router);
    for (const ExpertWeights& e : L.experts) {
      for (const Linear* lin : {&e.gate, &e.up, &e.down}) count(*lin);
    }
    if (L.has_shared) {
      for (const Linear* lin : {&L.shared.gate, &L.shared.up, &L.shared.down}) count(*lin);
    }
  }
  count(mw->lm_head);
  ckpt.mutable_timings().bind_s = Seconds(t0);
  return mw;
}

}  // namespace tq
