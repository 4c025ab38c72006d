#include "engine/checkpoint/tq_checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/util/file_util.h"
#include "engine/util/sha256.h"
#include "kernels/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using json = nlohmann::json;


constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kPackedSuffix[] = ".tq_packed";
constexpr char kNormsSuffix[] = ".tq_norms";

absl::Status Bad(const std::string& dir, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(dir, ": invalid TQ checkpoint: ", what));
}

absl::StatusOr<std::vector<std::string>> ShardNames(ObjectStore& store) {
  const std::string dir = store.Uri();
  auto text_or = ReadObject(store, kIndexName);
  if (text_or.status().code() == absl::StatusCode::kNotFound) {
    if (!store.Head("model.safetensors").ok()) {
      return absl::NotFoundError(absl::StrCat(dir, " has neither model.safetensors nor ", kIndexName));
    }
    return std::vector<std::string>{"model.safetensors"};
  }
  TQ_ASSIGN_OR_RETURN(std::string text, std::move(text_or));
  json index;
  try {
    index = json::parse(text);
  } catch (const json::exception& e) {
    return Bad(dir, absl::StrCat(kIndexName, " is not valid JSON: ", e.what()));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return Bad(dir, absl::StrCat(kIndexName, " has no weight_map object"));
  }
  std::set<std::string> names;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it.value().is_string() || !IsSafeRelativeName(it.value().get<std::string>())) {
      return Bad(dir, absl::StrCat(kIndexName, ": bad file for \"", it.key(), "\""));
    }
    names.insert(it.value().get<std::string>());
  }
  return std::vector<std::string>(names.begin(), names.end());
}

// Checks a quantized tensor's packed/norms pair against its spec and logical rows/cols.
absl::Status CheckQuantizedLayout(const std::string& dir, const TqTensor& t) {
  const int64_t g = t.spec.group_size;
  const int64_t ngr = (t.cols + g - 1) / g;
  const int64_t bpg = t.spec.bytes_per_group();
  const TensorInfo& p = *t.packed.info;
  const TensorInfo& n = *t.norms.info;
  if (p.dtype != DType::kU8 || p.shape != std::vector<int64_t>{t.rows * ngr, bpg}) {
    return Bad(dir, absl::StrCat("\"", p.name, "\" should be U8 [", t.rows * ngr, ", ", bpg,
                                 "] for TQ", t.spec.bits, " of ", t.rows, "x", t.cols));
  }
  if (n.dtype != DType::kF32 || n.shape != std::vector<int64_t>{t.rows, ngr}) {
    return Bad(dir, absl::StrCat("\"", n.name, "\" should be F32 [", t.rows, ", ", ngr, "]"));
  }
  return absl::OkStatus();
}

