// RouteMoeToken's softmax path (Qwen3-MoE; the sigmoid/group path is in mla_transformer_test):
// the top-k of the softmax, weights renormalized only with norm_topk_prob, ties to the lower id.
// MoeBlock::Run is checked end to end against transformers (tests/reference, ref-qwen3-moe and
// tq-tiny-deepseek-v3).
#include "engine/model/moe.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace tq {
namespace {

MoeConfig Qwen3Style(int experts, int top_k, bool norm) {
  MoeConfig m;
  m.softmax_scoring = true;
  m.n_routed_experts = experts;
  m.num_experts_per_tok = top_k;
  m.norm_topk_prob = norm;
  return m;
}

TEST(MoeRouteTest, SoftmaxTopKRenormalized) {
  const float logits[6] = {0.5f, 2.0f, -1.0f, 1.5f, 2.0f, 0.0f};
  float z = 0;
  for (float l : logits) z += std::exp(l);
  std::vector<int> ex;
  std::vector<float> w;
  // Experts 1 and 4 tie at the top: the lower id first; then expert 3.
  RouteMoeToken(Qwen3Style(6, 3, false), logits, nullptr, &ex, &w);
  ASSERT_EQ(ex, (std::vector<int>{1, 4, 3}));
  EXPECT_NEAR(w[0], std::exp(2.0f) / z, 1e-6);  // raw softmax probabilities
  EXPECT_NEAR(w[2], std::exp(1.5f) / z, 1e-6);
  RouteMoeToken(Qwen3Style(6, 3, true), logits, nullptr, &ex, &w);
  const float top = 2 * std::exp(2.0f) + std::exp(1.5f);
  EXPECT_NEAR(w[0], std::exp(2.0f) / top, 1e-6);  // renormalized over the chosen three
  EXPECT_NEAR(w[2], std::exp(1.5f) / top, 1e-6);
  EXPECT_NEAR(w[0] + w[1] + w[2], 1.0f, 1e-6);
}

TEST(MoeRouteTest, SoftmaxIsShiftInvariantAndStable) {
  // Huge logits neither overflow nor change the choice (the softmax subtracts the maximum).
  const float a[4] = {1000.0f, 1001.0f, 999.0f, 998.0f};
  const float b[4] = {0.0f, 1.0f, -1.0f, -2.0f};
  std::vector<int> ea, eb;
  std::vector<float> wa, wb;
  RouteMoeToken(Qwen3Style(4, 2, false), a, nullptr, &ea, &wa);
  RouteMoeToken(Qwen3Style(4, 2, false), b, nullptr, &eb, &wb);
  EXPECT_EQ(ea, (std::vector<int>{1, 0}));
  EXPECT_EQ(ea, eb);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(std::isfinite(wa[i]));
    EXPECT_NEAR(wa[i], wb[i], 1e-6);
  }
}

}  // namespace
}  // namespace tq
