// Unit tests of the tokenizer's parts: UTF-8 helpers, regex, pre-tokenizer, BPE, added tokens.
#include <chrono>
#include <deque>
#include <string>
#include <vector>

#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/byte_level_bpe.h"
#include "engine/tokenizer/nfc.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/utf8.h"
#include "engine/util/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using json = nlohmann::json;
using Strings = std::vector<std::string>;

constexpr char kFffd[] = "\xEF\xBF\xBD";

TEST(Utf8Test, LossyMatchesPythonReplace) {
  // Expected values from Python: bytes.decode("utf-8", "replace").
  EXPECT_EQ(utf8::ToValidLossy("\xE2\x82" "A"), std::string(kFffd) + "A");
  EXPECT_EQ(utf8::ToValidLossy("\xF0\x9F\x98"), kFffd);
  EXPECT_EQ(utf8::ToValidLossy("\xED\xA0\x80"), std::string(kFffd) + kFffd + kFffd);
  EXPECT_EQ(utf8::ToValidLossy("\xC0\xAF"), std::string(kFffd) + kFffd);
  EXPECT_EQ(utf8::ToValidLossy("\xF4\x90\x80\x80"),
            std::string(kFffd) + kFffd + kFffd + kFffd);
  EXPECT_EQ(utf8::ToValidLossy("\xE0\x80"), std::string(kFffd) + kFffd);
  EXPECT_EQ(utf8::ToValidLossy("\xF0\x9F\x98\x80\x80"), std::string("\xF0\x9F\x98\x80") + kFffd);
  EXPECT_EQ(utf8::ToValidLossy("a\xFF" "b"), std::string("a") + kFffd + "b");
  EXPECT_EQ(utf8::ToValidLossy("héllo"), "héllo");
  EXPECT_TRUE(utf8::IsValid("日本語 😀"));
  EXPECT_FALSE(utf8::IsValid("\xED\xA0\x80"));  // a surrogate
}

TEST(Utf8Test, CompletePrefixHoldsBackOnlyAnUnfinishedCharacter) {
  EXPECT_EQ(utf8::CompletePrefixLength(""), 0u);
  EXPECT_EQ(utf8::CompletePrefixLength("ab"), 2u);
  EXPECT_EQ(utf8::CompletePrefixLength("a\xF0\x9F\x98"), 1u);
  EXPECT_EQ(utf8::CompletePrefixLength("a\xF0\x9F\x98\x80"), 5u);
  EXPECT_EQ(utf8::CompletePrefixLength("a\xE2"), 1u);
  EXPECT_EQ(utf8::CompletePrefixLength("a\xE0\x80"), 3u);  // already ill-formed: decided
  EXPECT_EQ(utf8::CompletePrefixLength("a\x80\x80"), 3u);
  EXPECT_EQ(utf8::CompletePrefixLength("\xFF"), 1u);
}

TEST(Utf8Test, WhiteSpace) {
  for (char32_t c : {0x09, 0x0A, 0x0D, 0x20, 0x85, 0xA0, 0x2000, 0x3000}) {
    EXPECT_TRUE(utf8::IsWhiteSpace(c)) << static_cast<uint32_t>(c);
  }
  for (char32_t c : {0x41, 0x1C, 0x180E, 0x200B, 0xFEFF}) {
    EXPECT_FALSE(utf8::IsWhiteSpace(c)) << static_cast<uint32_t>(c);
  }
}

