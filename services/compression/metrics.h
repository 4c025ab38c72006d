// File: services/compression/metrics.h
//
// The compression server's Prometheus metrics, declared in one place. The registry is created
// by the caller and passed in (tests inspect a fresh one); main() exposes it on /metrics.
//
//   tq_compression_jobs_started_total                       counter
//   tq_compression_jobs_completed_total{result}             counter  succeeded|failed|cancelled
//   tq_compression_jobs_running, tq_compression_jobs_queued gauge
//   tq_compression_job_duration_seconds{result}             histogram (queue excluded)
//   tq_compression_bytes_read_total, _bytes_written_total   counter  storage bytes, all jobs
//   tq_compression_tensors_total                            counter  rate() = tensors per second
//   tq_compression_tensors_per_second                       gauge    of the last finished job
//   tq_storage_request_errors_total{code}                   counter  S3 error code or transport
//   tq_storage_retries_total                                counter
//   tq_checksum_failures_total                              counter  files not matching a manifest
#ifndef TQSERVE_SERVICES_COMPRESSION_METRICS_H_
#define TQSERVE_SERVICES_COMPRESSION_METRICS_H_

#include <memory>
#include <mutex>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/compression/job_manager.h"

namespace tq::compression {

class CompressionMetrics : public JobListener, public StorageObserver {
 public:
  explicit CompressionMetrics(prometheus::Registry& registry);

  // JobListener
  void OnJobQueued(const JobSnapshot& job) override;
  void OnJobStarted(const JobSnapshot& job) override;
  void OnJobFinished(const JobSnapshot& job) override;
  StorageObserver* storage_observer() override { return this; }

  // StorageObserver
  void OnBytesRead(uint64_t n) override;
  void OnBytesWritten(uint64_t n) override;
  void OnRequestError(absl::string_view code) override;
  void OnRetry() override;
  void OnChecksumFailure() override;

 private:
  prometheus::Family<prometheus::Counter>& completed_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Counter>& storage_errors_;
  prometheus::Counter& started_;
  prometheus::Gauge& running_;
  prometheus::Gauge& queued_;
  prometheus::Counter& bytes_read_;
  prometheus::Counter& bytes_written_;
  prometheus::Counter& tensors_;
  prometheus::Gauge& tensors_per_second_;
  prometheus::Counter& retries_;
  prometheus::Counter& checksum_failures_;
  std::mutex mu_;  // Family::Add
};

}  // namespace tq::compression

#endif  // TQSERVE_SERVICES_COMPRESSION_METRICS_H_
