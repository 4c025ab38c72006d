#include "engine/tokenizer/pre_tokenizer.h"

#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "kernels/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using json = nlohmann::json;

// GPT-2's pre-tokenization pattern, used by ByteLevel with use_regex.
constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Deeper nesting of Sequence pre-tokenizers is refused (tokenizers itself, through serde_json,
// refuses JSON nested beyond 128 levels; every Sequence is two).
constexpr int kMaxSequenceDepth = 32;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("pre_tokenizer: ", what));
}

absl::StatusOr<bool> OptionalBool(const json& config, const char* key, bool default_value) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return default_value;
  if (!it->is_boolean()) return Bad(absl::StrCat("\"", key, "\" is not a boolean"));
  return it->get<bool>();
}

absl::StatusOr<SplitBehavior> ParseBehavior(const json& config) {
  auto it = config.find("behavior");
  if (it == config.end() || !it->is_string()) return Bad("Split has no \"behavior\" string");
  const std::string& name = it->get_ref<const std::string&>();
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return Bad(absl::StrCat("unknown Split behavior \"", name, "\""));
}

// A span of a piece and whether the pattern matched it.
struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// The piece cut at the pattern's matches: gaps and matches alternate and cover it. `on_span`
// gets them in order.
void ForEachSpan(const Regex& regex, absl::string_view piece, bool invert,
                 absl::FunctionRef<void(const Span&)> on_span) {
  size_t previous = 0;
  regex.ForEachMatch(piece, [&](Regex::Match m) {
    if (m.begin != previous) on_span({previous, m.begin, invert});
    on_span({m.begin, m.end, !invert});
    previous = m.end;
  });
  if (previous != piece.size()) on_span({previous, piece.size(), invert});
}

// Applies the Split behavior to the spans; the result's is_match flags are meaningless.
std::vector<Span> ApplyBehavior(std::vector<Span> spans, SplitBehavior behavior) {
  std::vector<Span> out;
  out.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      return spans;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out.push_back(s);
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back(*it);
        }
        previous_match = it->is_match;
      }
      return std::vector<Span>(out.rbegin(), out.rend());
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return out;
  }
  return spans;
}

}  // namespace

PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const json& config) {
  if (config.is_null()) {
    return Bad("none is set; byte-level BPE needs a ByteLevel pre-tokenizer");
  }
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  TQ_RETURN_IF_ERROR(AddSteps(config, pre.get(), 0));
  if (!pre->has_byte_level_) {
    return Bad("no ByteLevel step; only byte-level BPE tokenizers are supported");
  }
  return pre;
}

absl::Status PreTokenizer::AddSteps(const json& config, PreTokenizer* pre, int depth) {
  if (!config.is_object()) return Bad("a pre-tokenizer is not a JSON object");
  auto type_it = config.find("type");
  if (type_it == config.end() || !type_it->is_string()) return Bad("missing \"type\"");
  const std::string& type = type_it->get_ref<const std::string&>();
  if (pre->has_byte_level_) {
    return Bad(absl::StrCat("a \"", type, "\" step after ByteLevel is not supported"));
  }

  if (type == "Sequence") {
    auto it = config.find("pretokenizers");
    if (it == config.end() || !it->is_array()) return Bad("Sequence has no \"pretokenizers\" list");
    if (depth >= kMaxSequenceDepth) {
      return Bad(absl::StrCat("Sequences nested more than ", kMaxSequenceDepth, " deep"));
    }
    for (const json& child : *it) TQ_RETURN_IF_ERROR(AddSteps(child, pre, depth + 1));
    return absl::OkStatus();
  }

  Step step;
  if (type == "Split") {
    auto it = config.find("pattern");
    if (it == config.end() || !it->is_object()) return Bad("Split has no \"pattern\" object");
    bool literal;
    std::string pattern;
    if (auto r = it->find("Regex"); r != it->end() && r->is_string()) {
      literal = false;
      pattern = r->get<std::string>();
    } else if (auto s = it->find("String"); s != it->end() && s->is_string()) {
      literal = true;
      pattern = s->get<std::string>();
    } else {
      return Bad("Split pattern is neither {\"Regex\": string} nor {\"String\": string}");
    }
    if (pattern.empty()) return Bad("Split pattern is empty");
    auto regex = Regex::Compile(pattern, literal);
    if (!regex.ok()) return Bad(regex.status().message());
    step.regex = *std::move(regex);
    TQ_ASSIGN_OR_RETURN(step.behavior, ParseBehavior(config));
    TQ_ASSIGN_OR_RETURN(step.invert, OptionalBool(config, "invert", false));
  } else if (type == "ByteLevel") {
    TQ_ASSIGN_OR_RETURN(step.add_prefix_space, OptionalBool(config, "add_prefix_space", true));
    TQ_ASSIGN_OR_RETURN(const bool use_regex, OptionalBool(config, "use_regex", true));
    if (use_regex) {
      TQ_ASSIGN_OR_RETURN(step.regex, Regex::Compile(kGpt2Pattern, /*literal=*/false));
    }
    pre->has_byte_level_ = true;
  } else {
    return Bad(absl::StrCat("pre-tokenizer type \"", type,
                            "\" is not supported (only Split, ByteLevel and Sequence)"));
  }
  pre->steps_.push_back(std::move(step));
  return absl::OkStatus();
}

void PreTokenizer::ApplySplit(const Step& step, absl::string_view piece,
                              std::vector<absl::string_view>* out) {
  auto emit = [&](const Span& s) {
    if (s.end > s.begin) out->push_back(piece.substr(s.begin, s.end - s.begin));
  };
  // Isolated and Removed pieces stream straight out; the merging behaviors need neighbours.
  switch (step.behavior) {
    case SplitBehavior::kIsolated:
      ForEachSpan(*step.regex, piece, step.invert, emit);
      return;
    case SplitBehavior::kRemoved:
      ForEachSpan(*step.regex, piece, step.invert, [&](const Span& s) {
        if (!s.is_match) emit(s);
      });
      return;
    default: {
      std::vector<Span> spans;
      ForEachSpan(*step.regex, piece, step.invert, [&](const Span& s) { spans.push_back(s); });
      for (const Span& s : ApplyBehavior(std::move(spans), step.behavior)) emit(s);
      return;
    }
  }
}

void PreTokenizer::Split(absl::string_view text, std::vector<absl::string_view>* words,
                         std::deque<std::string>* storage) const {
  if (text.empty()) return;
  std::vector<absl::string_view> pieces{text};
  std::vector<absl::string_view> next;
  for (size_t i = 0; i < steps_.size(); ++i) {
    const Step& step = steps_[i];
    // The last step writes straight to `words`.
    std::vector<absl::string_view>* out = i + 1 == steps_.size() ? words : &next;
    if (out == &next) next.clear();
    for (absl::string_view piece : pieces) {
      if (step.add_prefix_space && piece.front() != ' ') {
        storage->push_back(absl::StrCat(" ", piece));
        piece = storage->back();
      }
      if (step.regex == nullptr) {
        out->push_back(piece);
      } else {
        ApplySplit(step, piece, out);
      }
    }
    if (out == &next) pieces.swap(next);
  }
}

}  // namespace tq
