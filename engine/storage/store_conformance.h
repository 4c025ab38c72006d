// File: engine/storage/store_conformance.h  (testonly)
//
// The behaviour every ObjectStore backend must show, as one gtest-asserting routine run against
// file:// in the regular suite and against the real S3 server (RGW) in the s3 suite.
#ifndef TQSERVE_ENGINE_STORAGE_STORE_CONFORMANCE_H_
#define TQSERVE_ENGINE_STORAGE_STORE_CONFORMANCE_H_

#include <cstdint>
#include <string>

#include "engine/storage/object_store.h"

namespace tq::testing {

// Deterministic pseudo-random bytes.
std::string PatternBytes(uint64_t n, uint32_t seed);

// Put/get/range/suffix/head, list pagination and prefixes, sequential and random-access writers
// larger than `big_bytes` (several multipart parts on S3), abort, delete, overwrite.
void RunStoreConformance(ObjectStore& store, uint64_t big_bytes);

}  // namespace tq::testing

#endif  // TQSERVE_ENGINE_STORAGE_STORE_CONFORMANCE_H_
