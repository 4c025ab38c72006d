// Encodes and decodes exactly as Hugging Face tokenizers 0.23.2 does on the golden cases of
// testdata/golden/tokenizer/hf_cases.json (made by tools/tokenizer_golden.js): seven variants of
// the tiny tokenizer.json, 150 seeded random texts and 60 random id sequences each.
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/testdata.h"

namespace tq {
namespace {

using json = nlohmann::json;
using ::tq::testing::ReadFileOrDie;
using ::tq::testing::TestDataPath;

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// The variant's tokenizer.json: the base file with the generator's changes applied.
std::string VariantJson(const json& base, const json& variant) {
  json config = base;
  for (const auto& [key, value] : variant["patch"].items()) config[key] = value;
  for (const auto& [key, value] : variant["model_patch"].items()) config["model"][key] = value;
  if (variant["legacy_merges"].get<bool>()) {
    json legacy = json::array();
    for (const json& m : config["model"]["merges"]) {
      legacy.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    }
    config["model"]["merges"] = legacy;
  }
  return config.dump();
}

TEST(HfGoldenTest, EveryVariantMatchesTokenizers) {
  const json base =
      json::parse(ReadFileOrDie(TestDataPath("testdata/models/tq-tiny-qwen3/tokenizer.json")));
  const json golden =
      json::parse(ReadFileOrDie(TestDataPath("testdata/golden/tokenizer/hf_cases.json")));
  ASSERT_EQ(golden["format"], "tq-tokenizer-hf-golden-v1");
  ASSERT_EQ(golden["variants"].size(), 7u);
  for (const json& variant : golden["variants"]) {
    const std::string name = variant["name"].get<std::string>();
    SCOPED_TRACE("variant " + name);
    auto tok = Tokenizer::FromJson(VariantJson(base, variant));
    ASSERT_TRUE(tok.ok()) << tok.status();
    int encode_failures = 0;
    for (const json& c : variant["encodes"]) {
      const std::string text = FromHex(c["text_utf8_hex"].get<std::string>());
      const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
      const std::vector<int32_t> ids = (*tok)->Encode(text);
      if (ids != expected && ++encode_failures <= 5) {
        ADD_FAILURE() << "encode differs for text hex " << c["text_utf8_hex"] << "\n  text: "
                      << text << "\n  expected " << json(expected).dump() << "\n  got      "
                      << json(ids).dump();
      }
    }
    EXPECT_EQ(encode_failures, 0);
    int decode_failures = 0;
    for (const json& c : variant["decodes"]) {
      const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
      auto decoded = (*tok)->Decode(ids);
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      const std::string expected = FromHex(c["decoded_utf8_hex"].get<std::string>());
      if (*decoded != expected && ++decode_failures <= 5) {
        ADD_FAILURE() << "decode differs for ids " << json(ids).dump() << "\n  expected "
                      << expected << "\n  got      " << *decoded;
      }
    }
    EXPECT_EQ(decode_failures, 0);
  }
}

}  // namespace
}  // namespace tq
