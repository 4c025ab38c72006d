#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "engine/tokenizer/byte_level_bpe.h"
#include "engine/tokenizer/utf8.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

using json = nlohmann::json;
using ::tq::testing::ReadFileOrDie;
using ::tq::testing::TestDataPath;

constexpr char kModelDir[] = "testdata/models/tq-tiny-qwen3/";

std::string TokenizerJson() {
  return ReadFileOrDie(TestDataPath(std::string(kModelDir) + "tokenizer.json"));
}

const Tokenizer& Tiny() {
  static const Tokenizer* const kTokenizer = [] {
    auto tok = Tokenizer::FromFile(TestDataPath(std::string(kModelDir) + "tokenizer.json"));
    if (!tok.ok()) {
      std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
      std::abort();
    }
    return tok->release();
  }();
  return *kTokenizer;
}

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

json Cases() {
  return json::parse(ReadFileOrDie(TestDataPath(std::string(kModelDir) + "tokenizer_cases.json")));
}

TEST(TokenizerTest, LoadsTheTinyTokenizer) {
  const Tokenizer& tok = Tiny();
  EXPECT_EQ(tok.vocab_size(), 4096);
  EXPECT_EQ(tok.TokenToId("<|endoftext|>"), 0);
  EXPECT_EQ(tok.IdToToken(0), "<|endoftext|>");
  EXPECT_TRUE(tok.IsSpecial(0));
  EXPECT_FALSE(tok.IsSpecial(1));
  EXPECT_FALSE(tok.IsSpecial(-1));
  EXPECT_FALSE(tok.IsSpecial(4096));
  EXPECT_EQ(tok.IdToToken(4096), "");
  EXPECT_EQ(tok.IdToToken(-1), "");
  EXPECT_FALSE(tok.TokenToId("no such token").has_value());
  // The byte symbols: "Ġ" is the space byte.
  ASSERT_TRUE(tok.TokenToId("Ġ").has_value());
  EXPECT_EQ(*tok.Decode({*tok.TokenToId("Ġ")}), " ");
}

TEST(TokenizerTest, MatchesHuggingFaceOnEveryCase) {
  const json cases = Cases();
  ASSERT_EQ(cases["cases"].size(), 30u);
  const Tokenizer& tok = Tiny();
  for (const json& c : cases["cases"]) {
    const std::string text = FromHex(c["text_utf8_hex"].get<std::string>());
    ASSERT_EQ(text, c["text"].get<std::string>());
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> ids = tok.Encode(text);
    EXPECT_EQ(ids, expected) << "text: " << text;
    const std::vector<std::string> tokens = c["tokens"].get<std::vector<std::string>>();
    ASSERT_EQ(tokens.size(), expected.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      EXPECT_EQ(tok.IdToToken(expected[i]), tokens[i]) << "text: " << text << " token " << i;
      EXPECT_EQ(tok.TokenToId(tokens[i]), expected[i]);
    }
    auto decoded = tok.Decode(expected);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, c["decoded"].get<std::string>()) << "text: " << text;
  }
}

TEST(TokenizerTest, EndOfTextInsideText) {
  const Tokenizer& tok = Tiny();
  const std::vector<int32_t> ids = tok.Encode("Hello<|endoftext|>World<|endoftext|>");
  ASSERT_EQ(ids.size(), tok.Encode("Hello").size() + tok.Encode("World").size() + 2);
  EXPECT_EQ(ids.back(), 0);
  std::vector<int32_t> expected = tok.Encode("Hello");
  expected.push_back(0);
  for (int32_t id : tok.Encode("World")) expected.push_back(id);
  expected.push_back(0);
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(*tok.Decode(ids), "Hello<|endoftext|>World<|endoftext|>");
  // A partial special token is ordinary text.
  const std::vector<int32_t> partial = tok.Encode("<|endoftext|");
  EXPECT_EQ(std::count(partial.begin(), partial.end(), 0), 0);
  EXPECT_EQ(*tok.Decode(partial), "<|endoftext|");
}

