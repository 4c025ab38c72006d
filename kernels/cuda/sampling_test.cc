// The device sampler (kernels/cuda/sampling.h) against its CPU reference, row by row: the same
// token, the same kept-prefix size, the log-probability within 2e-5, on random rows of awkward
// vocabulary sizes, every filter, masked ids, NaN entries, and rows of many tied values (more
// ties than the kernel's sorted band holds). Skips with the reason when there is no GPU.
#include "kernels/cuda/sampling.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/device_testing.h"
#include "kernels/cuda/sampling_reference.h"

namespace tq::cuda {
namespace {

#if TQ_HAVE_CUDA

struct Row {
  std::vector<float> logits;
  SampleRowParams p;
  std::vector<int32_t> masked;
  std::string what;
};

// Runs all rows (one vocabulary size) in one launch and compares each with the reference.
void CheckRows(const std::vector<Row>& rows, int64_t vocab) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t ld = vocab + 3;  // a row stride that is not the vocabulary
  std::vector<float> host(static_cast<size_t>(n * ld), NAN);
  std::vector<SampleRowParams> params;
  std::vector<int32_t> masked;
  for (int64_t r = 0; r < n; ++r) {
    std::copy(rows[r].logits.begin(), rows[r].logits.end(), host.begin() + r * ld);
    SampleRowParams p = rows[r].p;
    p.masked_begin = static_cast<int32_t>(masked.size());
    masked.insert(masked.end(), rows[r].masked.begin(), rows[r].masked.end());
    p.masked_end = static_cast<int32_t>(masked.size());
    params.push_back(p);
  }
  masked.push_back(0);  // never empty
  DeviceVector<float> d_logits(host);
  DeviceVector<SampleRowParams> d_params(params);
  DeviceVector<int32_t> d_masked(masked);
  auto d_out = DeviceVector<SampleRowResult>::Poisoned(static_cast<size_t>(n));
  ASSERT_EQ(SampleRows(d_logits.get(), ld, n, vocab, d_params.get(), d_masked.get(), d_out.get(), nullptr),
            cudaSuccess);
  const std::vector<SampleRowResult> got = d_out.Download();
  for (int64_t r = 0; r < n; ++r) {
    const SampleRowResult want = SampleRowReference(rows[r].logits.data(), vocab, params[r], masked.data());
    SCOPED_TRACE(rows[r].what + " vocab " + std::to_string(vocab) + " row " + std::to_string(r));
    EXPECT_EQ(got[r].token, want.token);
    EXPECT_EQ(got[r].kept, want.kept);
    if (std::isinf(want.logprob)) {
      EXPECT_EQ(got[r].logprob, want.logprob);
    } else {
      EXPECT_NEAR(got[r].logprob, want.logprob, 2e-5);
    }
  }
}

TEST(CudaSamplingTest, MatchesTheReference) {
  SKIP_WITHOUT_GPU();
  struct Setting {
    float t;
    int k;
    float top_p, min_p;
  };
  const Setting settings[] = {{0.0f, 0, 1.0f, 0.0f},  {1.0f, 0, 1.0f, 0.0f},  {0.7f, 50, 1.0f, 0.0f},
                              {0.8f, 0, 0.9f, 0.0f},  {1.3f, 0, 0.3f, 0.0f},  {1.0f, 0, 1.0f, 0.05f},
                              {0.6f, 40, 0.95f, 0.0f}, {1.0f, 3000, 0.5f, 0.01f}, {2.0f, 0, 0.99f, 0.0f},
                              {0.5f, 1, 1.0f, 0.0f}};
  std::mt19937 gen(123);
  for (int64_t vocab : {1, 7, 1000, 4097, 50001, 151936}) {
    std::vector<Row> rows;
    for (float spread : {0.5f, 3.0f, 12.0f}) {
      std::normal_distribution<float> nd(0.0f, spread);
      for (const Setting& s : settings) {
        Row row;
        row.logits.resize(vocab);
        for (float& v : row.logits) v = nd(gen);
        row.p.temperature = s.t;
        row.p.top_k = s.k;
        row.p.top_p = s.top_p;
        row.p.min_p = s.min_p;
        row.p.key = gen();
        row.p.index = gen() % 1000;
        row.what = "spread " + std::to_string(spread) + " t " + std::to_string(s.t) + " k " + std::to_string(s.k) +
                   " top_p " + std::to_string(s.top_p) + " min_p " + std::to_string(s.min_p);
        if (vocab > 10 && (row.p.key & 1)) {  // some masked ids and NaN entries
          for (int j = 0; j < 5; ++j) row.masked.push_back(static_cast<int32_t>(gen() % vocab));
          row.logits[gen() % vocab] = NAN;
          row.logits[gen() % vocab] = -INFINITY;
          row.what += " masked+NaN";
        }
        rows.push_back(std::move(row));
      }
    }
    CheckRows(rows, vocab);
  }
}

// Many equal values: logits on a coarse grid (ties everywhere, resolved by id), and rows where
// the prefix boundary falls inside a run of more ties than the kernel's sorted band (2,048).
TEST(CudaSamplingTest, TiesResolveByIdAsTheReference) {
  SKIP_WITHOUT_GPU();
  const int64_t vocab = 20000;
  std::mt19937 gen(9);
  std::vector<Row> rows;
  for (int variant = 0; variant < 12; ++variant) {
    Row row;
    row.logits.resize(vocab);
    for (int64_t i = 0; i < vocab; ++i) {
      row.logits[i] = variant < 6 ? 0.5f * static_cast<float>(gen() % 8) : 1.0f;  // 8 levels, or all equal
    }
    if (variant >= 6) row.logits[gen() % vocab] = 3.0f;
    row.p.temperature = 1.0f;
    row.p.key = gen();
    row.p.index = static_cast<uint64_t>(variant);
    switch (variant % 6) {
      case 0: row.p.top_k = 5000; break;
      case 1: row.p.top_k = 2; break;
      case 2: row.p.top_p = 0.5f; break;
      case 3: row.p.top_p = 0.97f; break;
      case 4: row.p.top_k = 9000; row.p.top_p = 0.3f; break;
      case 5: row.p.min_p = 0.3f; break;
    }
    row.what = "tie variant " + std::to_string(variant);
    rows.push_back(std::move(row));
  }
  CheckRows(rows, vocab);
}

// A seeded stream is a function of (key, index) only: the same row drawn alone or among others.
TEST(CudaSamplingTest, DrawDependsOnlyOnKeyAndIndex) {
  SKIP_WITHOUT_GPU();
  const int64_t vocab = 3001;
  std::mt19937 gen(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<Row> rows(6);
  for (Row& r : rows) {
    r.logits.resize(vocab);
    for (float& v : r.logits) v = nd(gen);
    r.p.temperature = 1.0f;
    r.p.top_p = 0.9f;
    r.p.key = 77;
    r.p.index = 3;
    r.what = "batch";
  }
  CheckRows(rows, vocab);                                   // each row against the reference
  CheckRows(std::vector<Row>(rows.begin(), rows.begin() + 1), vocab);  // and alone
}

TEST(CudaSamplingTest, RejectsBadShapes) {
  SKIP_WITHOUT_GPU();
  EXPECT_EQ(SampleRows(nullptr, 4, 1, 0, nullptr, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(SampleRows(nullptr, 4, 1, 8, nullptr, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(SampleRows(nullptr, 8, -1, 8, nullptr, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(SampleRows(nullptr, 8, 0, 8, nullptr, nullptr, nullptr, nullptr), cudaSuccess);
}

#else
TEST(CudaSamplingTest, MatchesTheReference) { SKIP_WITHOUT_GPU(); }
#endif

}  // namespace
}  // namespace tq::cuda
