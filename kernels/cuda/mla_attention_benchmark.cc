// Times MLA decode attention (kernels/cuda/mla_attention.h) for DeepSeek-V3's latent (c of
// kv_lora_rank 512 + k_pe of rope 64 = 576 values) at 4K and 32K positions, batch 1 and 8, with 16
// query heads (one GPU of tensor parallelism 8) and 128 (the whole model on one GPU)
// (docs/BENCHMARKS.md §11).
//
// Paths, all in the same run: the engine's previous path, PagedAttention (kernels/cuda/nn_ops.h:
// one CTA per row and head, so each head reads every bf16 latent); MlaAttention over the same bf16
// latent (each latent read once per group of 16 heads); MlaAttention over the latent as the
// turbo3 and turbo4 presets store it (c in 3- or 4-bit PolarQuant + fp32 gain, k_pe bf16: 196 +
// 128 and 260 + 128 bytes against 1,152), on tensor cores (the default) and on the fp32 kernel. Every launch of a timed
// sequence reads a different copy of the cache (≥ 256 MB in all, beyond the L2), replayed as a
// CUDA graph; median of `reps`. MB is the latent bytes one launch must read.
//
// Usage: mla_attention_benchmark [--reps N] [--quick] [--only HEADS:ROWS:CONTEXT] [--no-paged]
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
#include "kernels/cuda/mla_attention.h"
#include "kernels/cuda/nn_ops.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/kv_quant.h"

