#include "engine/compress/compressor.h"

#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <random>
#include <set>

#include "engine/checkpoint/manifest.h"
#include "engine/checkpoint/tq_checkpoint.h"
#include "engine/format/safetensors.h"
#include "engine/util/file_util.h"
#include "engine/util/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/testdata.h"

namespace tq {
namespace {

using ::tq::testing::MakeTempDir;
using ::tq::testing::ReadFileOrDie;
using ::tq::testing::TestDataPath;
using ::tq::testing::WriteFileOrDie;

const char kTiny[] = "testdata/models/tq-tiny-qwen3";
const char kSynthetic[] = "testdata/models/synthetic-mixed";

CompressOptions Options(const std::string& src, const std::string& dst) {
  CompressOptions o;
  o.source = TestDataPath(src);
  o.destination = dst;
  o.threads = 2;
  return o;
}

// The golden files were produced on the GPU machine by tools/plugin_reference.py: torch 2.11 +
// safetensors 0.8 running the plugin's save_tq3_checkpoint pipeline (see
// testdata/golden/plugin/README.md).
struct GoldenCase {
  const char* name;
  const char* source;
  int bits;
  uint64_t max_shard_bytes;
};

class PluginGoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(PluginGoldenTest, SameBytesAsThePlugin) {
  const GoldenCase& c = GetParam();
  const auto hashes = nlohmann::json::parse(
      ReadFileOrDie(TestDataPath("testdata/golden/plugin/hashes.json")))[c.name];
  ASSERT_FALSE(hashes.is_null()) << c.name;
  const std::string dst = MakeTempDir(c.name);
  CompressOptions o = Options(c.source, dst);
  o.format = CheckpointFormat::kPlugin;
  o.bits = c.bits;
  o.max_shard_bytes = c.max_shard_bytes;
  o.original_model = "SOURCE";
  auto r = Compress(o);
  ASSERT_TRUE(r.ok()) << r.status();
  for (auto it = hashes.begin(); it != hashes.end(); ++it) {
    auto d = Sha256File(JoinPath(dst, it.key()));
    ASSERT_TRUE(d.ok()) << it.key() << ": " << d.status();
    EXPECT_EQ(d->sha256, it.value().get<std::string>()) << c.name << "/" << it.key();
  }
  // Nothing else that looks like weights.
  const std::vector<std::string> listing = *ListDirectory(dst);
  for (const std::string& f : listing) {
    if (f.find("safetensors") != std::string::npos) EXPECT_TRUE(hashes.contains(f)) << f;
  }
  EXPECT_GT(r->quantized, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PluginGoldenTest,
    ::testing::Values(GoldenCase{"tiny-tq3", kTiny, 3, kDefaultMaxShardBytes},
                      GoldenCase{"tiny-tq2", kTiny, 2, kDefaultMaxShardBytes},
                      GoldenCase{"tiny-tq4", kTiny, 4, kDefaultMaxShardBytes},
                      GoldenCase{"tiny-tq3-shards", kTiny, 3, 1024 * 1024},
                      GoldenCase{"synthetic-tq3", kSynthetic, 3, kDefaultMaxShardBytes},
                      GoldenCase{"synthetic-tq4-shards", kSynthetic, 4, 200 * 1024}),
    [](const ::testing::TestParamInfo<GoldenCase>& i) {
      std::string n = i.param.name;
      for (char& ch : n) ch = ch == '-' ? '_' : ch;
      return n;
    });

double Nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (a[i] - b[i]) * double(a[i] - b[i]);
    r += a[i] * double(a[i]);
  }
  return r > 0 ? e / r : 0;
}

TEST(CompressorTest, TqModeWritesAVerifiableManifestLast) {
  const std::string dst = MakeTempDir("tqmode");
  auto r = Compress(Options(kTiny, dst));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files.back(), kManifestName);
  auto ck = TqCheckpoint::Open(dst, VerifyLevel::kChecksums);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->mode(), TqCheckpointMode::kTq);
  const Manifest& m = *(*ck)->manifest();
  EXPECT_EQ(m.gain, "ls");
  EXPECT_EQ(m.tensors.size(), 69u);
  EXPECT_EQ(m.source_files.size(), 1u + 7u);  // model + the 7 *.json side files
  EXPECT_EQ(m.source_digest, DigestOfFiles(m.source_files));
  // Every file but the manifest is listed with its sha256.
  std::set<std::string> listed;
  for (const auto& f : m.files) listed.insert(f.name);
  const std::vector<std::string> listing = *ListDirectory(dst);
  for (const std::string& f : listing) {
    if (f != kManifestName) EXPECT_TRUE(listed.count(f)) << f;
  }
  // High-precision tensors keep their source dtype (not fp16).
  const TqTensor* emb = (*ck)->Find("model.embed_tokens.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_FALSE(emb->quantized);
  EXPECT_EQ(emb->data.info->dtype, DType::kBF16);
  // Quantized tensors decode to the source within TQ3 error.
  auto src = SafetensorsFile::Open(TestDataPath(std::string(kTiny) + "/model.safetensors"));
  ASSERT_TRUE(src.ok());
  int checked = 0;
  for (const TqTensor& t : (*ck)->tensors()) {
    if (!t.quantized) continue;
    EXPECT_TRUE(t.shape_exact);
    EXPECT_EQ(t.spec.bits, 3);
    const TensorInfo* info = (*src)->header().Find(t.name);
    ASSERT_NE(info, nullptr);
    std::vector<float> ref(info->numel());
    ASSERT_TRUE(ConvertToFloat(info->dtype, (*src)->Data(*info).data(), ref.size(), ref.data()).ok());
    auto deq = (*ck)->Dequantize(t);
    ASSERT_TRUE(deq.ok());
    const double nmse = Nmse(ref, *deq);
    EXPECT_LT(nmse, 0.045) << t.name;
    EXPECT_GT(nmse, 0.02) << t.name;
    ++checked;
  }
  EXPECT_EQ(checked, 42);  // 7 linear layers x 6 blocks
  // tq_config.json: plugin-loadable (uniform TQ3, G=128) with our section.
  const auto cfg = nlohmann::json::parse(ReadFileOrDie(JoinPath(dst, kTqConfigName)));
  EXPECT_EQ(cfg["format"], "tq3_native");
  EXPECT_EQ(cfg["tqserve"]["mode"], "tq");
}