TEST(NfcTest, Examples) {
  EXPECT_EQ(NfcNormalize("e\xCC\x81"), "\xC3\xA9");                      // e + acute -> é
  EXPECT_EQ(NfcNormalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // Hangul L V T
  EXPECT_EQ(NfcNormalize("a\xCC\x82\xCC\xA3"), "\xE1\xBA\xAD");  // reordered, then composed
  EXPECT_EQ(NfcNormalize("\xE2\x84\xAB"), "\xC3\x85");             // Angstrom sign -> Å
  EXPECT_EQ(NfcNormalize("\xCD\x84"), "\xCC\x88\xCC\x81");         // excluded from composition
  EXPECT_EQ(NfcNormalize("plain ASCII"), "plain ASCII");
  EXPECT_EQ(NfcNormalize(""), "");
  EXPECT_EQ(NfcUnicodeVersion(), "14.0.0");
}

// Canonical ordering was an insertion sort, quadratic in a run of marks: 40000 pairs of marks
// whose classes need swapping (160 KB) took 5.6 s, so a long prompt could stall an Encode with an
// NFC tokenizer (Qwen's) for minutes. Found while writing tokenizer_fuzzer.
TEST(NfcTest, LongRunsOfMarksAreSortedQuickly) {
  std::string text = "a", want = "\xC3\xA1";  // a + U+0301 composes to U+00E1
  for (int i = 0; i < 100000; ++i) text += "\xCC\x81\xCC\x96";  // U+0301 (class 230), U+0316 (220)
  for (int i = 0; i < 100000; ++i) want += "\xCC\x96";
  for (int i = 1; i < 100000; ++i) want += "\xCC\x81";
  const auto start = std::chrono::steady_clock::now();
  const std::string nfc = NfcNormalize(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(nfc == want);
  EXPECT_LT(seconds, 2.0);
}

// Hashes of Python's unicodedata.normalize("NFC", s) (Python 3.11, Unicode 14.0.0) over
// generated strings; the loops below mirror the Python ones given in the comments.
TEST(NfcTest, MatchesPythonOnEveryCodePoint) {
  // for cp in range(0x110000) (no surrogates): h.update(normalize("NFC", chr(cp)).encode())
  Sha256 h;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string s;
    utf8::AppendCodePoint(cp, &s);
    h.Update(NfcNormalize(s));
  }
  EXPECT_EQ(h.HexDigest(), "1ffc8e6ce9e83df8e49fd62d6abb68f981775aed0b5101b88c213d4653e9b540");
}

TEST(NfcTest, MatchesPythonOnCombiningSequences) {
  // chr(cp) + marks for cp in the ranges, marks in the list, in that order.
  const std::vector<std::vector<char32_t>> marks = {
      {0x301}, {0x323, 0x302}, {0x302, 0x323}, {0x308, 0x301}, {0x1161},
      {0x11A8}, {0xCD5}, {0x3099}, {0x334, 0x301, 0x316}};
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0, 0x3000}, {0x1100, 0x1200}, {0xAC00, 0xAC40}, {0x3040, 0x3100}, {0x1D100, 0x1D1FF}};
  Sha256 h;
  int count = 0;
  for (const auto& [first, last] : ranges) {
    for (char32_t cp = first; cp < last; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      for (const auto& m : marks) {
        std::string s;
        utf8::AppendCodePoint(cp, &s);
        for (char32_t c : m) utf8::AppendCodePoint(c, &s);
        h.Update(NfcNormalize(s));
        ++count;
      }
    }
  }
  EXPECT_EQ(count, 117495);
  EXPECT_EQ(h.HexDigest(), "5bd9350c30d130b51ef03166909b5a2a8f8fa9a48980bd1ef48031b929cbd09d");
}

Strings FindAll(const std::string& pattern, const std::string& text, bool literal = false) {
  auto re = Regex::Compile(pattern, literal);
  EXPECT_TRUE(re.ok()) << re.status();
  std::vector<Regex::Match> matches;
  (*re)->FindAll(text, &matches);
  Strings out;
  for (const auto& m : matches) out.push_back(text.substr(m.begin, m.end - m.begin));
  return out;
}

TEST(RegexTest, UnicodeClassesAndCaseInsensitiveGroups) {
  EXPECT_EQ(FindAll(R"(\p{L}+|\p{N})", "Café 42 日本"), (Strings{"Café", "4", "2", "日本"}));
  EXPECT_EQ(FindAll(R"((?i:'s|'ll))", "IT'S it'll"), (Strings{"'S", "'ll"}));
  EXPECT_EQ(FindAll("a.c", "abc a.c", /*literal=*/true), (Strings{"a.c"}));
}

