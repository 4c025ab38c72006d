#include "engine/checkpoint/source_checkpoint.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/util/file_util.h"
#include "kernels/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using json = nlohmann::json;

constexpr char kIndexName[] = "model.safetensors.index.json";

// Files that describe a model or its tokenizer and travel with its weights.
bool IsSideFile(const std::string& name) {
  if (name == kIndexName || name == "tq_config.json" || name == "tq_manifest.json") return false;
  if (absl::EndsWith(name, ".json") || absl::EndsWith(name, ".jinja")) return true;
  static const char* kTokenizerFiles[] = {"tokenizer.model", "merges.txt", "vocab.txt",
                                          "spiece.model", "sentencepiece.bpe.model"};
  for (const char* f : kTokenizerFiles) {
    if (name == f) return true;
  }
  return false;
}

// The parsed index: tensor -> shard, and the distinct shard names it references.
struct Index {
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> shards;
};

absl::StatusOr<Index> ReadIndex(const std::string& dir) {
  const std::string path = JoinPath(dir, kIndexName);
  TQ_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json index;
  try {
    index = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no \"weight_map\" object"));
  }
  Index out;
  std::set<std::string> files;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry \"", it.key(), "\" is not a file name"));
    }
    const std::string f = it.value().get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map names an invalid file \"", f, "\""));
    }
    files.insert(f);
    out.weight_map[it.key()] = f;
  }
  if (files.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty weight_map"));
  out.shards.assign(files.begin(), files.end());
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SourceCheckpoint>> SourceCheckpoint::Open(const std::string& dir) {
  if (!IsDirectory(dir)) {
    return absl::NotFoundError(absl::StrCat("source checkpoint ", dir, " is not a directory"));
  }
  auto ckpt = std::unique_ptr<SourceCheckpoint>(new SourceCheckpoint());
  ckpt->dir_ = dir;
  TQ_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirectory(dir));
  const bool has_index = std::find(names.begin(), names.end(), kIndexName) != names.end();
  std::vector<std::string> shard_names;
  Index index;
  if (has_index) {
    TQ_ASSIGN_OR_RETURN(index, ReadIndex(dir));
    shard_names = index.shards;
  } else {
    for (const std::string& n : names) {
      if (absl::EndsWith(n, ".safetensors")) shard_names.push_back(n);
    }
  }
  if (shard_names.empty()) {
    return absl::NotFoundError(absl::StrCat("no .safetensors files in ", dir));
  }
  std::map<std::string, std::string> owner;  // tensor -> shard
  for (const std::string& s : shard_names) {
    auto f = SafetensorsFile::Open(JoinPath(dir, s));
    if (!f.ok()) {
      if (f.status().code() == absl::StatusCode::kNotFound && has_index) {
        return absl::NotFoundError(absl::StrCat(kIndexName, " names shard ", s,
                                                " which is missing from ", dir));
      }
      return f.status();
    }
    for (const TensorInfo& t : (*f)->header().tensors) {
      auto [it, inserted] = owner.emplace(t.name, s);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\" is in both ",
                                                       it->second, " and ", s));
      }
    }
    ckpt->shards_.push_back(std::move(*f));
  }
  if (has_index) {
    // Every tensor the index names must be in the shard it names, and no other.
    const std::string path = JoinPath(dir, kIndexName);
    for (const auto& [tensor, shard] : index.weight_map) {
      auto o = owner.find(tensor);
      if (o == owner.end() || o->second != shard) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor \"", tensor, "\" is not in ", shard));
      }
    }
    if (owner.size() != index.weight_map.size()) {
      return absl::InvalidArgumentError(absl::StrCat(path, " lists ", index.weight_map.size(),
                                                     " tensors but the shards hold ", owner.size()));
    }
  }
  for (const auto& f : ckpt->shards_) {
    std::vector<const TensorInfo*> sorted;
    for (const TensorInfo& t : f->header().tensors) sorted.push_back(&t);
    std::sort(sorted.begin(), sorted.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->name < b->name; });
    for (const TensorInfo* t : sorted) {
      ckpt->tensors_.push_back({f.get(), t});
      ckpt->tensor_bytes_ += t->nbytes();
    }
  }
  for (const std::string& n : names) {
    if (IsSideFile(n) && !IsDirectory(JoinPath(dir, n))) ckpt->side_files_.push_back(n);
  }
  if (std::find(names.begin(), names.end(), "config.json") != names.end()) {
    TQ_ASSIGN_OR_RETURN(ckpt->config_json_, ReadFile(JoinPath(dir, "config.json")));
  }
  return ckpt;
}

}  // namespace tq
