#!/usr/bin/env node
// Golden encodings from Hugging Face tokenizers itself (its Node.js binding, npm package
// `tokenizers` 0.23.2, the same library version that made tokenizer_cases.json), for
// //engine/tokenizer:hf_golden_test. Dev-time only: the build and the tests never need Node.
//
// For several variants of the tiny models' tokenizer.json (the base file, NFC normalizer,
// GPT-2-style ByteLevel pre-tokenizer with add_prefix_space, Llama-3's split pattern with
// ignore_merges, DeepSeek-V3's three split patterns, extra added tokens with lstrip/rstrip/single_word/normalized, legacy "a b"
// merges, other Split behaviors) it encodes seeded random texts built from awkward pieces
// (Unicode spaces, NEL, decomposed accents, emoji ZWJ sequences, Hangul jamo, digits,
// contractions, special-token look-alikes) and decodes seeded random id sequences.
//
// Usage (in a scratch folder with `npm install tokenizers@0.23.2`):
//   NODE_PATH=$PWD/node_modules node tools/tokenizer_golden.js \
//       testdata/models/tq-tiny-qwen3/tokenizer.json > testdata/golden/tokenizer/hf_cases.json
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

// Deterministic PRNG (mulberry32).
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = [
  'the', 'The', ' quick', 'brown', 'fox', ' jumps', 'over', 'LAZY', 'dog', 'In', 'beginning',
  "'s", "'S", "'ll", "'LL", "'re", "'ve", "'m", "'d", "'t", "n't", "it's",
  '0', '7', '12', '345', '2024-01-15', '3.14', '1,000', '١٢٣', '²', 'Ⅻ',
  ' ', '  ', '    ', '\t', '\n', '\n\n', '\r\n', '\r', '\u00a0', '\u0085', '\u2000', '\u3000',
  '\u180e', '\u200b', '\u2028', '\u000b', '\u000c', '\u001c',
  '.', ',', '!', '?', '...', ';', ':', '"', '(', ')', '[', ']', '{', '}', '<', '>', '@-@',
  '@,@', '#', '$', '%', '&', '*', '-', '--', '—', '–', '“', '”', '‘', '’', '«', '»', '_', '/',
  '\\', '|', '~', '`', '^', '+', '=',
  'café', 'cafe\u0301', 'naïve', 'nai\u0308ve', 'Å', 'A\u030a', '\u212b', 'ñ', 'n\u0303',
  'ǅ', 'ﬁ', 'ẛ\u0323', 'q\u0307\u0323', '\u0344', 'Straße', 'ſ', 'K',
  '日本語', 'のテキスト', '中文', '测试', '，', '。', '！', 'Ελληνικά', 'Русский', 'עברית', 'العربية',
  'हिन्दी', 'ไทย', '한국어', '\u1100\u1161\u11a8', '\u1100\u1161',
  '😀', '🎉', '👍🏽', '👨\u200d👩\u200d👧\u200d👦', '🇯🇵', '❤\ufe0f', '\u200d',
  '<|endoftext|>', '<|endoftext|', '|endoftext|>', '<|endoftext|><|endoftext|>', '<unk>', '<mask>',
  ' <mask> ', 'a<mask>b', 'hello', 'Hello', 'HELLO', '[X]', ' [X] ',
];

function randomText(next) {
  const n = 1 + Math.floor(next() * 24);
  let s = '';
  for (let i = 0; i < n; ++i) s += PIECES[Math.floor(next() * PIECES.length)];
  return s;
}

const LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const DEEPSEEK_V3 = [
  '\\p{N}{1,3}',
  '[一-龥\u3040-ゟ゠-ヿ]+',
  '[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+',
];
const byteLevel = (addPrefixSpace, useRegex) =>
    ({ type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: false, use_regex: useRegex });
const split = (pattern, behavior, invert) =>
    ({ type: 'Split', pattern, behavior, invert });

