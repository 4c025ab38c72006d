// File: engine/kv_cache/kv_codec.h
//
// How key and value vectors (head_dim floats of one KV head at one position) are stored in the
// paged KV cache.
//
// A KvCodec fixes the bytes per vector and converts between fp32 and its storage form. Compressed
// codecs also define an "attention space": a linear map A of the vector in which attention reads
// the cache without undoing the codec's rotation per position (ALGORITHMS.md §3.1, §4.4):
//   keys:   Dot(PrepareQuery(q), DecodeAttention(code)) == Dot(q, Decode(code))
//   values: FinishValue(Σ_j p_j · DecodeAttention(code_j)) == Σ_j p_j · Decode(code_j)
//   ToAttention(x) == A·x for an exact vector (sink positions stored in bf16)
// For a plain codec A is the identity; for a rotated one A = R (query rotated once, values
// inverse-rotated once per head); a QJL key codec scores in 2·head_dim floats ([R q | S q]).
//
// A KvCacheFormat is what a name like "turbo3" or "k3v4_nc:boundary=0" expands to: a key codec
// and a value codec per layer (boundary layers at higher precision) and per-sequence sink
// positions kept in bf16. Names (ALGORITHMS.md §4.2, §4.4; bytes per vector at head_dim d,
// d = 128 in brackets):
//
//   name      keys                                      values                      K+V bytes
//   fp32      fp32                                      fp32                        8d   [1024]
//   bf16      bf16 (round to nearest even)              bf16                        4d   [512]
//   fp8       e4m3 + fp32 scale amax/448 per vector     same                        2d+8 [264]
//   k8v4      e4m3, no scale (vLLM)                     4-bit uniform, fp16 s/z     d + d/2+4 [196]
//   4bit_nc   4-bit Lloyd–Max, Hadamard, fp16 ||k||,    4-bit uniform               [134]
//             norm correction at decode (vLLM)
//   k3v4_nc   3-bit Lloyd–Max (as above)                4-bit uniform               [118]
//   3bit_nc   3-bit Lloyd–Max (as above)                3-bit uniform               [102]
//   turbo4    4-bit PolarQuant, seed-42 D2·H·D1,        4-bit PolarQuant, seed 542  [136; qjl 140]
//             fp32 corrected norm (plugin)
//   turbo3    3-bit PolarQuant                          3-bit PolarQuant            [104; qjl 108]
//   k4v3      4-bit PolarQuant                          3-bit PolarQuant            [120; qjl 124]
//
// Options after a colon, comma-separated (not for fp32/bf16):
//   sink=N      first N positions of every sequence kept in bf16 (default: plugin presets 4,
//               the others 0)
//   boundary=N  first N and last N layers at higher precision (default: plugin presets 5 with
//               8-bit PolarQuant keys; vLLM presets 2 with bf16 keys and values; fp8 0, bf16)
//   qjl=0|1     plugin presets: keys as (b−1)-bit PolarQuant + 1-bit QJL of the residual
//               (TurboQuant_prod; default 0 as in the plugin since v0.2.0)
// "turboquant_" before a vLLM preset name is accepted. Compressed formats other than fp8 need
// head_dim a multiple of 16 in [16, 1024] (Hadamard blocks: the largest power of two dividing it).
//
// Usage:
//   TQ_ASSIGN_OR_RETURN(KvCacheFormat f, MakeKvCacheFormat("turbo3", num_layers, head_dim));
//   f.keys[layer]->Encode(k, head_dim, dst);
//   TQ_ASSIGN_OR_RETURN(std::unique_ptr<KvCodec> codec, MakeKvCodec("bf16"));  // one codec, K = V
#ifndef TQSERVE_ENGINE_KV_CACHE_KV_CODEC_H_
#define TQSERVE_ENGINE_KV_CACHE_KV_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tq {

namespace quant {
class KvMseQuantizer;
}  // namespace quant

class KvCodec {
 public:
  virtual ~KvCodec() = default;
  virtual const char* name() const = 0;
  // Storage bytes of one vector of `head_dim` floats.
  virtual int64_t BytesPerVector(int head_dim) const = 0;
  // True if Decode(Encode(x)) == x for every finite x.
  virtual bool lossless() const = 0;
  virtual void Encode(const float* src, int head_dim, uint8_t* dst) const = 0;
  virtual void Decode(const uint8_t* src, int head_dim, float* dst) const = 0;

