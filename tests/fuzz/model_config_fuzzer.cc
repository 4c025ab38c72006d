// libFuzzer target: config.json parsing (engine/model/model_config) must return a clean error or
// a configuration whose invariants hold, for any input; abort() otherwise.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "engine/model/model_config.h"

// The replay test compiles this file with TQ_FUZZ_ENTRY renamed.
#ifndef TQ_FUZZ_ENTRY
#define TQ_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

namespace {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "model_config_fuzzer: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int TQ_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto cfg = tq::ParseModelConfig(text, "");
  if (!cfg.ok()) {
    Check(!cfg.status().message().empty(), "an error with an empty message");
    return 0;
  }
  const tq::ModelConfig& c = *cfg;
  Check(c.vocab_size > 0, "vocab_size > 0");
  Check(c.hidden_size > 0, "hidden_size > 0");
  Check(c.intermediate_size > 0, "intermediate_size > 0");
  Check(c.num_layers > 0, "num_layers > 0");
  Check(c.num_heads > 0 && c.num_kv_heads > 0, "num_heads > 0 and num_kv_heads > 0");
  Check(c.num_heads % c.num_kv_heads == 0, "num_heads % num_kv_heads == 0");
  Check(c.head_dim > 0 && c.head_dim % 2 == 0, "head_dim even and > 0");
  Check(c.sliding_window.size() == static_cast<size_t>(c.num_layers),
        "sliding_window.size() == num_layers");
  for (int64_t w : c.sliding_window) Check(w >= 0, "sliding windows >= 0");
  Check(c.max_position_embeddings > 0, "max_position_embeddings > 0");
  Check(c.rms_norm_eps > 0 && std::isfinite(c.rms_norm_eps), "rms_norm_eps finite and > 0");
  Check(std::isfinite(c.rope.theta) && c.rope.theta > 1, "rope theta finite and > 1");
  Check(std::isfinite(c.rope.factor) && c.rope.factor >= 1, "rope factor finite and >= 1");
  Check(c.rope.original_max_position_embeddings > 0, "rope original_max_position_embeddings > 0");
  for (int32_t id : c.eos_token_ids) Check(id >= 0 && id < c.vocab_size, "eos ids in the vocabulary");
  Check(c.bos_token_id >= -1, "bos_token_id >= -1");
  // The derived sizes and the report must be computable without overflow (UBSan checks).
  (void)c.q_size();
  (void)c.kv_size();
  (void)c.ParameterCount();
  Check(!c.DebugString().empty(), "DebugString is not empty");
  return 0;
}
