#include "engine/model/mla_transformer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/linear.h"
#include "kernels/nn/ops.h"
#include "kernels/util/status_macros.h"

namespace tq {
namespace {

// transformers' apply_rotary_pos_emb_interleave: view(d/2, 2).transpose -> [x0, x2, .., x1, x3, ..]
// then the rotate_half form. The de-interleaved order is kept (q and k alike, so scores match).
void RopeOne(float* x, int d, bool interleave, const float* cos, const float* sin) {
  if (interleave) {
    float tmp[1024];
    float* t = d <= 1024 ? tmp : nullptr;
    std::vector<float> big;
    if (t == nullptr) {
      big.resize(d);
      t = big.data();
    }
    for (int i = 0; i < d / 2; ++i) {
      t[i] = x[2 * i];
      t[d / 2 + i] = x[2 * i + 1];
    }
    std::copy(t, t + d, x);
  }
  nn::ApplyRope(x, d, 1, cos, sin);
}

}  // namespace

MlaTransformer::MlaTransformer(const ModelConfig& cfg, const ModelWeights& weights, RopeTable rope,
                               ThreadPool* pool)
    : cfg_(cfg), w_(weights), rope_(std::move(rope)), pool_(pool), linears_(pool) {
  kvb_f32_.resize(w_.layers.size());
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    auto f = w_.layers[l].kv_b.ToFloat();
    if (f.ok()) kvb_f32_[l] = std::move(*f);
  }
}

std::string MlaTransformer::Describe() const {
  return absl::StrCat("cpu (MLA + MoE): ", pool_->size(), " threads, linear kernels ", cpu::LinearKernelIsa(),
                      ", ops ", nn::NnKernelIsa());
}


void MlaTransformer::Attention(int layer, const ForwardBatch& batch, PagedKvCache& cache) {
  const MlaConfig& m = cfg_.mla;
  const int nh = cfg_.num_heads;
  const int nope = m.qk_nope_head_dim, rope = m.qk_rope_head_dim, dv = m.v_head_dim;
  const int qkd = m.qk_head_dim();
  const int r = m.kv_lora_rank;
  const int64_t kvb_n = static_cast<int64_t>(nh) * (nope + dv);
  const float scale = MlaSoftmaxScale(cfg_);
  const LayerWeights& L = w_.layers[layer];
  int64_t row0 = 0;
  for (const ForwardSequence& seq : batch.seqs) {
    const int64_t len = seq.start_pos + seq.num_tokens;  // positions 0..last
    if (seq.num_tokens == 1 && !kvb_f32_[layer].empty()) {
      // Absorbed decode (one query): score the latent directly. With W_uk / W_uv the k_nope / v
      // rows of kv_b for head h: q·k_j = (W_ukᵀ q_nope)·c_j + q_pe·pe_j and
      // o = W_uv (Σ_j p_j c_j), so no per-head key or value is ever rebuilt. Both are read in
      // their codecs' attention space (kv_codec.h: codes × gain for a rotated latent codec, no
      // inverse rotation per position): the query parts are mapped once (PrepareQuery) and the
      // weighted latent sum mapped back once per head (FinishValue). Forward checked that both
      // codecs score in their own widths.
      const KvCodec& kc = cache.key_codec(layer);
      const KvCodec& vc = cache.value_codec(layer);
      const int64_t n = seq.start_pos + 1;
      lat_pe_.resize(static_cast<size_t>(n) * rope);
      lat_c_.resize(static_cast<size_t>(n) * r);
      cache.GatherAttention(seq.kv, layer, 0, 0, n, lat_pe_.data(), lat_c_.data());
      const std::vector<float>& W = kvb_f32_[layer];
      pool_->ParallelFor(nh, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> qc(static_cast<size_t>(r)), qpe(static_cast<size_t>(rope));
        std::vector<float> scores(n), acc(static_cast<size_t>(r));
        for (int64_t head = begin; head < end; ++head) {
          const float* q = q_.data() + row0 * nh * qkd + head * qkd;
          const float* wk = W.data() + head * (nope + dv) * r;      // [nope, r]
          const float* wv = wk + static_cast<int64_t>(nope) * r;   // [dv, r]
          // The latent query W_ukᵀ q_nope (r) and q_pe (rope), each in its codec's space.
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (int i = 0; i < nope; ++i) nn::Axpy(q[i], wk + static_cast<int64_t>(i) * r, acc.data(), r);
          vc.PrepareQuery(acc.data(), r, qc.data());
          kc.PrepareQuery(q + nope, rope, qpe.data());
          for (int64_t j = 0; j < n; ++j) {
            scores[j] = (nn::Dot(qc.data(), lat_c_.data() + j * r, r) +
                         nn::Dot(qpe.data(), lat_pe_.data() + j * rope, rope)) *
                        scale;
          }
          nn::SoftmaxInPlace(scores.data(), n);
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (int64_t j = 0; j < n; ++j) nn::Axpy(scores[j], lat_c_.data() + j * r, acc.data(), r);
          vc.FinishValue(acc.data(), r, acc.data());
          float* out = attn_.data() + row0 * nh * dv + head * dv;
          for (int d = 0; d < dv; ++d) out[d] = nn::Dot(wv + static_cast<int64_t>(d) * r, acc.data(), r);
        }
      });
      row0 += 1;
      continue;
    }
    lat_pe_.resize(static_cast<size_t>(len) * rope);
    lat_c_.resize(static_cast<size_t>(len) * r);
    cache.Gather(seq.kv, layer, 0, 0, len, lat_pe_.data(), lat_c_.data());
    kvb_.resize(static_cast<size_t>(len) * kvb_n);
    RunLinears({{&L.kv_b, kvb_.data()}}, lat_c_.data(), len);
    const int64_t tasks = static_cast<int64_t>(nh) * seq.num_tokens;
    pool_->ParallelFor(tasks, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(len);
      for (int64_t t = begin; t < end; ++t) {
        const int head = static_cast<int>(t % nh);
        const int64_t i = t / nh;
        const int64_t pos = seq.start_pos + i;
        const int64_t row = row0 + i;
        const float* q = q_.data() + row * nh * qkd + head * qkd;
        const int64_t n = pos + 1;
        for (int64_t j = 0; j < n; ++j) {
          const float* kb = kvb_.data() + j * kvb_n + head * (nope + dv);
          scores[j] = (nn::Dot(q, kb, nope) + nn::Dot(q + nope, lat_pe_.data() + j * rope, rope)) * scale;
        }
        nn::SoftmaxInPlace(scores.data(), n);
        float* out = attn_.data() + row * nh * dv + head * dv;
        std::fill(out, out + dv, 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          nn::Axpy(scores[j], kvb_.data() + j * kvb_n + head * (nope + dv) + nope, out, dv);
        }
      }
    });
    row0 += seq.num_tokens;
  }
}

