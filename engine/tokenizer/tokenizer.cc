#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/byte_level_bpe.h"
#include "engine/tokenizer/nfc.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "engine/util/file_util.h"
#include "kernels/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", what));
}

// A status from a component, with the tokenizer.json prefix.
absl::Status Prefixed(const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("tokenizer.json: ", status.message()));
}

std::string TypeOf(const json& config) {
  auto it = config.find("type");
  return it != config.end() && it->is_string() ? it->get<std::string>() : "";
}

absl::StatusOr<bool> Bool(const json& object, const char* key, bool default_value,
                          absl::string_view where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return default_value;
  if (!it->is_boolean()) return Bad(absl::StrCat(where, " \"", key, "\" is not a boolean"));
  return it->get<bool>();
}

absl::StatusOr<int32_t> Id(const json& value, absl::string_view what) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() > kMaxTokenId) {
    return Bad(absl::StrCat(what, " is not an integer id in [0, ", kMaxTokenId, "]"));
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

struct ModelConfig {
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  ByteLevelBpe::Options options;
  std::optional<std::string> unk_token;
};

absl::StatusOr<ModelConfig> ParseModel(const json& root) {
  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) return Bad("missing \"model\" object");
  const json& model = *model_it;
  const std::string type = TypeOf(model);
  if (type.empty() ? !model.contains("merges") : type != "BPE") {
    return Bad(absl::StrCat("model type \"", type.empty() ? "(unknown)" : type,
                            "\" is not supported (only BPE)"));
  }

  ModelConfig config;
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return Bad("model has no \"vocab\" object");
  }
  config.vocab.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    TQ_ASSIGN_OR_RETURN(int32_t id, Id(it.value(), absl::StrCat("vocab \"", it.key(), "\"")));
    config.vocab.emplace_back(it.key(), id);
  }

  if (auto merges_it = model.find("merges"); merges_it != model.end() && !merges_it->is_null()) {
    if (!merges_it->is_array()) return Bad("model \"merges\" is not a list");
    config.merges.reserve(merges_it->size());
    for (size_t i = 0; i < merges_it->size(); ++i) {
      const json& m = (*merges_it)[i];
      if (m.is_string()) {  // "a b" (tokenizers < 0.20)
        const std::string& s = m.get_ref<const std::string&>();
        const size_t space = s.find(' ');
        if (space == std::string::npos) {
          return Bad(absl::StrCat("merge ", i, " \"", s, "\" is not two tokens"));
        }
        config.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        config.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        return Bad(absl::StrCat("merge ", i, " is neither \"a b\" nor [\"a\", \"b\"]"));
      }
    }
  }

  if (auto it = model.find("dropout");
      it != model.end() && !it->is_null() && !(it->is_number() && it->get<double>() == 0.0)) {
    return Bad("BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty())) {
      return Bad(absl::StrCat("BPE \"", key, "\" is not supported (not a byte-level BPE)"));
    }
  }
  TQ_ASSIGN_OR_RETURN(const bool byte_fallback, Bool(model, "byte_fallback", false, "model"));
  if (byte_fallback) return Bad("BPE byte_fallback is not supported (not a byte-level BPE)");
  TQ_ASSIGN_OR_RETURN(config.options.fuse_unk, Bool(model, "fuse_unk", false, "model"));
  TQ_ASSIGN_OR_RETURN(config.options.ignore_merges, Bool(model, "ignore_merges", false, "model"));
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    if (!it->is_string()) return Bad("model \"unk_token\" is not a string");
    config.unk_token = it->get<std::string>();
  }
  return config;
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const json& root) {
  std::vector<AddedToken> tokens;
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return tokens;
  if (!it->is_array()) return Bad("\"added_tokens\" is not a list");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& entry = (*it)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!entry.is_object()) return Bad(absl::StrCat(where, " is not an object"));
    AddedToken token;
    auto content = entry.find("content");
    if (content == entry.end() || !content->is_string()) {
      return Bad(absl::StrCat(where, " has no \"content\" string"));
    }
    token.content = content->get<std::string>();
    auto id = entry.find("id");
    if (id == entry.end()) return Bad(absl::StrCat(where, " has no \"id\""));
    TQ_ASSIGN_OR_RETURN(token.id, Id(*id, absl::StrCat(where, " \"id\"")));
    TQ_ASSIGN_OR_RETURN(token.special, Bool(entry, "special", false, where));
    TQ_ASSIGN_OR_RETURN(token.single_word, Bool(entry, "single_word", false, where));
    TQ_ASSIGN_OR_RETURN(token.lstrip, Bool(entry, "lstrip", false, where));
    TQ_ASSIGN_OR_RETURN(token.rstrip, Bool(entry, "rstrip", false, where));
    TQ_ASSIGN_OR_RETURN(token.normalized, Bool(entry, "normalized", !token.special, where));
    tokens.push_back(std::move(token));
  }
  return tokens;
}

