// File: engine/storage/file_store.h
//
// The object store over a local directory (file:// URIs and plain paths). Keys map to files
// below the root; writes go to "<key>.partial" and are renamed on commit (fsync first), so a
// reader never sees a half-written object. Listing hides those partial files.
#ifndef TQSERVE_ENGINE_STORAGE_FILE_STORE_H_
#define TQSERVE_ENGINE_STORAGE_FILE_STORE_H_

#include <memory>
#include <string>

#include "engine/storage/object_store.h"

namespace tq {

std::unique_ptr<ObjectStore> NewFileObjectStore(std::string root, StorageObserver* observer);

}  // namespace tq

#endif  // TQSERVE_ENGINE_STORAGE_FILE_STORE_H_
