// Times the CUDA TQ linear kernels against cuBLAS BF16 (cublasGemmEx, fp32 accumulation) on
// the layer shapes of Llama-3-8B, Qwen3-8B, Qwen3-32B and Llama-70B.
//
// Method (docs/BENCHMARKS.md §8): every launch of a timed sequence reads a different copy of the
// weights, enough copies that they total ≥ 256 MB (5x the H100's 50 MB L2), so every launch
// streams its weights from HBM as in a real forward pass. The sequence is captured once in a CUDA
// graph (launch gaps as in an engine's graph); each replay is timed with CUDA events after 3
// warm-up replays, and the median of `reps` replays divided by the sequence length is reported.
// Inputs are random (never zeros). GB/s counts the bytes each launch must move at least: weights
// (codes + gains, or BF16), activations read and outputs written. The floor is those bytes at
// 3.0 TB/s (the measured device-to-device copy rate of an H100, counting read + write).
//
// Usage: tq_linear_benchmark [--reps N] [--quick] [--msweep (m sweeps only)] [--only N K BITS M]
//                            [--decode-breakdown (only that section)]
// (--only: TQ_ONLY_KERNEL=<TqKernel value> forces a path, e.g. 2 = kMmaSeparate, for profiling)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/device.h"

#if TQ_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>  // the typed cudaMalloc<T> overload

#include "kernels/cuda/graph_timer.h"
#include "kernels/cuda/nn_ops.h"
#include "kernels/cuda/tq_linear.h"
#include "kernels/cuda/tq_linear_runner.h"
#include "kernels/quant/codebook.h"

