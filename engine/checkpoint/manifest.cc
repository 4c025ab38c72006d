#include "engine/checkpoint/manifest.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/format/dtype.h"
#include "engine/util/sha256.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using ojson = nlohmann::ordered_json;

ojson FileJson(const ManifestFile& f) {
  ojson j;
  j["name"] = f.name;
  j["size"] = f.size;
  j["sha256"] = f.sha256;
  return j;
}

// Typed accessors that turn a missing or mistyped field into a precise error.
class Reader {
 public:
  Reader(absl::string_view origin) : origin_(origin) {}

  absl::Status Error(const std::string& where, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(origin_, ": invalid manifest: ", where, ": ", what));
  }

  template <typename T>
  absl::StatusOr<T> Get(const ojson& obj, const char* key, const std::string& where) const {
    if (!obj.is_object() || !obj.contains(key)) return Error(where, absl::StrCat("missing \"", key, "\""));
    const ojson& v = obj[key];
    if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) return Error(where, absl::StrCat("\"", key, "\" is not a string"));
      return v.get<std::string>();
    } else if constexpr (std::is_same_v<T, double>) {
      if (!v.is_number()) return Error(where, absl::StrCat("\"", key, "\" is not a number"));
      return v.get<double>();
    } else if constexpr (std::is_same_v<T, uint64_t>) {
      if (!v.is_number_unsigned()) {
        return Error(where, absl::StrCat("\"", key, "\" is not a non-negative integer"));
      }
      return v.get<uint64_t>();
    } else {
      static_assert(std::is_same_v<T, int>);
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1 << 20)) {
        return Error(where, absl::StrCat("\"", key, "\" is not a small non-negative integer"));
      }
      return static_cast<int>(v.get<int64_t>());
    }
  }

 private:
  std::string origin_;
};

#define TQ_GET(lhs, type, obj, key, where)                         \
  do {                                                             \
    auto tq_v_ = reader.Get<type>(obj, key, where);                \
    if (!tq_v_.ok()) return tq_v_.status();                        \
    lhs = *tq_v_;                                                  \
  } while (0)

