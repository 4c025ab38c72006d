// Single-thread benchmarks of the CPU linear kernels (kernels/cpu/linear.h): TQ3 (G = 128, full
// rotation, TqRotateInput included) against BF16 DenseLinear on Llama-3-8B projection shapes, for
// decode (m = 1) and a small batch (m = 8).
//   bazel run -c opt //kernels/cpu:linear_benchmark
//
// Throughput is reported as bytes of weights streamed per second (TQ3: packed codes + float32
// gains, 3.25 bits per weight; BF16: 16 bits per weight) and as weights per second.
// With dram:1 every iteration reads a different copy of the weights, with at least kColdBytes of
// copies in all, so the weights come from DRAM as in a real forward pass (a layer's weights are
// long evicted when it runs again). dram:0 reuses one copy of a 1024x4096 matrix, which stays in
// the last-level cache: a kernel that runs as fast from DRAM as from L3 is compute-bound.
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/linear.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/tq_quantize.h"

namespace tq::cpu {
namespace {

constexpr int kBits = 3;
constexpr int kGroup = 128;
constexpr int64_t kColdBytes = int64_t{512} << 20;  // >> the 32 MiB L3 of the test machine

struct Shape {
  int64_t n, k;
};
// The three Llama-3-8B shapes, then a small one whose weights fit the 32 MiB L3 in both
// encodings (TQ3 1.7 MB, BF16 8 MB), for the one-copy runs.
constexpr Shape kShapes[] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {1024, 4096}};

// One weight matrix in both encodings, replicated `copies` times. Built once per shape.
struct Weights {
  Shape shape;
  int copies_tq = 1, copies_bf16 = 1;
  int64_t packed_bytes = 0, gains_count = 0;
  std::vector<uint8_t> packed;   // copies_tq × packed_bytes
  std::vector<float> gains;      // copies_tq × gains_count
  std::vector<uint16_t> bf16;    // copies_bf16 × n·k
  int64_t TqBytes() const { return packed_bytes + gains_count * 4; }
  int64_t Bf16Bytes() const { return shape.n * shape.k * 2; }
};

const Weights& GetWeights(int shape_index) {
  static std::map<int, std::unique_ptr<Weights>> cache;  // benchmarks run one at a time
  auto& slot = cache[shape_index];
  if (slot) return *slot;
  cache.clear();  // keep one shape's copies in memory
  auto& w = cache[shape_index];
  w = std::make_unique<Weights>();
  const Shape s = kShapes[shape_index];
  w->shape = s;
  std::vector<float> src(s.n * s.k);
  std::mt19937 gen(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (float& v : src) v = nd(gen);

  auto q = quant::TqQuantizer::Create({.bits = kBits, .group_size = kGroup});
  w->packed_bytes = q->PackedSize(s.n, s.k);
  w->gains_count = q->GainsSize(s.n, s.k);
  w->copies_tq = static_cast<int>(std::max<int64_t>(2, kColdBytes / w->TqBytes()));
  w->copies_bf16 = static_cast<int>(std::max<int64_t>(2, kColdBytes / w->Bf16Bytes()));
  w->packed.resize(w->copies_tq * w->packed_bytes);
  w->gains.resize(w->copies_tq * w->gains_count);
  q->QuantizeRows(src.data(), s.n, s.k, w->packed.data(), w->gains.data());
  for (int c = 1; c < w->copies_tq; ++c) {
    std::memcpy(w->packed.data() + c * w->packed_bytes, w->packed.data(), w->packed_bytes);
    std::memcpy(w->gains.data() + c * w->gains_count, w->gains.data(), w->gains_count * 4);
  }
  const int64_t nk = s.n * s.k;
  w->bf16.resize(w->copies_bf16 * nk);
  for (int64_t i = 0; i < nk; ++i) w->bf16[i] = FloatToBf16(src[i]);
  for (int c = 1; c < w->copies_bf16; ++c) {
    std::memcpy(w->bf16.data() + c * nk, w->bf16.data(), nk * 2);
  }
  return *w;
}

std::vector<float> Activations(int64_t m, int64_t k) {
  std::mt19937 gen(2);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(m * k);
  for (float& v : x) v = nd(gen);
  return x;
}

void SetCounters(benchmark::State& state, const Weights& w, int64_t weight_bytes, int copies) {
  state.SetBytesProcessed(state.iterations() * weight_bytes);
  state.counters["weights/s"] = benchmark::Counter(
      static_cast<double>(w.shape.n * w.shape.k), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(absl::StrCat(w.shape.n, "x", w.shape.k, " ", LinearKernelIsa(),
                              copies > 1 ? " dram" : " one copy"));
}

// Args: shape index, m, cold (1: cycle through copies; 0: one copy).
void BM_Tq3Linear(benchmark::State& state) {
  const Weights& w = GetWeights(static_cast<int>(state.range(0)));
  const int64_t m = state.range(1);
  const int copies = state.range(2) ? w.copies_tq : 1;
  const Shape s = w.shape;
  const std::vector<float> x = Activations(m, s.k);
  std::vector<float> x_rot(m * TqPaddedK(s.k, kGroup));
  std::vector<float> y(m * s.n);
  TqLinearParams p{.codebook = quant::GetCodebook(kBits, kGroup).centroids.data(),
                   .n = s.n,
                   .k = s.k,
                   .bits = kBits,
                   .group_size = kGroup};
  int c = 0;
  for (auto _ : state) {
    p.packed = w.packed.data() + c * w.packed_bytes;
    p.gains = w.gains.data() + c * w.gains_count;
    c = c + 1 == copies ? 0 : c + 1;
    TqRotateInput(x.data(), m, s.k, s.k, kGroup, 0, x_rot.data());
    TqLinear(p, x_rot.data(), m, y.data(), s.n, 0, s.n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  SetCounters(state, w, w.TqBytes(), copies);
}

void BM_Bf16Linear(benchmark::State& state) {
  const Weights& w = GetWeights(static_cast<int>(state.range(0)));
  const int64_t m = state.range(1);
  const int copies = state.range(2) ? w.copies_bf16 : 1;
  const Shape s = w.shape;
  const std::vector<float> x = Activations(m, s.k);
  std::vector<float> y(m * s.n);
  int c = 0;
  for (auto _ : state) {
    const uint16_t* wc = w.bf16.data() + c * s.n * s.k;
    c = c + 1 == copies ? 0 : c + 1;
    DenseLinear(WeightType::kBF16, wc, s.n, s.k, x.data(), m, s.k, y.data(), s.n, 0, s.n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  SetCounters(state, w, w.Bf16Bytes(), copies);
}

// The m > 1 micro-kernel alone: float32 weights and activations resident in L2, so nothing but
// the FMAs (and the horizontal sums) limits it. Its MAC/s is the compute ceiling of the m > 1
// path on this CPU.
void BM_F32LinearInL2(benchmark::State& state) {
  const int64_t n = 96, k = 1024, m = state.range(0);
  std::vector<float> w = Activations(n, k), x = Activations(m, k), y(m * n);
  for (auto _ : state) {
    DenseLinear(WeightType::kF32, w.data(), n, k, x.data(), m, k, y.data(), n, 0, n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(n * k * m),
                                               benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(absl::StrCat(n, "x", k, " ", LinearKernelIsa()));
}
BENCHMARK(BM_F32LinearInL2)->ArgName("m")->Arg(8)->Arg(64)->Unit(benchmark::kMicrosecond);

// The m = 1 decode rate by bit width: a 1024x4096 matrix whose codes stay in L2/L3, so only the
// kernel's own instructions limit it (G = 128, full rotation, TqRotateInput included).
void BM_TqGemvInCache(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const int64_t n = 1024, k = 4096;
  auto q = quant::TqQuantizer::Create({.bits = bits, .group_size = kGroup});
  const std::vector<float> w = Activations(n, k), x = Activations(1, k);
  std::vector<uint8_t> packed(q->PackedSize(n, k));
  std::vector<float> gains(q->GainsSize(n, k)), x_rot(TqPaddedK(k, kGroup)), y(n);
  q->QuantizeRows(w.data(), n, k, packed.data(), gains.data());
  const TqLinearParams p{.packed = packed.data(),
                         .gains = gains.data(),
                         .codebook = quant::GetCodebook(bits, kGroup).centroids.data(),
                         .n = n,
                         .k = k,
                         .bits = bits,
                         .group_size = kGroup};
  for (auto _ : state) {
    TqRotateInput(x.data(), 1, k, k, kGroup, 0, x_rot.data());
    TqLinear(p, x_rot.data(), 1, y.data(), n, 0, n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * (packed.size() + gains.size() * 4));
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n * k),
                                                   benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(absl::StrCat("TQ", bits, " ", n, "x", k, " ", LinearKernelIsa()));
}
BENCHMARK(BM_TqGemvInCache)->ArgName("bits")->Arg(2)->Arg(3)->Arg(4)->Unit(benchmark::kMicrosecond);

// Registered shape by shape so each shape's weights are built once.
void RegisterAll() {
  for (int shape = 0; shape < 3; ++shape) {  // the Llama shapes, weights from DRAM
    for (int64_t m : {1, 8}) {
      for (auto* fn : {BM_Tq3Linear, BM_Bf16Linear}) {
        const char* name = fn == BM_Tq3Linear ? "BM_Tq3Linear" : "BM_Bf16Linear";
        benchmark::RegisterBenchmark(name, fn)
            ->Args({shape, m, 1})
            ->ArgNames({"shape", "m", "dram"})
            ->Unit(benchmark::kMillisecond)
            ->MinTime(1.0);
      }
    }
  }
  // Weights in L3 vs from DRAM: which of the two a kernel is limited by.
  for (int64_t dram : {0, 1}) {
    for (auto* fn : {BM_Tq3Linear, BM_Bf16Linear}) {
      const char* name = fn == BM_Tq3Linear ? "BM_Tq3Linear" : "BM_Bf16Linear";
      benchmark::RegisterBenchmark(name, fn)
          ->Args({3, 1, dram})
          ->ArgNames({"shape", "m", "dram"})
          ->Unit(benchmark::kMillisecond)
          ->MinTime(1.0);
    }
  }
}

}  // namespace
}  // namespace tq::cpu

int main(int argc, char** argv) {
  tq::cpu::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
