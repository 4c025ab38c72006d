#include "services/compression/metrics.h"

#include <string>

namespace tq::compression {
namespace {

const prometheus::Histogram::BucketBoundaries kDurationBuckets = {
    1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800};

const char* Result(JobState s) {
  switch (s) {
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kCancelled:
      return "cancelled";
    default:
      return "failed";
  }
}

}  // namespace

CompressionMetrics::CompressionMetrics(prometheus::Registry& r)
    : completed_(prometheus::BuildCounter()
                     .Name("tq_compression_jobs_completed_total")
                     .Help("Compression jobs that ended, by result (succeeded, failed, cancelled).")
                     .Register(r)),
      duration_(prometheus::BuildHistogram()
                    .Name("tq_compression_job_duration_seconds")
                    .Help("Run time of compression jobs from start to end (queue time excluded).")
                    .Register(r)),
      storage_errors_(prometheus::BuildCounter()
                          .Name("tq_storage_request_errors_total")
                          .Help("Failed object-store requests (before retries), by S3 error code or "
                                "transport failure.")
                          .Register(r)),
      started_(prometheus::BuildCounter()
                   .Name("tq_compression_jobs_started_total")
                   .Help("Compression jobs that started running.")
                   .Register(r)
                   .Add({})),
      running_(prometheus::BuildGauge()
                   .Name("tq_compression_jobs_running")
                   .Help("Compression jobs running now.")
                   .Register(r)
                   .Add({})),
      queued_(prometheus::BuildGauge()
                  .Name("tq_compression_jobs_queued")
                  .Help("Compression jobs waiting for a worker.")
                  .Register(r)
                  .Add({})),
      bytes_read_(prometheus::BuildCounter()
                      .Name("tq_compression_bytes_read_total")
                      .Help("Bytes read from object storage by compression jobs.")
                      .Register(r)
                      .Add({})),
      bytes_written_(prometheus::BuildCounter()
                         .Name("tq_compression_bytes_written_total")
                         .Help("Bytes written to object storage by compression jobs.")
                         .Register(r)
                         .Add({})),
      tensors_(prometheus::BuildCounter()
                   .Name("tq_compression_tensors_total")
                   .Help("Tensors processed by finished compression jobs; rate() gives tensors "
                         "per second.")
                   .Register(r)
                   .Add({})),
      tensors_per_second_(prometheus::BuildGauge()
                              .Name("tq_compression_tensors_per_second")
                              .Help("Tensors per second of the last successful job.")
                              .Register(r)
                              .Add({})),
      retries_(prometheus::BuildCounter()
                   .Name("tq_storage_retries_total")
                   .Help("Object-store requests retried after a retryable failure.")
                   .Register(r)
                   .Add({})),
      checksum_failures_(prometheus::BuildCounter()
                             .Name("tq_checksum_failures_total")
                             .Help("Stored files whose size or sha256 did not match their manifest.")
                             .Register(r)
                             .Add({})) {
  for (const char* res : {"succeeded", "failed", "cancelled"}) {
    completed_.Add({{"result", res}});
    duration_.Add({{"result", res}}, kDurationBuckets);
  }
}

void CompressionMetrics::OnJobQueued(const JobSnapshot&) { queued_.Increment(); }

void CompressionMetrics::OnJobStarted(const JobSnapshot&) {
  queued_.Decrement();
  running_.Increment();
  started_.Increment();
}

void CompressionMetrics::OnJobFinished(const JobSnapshot& job) {
  const bool ran = job.started_at != SystemTime{};
  if (ran) {
    running_.Decrement();
  } else {
    queued_.Decrement();
  }
  std::lock_guard<std::mutex> lock(mu_);
  completed_.Add({{"result", Result(job.state)}}).Increment();
  if (ran) {
    const double secs = std::chrono::duration<double>(job.finished_at - job.started_at).count();
    duration_.Add({{"result", Result(job.state)}}, kDurationBuckets).Observe(secs);
  }
  tensors_.Increment(job.progress.tensors_done);
  if (job.result.has_value() && job.result->seconds > 0) {
    tensors_per_second_.Set((job.result->quantized + job.result->passthrough) / job.result->seconds);
  }
}

void CompressionMetrics::OnBytesRead(uint64_t n) { bytes_read_.Increment(static_cast<double>(n)); }
void CompressionMetrics::OnBytesWritten(uint64_t n) { bytes_written_.Increment(static_cast<double>(n)); }

void CompressionMetrics::OnRequestError(absl::string_view code) {
  std::lock_guard<std::mutex> lock(mu_);
  storage_errors_.Add({{"code", std::string(code)}}).Increment();
}

void CompressionMetrics::OnRetry() { retries_.Increment(); }
void CompressionMetrics::OnChecksumFailure() { checksum_failures_.Increment(); }

}  // namespace tq::compression
