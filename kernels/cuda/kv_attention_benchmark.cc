// Times decode attention over a packed KV cache (kernels/cuda/kv_attention.h) against BF16 KV at
// 4K, 32K and 128K positions, for Llama-3-8B's attention shape (32 query heads, 8 KV heads,
// head_dim 128), batch 1 and 8 (docs/BENCHMARKS.md §12).
//
// Paths: the packed-attention kernel with BF16 vectors (the same kernel reading 2d bytes per
// vector: the like-for-like baseline), with turbo3 (3-bit K and V), turbo4 (4-bit) and k4v3
// vectors — on tensor cores (the default) and on the fp32 kernel (tensor_cores = false); and
// the engine's PagedAttention (kernels/cuda/nn_ops.h, BF16, one CTA per row and
// head). Every launch of a timed sequence reads a different copy of the cache (≥ 256 MB in all,
// beyond the 60 MB L2), replayed as a CUDA graph; median of `reps`. GB/s counts the K and V bytes
// each launch reads.
//
// Usage: kv_attention_benchmark [--reps N] [--quick] [--only ROWS:CONTEXT:FORMAT]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/device.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/graph_timer.h"
#include "kernels/cuda/kv_side_testing.h"
#include "kernels/cuda/kv_attention.h"
#include "kernels/cuda/nn_ops.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/kv_quant.h"

