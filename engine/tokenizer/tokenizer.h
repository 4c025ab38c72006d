// File: engine/tokenizer/tokenizer.h
//
// Hugging Face `tokenizer.json` byte-level BPE tokenizers (GPT-2, Llama 3, Qwen 2/3, the tiny
// test models), giving the same ids as the `tokenizers` library with add_special_tokens=False
// and the same text as decode(ids, skip_special_tokens=False).
//
// Encoding runs the library's pipeline: added tokens found literally in the text
// (AddedVocabulary, with its lstrip/rstrip/single_word/normalized flags), the normalizer (none
// or NFC), the pre-tokenizer (Split / ByteLevel / Sequence, see pre_tokenizer.h) and the BPE
// model (byte_level_bpe.h). Input that is not valid UTF-8 is first made valid by replacing each
// ill-formed subpart with U+FFFD (Python's errors="replace"). The post-processor, truncation
// and padding sections are ignored: they only matter with add_special_tokens=True or for
// batching.
//
// Decoding maps each token back to its bytes (the ByteLevel decoder; added tokens give their
// content) and converts the concatenation to UTF-8, ill-formed bytes becoming U+FFFD.
//
//   TQ_ASSIGN_OR_RETURN(auto tok, Tokenizer::FromFile(dir + "/tokenizer.json"));
//   std::vector<int32_t> ids = tok->Encode("Hello world<|endoftext|>");
//   TQ_ASSIGN_OR_RETURN(std::string text, tok->Decode(ids));
//
//   IncrementalDecoder stream(*tok);
//   for (int32_t id : generated) Send(stream.Push(id));  // never splits a UTF-8 character
//   Send(stream.Flush());
//
// A Tokenizer is immutable after loading and safe to use from several threads.
#ifndef TQSERVE_ENGINE_TOKENIZER_TOKENIZER_H_
#define TQSERVE_ENGINE_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace tq {

class AddedVocabulary;
class ByteLevelBpe;
class PreTokenizer;

class Tokenizer {
 public:
  // Parses tokenizer.json content. Unsupported or malformed content (not JSON, no "model", a
  // model other than BPE, a normalizer other than null/NFC, pre-tokenizers other than
  // Split/ByteLevel/Sequence, a decoder other than ByteLevel, merges naming unknown tokens, a
  // bad regex, ...) is InvalidArgument naming the problem.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json);
  // Reads and parses a tokenizer.json file; errors name the path.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`, without BOS/EOS. Added and special tokens appearing literally in the
  // text are matched as those tokens.
  std::vector<int32_t> Encode(absl::string_view text) const;

  // The text of `ids`, special tokens included. An id with no token is InvalidArgument.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const;

  // Max id + 1 over the vocabulary and the added tokens.
  int32_t vocab_size() const { return vocab_size_; }
  // Added tokens first, then the vocabulary (byte-level strings such as "Ġthe").
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // The token string of `id` ("" if there is none).
  absl::string_view IdToToken(int32_t id) const;
  // Whether `id` is an added token marked special.
  bool IsSpecial(int32_t id) const;

 private:
  friend class IncrementalDecoder;
  enum class Normalization { kNone, kNfc };

  Tokenizer();
  // Appends the ids of a piece of text containing no raw added token.
  void EncodeText(absl::string_view text, std::vector<int32_t>* ids) const;
  // The raw bytes `id` decodes to, or nullptr if `id` has no token.
  const std::string* TokenBytes(int32_t id) const;

  Normalization normalization_ = Normalization::kNone;
  std::unique_ptr<AddedVocabulary> added_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<ByteLevelBpe> bpe_;
  int32_t vocab_size_ = 0;
  // Per id: decoded bytes, whether the id has a token, and added-token metadata.
  std::vector<std::string> token_bytes_;
  std::vector<bool> has_token_;
  std::vector<bool> is_special_;
  std::vector<bool> is_added_;
  std::vector<std::string> added_content_;  // "" unless the id is an added token
  absl::flat_hash_map<std::string, int32_t> added_ids_;  // content -> id
};

// Streams the text of generated ids without ever emitting part of a UTF-8 character. Push
// returns the text completed by `id` (possibly empty): bytes of an unfinished character are
// held back until it completes. Flush returns what is left (held-back bytes that never
// completed become U+FFFD). The concatenation of every Push and the final Flush equals
// Tokenizer::Decode of all the ids; ids with no token are ignored.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  std::string Push(int32_t id);
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;  // bytes of an unfinished UTF-8 character (at most 3)
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_TOKENIZER_TOKENIZER_H_
