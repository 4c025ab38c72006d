#include "engine/model/transformer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/linear.h"
#include "kernels/nn/ops.h"
#include "kernels/util/status_macros.h"

namespace tq {

Transformer::Transformer(const ModelConfig& cfg, const ModelWeights& weights, RopeTable rope,
                         ThreadPool* pool)
    : cfg_(cfg), w_(weights), rope_(std::move(rope)), pool_(pool), linears_(pool) {}


void Transformer::Attention(int layer, const ForwardBatch& batch, PagedKvCache& cache) {
  const int d = cfg_.head_dim;
  const int group = cfg_.num_heads / cfg_.num_kv_heads;
  const int64_t qs = cfg_.q_size();
  const int64_t window = cfg_.sliding_window[layer];
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // The cache is read in its codecs' attention space (kv_codec.h): compressed keys are scored
  // against the query rotated once (never inverse-rotated per position), values are summed in
  // their rotated space and inverse-rotated once per head. Plain codecs: identity maps.
  const KvCodec& kc = cache.key_codec(layer);
  const KvCodec& vc = cache.value_codec(layer);
  const int kd = kc.AttentionDim(d);
  const bool map_query = !kc.identity_attention(), map_value = !vc.identity_attention();
  std::vector<int64_t> offset(batch.seqs.size() + 1, 0);
  for (size_t s = 0; s < batch.seqs.size(); ++s) offset[s + 1] = offset[s] + batch.seqs[s].num_tokens;
  const int64_t tasks = static_cast<int64_t>(batch.seqs.size()) * cfg_.num_kv_heads;
  pool_->ParallelFor(tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kbuf, vbuf, scores, qbuf(kd), obuf(d);
    for (int64_t t = begin; t < end; ++t) {
      const size_t s = static_cast<size_t>(t / cfg_.num_kv_heads);
      const int kvh = static_cast<int>(t % cfg_.num_kv_heads);
      const ForwardSequence& seq = batch.seqs[s];
      const int64_t first = seq.start_pos;
      const int64_t last = seq.start_pos + seq.num_tokens - 1;
      // Positions any token of this slice may see.
      const int64_t lo = window > 0 ? std::max<int64_t>(0, first - window + 1) : 0;
      const int64_t len = last + 1 - lo;
      kbuf.resize(static_cast<size_t>(len) * kd);
      vbuf.resize(static_cast<size_t>(len) * d);
      scores.resize(len);
      cache.GatherAttention(seq.kv, layer, kvh, lo, last + 1, kbuf.data(), vbuf.data());
      for (int64_t i = 0; i < seq.num_tokens; ++i) {
        const int64_t pos = first + i;
        const int64_t from = window > 0 ? std::max<int64_t>(lo, pos - window + 1) : lo;
        const int64_t n = pos + 1 - from;
        const int64_t row = offset[s] + i;
        for (int g = 0; g < group; ++g) {
          const int head = kvh * group + g;
          const float* q = q_.data() + row * qs + head * d;
          float* out = attn_.data() + row * qs + head * d;
          if (map_query) {
            kc.PrepareQuery(q, d, qbuf.data());
            q = qbuf.data();
          }
          float* o = map_value ? obuf.data() : out;
          const float* k = kbuf.data() + (from - lo) * kd;
          const float* v = vbuf.data() + (from - lo) * d;
          if (kd == d) {
            nn::AttendOne(q, k, kd, v, d, n, d, scale, scores.data(), o);
          } else {  // QJL keys: scores over kd floats, values over d
            for (int64_t j = 0; j < n; ++j) scores[j] = nn::Dot(q, k + j * kd, kd) * scale;
            nn::SoftmaxInPlace(scores.data(), n);
            std::fill(o, o + d, 0.0f);
            for (int64_t j = 0; j < n; ++j) nn::Axpy(scores[j], v + j * d, o, d);
          }
          if (map_value) vc.FinishValue(obuf.data(), d, out);
        }
      }
    }
  });
}

std::string Transformer::Describe() const {
  return absl::StrCat("cpu: ", pool_->size(), " threads, linear kernels ", cpu::LinearKernelIsa(), ", ops ",
                      nn::NnKernelIsa());
}

