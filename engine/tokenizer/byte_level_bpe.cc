#include "engine/tokenizer/byte_level_bpe.h"

#include <algorithm>
#include <functional>
#include <queue>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace tq {
namespace {

// Words longer than this (bytes) are not cached; the cache holds at most this many words.
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kCacheCapacity = 1 << 16;

std::array<std::string, 256> BuildAlphabet() {
  std::array<std::string, 256> table;
  char32_t next_extra = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    utf8::AppendCodePoint(printable ? static_cast<char32_t>(b) : next_extra++, &table[b]);
  }
  return table;
}

// Byte-level character -> byte, for decoding.
absl::flat_hash_map<char32_t, uint8_t> BuildInverseAlphabet() {
  absl::flat_hash_map<char32_t, uint8_t> inverse;
  const auto& alphabet = ByteLevelAlphabet();
  for (int b = 0; b < 256; ++b) {
    inverse[utf8::DecodeAt(alphabet[b], 0).code_point] = static_cast<uint8_t>(b);
  }
  return inverse;
}

}  // namespace

const std::array<std::string, 256>& ByteLevelAlphabet() {
  static const auto* const kAlphabet = new std::array<std::string, 256>(BuildAlphabet());
  return *kAlphabet;
}

std::string ToByteLevel(absl::string_view bytes) {
  const auto& alphabet = ByteLevelAlphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += alphabet[static_cast<uint8_t>(c)];
  return out;
}

std::optional<std::string> FromByteLevel(absl::string_view text) {
  static const auto* const kInverse =
      new absl::flat_hash_map<char32_t, uint8_t>(BuildInverseAlphabet());
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const utf8::Sequence seq = utf8::DecodeAt(text, pos);
    if (seq.kind != utf8::SequenceKind::kValid) return std::nullopt;
    auto it = kInverse->find(seq.code_point);
    if (it == kInverse->end()) return std::nullopt;
    out.push_back(static_cast<char>(it->second));
    pos += seq.length;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ByteLevelBpe>> ByteLevelBpe::Create(
    const std::vector<std::pair<std::string, int32_t>>& vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, const Options& options) {
  std::unique_ptr<ByteLevelBpe> bpe(new ByteLevelBpe());
  bpe->options_ = options;

  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0 || id > kMaxTokenId) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary token \"", token, "\" has id ",
                                                     id, ", outside [0, ", kMaxTokenId, "]"));
    }
    max_id = std::max(max_id, id);
  }
  bpe->id_to_token_.resize(static_cast<size_t>(max_id) + 1);
  std::vector<bool> seen(bpe->id_to_token_.size(), false);
  bpe->token_to_id_.reserve(vocab.size());
  for (const auto& [token, id] : vocab) {
    if (seen[id]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vocabulary id ", id, " is used by both \"", bpe->id_to_token_[id], "\" and \"",
          token, "\""));
    }
    if (!bpe->token_to_id_.emplace(token, id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary token \"", token, "\" appears twice"));
    }
    seen[id] = true;
    bpe->id_to_token_[id] = token;
  }

  const auto& alphabet = ByteLevelAlphabet();
  for (int b = 0; b < 256; ++b) {
    auto it = bpe->token_to_id_.find(alphabet[b]);
    bpe->byte_to_id_[b] = it == bpe->token_to_id_.end() ? -1 : it->second;
  }

  bpe->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    std::optional<int32_t> ids[3] = {bpe->TokenToId(left), bpe->TokenToId(right),
                                     bpe->TokenToId(absl::StrCat(left, right))};
    const std::string names[3] = {left, right, absl::StrCat(left, right)};
    for (int i = 0; i < 3; ++i) {
      if (!ids[i].has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " (\"", left, "\" + \"",
                                                       right, "\") names \"", names[i],
                                                       "\", which is not in the vocabulary"));
      }
    }
    bpe->merges_[PairKey(*ids[0], *ids[1])] =
        MergeRule{static_cast<int32_t>(rank), *ids[2]};
  }
  return bpe;
}

std::optional<int32_t> ByteLevelBpe::TokenToId(absl::string_view token) const {
  auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

absl::string_view ByteLevelBpe::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return "";
  return id_to_token_[id];
}

void ByteLevelBpe::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (word.size() == 1 && byte_to_id_[static_cast<uint8_t>(word[0])] >= 0) {
    ids->push_back(byte_to_id_[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (options_.ignore_merges) {
    if (std::optional<int32_t> id = TokenToId(ToByteLevel(word))) {
      ids->push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  ApplyMerges(word, ids);
  if (cacheable) {
    absl::WriterMutexLock lock(&cache_mu_);
    if (cache_.size() < kCacheCapacity) {
      cache_.try_emplace(std::string(word), ids->begin() + first, ids->end());
    }
  }
}

void ByteLevelBpe::ApplyMerges(absl::string_view word, std::vector<int32_t>* ids) const {
  // Symbols form a doubly linked list over the word; a merged-away symbol gets id -1.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (char c : word) {
    int32_t id = byte_to_id_[static_cast<uint8_t>(c)];
    if (id < 0) {
      if (!options_.unk_id.has_value()) continue;  // no unk token: the byte is dropped
      id = *options_.unk_id;
      if (options_.fuse_unk && !symbols.empty() && symbols.back().id == id) continue;
    }
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  }

  // Candidate merges ordered by rank, then by position (leftmost first). Entries go stale when
  // either symbol changes; they are checked when popped.
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.merged_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.merged_id != top.merged_id) continue;

    left.id = top.merged_id;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }

  for (const Symbol& s : symbols) {
    if (s.id >= 0) ids->push_back(s.id);
  }
}

}  // namespace tq
