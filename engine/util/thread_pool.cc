#include "engine/util/thread_pool.h"

#include <algorithm>

namespace tq {

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < std::max(1, threads); ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

int ThreadPool::HardwareThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

bool ThreadPool::RunOneChunk() {
  int64_t begin, end;
  const std::function<void(int64_t, int64_t)>* fn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fn_ == nullptr || next_ >= n_) return false;
    begin = next_;
    end = std::min(n_, begin + chunk_);
    next_ = end;
    fn = fn_;
  }
  (*fn)(begin, end);
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ -= end - begin;
    if (pending_ == 0) done_cv_.notify_all();
  }
  return true;
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || (generation_ != seen && next_ < n_); });
      if (stop_) return;
      seen = generation_;
    }
    while (RunOneChunk()) {
    }
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t parts = static_cast<int64_t>(size()) * 4;
  const int64_t chunk = std::max<int64_t>(std::max<int64_t>(grain, 1), (n + parts - 1) / parts);
  if (workers_.empty() || n <= chunk) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    next_ = 0;
    pending_ = n;
    ++generation_;
  }
  work_cv_.notify_all();
  while (RunOneChunk()) {
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  fn_ = nullptr;
  n_ = 0;
}

}  // namespace tq