TEST(CompressorTest, TqModeWithNormCorrectionHasThePluginsCodes) {
  const std::string dst = MakeTempDir("tqnc");
  CompressOptions o = Options(kSynthetic, dst);
  o.gain = quant::GainMode::kNormCorrected;
  ASSERT_TRUE(Compress(o).ok());
  auto golden = SafetensorsFile::Open(
      TestDataPath("testdata/golden/plugin/synthetic-tq3/model.safetensors"));
  ASSERT_TRUE(golden.ok());
  auto ck = TqCheckpoint::Open(dst, VerifyLevel::kSizes);
  ASSERT_TRUE(ck.ok()) << ck.status();
  int compared = 0;
  for (const TqTensor& t : (*ck)->tensors()) {
    if (!t.quantized) continue;
    const TensorInfo* gp = (*golden)->header().Find(t.packed.info->name);
    const TensorInfo* gn = (*golden)->header().Find(t.norms.info->name);
    ASSERT_NE(gp, nullptr);
    EXPECT_EQ(t.packed.data(), (*golden)->Data(*gp)) << t.name;
    EXPECT_EQ(t.norms.data(), (*golden)->Data(*gn)) << t.name;
    ++compared;
  }
  // Router gate and conv1d stay unquantized in tq mode (the plugin quantizes them).
  EXPECT_FALSE((*ck)->Find("model.layers.0.mlp.gate.weight")->quantized);
  EXPECT_FALSE((*ck)->Find("model.layers.1.conv1d.weight")->quantized);
  EXPECT_EQ(compared, 6);
}

// Writes a one-shard checkpoint with the given float tensors as BF16.
void WriteBf16Checkpoint(const std::string& dir,
                         const std::vector<std::pair<std::string, std::vector<float>>>& tensors,
                         const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<TensorSpec> specs;
  std::map<std::string, std::string> data;
  for (size_t i = 0; i < tensors.size(); ++i) {
    specs.push_back({tensors[i].first, DType::kBF16, shapes[i]});
    std::string bytes;
    for (float v : tensors[i].second) {
      const uint16_t b = FloatToBf16(v);
      bytes.append(reinterpret_cast<const char*>(&b), 2);
    }
    data[tensors[i].first] = bytes;
  }
  ASSERT_TRUE(MakeDirs(dir).ok());
  WriteFileOrDie(JoinPath(dir, "model.safetensors"), *SerializeSafetensors(specs, data));
  WriteFileOrDie(JoinPath(dir, "config.json"), R"({"model_type": "llama"})");
}

