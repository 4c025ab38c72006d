// File: engine/util/thread_pool.h
//
// A fixed pool of worker threads for data-parallel loops.
//   ThreadPool pool(4);
//   pool.ParallelFor(n, /*grain=*/64, [&](int64_t begin, int64_t end) { ... });
// ParallelFor splits [0, n) into chunks of at least `grain` items, runs them on the workers and
// the calling thread, and returns when all are done. Not reentrant.
#ifndef TQSERVE_ENGINE_UTIL_THREAD_POOL_H_
#define TQSERVE_ENGINE_UTIL_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tq {

class ThreadPool {
 public:
  // `threads` counts the calling thread: ThreadPool(1) runs everything inline.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Number of hardware threads (at least 1).
  static int HardwareThreads();

 private:
  void WorkerLoop();
  bool RunOneChunk();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 1, next_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace tq

#endif  // TQSERVE_ENGINE_UTIL_THREAD_POOL_H_
