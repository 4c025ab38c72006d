// File: kernels/cuda/graph_timer.h
//
// Benchmark helper: times a sequence of launches as a CUDA graph (launch gaps as in an engine's
// graph). `enqueue(i)` enqueues launch i (< copies) on `stream` — e.g. on the i-th copy of the
// data, so that a sequence reads from HBM rather than L2. The sequence runs once eagerly (warm-up,
// lazy allocations), is captured, replayed 3 times, then `reps` timed replays; returns the median
// time of one launch in microseconds. A CUDA error prints the failed call and exits (benchmarks
// only).
#ifndef TQSERVE_KERNELS_CUDA_GRAPH_TIMER_H_
#define TQSERVE_KERNELS_CUDA_GRAPH_TIMER_H_

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

namespace tq::cuda {

inline void GraphTimerCheck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s failed: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

inline double TimeGraphMedianUs(cudaStream_t stream, int copies, int reps,
                                const std::function<void(int)>& enqueue) {
  for (int i = 0; i < copies; ++i) enqueue(i);
  GraphTimerCheck(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  GraphTimerCheck(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  for (int i = 0; i < copies; ++i) enqueue(i);
  GraphTimerCheck(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
  GraphTimerCheck(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  cudaEvent_t a, b;
  GraphTimerCheck(cudaEventCreate(&a), "cudaEventCreate");
  GraphTimerCheck(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) GraphTimerCheck(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
  std::vector<double> us;
  for (int r = 0; r < reps; ++r) {
    GraphTimerCheck(cudaEventRecord(a, stream), "cudaEventRecord");
    GraphTimerCheck(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    GraphTimerCheck(cudaEventRecord(b, stream), "cudaEventRecord");
    GraphTimerCheck(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    GraphTimerCheck(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    us.push_back(1000.0 * ms / copies);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace tq::cuda

#endif  // TQ_HAVE_CUDA
#endif  // TQSERVE_KERNELS_CUDA_GRAPH_TIMER_H_