// Streams an object through sha256, optionally keeping its bytes, and compares with `want`.
absl::Status VerifyObject(ObjectStore& store, const ManifestFile& want, std::string* keep,
                          StorageObserver* observer) {
  Sha256 h;
  uint64_t size = 0;
  if (keep != nullptr) keep->reserve(want.size);
  absl::Status st = store.Read(want.name, 0, ObjectStore::kToEnd, [&](absl::string_view c) {
    h.Update(c);
    size += c.size();
    if (keep != nullptr) keep->append(c.data(), c.size());
    return absl::OkStatus();
  });
  if (st.code() == absl::StatusCode::kNotFound) {
    if (observer != nullptr) observer->OnChecksumFailure();
    return absl::DataLossError(absl::StrCat(store.Uri(want.name), ": listed in the manifest but missing"));
  }
  TQ_RETURN_IF_ERROR(st);
  const std::string got = h.HexDigest();
  if (size != want.size || got != want.sha256) {
    if (observer != nullptr) observer->OnChecksumFailure();
    return absl::DataLossError(absl::StrCat(store.Uri(want.name), ": does not match the manifest (size ",
                                            size, " vs ", want.size, ", sha256 ", got, " vs ",
                                            want.sha256, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

const TqTensor* TqCheckpoint::Find(absl::string_view name) const {
  for (const TqTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<std::unique_ptr<TqCheckpoint>> TqCheckpoint::Open(const std::string& uri,
                                                                 VerifyLevel verify,
                                                                 const StoreOptions& options) {
  TQ_ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenObjectStore(uri, options));
  if (auto local = store->LocalPath("x"); local && !IsDirectory(local->substr(0, local->size() - 2))) {
    return absl::NotFoundError(absl::StrCat(uri, " is not a directory"));
  }
  ObjectStore& ref = *store;
  TQ_ASSIGN_OR_RETURN(std::unique_ptr<TqCheckpoint> ck, Open(ref, verify, options.observer));
  ck->owned_store_ = std::move(store);
  return ck;
}

absl::StatusOr<std::unique_ptr<TqCheckpoint>> TqCheckpoint::Open(ObjectStore& store,
                                                                 VerifyLevel verify,
                                                                 StorageObserver* observer) {
  auto ck = std::unique_ptr<TqCheckpoint>(new TqCheckpoint());
  const std::string dir = store.Uri();
  ck->uri_ = dir;
  auto cfg_text = ReadObject(store, kTqConfigName);
  if (!cfg_text.ok()) {
    if (cfg_text.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("not a TQ checkpoint: ", dir, " has no ", kTqConfigName));
    }
    return cfg_text.status();
  }
  json cfg;
  try {
    cfg = json::parse(*cfg_text);
  } catch (const json::exception& e) {
    return Bad(dir, absl::StrCat(kTqConfigName, " is not valid JSON: ", e.what()));
  }
  if (!cfg.is_object() || !cfg.contains("format") || !cfg["format"].is_string() ||
      !cfg.contains("bits") || !cfg["bits"].is_number_integer() || !cfg.contains("group_size") ||
      !cfg["group_size"].is_number_integer()) {
    return Bad(dir, absl::StrCat(kTqConfigName, " needs string \"format\" and integer \"bits\", \"group_size\""));
  }
  const std::string format = cfg["format"].get<std::string>();
  if (format != "tq3_native" && format != "tqserve") {
    return Bad(dir, absl::StrCat(kTqConfigName, ": unknown format \"", format, "\""));
  }
  ck->bits_ = cfg["bits"].get<int>();
  ck->group_size_ = cfg["group_size"].get<int>();
  const bool tq_mode = format == "tqserve" || cfg.contains("tqserve");
  ck->mode_ = tq_mode ? TqCheckpointMode::kTq : TqCheckpointMode::kPlugin;

  if (tq_mode) {
    auto text = ReadObject(store, kManifestName);
    if (!text.ok()) {
      if (text.status().code() == absl::StatusCode::kNotFound) {
        return absl::FailedPreconditionError(absl::StrCat(
            "incomplete checkpoint: ", dir, " is a tq-mode checkpoint without ", kManifestName,
            " (its writer did not finish, or the manifest was removed); refusing to load it"));
      }
      return text.status();
    }
    TQ_ASSIGN_OR_RETURN(Manifest m, ParseManifest(*text, store.Uri(kManifestName)));
    {
      Sha256 h;
      h.Update(*text);
      ck->manifest_sha256_ = h.HexDigest();
    }
    if (verify != VerifyLevel::kNone) {
      for (const ManifestFile& f : m.files) {
        auto info = store.Head(f.name);
        if (!info.ok()) {
          if (observer != nullptr) observer->OnChecksumFailure();
          return absl::DataLossError(absl::StrCat(dir, ": file ", f.name, " listed in the manifest is missing"));
        }
        if (info->size != f.size) {
          if (observer != nullptr) observer->OnChecksumFailure();
          return absl::DataLossError(absl::StrCat(dir, ": file ", f.name, " is ", info->size,
                                                  " bytes, the manifest says ", f.size));
        }
        if (verify == VerifyLevel::kChecksums && store.LocalPath(f.name)) {
          TQ_RETURN_IF_ERROR(VerifyObject(store, f, nullptr, observer));
        }
      }
    }
    ck->manifest_ = std::move(m);
  }

  TQ_ASSIGN_OR_RETURN(std::vector<std::string> shard_names, ShardNames(store));
  std::map<std::string, StoredTensor> stored;
  for (const std::string& s : shard_names) {
    std::unique_ptr<SafetensorsFile> f;
    if (auto local = store.LocalPath(s)) {
      TQ_ASSIGN_OR_RETURN(f, SafetensorsFile::Open(*local));
    } else {
      // Remote: download, verifying against the manifest while streaming.
      std::string bytes;
      const ManifestFile* want = ck->manifest_ ? ck->manifest_->FindFile(s) : nullptr;
      if (ck->manifest_ && want == nullptr) {
        return Bad(dir, absl::StrCat("shard ", s, " is not listed in the manifest"));
      }
      if (want != nullptr) {
        TQ_RETURN_IF_ERROR(VerifyObject(store, *want, &bytes, observer));
      } else {
        TQ_ASSIGN_OR_RETURN(bytes, ReadObject(store, s));
      }
      TQ_ASSIGN_OR_RETURN(f, SafetensorsFile::FromBuffer(store.Uri(s), std::move(bytes)));
    }
    ck->file_bytes_ += f->file_size();
    for (const TensorInfo& t : f->header().tensors) {
      if (!stored.emplace(t.name, StoredTensor{f.get(), &t}).second) {
        return Bad(dir, absl::StrCat("tensor \"", t.name, "\" appears in two shards"));
      }
    }
    ck->shards_.push_back(std::move(f));
  }

  std::set<std::string> used;
  auto take = [&](const std::string& name) -> absl::StatusOr<StoredTensor> {
    auto it = stored.find(name);
    if (it == stored.end()) return Bad(dir, absl::StrCat("tensor \"", name, "\" is missing from the shards"));
    used.insert(name);
    return it->second;
  };

  if (tq_mode) {
    for (const ManifestTensor& mt : ck->manifest_->tensors) {
      TqTensor t;
      t.name = mt.name;
      t.quantized = mt.quantized;
      t.shape = mt.shape;
      t.source_dtype = *ParseDType(mt.source_dtype);
      if (mt.quantized) {
        t.spec.bits = mt.bits;
        t.spec.group_size = mt.group_size;
        t.spec.rotation_block = mt.rotation_block == mt.group_size ? 0 : mt.rotation_block;
        TQ_ASSIGN_OR_RETURN(t.spec.gain, quant::ParseGainMode(mt.gain));
        TQ_RETURN_IF_ERROR(quant::ValidateSpec(t.spec));
        t.cols = mt.shape.back();
        t.rows = 1;
        for (size_t d = 0; d + 1 < mt.shape.size(); ++d) t.rows *= mt.shape[d];
        TQ_ASSIGN_OR_RETURN(t.packed, take(mt.name + kPackedSuffix));
        TQ_ASSIGN_OR_RETURN(t.norms, take(mt.name + kNormsSuffix));
        TQ_RETURN_IF_ERROR(CheckQuantizedLayout(dir, t));
      } else {
        TQ_ASSIGN_OR_RETURN(t.data, take(mt.name));
        if (DTypeName(t.data.info->dtype) != mt.dtype || t.data.info->shape != mt.shape) {
          return Bad(dir, absl::StrCat("tensor \"", mt.name, "\" does not match its manifest record"));
        }
      }
      ck->tensors_.push_back(std::move(t));
    }
    for (const auto& [name, st] : stored) {
      if (!used.count(name)) return Bad(dir, absl::StrCat("tensor \"", name, "\" is not in the manifest"));
    }
    return ck;
  }

  // Plugin mode: pair *.tq_packed with *.tq_norms, everything else is passthrough.
  const int g = ck->group_size_;
  for (const auto& [name, st] : stored) {
    if (absl::EndsWith(name, kNormsSuffix)) {
      const std::string base = name.substr(0, name.size() - strlen(kNormsSuffix));
      if (!stored.count(base + kPackedSuffix)) {
        return Bad(dir, absl::StrCat("\"", name, "\" has no matching ", kPackedSuffix));
      }
      continue;
    }
    TqTensor t;
    if (absl::EndsWith(name, kPackedSuffix)) {
      t.name = name.substr(0, name.size() - strlen(kPackedSuffix));
      t.quantized = true;
      TQ_ASSIGN_OR_RETURN(t.packed, take(name));
      TQ_ASSIGN_OR_RETURN(t.norms, take(t.name + kNormsSuffix));
      const TensorInfo& p = *t.packed.info;
      const TensorInfo& n = *t.norms.info;
      if (p.shape.size() != 2 || n.shape.size() != 2 || n.shape[1] <= 0) {
        return Bad(dir, absl::StrCat("\"", t.name, "\": packed/norms must be 2-D"));
      }
      const int64_t bpg = p.shape[1];
      if (g <= 0 || (bpg * 8) % g != 0) {
        return Bad(dir, absl::StrCat("\"", name, "\": ", bpg, " bytes per group does not fit group size ", g));
      }
      t.spec.bits = static_cast<int>(bpg * 8 / g);
      t.spec.group_size = g;
      t.spec.gain = quant::GainMode::kNormCorrected;
      TQ_RETURN_IF_ERROR(quant::ValidateSpec(t.spec));
      t.rows = n.shape[0];
      t.cols = n.shape[1] * g;
      t.shape = {t.rows, t.cols};
      t.shape_exact = false;
      TQ_RETURN_IF_ERROR(CheckQuantizedLayout(dir, t));
    } else {
      t.name = name;
      TQ_ASSIGN_OR_RETURN(t.data, take(name));
      t.shape = st.info->shape;
    }
    ck->tensors_.push_back(std::move(t));
  }
  return ck;
}

absl::StatusOr<std::vector<float>> TqCheckpoint::Dequantize(const TqTensor& t) const {
  if (!t.quantized) {
    std::vector<float> out(t.data.info->numel());
    TQ_RETURN_IF_ERROR(ConvertToFloat(t.data.info->dtype, t.data.data().data(), out.size(), out.data()));
    return out;
  }
  TQ_ASSIGN_OR_RETURN(quant::TqQuantizer q, quant::TqQuantizer::Create(t.spec));
  std::vector<float> out(static_cast<size_t>(t.rows * t.cols));
  std::vector<float> norms(t.norms.info->numel());
  std::memcpy(norms.data(), t.norms.data().data(), norms.size() * sizeof(float));
  q.DequantizeRows(reinterpret_cast<const uint8_t*>(t.packed.data().data()), norms.data(), t.rows,
                   t.cols, out.data());
  return out;
}

}  // namespace tq

namespace tq {

absl::StatusOr<VerifyReport> VerifyCheckpoint(ObjectStore& store, StorageObserver* observer) {
  auto text = ReadObject(store, kManifestName);
  if (text.status().code() == absl::StatusCode::kNotFound) {
    return absl::FailedPreconditionError(absl::StrCat(
        store.Uri(), " has no ", kManifestName, ": not a complete tq-format checkpoint"));
  }
  TQ_RETURN_IF_ERROR(text.status());
  TQ_ASSIGN_OR_RETURN(Manifest m, ParseManifest(*text, store.Uri(kManifestName)));
  VerifyReport report;
  for (const ManifestFile& f : m.files) {
    absl::Status st = VerifyObject(store, f, nullptr, observer);
    report.files_checked++;
    report.bytes_checked += f.size;
    if (!st.ok()) {
      if (st.code() != absl::StatusCode::kDataLoss) return st;  // e.g. the store is unreachable
      report.problems.push_back(std::string(st.message()));
    }
  }
  return report;
}

}  // namespace tq