TEST(TokenizerTest, InvalidUtf8IsReplacedLikePython) {
  const Tokenizer& tok = Tiny();
  EXPECT_EQ(tok.Encode("a\xff" "b"), tok.Encode("a\xEF\xBF\xBD" "b"));
  EXPECT_EQ(tok.Encode("\xe2\x82"), tok.Encode("\xEF\xBF\xBD"));
}

TEST(TokenizerTest, DecodeRejectsIdsWithoutTokens) {
  const Tokenizer& tok = Tiny();
  for (int32_t bad : {4096, -1, 1 << 30}) {
    auto r = tok.Decode({1, bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("out of range"), std::string::npos) << r.status();
  }
  EXPECT_EQ(*tok.Decode({}), "");
}

TEST(TokenizerTest, DecodeReplacesBrokenUtf8) {
  const Tokenizer& tok = Tiny();
  // Half of "é" (0xC3 0xA9) as a lone byte token, then "A".
  const int32_t c3 = *tok.TokenToId("Ã");
  const int32_t a = *tok.TokenToId("A");
  EXPECT_EQ(*tok.Decode({c3, a}), "\xEF\xBF\xBD" "A");
  EXPECT_EQ(*tok.Decode({c3}), "\xEF\xBF\xBD");
}

// The reference perplexity text: the whole WikiText-2 test file in one piece.
TEST(TokenizerTest, WikiTextMatchesReferenceTokenIds) {
  const std::string text = ReadFileOrDie(TestDataPath("testdata/data/wikitext-2/test.txt"));
  ASSERT_EQ(text.size(), 1256449u);
  const json reference =
      json::parse(ReadFileOrDie(TestDataPath(std::string(kModelDir) + "reference.json")));
  const std::vector<int32_t> expected =
      reference["perplexity"]["token_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(expected.size(), 16384u);

  // A fresh tokenizer, so the word cache starts empty.
  auto tok = Tokenizer::FromJson(TokenizerJson());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = (*tok)->Encode(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("WikiText-2 test (%zu bytes) -> %zu tokens in %.3f s (%.2f MB/s)\n", text.size(),
              ids.size(), seconds, text.size() / seconds / 1e6);
  ASSERT_GE(ids.size(), expected.size());
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + expected.size()), expected);
  EXPECT_EQ(*(*tok)->Decode(ids), text);

  const auto warm_start = std::chrono::steady_clock::now();
  const std::vector<int32_t> again = (*tok)->Encode(text);
  std::printf("again with a warm word cache: %.3f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - warm_start)
                  .count());
  EXPECT_EQ(again, ids);
}

// Degenerate long inputs (one huge word, huge whitespace runs that the split pattern
// backtracks over) still encode quickly and round-trip.
TEST(TokenizerTest, LongDegenerateInputs) {
  const Tokenizer& tok = Tiny();
  std::string mixed;
  for (int i = 0; i < 20000; ++i) mixed += i % 7 == 0 ? "\xF0\x9F\x98\x80" : "a \n";
  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"300k letters", std::string(300000, 'a')},
      {"300k spaces", std::string(300000, ' ')},
      {"300k spaces then a letter", std::string(300000, ' ') + "x"},
      {"100k CRLF", [] {
         std::string s;
         for (int i = 0; i < 100000; ++i) s += "\r\n";
         return s;
       }()},
      {"50k combining marks", [] {
         std::string s = "e";
         for (int i = 0; i < 50000; ++i) s += "\xCC\x81";
         return s;
       }()},
      {"300k punctuation", std::string(300000, '!')},
      {"mixed", mixed},
  };
  for (const auto& [name, text] : inputs) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tok.Encode(text);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s: %zu bytes -> %zu tokens in %.3f s\n", name.c_str(), text.size(), ids.size(),
                seconds);
    EXPECT_EQ(*tok.Decode(ids), text) << name;
  }
}

