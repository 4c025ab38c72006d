// File: tools/random_model.h
//
// The tensors and config.json of a random-weight Llama-architecture checkpoint of any shape (or,
// with experts > 0, a Qwen3MoeForCausalLM: q/k norms, a router and the experts), as Hugging Face
// names and stores them: tools/gen_checkpoint writes them for benchmarks, engine_cuda_test for
// shapes no trained test model has. The weights' values are the caller's.
#ifndef TQSERVE_TOOLS_RANDOM_MODEL_H_
#define TQSERVE_TOOLS_RANDOM_MODEL_H_

#include <cstdint>
#include <vector>

#include "engine/format/safetensors.h"
#include "nlohmann/json.hpp"

namespace tq {

struct RandomModelShape {
  int64_t hidden = 4096, intermediate = 11008, layers = 4, vocab = 32000, heads = 32, kv_heads = 8;
  int64_t head_dim = 0;  // 0: hidden / heads
  int64_t experts = 0, experts_per_tok = 8, moe_intermediate = 768;  // experts > 0: Qwen3-MoE
  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : hidden / heads; }
};

// Every tensor (BF16) in checkpoint order: embeddings, the layers, the final norm, lm_head.
std::vector<TensorSpec> RandomModelTensors(const RandomModelShape& s);

// The model's config.json.
nlohmann::ordered_json RandomModelConfig(const RandomModelShape& s);

}  // namespace tq

#endif  // TQSERVE_TOOLS_RANDOM_MODEL_H_