  // Attention space (see the file comment). The defaults are the identity map.
  virtual bool identity_attention() const { return true; }
  virtual int AttentionDim(int head_dim) const { return head_dim; }
  virtual void DecodeAttention(const uint8_t* src, int head_dim, float* dst) const { Decode(src, head_dim, dst); }
  virtual void ToAttention(const float* x, int head_dim, float* dst) const;
  // Keys: the query in the attention space (AttentionDim floats).
  virtual void PrepareQuery(const float* q, int head_dim, float* dst) const;
  // Values: maps an attention-space sum of head_dim floats back (in place allowed).
  virtual void FinishValue(const float* acc, int head_dim, float* dst) const;

  // The PolarQuant / TurboQuant_mse quantizer behind a rotated Lloyd–Max codec (its codebook,
  // rotation and storage form, e.g. for a GPU backend that reads the same bytes); else null.
  virtual const quant::KvMseQuantizer* mse_quantizer() const { return nullptr; }
};

enum class KvRole { kKey, kValue };

struct KvCacheFormat {
  std::string name;  // canonical: the preset and every option, e.g. "turbo3:qjl=0,sink=4,boundary=5"
  std::string preset;
  int head_dim = 0;        // floats per key vector
  int value_head_dim = 0;  // floats per value vector; 0: head_dim (MLA: the latent's width)
  std::vector<std::shared_ptr<const KvCodec>> keys, values;  // one per layer
  int sink_tokens = 0;                                       // positions [0, sink_tokens) use `sink`
  std::shared_ptr<const KvCodec> sink;                       // bf16; null when sink_tokens == 0
  int boundary_layers = 0;
  bool qjl = false;

  int num_layers() const { return static_cast<int>(keys.size()); }
  int value_dim() const { return value_head_dim > 0 ? value_head_dim : head_dim; }
  // Paged-pool bytes of one position of one KV head, K and V, summed over layers.
  int64_t BytesPerTokenPerHead() const;
  // One line: codecs and bytes per vector of the middle and boundary layers, and the sinks.
  std::string Describe() const;
};

// Expands a codec name (with options) for a model of `num_layers` layers and `head_dim`.
// InvalidArgument names the problem: an unknown name (listing the supported ones), a bad
// option, or a head_dim the codec cannot store.
absl::StatusOr<KvCacheFormat> MakeKvCacheFormat(absl::string_view spec, int num_layers, int head_dim);

// The format of a Multi-head Latent Attention cache (DeepSeek-V2/V3, ALGORITHMS.md §4.2: the
// plugin compresses the latent kv_c with the MSE-only value quantizer and passes k_pe through):
// per token and layer one value vector, the latent c of `latent_dim` floats, stored with the
// named format's value codec of that layer (boundary layers as that format's values: the plugin
// presets keep their value codec, the vLLM presets bf16), and one key vector, k_pe of `rope_dim`
// floats, stored uncompressed (fp32 for "fp32", else bf16). Sinks as in the named format.
// InvalidArgument also for qjl=1 (QJL applies to compressed keys; here none are).
absl::StatusOr<KvCacheFormat> MakeMlaKvCacheFormat(absl::string_view spec, int num_layers, int latent_dim,
                                                   int rope_dim);

// The same codec for K and V of every layer, no sinks.
KvCacheFormat SingleCodecFormat(std::shared_ptr<const KvCodec> codec, int num_layers, int head_dim);

// A codec that stores K and V alike and works at any head_dim: "fp32", "bf16" or "fp8";
// anything else is InvalidArgument listing these and the presets (which need MakeKvCacheFormat
// or the overload below).
absl::StatusOr<std::unique_ptr<KvCodec>> MakeKvCodec(absl::string_view name);

// The key or value codec of a name's middle layers (not a boundary layer), bound to head_dim.
absl::StatusOr<std::shared_ptr<const KvCodec>> MakeKvCodec(absl::string_view spec, KvRole role, int head_dim);

// Every accepted preset name, in the order of the table above.
const std::vector<std::string>& KvCodecNames();

}  // namespace tq

#endif  // TQSERVE_ENGINE_KV_CACHE_KV_CODEC_H_
