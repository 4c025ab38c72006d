// The inference engine loads models from S3 (Ceph RGW, started by //tests/s3:s3_suite): a BF16
// Hugging Face checkpoint and a TQ3 checkpoint written there by the compressor generate exactly
// what the local copies generate; the TQ checkpoint's shards are stream-verified against its
// manifest, so one flipped byte in S3 makes the load fail with DATA_LOSS naming the file.
#include <cstdlib>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/compress/compressor.h"
#include "engine/runtime/engine.h"
#include "engine/storage/object_store.h"
#include "engine/storage/s3_store.h"
#include "gtest/gtest.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

constexpr char kBucket[] = "tq-engine";

std::vector<int32_t> Greedy(const std::string& uri, const std::string& prompt) {
  EngineOptions o;
  o.model_uri = uri;
  o.threads = 2;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return {};
  GenerationRequest r;
  r.prompt = prompt;
  r.max_tokens = 12;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  std::promise<void> done;
  std::vector<int32_t> ids;
  auto id = (*e)->Submit(r, [&](const GenerationEvent& ev) {
    ids.insert(ids.end(), ev.token_ids.begin(), ev.token_ids.end());
    if (ev.finished) done.set_value();
  });
  EXPECT_TRUE(id.ok()) << id.status();
  done.get_future().wait();
  return ids;
}

class EngineS3Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("AWS_ENDPOINT_URL_S3") == nullptr) {
      GTEST_SKIP() << "no S3 server: run through //tests/s3:s3_suite (starts Ceph RGW)";
    }
    auto c = S3Config::FromEnv();
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(CreateS3Bucket(*c, kBucket).ok());
  }
  static std::string Uri(const std::string& prefix) { return absl::StrCat("s3://", kBucket, "/", prefix); }
};

TEST_F(EngineS3Test, LoadsHfAndTqCheckpointsFromS3) {
  const std::string local = tq::testing::TestDataPath("testdata/models/tq-tiny-qwen3");
  // Upload the BF16 model.
  auto store = OpenObjectStore(Uri("tiny-bf16"));
  ASSERT_TRUE(store.ok()) << store.status();
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json"}) {
    ASSERT_TRUE(WriteObject(**store, f, tq::testing::ReadFileOrDie(local + "/" + f)).ok()) << f;
  }
  // Compress file -> s3.
  CompressOptions co;
  co.source = local;
  co.destination = Uri("tiny-tq3");
  co.threads = 2;
  ASSERT_TRUE(Compress(co, nullptr).ok());
  const std::string out = tq::testing::MakeTempDir("tq3");
  co.destination = out;
  ASSERT_TRUE(Compress(co, nullptr).ok());

  const std::string prompt = "And it came to pass";
  const std::vector<int32_t> want_bf16 = Greedy(local, prompt);
  ASSERT_EQ(want_bf16.size(), 12u);
  EXPECT_EQ(Greedy(Uri("tiny-bf16"), prompt), want_bf16);
  const std::vector<int32_t> want_tq = Greedy(out, prompt);
  EXPECT_EQ(Greedy(Uri("tiny-tq3"), prompt), want_tq);

  // Flip one byte of the stored shard: the load is refused.
  auto tq_store = OpenObjectStore(Uri("tiny-tq3"));
  ASSERT_TRUE(tq_store.ok());
  auto bytes = ReadObject(**tq_store, "model.safetensors");
  ASSERT_TRUE(bytes.ok());
  (*bytes)[bytes->size() / 2] ^= 0x40;
  ASSERT_TRUE(WriteObject(**tq_store, "model.safetensors", *bytes).ok());
  EngineOptions o;
  o.model_uri = Uri("tiny-tq3");
  auto e = Engine::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kDataLoss) << e.status();
  EXPECT_NE(e.status().message().find("model.safetensors"), std::string::npos) << e.status();
}

}  // namespace
}  // namespace tq