TEST(RegexTest, SpaceIsWhiteSpaceAsInOniguruma) {
  // tokenizers' \s matches exactly the White_Space code points (checked with its Node binding
  // over U+0000..U+30FF; none lies above).
  auto re = Regex::Compile(R"(\s)", false);
  ASSERT_TRUE(re.ok());
  for (char32_t cp = 0; cp < 0x3100; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string s;
    utf8::AppendCodePoint(cp, &s);
    std::vector<Regex::Match> m;
    (*re)->FindAll(s, &m);
    EXPECT_EQ(!m.empty(), utf8::IsWhiteSpace(cp)) << static_cast<uint32_t>(cp);
  }
  EXPECT_EQ(FindAll(R"(\s+)", "a\xC2\x85\t b"), (Strings{"\xC2\x85\t "}));
  EXPECT_EQ(FindAll(R"([^\s\p{L}]+)", "a\xC2\x85!b"), (Strings{"!"}));
  EXPECT_EQ(FindAll(R"(\S+)", "a\xC2\x85" "b"), (Strings{"a", "b"}));
  EXPECT_EQ(FindAll(R"(\s+)", "a\xE1\xA0\x8E" "b"), Strings{});  // U+180E is not a space
  const std::string space = R"(\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029})"
                            R"(\x{202F}\x{205F}\x{3000})";
  EXPECT_EQ(TranslateOnigurumaPattern(R"(\s+(?!\S)|[\s\]x]|\\s)"),
            "[" + space + "]+(?![^" + space + "])|[" + space + R"(\]x]|\\s)");
}

TEST(RegexTest, EmptyMatchesRightAfterAMatchAreSkipped) {
  // Rust onig / regex iteration: "a*" on "baab" gives "", "aa", "" (end), skipping the empty
  // match right after "aa".
  auto re = Regex::Compile("a*", false);
  ASSERT_TRUE(re.ok());
  std::vector<Regex::Match> m;
  (*re)->FindAll("baab", &m);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].begin, 0u);
  EXPECT_EQ(m[0].end, 0u);
  EXPECT_EQ(m[1].begin, 1u);
  EXPECT_EQ(m[1].end, 3u);
  EXPECT_EQ(m[2].begin, 4u);
  EXPECT_EQ(m[2].end, 4u);
}

TEST(RegexTest, BadPatternIsAnError) {
  auto re = Regex::Compile("(a", false);
  ASSERT_FALSE(re.ok());
  EXPECT_EQ(re.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(re.status().message().find("does not compile"), std::string::npos);
}

// `\C` matches one byte even in UTF mode: "a+\C" cut a 4-byte character after its first byte,
// and the next step matched the piece (with a prefix space, a fresh string) without a UTF
// check, so PCRE2 read past its end (valgrind). Found while writing tokenizer_fuzzer, whose
// sanitizers cannot see inside the uninstrumented PCRE2.
TEST(RegexTest, SingleByteEscapeIsRefused) {
  for (const char* pattern : {"\\C", "a+\\C", "[a]\\C?"}) {
    auto re = Regex::Compile(pattern, false);
    ASSERT_FALSE(re.ok()) << pattern;
    EXPECT_EQ(re.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(re.status().message().find("\\C is disabled"), std::string::npos) << re.status();
  }
  EXPECT_TRUE(Regex::Compile("\\\\C", false).ok());  // an escaped backslash, then "C"
  auto literal = Regex::Compile("\\C", true);  // the two characters, as a plain string
  ASSERT_TRUE(literal.ok()) << literal.status();
  std::vector<Regex::Match> m;
  (*literal)->FindAll("x\\Cy", &m);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].begin, 1u);
}

Strings PreTokenize(const json& config, const std::string& text) {
  auto pre = PreTokenizer::FromJson(config);
  EXPECT_TRUE(pre.ok()) << pre.status();
  std::vector<absl::string_view> words;
  std::deque<std::string> storage;
  (*pre)->Split(text, &words, &storage);
  return Strings(words.begin(), words.end());
}

json ByteLevel(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", false},
          {"use_regex", use_regex}};
}

json SplitThen(const std::string& kind, const std::string& pattern, const std::string& behavior,
               bool invert = false) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{kind, pattern}}},
             {"behavior", behavior},
             {"invert", invert}},
            ByteLevel(false, false)}}};
}

