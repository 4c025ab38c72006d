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

absl::StatusOr<Index> ReadIndex(ObjectStore& store) {
  const std::string path = store.Uri(kIndexName);
  TQ_ASSIGN_OR_RETURN(std::string text, ReadObject(store, kIndexName));
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

absl::StatusOr<std::string> ReadRange(ObjectStore& store, const std::string& key, uint64_t off,
                                      uint64_t len) {
  std::string out;
  out.reserve(len);
  TQ_RETURN_IF_ERROR(store.Read(key, off, len, [&](absl::string_view c) {
    out.append(c.data(), c.size());
    return absl::OkStatus();
  }));
  if (out.size() != len) {
    return absl::DataLossError(absl::StrCat(store.Uri(key), ": short read of ", len, " bytes at ",
                                            off, " (got ", out.size(), ")"));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SourceShard>> SourceShard::Open(ObjectStore& store,
                                                               const std::string& key,
                                                               StorageObserver* observer) {
  auto shard = std::unique_ptr<SourceShard>(new SourceShard());
  shard->store_ = &store;
  shard->observer_ = observer;
  shard->key_ = key;
  if (auto local = store.LocalPath(key)) {
    TQ_ASSIGN_OR_RETURN(shard->mapped_, SafetensorsFile::Open(*local));
    shard->size_ = shard->mapped_->file_size();
    shard->header_ = shard->mapped_->header();
    return shard;
  }
  TQ_ASSIGN_OR_RETURN(ObjectInfo info, store.Head(key));
  shard->size_ = info.size;
  const std::string uri = store.Uri(key);
  std::string first8;
  if (info.size >= 8) {
    TQ_ASSIGN_OR_RETURN(first8, ReadRange(store, key, 0, 8));
  }
  TQ_ASSIGN_OR_RETURN(uint64_t n, ParseSafetensorsHeaderLength(first8, info.size, uri));
  TQ_ASSIGN_OR_RETURN(std::string json, ReadRange(store, key, 8, n));
  TQ_ASSIGN_OR_RETURN(shard->header_, ParseSafetensorsHeader(json, info.size - 8 - n, uri));
  return shard;
}

absl::StatusOr<TensorBytes> SourceShard::Fetch(const TensorInfo& t) const {
  if (mapped_) {
    if (observer_ != nullptr) observer_->OnBytesRead(t.nbytes());
    return TensorBytes::View(mapped_->Data(t));
  }
  TQ_ASSIGN_OR_RETURN(std::string bytes,
                      ReadRange(*store_, key_, header_.data_start() + t.begin, t.nbytes()));
  return TensorBytes::Own(std::move(bytes));
}

void SourceShard::Release(const TensorInfo& t) const {
  if (mapped_) mapped_->Release(t);
}

absl::StatusOr<std::unique_ptr<SourceCheckpoint>> SourceCheckpoint::Open(const std::string& uri,
                                                                         const StoreOptions& options) {
  TQ_ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenObjectStore(uri, options));
  if (auto local = store->LocalPath("x"); local && !IsDirectory(local->substr(0, local->size() - 2))) {
    return absl::NotFoundError(absl::StrCat("source checkpoint ", uri, " is not a directory"));
  }
  ObjectStore& ref = *store;
  TQ_ASSIGN_OR_RETURN(std::unique_ptr<SourceCheckpoint> ckpt, Open(ref, options.observer));
  ckpt->owned_store_ = std::move(store);
  return ckpt;
}

absl::StatusOr<std::unique_ptr<SourceCheckpoint>> SourceCheckpoint::Open(ObjectStore& store,
                                                                         StorageObserver* observer) {
  auto ckpt = std::unique_ptr<SourceCheckpoint>(new SourceCheckpoint());
  ckpt->store_ = &store;
  TQ_ASSIGN_OR_RETURN(std::vector<ObjectInfo> objects, ListAll(store, ""));
  std::vector<std::string> names;  // top-level objects only
  for (const ObjectInfo& o : objects) {
    if (o.key.find('/') == std::string::npos) names.push_back(o.key);
  }
  const bool has_index = std::find(names.begin(), names.end(), kIndexName) != names.end();
  std::vector<std::string> shard_names;
  Index index;
  if (has_index) {
    TQ_ASSIGN_OR_RETURN(index, ReadIndex(store));
    shard_names = index.shards;
  } else {
    for (const std::string& n : names) {
      if (absl::EndsWith(n, ".safetensors")) shard_names.push_back(n);
    }
  }
  if (shard_names.empty()) {
    return absl::NotFoundError(absl::StrCat("no .safetensors files in ", store.Uri()));
  }
  std::map<std::string, std::string> owner;  // tensor -> shard
  for (const std::string& s : shard_names) {
    auto f = SourceShard::Open(store, s, observer);
    if (!f.ok()) {
      if (f.status().code() == absl::StatusCode::kNotFound && has_index) {
        return absl::NotFoundError(absl::StrCat(kIndexName, " names shard ", s,
                                                " which is missing from ", store.Uri()));
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
    const std::string path = store.Uri(kIndexName);
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
    if (IsSideFile(n)) ckpt->side_files_.push_back(n);
  }
  if (std::find(names.begin(), names.end(), "config.json") != names.end()) {
    TQ_ASSIGN_OR_RETURN(ckpt->config_json_, ReadObject(store, "config.json"));
  }
  return ckpt;
}

}  // namespace tq
