// File: engine/tokenizer/byte_level_bpe.h
//
// The BPE model of a byte-level tokenizer (GPT-2, Llama 3, Qwen): a vocabulary of token strings
// written in GPT-2's byte-to-unicode alphabet ("Ġ" is the space byte, "Ċ" the newline byte) and
// a ranked list of merges. A word (one pre-tokenized piece, given as raw bytes) starts as one
// symbol per byte; the adjacent pair with the lowest merge rank is merged, leftmost first, until
// no pair has a merge. This is Hugging Face tokenizers' BPE model with the ByteLevel
// pre-tokenizer's byte mapping folded in.
//
//   ByteLevelBpe::Options options;
//   TQ_ASSIGN_OR_RETURN(auto bpe, ByteLevelBpe::Create(vocab, merges, options));
//   std::vector<int32_t> ids;
//   bpe->Tokenize(" world", &ids);  // "Ġworld" if the merges build it
//
// Tokenize is thread-safe; it keeps a bounded cache of recently seen words.
#ifndef TQSERVE_ENGINE_TOKENIZER_BYTE_LEVEL_BPE_H_
#define TQSERVE_ENGINE_TOKENIZER_BYTE_LEVEL_BPE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace tq {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
// themselves, the other 68 bytes to U+0100.. in byte order. Returns the UTF-8 of that character.
const std::array<std::string, 256>& ByteLevelAlphabet();
// The byte-level string of raw bytes ("a b" -> "aĠb").
std::string ToByteLevel(absl::string_view bytes);
// The inverse: raw bytes of a byte-level string, or nullopt if a character is outside the
// alphabet.
std::optional<std::string> FromByteLevel(absl::string_view text);

// Ids above this are refused (tables are indexed by id; real vocabularies stay below 2^18).
inline constexpr int32_t kMaxTokenId = (1 << 24) - 1;

class ByteLevelBpe {
 public:
  struct Options {
    // Look whole words up in the vocabulary before merging (tokenizers' `ignore_merges`).
    bool ignore_merges = false;
    // Id for bytes whose symbol is missing from the vocabulary; without one they are dropped
    // (as tokenizers does when `unk_token` is null).
    std::optional<int32_t> unk_id;
    bool fuse_unk = false;  // consecutive unknown bytes give one unk_id
  };

  // `vocab`: (byte-level token string, id), ids in [0, kMaxTokenId] and unique. `merges`: pairs of token
  // strings in rank order; both parts and their concatenation must be in `vocab`. A pair listed
  // twice keeps its last rank (as tokenizers does). Errors are InvalidArgument.
  static absl::StatusOr<std::unique_ptr<ByteLevelBpe>> Create(
      const std::vector<std::pair<std::string, int32_t>>& vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, const Options& options);

  // Appends the ids of one word, given as raw bytes.
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // Token string of `id` ("" if the vocabulary has no such id).
  absl::string_view IdToToken(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct MergeRule {
    int32_t rank;
    int32_t merged_id;
  };

  ByteLevelBpe() = default;
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  void ApplyMerges(absl::string_view word, std::vector<int32_t>* ids) const;

  Options options_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::array<int32_t, 256> byte_to_id_{};  // -1 where the byte's symbol is not in the vocabulary
  absl::flat_hash_map<uint64_t, MergeRule> merges_;

  // Words already tokenized. Bounded: once full, new words are no longer added.
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_
      ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_TOKENIZER_BYTE_LEVEL_BPE_H_
