#include <cmath>
#include <random>

#include "engine/checkpoint/manifest.h"
#include "engine/checkpoint/source_checkpoint.h"
#include "engine/checkpoint/tensor_policy.h"
#include "engine/util/file_util.h"
#include "gtest/gtest.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

using ::tq::testing::MakeTempDir;
using ::tq::testing::ReadFileOrDie;
using ::tq::testing::TestDataPath;
using ::tq::testing::WriteFileOrDie;

TEST(SourceCheckpointTest, WalksShardsInThePluginsOrder) {
  auto src = SourceCheckpoint::Open(TestDataPath("testdata/models/synthetic-mixed"));
  ASSERT_TRUE(src.ok()) << src.status();
  std::vector<std::string> names;
  for (const auto& t : (*src)->tensors()) names.push_back(t.name());
  ASSERT_EQ(names.size(), 15u);
  EXPECT_EQ(names[0], "model.embed_tokens.weight");  // shard 1, sorted by name
  EXPECT_EQ(names[7], "lm_head.weight");             // shard 2 starts
  EXPECT_EQ((*src)->side_files(), (std::vector<std::string>{"config.json"}));
}

TEST(SourceCheckpointTest, ValidatesTheIndex) {
  const std::string src = TestDataPath("testdata/models/synthetic-mixed");
  const std::string dir = MakeTempDir("idx");
  for (const char* f : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                        "config.json"}) {
    WriteFileOrDie(JoinPath(dir, f), ReadFileOrDie(JoinPath(src, f)));
  }
  const std::string index = ReadFileOrDie(JoinPath(src, "model.safetensors.index.json"));
  auto with_index = [&](const std::string& text) {
    WriteFileOrDie(JoinPath(dir, "model.safetensors.index.json"), text);
    return SourceCheckpoint::Open(dir).status();
  };
  EXPECT_TRUE(with_index(index).ok());
  EXPECT_EQ(with_index("{").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(with_index(R"({"weight_map": {}})").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(with_index(R"({"weight_map": {"a": "missing.safetensors"}})").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(with_index(R"({"weight_map": {"a": "../x.safetensors"}})").code(),
            absl::StatusCode::kInvalidArgument);
  // A tensor the index puts in the wrong shard.
  std::string wrong = index;
  const std::string key = R"("lm_head.weight": "model-00002-of-00002.safetensors")";
  wrong.replace(wrong.find(key), key.size(), R"("lm_head.weight": "model-00001-of-00002.safetensors")");
  auto st = with_index(wrong);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("lm_head.weight"), std::string::npos) << st;
  // A truncated shard is named in the error.
  ASSERT_TRUE(RemoveFile(JoinPath(dir, "model.safetensors.index.json")).ok());
  const std::string shard = ReadFileOrDie(JoinPath(src, "model-00002-of-00002.safetensors"));
  WriteFileOrDie(JoinPath(dir, "model-00002-of-00002.safetensors"), shard.substr(0, shard.size() / 2));
  st = SourceCheckpoint::Open(dir).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("model-00002-of-00002.safetensors"), std::string::npos) << st;
  EXPECT_EQ(SourceCheckpoint::Open(MakeTempDir("empty")).status().code(), absl::StatusCode::kNotFound);
}

TEST(TensorPolicyTest, PluginRules) {
  PolicyOptions p;
  p.format = CheckpointFormat::kPlugin;
  auto d = [&](const std::string& n, std::vector<int64_t> s, DType t = DType::kBF16) {
    return DecideTensor(p, n, t, s);
  };
  EXPECT_TRUE(d("model.layers.0.self_attn.q_proj.weight", {4096, 4096}).quantize);
  EXPECT_TRUE(d("model.layers.0.mlp.gate.weight", {64, 4096}).quantize);  // router: plugin quantizes
  EXPECT_TRUE(d("model.layers.0.conv1d.weight", {256, 128}).quantize);
  EXPECT_TRUE(d("model.layers.0.mlp.experts.gate_up_proj", {8, 256, 128}).quantize);
  EXPECT_FALSE(d("model.layers.0.mlp.experts.gate_up_proj", {8, 64, 64}).quantize);
  EXPECT_FALSE(d("model.embed_tokens.weight", {4096, 256}).quantize);
  EXPECT_FALSE(d("lm_head.weight", {4096, 256}).quantize);
  EXPECT_FALSE(d("model.norm.weight", {256}).quantize);
  EXPECT_FALSE(d("model.layers.0.small.weight", {100, 100}).quantize);
  EXPECT_FALSE(d("model.layers.0.mlp.up_proj.bias", {256}).quantize);
  EXPECT_EQ(d("model.norm.weight", {256}).stored_dtype, DType::kF16);  // the plugin's .half()
  EXPECT_EQ(d("model.position_ids", {5}, DType::kI64).stored_dtype, DType::kI64);
}

TEST(TensorPolicyTest, TqRulesKeepSensitiveTensorsInSourceDtype) {
  PolicyOptions p;
  auto d = [&](const std::string& n, std::vector<int64_t> s) {
    return DecideTensor(p, n, DType::kBF16, s);
  };
  EXPECT_TRUE(d("model.layers.0.mlp.down_proj.weight", {256, 768}).quantize);
  EXPECT_FALSE(d("model.layers.0.mlp.gate.weight", {64, 4096}).quantize);
  EXPECT_FALSE(d("model.layers.0.mlp.shared_expert_gate.weight", {1, 4096}).quantize);
  EXPECT_FALSE(d("model.layers.0.linear_attn.conv1d.weight", {256, 128}).quantize);
  EXPECT_TRUE(d("model.layers.0.mlp.gate_proj.weight", {768, 256}).quantize);
  EXPECT_EQ(d("model.norm.weight", {256}).stored_dtype, DType::kBF16);
  p.rotation_block = 64;
  EXPECT_EQ(d("model.layers.0.self_attn.o_proj.weight", {256, 256}).rotation_block, 64);
  EXPECT_EQ(d("model.layers.0.mlp.experts.3.down_proj.weight", {256, 256}).rotation_block, 0);
  p.rotation_block_include = {"q_proj", "k_proj"};
  EXPECT_EQ(d("model.layers.0.self_attn.q_proj.weight", {256, 256}).rotation_block, 64);
  EXPECT_EQ(d("model.layers.0.self_attn.o_proj.weight", {256, 256}).rotation_block, 0);
}