// Whether the normalizer config is NFC (true) or nothing (false).
absl::StatusOr<bool> ParseNormalizer(const json& root) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return false;
  const std::string type = TypeOf(*it);
  if (type == "NFC") return true;
  if (type == "Sequence") {
    auto list = it->find("normalizers");
    if (list == it->end() || !list->is_array()) {
      return Bad("normalizer Sequence has no \"normalizers\" list");
    }
    bool nfc = false;
    for (const json& child : *list) {
      const std::string child_type = TypeOf(child);
      if (child_type != "NFC") {
        return Bad(absl::StrCat("normalizer \"", child_type,
                                "\" is not supported (only none or NFC)"));
      }
      nfc = true;
    }
    return nfc;
  }
  return Bad(absl::StrCat("normalizer \"", type, "\" is not supported (only none or NFC)"));
}

absl::Status CheckDecoder(const json& root) {
  auto it = root.find("decoder");
  if (it == root.end() || it->is_null()) {
    return Bad("no decoder; only the ByteLevel decoder is supported");
  }
  const std::string type = TypeOf(*it);
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "Sequence") {
    auto list = it->find("decoders");
    if (list == it->end() || !list->is_array() || list->empty()) {
      return Bad("decoder Sequence has no \"decoders\" list");
    }
    for (const json& child : *list) {
      if (TypeOf(child) != "ByteLevel") {
        return Bad(absl::StrCat("decoder \"", TypeOf(child),
                                "\" is not supported (only ByteLevel)"));
      }
    }
    return absl::OkStatus();
  }
  return Bad(absl::StrCat("decoder \"", type, "\" is not supported (only ByteLevel)"));
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view text) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return Bad(absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return Bad("not a JSON object");

  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  try {
    TQ_ASSIGN_OR_RETURN(ModelConfig model, ParseModel(root));
    TQ_ASSIGN_OR_RETURN(std::vector<AddedToken> added, ParseAddedTokens(root));
    TQ_ASSIGN_OR_RETURN(const bool nfc, ParseNormalizer(root));
    tok->normalization_ = nfc ? Normalization::kNfc : Normalization::kNone;
    TQ_RETURN_IF_ERROR(CheckDecoder(root));
    auto pre = PreTokenizer::FromJson(root.contains("pre_tokenizer") ? root["pre_tokenizer"]
                                                                     : json());
    if (!pre.ok()) return Prefixed(pre.status());
    tok->pre_tokenizer_ = *std::move(pre);

    if (model.unk_token.has_value()) {
      for (const auto& [token, id] : model.vocab) {
        if (token == *model.unk_token) model.options.unk_id = id;
      }
    }
    auto bpe = ByteLevelBpe::Create(model.vocab, model.merges, model.options);
    if (!bpe.ok()) return Prefixed(bpe.status());
    tok->bpe_ = *std::move(bpe);

    // Per-id tables over the vocabulary and the added tokens.
    int32_t max_id = tok->bpe_->max_id();
    for (const AddedToken& t : added) max_id = std::max(max_id, t.id);
    tok->vocab_size_ = max_id + 1;
    const size_t n = static_cast<size_t>(tok->vocab_size_);
    tok->token_bytes_.resize(n);
    tok->has_token_.assign(n, false);
    tok->is_special_.assign(n, false);
    tok->is_added_.assign(n, false);
    tok->added_content_.resize(n);
    for (int32_t id = 0; id <= tok->bpe_->max_id(); ++id) {
      const absl::string_view token = tok->bpe_->IdToToken(id);
      if (token.empty()) continue;
      tok->has_token_[id] = true;
      // A token outside the byte-level alphabet decodes to its own UTF-8, as in tokenizers.
      std::optional<std::string> bytes = FromByteLevel(token);
      tok->token_bytes_[id] = bytes.has_value() ? *std::move(bytes) : std::string(token);
    }
    tok->added_ = std::make_unique<AddedVocabulary>();
    for (AddedToken& t : added) {
      tok->has_token_[t.id] = true;
      tok->is_added_[t.id] = true;
      tok->is_special_[t.id] = t.special;
      tok->added_content_[t.id] = t.content;
      tok->token_bytes_[t.id] = t.content;
      tok->added_ids_[t.content] = t.id;
      tok->added_->Add(std::move(t));
    }
    AddedVocabulary::Normalizer normalize;
    if (tok->normalization_ == Normalization::kNfc) normalize = NfcNormalize;
    TQ_RETURN_IF_ERROR(tok->added_->Finalize(normalize));
  } catch (const json::exception& e) {
    // Defensive: every access above checks types first.
    return Bad(absl::StrCat("unexpected structure: ", e.what()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  TQ_ASSIGN_OR_RETURN(std::string content, ReadFile(path));
  auto tok = FromJson(content);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text) const {
  std::string valid_copy;
  if (!utf8::IsValid(text)) {
    valid_copy = utf8::ToValidLossy(text);
    text = valid_copy;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  for (const AddedVocabulary::Segment& raw : added_->Split(text, /*normalized_pass=*/false)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    absl::string_view piece = text.substr(raw.begin, raw.end - raw.begin);
    std::string normalized;
    if (normalization_ == Normalization::kNfc) {
      normalized = NfcNormalize(piece);
      piece = normalized;
    }
    for (const AddedVocabulary::Segment& s : added_->Split(piece, /*normalized_pass=*/true)) {
      if (s.id >= 0) {
        ids.push_back(s.id);
      } else {
        EncodeText(piece.substr(s.begin, s.end - s.begin), &ids);
      }
    }
  }
  return ids;
}

void Tokenizer::EncodeText(absl::string_view text, std::vector<int32_t>* ids) const {
  std::vector<absl::string_view> words;
  words.reserve(text.size() / 4 + 1);
  std::deque<std::string> storage;
  pre_tokenizer_->Split(text, &words, &storage);
  for (absl::string_view word : words) bpe_->Tokenize(word, ids);
}

const std::string* Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_ || !has_token_[id]) return nullptr;
  return &token_bytes_[id];
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string bytes;
  for (int32_t id : ids) {
    const std::string* b = TokenBytes(id);
    if (b == nullptr) {
      if (id < 0 || id >= vocab_size_) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is out of range [0, ", vocab_size_, ")"));
      }
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " has no token"));
    }
    bytes += *b;
  }
  if (utf8::IsValid(bytes)) return bytes;
  return utf8::ToValidLossy(bytes);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (auto it = added_ids_.find(token); it != added_ids_.end()) return it->second;
  return bpe_->TokenToId(token);
}

absl::string_view Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return "";
  if (is_added_[id]) return added_content_[id];
  return bpe_->IdToToken(id);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size_ && is_special_[id];
}

std::string IncrementalDecoder::Push(int32_t id) {
  const std::string* bytes = tokenizer_.TokenBytes(id);
  if (bytes == nullptr) return "";
  pending_ += *bytes;
  const size_t complete = utf8::CompletePrefixLength(pending_);
  std::string out = utf8::ToValidLossy(absl::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out = utf8::ToValidLossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace tq
