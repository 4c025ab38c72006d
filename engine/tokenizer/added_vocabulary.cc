#include "engine/tokenizer/added_vocabulary.h"

#include <algorithm>
#include <utility>

#include "engine/tokenizer/utf8.h"
#include "kernels/util/status_macros.h"

namespace tq {
namespace {

// The Unicode \w of Rust's regex crate (what tokenizers uses for single_word).
constexpr absl::string_view kWordCharPattern =
    R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])";

}  // namespace

AddedVocabulary::AddedVocabulary() = default;
AddedVocabulary::~AddedVocabulary() = default;

absl::Status AddedVocabulary::Finalize(const Normalizer& normalize) {
  bool any_single_word = false;
  for (const AddedToken& token : tokens_) {
    if (token.content.empty()) continue;  // never matched, as in tokenizers
    any_single_word |= token.single_word;
    Matcher& matcher = token.normalized ? normalized_ : raw_;
    std::string content =
        token.normalized && normalize ? normalize(token.content) : token.content;
    if (content.empty()) continue;
    matcher.by_first_byte[static_cast<uint8_t>(content[0])].push_back({std::move(content), &token});
    matcher.empty = false;
  }
  for (Matcher* matcher : {&raw_, &normalized_}) {
    for (auto& patterns : matcher->by_first_byte) {
      std::stable_sort(patterns.begin(), patterns.end(), [](const Pattern& a, const Pattern& b) {
        return a.content.size() > b.content.size();
      });
    }
  }
  if (any_single_word) {
    TQ_ASSIGN_OR_RETURN(word_char_, Regex::Compile(kWordCharPattern, /*literal=*/false));
  }
  return absl::OkStatus();
}

bool AddedVocabulary::IsWordCharAt(absl::string_view text, size_t pos) const {
  if (pos >= text.size()) return false;
  const size_t length = utf8::DecodeAt(text, pos).length;
  return word_char_->MatchesAtStart(text.substr(pos, length));
}

bool AddedVocabulary::IsWordCharBefore(absl::string_view text, size_t pos) const {
  if (pos == 0) return false;
  size_t start = pos - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return IsWordCharAt(text.substr(0, pos), start);
}

std::vector<AddedVocabulary::Segment> AddedVocabulary::Split(absl::string_view text,
                                                             bool normalized_pass) const {
  std::vector<Segment> segments;
  if (text.empty()) return segments;
  const Matcher& matcher = normalized_pass ? normalized_ : raw_;
  if (matcher.empty) {
    segments.push_back({0, text.size(), -1});
    return segments;
  }

  size_t emitted = 0;  // text before this offset is already in `segments`
  size_t pos = 0;
  while (pos < text.size()) {
    const auto& candidates = matcher.by_first_byte[static_cast<uint8_t>(text[pos])];
    const Pattern* found = nullptr;
    for (const Pattern& p : candidates) {
      if (text.substr(pos, p.content.size()) == p.content) {
        found = &p;
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + found->content.size();
    pos = stop;
    const AddedToken& token = *found->token;
    if (token.single_word && (IsWordCharBefore(text, start) || IsWordCharAt(text, stop))) {
      continue;
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > emitted) {
        size_t prev = s - 1;
        while (prev > 0 && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
        if (!utf8::IsWhiteSpace(utf8::DecodeAt(text, prev).code_point)) break;
        s = prev;
      }
      start = s;
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        const utf8::Sequence seq = utf8::DecodeAt(text, stop);
        if (!utf8::IsWhiteSpace(seq.code_point)) break;
        stop += seq.length;
      }
    }
    start = std::max(start, emitted);
    if (emitted < start) segments.push_back({emitted, start, -1});
    segments.push_back({start, stop, token.id});
    emitted = stop;
    pos = std::max(pos, stop);
  }
  if (emitted < text.size()) segments.push_back({emitted, text.size(), -1});
  return segments;
}

}  // namespace tq
