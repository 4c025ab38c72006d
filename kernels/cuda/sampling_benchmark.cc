// sampling_benchmark: the device sampler's time per launch (kernels/cuda/sampling.h) for
// vocabulary-sized rows, batch 1 and 8, per setting and logit distribution.
//
//   bazel build --define cuda_archs=hopper //kernels/cuda:sampling_benchmark
//   sampling_benchmark [VOCAB ...]      (default 128256 151936)
//
// The sampler writes logits / t into its rows, so every timed launch first restores the rows
// from a pristine copy (a device-to-device copy); that copy alone is timed too and subtracted.
// Distributions: "flat" N(0, 1) logits (a random-weight model: the top-p nucleus holds most of
// the vocabulary) and "peaked" N(0, 3) plus one logit 12 above the rest's maximum region (a
// trained model's typical shape: a few likely tokens).
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/cuda/graph_timer.h"
#include "kernels/cuda/sampling.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

namespace {

using tq::cuda::GraphTimerCheck;

struct Setting {
  const char* name;
  float t;
  int k;
  float top_p, min_p;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string why = tq::cuda::GpuUnavailableReason();
  if (!why.empty()) {
    std::printf("skipped: %s\n", why.c_str());
    return 0;
  }
  std::vector<int64_t> vocabs;
  for (int i = 1; i < argc; ++i) vocabs.push_back(std::atoll(argv[i]));
  if (vocabs.empty()) vocabs = {128256, 151936};
  const Setting settings[] = {{"greedy", 0.0f, 0, 1.0f, 0.0f},
                              {"temperature 1", 1.0f, 0, 1.0f, 0.0f},
                              {"t 0.7, top-k 50", 0.7f, 50, 1.0f, 0.0f},
                              {"t 0.8, top-p 0.9", 0.8f, 0, 0.9f, 0.0f},
                              {"t 0.8, top-p 0.5", 0.8f, 0, 0.5f, 0.0f},
                              {"t 1, min-p 0.05", 1.0f, 0, 1.0f, 0.05f},
                              {"t 0.7, top-k 50, top-p 0.9", 0.7f, 50, 0.9f, 0.0f}};
  cudaStream_t st;
  GraphTimerCheck(cudaStreamCreate(&st), "cudaStreamCreate");
  std::printf("%-28s %8s %6s | %10s %10s | %10s %10s  (us per launch, copy subtracted)\n", "setting", "vocab", "",
              "flat bs1", "flat bs8", "peaked bs1", "peaked bs8");
  for (int64_t vocab : vocabs) {
    const int max_rows = 8;
    std::vector<float> flat(max_rows * vocab), peaked(max_rows * vocab);
    std::mt19937 gen(1);
    std::normal_distribution<float> n1(0.0f, 1.0f), n3(0.0f, 3.0f);
    for (float& v : flat) v = n1(gen);
    for (int64_t i = 0; i < max_rows * vocab; ++i) peaked[i] = n3(gen);
    for (int r = 0; r < max_rows; ++r) peaked[r * vocab + (gen() % vocab)] = 30.0f;
    float *d_src[2], *d_rows;
    GraphTimerCheck(cudaMalloc(reinterpret_cast<void**>(&d_src[0]), flat.size() * 4), "cudaMalloc");
    GraphTimerCheck(cudaMalloc(reinterpret_cast<void**>(&d_src[1]), flat.size() * 4), "cudaMalloc");
    GraphTimerCheck(cudaMalloc(reinterpret_cast<void**>(&d_rows), flat.size() * 4), "cudaMalloc");
    GraphTimerCheck(cudaMemcpy(d_src[0], flat.data(), flat.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    GraphTimerCheck(cudaMemcpy(d_src[1], peaked.data(), peaked.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    tq::cuda::SampleRowParams* d_params;
    tq::cuda::SampleRowResult* d_out;
    int32_t* d_masked;
    GraphTimerCheck(cudaMalloc(reinterpret_cast<void**>(&d_params), max_rows * sizeof(tq::cuda::SampleRowParams)), "cudaMalloc");
    GraphTimerCheck(cudaMalloc(reinterpret_cast<void**>(&d_out), max_rows * sizeof(tq::cuda::SampleRowResult)), "cudaMalloc");
    GraphTimerCheck(cudaMalloc(reinterpret_cast<void**>(&d_masked), 4), "cudaMalloc");
    for (const Setting& s : settings) {
      std::vector<tq::cuda::SampleRowParams> p(max_rows);
      for (int r = 0; r < max_rows; ++r) {
        p[r].temperature = s.t;
        p[r].top_k = s.k;
        p[r].top_p = s.top_p;
        p[r].min_p = s.min_p;
        p[r].key = 1000 + r;
        p[r].index = 7;
      }
      GraphTimerCheck(cudaMemcpy(d_params, p.data(), p.size() * sizeof(p[0]), cudaMemcpyHostToDevice), "cudaMemcpy");
      double us[2][2];
      for (int dist = 0; dist < 2; ++dist) {
        for (int b = 0; b < 2; ++b) {
          const int rows = b == 0 ? 1 : 8;
          const size_t bytes = static_cast<size_t>(rows) * vocab * 4;
          const double both = tq::cuda::TimeGraphMedianUs(st, 20, 15, [&](int) {
            GraphTimerCheck(cudaMemcpyAsync(d_rows, d_src[dist], bytes, cudaMemcpyDeviceToDevice, st), "copy");
            GraphTimerCheck(tq::cuda::SampleRows(d_rows, vocab, rows, vocab, d_params, d_masked, d_out, st),
                            "SampleRows");
          });
          const double copy = tq::cuda::TimeGraphMedianUs(st, 20, 15, [&](int) {
            GraphTimerCheck(cudaMemcpyAsync(d_rows, d_src[dist], bytes, cudaMemcpyDeviceToDevice, st), "copy");
          });
          us[dist][b] = both - copy;
        }
      }
      std::vector<tq::cuda::SampleRowResult> out(max_rows);
      GraphTimerCheck(cudaMemcpy(out.data(), d_out, out.size() * sizeof(out[0]), cudaMemcpyDeviceToHost), "cudaMemcpy");
      std::printf("%-28s %8lld %6s | %10.1f %10.1f | %10.1f %10.1f  (peaked row 0: kept %d)\n", s.name,
                  static_cast<long long>(vocab), "", us[0][0], us[0][1], us[1][0], us[1][1], out[0].kept);
    }
    cudaFree(d_src[0]);
    cudaFree(d_src[1]);
    cudaFree(d_rows);
    cudaFree(d_params);
    cudaFree(d_out);
    cudaFree(d_masked);
  }
  return 0;
}
#else
int main() {
  std::printf("skipped: built without CUDA\n");
  return 0;
}
#endif
