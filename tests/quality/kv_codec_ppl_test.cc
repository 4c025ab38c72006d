// Perplexity of the trained tq-tiny-qwen3 (BF16 weights) with each KV cache codec on the first
// 16 windows of 256 WikiText-2 tokens of reference.json (4,096 tokens), against the bf16 cache:
// a regression in a codec, the attention-space path or the cache layout shows up here.
// Attention reads the compressed cache also inside the prefill window (transformer.h), so every
// scored token sees compressed keys and values, as in decode.
//
// Measured 2026-11-28 (CPU-2): bf16 51.706; without boundary layers or sinks 4-bit presets are
// within +0.12% (fp8 +0.07%, k8v4 −0.05%, 4bit_nc −0.11%, turbo4 +0.11%), 3-bit within +1.6%
// (k3v4_nc +0.17%, 3bit_nc +0.82%, k4v3 +1.29%, turbo3 +1.56%), turbo3 with QJL +4.04%.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/runtime/engine.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/testdata.h"

namespace tq {
namespace {

constexpr int kWindows = 16;
// Largest accepted perplexity increase over the bf16 cache (relative).
constexpr double kMaxPplIncrease4Bit = 0.01;  // fp8 and the 4-bit presets
constexpr double kMaxPplIncrease3Bit = 0.03;  // presets with 3-bit keys or values
constexpr double kMaxPplIncreaseQjl3Bit = 0.06;

class KvCodecPplTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = tq::testing::TestDataPath("testdata/models/tq-tiny-qwen3");
    const auto ref = nlohmann::json::parse(tq::testing::ReadFileOrDie(dir + "/reference.json"));
    ids_ = new std::vector<int32_t>(ref["perplexity"]["token_ids"].get<std::vector<int32_t>>());
    window_ = ref["perplexity"]["window"].get<int>();
    dir_ = new std::string(dir);
    bf16_ = Ppl("bf16");
  }
  static void TearDownTestSuite() {
    delete ids_;
    delete dir_;
  }

  static double Ppl(const std::string& codec) {
    EngineOptions eo;
    eo.model_uri = *dir_;
    eo.kv_codec = codec;
    eo.threads = 2;
    auto engine = Engine::Create(eo);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return NAN;
    double total = 0;
    int64_t predicted = 0;
    for (int w = 0; w < kWindows; w += 8) {
      std::vector<std::vector<int32_t>> seqs;
      for (int j = w; j < w + 8; ++j) seqs.emplace_back(ids_->begin() + j * window_, ids_->begin() + (j + 1) * window_);
      auto nll = (*engine)->Score(seqs);
      EXPECT_TRUE(nll.ok()) << nll.status();
      if (!nll.ok()) return NAN;
      for (const auto& v : *nll) {
        for (float x : v) total += x;
        predicted += static_cast<int64_t>(v.size());
      }
    }
    const double ppl = std::exp(total / predicted);
    std::printf("%-36s ppl %.4f\n", codec.c_str(), ppl);
    return ppl;
  }

  static void ExpectWithin(const std::string& codec, double max_increase) {
    const double ppl = Ppl(codec);
    EXPECT_LE(ppl, bf16_ * (1 + max_increase)) << codec << ": " << ppl << " vs bf16 " << bf16_;
  }

  static std::vector<int32_t>* ids_;
  static std::string* dir_;
  static int window_;
  static double bf16_;
};

std::vector<int32_t>* KvCodecPplTest::ids_ = nullptr;
std::string* KvCodecPplTest::dir_ = nullptr;
int KvCodecPplTest::window_ = 0;
double KvCodecPplTest::bf16_ = 0;

TEST_F(KvCodecPplTest, FourBitPresetsStayCloseToBf16) {
  EXPECT_NEAR(bf16_, 51.7061, 0.01);
  for (const char* codec : {"fp8", "k8v4:boundary=0", "4bit_nc:boundary=0", "turbo4:boundary=0,sink=0", "k8v4",
                            "4bit_nc", "turbo4"}) {
    ExpectWithin(codec, kMaxPplIncrease4Bit);
  }
}

TEST_F(KvCodecPplTest, ThreeBitPresetsStayCloseToBf16) {
  for (const char* codec : {"k3v4_nc:boundary=0", "3bit_nc:boundary=0", "turbo3:boundary=0,sink=0",
                            "k4v3:boundary=0,sink=0", "3bit_nc", "turbo3"}) {
    ExpectWithin(codec, kMaxPplIncrease3Bit);
  }
}

// ALGORITHMS.md §4.3: QJL keys remove the inner-product bias but add variance, which softmax
// amplifies; at the same budget the MSE-only keys are better.
TEST_F(KvCodecPplTest, QjlKeysAreWorseThanMseKeys) {
  const double qjl = Ppl("turbo3:qjl=1,boundary=0,sink=0");
  EXPECT_LE(qjl, bf16_ * (1 + kMaxPplIncreaseQjl3Bit));
  EXPECT_GT(qjl, Ppl("turbo3:boundary=0,sink=0"));
}

// The MLA latent of the tiny DeepSeek-V3 under the same bounds (the latent c takes a preset's
// value codec, k_pe stays bf16: MakeMlaKvCacheFormat). Measured 2026-11-28 over this test's 4,096
// tokens: 4bit_nc +0.07%, 3bit_nc +0.17%, turbo3 +0.27% (over 16,384 tokens: +0.09%, +0.29%, +0.39%,
// docs/BENCHMARKS.md §11).
double DeepSeekPpl(const std::string& codec) {
  const std::string dir = tq::testing::TestDataPath("testdata/models/tq-tiny-deepseek-v3");
  const auto ref = nlohmann::json::parse(tq::testing::ReadFileOrDie(dir + "/reference.json"));
  const auto ids = ref["perplexity"]["token_ids"].get<std::vector<int32_t>>();
  const int window = ref["perplexity"]["window"].get<int>();
  EngineOptions eo;
  eo.model_uri = dir;
  eo.kv_codec = codec;
  eo.threads = 2;
  auto engine = Engine::Create(eo);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return NAN;
  std::vector<std::vector<int32_t>> seqs;
  for (int j = 0; j < kWindows; ++j) seqs.emplace_back(ids.begin() + j * window, ids.begin() + (j + 1) * window);
  auto nll = (*engine)->Score(seqs);
  EXPECT_TRUE(nll.ok()) << nll.status();
  if (!nll.ok()) return NAN;
  double total = 0;
  int64_t predicted = 0;
  for (const auto& v : *nll) {
    for (float x : v) total += x;
    predicted += static_cast<int64_t>(v.size());
  }
  const double ppl = std::exp(total / predicted);
  std::printf("deepseek-v3 %-24s ppl %.4f\n", codec.c_str(), ppl);
  return ppl;
}

TEST(MlaLatentCodecPplTest, CompressedLatentStaysCloseToBf16) {
  const double bf16 = DeepSeekPpl("bf16");
  EXPECT_LE(DeepSeekPpl("4bit_nc:boundary=0,sink=0"), bf16 * (1 + kMaxPplIncrease4Bit));
  EXPECT_LE(DeepSeekPpl("3bit_nc:boundary=0,sink=0"), bf16 * (1 + kMaxPplIncrease3Bit));
  EXPECT_LE(DeepSeekPpl("turbo3:boundary=0,sink=0"), bf16 * (1 + kMaxPplIncrease3Bit));
}

}  // namespace
}  // namespace tq