TEST(PreTokenizerTest, Gpt2ByteLevel) {
  // The expectations of tokenizers' own ByteLevel tests.
  EXPECT_EQ(PreTokenize(ByteLevel(false, true), "Hello my friend, how is your day going?"),
            (Strings{"Hello", " my", " friend", ",", " how", " is", " your", " day", " going",
                     "?"}));
  EXPECT_EQ(PreTokenize(ByteLevel(false, true), "Hello there       dear"),
            (Strings{"Hello", " there", "      ", " dear"}));
  EXPECT_EQ(PreTokenize(ByteLevel(false, true), "Hello there\nHello there"),
            (Strings{"Hello", " there", "\n", "Hello", " there"}));
  EXPECT_EQ(PreTokenize(ByteLevel(true, true), "Hello my"), (Strings{" Hello", " my"}));
  EXPECT_EQ(PreTokenize(ByteLevel(true, true), " Hello"), (Strings{" Hello"}));
  EXPECT_EQ(PreTokenize(ByteLevel(false, false), "Hello my friend"),
            (Strings{"Hello my friend"}));
  EXPECT_EQ(PreTokenize(ByteLevel(false, true), ""), Strings{});
}

TEST(PreTokenizerTest, SplitBehaviors) {
  const std::string text = "the-final--countdown";
  EXPECT_EQ(PreTokenize(SplitThen("String", "-", "Removed"), text),
            (Strings{"the", "final", "countdown"}));
  EXPECT_EQ(PreTokenize(SplitThen("String", "-", "Isolated"), text),
            (Strings{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(PreTokenize(SplitThen("String", "-", "MergedWithPrevious"), text),
            (Strings{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(PreTokenize(SplitThen("String", "-", "MergedWithNext"), text),
            (Strings{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(PreTokenize(SplitThen("String", "-", "Contiguous"), text),
            (Strings{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(PreTokenize(SplitThen("Regex", "-+", "Isolated", /*invert=*/true), text),
            (Strings{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(PreTokenize(SplitThen("Regex", "[a-z]+", "Removed", /*invert=*/true), text),
            (Strings{"the", "final", "countdown"}));
}

TEST(PreTokenizerTest, Qwen2Pattern) {
  const std::string qwen =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  EXPECT_EQ(PreTokenize(SplitThen("Regex", qwen, "Isolated"), "I'LL pay 123 now!!\n\n  ok"),
            (Strings{"I", "'LL", " pay", " ", "1", "2", "3", " now", "!!\n\n", " ", " ok"}));
}

TEST(PreTokenizerTest, RejectsWhatItCannotRun) {
  for (const json& bad : {json(nullptr), json{{"type", "Whitespace"}},
                          json{{"type", "Sequence"},
                               {"pretokenizers", {ByteLevel(false, false),
                                                  {{"type", "Split"},
                                                   {"pattern", {{"String", "-"}}},
                                                   {"behavior", "Isolated"}}}}},
                          SplitThen("Regex", "(", "Isolated"),
                          SplitThen("Regex", "a", "Sideways")}) {
    auto pre = PreTokenizer::FromJson(bad);
    EXPECT_FALSE(pre.ok()) << bad.dump();
    EXPECT_EQ(pre.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// Nested Sequences recursed without bound: 5000 levels (190 KB of tokenizer.json) overflowed the
// stack under ASan, 50000 without it. Found while writing tokenizer_fuzzer (its inputs are too
// short to nest that deep).
TEST(PreTokenizerTest, DeeplyNestedSequencesAreRefused) {
  auto nested = [](int depth) {
    std::string text;
    for (int i = 0; i < depth; ++i) text += R"({"type": "Sequence", "pretokenizers": [)";
    text += R"({"type": "ByteLevel"})";
    for (int i = 0; i < depth; ++i) text += "]}";
    return json::parse(text);
  };
  EXPECT_TRUE(PreTokenizer::FromJson(nested(32)).ok());
  for (int depth : {33, 100000}) {
    auto pre = PreTokenizer::FromJson(nested(depth));
    ASSERT_FALSE(pre.ok()) << depth;
    EXPECT_EQ(pre.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(pre.status().message().find("nested"), std::string::npos) << pre.status();
  }
}

TEST(ByteLevelTest, AlphabetRoundTrips) {
  EXPECT_EQ(ByteLevelAlphabet()[' '], "Ġ");
  EXPECT_EQ(ByteLevelAlphabet()['\n'], "Ċ");
  EXPECT_EQ(ByteLevelAlphabet()['a'], "a");
  EXPECT_EQ(ByteLevelAlphabet()[0xE9], "é");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(FromByteLevel(ToByteLevel(all)), all);
  EXPECT_FALSE(FromByteLevel("日").has_value());
}

// A vocabulary of the 256 byte symbols (ids 0..255) plus the given merged tokens.
std::vector<std::pair<std::string, int32_t>> ByteVocab(const Strings& extra) {
  std::vector<std::pair<std::string, int32_t>> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(ByteLevelAlphabet()[b], b);
  for (const std::string& t : extra) vocab.emplace_back(t, static_cast<int32_t>(vocab.size()));
  return vocab;
}

std::vector<int32_t> Tokenize(const ByteLevelBpe& bpe, const std::string& word) {
  std::vector<int32_t> ids;
  bpe.Tokenize(word, &ids);
  return ids;
}

TEST(ByteLevelBpeTest, MergesByRankLeftmostFirst) {
  // ids: "ab" 256, "bc" 257, "abc" 258, "Ġa" 259.
  auto bpe = ByteLevelBpe::Create(ByteVocab({"ab", "bc", "abc", "Ġa"}),
                                  {{"b", "c"}, {"a", "b"}, {"a", "bc"}, {"Ġ", "a"}}, {});
  ASSERT_TRUE(bpe.ok()) << bpe.status();
  EXPECT_EQ(Tokenize(**bpe, "abc"), (std::vector<int32_t>{258}));    // b+c first, then a+bc
  EXPECT_EQ(Tokenize(**bpe, "abab"), (std::vector<int32_t>{256, 256}));
  EXPECT_EQ(Tokenize(**bpe, "bcbc"), (std::vector<int32_t>{257, 257}));
  EXPECT_EQ(Tokenize(**bpe, " ab"), (std::vector<int32_t>{' ', 256}));  // a+b ranks first
  EXPECT_EQ(Tokenize(**bpe, " ac"), (std::vector<int32_t>{259, 'c'}));
  EXPECT_EQ(Tokenize(**bpe, "x"), (std::vector<int32_t>{'x'}));
  EXPECT_EQ(Tokenize(**bpe, "abc"), (std::vector<int32_t>{258}));  // from the cache
  EXPECT_EQ((*bpe)->IdToToken(259), "Ġa");
  EXPECT_EQ((*bpe)->TokenToId("abc"), 258);
}

TEST(ByteLevelBpeTest, IgnoreMergesUsesWholeWords) {
  // "abc" is in the vocabulary but no merge builds it.
  auto vocab = ByteVocab({"ab", "abc"});
  ByteLevelBpe::Options options;
  auto plain = ByteLevelBpe::Create(vocab, {{"a", "b"}}, options);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(Tokenize(**plain, "abc"), (std::vector<int32_t>{256, 'c'}));
  options.ignore_merges = true;
  auto ignoring = ByteLevelBpe::Create(vocab, {{"a", "b"}}, options);
  ASSERT_TRUE(ignoring.ok());
  EXPECT_EQ(Tokenize(**ignoring, "abc"), (std::vector<int32_t>{257}));
}

TEST(ByteLevelBpeTest, MissingBytesAreDroppedOrUnk) {
  std::vector<std::pair<std::string, int32_t>> vocab = {{"a", 0}, {"<unk>", 1}};
  auto drop = ByteLevelBpe::Create(vocab, {}, {});
  ASSERT_TRUE(drop.ok());
  EXPECT_EQ(Tokenize(**drop, "a?a"), (std::vector<int32_t>{0, 0}));
  ByteLevelBpe::Options options;
  options.unk_id = 1;
  options.fuse_unk = true;
  auto unk = ByteLevelBpe::Create(vocab, {}, options);
  ASSERT_TRUE(unk.ok());
  EXPECT_EQ(Tokenize(**unk, "a??a?"), (std::vector<int32_t>{0, 1, 0, 1}));
}

TEST(ByteLevelBpeTest, RejectsBadVocabularies) {
  EXPECT_FALSE(ByteLevelBpe::Create({{"a", 0}, {"b", 0}}, {}, {}).ok());
  EXPECT_FALSE(ByteLevelBpe::Create({{"a", -1}}, {}, {}).ok());
  EXPECT_FALSE(ByteLevelBpe::Create({{"a", kMaxTokenId + 1}}, {}, {}).ok());
  auto merge = ByteLevelBpe::Create({{"a", 0}, {"b", 1}}, {{"a", "b"}}, {});
  ASSERT_FALSE(merge.ok());
  EXPECT_NE(merge.status().message().find("\"ab\", which is not in the vocabulary"),
            std::string::npos)
      << merge.status();
}

Strings SplitAdded(const AddedVocabulary& added, const std::string& text) {
  Strings out;
  for (const auto& s : added.Split(text, false)) {
    out.push_back((s.id >= 0 ? "#" : "") + text.substr(s.begin, s.end - s.begin));
  }
  return out;
}

TEST(AddedVocabularyTest, LeftmostLongest) {
  AddedVocabulary added;
  added.Add({.content = "<a>", .id = 1});
  added.Add({.content = "<a><b>", .id = 2});
  added.Add({.content = "b>", .id = 3});
  ASSERT_TRUE(added.Finalize(nullptr).ok());
  EXPECT_EQ(SplitAdded(added, "x<a><b>y<a>b>"), (Strings{"x", "#<a><b>", "y", "#<a>", "#b>"}));
  EXPECT_EQ(SplitAdded(added, ""), Strings{});
  EXPECT_EQ(SplitAdded(added, "plain"), Strings{"plain"});
}

TEST(AddedVocabularyTest, SingleWord) {
  // tokenizers' test_single_word_is_correct, without the lowercasing normalizer.
  AddedVocabulary added;
  added.Add({.content = "<mask>", .id = 0, .single_word = true});
  ASSERT_TRUE(added.Finalize(nullptr).ok());
  EXPECT_EQ(SplitAdded(added, "<mask> My name <mask> A<mask> <mask>ony <mask>"),
            (Strings{"#<mask>", " My name ", "#<mask>", " A<mask> <mask>ony ", "#<mask>"}));
  // Punctuation is not a word character; a combining mark is.
  EXPECT_EQ(SplitAdded(added, "<mask>, <mask>- \xE2\x97\x8C\xCC\xB0<mask>"),
            (Strings{"#<mask>", ", ", "#<mask>", "- \xE2\x97\x8C\xCC\xB0<mask>"}));
}

TEST(AddedVocabularyTest, StripsWhitespace) {
  // tokenizers' test_lstrip_unicode_space.
  AddedVocabulary added;
  added.Add({.content = "<mask>", .id = 0, .single_word = true, .lstrip = true, .rstrip = true});
  ASSERT_TRUE(added.Finalize(nullptr).ok());
  EXPECT_EQ(SplitAdded(added, "Hi <mask> there\t<mask>\t<mask>\xE2\x80\x80"),
            (Strings{"Hi", "# <mask> ", "there", "#\t<mask>\t", "#<mask>\xE2\x80\x80"}));
}

TEST(AddedVocabularyTest, NormalizedTokensMatchInTheSecondPass) {
  AddedVocabulary added;
  added.Add({.content = "[raw]", .id = 0, .normalized = false});
  added.Add({.content = "ABC", .id = 1, .normalized = true});
  auto lower = [](absl::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  };
  ASSERT_TRUE(added.Finalize(lower).ok());
  EXPECT_EQ(SplitAdded(added, "x[raw]abc"), (Strings{"x", "#[raw]", "abc"}));
  std::vector<std::string> second;
  for (const auto& s : added.Split("xabc", true)) second.push_back(std::to_string(s.id));
  EXPECT_EQ(second, (Strings{"-1", "1"}));
}

}  // namespace
}  // namespace tq