// Random bytes (mostly ill-formed UTF-8): encoding never fails and decodes back to the input
// with each ill-formed subpart replaced by U+FFFD.
TEST(TokenizerTest, RandomBytesRoundTrip) {
  const Tokenizer& tok = Tiny();
  std::mt19937 rng(99);
  const std::vector<std::string> pieces = {"<|endoftext|>", " ", "\n", "e\xCC\x81", "\xF0\x9F",
                                           "\x98\x80", "'s", "1", "\xE2\x80\x85", "ab"};
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) {
      if (rng() % 2 == 0) {
        text.push_back(static_cast<char>(rng() % 256));
      } else {
        text += pieces[rng() % pieces.size()];
      }
    }
    const std::vector<int32_t> ids = tok.Encode(text);
    EXPECT_EQ(*tok.Decode(ids), utf8::ToValidLossy(text)) << "seed 99 trial " << trial;
  }
}

TEST(TokenizerTest, EncodesConcurrently) {
  const Tokenizer& tok = Tiny();
  const json cases = Cases();
  std::vector<std::string> texts;
  for (const json& c : cases["cases"]) texts.push_back(c["text"].get<std::string>());
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& t : texts) expected.push_back(tok.Encode(t));
  // A fresh tokenizer so that the threads fill its word cache together.
  auto fresh = Tokenizer::FromJson(TokenizerJson());
  ASSERT_TRUE(fresh.ok());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + t * 7) % texts.size();
          if ((*fresh)->Encode(texts[k]) != expected[k]) ++mismatches;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

std::string StreamAll(const Tokenizer& tok, const std::vector<int32_t>& ids,
                      std::vector<std::string>* pieces = nullptr) {
  IncrementalDecoder stream(tok);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = stream.Push(id);
    if (pieces != nullptr) pieces->push_back(piece);
    out += piece;
  }
  std::string rest = stream.Flush();
  if (pieces != nullptr) pieces->push_back(rest);
  return out + rest;
}

TEST(IncrementalDecoderTest, EqualsDecodeOnRandomIds) {
  const Tokenizer& tok = Tiny();
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 2000; ++trial) {
    std::uniform_int_distribution<int> length(0, 40);
    // Bias towards the 256 byte tokens, which split UTF-8 characters most often.
    std::uniform_int_distribution<int32_t> any(0, tok.vocab_size() - 1);
    std::uniform_int_distribution<int32_t> byte(1, 256);
    std::vector<int32_t> ids(length(rng));
    for (int32_t& id : ids) id = (rng() % 2 == 0) ? byte(rng) : any(rng);
    std::vector<std::string> pieces;
    EXPECT_EQ(StreamAll(tok, ids, &pieces), *tok.Decode(ids)) << "seed 1234 trial " << trial;
  }
}

TEST(IncrementalDecoderTest, NeverSplitsCharactersOfValidText) {
  const Tokenizer& tok = Tiny();
  for (const json& c : Cases()["cases"]) {
    const std::string text = c["text"].get<std::string>();
    std::vector<std::string> pieces;
    EXPECT_EQ(StreamAll(tok, c["ids"].get<std::vector<int32_t>>(), &pieces), text);
    for (const std::string& piece : pieces) {
      EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "text: " << text;
    }
  }
}

