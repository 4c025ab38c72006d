// The MLA kernels (kernels/cuda/mla_ops.h) against CPU loops on random inputs of awkward sizes,
// outputs poisoned first. Skips with the reason when there is no GPU.
#include "kernels/cuda/mla_ops.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/device_testing.h"
#include "kernels/nn/ops.h"

namespace tq::cuda {
namespace {

#if TQ_HAVE_CUDA

std::vector<float> Random(size_t n, std::mt19937& gen) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = nd(gen);
  return v;
}

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double rel, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 1e-30, worst = 0.0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << " element " << i;
    worst = std::max(worst, std::fabs(got[i] - want[i]) / scale);
  }
  EXPECT_LE(worst, rel) << what;
}

TEST(MlaOpsTest, RopeOfSubVectorsMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 gen(3);
  const int rows = 5, heads = 3, rope = 10, max_pos = 40;
  const int64_t head_stride = 24 + rope, offset = 24, ld = heads * head_stride + 7;
  for (bool interleave : {false, true}) {
    std::vector<float> x = Random(rows * ld, gen);
    std::vector<float> cos(max_pos * rope / 2), sin(cos.size());
    for (int p = 0; p < max_pos; ++p) {
      for (int i = 0; i < rope / 2; ++i) {
        cos[p * rope / 2 + i] = std::cos(0.1f * p * (i + 1));
        sin[p * rope / 2 + i] = std::sin(0.1f * p * (i + 1));
      }
    }
    const std::vector<int32_t> pos = {0, 7, 39, 3, 12};
    std::vector<double> want(x.begin(), x.end());
    for (int r = 0; r < rows; ++r) {
      for (int h = 0; h < heads; ++h) {
        float v[rope];
        const float* src = x.data() + r * ld + h * head_stride + offset;
        for (int i = 0; i < rope / 2; ++i) {
          v[i] = interleave ? src[2 * i] : src[i];
          v[i + rope / 2] = interleave ? src[2 * i + 1] : src[i + rope / 2];
        }
        nn::ApplyRope(v, rope, 1, cos.data() + pos[r] * rope / 2, sin.data() + pos[r] * rope / 2);
        for (int i = 0; i < rope; ++i) want[r * ld + h * head_stride + offset + i] = v[i];
      }
    }
    DeviceVector<float> dx(x), dcos(cos), dsin(sin);
    DeviceVector<int32_t> dpos(pos);
    ASSERT_EQ(MlaRope(dx.get(), ld, rows, heads, head_stride, offset, rope, interleave, dpos.get(), dcos.get(),
                      dsin.get(), nullptr),
              cudaSuccess);
    ExpectClose(dx.Download(), want, 1e-6, interleave ? "interleaved" : "rotate-half");
  }
  EXPECT_EQ(MlaRope(nullptr, 1, 1, 1, 1, 0, 3, false, nullptr, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
}

TEST(MlaOpsTest, AbsorbedQueryAndOutputMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937 gen(4);
  const int rows = 7, heads = 3, nope = 24, rope = 10, dv = 20, r = 72;
  const int64_t ldq = heads * (nope + rope) + 5;
  const std::vector<float> q = Random(rows * ldq, gen);
  const std::vector<float> kvb = Random(static_cast<size_t>(heads) * (nope + dv) * r, gen);
  // Absorb.
  std::vector<double> want(static_cast<size_t>(rows) * heads * (r + rope));
  for (int t = 0; t < rows; ++t) {
    for (int h = 0; h < heads; ++h) {
      double* o = want.data() + (t * heads + h) * (r + rope);
      const float* qh = q.data() + t * ldq + h * (nope + rope);
      for (int j = 0; j < r; ++j) {
        double acc = 0.0;
        for (int i = 0; i < nope; ++i) acc += double(qh[i]) * kvb[(static_cast<int64_t>(h) * (nope + dv) + i) * r + j];
        o[j] = acc;
      }
      for (int k = 0; k < rope; ++k) o[r + k] = qh[nope + k];
    }
  }
  DeviceVector<float> dq(q), dkvb(kvb);
  auto dout = DeviceVector<float>::Poisoned(want.size());
  ASSERT_EQ(MlaAbsorbQuery(dq.get(), ldq, rows, heads, nope, rope, dv, r, dkvb.get(), dout.get(), nullptr),
            cudaSuccess);
  ExpectClose(dout.Download(), want, 2e-6, "absorbed query");
  // Output: from an attention output of r + rope per head (the rope part ignored).
  const int64_t ldh = r + rope;
  const std::vector<float> o = Random(static_cast<size_t>(rows) * heads * ldh, gen);
  std::vector<double> want_out(static_cast<size_t>(rows) * heads * dv);
  for (int t = 0; t < rows; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int e = 0; e < dv; ++e) {
        double acc = 0.0;
        for (int j = 0; j < r; ++j) {
          acc += double(kvb[(static_cast<int64_t>(h) * (nope + dv) + nope + e) * r + j]) * o[(t * heads + h) * ldh + j];
        }
        want_out[(t * heads + h) * dv + e] = acc;
      }
    }
  }
  DeviceVector<float> dO(o);
  auto dres = DeviceVector<float>::Poisoned(want_out.size());
  ASSERT_EQ(MlaOutput(dO.get(), ldh, rows, heads, nope, dv, r, dkvb.get(), dres.get(), nullptr), cudaSuccess);
  ExpectClose(dres.Download(), want_out, 2e-6, "output");
  EXPECT_EQ(MlaOutput(nullptr, 4, 1, 1, 1, 1, 8, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
}

#else
TEST(MlaOpsTest, RopeOfSubVectorsMatchesTheCpu) { SKIP_WITHOUT_GPU(); }
#endif

}  // namespace
}  // namespace tq::cuda
