#include "engine/model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "kernels/nn/ops.h"

namespace tq {

void RouteMoeToken(const MoeConfig& moe, const float* logits, const float* bias, std::vector<int>* experts,
                   std::vector<float>* weights) {
  const int E = moe.n_routed_experts;
  const int per_group = E / moe.n_group;
  std::vector<float> score(E), choice(E);
  if (moe.softmax_scoring) {
    float big = -INFINITY, sum = 0.0f;
    for (int e = 0; e < E; ++e) big = std::max(big, logits[e]);
    for (int e = 0; e < E; ++e) sum += (score[e] = std::exp(logits[e] - big));
    for (int e = 0; e < E; ++e) score[e] /= sum;
  } else {
    for (int e = 0; e < E; ++e) score[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  }
  for (int e = 0; e < E; ++e) choice[e] = score[e] + (bias != nullptr ? bias[e] : 0.0f);
  // Group-limited selection: keep the topk_group groups with the best sum of their top 2.
  if (moe.n_group > 1) {
    std::vector<float> gscore(moe.n_group);
    for (int g = 0; g < moe.n_group; ++g) {
      float a = -INFINITY, b = -INFINITY;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
        if (choice[e] > a) {
          b = a;
          a = choice[e];
        } else if (choice[e] > b) {
          b = choice[e];
        }
      }
      gscore[g] = a + b;
    }
    std::vector<int> gorder(moe.n_group);
    std::iota(gorder.begin(), gorder.end(), 0);
    std::stable_sort(gorder.begin(), gorder.end(), [&](int a, int b) { return gscore[a] > gscore[b]; });
    std::vector<bool> keep(moe.n_group, false);
    for (int i = 0; i < moe.topk_group; ++i) keep[gorder[i]] = true;
    // transformers masks the other groups' experts with 0.0 (not -inf).
    for (int e = 0; e < E; ++e) {
      if (!keep[e / per_group]) choice[e] = 0.0f;
    }
  }
  std::vector<int> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return choice[a] > choice[b]; });
  experts->assign(order.begin(), order.begin() + moe.num_experts_per_tok);
  weights->resize(moe.num_experts_per_tok);
  float sum = 0;
  for (int i = 0; i < moe.num_experts_per_tok; ++i) {
    (*weights)[i] = score[(*experts)[i]];
    sum += (*weights)[i];
  }
  const float scale = static_cast<float>(moe.routed_scaling_factor);
  for (float& w : *weights) {
    if (moe.norm_topk_prob) w /= (sum + 1e-20f);
    w *= scale;
  }
}

void MoeBlock::Run(const MoeConfig& moe, const LayerWeights& L, const float* h, int64_t T, int64_t H,
                   LinearBatch& linears, ThreadPool* pool, float* out) {
  const int64_t I = moe.moe_intermediate_size;
  const int E = moe.n_routed_experts;
  router_.resize(T * E);
  linears.Run({{&L.router, router_.data()}}, h, T);
  // Tokens (and weights) per expert.
  std::vector<std::vector<std::pair<int64_t, float>>> routed(E);
  std::vector<int> ex;
  std::vector<float> wt;
  const float* bias = L.router_bias.empty() ? nullptr : L.router_bias.data();
  for (int64_t t = 0; t < T; ++t) {
    RouteMoeToken(moe, router_.data() + t * E, bias, &ex, &wt);
    for (size_t i = 0; i < ex.size(); ++i) routed[ex[i]].push_back({t, wt[i]});
  }
  std::fill(out, out + T * H, 0.0f);
  for (int e = 0; e < E; ++e) {
    const auto& toks = routed[e];
    if (toks.empty()) continue;  // only the active experts' weights are read
    const int64_t n = static_cast<int64_t>(toks.size());
    ebuf_.resize(n * H);
    for (int64_t i = 0; i < n; ++i) std::copy_n(h + toks[i].first * H, H, ebuf_.data() + i * H);
    const ExpertWeights& X = L.experts[e];
    gate_.resize(n * I);
    up_.resize(n * I);
    linears.Run({{&X.gate, gate_.data()}, {&X.up, up_.data()}}, ebuf_.data(), n);
    for (int64_t i = 0; i < n; ++i) nn::SiluMul(gate_.data() + i * I, up_.data() + i * I, I, gate_.data() + i * I);
    eout_.resize(n * H);
    linears.Run({{&X.down, eout_.data()}}, gate_.data(), n);
    for (int64_t i = 0; i < n; ++i) nn::Axpy(toks[i].second, eout_.data() + i * H, out + toks[i].first * H, H);
  }
  if (L.has_shared) {
    const int64_t S = L.shared.gate.n();
    gate_.resize(T * S);
    up_.resize(T * S);
    linears.Run({{&L.shared.gate, gate_.data()}, {&L.shared.up, up_.data()}}, h, T);
    pool->ParallelFor(T, 4, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) nn::SiluMul(gate_.data() + t * S, up_.data() + t * S, S, gate_.data() + t * S);
    });
    tmp_.resize(T * H);
    linears.Run({{&L.shared.down, tmp_.data()}}, gate_.data(), T);
    for (int64_t i = 0; i < T * H; ++i) out[i] += tmp_[i];
  }
}

}  // namespace tq
