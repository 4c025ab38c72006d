// Microbenchmarks of the TQ CPU reference kernels (Google Benchmark). Throughput is reported in
// bytes of BF16 input (2 bytes per weight), the unit of the compression target.
//   bazel run -c opt //kernels/quant:tq_quantize_benchmark
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "kernels/quant/packing.h"
#include "kernels/quant/tq_quantize.h"

namespace tq::quant {
namespace {

constexpr int64_t kRows = 1024, kCols = 4096;

std::vector<float> Weights() {
  std::mt19937 gen(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> w(kRows * kCols);
  for (auto& v : w) v = nd(gen);
  return w;
}

void BM_Quantize(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const auto gain = static_cast<GainMode>(state.range(1));
  auto q = TqQuantizer::Create({.bits = bits, .group_size = 128, .gain = gain});
  const std::vector<float> w = Weights();
  std::vector<uint8_t> packed(q->PackedSize(kRows, kCols));
  std::vector<float> gains(q->GainsSize(kRows, kCols));
  for (auto _ : state) {
    q->QuantizeRows(w.data(), kRows, kCols, packed.data(), gains.data());
    benchmark::DoNotOptimize(packed.data());
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * 2);
  state.SetLabel(absl::StrCat("TQ", bits, " ", GainModeName(gain), " ", QuantKernelIsa()));
}
BENCHMARK(BM_Quantize)
    ->Args({2, 1})
    ->Args({3, 1})
    ->Args({4, 1})
    ->Args({3, 2})
    ->Args({3, 0})
    ->Unit(benchmark::kMillisecond);

void BM_Dequantize(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  auto q = TqQuantizer::Create({.bits = bits, .group_size = 128});
  const std::vector<float> w = Weights();
  std::vector<uint8_t> packed(q->PackedSize(kRows, kCols));
  std::vector<float> gains(q->GainsSize(kRows, kCols));
  q->QuantizeRows(w.data(), kRows, kCols, packed.data(), gains.data());
  std::vector<float> out(w.size());
  for (auto _ : state) {
    q->DequantizeRows(packed.data(), gains.data(), kRows, kCols, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * 2);
}
BENCHMARK(BM_Dequantize)->Arg(2)->Arg(3)->Arg(4)->Unit(benchmark::kMillisecond);

void BM_Pack(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  std::vector<uint8_t> idx(1 << 20), out(PackedBytes(bits, idx.size()));
  std::mt19937 gen(2);
  for (auto& v : idx) v = gen() % (1u << bits);
  for (auto _ : state) {
    PackIndices(idx.data(), idx.size(), bits, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * idx.size());
}
BENCHMARK(BM_Pack)->Arg(2)->Arg(3)->Arg(4);

void BM_Unpack(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  std::vector<uint8_t> idx(1 << 20), packed(PackedBytes(bits, idx.size()));
  for (auto _ : state) {
    UnpackIndices(packed.data(), idx.size(), bits, idx.data());
    benchmark::DoNotOptimize(idx.data());
  }
  state.SetItemsProcessed(state.iterations() * idx.size());
}
BENCHMARK(BM_Unpack)->Arg(2)->Arg(3)->Arg(4);

}  // namespace
}  // namespace tq::quant

BENCHMARK_MAIN();
