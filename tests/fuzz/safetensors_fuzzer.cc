// libFuzzer target: the safetensors header parser must return a clean error or a header whose
// invariants hold, for any input, without crashing, leaking or reading out of bounds.
//   Built with clang -fsanitize=fuzzer,address,undefined (BUILD.bazel); replayed over the seed
//   corpus by fuzz_replay_test with the regular toolchain.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "engine/format/safetensors.h"

// The replay test compiles this file with TQ_FUZZ_ENTRY renamed.
#ifndef TQ_FUZZ_ENTRY
#define TQ_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int TQ_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const absl::string_view file(reinterpret_cast<const char*>(data), size);
  auto h = tq::ParseSafetensorsBuffer(file, "fuzz");
  if (!h.ok()) {
    if (h.status().message().empty()) std::abort();
    return 0;
  }
  uint64_t cursor = 0;
  for (const tq::TensorInfo& t : h->tensors) {
    if (t.begin != cursor || t.end < t.begin || t.end > h->data_bytes) std::abort();
    uint64_t n = static_cast<uint64_t>(tq::DTypeSize(t.dtype));
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    if (n != t.nbytes()) std::abort();
    cursor = t.end;
  }
  if (cursor != h->data_bytes || 8 + h->header_bytes + h->data_bytes != size) std::abort();
  // Re-serialize what was parsed: must parse back to the same tensors.
  std::vector<tq::TensorSpec> specs;
  std::map<std::string, std::string> bytes;
  for (const tq::TensorInfo& t : h->tensors) {
    specs.push_back({t.name, t.dtype, t.shape});
    bytes[t.name] = std::string(file.substr(h->data_start() + t.begin, t.nbytes()));
  }
  auto again = tq::SerializeSafetensors(specs, bytes, h->metadata);
  if (!again.ok()) std::abort();
  auto h2 = tq::ParseSafetensorsBuffer(*again, "fuzz-roundtrip");
  if (!h2.ok() || h2->tensors.size() != h->tensors.size()) std::abort();
  return 0;
}
