#include "engine/tokenizer/utf8.h"

#include <cstdint>

namespace tq::utf8 {
namespace {

// Accepted range of the second byte for each lead byte (Unicode Table 3-7); later continuation
// bytes are always 0x80..0xBF.
struct LeadInfo {
  int length;  // 0: cannot start a sequence
  uint8_t second_lo;
  uint8_t second_hi;
};

LeadInfo Lead(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

}  // namespace

Sequence DecodeAt(absl::string_view s, size_t pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + pos;
  const size_t avail = s.size() - pos;
  const LeadInfo lead = Lead(p[0]);
  if (lead.length == 1) return {SequenceKind::kValid, p[0], 1};
  if (lead.length == 0) return {SequenceKind::kInvalid, kReplacementChar, 1};

  char32_t cp = p[0] & (0xFF >> (lead.length + 1));
  for (int i = 1; i < lead.length; ++i) {
    if (static_cast<size_t>(i) >= avail) {
      return {SequenceKind::kTruncated, kReplacementChar, avail};
    }
    const uint8_t lo = i == 1 ? lead.second_lo : 0x80;
    const uint8_t hi = i == 1 ? lead.second_hi : 0xBF;
    if (p[i] < lo || p[i] > hi) return {SequenceKind::kInvalid, kReplacementChar,
                                        static_cast<size_t>(i)};
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  return {SequenceKind::kValid, cp, static_cast<size_t>(lead.length)};
}

bool IsValid(absl::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    // ASCII fast path.
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Sequence seq = DecodeAt(s, pos);
    if (seq.kind != SequenceKind::kValid) return false;
    pos += seq.length;
  }
  return true;
}

void AppendLossy(absl::string_view s, std::string* out) {
  size_t pos = 0;
  while (pos < s.size()) {
    const Sequence seq = DecodeAt(s, pos);
    if (seq.kind == SequenceKind::kValid) {
      out->append(s.data() + pos, seq.length);
    } else {
      AppendCodePoint(kReplacementChar, out);
    }
    pos += seq.length;
  }
}

std::string ToValidLossy(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendLossy(s, &out);
  return out;
}

size_t CompletePrefixLength(absl::string_view s) {
  // A truncated sequence is at most 3 bytes and starts at a lead byte; look back that far for
  // the start of the last sequence and check whether it runs past the end.
  const size_t n = s.size();
  const size_t first = n >= 3 ? n - 3 : 0;
  for (size_t start = n; start-- > first;) {
    const uint8_t b = static_cast<uint8_t>(s[start]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: keep looking back
    const Sequence seq = DecodeAt(s, start);
    return seq.kind == SequenceKind::kTruncated ? start : n;
  }
  return n;
}

void AppendCodePoint(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsWhiteSpace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

}  // namespace tq::utf8