namespace tq::cuda {
namespace {

constexpr int kHeads = 32, kKvHeads = 8, kD = 128, kBlock = 16;
constexpr size_t kRotationBytes = 256u << 20;

#define CHECK_CUDA(expr) GraphTimerCheck((expr), #expr)

int g_reps = 20;
cudaStream_t g_stream = nullptr;

struct Format {
  const char* name;
  int kbits, vbits;  // 0 = bf16
};

// One side of a turbo preset's format at head_dim kD (bits 0: bf16), its codebook and signs on
// the device.
struct PolarSide {
  KvSide side;
  DeviceKvFormat dev;
  KvVectorFormat f;
  PolarSide(int bits, uint32_t seed) : side(MakeKvSide(kD, bits, seed)), dev(side), f(dev.f) {}
};

struct Problem {
  int rows;
  int64_t context;
  int32_t *table = nullptr, *offset = nullptr, *positions = nullptr;
  float *q = nullptr, *out = nullptr, *ws = nullptr;
  size_t ws_bytes = 0;
  int64_t blocks = 0;
  Problem(int rows_, int64_t context_) : rows(rows_), context(context_) {
    CHECK_CUDA(UploadContiguousTables(rows, context, kBlock, &table, &offset, &positions, &blocks));
    CHECK_CUDA(cudaMalloc(&q, static_cast<size_t>(rows) * kHeads * kD * 4));
    CHECK_CUDA(FillRandomBf16(q, static_cast<size_t>(rows) * kHeads * kD * 4, 7));
    CHECK_CUDA(cudaMalloc(&out, static_cast<size_t>(rows) * kHeads * kD * 4));
    ws_bytes = PackedAttentionWorkspaceBytes(rows, kHeads, kD, kMaxAttentionSplits);
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  }
  // The shape, tables, query and output of either attention kernel's parameters.
  template <typename P>
  void Fill(P* p) const {
    p->q = q;
    p->ldq = kHeads * kD;
    p->block_table = table;
    p->table_offset = offset;
    p->positions = positions;
    p->rows = rows;
    p->num_heads = kHeads;
    p->num_kv_heads = kKvHeads;
    p->head_dim = kD;
    p->block_size = kBlock;
    p->scale = 1.0f / std::sqrt(static_cast<float>(kD));
    p->out = out;
    p->ldo = kHeads * kD;
  }
  ~Problem() {
    for (void* p : {static_cast<void*>(table), static_cast<void*>(offset), static_cast<void*>(positions),
                    static_cast<void*>(q), static_cast<void*>(out), static_cast<void*>(ws)}) {
      cudaFree(p);
    }
  }
};

// `copies` K and V caches of `bytes_per_vector` (K) / (V) bytes per position and KV head.
struct Caches {
  std::vector<uint8_t*> k, v;
  Caches(int64_t blocks, int64_t kb, int64_t vb) {
    const size_t kbytes = static_cast<size_t>(blocks) * kKvHeads * kBlock * kb;
    const size_t vbytes = static_cast<size_t>(blocks) * kKvHeads * kBlock * vb;
    const int copies = static_cast<int>(std::clamp<size_t>(kRotationBytes / (kbytes + vbytes) + 1, 2, 16));
    for (int c = 0; c < copies; ++c) {
      uint8_t *kp, *vp;
      CHECK_CUDA(cudaMalloc(&kp, kbytes));
      CHECK_CUDA(cudaMalloc(&vp, vbytes));
      CHECK_CUDA(FillRandomBf16(kp, kbytes, 100 + c));
      CHECK_CUDA(FillRandomBf16(vp, vbytes, 200 + c));
      k.push_back(kp);
      v.push_back(vp);
    }
  }
  ~Caches() {
    for (auto* p : k) cudaFree(p);
    for (auto* p : v) cudaFree(p);
  }
};

double TimePacked(const Problem& pr, const Format& fmt, int splits, bool tensor_cores, double* kv_bytes) {
  const PolarSide ks(fmt.kbits, quant::kKvKeySeed), vs(fmt.vbits, quant::kKvValueSeed);
  const int64_t kb = KvVectorBytes(ks.f, kD), vb = KvVectorBytes(vs.f, kD);
  const Caches c(pr.blocks, kb, vb);
  *kv_bytes = static_cast<double>(pr.rows) * pr.context * kKvHeads * (kb + vb);
  PackedAttentionParams p;
  pr.Fill(&p);
  p.k_format = ks.f;
  p.v_format = vs.f;
  p.splits = splits;
  p.tensor_cores = tensor_cores;
  p.workspace = pr.ws;
  p.workspace_bytes = pr.ws_bytes;
  return TimeGraphMedianUs(g_stream, static_cast<int>(c.k.size()), g_reps, [&](int i) {
    PackedAttentionParams pi = p;
    pi.k_cache = c.k[i];
    pi.v_cache = c.v[i];
    CHECK_CUDA(PackedAttention(pi, g_stream));
  });
}

// The engine's BF16 PagedAttention (its layout: [blocks, block_size, kv_heads, d]).
double TimeEngineBf16(const Problem& pr) {
  const Caches c(pr.blocks, 2 * kD, 2 * kD);
  PagedAttentionParams p;
  pr.Fill(&p);
  return TimeGraphMedianUs(g_stream, static_cast<int>(c.k.size()), g_reps, [&](int i) {
    PagedAttentionParams pi = p;
    pi.k_cache = reinterpret_cast<const uint16_t*>(c.k[i]);
    pi.v_cache = reinterpret_cast<const uint16_t*>(c.v[i]);
    CHECK_CUDA(PagedAttention(pi, g_stream));
  });
}

int Main(int argc, char** argv) {
  bool quick = false;
  std::string only;  // "ROWS:CONTEXT:FORMAT": that shape and format only (e.g. for a profiler)
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) g_reps = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
  }
  const std::string reason = GpuUnavailableReason();
  if (!reason.empty()) {
    std::printf("no GPU: %s\n", reason.c_str());
    return 0;
  }
  auto info = GetDeviceInfo(0);
  if (!info.ok()) return 1;
  std::printf("device 0: %s, sm_%d%d, %d SMs; reps %d (median); Llama-3-8B attention: %d heads, %d KV heads, d %d\n",
              info->name.c_str(), info->sm_major, info->sm_minor, info->multiprocessors, g_reps, kHeads, kKvHeads,
              kD);
  CHECK_CUDA(cudaStreamCreate(&g_stream));
  // "b8v3" / "b8v4": the turbo3 / turbo4 presets' boundary layers (8-bit keys).
  const Format formats[] = {{"bf16", 0, 0}, {"turbo4", 4, 4}, {"k4v3", 4, 3}, {"turbo3", 3, 3},
                            {"b8v4", 8, 4}, {"b8v3", 8, 3}};
  std::printf("%6s %8s %6s | %-8s %9s %9s %8s %8s | %9s %8s | %s\n", "batch", "context", "splits", "KV", "MB read",
              "us", "GB/s", "vs bf16", "fp32 us", "vs bf16", "engine PagedAttention (bf16)");
  const std::pair<int, int64_t> shapes[] = {{1, 4096}, {1, 32768}, {1, 131072}, {8, 4096}, {8, 32768}};
  for (const auto& [rows, ctx] : shapes) {
    if (quick && ctx == 131072) continue;
    const std::string shape = std::to_string(rows) + ":" + std::to_string(ctx) + ":";
    if (!only.empty() && only.rfind(shape, 0) != 0) continue;
    const Problem pr(rows, ctx);
    const int splits = PlanAttentionSplits(rows, kKvHeads, ctx, info->multiprocessors);
    const double engine = only.empty() ? TimeEngineBf16(pr) : 0.0;
    double bf16_us = 0.0;
    for (const Format& f : formats) {
      if (!only.empty() && only != shape + f.name) continue;
      double bytes = 0.0;
      // The default kernel (tensor cores for the packed formats), then the fp32 kernel.
      const double us = TimePacked(pr, f, splits, true, &bytes);
      const double fp32_us = f.kbits == 0 ? us : TimePacked(pr, f, splits, false, &bytes);
      if (f.kbits == 0) bf16_us = us;
      std::printf("%6d %8lld %6d | %-8s %9.1f %9.2f %8.0f %7.2fx | %9.2f %7.2fx | %.2f us (%.2fx slower than packed bf16)\n",
                  rows, static_cast<long long>(ctx), splits, f.name, bytes / 1e6, us, bytes / us * 1e-3, bf16_us / us,
                  fp32_us, bf16_us / fp32_us, engine, engine / bf16_us);
      std::fflush(stdout);
    }
  }
  CHECK_CUDA(cudaStreamDestroy(g_stream));
  return 0;
}

}  // namespace
}  // namespace tq::cuda

int main(int argc, char** argv) { return tq::cuda::Main(argc, argv); }

#else  // !TQ_HAVE_CUDA

int main() {
  std::printf("built without the CUDA toolkit: nothing to time\n");
  return 0;
}

#endif  // TQ_HAVE_CUDA
