// File: services/tqctl/bench_stats.h
//
// Statistics of `tqctl bench`: summaries of latency samples (mean, standard deviation,
// numpy-style linearly interpolated percentiles), the aggregation of per-request records into
// serving metrics as `vllm bench serve` defines them, and the report in vllm's layout.
#ifndef TQSERVE_SERVICES_TQCTL_BENCH_STATS_H_
#define TQSERVE_SERVICES_TQCTL_BENCH_STATS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace tq::tqctl {

// The p-th percentile (p in [0, 100], clamped) of an ascending sample, interpolated linearly
// between the closest ranks (numpy.percentile's default): rank = p/100 * (n - 1). 0 for an
// empty sample.
double Percentile(const std::vector<double>& sorted, double p);

// A sample's summary. Every field is 0 for an empty sample (count tells it apart); the standard
// deviation is the population one (numpy.std), 0 for one sample.
struct Distribution {
  size_t count = 0;
  double mean = 0;
  double stddev = 0;
  double min = 0;
  double max = 0;
  double median = 0;
  double p90 = 0;
  double p99 = 0;
};
Distribution Describe(std::vector<double> values);

// One benchmark request as the client saw it.
struct RequestRecord {
  bool ok = false;
  std::string error;          // why it failed
  int64_t prompt_tokens = 0;  // from the server's usage
  int64_t output_tokens = 0;
  double ttft_s = 0;          // send -> first chunk with a token
  double e2e_s = 0;           // send -> the final message
  std::vector<double> itl_s;  // gaps between consecutive chunks with tokens
};

// Serving metrics over the successful requests; latencies in milliseconds.
struct BenchMetrics {
  int64_t completed = 0;
  int64_t failed = 0;
  double duration_s = 0;
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  double request_throughput = 0;      // completed / duration
  double output_throughput = 0;       // output tokens / duration
  double total_token_throughput = 0;  // (input + output tokens) / duration
  Distribution ttft_ms;
  // Per request with more than one output token: (e2e - ttft) / (output_tokens - 1).
  Distribution tpot_ms;
  Distribution itl_ms;  // every inter-chunk gap of every request
  Distribution e2el_ms;
};
BenchMetrics Aggregate(const std::vector<RequestRecord>& records, double duration_s);

// The "============ Serving Benchmark Result ============" block of vllm bench serve (with
// median, P90 and P99 of each latency). concurrency <= 0 omits its line.
std::string FormatReport(const BenchMetrics& m, int concurrency);

// vllm's result keys (completed, request_throughput, mean_ttft_ms, p99_itl_ms, ...) plus failed
// and the p90s.
nlohmann::ordered_json ReportJson(const BenchMetrics& m);

}  // namespace tq::tqctl

#endif  // TQSERVE_SERVICES_TQCTL_BENCH_STATS_H_
