#include "engine/format/safetensors.h"

#include <random>
#include <string>

#include "gtest/gtest.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

using ::tq::testing::ReadFileOrDie;
using ::tq::testing::TestDataPath;

std::string Le64(uint64_t n) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return s;
}

// A file with the given header JSON and `data` bytes of payload.
std::string MakeFile(const std::string& header, size_t data = 0) {
  return Le64(header.size()) + header + std::string(data, '\0');
}

absl::Status ParseStatus(const std::string& file) {
  return ParseSafetensorsBuffer(file, "test.safetensors").status();
}

void ExpectError(const std::string& file, const std::string& needle) {
  absl::Status st = ParseStatus(file);
  ASSERT_FALSE(st.ok()) << "accepted: " << needle;
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("test.safetensors"), std::string::npos) << st.message();
}

TEST(SafetensorsTest, ReadsTheTinyModel) {
  auto f = SafetensorsFile::Open(TestDataPath("testdata/models/tq-tiny-qwen3/model.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  const SafetensorsHeader& h = (*f)->header();
  EXPECT_EQ(h.tensors.size(), 69u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  EXPECT_EQ(h.header_bytes, 7416u);
  const TensorInfo* lm = h.Find("lm_head.weight");
  ASSERT_NE(lm, nullptr);
  EXPECT_EQ(lm->dtype, DType::kBF16);
  EXPECT_EQ(lm->shape, (std::vector<int64_t>{4096, 256}));
  EXPECT_EQ((*f)->Data(*lm).size(), 4096u * 256 * 2);
  EXPECT_EQ((*f)->file_size(), 13647104u);
  (*f)->Release(*lm);  // harmless
}

// The reference implementation's own serialization test vectors.
TEST(SafetensorsTest, WriterMatchesReferenceVectors) {
  std::string data;
  for (float v : {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f}) data.append(reinterpret_cast<char*>(&v), 4);
  auto out = SerializeSafetensors({{"attn.0", DType::kF32, {1, 2, 3}}}, {{"attn.0", data}});
  ASSERT_TRUE(out.ok());
  const std::string header =
      R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);
  EXPECT_EQ(*out, Le64(64) + header + data);

  auto empty = SerializeSafetensors({}, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, Le64(8) + "{}      ");
  auto meta = SerializeSafetensors({}, {}, {{"framework", "pt"}});
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(*meta, Le64(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
}

TEST(SafetensorsTest, WriterSortsByDtypeThenName) {
  auto layout = PlanSafetensors({{"b", DType::kU8, {3}},
                                 {"a", DType::kU8, {1}},
                                 {"z", DType::kF16, {2}},
                                 {"y", DType::kI64, {1}},
                                 {"x", DType::kF32, {1}},
                                 {"w", DType::kBF16, {1}}});
  ASSERT_TRUE(layout.ok());
  std::vector<std::string> order;
  for (const auto& t : layout->tensors) order.push_back(t.name);
  EXPECT_EQ(order, (std::vector<std::string>{"y", "x", "w", "z", "a", "b"}));
  EXPECT_EQ(layout->header.size() % 8, 0u);
  EXPECT_FALSE(PlanSafetensors({{"a", DType::kU8, {1}}, {"a", DType::kU8, {1}}}).ok());
}

TEST(SafetensorsTest, EscapesNamesLikeTheReference) {
  auto layout = PlanSafetensors({{"a\"b\\c\n\x01/é", DType::kU8, {0}}});
  ASSERT_TRUE(layout.ok());
  EXPECT_NE(layout->header.find(R"("a\"b\\c\n\u0001/é")"), std::string::npos) << layout->header;
  // And it parses back to the same name.
  auto file = SerializeSafetensors({{"a\"b\\c\n\x01/é", DType::kU8, {0}}}, {{"a\"b\\c\n\x01/é", ""}});
  ASSERT_TRUE(file.ok());
  auto h = ParseSafetensorsBuffer(*file, "x");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tensors[0].name, "a\"b\\c\n\x01/é");
}

// Re-serializing the golden plugin checkpoint (written by safetensors 0.8 in Python) from its
// parsed header gives back the identical file.
TEST(SafetensorsTest, RoundTripsAReferenceWrittenFileByteForByte) {
  for (const char* rel : {"testdata/golden/plugin/synthetic-tq3/model.safetensors",
                          "testdata/golden/plugin/synthetic-tq4-shards/model-00001-of-00002.safetensors"}) {
    const std::string bytes = ReadFileOrDie(TestDataPath(rel));
    auto h = ParseSafetensorsBuffer(bytes, rel);
    ASSERT_TRUE(h.ok()) << h.status();
    std::vector<TensorSpec> specs;
    std::map<std::string, std::string> data;
    for (const TensorInfo& t : h->tensors) {
      specs.push_back({t.name, t.dtype, t.shape});
      data[t.name] = bytes.substr(h->data_start() + t.begin, t.nbytes());
    }
    auto again = SerializeSafetensors(specs, data, h->metadata);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(*again == bytes) << rel;
  }
}

TEST(SafetensorsTest, RejectsMalformedFiles) {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  ASSERT_TRUE(ParseStatus(MakeFile("{" + ok_entry + "}", 8)).ok());

  ExpectError("", "truncated");
  ExpectError("\x05\0\0", "truncated");
  ExpectError(Le64(1000) + "{}", "goes past the end of the file");
  ExpectError(Le64(uint64_t{1} << 62) + "{}", "exceeds the limit");
  ExpectError(Le64(~uint64_t{0}) + "{}", "exceeds the limit");
  ExpectError(MakeFile("{\"t\":"), "not valid JSON");
  ExpectError(MakeFile("{\"t\xff\":{}}"), "not valid JSON");  // invalid UTF-8
  ExpectError(MakeFile("[1,2]"), "not a JSON object");
  ExpectError(MakeFile("{" + ok_entry + "," + ok_entry + "}", 8), "appears twice");
  ExpectError(MakeFile(R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8),
              "unknown dtype");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
              "non-negative integer");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8),
              "non-negative integer");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                       8),
              "overflows 64 bits");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})",
                       8),
              "overflows 64 bits");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
              "is 12 bytes but");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
              "go past the data section");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
              "end before they begin");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", 8),
              "data_offsets must be");
  ExpectError(MakeFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                       8),
              "overlaps");
  ExpectError(MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
              "belong to no tensor");
  ExpectError(MakeFile("{" + ok_entry + "}", 12), "trailing bytes");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[2]}})", 8), "has no \"data_offsets\"");
  ExpectError(MakeFile(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8),
              "unknown field");
  ExpectError(MakeFile(R"({"t":5})"), "not a JSON object");
  ExpectError(MakeFile(R"({"__metadata__":{"a":1}})"), "__metadata__");
  ExpectError(MakeFile(R"({"__metadata__":[]})"), "__metadata__");
}

TEST(SafetensorsTest, TruncatedAndCorruptedFilesNeverCrash) {
  const std::string bytes =
      ReadFileOrDie(TestDataPath("testdata/golden/plugin/synthetic-tq3/model.safetensors"));
  std::mt19937 gen(3);
  for (int i = 0; i < 300; ++i) {
    const size_t cut = gen() % bytes.size();
    EXPECT_FALSE(ParseStatus(bytes.substr(0, cut)).ok()) << "cut at " << cut;
  }
  const uint64_t header = 8 + ParseSafetensorsBuffer(bytes, "x")->header_bytes;
  for (int i = 0; i < 2000; ++i) {
    std::string corrupt = bytes;
    corrupt[gen() % header] ^= static_cast<char>(1 + gen() % 255);
    (void)ParseStatus(corrupt);  // either a clean error or a valid parse
  }
}

TEST(SafetensorsTest, OpenReportsMissingFiles) {
  auto missing = SafetensorsFile::Open("/nonexistent/model.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto dir = SafetensorsFile::Open("/tmp");
  EXPECT_FALSE(dir.ok());
}

}  // namespace
}  // namespace tq