namespace tq::cuda {
namespace {

constexpr int kLora = 512, kRope = 64, kLatent = kLora + kRope, kBlock = 16;
constexpr size_t kRotationBytes = 256u << 20;
// DeepSeek-V3: qk_head_dim 192 (nope 128 + rope 64).
const float kScale = 1.0f / std::sqrt(192.0f);

#define CHECK_CUDA(expr) GraphTimerCheck((expr), #expr)

int g_reps = 20;
cudaStream_t g_stream = nullptr;

// One latent part of `dim` values (bits 0: bf16), its codebook and signs on the device.
struct PolarPart {
  KvSide side;
  DeviceKvFormat dev;
  KvVectorFormat f;
  PolarPart(int dim, int bits, uint32_t seed) : side(MakeKvSide(dim, bits, seed)), dev(side), f(dev.f) {}
  int64_t bytes() const { return side.bytes(); }
};

struct Problem {
  int rows, heads;
  int64_t context;
  int32_t *table = nullptr, *offset = nullptr, *positions = nullptr;
  float *q = nullptr, *out = nullptr, *ws = nullptr;
  size_t ws_bytes = 0;
  int64_t blocks = 0;
  Problem(int rows_, int heads_, int64_t context_) : rows(rows_), heads(heads_), context(context_) {
    CHECK_CUDA(UploadContiguousTables(rows, context, kBlock, &table, &offset, &positions, &blocks));
    const size_t qbytes = static_cast<size_t>(rows) * heads * kLatent * 4;
    CHECK_CUDA(cudaMalloc(&q, qbytes));
    CHECK_CUDA(FillRandomBf16(q, qbytes, 7));
    CHECK_CUDA(cudaMalloc(&out, qbytes));
    ws_bytes = MlaAttentionWorkspaceBytes(rows, heads, kLatent, kMaxAttentionSplits);
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  }
  ~Problem() {
    for (void* p : {static_cast<void*>(table), static_cast<void*>(offset), static_cast<void*>(positions),
                    static_cast<void*>(q), static_cast<void*>(out), static_cast<void*>(ws)}) {
      cudaFree(p);
    }
  }
};

// `copies` pools of `bytes_per_slot` per position.
struct Pools {
  std::vector<uint8_t*> p;
  Pools(int64_t blocks, int64_t bytes_per_slot) {
    const size_t bytes = static_cast<size_t>(blocks) * kBlock * bytes_per_slot;
    const int copies = static_cast<int>(std::clamp<size_t>(kRotationBytes / bytes + 1, 2, 16));
    for (int c = 0; c < copies; ++c) {
      uint8_t* ptr;
      CHECK_CUDA(cudaMalloc(&ptr, bytes));
      CHECK_CUDA(FillRandomBf16(ptr, bytes, 100 + c));
      p.push_back(ptr);
    }
  }
  ~Pools() {
    for (auto* ptr : p) cudaFree(ptr);
  }
};

// The engine's previous path: PagedAttention with K = V = the bf16 latent, one KV head.
double TimePaged(const Problem& pr) {
  const Pools pools(pr.blocks, 2 * kLatent);
  PagedAttentionParams p;
  p.q = pr.q;
  p.ldq = static_cast<int64_t>(pr.heads) * kLatent;
  p.block_table = pr.table;
  p.table_offset = pr.offset;
  p.positions = pr.positions;
  p.rows = pr.rows;
  p.num_heads = pr.heads;
  p.num_kv_heads = 1;
  p.head_dim = kLatent;
  p.block_size = kBlock;
  p.scale = kScale;
  p.out = pr.out;
  p.ldo = static_cast<int64_t>(pr.heads) * kLatent;
  return TimeGraphMedianUs(g_stream, static_cast<int>(pools.p.size()), g_reps, [&](int i) {
    PagedAttentionParams pi = p;
    pi.k_cache = reinterpret_cast<const uint16_t*>(pools.p[i]);
    pi.v_cache = pi.k_cache;
    CHECK_CUDA(PagedAttention(pi, g_stream));
  });
}

// MlaAttention; lo_bits == hi_bits == 0: the engine's contiguous bf16 latent.
double TimeMla(const Problem& pr, int lo_bits, int hi_bits, int sms, int* splits_out, double* bytes_out,
               bool tensor_cores = true) {
  const PolarPart lo(kLora, lo_bits, quant::kKvValueSeed), hi(kRope, hi_bits, quant::kKvKeySeed);
  const bool contiguous = lo_bits == 0 && hi_bits == 0;
  const int64_t slot_bytes = lo.bytes() + hi.bytes();
  const Pools pools(pr.blocks, slot_bytes);  // lo's pool then hi's, in one allocation
  *bytes_out = static_cast<double>(pr.rows) * pr.context * slot_bytes;
  MlaAttentionParams p;
  p.q = pr.q;
  p.ldq = static_cast<int64_t>(pr.heads) * kLatent;
  p.lo.format = lo.f;
  p.hi.format = hi.f;
  p.lo.stride = contiguous ? 2 * kLatent : lo.bytes();
  p.hi.stride = contiguous ? 2 * kLatent : hi.bytes();
  p.lo_dim = kLora;
  p.hi_dim = kRope;
  p.block_table = pr.table;
  p.table_offset = pr.offset;
  p.positions = pr.positions;
  p.rows = pr.rows;
  p.num_heads = pr.heads;
  p.block_size = kBlock;
  p.scale = kScale;
  p.out = pr.out;
  p.out_dim = kLora;  // what MlaOutput reads
  p.ldo = static_cast<int64_t>(pr.heads) * p.out_dim;
  p.splits = PlanMlaAttentionSplits(pr.rows, pr.heads, pr.context, sms);
  p.workspace = pr.ws;
  p.workspace_bytes = pr.ws_bytes;
  p.tensor_cores = tensor_cores;
  *splits_out = p.splits;
  const int64_t slots = pr.blocks * kBlock;
  p.lo.cache = pools.p[0];
  p.hi.cache = contiguous ? pools.p[0] + 2 * kLora : pools.p[0] + slots * lo.bytes();
  if (const char* why = MlaAttentionUnsupportedReason(p)) {
    std::fprintf(stderr, "unsupported: %s\n", why);
    std::exit(1);
  }
  return TimeGraphMedianUs(g_stream, static_cast<int>(pools.p.size()), g_reps, [&](int i) {
    MlaAttentionParams pi = p;
    pi.lo.cache = pools.p[i];
    pi.hi.cache = contiguous ? pools.p[i] + 2 * kLora : pools.p[i] + slots * lo.bytes();
    CHECK_CUDA(MlaAttention(pi, g_stream));
  });
}

int Main(int argc, char** argv) {
  bool quick = false, paged_on = true;
  int only_heads = 0, only_rows = 0;
  long long only_context = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      g_reps = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--no-paged") == 0) {
      paged_on = false;
    } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc &&
               std::sscanf(argv[i + 1], "%d:%d:%lld", &only_heads, &only_rows, &only_context) == 3) {
      ++i;
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--quick] [--only HEADS:ROWS:CONTEXT] [--no-paged]\n", argv[0]);
      return 2;
    }
  }
  const std::string why = GpuUnavailableReason();
  if (!why.empty()) {
    std::printf("skipped: %s\n", why.c_str());
    return 0;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  CHECK_CUDA(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  std::printf("device: %s, %d SMs; DeepSeek-V3 latent 512 + 64, block %d, median of %d graph replays\n",
              prop.name, prop.multiProcessorCount, kBlock, g_reps);
  std::printf("%5s %6s %7s | %10s | %10s %9s | %-14s %8s %9s %8s %9s %8s %6s\n", "heads", "batch", "context",
              "paged us", "bf16 us", "vs paged", "packed", "MB", "TC us", "vs bf16", "fp32 us", "vs bf16", "splits");
  struct Packed {
    const char* name;
    int lo, hi;
  };
  const Packed packed[] = {{"turbo3 c3+pe", 3, 0}, {"turbo4 c4+pe", 4, 0}};
  for (const int heads : {16, 128}) {
    for (const int rows : {1, 8}) {
      for (const int64_t context : {int64_t{4096}, int64_t{32768}}) {
        if (quick && (rows == 8 || context == 4096)) continue;
        if (only_heads > 0 && (heads != only_heads || rows != only_rows || context != only_context)) continue;
        const Problem pr(rows, heads, context);
        const double paged = paged_on ? TimePaged(pr) : 0.0;
        int splits = 0;
        double bytes = 0;
        const double bf16 = TimeMla(pr, 0, 0, prop.multiProcessorCount, &splits, &bytes);
        for (const Packed& f : packed) {
          double pb = 0;
          int ps = 0;
          const double us = TimeMla(pr, f.lo, f.hi, prop.multiProcessorCount, &ps, &pb);
          const double fp32 = TimeMla(pr, f.lo, f.hi, prop.multiProcessorCount, &ps, &pb, false);
          std::printf("%5d %6d %7lld | %10.1f | %10.1f %8.2fx | %-14s %8.1f %9.1f %7.2fx %9.1f %7.2fx %6d\n", heads,
                      rows, static_cast<long long>(context), paged, bf16, paged / bf16, f.name, pb / 1e6, us,
                      bf16 / us, fp32, bf16 / fp32, ps);
        }
        std::printf("%5s %6s %7s   bf16 latent: %.1f MB, %d splits\n", "", "", "", bytes / 1e6, splits);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace tq::cuda

int main(int argc, char** argv) { return tq::cuda::Main(argc, argv); }
#else
int main() {
  std::printf("skipped: built without CUDA\n");
  return 0;
}
#endif
