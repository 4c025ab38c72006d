// File: engine/checkpoint/catalog.h
//
// Finds the TQ checkpoints under a store prefix: every "directory" holding a tq_config.json.
// A tq-format checkpoint is complete when its tq_manifest.json is present and valid; a
// plugin-format one (no manifest in that format) when tq_config.json is present.
#ifndef TQSERVE_ENGINE_CHECKPOINT_CATALOG_H_
#define TQSERVE_ENGINE_CHECKPOINT_CATALOG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/storage/object_store.h"

namespace tq {

struct CatalogEntry {
  std::string key_prefix;  // "" for the store root, else "dir/sub/" (with the slash)
  std::string uri;
  bool complete = false;
  std::string format;  // "tq" or "plugin"
  int bits = 0;
  int group_size = 0;
  std::string manifest_sha256;
  std::string source_uri;
  uint64_t total_bytes = 0;
  std::string problem;  // why it is not complete
};

// Sorted by key prefix.
absl::StatusOr<std::vector<CatalogEntry>> ListCheckpoints(ObjectStore& store, absl::string_view prefix = "");

}  // namespace tq

#endif  // TQSERVE_ENGINE_CHECKPOINT_CATALOG_H_
