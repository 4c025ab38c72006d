// The device MoE routing (kernels/cuda/moe_ops.h MoeTopK) against the CPU's RouteMoeToken on
// random router logits: the same experts in the same order, weights within 1e-6 relative;
// softmax and sigmoid scoring, with and without a bias and renormalization, expert counts that
// fill a warp partly (8, 60) or several times (128, 256), exact ties (lower id first), and
// group-limited selection (DeepSeek-V3's n_group / topk_group). Skips
// with the reason when there is no GPU. And MoeCombine against the slot-by-slot sum.
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/model/model_config.h"
#include "engine/model/moe.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device_testing.h"

#if TQ_HAVE_CUDA
#include "kernels/cuda/moe_ops.h"
#endif

namespace tq {
namespace {

TEST(MoeTopKTest, EqualsRouteMoeToken) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  struct Case {
    int experts, k;
    bool softmax, normalize, bias;
    float scale;
    int n_group = 1, topk_group = 1;
  };
  const Case cases[] = {{8, 2, true, true, false, 1.0f},   {60, 4, true, false, false, 1.0f},
                        {128, 8, true, true, false, 1.0f}, {256, 8, false, true, true, 2.5f},
                        {128, 1, false, false, false, 1.0f}, {256, 256, true, true, false, 1.0f},
                        // Group-limited (DeepSeek-V3: 256 experts in 8 groups, 4 kept; the tiny
                        // model: 8 in 4, 2 kept), and a top-k past the kept groups' experts.
                        {256, 8, false, true, true, 2.5f, 8, 4}, {8, 2, false, true, true, 1.0f, 4, 2},
                        {64, 6, true, false, false, 1.0f, 4, 2}, {60, 20, false, true, true, 1.0f, 3, 1}};
  uint32_t seed = 31;
  for (const Case& c : cases) {
    SCOPED_TRACE("experts " + std::to_string(c.experts) + " top " + std::to_string(c.k) +
                 (c.softmax ? " softmax" : " sigmoid") + " groups " + std::to_string(c.n_group) + "/" +
                 std::to_string(c.topk_group));
    const int64_t tokens = 37, ld = c.experts + 3;
    std::mt19937 rng(seed++);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<float> logits(tokens * ld), bias(c.experts);
    for (float& v : logits) v = nd(rng);
    for (float& v : bias) v = nd(rng) * 0.1f;
    // Token 0: every logit equal (ties everywhere); token 1: pairs of equal logits.
    for (int e = 0; e < c.experts; ++e) logits[e] = 0.5f, logits[ld + e] = static_cast<float>(e / 2);
    MoeConfig moe;
    moe.softmax_scoring = c.softmax;
    moe.n_routed_experts = c.experts;
    moe.num_experts_per_tok = c.k;
    moe.norm_topk_prob = c.normalize;
    moe.routed_scaling_factor = c.scale;
    moe.n_group = c.n_group;
    moe.topk_group = c.topk_group;
    cuda::DeviceVector<float> dl(logits), db(bias);
    cuda::DeviceVector<int32_t> dids(std::vector<int32_t>(tokens * c.k, -1));
    auto dw = cuda::DeviceVector<float>::Poisoned(tokens * c.k);
    cuda::MoeRouting r;
    r.num_experts = c.experts;
    r.top_k = c.k;
    r.softmax = c.softmax;
    r.normalize = c.normalize;
    r.scale = c.scale;
    r.bias = c.bias ? db.get() : nullptr;
    r.n_group = c.n_group;
    r.topk_group = c.topk_group;
    ASSERT_EQ(cuda::MoeTopK(dl.get(), ld, tokens, r, dids.get(), dw.get(), nullptr), cudaSuccess);
    const std::vector<int32_t> ids = dids.Download();
    const std::vector<float> w = dw.Download();
    std::vector<int> ex;
    std::vector<float> wt;
    for (int64_t t = 0; t < tokens; ++t) {
      RouteMoeToken(moe, logits.data() + t * ld, c.bias ? bias.data() : nullptr, &ex, &wt);
      for (int i = 0; i < c.k; ++i) {
        ASSERT_EQ(ids[t * c.k + i], ex[i]) << "token " << t << " slot " << i;
        EXPECT_NEAR(w[t * c.k + i], wt[i], 1e-6f * (1.0f + std::fabs(wt[i]))) << "token " << t << " slot " << i;
      }
    }
  }
  // Shapes it does not take.
  cuda::MoeRouting bad;
  bad.num_experts = 300;
  bad.top_k = 2;
  EXPECT_EQ(cuda::MoeTopK(nullptr, 300, 1, bad, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
  bad.num_experts = 8;
  bad.top_k = 9;
  EXPECT_EQ(cuda::MoeTopK(nullptr, 8, 1, bad, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
  bad.top_k = 2;
  bad.n_group = 3;  // does not divide 8
  EXPECT_EQ(cuda::MoeTopK(nullptr, 8, 1, bad, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
  bad.n_group = 4;
  bad.topk_group = 5;
  EXPECT_EQ(cuda::MoeTopK(nullptr, 8, 1, bad, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
#endif
}

// MoeCombine against the per-slot accumulation (out += w · expert_out, slot after slot, as fmaf):
// bitwise; widths that fill a CTA partly, a row stride wider than n, top-k 1 and 8.
TEST(MoeCombineTest, EqualsSlotBySlotSum) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const auto& [tokens, k, n] : {std::tuple<int64_t, int, int64_t>{1, 8, 2048}, {4, 8, 130}, {3, 1, 257}}) {
    const int64_t ldo = n + 5;
    std::vector<float> eo(tokens * k * n), w(tokens * k);
    for (float& v : eo) v = nd(rng);
    for (float& v : w) v = nd(rng);
    cuda::DeviceVector<float> deo(eo), dw(w);
    auto out = cuda::DeviceVector<float>::Poisoned(tokens * ldo);
    ASSERT_EQ(cuda::MoeCombine(deo.get(), dw.get(), tokens, k, n, out.get(), ldo, nullptr), cudaSuccess);
    const std::vector<float> got = out.Download();
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = 0; c < n; ++c) {
        float want = 0.0f;
        for (int i = 0; i < k; ++i) want = std::fmaf(w[t * k + i], eo[(t * k + i) * n + c], want);
        ASSERT_EQ(got[t * ldo + c], want) << "token " << t << " column " << c;
      }
    }
  }
  EXPECT_EQ(cuda::MoeCombine(nullptr, nullptr, 1, 0, 8, nullptr, 8, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cuda::MoeCombine(nullptr, nullptr, 1, 2, 8, nullptr, 4, nullptr), cudaErrorInvalidValue);
#endif
}

}  // namespace
}  // namespace tq