absl::Status Transformer::Forward(const ForwardBatch& batch, PagedKvCache& cache,
                                  std::vector<float>* logits) {
  const int64_t T = static_cast<int64_t>(batch.tokens.size());
  if (T == 0) {
    logits->clear();
    return absl::OkStatus();
  }
  const int64_t H = cfg_.hidden_size;
  const int64_t qs = cfg_.q_size(), kvs = cfg_.kv_size();
  const int d = cfg_.head_dim;
  TQ_RETURN_IF_ERROR(ValidateForwardBatch(batch, cache, rope_.max_positions(), cfg_.vocab_size));

  x_.resize(T * H);
  h_.resize(T * H);
  q_.resize(T * qs);
  k_.resize(T * kvs);
  v_.resize(T * kvs);
  attn_.resize(T * qs);
  tmp_.resize(T * H);
  for (int64_t t = 0; t < T; ++t) w_.Embed(batch.tokens[t], H, x_.data() + t * H);

  // Position of every token.
  std::vector<int64_t> pos;
  std::vector<size_t> seq_of;
  TokenPositions(batch, &pos, &seq_of);
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const LayerWeights& L = w_.layers[l];
    pool_->ParallelFor(T, 16, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) nn::RmsNorm(x_.data() + t * H, L.input_norm.data(), H, eps, h_.data() + t * H);
    });
    RunLinears({{&L.q, q_.data()}, {&L.k, k_.data()}, {&L.v, v_.data()}}, h_.data(), T);
    pool_->ParallelFor(T, 8, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* qt = q_.data() + t * qs;
        float* kt = k_.data() + t * kvs;
        if (cfg_.qk_norm) {
          for (int hh = 0; hh < cfg_.num_heads; ++hh) nn::RmsNorm(qt + hh * d, L.q_norm.data(), d, eps, qt + hh * d);
          for (int hh = 0; hh < cfg_.num_kv_heads; ++hh) nn::RmsNorm(kt + hh * d, L.k_norm.data(), d, eps, kt + hh * d);
        }
        nn::ApplyRope(qt, d, cfg_.num_heads, rope_.cos(pos[t]), rope_.sin(pos[t]));
        nn::ApplyRope(kt, d, cfg_.num_kv_heads, rope_.cos(pos[t]), rope_.sin(pos[t]));
      }
    });
    for (int64_t t = 0; t < T; ++t) {
      cache.Write(batch.seqs[seq_of[t]].kv, l, pos[t], k_.data() + t * kvs, v_.data() + t * kvs);
    }
    Attention(l, batch, cache);
    RunLinears({{&L.o, tmp_.data()}}, attn_.data(), T);
    for (int64_t i = 0; i < T * H; ++i) x_[i] += tmp_[i];
    ffn_.Run(cfg_, L, x_.data(), T, linears_, pool_);
  }
  ComputeLogits(cfg_, w_, batch, x_.data(), linears_, logits);
  return absl::OkStatus();
}

absl::Status ValidateForwardBatch(const ForwardBatch& batch, const PagedKvCache& cache, int64_t max_positions,
                                  int64_t vocab_size) {
  int64_t covered = 0;
  for (const ForwardSequence& s : batch.seqs) {
    if (s.num_tokens < 1) return absl::InvalidArgumentError("forward: empty sequence slice");
    if (s.start_pos + s.num_tokens > max_positions) {
      return absl::OutOfRangeError(absl::StrCat("forward: position ", s.start_pos + s.num_tokens - 1,
                                                " beyond the context of ", max_positions));
    }
    if (cache.Capacity(s.kv) < s.start_pos + s.num_tokens) {
      return absl::InternalError("forward: KV cache space not reserved");
    }
    covered += s.num_tokens;
  }
  if (covered != static_cast<int64_t>(batch.tokens.size())) {
    return absl::InvalidArgumentError("forward: sequence slices do not cover the tokens");
  }
  for (int32_t tok : batch.tokens) {
    if (tok < 0 || tok >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tok, " outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

void TokenPositions(const ForwardBatch& batch, std::vector<int64_t>* pos, std::vector<size_t>* seq_of) {
  pos->resize(batch.tokens.size());
  seq_of->resize(batch.tokens.size());
  int64_t t = 0;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    for (int64_t i = 0; i < batch.seqs[s].num_tokens; ++i, ++t) {
      (*pos)[t] = batch.seqs[s].start_pos + i;
      (*seq_of)[t] = s;
    }
  }
}

void FeedForward::Run(const ModelConfig& cfg, const LayerWeights& L, float* x, int64_t T, LinearBatch& linears,
                      ThreadPool* pool) {
  const int64_t H = cfg.hidden_size;
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  h_.resize(T * H);
  out_.resize(T * H);
  pool->ParallelFor(T, 16, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) nn::RmsNorm(x + t * H, L.post_attention_norm.data(), H, eps, h_.data() + t * H);
  });
  if (L.moe) {  // the routed experts of each token (engine/model/moe.h)
    moe_.Run(cfg.moe, L, h_.data(), T, H, linears, pool, out_.data());
  } else {
    const int64_t I = cfg.intermediate_size;
    gate_.resize(T * I);
    up_.resize(T * I);
    linears.Run({{&L.gate, gate_.data()}, {&L.up, up_.data()}}, h_.data(), T);
    pool->ParallelFor(T, 4, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) nn::SiluMul(gate_.data() + t * I, up_.data() + t * I, I, gate_.data() + t * I);
    });
    linears.Run({{&L.down, out_.data()}}, gate_.data(), T);
  }
  for (int64_t i = 0; i < T * H; ++i) x[i] += out_[i];
}

void ComputeLogits(const ModelConfig& cfg, const ModelWeights& w, const ForwardBatch& batch, const float* x,
                   LinearBatch& linears, std::vector<float>* logits) {
  const int64_t H = cfg.hidden_size;
  std::vector<int64_t> rows;
  int64_t t = 0;
  for (const ForwardSequence& s : batch.seqs) {
    if (s.logits == LogitsMode::kAll) {
      for (int64_t i = 0; i < s.num_tokens; ++i) rows.push_back(t + i);
    } else if (s.logits == LogitsMode::kLast) {
      rows.push_back(t + s.num_tokens - 1);
    }
    t += s.num_tokens;
  }
  if (rows.empty()) return;
  const int64_t R = static_cast<int64_t>(rows.size());
  std::vector<float> normed(R * H);
  for (int64_t r = 0; r < R; ++r) {
    nn::RmsNorm(x + rows[r] * H, w.final_norm.data(), H, static_cast<float>(cfg.rms_norm_eps), normed.data() + r * H);
  }
  logits->resize(static_cast<size_t>(R) * cfg.vocab_size);
  linears.Run({{&w.lm_head, logits->data()}}, normed.data(), R);
}

}  // namespace tq