TEST(TensorPolicyTest, Kurtosis) {
  std::mt19937 gen(1);
  std::normal_distribution<float> nd;
  std::vector<float> x(200000);
  for (auto& v : x) v = nd(gen);
  EXPECT_NEAR(ExcessKurtosis(x.data(), x.size()), 0.0, 0.05);
  std::exponential_distribution<float> ed;
  for (auto& v : x) v = (gen() & 1 ? 1 : -1) * ed(gen);  // Laplace: 3
  EXPECT_NEAR(ExcessKurtosis(x.data(), x.size()), 3.0, 0.2);
  std::vector<float> c(10, 2.0f);
  EXPECT_EQ(ExcessKurtosis(c.data(), c.size()), 0.0);
  PolicyOptions p;
  p.policy = BitPolicy::kKurtosis;
  TensorDecision dec = DecideTensor(p, "a.weight", DType::kBF16, {256, 256});
  ApplyKurtosis(p, 5.0, DType::kBF16, &dec);
  EXPECT_EQ(dec.bits, 4);
  ApplyKurtosis(p, 20.0, DType::kBF16, &dec);
  EXPECT_FALSE(dec.quantize);
}

Manifest SampleManifest() {
  Manifest m;
  m.created_at = "2026-11-28T00:00:00Z";
  m.source_uri = "file:///m";
  m.source_files = {{"model.safetensors", 10, std::string(64, 'a')}};
  m.source_digest = DigestOfFiles(m.source_files);
  ManifestTensor q;
  q.name = "w.weight";
  q.quantized = true;
  q.shape = {256, 130};
  q.source_dtype = "BF16";
  q.bits = 3;
  q.group_size = 128;
  q.rotation_block = 128;
  q.gain = "ls";
  q.kurtosis = 0.25;
  ManifestTensor p;
  p.name = "norm.weight";
  p.shape = {256};
  p.source_dtype = "BF16";
  p.dtype = "BF16";
  m.tensors = {q, p};
  m.files = {{"model.safetensors", 5, std::string(64, 'b')}, {"tq_config.json", 7, std::string(64, 'c')}};
  return m;
}

TEST(ManifestTest, RoundTrips) {
  const Manifest m = SampleManifest();
  const std::string text = SerializeManifest(m);
  auto back = ParseManifest(text, "m.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(SerializeManifest(*back), text);
  EXPECT_EQ(back->FindTensor("w.weight")->bits, 3);
  EXPECT_EQ(*back->FindTensor("w.weight")->kurtosis, 0.25);
  EXPECT_EQ(back->FindFile("tq_config.json")->size, 7u);
}

TEST(ManifestTest, RejectsMalformedManifests) {
  const std::string good = SerializeManifest(SampleManifest());
  auto expect_bad = [&](const std::string& from, const std::string& to, const std::string& needle) {
    std::string text = good;
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    auto st = ParseManifest(text, "m.json").status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << to;
    EXPECT_NE(st.message().find(needle), std::string::npos) << st;
  };
  expect_bad("\"version\": 1", "\"version\": 2", "unsupported version");
  expect_bad("\"version\": 1", "\"version\": \"1\"", "version");
  expect_bad("\"bits\": 3,\n   \"group_size\": 128,\n   \"rotation_block\"", "\"bits\": 9,\n   \"group_size\": 128,\n   \"rotation_block\"", "bits 9");
  expect_bad("\"kind\": \"tq\"", "\"kind\": \"int4\"", "unknown kind");
  expect_bad("\"name\": \"model.safetensors\",\n   \"size\": 5", "\"name\": \"../model.safetensors\",\n   \"size\": 5", "unsafe file name");
  expect_bad(std::string(64, 'b'), "xyz", "sha256");
  expect_bad("\"gain\": \"ls\",\n  \"policy\"", "\"gain\": 5,\n  \"policy\"", "gain");
  expect_bad("\"dtype\": \"BF16\"", "\"dtype\": \"Q8\"", "unknown dtype");
  expect_bad("\"name\": \"norm.weight\"", "\"name\": \"w.weight\"", "listed twice");
  EXPECT_FALSE(ParseManifest("{", "m.json").ok());
  EXPECT_FALSE(ParseManifest("[]", "m.json").ok());
  EXPECT_FALSE(ParseManifest("", "m.json").ok());
}

TEST(ManifestTest, SafeNames) {
  EXPECT_TRUE(IsSafeRelativeName("model.safetensors"));
  EXPECT_TRUE(IsSafeRelativeName("sub/dir/file.json"));
  EXPECT_FALSE(IsSafeRelativeName("/etc/passwd"));
  EXPECT_FALSE(IsSafeRelativeName("a/../b"));
  EXPECT_FALSE(IsSafeRelativeName(""));
  EXPECT_FALSE(IsSafeRelativeName("a//b"));
}

}  // namespace
}  // namespace tq
