// File: engine/tokenizer/utf8.h
//
// UTF-8 helpers for the tokenizer: decoding one code point, validation, lossy conversion and
// the "complete prefix" used by streaming decoders.
//
// Ill-formed input is handled exactly as Rust's String::from_utf8_lossy and Python's
// bytes.decode(errors="replace") do (Unicode's "substitution of maximal subparts"): every
// maximal prefix of a well-formed sequence that cannot be completed, and every byte that cannot
// start one, becomes one U+FFFD.
//
//   std::string text = utf8::ToValidLossy(bytes);        // always valid UTF-8
//   size_t n = utf8::CompletePrefixLength(pending);      // bytes decidable without more input
#ifndef TQSERVE_ENGINE_TOKENIZER_UTF8_H_
#define TQSERVE_ENGINE_TOKENIZER_UTF8_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace tq::utf8 {

inline constexpr char32_t kReplacementChar = 0xFFFD;

enum class SequenceKind {
  kValid,      // a well-formed code point of `length` bytes
  kInvalid,    // a maximal ill-formed subpart of `length` bytes (one U+FFFD)
  kTruncated,  // the `length` bytes left are a proper prefix of a well-formed sequence
};

struct Sequence {
  SequenceKind kind = SequenceKind::kInvalid;
  char32_t code_point = kReplacementChar;  // meaningful for kValid only
  size_t length = 1;                        // >= 1
};

// The sequence starting at s[pos] (pos < s.size()).
Sequence DecodeAt(absl::string_view s, size_t pos);

// True if `s` is well-formed UTF-8.
bool IsValid(absl::string_view s);

// `s` with every maximal ill-formed subpart (including a truncated tail) replaced by U+FFFD.
std::string ToValidLossy(absl::string_view s);
void AppendLossy(absl::string_view s, std::string* out);

// The length of the longest prefix of `s` whose lossy decoding cannot change when more bytes
// are appended: all of `s` except a trailing truncated sequence (at most 3 bytes).
size_t CompletePrefixLength(absl::string_view s);

// Appends the UTF-8 encoding of a Unicode scalar value.
void AppendCodePoint(char32_t cp, std::string* out);

// The Unicode White_Space property (what Rust's and Oniguruma's `\s` match).
bool IsWhiteSpace(char32_t cp);

}  // namespace tq::utf8

#endif  // TQSERVE_ENGINE_TOKENIZER_UTF8_H_
