#include "engine/storage/sigv4.h"

#include <openssl/hmac.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/util/sha256.h"

namespace tq {
namespace {

std::string Hmac(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string Hex(absl::string_view bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace

std::string UriEncode(absl::string_view s, bool encode_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (c == '/' && !encode_slash)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string CanonicalQueryString(std::vector<std::pair<std::string, std::string>> query) {
  std::vector<std::pair<std::string, std::string>> enc;
  for (auto& [k, v] : query) enc.emplace_back(UriEncode(k, true), UriEncode(v, true));
  std::sort(enc.begin(), enc.end());
  std::vector<std::string> parts;
  for (auto& [k, v] : enc) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, "&");
}

std::string CanonicalRequest(const SigV4Request& r) {
  std::map<std::string, std::string> headers = r.headers;
  headers["host"] = r.host;
  std::string canonical_headers, signed_headers;
  for (const auto& [k, v] : headers) {
    absl::StrAppend(&canonical_headers, absl::AsciiStrToLower(k), ":",
                    absl::StripAsciiWhitespace(v), "\n");
    absl::StrAppend(&signed_headers, signed_headers.empty() ? "" : ";", absl::AsciiStrToLower(k));
  }
  return absl::StrCat(r.method, "\n", r.path.empty() ? "/" : r.path, "\n",
                      CanonicalQueryString(r.query), "\n", canonical_headers, "\n",
                      signed_headers, "\n", r.payload_sha256);
}

std::string SignV4(const SigV4Request& r, const SigV4Credentials& creds, absl::string_view amz_date) {
  const std::string date(amz_date.substr(0, 8));
  const std::string scope = absl::StrCat(date, "/", creds.region, "/", creds.service, "/aws4_request");
  const std::string string_to_sign = absl::StrCat("AWS4-HMAC-SHA256\n", amz_date, "\n", scope, "\n",
                                                  Sha256Hex(CanonicalRequest(r)));
  std::string key = Hmac(absl::StrCat("AWS4", creds.secret_key), date);
  key = Hmac(key, creds.region);
  key = Hmac(key, creds.service);
  key = Hmac(key, "aws4_request");
  const std::string signature = Hex(Hmac(key, string_to_sign));
  std::map<std::string, std::string> headers = r.headers;
  headers["host"] = r.host;
  std::string signed_headers;
  for (const auto& [k, v] : headers) {
    absl::StrAppend(&signed_headers, signed_headers.empty() ? "" : ";", absl::AsciiStrToLower(k));
  }
  return absl::StrCat("AWS4-HMAC-SHA256 Credential=", creds.access_key, "/", scope,
                      ",SignedHeaders=", signed_headers, ",Signature=", signature);
}

}  // namespace tq