// Each variant: top-level keys replaced, keys of "model" replaced, and whether the merges are
// rewritten as legacy "a b" strings. The C++ test applies the same changes.
const VARIANTS = [
  { name: 'base', patch: {}, model_patch: {}, legacy_merges: false },
  { name: 'nfc', patch: { normalizer: { type: 'NFC' } }, model_patch: {}, legacy_merges: false },
  { name: 'gpt2_prefix_space', patch: { pre_tokenizer: byteLevel(true, true) }, model_patch: {},
    legacy_merges: false },
  { name: 'llama3_ignore_merges',
    patch: { pre_tokenizer: { type: 'Sequence', pretokenizers: [
      split({ Regex: LLAMA3 }, 'Isolated', false), byteLevel(false, false)] } },
    model_patch: { ignore_merges: true }, legacy_merges: true },
  { name: 'added_tokens',
    patch: { normalizer: { type: 'NFC' }, added_tokens: [
      { id: 0, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false,
        normalized: false, special: true },
      { id: 4096, content: '<mask>', single_word: true, lstrip: true, rstrip: true,
        normalized: false, special: true },
      { id: 4097, content: 'hello', single_word: false, lstrip: false, rstrip: false,
        normalized: true, special: false },
      { id: 4098, content: '[X]', single_word: false, lstrip: false, rstrip: true,
        normalized: false, special: false },
      { id: 4099, content: 'café', single_word: false, lstrip: false, rstrip: false,
        normalized: true, special: false },
      { id: 4100, content: '中文', single_word: true, lstrip: false, rstrip: false,
        normalized: false, special: false },
    ] }, model_patch: {}, legacy_merges: false },
  { name: 'deepseek_v3_splits',
    patch: { pre_tokenizer: { type: 'Sequence', pretokenizers: [
      ...DEEPSEEK_V3.map((p) => split({ Regex: p }, 'Isolated', false)), byteLevel(false, false)] } },
    model_patch: {}, legacy_merges: false },
  { name: 'split_behaviors',
    patch: { pre_tokenizer: { type: 'Sequence', pretokenizers: [
      split({ String: ' ' }, 'MergedWithNext', false),
      split({ Regex: '\\p{N}+' }, 'Contiguous', false),
      split({ Regex: '[.,!?]' }, 'MergedWithPrevious', false),
      split({ Regex: '\\s+' }, 'Removed', true),
      byteLevel(false, true)] } },
    model_patch: {}, legacy_merges: false },
];

async function main() {
  const base = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const out = { format: 'tq-tokenizer-hf-golden-v1', library: 'tokenizers (npm) 0.23.2',
                encode: 'encode(text, null, {addSpecialTokens: false}).getIds()',
                decode: 'decode(ids, false)', variants: [] };
  for (const v of VARIANTS) {
    const config = JSON.parse(JSON.stringify(base));
    Object.assign(config, v.patch);
    Object.assign(config.model, v.model_patch);
    if (v.legacy_merges) config.model.merges = config.model.merges.map((m) => m.join(' '));
    const tok = Tokenizer.fromString(JSON.stringify(config));
    const next = rng(20240601 + out.variants.length);
    const encodes = [];
    for (let i = 0; i < 150; ++i) {
      const text = randomText(next);
      const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
      encodes.push({ text_utf8_hex: Buffer.from(text, 'utf8').toString('hex'), ids });
    }
    const decodes = [];
    const size = tok.getVocabSize(true);
    for (let i = 0; i < 60; ++i) {
      const ids = [];
      const n = Math.floor(next() * 20);
      for (let j = 0; j < n; ++j) {
        // Half byte tokens (ids 1..256), which often split characters.
        ids.push(next() < 0.5 ? 1 + Math.floor(next() * 256) : Math.floor(next() * size));
      }
      const text = await tok.decode(ids, false);
      decodes.push({ ids, decoded_utf8_hex: Buffer.from(text, 'utf8').toString('hex') });
    }
    out.variants.push({ name: v.name, patch: v.patch, model_patch: v.model_patch,
                        legacy_merges: v.legacy_merges, encodes, decodes });
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