TEST(IncrementalDecoderTest, HoldsBackAnUnfinishedEmoji) {
  const Tokenizer& tok = Tiny();
  // "😀" is F0 9F 98 80: push its four byte tokens one at a time.
  std::vector<int32_t> ids;
  for (unsigned char b : std::string("\xF0\x9F\x98\x80")) {
    ids.push_back(*tok.TokenToId(ByteLevelAlphabet()[b]));
  }
  IncrementalDecoder stream(tok);
  EXPECT_EQ(stream.Push(*tok.TokenToId("A")), "A");
  EXPECT_EQ(stream.Push(ids[0]), "");
  EXPECT_EQ(stream.Push(ids[1]), "");
  EXPECT_EQ(stream.Push(ids[2]), "");
  EXPECT_EQ(stream.Push(ids[3]), "\xF0\x9F\x98\x80");
  EXPECT_EQ(stream.Flush(), "");

  // An unfinished character followed by a special token or by Flush becomes U+FFFD.
  IncrementalDecoder broken(tok);
  EXPECT_EQ(broken.Push(ids[0]), "");
  EXPECT_EQ(broken.Push(ids[1]), "");
  EXPECT_EQ(broken.Push(0), "\xEF\xBF\xBD<|endoftext|>");
  EXPECT_EQ(broken.Push(ids[0]), "");
  EXPECT_EQ(broken.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(broken.Flush(), "");
  EXPECT_EQ(*tok.Decode({ids[0], ids[1], 0, ids[0]}), "\xEF\xBF\xBD<|endoftext|>\xEF\xBF\xBD");

  // Ids without a token are ignored.
  EXPECT_EQ(stream.Push(-5), "");
  EXPECT_EQ(stream.Push(tok.vocab_size()), "");
}

TEST(TokenizerTest, NfcNormalizerComposesBeforeEncoding) {
  json j = json::parse(TokenizerJson());
  const std::string composed = "caf\xC3\xA9 na\xC3\xAFve";
  const std::string decomposed = "cafe\xCC\x81 nai\xCC\x88ve";
  // Without a normalizer the two spellings tokenize differently.
  EXPECT_NE(Tiny().Encode(composed), Tiny().Encode(decomposed));
  for (const json& normalizer :
       {json{{"type", "NFC"}},
        json{{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}})}}}) {
    j["normalizer"] = normalizer;
    auto nfc = Tokenizer::FromJson(j.dump());
    ASSERT_TRUE(nfc.ok()) << nfc.status();
    EXPECT_EQ((*nfc)->Encode(decomposed), Tiny().Encode(composed));
    EXPECT_EQ((*nfc)->Encode(composed), Tiny().Encode(composed));
    EXPECT_EQ((*nfc)->Encode("e\xCC\x81<|endoftext|>"), Tiny().Encode("\xC3\xA9<|endoftext|>"));
  }
}

// Malformed or unsupported tokenizer.json content gives a clear error.
class MalformedJsonTest : public ::testing::Test {
 protected:
  static json Base() { return json::parse(TokenizerJson()); }
  static absl::Status Load(const json& j) { return Tokenizer::FromJson(j.dump()).status(); }
  static void ExpectError(const absl::Status& status, absl::StatusCode code,
                          const std::string& needle) {
    ASSERT_FALSE(status.ok()) << "accepted: " << needle;
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_NE(status.message().find(needle), std::string::npos) << status;
  }
};

TEST_F(MalformedJsonTest, BaseLoads) { EXPECT_TRUE(Load(Base()).ok()); }

TEST_F(MalformedJsonTest, NotJson) {
  ExpectError(Tokenizer::FromJson("{\"model\": ").status(), absl::StatusCode::kInvalidArgument,
              "not valid JSON");
  ExpectError(Tokenizer::FromJson("[1, 2]").status(), absl::StatusCode::kInvalidArgument,
              "not a JSON object");
}

TEST_F(MalformedJsonTest, MissingModel) {
  json j = Base();
  j.erase("model");
  ExpectError(Load(j), absl::StatusCode::kInvalidArgument, "missing \"model\"");
}

TEST_F(MalformedJsonTest, UnknownModelType) {
  json j = Base();
  j["model"]["type"] = "WordPiece";
  ExpectError(Load(j), absl::StatusCode::kInvalidArgument, "model type \"WordPiece\"");
}

