// File: engine/tokenizer/pre_tokenizer.h
//
// The pre-tokenizer of a byte-level tokenizer.json: cuts text into the words that the BPE model
// tokenizes one at a time. Supported (anything else is InvalidArgument naming it):
//
//   {"type": "Split", "pattern": {"Regex": ...} | {"String": ...}, "behavior": ..., "invert": b}
//       behavior: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous;
//   {"type": "ByteLevel", "add_prefix_space": b, "use_regex": b}
//       add_prefix_space prepends " " to every piece not starting with one; use_regex splits
//       with GPT-2's pattern (Isolated). ByteLevel must come last: it maps bytes to the
//       byte-level alphabet, which ByteLevelBpe does itself;
//   {"type": "Sequence", "pretokenizers": [...]} of those.
//
// Words are returned as raw bytes (not yet in the byte-level alphabet), as views of the input
// text or, where add_prefix_space added a space, of strings kept in `storage`. Empty pieces are
// dropped, as tokenizers does.
//
//   TQ_ASSIGN_OR_RETURN(auto pre, PreTokenizer::FromJson(root["pre_tokenizer"]));
//   std::vector<absl::string_view> words;
//   std::deque<std::string> storage;
//   pre->Split("Hello world", &words, &storage);  // "Hello", " world" with GPT-2's pattern
#ifndef TQSERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_
#define TQSERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/regex.h"
#include "nlohmann/json_fwd.hpp"

namespace tq {

// How a Split step treats the pieces matched by its pattern.
enum class SplitBehavior {
  kRemoved,             // drop them
  kIsolated,            // keep them as pieces of their own
  kMergedWithPrevious,  // append each to the piece before it
  kMergedWithNext,      // prepend each to the piece after it
  kContiguous,          // keep them, consecutive ones merged into one piece
};

class PreTokenizer {
 public:
  // `config` is tokenizer.json's "pre_tokenizer" value. A null config (no pre-tokenizer) is
  // refused: a byte-level BPE needs the ByteLevel step.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const nlohmann::json& config);
  ~PreTokenizer();

  // Appends the words of `text` (valid UTF-8). They stay valid while `text` and `storage` live.
  void Split(absl::string_view text, std::vector<absl::string_view>* words,
             std::deque<std::string>* storage) const;

 private:
  struct Step {
    // A Split step (regex set), or the ByteLevel step (regex optional: GPT-2's pattern).
    std::unique_ptr<Regex> regex;
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel only
  };

  PreTokenizer() = default;
  // `depth`: how many Sequences enclose `config` (bounded: the recursion must not exhaust the
  // stack).
  static absl::Status AddSteps(const nlohmann::json& config, PreTokenizer* pre, int depth);
  static void ApplySplit(const Step& step, absl::string_view piece,
                         std::vector<absl::string_view>* out);

  std::vector<Step> steps_;
  bool has_byte_level_ = false;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_