namespace tq::cuda {
namespace {

constexpr double kFloorBytesPerSecond = 3.0e12;
constexpr size_t kRotationBytes = 256u << 20;  // weights touched per timed sequence

#define CHECK_CUDA(expr)                                                                  \
  do {                                                                                    \
    const cudaError_t e_ = (expr);                                                        \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s failed: %s at %s:%d\n", #expr, cudaGetErrorString(e_), __FILE__, \
                   __LINE__);                                                             \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

#define CHECK_CUBLAS(expr)                                                              \
  do {                                                                                  \
    const cublasStatus_t s_ = (expr);                                                   \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                  \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cublasGetStatusString(s_));        \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

#define CHECK_OK(expr)                                                                  \
  do {                                                                                  \
    const absl::Status st_ = (expr);                                                    \
    if (!st_.ok()) {                                                                    \
      std::fprintf(stderr, "%s failed: %s\n", #expr, std::string(st_.message()).c_str()); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

int g_reps = 30;
cudaStream_t g_stream = nullptr;

// A pool of random bytes on the device, copied (tiled) into every buffer that needs data.
void* g_pool = nullptr;
size_t g_pool_bytes = 0;

void InitPool(size_t bytes) {
  std::vector<uint16_t> host(bytes / 2);
  std::mt19937 gen(12345);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& h : host) {  // BF16 N(0, 1) values; as TQ codes, arbitrary bytes
    const float f = nd(gen);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    h = static_cast<uint16_t>(u >> 16);
  }
  CHECK_CUDA(cudaMalloc(&g_pool, bytes));
  CHECK_CUDA(cudaMemcpy(g_pool, host.data(), bytes, cudaMemcpyHostToDevice));
  g_pool_bytes = bytes;
}

// Fills `bytes` at dst from the pool (BF16 N(0,1) values; as codes, arbitrary bytes).
void Fill(void* dst, size_t bytes, size_t offset = 0) {
  size_t done = 0;
  while (done < bytes) {
    const size_t off = (offset + done) % (g_pool_bytes / 2);
    const size_t chunk = std::min(bytes - done, g_pool_bytes - off);
    CHECK_CUDA(cudaMemcpy(static_cast<char*>(dst) + done, static_cast<char*>(g_pool) + off, chunk,
                          cudaMemcpyDeviceToDevice));
    done += chunk;
  }
}

void FillGains(float* dst, size_t count) {
  std::vector<float> host(std::min<size_t>(count, 1 << 20));
  std::mt19937 gen(99);
  std::uniform_real_distribution<float> u(0.1f, 2.0f);
  for (auto& v : host) v = u(gen);
  for (size_t done = 0; done < count; done += host.size()) {
    const size_t c = std::min(host.size(), count - done);
    CHECK_CUDA(cudaMemcpy(dst + done, host.data(), c * 4, cudaMemcpyHostToDevice));
  }
}

// The median time of one of `copies` launches replayed as a CUDA graph (graph_timer.h).
double TimeSequence(int copies, const std::function<void(int)>& enqueue) {
  return TimeGraphMedianUs(g_stream, copies, g_reps, enqueue);
}

int CopiesFor(size_t bytes) {
  return static_cast<int>(std::clamp<size_t>((kRotationBytes + bytes - 1) / bytes, 2, 64));
}

struct TqCopies {
  int bits;
  int64_t n, k;
  std::vector<uint8_t*> packed;
  std::vector<float*> gains;
  float* codebook = nullptr;
  size_t bytes_per_copy = 0;  // codes + gains
  TqCopies(int bits_, int64_t n_, int64_t k_) : bits(bits_), n(n_), k(k_) {
    const int64_t groups = TqCudaGroups(k);
    const size_t code_bytes = static_cast<size_t>(n) * groups * 16 * bits;
    const size_t gain_bytes = static_cast<size_t>(n) * groups * 4;
    bytes_per_copy = code_bytes + gain_bytes;
    const int copies = CopiesFor(bytes_per_copy);
    for (int c = 0; c < copies; ++c) {
      uint8_t* p;
      float* g;
      CHECK_CUDA(cudaMalloc(&p, code_bytes));
      CHECK_CUDA(cudaMalloc(&g, gain_bytes));
      Fill(p, code_bytes, c * 4096);
      FillGains(g, n * groups);
      packed.push_back(p);
      gains.push_back(g);
    }
    const std::vector<float>& cb = quant::GetCodebook(bits, 128).centroids;
    CHECK_CUDA(cudaMalloc(&codebook, cb.size() * 4));
    CHECK_CUDA(cudaMemcpy(codebook, cb.data(), cb.size() * 4, cudaMemcpyHostToDevice));
  }
  ~TqCopies() {
    for (auto* p : packed) cudaFree(p);
    for (auto* g : gains) cudaFree(g);
    cudaFree(codebook);
  }
  int copies() const { return static_cast<int>(packed.size()); }
  TqCudaWeights View(int c) const {
    TqCudaWeights w;
    w.packed = packed[c];
    w.gains = gains[c];
    w.codebook = codebook;
    w.n = n;
    w.k = k;
    w.bits = bits;
    return w;
  }
};

struct Bf16Copies {
  std::vector<void*> w;
  size_t bytes = 0;
  Bf16Copies(int64_t n, int64_t k) {
    bytes = static_cast<size_t>(n) * k * 2;
    const int copies = CopiesFor(bytes);
    for (int c = 0; c < copies; ++c) {
      void* p;
      CHECK_CUDA(cudaMalloc(&p, bytes));
      Fill(p, bytes, c * 4096);
      w.push_back(p);
    }
  }
  ~Bf16Copies() {
    for (void* p : w) cudaFree(p);
  }
};

struct Activations {
  void* x = nullptr;   // bf16 [m, k]
  float* y32 = nullptr;
  void* y16 = nullptr;  // bf16 [m, n]
  Activations(int64_t m, int64_t n, int64_t k) {
    CHECK_CUDA(cudaMalloc(&x, m * k * 2));
    Fill(x, m * k * 2, 777);
    CHECK_CUDA(cudaMalloc(&y32, m * n * 4));
    CHECK_CUDA(cudaMalloc(&y16, m * n * 2));
  }
  ~Activations() {
    cudaFree(x);
    cudaFree(y32);
    cudaFree(y16);
  }
};

cublasHandle_t g_cublas = nullptr;

void CublasGemm(const void* w, const void* x, void* y, int64_t m, int64_t n, int64_t k) {
  const float alpha = 1.0f, beta = 0.0f;
  CHECK_CUBLAS(cublasGemmEx(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                            static_cast<int>(m), static_cast<int>(k), &alpha, w, CUDA_R_16BF,
                            static_cast<int>(k), x, CUDA_R_16BF, static_cast<int>(k), &beta, y,
                            CUDA_R_16BF, static_cast<int>(n), CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

double TimeCublas(int64_t m, int64_t n, int64_t k) {
  Bf16Copies wc(n, k);
  Activations act(m, n, k);
  return TimeSequence(static_cast<int>(wc.w.size()),
                      [&](int c) { CublasGemm(wc.w[c], act.x, act.y16, m, n, k); });
}

// The engine's dense kernel (kernels/cuda/nn_ops.h DenseLinear: BF16 weights, fp32 x and y).
double TimeDense(int64_t m, int64_t n, int64_t k) {
  Bf16Copies wc(n, k);
  float* x;
  float* y;
  CHECK_CUDA(cudaMalloc(&x, m * k * 4));
  CHECK_CUDA(cudaMalloc(&y, m * n * 4));
  std::vector<float> h(m * k);
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : h) v = nd(rng);
  CHECK_CUDA(cudaMemcpy(x, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  const double us = TimeSequence(static_cast<int>(wc.w.size()), [&](int c) {
    CHECK_CUDA(DenseLinear(wc.w[c], DType::kBF16, n, k, x, k, m, nullptr, y, n, g_stream));
  });
  cudaFree(x);
  cudaFree(y);
  return us;
}

struct Shape {
  const char* model;
  const char* layer;
  int64_t n, k;
};

double TqBytes(int bits, int64_t m, int64_t n, int64_t k) {
  const int64_t groups = TqCudaGroups(k);
  return double(n) * groups * (16.0 * bits + 4.0) + 2.0 * m * k + 2.0 * m * n;
}

double Bf16Bytes(int64_t m, int64_t n, int64_t k) {
  return 2.0 * n * k + 2.0 * m * k + 2.0 * m * n;
}

TqLinearRunner* g_runner = nullptr;

// Times one TQ path (runner dispatch with `kernel`, optional mma config) on fresh copies.
double TimeTq(const TqCopies& wc, const Activations& act, int64_t m, TqKernel kernel,
              const TqMmaConfig* cfg, const TqGemmConfig* gemm = nullptr) {
  CHECK_OK(g_runner->Reserve(wc.View(0), m, kernel, cfg, g_stream, gemm));
  return TimeSequence(wc.copies(), [&](int c) {
    CHECK_OK(g_runner->Run(wc.View(c), act.x, TqActType::kBF16, m, wc.k, nullptr,
                           static_cast<uint16_t*>(act.y16), wc.n, g_stream, kernel, cfg, gemm));
  });
}

std::string CfgName(int64_t m, const TqCopies& wc, const TqMmaConfig& c) {
  const TqMmaConfig n = NormalizeTqMmaConfig(m, wc.n, wc.k, wc.bits, c);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "nt%d s%d %s %zuKB", n.n_tiles, n.splits,
                c.fused_rotation ? "fused" : "sep",
                TqMmaSharedBytes(m, wc.n, wc.k, wc.bits, n) / 1024);
  return buf;
}

void ModelShapes(bool quick) {
  const Shape shapes[] = {
      {"Llama-3-8B", "q/o", 4096, 4096},     {"Llama-3-8B", "k/v", 1024, 4096},
      {"Llama-3-8B", "gate/up", 14336, 4096}, {"Llama-3-8B", "down", 4096, 14336},
      {"Qwen3-8B", "gate/up", 12288, 4096},  {"Qwen3-8B", "down", 4096, 12288},
      {"Qwen3-32B", "q", 8192, 5120},        {"Qwen3-32B", "k/v", 1024, 5120},
      {"Qwen3-32B", "o", 5120, 8192},        {"Qwen3-32B", "gate/up", 25600, 5120},
      {"Qwen3-32B", "down", 5120, 25600},    {"Llama-70B", "q/o", 8192, 8192},
      {"Llama-70B", "k/v", 1024, 8192},      {"Llama-70B", "gate/up", 28672, 8192},
      {"Llama-70B", "down", 8192, 28672},
  };
  std::printf("\n== m = 1: TQ (fused rotation, planned tiling) vs cuBLAS BF16 ==\n");
  std::printf("Qwen3-8B q/o (4096x4096) and k/v (1024x4096) are Llama-3-8B's shapes.\n");
  std::printf("%-10s %-7s %6s %6s | %9s %7s | %4s %9s %7s %8s %7s | %s\n", "model", "layer", "N",
              "K", "cuBLAS us", "GB/s", "bits", "TQ us", "GB/s", "floor us", "speedup",
              "TQ3: int8 GEMV, mma plan and best variant");
  for (const Shape& s : shapes) {
    const int64_t m = 1;
    const double cub = TimeCublas(m, s.n, s.k);
    Activations act(m, s.n, s.k);
    for (int bits : {2, 3, 4}) {
      if (quick && bits != 3) continue;
      TqCopies wc(bits, s.n, s.k);
      const double t = TimeTq(wc, act, m, TqKernel::kMmaFused, nullptr);
      std::string best;
      if (bits == 3) {  // the opt-in int8-activation GEMV (its int8 rotation kernel included)
        const double t8 = TimeTq(wc, act, m, TqKernel::kInt8Gemv, nullptr);
        char buf[64];
        std::snprintf(buf, sizeof(buf), "int8 %.2f us (%.2fx); ", t8, cub / t8);
        best = buf;
      }
      if (bits == 3 && !quick) {
        // Variants: tiling and split grid, fused and separate rotation.
        double best_t = 1e30;
        std::string best_cfg;
        for (int nt : {1, 2}) {
          for (int sp : {1, 2, 4}) {
            for (bool fused : {true, false}) {
              TqMmaConfig c;
              c.n_tiles = nt;
              c.splits = sp;
              c.fused_rotation = fused;
              const double tv =
                  TimeTq(wc, act, m, fused ? TqKernel::kMmaFused : TqKernel::kMmaSeparate, &c);
              if (tv < best_t) {
                best_t = tv;
                best_cfg = CfgName(m, wc, c);
              }
            }
          }
        }
        char buf[64];
        std::snprintf(buf, sizeof(buf), " %.2f us (%.2fx)", best_t, cub / best_t);
        best_cfg += buf;
        TqMmaConfig plan = PlanTqMma(m, s.n, s.k, bits, g_runner->multiprocessors());
        best += "plan " + CfgName(m, wc, plan) + "; best " + best_cfg;
      }
      const double bytes = TqBytes(bits, m, s.n, s.k);
      std::printf("%-10s %-7s %6lld %6lld | %9.2f %7.0f | TQ%d %9.2f %7.0f %8.2f %6.2fx | %s\n",
                  s.model, s.layer, static_cast<long long>(s.n), static_cast<long long>(s.k), cub,
                  Bf16Bytes(m, s.n, s.k) / cub * 1e-3, bits, t, bytes / t * 1e-3,
                  bytes / kFloorBytesPerSecond * 1e6, cub / t, best.c_str());
      std::fflush(stdout);
    }
  }
}

std::string GemmName(int64_t m, const TqCopies& wc, const TqGemmConfig& c) {
  const TqGemmConfig n = NormalizeTqGemmConfig(m, wc.n, wc.k, c);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "bm%d s%d", n.bm, n.splits);
  return buf;
}

void MSweep(int64_t n, int64_t k, int bits, bool quick) {
  std::printf("\n== m sweep, TQ%d, N=%lld K=%lld: TQ paths vs cuBLAS BF16 (us; speedup = cuBLAS / best TQ) ==\n",
              bits, static_cast<long long>(n), static_cast<long long>(k));
  std::printf("%5s | %9s | %9s %9s %9s %9s %9s | %-14s %7s | %s\n", "m", "cuBLAS", "mma_fused",
              "mma_sep", "gemm", "deq+cuBLAS", "dequant", "best", "speedup",
              "planned tiling; gemm variants");
  TqCopies wc(bits, n, k);
  for (int64_t m : {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}) {
    if (quick && m != 1 && m != 16 && m != 256) continue;
    const double cub = TimeCublas(m, n, k);
    Activations act(m, n, k);
    const double fused = m <= 16 ? TimeTq(wc, act, m, TqKernel::kMmaFused, nullptr) : 0.0;
    const double sep = m <= 64 ? TimeTq(wc, act, m, TqKernel::kMmaSeparate, nullptr) : 1e30;
    const double gemm = m >= 2 ? TimeTq(wc, act, m, TqKernel::kGemm, nullptr) : 1e30;
    std::string gemm_variants;
    if (m >= 8 && m <= 256 && !quick) {
      for (int bm : {64, 128}) {
        for (int sp : {1, 2, 4, 8}) {
          const TqGemmConfig c{bm, sp};
          const double t = TimeTq(wc, act, m, TqKernel::kGemm, nullptr, &c);
          char buf[48];
          std::snprintf(buf, sizeof(buf), " %s=%.1f", GemmName(m, wc, c).c_str(), t);
          gemm_variants += buf;
        }
      }
    }
    const double deq = TimeTq(wc, act, m, TqKernel::kDequantCublas, nullptr);
    // The dequantization alone (bf16 weight written once).
    void* wbuf;
    CHECK_CUDA(cudaMalloc(&wbuf, n * k * 2));
    const double dq_only = TimeSequence(wc.copies(), [&](int c) {
      CHECK_CUDA(LaunchTqDequantize(wc.View(c), nullptr, static_cast<uint16_t*>(wbuf), k, g_stream));
    });
    CHECK_CUDA(cudaFree(wbuf));
    double best = sep;
    const char* best_name = "mma_separate";
    if (fused > 0 && fused < best) best = fused, best_name = "mma_fused";
    if (gemm < best) best = gemm, best_name = "gemm";
    if (deq < best) best = deq, best_name = "dequant_cublas";
    TqMmaConfig plan = PlanTqMma(m, n, k, bits, g_runner->multiprocessors());
    std::printf("%5lld | %9.2f | %9.2f %9.2f %9.2f %9.2f %9.2f | %-14s %6.2fx | %s; gemm plan %s (dispatch: %s);%s\n",
                static_cast<long long>(m), cub, fused, sep < 1e29 ? sep : 0.0,
                gemm < 1e29 ? gemm : 0.0, deq, dq_only, best_name, cub / best,
                CfgName(m, wc, plan).c_str(),
                GemmName(m, wc, g_runner->GemmConfigFor(wc.View(0), m)).c_str(),
                TqKernelName(g_runner->KernelFor(wc.View(0), m)), gemm_variants.c_str());
    std::fflush(stdout);
  }
}

void CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a, *b;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  Fill(a, bytes);
  const double us = TimeSequence(2, [&](int) {
    CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, g_stream));
  });
  std::printf("device-to-device copy of 1 GiB: %.1f us, %.0f GB/s (read + write)\n", us,
              2.0 * bytes / us * 1e-3);
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
}

void RotateTiming() {
  std::printf("\n== separate rotation kernel alone (bf16 x -> fp16 x_rot + scales) ==\n");
  for (int64_t k : {4096, 14336, 28672}) {
    for (int64_t m : {1, 16}) {
      void* x;
      void* xh;
      float* sc;
      CHECK_CUDA(cudaMalloc(&x, m * k * 2));
      CHECK_CUDA(cudaMalloc(&xh, m * TqCudaPaddedK(k) * 2));
      CHECK_CUDA(cudaMalloc(&sc, m * TqCudaGroups(k) * 4));
      Fill(x, m * k * 2);
      const double us = TimeSequence(16, [&](int) {
        CHECK_CUDA(LaunchTqRotateInput(x, TqActType::kBF16, m, k, k, 0, nullptr,
                                       static_cast<uint16_t*>(xh), sc, g_stream));
      });
      std::printf("m=%lld k=%lld: %.2f us\n", static_cast<long long>(m), static_cast<long long>(k),
                  us);
      cudaFree(x);
      cudaFree(xh);
      cudaFree(sc);
    }
  }
}

// Where an m = 1 TQ3 launch of the 8B engine's shapes spends its time: the planned kernel with
// its rotation fused in every CTA (the engine's path), the same tiling with the rotation done
// once before the timed launches (x_rot given: what a producer kernel writing x_rot would leave),
// the rotation kernel alone, and the fused kernel on fewer CTAs (the prologue runs per CTA).
void DecodeBreakdown() {
  std::printf("\n== m = 1 TQ3 decode breakdown, 8B engine shapes (us per launch) ==\n");
  std::printf("%-14s %6s %6s | %8s %10s %8s | %9s %9s | %8s %8s | %8s %8s\n", "layer", "N", "K", "fused",
              "x_rot given", "rotate", "fused 1/SM", "fused 2/SM", "cuBLAS", "ours BF16", "int8", "no PDL");
  const Shape shapes[] = {{"Llama-3-8B", "qkv", 6144, 4096},
                          {"Llama-3-8B", "o", 4096, 4096},
                          {"Llama-3-8B", "gate|up", 28672, 4096},
                          {"Llama-3-8B", "down", 4096, 14336}};
  double sum[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (const Shape& s : shapes) {
    const int64_t m = 1;
    TqCopies wc(3, s.n, s.k);
    Activations act(m, s.n, s.k);
    const TqMmaConfig plan = PlanTqMma(m, s.n, s.k, 3, g_runner->multiprocessors());
    const double fused = TimeTq(wc, act, m, TqKernel::kMmaFused, nullptr);
    // x_rot once, outside the timed sequence.
    uint16_t* xh;
    float* xs;
    CHECK_CUDA(cudaMalloc(&xh, TqCudaPaddedK(s.k) * 2));
    CHECK_CUDA(cudaMalloc(&xs, TqCudaGroups(s.k) * 4));
    CHECK_CUDA(LaunchTqRotateInput(act.x, TqActType::kBF16, m, s.k, s.k, 0, nullptr, xh, xs, g_stream));
    TqMmaConfig sep = plan;
    sep.fused_rotation = false;
    const size_t ws_bytes = std::max<size_t>(TqMmaWorkspaceBytes(m, s.n, s.k, 3, sep), 16);
    void* ws;
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
    CHECK_CUDA(cudaMemset(ws, 0, ws_bytes));
    const double given = TimeSequence(wc.copies(), [&](int c) {
      TqMmaArgs a;
      a.w = wc.View(c);
      a.m = m;
      a.x_rot_f16 = xh;
      a.x_scale = xs;
      a.y_bf16 = static_cast<uint16_t*>(act.y16);
      a.ldy = s.n;
      a.workspace = ws;
      a.workspace_bytes = ws_bytes;
      CHECK_CUDA(LaunchTqLinearMma(a, sep, g_stream));
    });
    const double rotate = TimeSequence(16, [&](int) {
      CHECK_CUDA(LaunchTqRotateInput(act.x, TqActType::kBF16, m, s.k, s.k, 0, nullptr, xh, xs, g_stream));
    });
    double per_sm[2];
    for (int occ : {1, 2}) {
      TqMmaConfig c = plan;
      c.ctas = occ * g_runner->multiprocessors();
      per_sm[occ - 1] = TimeTq(wc, act, m, TqKernel::kMmaFused, &c);
    }
    const double cub = TimeCublas(m, s.n, s.k);
    const double dense = TimeDense(m, s.n, s.k);
    const double int8 = TimeTq(wc, act, m, TqKernel::kInt8Gemv, nullptr);
    g_runner->set_programmatic_launch(false);
    const double int8_plain = TimeTq(wc, act, m, TqKernel::kInt8Gemv, nullptr);
    g_runner->set_programmatic_launch(true);
    std::printf("%-14s %6lld %6lld | %8.2f %10.2f %8.2f | %9.2f %9.2f | %8.2f %8.2f | %8.2f %8.2f\n", s.layer,
                static_cast<long long>(s.n), static_cast<long long>(s.k), fused, given, rotate,
                per_sm[0], per_sm[1], cub, dense, int8, int8_plain);
    const double v[9] = {fused, given, rotate, per_sm[0], per_sm[1], cub, dense, int8, int8_plain};
    for (int i = 0; i < 9; ++i) sum[i] += v[i];
    cudaFree(xh);
    cudaFree(xs);
    cudaFree(ws);
  }
  std::printf("%-14s %13s | %8.2f %10.2f %8.2f | %9.2f %9.2f | %8.2f %8.2f | %8.2f %8.2f  (x 32 layers = ms per "
              "token: fused %.2f, x_rot given %.2f, cuBLAS %.2f, ours BF16 %.2f, int8 %.2f)\n",
              "one layer", "", sum[0], sum[1], sum[2], sum[3], sum[4], sum[5], sum[6], sum[7], sum[8], sum[0] * 32e-3,
              sum[1] * 32e-3, sum[5] * 32e-3, sum[6] * 32e-3, sum[7] * 32e-3);
  // The lm_head stays BF16 in TQ checkpoints: the engine's dense kernel against cuBLAS.
  const int64_t vocab = 128256, hidden = 4096;
  std::printf("lm_head %lld x %lld BF16, m = 1: cuBLAS %.2f us, ours %.2f us\n", static_cast<long long>(vocab),
              static_cast<long long>(hidden), TimeCublas(1, vocab, hidden), TimeDense(1, vocab, hidden));
}

// --only N K BITS M: 20 plain launches of the planned kernel (for a profiler), then exit.
// With TQ_ONLY_KERNEL=<TqKernel number> that path instead of the dispatched one.
void Only(int64_t n, int64_t k, int bits, int64_t m) {
  TqCopies wc(bits, n, k);
  Activations act(m, n, k);
  const char* force = std::getenv("TQ_ONLY_KERNEL");
  const TqKernel kernel = force != nullptr ? static_cast<TqKernel>(std::atoi(force))
                                           : TqKernel::kUnsupported;
  for (int i = 0; i < 20; ++i) {
    CHECK_OK(g_runner->Run(wc.View(i % wc.copies()), act.x, TqActType::kBF16, m, k, nullptr,
                           static_cast<uint16_t*>(act.y16), n, g_stream, kernel));
  }
  CHECK_CUDA(cudaStreamSynchronize(g_stream));
  std::printf("ran TQ%d m=%lld %lldx%lld (%s) 20 times\n", bits, static_cast<long long>(m),
              static_cast<long long>(n), static_cast<long long>(k),
              CfgName(m, wc, PlanTqMma(m, n, k, bits, g_runner->multiprocessors())).c_str());
}

int Main(int argc, char** argv) {
  bool quick = false, msweep_only = false, breakdown_only = false;
  int64_t only[4] = {0, 0, 0, 0};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--msweep") == 0) msweep_only = true;
    if (std::strcmp(argv[i], "--decode-breakdown") == 0) breakdown_only = true;
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) g_reps = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--only") == 0 && i + 4 < argc) {
      for (int j = 0; j < 4; ++j) only[j] = std::atoll(argv[++i]);
    }
  }
  const std::string reason = GpuUnavailableReason();
  if (!reason.empty()) {
    std::printf("no GPU: %s\n", reason.c_str());
    return 0;
  }
  auto info = GetDeviceInfo(0);
  if (!info.ok()) return 1;
  int clock_khz = 0, mem_clock_khz = 0, l2 = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, 0);
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
  std::printf("device 0: %s, sm_%d%d, %d SMs, L2 %d MB, %.1f GB; reps %d (median)\n",
              info->name.c_str(), info->sm_major, info->sm_minor, info->multiprocessors,
              l2 >> 20, info->total_memory_bytes / 1e9, g_reps);
  CHECK_CUDA(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  auto runner = TqLinearRunner::Create(0);
  if (!runner.ok()) {
    std::fprintf(stderr, "%s\n", std::string(runner.status().message()).c_str());
    return 1;
  }
  g_runner = runner->get();
  CHECK_CUBLAS(cublasCreate(&g_cublas));
  void* cublas_ws;
  CHECK_CUDA(cudaMalloc(&cublas_ws, 32u << 20));
  CHECK_CUBLAS(cublasSetWorkspace(g_cublas, cublas_ws, 32u << 20));
  CHECK_CUBLAS(cublasSetStream(g_cublas, g_stream));
  InitPool(64u << 20);
  if (only[0] > 0) {
    Only(only[0], only[1], static_cast<int>(only[2]), only[3]);
    return 0;
  }
  CopyBandwidth();
  if (breakdown_only) {
    DecodeBreakdown();
    return 0;
  }
  if (!msweep_only) ModelShapes(quick);
  MSweep(4096, 4096, 3, quick);
  MSweep(14336, 4096, 3, quick);
  if (!quick) {
    MSweep(4096, 14336, 3, true);
    MSweep(4096, 4096, 4, true);
    MSweep(4096, 4096, 2, true);
  }
  if (!quick) RotateTiming();
  if (!msweep_only) DecodeBreakdown();
  cublasDestroy(g_cublas);
  return 0;
}

}  // namespace
}  // namespace tq::cuda

int main(int argc, char** argv) { return tq::cuda::Main(argc, argv); }

#else

int main() {
  std::printf("built without CUDA: %s\n", tq::cuda::GpuUnavailableReason().c_str());
  return 0;
}

#endif
