// libFuzzer target: the Hugging Face tokenizer (engine/tokenizer). The first input byte selects a
// mode (byte % 3; the seeds use the ASCII digits '0', '1', '2'), the rest is its input:
//   0: the rest is tokenizer.json text. Tokenizer::FromJson must return a tokenizer or a
//      non-empty error, never crash or hang; a tokenizer it returns must encode a text (the
//      input itself) to ids that Decode accepts, to valid UTF-8, and that IncrementalDecoder
//      streams to the same text.
//   1: the rest is a text, encoded with the real tokenizer of testdata/models/tq-tiny-qwen3
//      (loaded once). Decode(Encode(text)) must be the text itself when it is valid UTF-8, else
//      the text with ill-formed parts replaced by U+FFFD; encoding again gives the same ids; the
//      ids streamed through IncrementalDecoder (Push each, then Flush) concatenate to Decode.
//   2: the rest is a sequence of little-endian 16-bit values, taken modulo the vocabulary size
//      + 8 as ids for that tokenizer (a few past its vocabulary). Decode must fail exactly when
//      an id has no token, else return valid UTF-8 equal to IncrementalDecoder's stream.
// Any violation calls abort().
//
// Mode 0 skips JSON with a run of 7 or more digits: the per-id tables grow with the largest id
// (up to kMaxTokenId, 2^24 - 1: about 1.6 GB and 2 s, 12 s under ASan), which would trip
// libFuzzer's memory and time limits without being a crash.
//
// The tiny model's tokenizer.json is read from $TQ_FUZZ_TOKENIZER_JSON if set, else from the
// Bazel runfiles ($TEST_SRCDIR/$TEST_WORKSPACE/...), else relative to the working directory
// (the workspace root).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"

// The replay test compiles this file with TQ_FUZZ_ENTRY renamed.
#ifndef TQ_FUZZ_ENTRY
#define TQ_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

namespace {

constexpr char kTinyTokenizer[] = "testdata/models/tq-tiny-qwen3/tokenizer.json";

void Fail(const char* what) {
  std::fprintf(stderr, "tokenizer_fuzzer: %s\n", what);
  std::abort();
}

// An independent well-formedness check (RFC 3629), not the library's.
bool IsUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    const unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
    if (c1 < lo || c1 > hi) return false;
    for (size_t k = 2; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

const tq::Tokenizer& TinyTokenizer() {
  static const tq::Tokenizer* const tokenizer = [] {
    std::string path = kTinyTokenizer;
    if (const char* env = std::getenv("TQ_FUZZ_TOKENIZER_JSON")) {
      path = env;
    } else if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
      const char* ws = std::getenv("TEST_WORKSPACE");
      path = std::string(srcdir) + "/" + (ws != nullptr ? ws : "tqserve") + "/" + kTinyTokenizer;
    }
    auto tok = tq::Tokenizer::FromFile(path);
    if (!tok.ok()) {
      std::fprintf(stderr, "tokenizer_fuzzer: %s\n", std::string(tok.status().message()).c_str());
      std::abort();
    }
    return tok->release();
  }();
  return *tokenizer;
}

// Decode(ids) must succeed with valid UTF-8 that IncrementalDecoder reproduces. Returns it.
std::string CheckDecode(const tq::Tokenizer& tok, const std::vector<int32_t>& ids) {
  auto text = tok.Decode(ids);
  if (!text.ok()) Fail("Decode refused ids that Encode produced");
  if (!IsUtf8(*text)) Fail("Decode returned ill-formed UTF-8");
  tq::IncrementalDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) {
    std::string piece = stream.Push(id);
    if (!IsUtf8(piece)) Fail("IncrementalDecoder::Push returned ill-formed UTF-8");
    streamed += piece;
  }
  streamed += stream.Flush();
  if (streamed != *text) Fail("IncrementalDecoder's stream differs from Decode");
  return *std::move(text);
}

// Whether `text` has `n` consecutive ASCII digits.
bool HasDigitRun(absl::string_view text, int n) {
  int run = 0;
  for (char c : text) {
    run = c >= '0' && c <= '9' ? run + 1 : 0;
    if (run >= n) return true;
  }
  return false;
}

void FuzzFromJson(absl::string_view json) {
  if (HasDigitRun(json, 7)) return;
  auto tok = tq::Tokenizer::FromJson(json);
  if (!tok.ok()) {
    if (tok.status().message().empty()) Fail("FromJson failed with an empty message");
    return;
  }
  const tq::Tokenizer& t = **tok;
  if (t.vocab_size() <= 0) Fail("a loaded tokenizer has no ids");
  // Encode the JSON text itself (it holds the tokens and more) with the fuzzed tokenizer.
  const std::vector<int32_t> ids = t.Encode(json.substr(0, 1024));
  for (int32_t id : ids) {
    if (id < 0 || id >= t.vocab_size()) Fail("Encode returned an id outside the vocabulary");
  }
  CheckDecode(t, ids);
  if (t.Encode(json.substr(0, 1024)) != ids) Fail("Encode is not deterministic");
}

void FuzzEncode(absl::string_view text) {
  const tq::Tokenizer& tok = TinyTokenizer();
  const std::vector<int32_t> ids = tok.Encode(text);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) Fail("Encode returned an id outside the vocabulary");
  }
  const std::string decoded = CheckDecode(tok, ids);
  if (IsUtf8(text)) {
    if (decoded != text) Fail("Decode(Encode(text)) != text for valid UTF-8");
  } else if (decoded != tq::utf8::ToValidLossy(text)) {
    Fail("Decode(Encode(text)) != the text with U+FFFD replacements");
  }
  if (tok.Encode(text) != ids) Fail("Encode is not deterministic (word cache)");
}

void FuzzDecode(absl::string_view bytes) {
  const tq::Tokenizer& tok = TinyTokenizer();
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    const int32_t raw = static_cast<uint8_t>(bytes[i]) | static_cast<uint8_t>(bytes[i + 1]) << 8;
    ids.push_back(raw % (tok.vocab_size() + 8));
  }
  bool all_known = true;
  for (int32_t id : ids) all_known &= !tok.IdToToken(id).empty();
  auto text = tok.Decode(ids);
  if (text.ok() != all_known) Fail("Decode's verdict differs from IdToToken");
  if (!text.ok()) {
    if (text.status().message().empty()) Fail("Decode failed with an empty message");
    return;
  }
  CheckDecode(tok, ids);
}

}  // namespace

extern "C" int TQ_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      FuzzFromJson(rest);
      break;
    case 1:
      FuzzEncode(rest);
      break;
    default:
      FuzzDecode(rest);
      break;
  }
  return 0;
}