absl::StatusOr<std::vector<ManifestFile>> ParseFiles(const Reader& reader, const ojson& arr,
                                                     const std::string& where) {
  if (!arr.is_array()) return reader.Error(where, "not an array");
  std::vector<ManifestFile> out;
  std::set<std::string> seen;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string w = absl::StrCat(where, "[", i, "]");
    ManifestFile f;
    TQ_GET(f.name, std::string, arr[i], "name", w);
    TQ_GET(f.size, uint64_t, arr[i], "size", w);
    TQ_GET(f.sha256, std::string, arr[i], "sha256", w);
    if (!IsSafeRelativeName(f.name)) return reader.Error(w, absl::StrCat("unsafe file name \"", f.name, "\""));
    if (f.sha256.size() != 64 ||
        f.sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return reader.Error(w, "sha256 is not 64 lowercase hex digits");
    }
    if (!seen.insert(f.name).second) return reader.Error(w, absl::StrCat("file \"", f.name, "\" listed twice"));
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace

const ManifestTensor* Manifest::FindTensor(absl::string_view name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const ManifestFile* Manifest::FindFile(absl::string_view name) const {
  for (const auto& f : files) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::string DigestOfFiles(std::vector<ManifestFile> files) {
  std::sort(files.begin(), files.end(),
            [](const ManifestFile& a, const ManifestFile& b) { return a.name < b.name; });
  Sha256 h;
  for (const auto& f : files) h.Update(absl::StrCat(f.name, " ", f.size, " ", f.sha256, "\n"));
  return h.HexDigest();
}

std::string SerializeManifest(const Manifest& m) {
  ojson j;
  j["format"] = "tq-manifest";
  j["version"] = m.version;
  j["tool"] = {{"name", m.tool}, {"version", m.tool_version}};
  j["created_at"] = m.created_at;
  j["defaults"] = {{"bits", m.bits},
                   {"group_size", m.group_size},
                   {"gain", m.gain},
                   {"policy", m.policy},
                   {"kurtosis_thresholds", {m.kurtosis_plus_one, m.kurtosis_keep}},
                   {"rotation_seed", m.rotation_seed},
                   {"torch_norm_lanes", m.torch_norm_lanes}};
  ojson src;
  src["uri"] = m.source_uri;
  src["digest"] = m.source_digest;
  src["tensor_bytes"] = m.source_tensor_bytes;
  src["files"] = ojson::array();
  for (const auto& f : m.source_files) src["files"].push_back(FileJson(f));
  j["source"] = src;
  j["tensors"] = ojson::array();
  for (const auto& t : m.tensors) {
    ojson e;
    e["name"] = t.name;
    e["kind"] = t.quantized ? "tq" : "passthrough";
    e["shape"] = t.shape;
    e["source_dtype"] = t.source_dtype;
    if (t.quantized) {
      e["bits"] = t.bits;
      e["group_size"] = t.group_size;
      e["rotation_block"] = t.rotation_block;
      e["gain"] = t.gain;
    } else {
      e["dtype"] = t.dtype;
    }
    if (t.kurtosis.has_value()) e["kurtosis"] = *t.kurtosis;
    e["reason"] = t.reason;
    j["tensors"].push_back(e);
  }
  j["files"] = ojson::array();
  for (const auto& f : m.files) j["files"].push_back(FileJson(f));
  return j.dump(1) + "\n";
}

absl::StatusOr<Manifest> ParseManifest(absl::string_view text, absl::string_view origin) {
  Reader reader(origin);
  ojson j;
  try {
    j = ojson::parse(text.begin(), text.end());
  } catch (const ojson::exception& e) {
    return reader.Error("document", absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return reader.Error("document", "not a JSON object");
  Manifest m;
  std::string format;
  TQ_GET(format, std::string, j, "format", "document");
  if (format != "tq-manifest") return reader.Error("format", absl::StrCat("unknown format \"", format, "\""));
  TQ_GET(m.version, int, j, "version", "document");
  if (m.version != kManifestVersion) {
    return reader.Error("version", absl::StrCat("unsupported version ", m.version, " (this build reads ",
                                                kManifestVersion, ")"));
  }
  if (!j.contains("tool")) return reader.Error("document", "missing \"tool\"");
  TQ_GET(m.tool, std::string, j["tool"], "name", "tool");
  TQ_GET(m.tool_version, std::string, j["tool"], "version", "tool");
  TQ_GET(m.created_at, std::string, j, "created_at", "document");
  if (!j.contains("defaults")) return reader.Error("document", "missing \"defaults\"");
  const ojson& d = j["defaults"];
  TQ_GET(m.bits, int, d, "bits", "defaults");
  TQ_GET(m.group_size, int, d, "group_size", "defaults");
  TQ_GET(m.gain, std::string, d, "gain", "defaults");
  TQ_GET(m.policy, std::string, d, "policy", "defaults");
  TQ_GET(m.rotation_seed, int, d, "rotation_seed", "defaults");
  TQ_GET(m.torch_norm_lanes, int, d, "torch_norm_lanes", "defaults");
  if (!d.contains("kurtosis_thresholds") || !d["kurtosis_thresholds"].is_array() ||
      d["kurtosis_thresholds"].size() != 2 || !d["kurtosis_thresholds"][0].is_number() ||
      !d["kurtosis_thresholds"][1].is_number()) {
    return reader.Error("defaults", "\"kurtosis_thresholds\" must be two numbers");
  }
  m.kurtosis_plus_one = d["kurtosis_thresholds"][0].get<double>();
  m.kurtosis_keep = d["kurtosis_thresholds"][1].get<double>();
  if (m.rotation_seed != 42) return reader.Error("defaults", "rotation_seed must be 42");

  if (!j.contains("source")) return reader.Error("document", "missing \"source\"");
  const ojson& s = j["source"];
  TQ_GET(m.source_uri, std::string, s, "uri", "source");
  TQ_GET(m.source_digest, std::string, s, "digest", "source");
  TQ_GET(m.source_tensor_bytes, uint64_t, s, "tensor_bytes", "source");
  if (!s.contains("files")) return reader.Error("source", "missing \"files\"");
  {
    auto files = ParseFiles(reader, s["files"], "source.files");
    if (!files.ok()) return files.status();
    m.source_files = std::move(*files);
  }

  if (!j.contains("tensors") || !j["tensors"].is_array()) return reader.Error("document", "\"tensors\" must be an array");
  std::set<std::string> names;
  for (size_t i = 0; i < j["tensors"].size(); ++i) {
    const ojson& e = j["tensors"][i];
    const std::string w = absl::StrCat("tensors[", i, "]");
    ManifestTensor t;
    TQ_GET(t.name, std::string, e, "name", w);
    std::string kind;
    TQ_GET(kind, std::string, e, "kind", w);
    if (kind != "tq" && kind != "passthrough") return reader.Error(w, absl::StrCat("unknown kind \"", kind, "\""));
    t.quantized = kind == "tq";
    if (!e.contains("shape") || !e["shape"].is_array()) return reader.Error(w, "\"shape\" must be an array");
    for (const auto& dim : e["shape"]) {
      if (!dim.is_number_unsigned() || dim.get<uint64_t>() > (uint64_t{1} << 40)) {
        return reader.Error(w, "shape entries must be non-negative integers");
      }
      t.shape.push_back(dim.get<int64_t>());
    }
    TQ_GET(t.source_dtype, std::string, e, "source_dtype", w);
    if (!ParseDType(t.source_dtype).ok()) return reader.Error(w, absl::StrCat("unknown source_dtype \"", t.source_dtype, "\""));
    if (t.quantized) {
      TQ_GET(t.bits, int, e, "bits", w);
      TQ_GET(t.group_size, int, e, "group_size", w);
      TQ_GET(t.rotation_block, int, e, "rotation_block", w);
      TQ_GET(t.gain, std::string, e, "gain", w);
      if (t.bits < 2 || t.bits > 4) return reader.Error(w, absl::StrCat("bits ", t.bits, " not in 2..4"));
      if (t.shape.size() < 2 || t.shape.size() > 3) return reader.Error(w, "a quantized tensor must be 2-D or 3-D");
      if (t.gain != "nc" && t.gain != "ls" && t.gain != "raw") return reader.Error(w, absl::StrCat("unknown gain \"", t.gain, "\""));
    } else {
      TQ_GET(t.dtype, std::string, e, "dtype", w);
      if (!ParseDType(t.dtype).ok()) return reader.Error(w, absl::StrCat("unknown dtype \"", t.dtype, "\""));
    }
    if (e.contains("kurtosis")) {
      if (!e["kurtosis"].is_number()) return reader.Error(w, "\"kurtosis\" is not a number");
      t.kurtosis = e["kurtosis"].get<double>();
    }
    if (e.contains("reason") && e["reason"].is_string()) t.reason = e["reason"].get<std::string>();
    if (!names.insert(t.name).second) return reader.Error(w, absl::StrCat("tensor \"", t.name, "\" listed twice"));
    m.tensors.push_back(std::move(t));
  }
  if (!j.contains("files")) return reader.Error("document", "missing \"files\"");
  auto files = ParseFiles(reader, j["files"], "files");
  if (!files.ok()) return files.status();
  m.files = std::move(*files);
  if (m.FindFile(kManifestName) != nullptr) return reader.Error("files", "the manifest cannot list itself");
  return m;
}

}  // namespace tq
