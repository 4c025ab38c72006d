#include "engine/tokenizer/nfc.h"

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/tokenizer/utf8.h"

namespace tq {
namespace {

struct CombiningClassRange {
  char32_t first;
  char32_t last;
  uint8_t combining_class;
};
struct Decomposition {
  char32_t code_point;
  uint16_t offset;  // into kDecompositionData
  uint8_t length;
};
struct Composition {
  char32_t first;
  char32_t second;
  char32_t composite;
};

#include "engine/tokenizer/nfc_tables.inc"

// Hangul syllable arithmetic (Unicode chapter 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr char32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint8_t CombiningClass(char32_t cp) {
  if (cp < 0x300) return 0;
  auto it = std::upper_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                             [](char32_t c, const CombiningClassRange& r) { return c < r.first; });
  if (it == std::begin(kCombiningClasses)) return 0;
  --it;
  return cp <= it->last ? it->combining_class : 0;
}

void Decompose(char32_t cp, std::vector<char32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0) {
    auto it = std::lower_bound(
        std::begin(kDecompositions), std::end(kDecompositions), cp,
        [](const Decomposition& d, char32_t c) { return d.code_point < c; });
    if (it != std::end(kDecompositions) && it->code_point == cp) {
      out->insert(out->end(), kDecompositionData + it->offset,
                  kDecompositionData + it->offset + it->length);
      return;
    }
  }
  out->push_back(cp);
}

// The primary composite of a pair, or 0.
char32_t Compose(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase &&
      second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions),
                             std::make_pair(first, second),
                             [](const Composition& c, const std::pair<char32_t, char32_t>& p) {
                               return c.first != p.first ? c.first < p.first
                                                         : c.second < p.second;
                             });
  if (it != std::end(kCompositions) && it->first == first && it->second == second) {
    return it->composite;
  }
  return 0;
}

}  // namespace

absl::string_view NfcUnicodeVersion() { return kUnicodeVersion; }

std::string NfcNormalize(absl::string_view text) {
  // Below U+0300 nothing decomposes into something that does not compose back, and nothing
  // combines: such text is already NFC. Its UTF-8 has no byte >= 0xCC (U+0300 is CC 80).
  if (std::none_of(text.begin(), text.end(),
                   [](char c) { return static_cast<uint8_t>(c) >= 0xCC; })) {
    return std::string(text);
  }

  // 1. Full canonical decomposition.
  std::vector<char32_t> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const utf8::Sequence seq = utf8::DecodeAt(text, pos);
    Decompose(seq.code_point, &chars);
    pos += seq.length;
  }

  // 2. Canonical ordering: stable sort of each run of non-starters by combining class (a
  // merge sort: text can hold arbitrarily long runs of marks).
  std::vector<uint8_t> classes(chars.size());
  for (size_t i = 0; i < chars.size(); ++i) classes[i] = CombiningClass(chars[i]);
  std::vector<std::pair<uint8_t, char32_t>> run;
  for (size_t begin = 0; begin < chars.size();) {
    if (classes[begin] == 0) {
      ++begin;
      continue;
    }
    size_t end = begin + 1;
    while (end < chars.size() && classes[end] != 0) ++end;
    if (end - begin > 1) {
      run.clear();
      for (size_t i = begin; i < end; ++i) run.emplace_back(classes[i], chars[i]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (size_t i = begin; i < end; ++i) std::tie(classes[i], chars[i]) = run[i - begin];
    }
    begin = end;
  }

  // 3. Canonical composition. A character combines with the last starter unless something
  // between them blocks it (a starter, or a non-starter of the same or a higher class; after
  // ordering, only the previous character needs checking).
  std::vector<char32_t> out;
  std::vector<uint8_t> out_classes;
  out.reserve(chars.size());
  out_classes.reserve(chars.size());
  ptrdiff_t starter = -1;
  for (size_t i = 0; i < chars.size(); ++i) {
    const char32_t c = chars[i];
    const uint8_t cc = classes[i];
    if (starter >= 0) {
      const bool adjacent = out.size() == static_cast<size_t>(starter) + 1;
      if (adjacent || out_classes.back() < cc) {
        if (const char32_t composite = Compose(out[starter], c); composite != 0) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (cc == 0) starter = static_cast<ptrdiff_t>(out.size());
    out.push_back(c);
    out_classes.push_back(cc);
  }

  std::string result;
  result.reserve(text.size());
  for (char32_t c : out) utf8::AppendCodePoint(c, &result);
  return result;
}

}  // namespace tq
