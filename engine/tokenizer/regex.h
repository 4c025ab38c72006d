// File: engine/tokenizer/regex.h
//
// Regular expressions as Hugging Face tokenizers runs them (Oniguruma), compiled with PCRE2 in
// UTF mode with Unicode properties (UCP) and JIT where available. The two dialects agree on
// everything tokenizer patterns use (`(?i:...)`, `\p{L}`, `\p{N}`, lookahead, classes) except
// `\s`: Oniguruma's is exactly the White_Space property (with U+0085 NEL, without U+180E), so
// `\s` and `\S` are rewritten as that explicit class. `^` matches at line starts, as in
// Oniguruma. Inside a character class, `\S` keeps PCRE2's meaning (it differs on U+0085 and
// U+180E only). Other Oniguruma-only syntax (`\h` as a hex digit) is passed through
// unchanged, and a `\s` inside `\Q...\E` would be rewritten; tokenizer patterns use neither.
//
// FindAll follows tokenizers' iteration: matches are searched left to right, and an empty match
// right where the previous match ended is skipped (the search moves on one character).
//
//   TQ_ASSIGN_OR_RETURN(auto re, Regex::Compile(R"(\p{L}+|\p{N})", /*literal=*/false));
//   std::vector<Regex::Match> matches;
//   re->FindAll("abc 123", &matches);  // [0,3) [4,5) [5,6) [6,7)
#ifndef TQSERVE_ENGINE_TOKENIZER_REGEX_H_
#define TQSERVE_ENGINE_TOKENIZER_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tq {

class Regex {
 public:
  struct Match {
    size_t begin;
    size_t end;
  };

  // `literal`: the pattern is a plain string to find, not a regular expression. A pattern that
  // does not compile is InvalidArgument with PCRE2's message and offset.
  // `\C` (a single byte, which could split a UTF-8 character) is refused.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(absl::string_view pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls `on_match` for the successive matches in `text`, which must be valid UTF-8. Should
  // the matcher fail (a resource limit), the search stops there.
  void ForEachMatch(absl::string_view text, absl::FunctionRef<void(Match)> on_match) const;
  // The same, collected.
  void FindAll(absl::string_view text, std::vector<Match>* matches) const;

  // Whether the pattern matches at the start of `text` (anchored).
  bool MatchesAtStart(absl::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;

  std::string pattern_;
  struct Code;
  std::unique_ptr<Code> code_;
};

// The pattern rewritten from Oniguruma's dialect to PCRE2's (see the file comment).
std::string TranslateOnigurumaPattern(absl::string_view pattern);

}  // namespace tq

#endif  // TQSERVE_ENGINE_TOKENIZER_REGEX_H_
