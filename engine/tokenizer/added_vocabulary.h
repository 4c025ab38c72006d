// File: engine/tokenizer/added_vocabulary.h
//
// Added tokens (tokenizer.json's "added_tokens": special tokens such as <|endoftext|> and
// user-added tokens) found literally in the input text, as Hugging Face tokenizers'
// AddedVocabulary does before normalization and pre-tokenization:
//
// - the text is scanned left to right; at the first position where some token's content occurs,
//   the longest such token is taken (leftmost-longest), and the scan resumes after it;
// - `single_word`: the match is skipped if a word character (\w: letters, marks, decimal
//   digits, connector punctuation, ZWJ/ZWNJ) touches it on either side;
// - `lstrip` / `rstrip`: whitespace to the left / right of the match is absorbed into it;
// - `normalized`: tokens with normalized=false are found in the raw text (first pass), those
//   with normalized=true in the normalized text of the remaining pieces (second pass), with
//   their content normalized the same way.
//
//   AddedVocabulary added;
//   added.Add({.content = "<|endoftext|>", .id = 0, .special = true});
//   TQ_RETURN_IF_ERROR(added.Finalize(nullptr));
//   for (const AddedVocabulary::Segment& s : added.Split(text, /*normalized_pass=*/false)) ...
#ifndef TQSERVE_ENGINE_TOKENIZER_ADDED_VOCABULARY_H_
#define TQSERVE_ENGINE_TOKENIZER_ADDED_VOCABULARY_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/regex.h"

namespace tq {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class AddedVocabulary {
 public:
  // A piece of the scanned text: [begin, end) and the added token's id, or -1 for plain text.
  struct Segment {
    size_t begin;
    size_t end;
    int32_t id;
  };
  // Maps text to its normalized form (used for the content of normalized tokens).
  using Normalizer = std::function<std::string(absl::string_view)>;

  AddedVocabulary();
  ~AddedVocabulary();

  void Add(AddedToken token) { tokens_.push_back(std::move(token)); }
  // Builds the matchers; `normalize` may be null (identity).
  absl::Status Finalize(const Normalizer& normalize);

  const std::vector<AddedToken>& tokens() const { return tokens_; }

  // Splits `text` (valid UTF-8) at the added tokens of one pass. Segments cover the text in
  // order; an empty text gives no segments.
  std::vector<Segment> Split(absl::string_view text, bool normalized_pass) const;

 private:
  struct Pattern {
    std::string content;  // as matched (normalized content in the normalized pass)
    const AddedToken* token;
  };
  struct Matcher {
    // Patterns grouped by first byte, longest first.
    std::array<std::vector<Pattern>, 256> by_first_byte;
    bool empty = true;
  };

  bool IsWordCharBefore(absl::string_view text, size_t pos) const;
  bool IsWordCharAt(absl::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  Matcher raw_;
  Matcher normalized_;
  std::unique_ptr<Regex> word_char_;  // compiled only if a token has single_word
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_TOKENIZER_ADDED_VOCABULARY_H_
