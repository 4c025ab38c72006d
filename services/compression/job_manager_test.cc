#include "services/compression/job_manager.h"

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "engine/checkpoint/manifest.h"
#include "engine/util/file_util.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "services/compression/metrics.h"
#include "tests/util/testdata.h"

namespace tq::compression {
namespace {

using namespace std::chrono_literals;

// A runner that reports progress and then blocks until released or cancelled.
class GateRunner {
 public:
  JobRunner AsRunner() {
    return [this](const CompressOptions& o, const ProgressFn& progress) -> absl::StatusOr<CompressResult> {
      started_++;
      CompressProgress p;
      p.phase = "compress";
      p.tensors_total = 10;
      for (int i = 0; i < 10; ++i) {
        p.tensors_done = i;
        progress(p);
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, 20ms, [&] { return open_; });
        if (o.cancel != nullptr && o.cancel->load()) return absl::CancelledError("cancelled");
        if (open_) break;
      }
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return open_ || (o.cancel != nullptr && o.cancel->load()); });
      if (!open_) return absl::CancelledError("cancelled");
      CompressResult r;
      r.quantized = 3;
      r.passthrough = 2;
      r.seconds = 0.5;
      r.manifest_sha256 = "abc";
      return r;
    };
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  int started() const { return started_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  std::atomic<int> started_{0};
};

CompressOptions Job(const std::string& name) {
  CompressOptions o;
  o.source = "src/" + name;
  o.destination = "dst/" + name;
  return o;
}

JobSnapshot WaitFor(JobManager& jobs, const std::string& id, JobState state) {
  uint64_t v = 0;
  for (int i = 0; i < 500; ++i) {
    auto s = jobs.WaitForChange(id, v, 20ms);
    EXPECT_TRUE(s.ok());
    if (s->state == state) return *s;
    v = s->version;
  }
  ADD_FAILURE() << "job " << id << " never reached " << JobStateName(state);
  return *jobs.Get(id);
}

TEST(JobManagerTest, QueueBoundCancelAndMetrics) {
  GateRunner gate;
  prometheus::Registry registry;
  CompressionMetrics metrics(registry);
  JobManagerOptions opt;
  opt.runner = gate.AsRunner();
  opt.max_running = 1;
  opt.max_queued = 1;
  JobManager jobs(opt, &metrics);

  auto a = jobs.Submit(Job("a"));
  ASSERT_TRUE(a.ok());
  WaitFor(jobs, *a, JobState::kRunning);
  auto b = jobs.Submit(Job("b"));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(jobs.Get(*b)->state, JobState::kQueued);
  EXPECT_EQ(jobs.Get(*b)->queue_position, 1);
  auto c = jobs.Submit(Job("c"));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted) << c.status();

  // Cancel the queued job: it ends at once and never runs.
  auto cb = jobs.Cancel(*b);
  ASSERT_TRUE(cb.ok());
  EXPECT_EQ(cb->state, JobState::kCancelled);
  // Cancel the running one: it stops.
  ASSERT_TRUE(jobs.Cancel(*a).ok());
  JobSnapshot sa = WaitFor(jobs, *a, JobState::kCancelled);
  EXPECT_EQ(sa.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(gate.started(), 1);

  // A job that succeeds.
  auto d = jobs.Submit(Job("d"));
  ASSERT_TRUE(d.ok());
  WaitFor(jobs, *d, JobState::kRunning);
  gate.Open();
  JobSnapshot sd = WaitFor(jobs, *d, JobState::kSucceeded);
  ASSERT_TRUE(sd.result.has_value());
  EXPECT_EQ(sd.result->manifest_sha256, "abc");
  EXPECT_EQ(jobs.Get("nope").status().code(), absl::StatusCode::kNotFound);

  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_NE(text.find("tq_compression_jobs_started_total 2"), std::string::npos) << text;
  EXPECT_NE(text.find("tq_compression_jobs_completed_total{result=\"cancelled\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("tq_compression_jobs_completed_total{result=\"succeeded\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("tq_compression_jobs_running 0"), std::string::npos) << text;
  EXPECT_NE(text.find("tq_compression_jobs_queued 0"), std::string::npos) << text;
  EXPECT_NE(text.find("tq_compression_tensors_per_second 10"), std::string::npos) << text;
}

TEST(JobManagerTest, DrainLetsRunningJobsFinishThenCancels) {
  GateRunner gate;
  JobManagerOptions opt;
  opt.runner = gate.AsRunner();
  opt.max_running = 1;
  opt.max_queued = 4;
  JobManager jobs(opt, nullptr);
  auto a = jobs.Submit(Job("a"));
  auto b = jobs.Submit(Job("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  WaitFor(jobs, *a, JobState::kRunning);
  // The running job does not finish within the grace period: it is cancelled, the queued one too.
  EXPECT_EQ(jobs.Drain(100ms), 2);
  EXPECT_EQ(jobs.Get(*a)->state, JobState::kCancelled);
  EXPECT_EQ(jobs.Get(*b)->state, JobState::kCancelled);
  EXPECT_EQ(jobs.Submit(Job("c")).status().code(), absl::StatusCode::kUnavailable);
}

TEST(JobManagerTest, DrainWaitsForAJobThatFinishes) {
  GateRunner gate;
  JobManagerOptions opt;
  opt.runner = gate.AsRunner();
  JobManager jobs(opt, nullptr);
  auto a = jobs.Submit(Job("a"));
  ASSERT_TRUE(a.ok());
  WaitFor(jobs, *a, JobState::kRunning);
  std::thread opener([&] {
    std::this_thread::sleep_for(50ms);
    gate.Open();
  });
  EXPECT_EQ(jobs.Drain(10s), 0);
  opener.join();
  EXPECT_EQ(jobs.Get(*a)->state, JobState::kSucceeded);
}

TEST(JobManagerTest, RealCompressionAndCancellationLeaveNoManifest) {
  JobManagerOptions opt;  // the real compressor
  JobManager jobs(opt, nullptr);
  const std::string dst = testing::MakeTempDir("jm");
  CompressOptions o;
  o.source = testing::TestDataPath("testdata/models/tq-tiny-qwen3");
  o.destination = dst + "/ok";
  auto id = jobs.Submit(o);
  ASSERT_TRUE(id.ok());
  JobSnapshot s = WaitFor(jobs, *id, JobState::kSucceeded);
  EXPECT_TRUE(PathExists(dst + "/ok/" + kManifestName));
  EXPECT_EQ(s.progress.tensors_done, 69);

  o.destination = dst + "/cancelled";
  auto id2 = jobs.Submit(o);
  ASSERT_TRUE(id2.ok());
  ASSERT_TRUE(jobs.Cancel(*id2).ok());
  JobSnapshot s2 = *jobs.Get(*id2);
  for (int i = 0; i < 500 && !IsFinal(s2.state); ++i) s2 = *jobs.WaitForChange(*id2, s2.version, 20ms);
  EXPECT_EQ(s2.state, JobState::kCancelled);
  EXPECT_FALSE(PathExists(dst + "/cancelled/" + kManifestName));
}

TEST(JobManagerTest, FailuresCarryTheirStatus) {
  JobManager jobs(JobManagerOptions(), nullptr);
  CompressOptions o;
  o.source = "/nonexistent/source";
  o.destination = testing::MakeTempDir("jmf") + "/x";
  auto id = jobs.Submit(o);
  ASSERT_TRUE(id.ok());
  JobSnapshot s = WaitFor(jobs, *id, JobState::kFailed);
  EXPECT_EQ(s.status.code(), absl::StatusCode::kNotFound) << s.status;
}

}  // namespace
}  // namespace tq::compression