TEST_F(MalformedJsonTest, MergeWithUnknownToken) {
  json j = Base();
  j["model"]["merges"].push_back(json::array({"Ġ", "nonexistent"}));
  ExpectError(Load(j), absl::StatusCode::kInvalidArgument, "\"nonexistent\", which is not in");
  json legacy = Base();
  legacy["model"]["merges"] = json::array({"Ġ t", "x zz"});
  ExpectError(Load(legacy), absl::StatusCode::kInvalidArgument, "not in the vocabulary");
  json bad_shape = Base();
  bad_shape["model"]["merges"].push_back(json::array({"a"}));
  ExpectError(Load(bad_shape), absl::StatusCode::kInvalidArgument, "neither");
}

TEST_F(MalformedJsonTest, BadRegex) {
  json j = Base();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  ExpectError(Load(j), absl::StatusCode::kInvalidArgument, "does not compile");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{L}+\\C";  // one byte
  ExpectError(Load(j), absl::StatusCode::kInvalidArgument, "does not compile");
}

TEST_F(MalformedJsonTest, UnsupportedComponents) {
  json normalizer = Base();
  normalizer["normalizer"] = {{"type", "Lowercase"}};
  ExpectError(Load(normalizer), absl::StatusCode::kInvalidArgument, "normalizer \"Lowercase\"");

  json pre = Base();
  pre["pre_tokenizer"] = {{"type", "Whitespace"}};
  ExpectError(Load(pre), absl::StatusCode::kInvalidArgument, "\"Whitespace\"");

  json no_byte_level = Base();
  no_byte_level["pre_tokenizer"] = no_byte_level["pre_tokenizer"]["pretokenizers"][0];
  ExpectError(Load(no_byte_level), absl::StatusCode::kInvalidArgument, "no ByteLevel");

  json decoder = Base();
  decoder["decoder"] = {{"type", "WordPiece"}};
  ExpectError(Load(decoder), absl::StatusCode::kInvalidArgument, "decoder \"WordPiece\"");

  json no_decoder = Base();
  no_decoder["decoder"] = nullptr;
  ExpectError(Load(no_decoder), absl::StatusCode::kInvalidArgument, "no decoder");

  json dropout = Base();
  dropout["model"]["dropout"] = 0.1;
  ExpectError(Load(dropout), absl::StatusCode::kInvalidArgument, "dropout");

  json byte_fallback = Base();
  byte_fallback["model"]["byte_fallback"] = true;
  ExpectError(Load(byte_fallback), absl::StatusCode::kInvalidArgument, "byte_fallback");
}

TEST_F(MalformedJsonTest, BadFieldTypes) {
  json vocab = Base();
  vocab["model"]["vocab"]["Ġ"] = "seven";
  ExpectError(Load(vocab), absl::StatusCode::kInvalidArgument, "vocab \"Ġ\"");

  json negative = Base();
  negative["model"]["vocab"]["Ġ"] = -3;
  ExpectError(Load(negative), absl::StatusCode::kInvalidArgument, "not an integer id in [0, ");

  json huge = Base();
  huge["added_tokens"][0]["id"] = 2000000000;
  ExpectError(Load(huge), absl::StatusCode::kInvalidArgument, "added_tokens[0] \"id\"");

  json added = Base();
  added["added_tokens"][0].erase("content");
  ExpectError(Load(added), absl::StatusCode::kInvalidArgument, "added_tokens[0]");

  json flag = Base();
  flag["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = "yes";
  ExpectError(Load(flag), absl::StatusCode::kInvalidArgument, "use_regex");

  json behavior = Base();
  behavior["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  ExpectError(Load(behavior), absl::StatusCode::kInvalidArgument, "Sideways");
}

TEST_F(MalformedJsonTest, FromFileNamesThePath) {
  auto missing = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/tokenizer.json"), std::string::npos);
}

}  // namespace
}  // namespace tq
