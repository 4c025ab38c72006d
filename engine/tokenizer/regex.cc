#include "engine/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace tq {

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

// Oniguruma's `\s`, the White_Space property (checked against tokenizers code point by code
// point). PCRE2's own `\s` differs: it lacks U+0085 (NEL) and has U+180E.
constexpr absl::string_view kSpaceClassBody =
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

}  // namespace

std::string TranslateOnigurumaPattern(absl::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  size_t class_start = 0;  // index in `pattern` just after "[" or "[^"
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        if (in_class) {
          absl::StrAppend(&out, kSpaceClassBody);
        } else {
          absl::StrAppend(&out, "[", kSpaceClassBody, "]");
        }
      } else if (e == 'S' && !in_class) {
        absl::StrAppend(&out, "[^", kSpaceClassBody, "]");
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    out.push_back(c);
    if (!in_class) {
      if (c == '[') {
        in_class = true;
        class_start = i + 1;
        if (class_start < pattern.size() && pattern[class_start] == '^') {
          out.push_back('^');
          ++i;
          ++class_start;
        }
      }
    } else if (c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      // A POSIX class such as [:alpha:] inside a class: copy through its closing ":]".
      const size_t close = pattern.find(":]", i + 2);
      if (close != absl::string_view::npos) {
        out.append(pattern.data() + i + 1, close + 2 - (i + 1));
        i = close + 1;
      }
    } else if (c == ']' && i != class_start) {
      in_class = false;  // a "]" right after "[" or "[^" is a literal
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(absl::string_view pattern, bool literal) {
  std::unique_ptr<Regex> re(new Regex());
  re->pattern_ = std::string(pattern);
  if (!utf8::IsValid(pattern)) {
    return absl::InvalidArgumentError("regex pattern is not valid UTF-8");
  }
  const std::string source = literal ? std::string(pattern) : TranslateOnigurumaPattern(pattern);
  // PCRE2_LITERAL allows no option but UTF; Unicode classes do not matter for a plain string.
  // `\C` (one code unit) is refused: it can end a match inside a character, and the pieces are
  // matched again without a UTF check (PCRE2 then reads past their end).
  const uint32_t options =
      PCRE2_UTF |
      (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C);
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options, &error,
                    &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("regex \"", pattern, "\" does not compile: ",
                                                   reinterpret_cast<const char*>(message),
                                                   " (at offset ", error_offset, ")"));
  }
  re->code_ = std::make_unique<Code>();
  re->code_->code = code;
  // JIT makes matching several times faster; without it (unsupported CPU) the interpreter runs.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return re;
}

Regex::~Regex() = default;

namespace {

// One pcre2_match call that falls back to the interpreter if the JIT stack runs out.
int MatchOnce(const pcre2_code* code, absl::string_view text, size_t start, uint32_t options,
              pcre2_match_data* data) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code, subject, text.size(), start, options | PCRE2_NO_UTF_CHECK, data,
                       nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    rc = pcre2_match(code, subject, text.size(), start,
                     options | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data, nullptr);
  }
  return rc;
}

}  // namespace

void Regex::FindAll(absl::string_view text, std::vector<Match>* matches) const {
  ForEachMatch(text, [matches](Match m) { matches->push_back(m); });
}

void Regex::ForEachMatch(absl::string_view text, absl::FunctionRef<void(Match)> on_match) const {
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  size_t search_from = 0;
  bool have_previous = false;
  size_t previous_end = 0;
  while (search_from <= text.size()) {
    const int rc = MatchOnce(code_->code, text, search_from, 0, data);
    if (rc < 0) break;  // PCRE2_ERROR_NOMATCH, or a resource limit
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (begin == end && have_previous && previous_end == end) {
      if (search_from >= text.size()) break;
      search_from += utf8::DecodeAt(text, search_from).length;
      continue;
    }
    on_match({begin, end});
    have_previous = true;
    previous_end = end;
    search_from = end;
  }
  pcre2_match_data_free(data);
}

bool Regex::MatchesAtStart(absl::string_view text) const {
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  const int rc = MatchOnce(code_->code, text, 0, PCRE2_ANCHORED, data);
  pcre2_match_data_free(data);
  return rc >= 0;
}

}  // namespace tq