absl::Status MlaTransformer::Forward(const ForwardBatch& batch, PagedKvCache& cache, std::vector<float>* logits) {
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  if (T == 0) {
    logits->clear();
    return absl::OkStatus();
  }
  const MlaConfig& m = cfg_.mla;
  const int64_t H = cfg_.hidden_size;
  const int nh = cfg_.num_heads;
  const int qkd = m.qk_head_dim(), nope = m.qk_nope_head_dim, rope = m.qk_rope_head_dim;
  const int64_t lat = m.latent_dim();
  if (cache.options().num_layers != cfg_.num_layers || cache.options().num_kv_heads != cfg_.kv_cache_heads() ||
      cache.options().head_dim != cfg_.kv_cache_key_dim() || cache.options().value_dim() != cfg_.kv_cache_value_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward: the KV cache must have ", cfg_.num_layers, " layers of ", cfg_.kv_cache_heads(), " head of ",
        cfg_.kv_cache_key_dim(), " key floats (k_pe) and ", cfg_.kv_cache_value_dim(),
        " value floats (the latent) for this MLA model"));
  }
  for (int l = 0; l < cfg_.num_layers; ++l) {  // the absorbed decode scores in the codecs' own widths
    if (cache.key_codec(l).AttentionDim(rope) != rope ||
        cache.value_codec(l).AttentionDim(cfg_.kv_cache_value_dim()) != cfg_.kv_cache_value_dim()) {
      return absl::InvalidArgumentError(absl::StrCat("forward: layer ", l, "'s KV codecs (", cache.key_codec(l).name(),
                                                     ", ", cache.value_codec(l).name(),
                                                     ") score in another width; an MLA cache takes MakeMlaKvCacheFormat's"));
    }
  }
  TQ_RETURN_IF_ERROR(ValidateForwardBatch(batch, cache, rope_.max_positions(), cfg_.vocab_size));
  x_.resize(T * H);
  h_.resize(T * H);
  qa_.resize(T * m.q_lora_rank);
  kva_.resize(T * lat);
  q_.resize(T * nh * qkd);
  attn_.resize(T * nh * m.v_head_dim);
  tmp_.resize(T * H);
  for (int64_t t = 0; t < T; ++t) w_.Embed(batch.tokens[t], H, x_.data() + t * H);
  std::vector<int64_t> pos;
  std::vector<size_t> seq_of;
  TokenPositions(batch, &pos, &seq_of);
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const LayerWeights& L = w_.layers[l];
    pool_->ParallelFor(T, 16, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) nn::RmsNorm(x_.data() + t * H, L.input_norm.data(), H, eps, h_.data() + t * H);
    });
    RunLinears({{&L.q_a, qa_.data()}, {&L.kv_a, kva_.data()}}, h_.data(), T);
    pool_->ParallelFor(T, 8, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* qa = qa_.data() + t * m.q_lora_rank;
        nn::RmsNorm(qa, L.q_a_norm.data(), m.q_lora_rank, eps, qa);
        float* kv = kva_.data() + t * lat;
        nn::RmsNorm(kv, L.kv_a_norm.data(), m.kv_lora_rank, eps, kv);
        RopeOne(kv + m.kv_lora_rank, rope, m.rope_interleave, rope_.cos(pos[t]), rope_.sin(pos[t]));
      }
    });
    RunLinears({{&L.q_b, q_.data()}}, qa_.data(), T);
    pool_->ParallelFor(T, 8, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        for (int hh = 0; hh < nh; ++hh) {
          RopeOne(q_.data() + t * nh * qkd + hh * qkd + nope, rope, m.rope_interleave, rope_.cos(pos[t]),
                  rope_.sin(pos[t]));
        }
      }
    });
    for (int64_t t = 0; t < T; ++t) {
      const float* kv = kva_.data() + t * lat;
      cache.Write(batch.seqs[seq_of[t]].kv, l, pos[t], kv + m.kv_lora_rank, kv);  // K = k_pe, V = c
    }
    Attention(l, batch, cache);
    RunLinears({{&L.o, tmp_.data()}}, attn_.data(), T);
    for (int64_t i = 0; i < T * H; ++i) x_[i] += tmp_[i];
    ffn_.Run(cfg_, L, x_.data(), T, linears_, pool_);
  }
  ComputeLogits(cfg_, w_, batch, x_.data(), linears_, logits);
  return absl::OkStatus();
}

}  // namespace tq
