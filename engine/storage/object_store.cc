#include "engine/storage/object_store.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/storage/file_store.h"
#include "engine/storage/s3_store.h"
#include "kernels/util/status_macros.h"

namespace tq {

std::string ObjectStore::Uri(absl::string_view key) const {
  std::string root = Uri();
  if (key.empty()) return root;
  if (!root.empty() && root.back() != '/') root.push_back('/');
  return absl::StrCat(root, key);
}

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(absl::string_view uri,
                                                             const StoreOptions& options) {
  if (uri.empty()) return absl::InvalidArgumentError("empty store URI");
  if (absl::StartsWith(uri, "s3://")) {
    TQ_ASSIGN_OR_RETURN(S3Config config, S3Config::FromEnv());
    return NewS3ObjectStore(config, uri.substr(5), options.observer);
  }
  if (absl::StartsWith(uri, "file://")) {
    const absl::string_view path = uri.substr(7);
    if (path.empty() || path.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("file URI '", uri, "' must be absolute: file:///path"));
    }
    return NewFileObjectStore(std::string(path), options.observer);
  }
  const size_t scheme = uri.find("://");
  if (scheme != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported store '", uri.substr(0, scheme), "://' (use file:// or s3://)"));
  }
  return NewFileObjectStore(std::string(uri), options.observer);
}

absl::StatusOr<std::string> ReadObject(ObjectStore& store, absl::string_view key) {
  std::string out;
  TQ_RETURN_IF_ERROR(store.Read(key, 0, ObjectStore::kToEnd, [&](absl::string_view c) {
    out.append(c.data(), c.size());
    return absl::OkStatus();
  }));
  return out;
}

absl::Status WriteObject(ObjectStore& store, absl::string_view key, absl::string_view data) {
  TQ_ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> w, store.NewWriter(key));
  TQ_RETURN_IF_ERROR(w->Append(data));
  return w->Commit();
}

absl::StatusOr<std::vector<ObjectInfo>> ListAll(ObjectStore& store, absl::string_view prefix) {
  std::vector<ObjectInfo> out;
  std::string token;
  do {
    TQ_ASSIGN_OR_RETURN(ListPage page, store.List(prefix, token, 1000));
    for (auto& o : page.objects) out.push_back(std::move(o));
    token = page.next_token;
  } while (!token.empty());
  return out;
}

}  // namespace tq
