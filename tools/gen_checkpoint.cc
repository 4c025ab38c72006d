// gen_checkpoint: writes a random Llama-architecture checkpoint (BF16 safetensors, sharded like
// Hugging Face's, with config.json) of any shape, for benchmarks and memory measurements where
// no real weights can be downloaded. Weights ~ N(0, 0.02^2), norms 1. With --experts N it writes
// a Qwen3MoeForCausalLM instead (q/k norms, a router and N experts of --moe-intermediate per
// layer, --experts-per-tok of them active).
//
//   bazel run -c opt //tools:gen_checkpoint -- --out /tmp/llama-2g --hidden 4096 \
//       --intermediate 11008 --layers 5 --vocab 32000
//   # Qwen3-30B-A3B's shape (48 layers there):
//   gen_checkpoint --out /tmp/q3moe --hidden 2048 --heads 32 --kv-heads 4 --head-dim 128 \
//       --layers 8 --vocab 151936 --experts 128 --experts-per-tok 8 --moe-intermediate 768
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/format/dtype.h"
#include "engine/format/safetensors.h"
#include "engine/util/file_util.h"
#include "nlohmann/json.hpp"
#include "tools/random_model.h"

namespace {

struct Args {
  std::string out;
  tq::RandomModelShape shape;
  uint64_t shard_bytes = uint64_t{2} << 30;
  uint64_t seed = 1;
};

// xoshiro-style generator and a cheap normal (sum of 4 uniforms, rescaled): fast enough for
// gigabytes, Gaussian enough for quantization benchmarks.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float Normal() {
    const uint64_t r = Next();
    float acc = 0;
    for (int i = 0; i < 4; ++i) acc += static_cast<float>((r >> (16 * i)) & 0xffff);
    return (acc / 65535.0f - 2.0f) * 1.7320508f;  // variance of sum of 4 U(0,1) is 1/3
  }
};

int Usage() {
  std::fprintf(stderr,
               "usage: gen_checkpoint --out DIR [--hidden 4096] [--intermediate 11008] "
               "[--layers 4] [--vocab 32000] [--heads 32] [--kv-heads 8] [--head-dim hidden/heads] "
               "[--experts 0] [--experts-per-tok 8] [--moe-intermediate 768] [--shard-gib 2] [--seed 1]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--out") a.out = v;
    else if (k == "--hidden") a.shape.hidden = std::atoll(v.c_str());
    else if (k == "--intermediate") a.shape.intermediate = std::atoll(v.c_str());
    else if (k == "--layers") a.shape.layers = std::atoll(v.c_str());
    else if (k == "--vocab") a.shape.vocab = std::atoll(v.c_str());
    else if (k == "--heads") a.shape.heads = std::atoll(v.c_str());
    else if (k == "--kv-heads") a.shape.kv_heads = std::atoll(v.c_str());
    else if (k == "--head-dim") a.shape.head_dim = std::atoll(v.c_str());
    else if (k == "--experts") a.shape.experts = std::atoll(v.c_str());
    else if (k == "--experts-per-tok") a.shape.experts_per_tok = std::atoll(v.c_str());
    else if (k == "--moe-intermediate") a.shape.moe_intermediate = std::atoll(v.c_str());
    else if (k == "--shard-gib") a.shard_bytes = static_cast<uint64_t>(std::atof(v.c_str()) * (1 << 30));
    else if (k == "--seed") a.seed = std::strtoull(v.c_str(), nullptr, 10);
    else return Usage();
  }
  const tq::RandomModelShape& m = a.shape;
  if (a.out.empty() || (m.head_dim == 0 && m.hidden % m.heads != 0) || m.experts < 0 ||
      (m.experts > 0 && (m.experts_per_tok < 1 || m.experts_per_tok > m.experts || m.moe_intermediate < 1))) {
    return Usage();
  }
  const std::vector<tq::TensorSpec> all = tq::RandomModelTensors(m);

  // Group into shards in order.
  std::vector<std::vector<tq::TensorSpec>> shards(1);
  uint64_t cur = 0, total = 0;
  for (const auto& t : all) {
    if (cur + t.nbytes() > a.shard_bytes && !shards.back().empty()) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(t);
    cur += t.nbytes();
    total += t.nbytes();
  }
  if (!tq::MakeDirs(a.out).ok()) return 1;
  Rng rng{a.seed * 0x9E3779B97F4A7C15ull + 1};
  nlohmann::ordered_json weight_map;
  const int n = static_cast<int>(shards.size());
  for (int s = 0; s < n; ++s) {
    const std::string name =
        n == 1 ? "model.safetensors" : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, n);
    auto layout = tq::PlanSafetensors(shards[s], {{"format", "pt"}});
    if (!layout.ok()) return 1;
    const std::string path = tq::JoinPath(a.out, name);
    auto f = tq::RandomAccessOutputFile::Create(path, layout->file_size());
    if (!f.ok()) {
      std::fprintf(stderr, "%s\n", f.status().ToString().c_str());
      return 1;
    }
    const uint64_t hl = layout->header.size();
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((hl >> (8 * i)) & 0xff);
    (void)(*f)->WriteAt(0, len, 8);
    (void)(*f)->WriteAt(8, layout->header.data(), hl);
    std::vector<uint16_t> buf(1 << 20);
    for (const tq::TensorInfo& t : layout->tensors) {
      const bool norm = t.shape.size() == 1;
      const int64_t numel = t.numel();
      for (int64_t b = 0; b < numel; b += buf.size()) {
        const int64_t e = std::min<int64_t>(numel, b + buf.size());
        for (int64_t i = b; i < e; ++i) {
          buf[i - b] = tq::FloatToBf16(norm ? 1.0f : 0.02f * rng.Normal());
        }
        absl::Status st = (*f)->WriteAt(8 + hl + t.begin + 2 * b, buf.data(), (e - b) * 2);
        if (!st.ok()) {
          std::fprintf(stderr, "%s\n", st.ToString().c_str());
          return 1;
        }
      }
      weight_map[t.name] = name;
    }
    if (!(*f)->Close().ok()) return 1;
  }
  if (n > 1) {
    nlohmann::ordered_json index;
    index["metadata"]["total_size"] = total;
    index["weight_map"] = weight_map;
    (void)tq::WriteFileAtomic(tq::JoinPath(a.out, "model.safetensors.index.json"), index.dump(2));
  }
  const nlohmann::ordered_json cfg = tq::RandomModelConfig(m);
  (void)tq::WriteFileAtomic(tq::JoinPath(a.out, "config.json"), cfg.dump(2) + "\n");
  std::printf("wrote %s: %d shard(s), %.2f GB of BF16 tensors\n", a.out.c_str(), n, total / 1e9);
  return 0;
}
