#include "engine/checkpoint/catalog.h"

#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/manifest.h"
#include "engine/util/sha256.h"
#include "kernels/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tq {

absl::StatusOr<std::vector<CatalogEntry>> ListCheckpoints(ObjectStore& store, absl::string_view prefix) {
  TQ_ASSIGN_OR_RETURN(std::vector<ObjectInfo> objects, ListAll(store, prefix));
  std::map<std::string, CatalogEntry> found;
  for (const ObjectInfo& o : objects) {
    if (o.key == kTqConfigName || absl::EndsWith(o.key, std::string("/") + kTqConfigName)) {
      const std::string dir = o.key.substr(0, o.key.size() - strlen(kTqConfigName));
      found[dir].key_prefix = dir;
    }
  }
  for (const ObjectInfo& o : objects) {
    for (auto& [dir, e] : found) {
      if (absl::StartsWith(o.key, dir)) e.total_bytes += o.size;
    }
  }
  std::vector<CatalogEntry> out;
  for (auto& [dir, e] : found) {
    e.uri = store.Uri(dir.empty() ? "" : dir.substr(0, dir.size() - 1));
    auto cfg_text = ReadObject(store, dir + kTqConfigName);
    nlohmann::json cfg;
    if (cfg_text.ok()) cfg = nlohmann::json::parse(*cfg_text, nullptr, /*allow_exceptions=*/false);
    if (!cfg.is_object() || !cfg.contains("bits") || !cfg["bits"].is_number_integer()) {
      e.problem = "tq_config.json is unreadable";
      out.push_back(e);
      continue;
    }
    e.bits = cfg["bits"].get<int>();
    if (cfg.contains("group_size") && cfg["group_size"].is_number_integer()) {
      e.group_size = cfg["group_size"].get<int>();
    }
    if (cfg.contains("original_model") && cfg["original_model"].is_string()) {
      e.source_uri = cfg["original_model"].get<std::string>();
    }
    const bool tq = cfg.contains("tqserve") || cfg.value("format", "") == "tqserve";
    e.format = tq ? "tq" : "plugin";
    if (!tq) {
      e.complete = true;
    } else {
      auto m = ReadObject(store, dir + kManifestName);
      if (!m.ok()) {
        e.problem = m.status().code() == absl::StatusCode::kNotFound
                        ? "no tq_manifest.json (unfinished or failed job)"
                        : std::string(m.status().message());
      } else if (auto parsed = ParseManifest(*m, store.Uri(dir + kManifestName)); !parsed.ok()) {
        e.problem = std::string(parsed.status().message());
      } else {
        e.complete = true;
        e.manifest_sha256 = Sha256Hex(*m);
        e.source_uri = parsed->source_uri;
      }
    }
    out.push_back(e);
  }
  return out;
}

}  // namespace tq
