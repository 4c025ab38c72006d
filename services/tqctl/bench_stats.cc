#include "services/tqctl/bench_stats.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tq::tqctl {

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  p = std::clamp(p, 0.0, 100.0);
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  // Written so that equal neighbours (ties) give exactly their value.
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Distribution Describe(std::vector<double> values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.count = values.size();
  double sum = 0;
  for (double v : values) sum += v;
  d.mean = sum / static_cast<double>(d.count);
  double sq = 0;
  for (double v : values) sq += (v - d.mean) * (v - d.mean);
  d.stddev = std::sqrt(sq / static_cast<double>(d.count));
  d.min = values.front();
  d.max = values.back();
  d.median = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  return d;
}

BenchMetrics Aggregate(const std::vector<RequestRecord>& records, double duration_s) {
  BenchMetrics m;
  m.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestRecord& r : records) {
    if (!r.ok) {
      ++m.failed;
      continue;
    }
    ++m.completed;
    m.total_input_tokens += r.prompt_tokens;
    m.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s * 1e3);
    e2el.push_back(r.e2e_s * 1e3);
    if (r.output_tokens > 1) {
      tpot.push_back((r.e2e_s - r.ttft_s) * 1e3 / static_cast<double>(r.output_tokens - 1));
    }
    for (double g : r.itl_s) itl.push_back(g * 1e3);
  }
  if (duration_s > 0) {
    m.request_throughput = static_cast<double>(m.completed) / duration_s;
    m.output_throughput = static_cast<double>(m.total_output_tokens) / duration_s;
    m.total_token_throughput =
        static_cast<double>(m.total_input_tokens + m.total_output_tokens) / duration_s;
  }
  m.ttft_ms = Describe(std::move(ttft));
  m.tpot_ms = Describe(std::move(tpot));
  m.itl_ms = Describe(std::move(itl));
  m.e2el_ms = Describe(std::move(e2el));
  return m;
}

namespace {

// Python's "{s:{c}^{n}}": centred, the odd padding character on the right.
std::string Centered(const std::string& s, char fill, size_t width = 50) {
  if (s.size() >= width) return s;
  const size_t pad = width - s.size();
  return std::string(pad / 2, fill) + s + std::string(pad - pad / 2, fill);
}

void Line(std::string* out, const std::string& label, int64_t v) {
  absl::StrAppendFormat(out, "%-40s %d\n", label, v);
}
void Line(std::string* out, const std::string& label, double v) {
  absl::StrAppendFormat(out, "%-40s %.2f\n", label, v);
}

void Section(std::string* out, const std::string& title, const std::string& name,
             const Distribution& d) {
  absl::StrAppend(out, Centered(title, '-'), "\n");
  Line(out, absl::StrCat("Mean ", name, " (ms):"), d.mean);
  Line(out, absl::StrCat("Median ", name, " (ms):"), d.median);
  Line(out, absl::StrCat("P90 ", name, " (ms):"), d.p90);
  Line(out, absl::StrCat("P99 ", name, " (ms):"), d.p99);
}

void Keys(nlohmann::ordered_json& j, const std::string& name, const Distribution& d) {
  j["mean_" + name + "_ms"] = d.mean;
  j["median_" + name + "_ms"] = d.median;
  j["std_" + name + "_ms"] = d.stddev;
  j["p90_" + name + "_ms"] = d.p90;
  j["p99_" + name + "_ms"] = d.p99;
}

}  // namespace

std::string FormatReport(const BenchMetrics& m, int concurrency) {
  std::string out = Centered(" Serving Benchmark Result ", '=') + "\n";
  Line(&out, "Successful requests:", m.completed);
  Line(&out, "Failed requests:", m.failed);
  if (concurrency > 0) Line(&out, "Maximum request concurrency:", int64_t{concurrency});
  Line(&out, "Benchmark duration (s):", m.duration_s);
  Line(&out, "Total input tokens:", m.total_input_tokens);
  Line(&out, "Total generated tokens:", m.total_output_tokens);
  Line(&out, "Request throughput (req/s):", m.request_throughput);
  Line(&out, "Output token throughput (tok/s):", m.output_throughput);
  Line(&out, "Total Token throughput (tok/s):", m.total_token_throughput);
  Section(&out, "Time to First Token", "TTFT", m.ttft_ms);
  Section(&out, "Time per Output Token (excl. 1st token)", "TPOT", m.tpot_ms);
  Section(&out, "Inter-token Latency", "ITL", m.itl_ms);
  Section(&out, "End-to-end Latency", "E2EL", m.e2el_ms);
  absl::StrAppend(&out, std::string(50, '='), "\n");
  return out;
}

nlohmann::ordered_json ReportJson(const BenchMetrics& m) {
  nlohmann::ordered_json j;
  j["duration"] = m.duration_s;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["total_input_tokens"] = m.total_input_tokens;
  j["total_output_tokens"] = m.total_output_tokens;
  j["request_throughput"] = m.request_throughput;
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  Keys(j, "ttft", m.ttft_ms);
  Keys(j, "tpot", m.tpot_ms);
  Keys(j, "itl", m.itl_ms);
  Keys(j, "e2el", m.e2el_ms);
  return j;
}

}  // namespace tq::tqctl
