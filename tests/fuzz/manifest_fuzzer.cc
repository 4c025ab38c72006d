// libFuzzer target: tq_manifest.json parsing must fail cleanly or produce a manifest that
// serializes and parses back identically.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "engine/checkpoint/manifest.h"

// The replay test compiles this file with TQ_FUZZ_ENTRY renamed.
#ifndef TQ_FUZZ_ENTRY
#define TQ_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int TQ_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  auto m = tq::ParseManifest(absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!m.ok()) return 0;
  for (const auto& f : m->files) {
    if (!tq::IsSafeRelativeName(f.name)) std::abort();
  }
  const std::string text = tq::SerializeManifest(*m);
  auto again = tq::ParseManifest(text, "fuzz-roundtrip");
  if (!again.ok() || tq::SerializeManifest(*again) != text) std::abort();
  return 0;
}
