// File: services/compression/job_manager.h
//
// Runs compression jobs: at most `max_running` at a time on worker threads, up to `max_queued`
// more waiting (beyond that Submit answers RESOURCE_EXHAUSTED), cancellation of queued and
// running jobs, snapshots and change notification for progress streams, and a drain for
// shutdown (stop accepting, let running jobs finish within a grace period, cancel the rest; a
// cancelled job removes its partial output and never publishes a manifest). Plain C++: the gRPC
// service is a thin adapter over it.
//
//   JobManager jobs({.max_running = 1, .max_queued = 8}, &metrics);
//   TQ_ASSIGN_OR_RETURN(std::string id, jobs.Submit(options));
//   for (uint64_t v = 0;;) { JobSnapshot s = jobs.WaitForChange(id, v, 1s); v = s.version; ... }
#ifndef TQSERVE_SERVICES_COMPRESSION_JOB_MANAGER_H_
#define TQSERVE_SERVICES_COMPRESSION_JOB_MANAGER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/compress/compressor.h"

namespace tq::compression {

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };
const char* JobStateName(JobState s);
inline bool IsFinal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

using SystemTime = std::chrono::system_clock::time_point;

struct JobSnapshot {
  std::string id;
  JobState state = JobState::kQueued;
  CompressOptions options;  // as submitted (cancel/observer pointers cleared)
  CompressProgress progress;
  int queue_position = 0;   // 1-based while queued
  std::optional<CompressResult> result;  // when succeeded
  absl::Status status;                   // the failure, when failed or cancelled
  SystemTime created_at, started_at, finished_at;
  uint64_t version = 0;  // bumps on every change
};

// Called by the manager as jobs change state (metrics, logs). Implementations are thread-safe.
class JobListener {
 public:
  virtual ~JobListener() = default;
  virtual void OnJobQueued(const JobSnapshot& job) = 0;
  virtual void OnJobStarted(const JobSnapshot& job) = 0;
  virtual void OnJobFinished(const JobSnapshot& job) = 0;
  // Source/destination storage events of all jobs.
  virtual StorageObserver* storage_observer() = 0;
};

// What runs a job; Compress by default (tests substitute a controllable fake).
using JobRunner =
    std::function<absl::StatusOr<CompressResult>(const CompressOptions&, const ProgressFn&)>;

struct JobManagerOptions {
  JobRunner runner;  // empty = tq::Compress
  int max_running = 1;
  int max_queued = 8;
  int threads_per_job = 0;  // default CompressOptions::threads when a request leaves it 0
  size_t max_history = 1000;  // finished jobs kept for GetJob
};

class JobManager {
 public:
  JobManager(const JobManagerOptions& options, JobListener* listener);
  ~JobManager();  // cancels everything and joins the workers

  // Queues a job. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when draining.
  absl::StatusOr<std::string> Submit(CompressOptions options);

  absl::StatusOr<JobSnapshot> Get(const std::string& id) const;

  // Cancels a queued job at once, a running one at its next tensor.
  absl::StatusOr<JobSnapshot> Cancel(const std::string& id);

  // Blocks until the job's version exceeds `seen_version` or `timeout` passes; returns the
  // current snapshot either way.
  absl::StatusOr<JobSnapshot> WaitForChange(const std::string& id, uint64_t seen_version,
                                            std::chrono::milliseconds timeout) const;

  // Stops accepting jobs and cancels the queued ones; gives running jobs up to `grace` to finish,
  // then cancels them and waits for their cleanup. Returns how many jobs were cancelled.
  int Drain(std::chrono::milliseconds grace);

  bool draining() const { return draining_.load(); }
  int running() const;
  int queued() const;

 private:
  struct Job;
  void WorkerLoop();
  void Run(const std::shared_ptr<Job>& job);
  void Touch(Job& job);  // under mu_: bump version, notify
  JobSnapshot SnapshotLocked(const Job& job) const;
  void TrimHistoryLocked();

  const JobManagerOptions options_;
  JobListener* listener_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::condition_variable work_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::string> finished_order_;
  std::vector<std::thread> workers_;
  std::atomic<bool> draining_{false};
  bool stop_ = false;
  int running_ = 0;
  uint64_t next_id_ = 1;
};

}  // namespace tq::compression

#endif  // TQSERVE_SERVICES_COMPRESSION_JOB_MANAGER_H_
