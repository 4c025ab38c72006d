#include "services/compression/job_manager.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tq::compression {

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "?";
}

struct JobManager::Job {
  std::string id;
  JobState state = JobState::kQueued;
  CompressOptions options;
  CompressProgress progress;
  std::optional<CompressResult> result;
  absl::Status status;
  SystemTime created_at, started_at, finished_at;
  uint64_t version = 0;
  std::atomic<bool> cancel{false};
};

JobManager::JobManager(const JobManagerOptions& options, JobListener* listener)
    : options_(options), listener_(listener) {
  for (int i = 0; i < std::max(1, options_.max_running); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

JobManager::~JobManager() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    draining_ = true;
    for (auto& [id, job] : jobs_) job->cancel = true;
  }
  work_.notify_all();
  for (auto& t : workers_) t.join();
}

absl::StatusOr<std::string> JobManager::Submit(CompressOptions options) {
  std::shared_ptr<Job> job = std::make_shared<Job>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return absl::UnavailableError("the compression server is draining; no new jobs");
    if (static_cast<int>(queue_.size()) + running_ >=
        std::max(1, options_.max_running) + options_.max_queued) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job queue full: ", running_, " running and ", queue_.size(), " queued (max ",
          options_.max_queued, "); retry later"));
    }
    // Ids: a counter plus random bits, so they do not repeat across restarts.
    static std::mt19937_64 rng(std::random_device{}());
    job->id = absl::StrFormat("job-%d-%08x", next_id_++, static_cast<uint32_t>(rng()));
    if (options.threads == 0) options.threads = options_.threads_per_job;
    options.cancel = nullptr;
    options.observer = nullptr;
    job->options = std::move(options);
    job->created_at = std::chrono::system_clock::now();
    job->progress.phase = "queued";
    jobs_[job->id] = job;
    queue_.push_back(job);
    Touch(*job);
    if (listener_ != nullptr) listener_->OnJobQueued(SnapshotLocked(*job));
  }
  work_.notify_one();
  return job->id;
}

absl::StatusOr<JobSnapshot> JobManager::Get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  return SnapshotLocked(*it->second);
}

absl::StatusOr<JobSnapshot> JobManager::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  Job& job = *it->second;
  job.cancel = true;
  if (job.state == JobState::kQueued) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), it->second), queue_.end());
    job.state = JobState::kCancelled;
    job.status = absl::CancelledError("cancelled while queued");
    job.finished_at = std::chrono::system_clock::now();
    finished_order_.push_back(job.id);
    Touch(job);
    for (auto& q : queue_) Touch(*q);  // queue positions moved
    if (listener_ != nullptr) listener_->OnJobFinished(SnapshotLocked(job));
  }
  return SnapshotLocked(job);
}

absl::StatusOr<JobSnapshot> JobManager::WaitForChange(const std::string& id, uint64_t seen,
                                                      std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job '", id, "'"));
  std::shared_ptr<Job> job = it->second;
  changed_.wait_for(lock, timeout, [&] { return job->version > seen; });
  return SnapshotLocked(*job);
}

int JobManager::Drain(std::chrono::milliseconds grace) {
  draining_ = true;
  const auto deadline = std::chrono::steady_clock::now() + grace;
  std::unique_lock<std::mutex> lock(mu_);
  // Queued jobs never start once draining.
  int cancelled = 0;
  for (auto& q : queue_) {
    q->cancel = true;
    q->state = JobState::kCancelled;
    q->status = absl::CancelledError("cancelled: the server is shutting down");
    q->finished_at = std::chrono::system_clock::now();
    finished_order_.push_back(q->id);
    Touch(*q);
    if (listener_ != nullptr) listener_->OnJobFinished(SnapshotLocked(*q));
    ++cancelled;
  }
  queue_.clear();
  // Running jobs get the grace period, then are cancelled (they remove their partial output).
  if (!changed_.wait_until(lock, deadline, [&] { return running_ == 0; })) {
    for (auto& [id, job] : jobs_) {
      if (job->state == JobState::kRunning) {
        job->cancel = true;
        ++cancelled;
      }
    }
    changed_.wait(lock, [&] { return running_ == 0; });
  }
  return cancelled;
}

int JobManager::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

int JobManager::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size());
}

void JobManager::Touch(Job& job) {
  job.version++;
  changed_.notify_all();
}

JobSnapshot JobManager::SnapshotLocked(const Job& job) const {
  JobSnapshot s;
  s.id = job.id;
  s.state = job.state;
  s.options = job.options;
  s.progress = job.progress;
  if (job.state == JobState::kQueued) {
    for (size_t i = 0; i < queue_.size(); ++i) {
      if (queue_[i].get() == &job) s.queue_position = static_cast<int>(i) + 1;
    }
  }
  s.result = job.result;
  s.status = job.status;
  s.created_at = job.created_at;
  s.started_at = job.started_at;
  s.finished_at = job.finished_at;
  s.version = job.version;
  return s;
}

void JobManager::TrimHistoryLocked() {
  while (finished_order_.size() > options_.max_history) {
    jobs_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

void JobManager::WorkerLoop() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = queue_.front();
      queue_.pop_front();
      job->state = JobState::kRunning;
      job->started_at = std::chrono::system_clock::now();
      job->progress.phase = "plan";
      ++running_;
      Touch(*job);
      for (auto& q : queue_) Touch(*q);
      if (listener_ != nullptr) listener_->OnJobStarted(SnapshotLocked(*job));
    }
    Run(job);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --running_;
      job->finished_at = std::chrono::system_clock::now();
      finished_order_.push_back(job->id);
      Touch(*job);
      if (listener_ != nullptr) listener_->OnJobFinished(SnapshotLocked(*job));
      TrimHistoryLocked();
    }
  }
}

void JobManager::Run(const std::shared_ptr<Job>& job) {
  CompressOptions options = job->options;
  options.cancel = &job->cancel;
  options.observer = listener_ != nullptr ? listener_->storage_observer() : nullptr;
  const JobRunner& runner = options_.runner ? options_.runner : JobRunner(Compress);
  auto result = runner(options, [&](const CompressProgress& p) {
    std::lock_guard<std::mutex> lock(mu_);
    job->progress = p;
    Touch(*job);
  });
  std::lock_guard<std::mutex> lock(mu_);
  if (result.ok()) {
    job->state = JobState::kSucceeded;
    job->result = std::move(*result);
    job->progress.phase = "done";
  } else {
    job->status = result.status();
    job->state = result.status().code() == absl::StatusCode::kCancelled ? JobState::kCancelled
                                                                        : JobState::kFailed;
  }
}

}  // namespace tq::compression
