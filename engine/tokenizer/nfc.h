// File: engine/tokenizer/nfc.h
//
// Unicode Normalization Form C (canonical decomposition, canonical ordering, canonical
// composition; UAX #15), the normalizer of Qwen's tokenizers. The character data comes from
// nfc_tables.inc, generated from Python's unicodedata (Unicode 14.0.0) by gen_nfc_tables.py;
// Hangul syllables are composed and decomposed arithmetically.
//
//   std::string s = NfcNormalize("e\xCC\x81");  // "é" (U+00E9)
//
// Text made only of code points below U+0300 is already in NFC and is returned unchanged
// without further work.
#ifndef TQSERVE_ENGINE_TOKENIZER_NFC_H_
#define TQSERVE_ENGINE_TOKENIZER_NFC_H_

#include <string>

#include "absl/strings/string_view.h"

namespace tq {

// NFC of `text`, which must be valid UTF-8.
std::string NfcNormalize(absl::string_view text);

// The Unicode version of the tables ("14.0.0").
absl::string_view NfcUnicodeVersion();

}  // namespace tq

#endif  // TQSERVE_ENGINE_TOKENIZER_NFC_H_