TEST(CompressorTest, KurtosisPolicyPicksBitsPerTensor) {
  std::mt19937 gen(11);
  std::normal_distribution<float> nd;
  const int n = 256 * 256;
  std::vector<float> gauss(n), mixture(n), spiky(n);
  for (int i = 0; i < n; ++i) {
    gauss[i] = nd(gen);
    mixture[i] = nd(gen) * (gen() % 20 == 0 ? 3.0f : 1.0f);  // excess kurtosis ~4.7
    spiky[i] = (i % 997 == 0) ? 40.0f : nd(gen) * 0.1f;       // far above 15
  }
  const std::string src = MakeTempDir("kurt-src");
  WriteBf16Checkpoint(src,
                      {{"a.weight", gauss}, {"b.weight", mixture}, {"c.weight", spiky}},
                      {{256, 256}, {256, 256}, {256, 256}});
  const std::string dst = MakeTempDir("kurt-dst");
  CompressOptions o;
  o.source = src;
  o.destination = dst;
  o.policy = BitPolicy::kKurtosis;
  auto r = Compress(o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto ck = TqCheckpoint::Open(dst, VerifyLevel::kChecksums);
  ASSERT_TRUE(ck.ok()) << ck.status();
  const Manifest& m = *(*ck)->manifest();
  EXPECT_EQ(m.FindTensor("a.weight")->bits, 3);
  EXPECT_EQ(m.FindTensor("b.weight")->bits, 4);
  EXPECT_FALSE(m.FindTensor("c.weight")->quantized);
  EXPECT_EQ(m.FindTensor("c.weight")->dtype, "BF16");
  EXPECT_GT(*m.FindTensor("c.weight")->kurtosis, 15.0);
  EXPECT_NEAR(*m.FindTensor("a.weight")->kurtosis, 0.0, 0.1);
  EXPECT_EQ((*ck)->Find("b.weight")->packed.info->shape[1], 64);  // TQ4: 64 B per group
  // Mixed bits: not loadable by the plugin, so the format says so.
  const auto cfg = nlohmann::json::parse(ReadFileOrDie(JoinPath(dst, kTqConfigName)));
  EXPECT_EQ(cfg["format"], "tqserve");
}

TEST(CompressorTest, BlockDiagonalRotationIsRecorded) {
  const std::string dst = MakeTempDir("blk");
  CompressOptions o = Options(kTiny, dst);
  o.rotation_block = 64;
  ASSERT_TRUE(Compress(o).ok());
  auto ck = TqCheckpoint::Open(dst, VerifyLevel::kSizes);
  ASSERT_TRUE(ck.ok()) << ck.status();
  const TqTensor* q = (*ck)->Find("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q->spec.block(), 64);
  EXPECT_EQ((*ck)->manifest()->FindTensor(q->name)->rotation_block, 64);
}

TEST(CompressorTest, NonFiniteWeightsFailCleanly) {
  std::vector<float> w(256 * 128, 0.5f);
  w[1000] = NAN;
  const std::string src = MakeTempDir("nan-src");
  WriteBf16Checkpoint(src, {{"x.weight", w}}, {{256, 128}});
  const std::string dst = MakeTempDir("nan-dst");
  CompressOptions o;
  o.source = src;
  o.destination = dst;
  auto r = Compress(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("x.weight"), std::string::npos) << r.status();
  EXPECT_TRUE(ListDirectory(dst)->empty()) << "partial files left behind";
}

TEST(CompressorTest, CancelLeavesNoManifest) {
  const std::string dst = MakeTempDir("cancel");
  std::atomic<bool> cancel{false};
  CompressOptions o = Options(kTiny, dst);
  o.cancel = &cancel;
  int calls = 0;
  auto r = Compress(o, [&](const CompressProgress& p) {
    if (p.phase == "compress" && ++calls == 5) cancel = true;
  });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(PathExists(JoinPath(dst, kManifestName)));
  const std::vector<std::string> listing = *ListDirectory(dst);
  for (const std::string& f : listing) ADD_FAILURE() << "left behind: " << f;
}

// A full disk (simulated with a file-size limit: writes past it fail with EFBIG) fails the job
// with RESOURCE_EXHAUSTED, and nothing of it is left behind.
TEST(CompressorTest, FullDiskFailsCleanly) {
  const std::string dst = MakeTempDir("full");
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 1 << 20;  // 1 MiB per file: the 6 MB shard cannot be reserved
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  auto r = Compress(Options(kTiny, dst));
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_NE(r.status().message().find("model.safetensors"), std::string::npos) << r.status();
  const std::vector<std::string> listing = *ListDirectory(dst);
  for (const std::string& f : listing) ADD_FAILURE() << "left behind: " << f;
}

TEST(CompressorTest, RerunReplacesCleanly) {
  const std::string dst = MakeTempDir("rerun");
  CompressOptions o = Options(kTiny, dst);
  o.max_shard_bytes = 1 << 20;
  ASSERT_TRUE(Compress(o).ok());
  int shards = 0;
  const std::vector<std::string> first = *ListDirectory(dst);
  for (const std::string& f : first) shards += f.find("-of-") != std::string::npos;
  EXPECT_GT(shards, 2);
  EXPECT_TRUE(PathExists(JoinPath(dst, "model.safetensors.index.json")));
  o.max_shard_bytes = kDefaultMaxShardBytes;
  ASSERT_TRUE(Compress(o).ok());
  const std::vector<std::string> listing = *ListDirectory(dst);
  for (const std::string& f : listing) {
    EXPECT_FALSE(f.find("-of-") != std::string::npos || f == "model.safetensors.index.json") << f;
  }
  EXPECT_TRUE(TqCheckpoint::Open(dst, VerifyLevel::kChecksums).ok());
}

TEST(CompressorTest, RejectsBadJobs) {
  const std::string dst = MakeTempDir("bad");
  CompressOptions o = Options(kTiny, dst);
  o.format = CheckpointFormat::kPlugin;
  o.policy = BitPolicy::kKurtosis;
  EXPECT_EQ(Compress(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options(kTiny, dst);
  o.bits = 5;
  EXPECT_EQ(Compress(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options(kTiny, dst);
  o.group_size = 100;
  EXPECT_EQ(Compress(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options("testdata/models/does-not-exist", dst);
  EXPECT_EQ(Compress(o).status().code(), absl::StatusCode::kNotFound);
  o = Options(kTiny, TestDataPath(kTiny));
  EXPECT_EQ(Compress(o).status().code(), absl::StatusCode::kInvalidArgument);
  // An already-quantized source.
  const std::string src = MakeTempDir("fp8src");
  WriteBf16Checkpoint(src, {{"x.weight", std::vector<float>(128 * 128, 1.0f)}}, {{128, 128}});
  WriteFileOrDie(JoinPath(src, "config.json"), R"({"quantization_config": {"quant_method": "fp8"}})");
  o.source = src;
  o.destination = dst;
  EXPECT_EQ(Compress(o).status().code(), absl::StatusCode::kFailedPrecondition);
  // A TQ checkpoint is not a source.
  o = Options("testdata/golden/plugin/synthetic-tq3", MakeTempDir("again"));
  auto again = Compress(o);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
}

TEST(TqCheckpointTest, RefusesIncompleteOrCorruptCheckpoints) {
  const std::string dst = MakeTempDir("corrupt");
  ASSERT_TRUE(Compress(Options(kTiny, dst)).ok());
  const std::string shard = JoinPath(dst, "model.safetensors");
  std::string bytes = ReadFileOrDie(shard);
  bytes[bytes.size() - 100] ^= 0x55;
  WriteFileOrDie(shard, bytes);
  EXPECT_TRUE(TqCheckpoint::Open(dst, VerifyLevel::kSizes).ok());
  auto st = TqCheckpoint::Open(dst, VerifyLevel::kChecksums).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("model.safetensors"), std::string::npos) << st;
  WriteFileOrDie(shard, bytes.substr(0, bytes.size() - 10));
  EXPECT_EQ(TqCheckpoint::Open(dst, VerifyLevel::kSizes).status().code(), absl::StatusCode::kDataLoss);
  ASSERT_TRUE(RemoveFile(JoinPath(dst, kManifestName)).ok());
  st = TqCheckpoint::Open(dst, VerifyLevel::kNone).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("incomplete"), std::string::npos) << st;
  EXPECT_EQ(TqCheckpoint::Open(TestDataPath(kTiny), VerifyLevel::kNone).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TqCheckpointTest, ReadsPluginCheckpoints) {
  auto ck = TqCheckpoint::Open(TestDataPath("testdata/golden/plugin/synthetic-tq4-shards"),
                               VerifyLevel::kNone);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->mode(), TqCheckpointMode::kPlugin);
  const TqTensor* q = (*ck)->Find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(q->quantized);
  EXPECT_EQ(q->spec.bits, 4);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{300, 256}));  // K=130 padded to 256
  EXPECT_FALSE(q->shape_exact);
  const TqTensor* experts = (*ck)->Find("model.layers.0.mlp.experts.gate_up_proj");
  ASSERT_NE(experts, nullptr);
  EXPECT_EQ(experts->rows, 4 * 256);
  const TqTensor* emb = (*ck)->Find("model.embed_tokens.weight");
  EXPECT_EQ(emb->data.info->dtype, DType::kF16);
  auto deq = (*ck)->Dequantize(*q);
  ASSERT_TRUE(deq.ok());
  EXPECT_EQ(deq->size(), 300u * 256);
}

}  // namespace
}  // namespace tq
