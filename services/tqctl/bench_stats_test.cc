#include "services/tqctl/bench_stats.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tq::tqctl {
namespace {

TEST(PercentileTest, EmptyIsZero) {
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({}, 99), 0);
}

TEST(PercentileTest, OneSampleIsThatSample) {
  for (double p : {0.0, 50.0, 90.0, 99.0, 100.0}) EXPECT_EQ(Percentile({7.5}, p), 7.5) << p;
}

TEST(PercentileTest, InterpolatesLikeNumpy) {
  // numpy.percentile([1, 2, 3, 4], [0, 25, 50, 90, 99, 100]) = 1, 1.75, 2.5, 3.7, 3.97, 4
  const std::vector<double> s = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(Percentile(s, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(s, 25), 1.75);
  EXPECT_DOUBLE_EQ(Percentile(s, 50), 2.5);
  EXPECT_NEAR(Percentile(s, 90), 3.7, 1e-12);
  EXPECT_NEAR(Percentile(s, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(s, 100), 4);
  // Odd count: the median is the middle element.
  EXPECT_DOUBLE_EQ(Percentile({10, 20, 30}, 50), 20);
}

TEST(PercentileTest, TiesGiveTheirValueExactly) {
  const std::vector<double> s = {0.1, 0.1, 0.1, 0.1, 5};
  EXPECT_EQ(Percentile(s, 50), 0.1);
  EXPECT_EQ(Percentile(s, 75), 0.1);
  EXPECT_NEAR(Percentile(s, 90), 0.1 + (5 - 0.1) * 0.6, 1e-12);
  const std::vector<double> all_equal(100, 3.25);
  for (double p : {0.0, 33.3, 50.0, 99.0, 100.0}) EXPECT_EQ(Percentile(all_equal, p), 3.25) << p;
}

TEST(PercentileTest, ClampsP) {
  EXPECT_EQ(Percentile({1, 2}, -5), 1);
  EXPECT_EQ(Percentile({1, 2}, 150), 2);
}

TEST(DescribeTest, Empty) {
  const Distribution d = Describe({});
  EXPECT_EQ(d.count, 0u);
  EXPECT_EQ(d.mean, 0);
  EXPECT_EQ(d.stddev, 0);
  EXPECT_EQ(d.median, 0);
  EXPECT_EQ(d.p99, 0);
}

TEST(DescribeTest, OneSample) {
  const Distribution d = Describe({42});
  EXPECT_EQ(d.count, 1u);
  EXPECT_EQ(d.mean, 42);
  EXPECT_EQ(d.stddev, 0);
  EXPECT_EQ(d.min, 42);
  EXPECT_EQ(d.max, 42);
  EXPECT_EQ(d.median, 42);
  EXPECT_EQ(d.p90, 42);
  EXPECT_EQ(d.p99, 42);
}

TEST(DescribeTest, UnsortedInputWithTies) {
  // numpy: mean 3.0, std 1.1952286093343936 (population), median 3, p90 4.4, p99 4.94
  const Distribution d = Describe({5, 1, 3, 3, 3, 2, 4});
  EXPECT_EQ(d.count, 7u);
  EXPECT_DOUBLE_EQ(d.mean, 3);
  EXPECT_NEAR(d.stddev, 1.1952286093343936, 1e-12);
  EXPECT_EQ(d.min, 1);
  EXPECT_EQ(d.max, 5);
  EXPECT_EQ(d.median, 3);
  EXPECT_NEAR(d.p90, 4.4, 1e-12);
  EXPECT_NEAR(d.p99, 4.94, 1e-12);
}

TEST(AggregateTest, MetricsOverSuccessfulRequests) {
  RequestRecord a;
  a.ok = true;
  a.prompt_tokens = 8;
  a.output_tokens = 4;
  a.ttft_s = 0.010;
  a.e2e_s = 0.040;  // TPOT (40 - 10) / 3 = 10 ms
  a.itl_s = {0.010, 0.010, 0.010};
  RequestRecord b = a;
  b.ttft_s = 0.030;
  b.e2e_s = 0.090;  // TPOT 20 ms
  b.itl_s = {0.020, 0.020, 0.020};
  RequestRecord one_token;
  one_token.ok = true;
  one_token.prompt_tokens = 8;
  one_token.output_tokens = 1;  // no TPOT, no ITL
  one_token.ttft_s = one_token.e2e_s = 0.020;
  RequestRecord failed;
  failed.error = "RESOURCE_EXHAUSTED: queue full";
  const BenchMetrics m = Aggregate({a, b, one_token, failed}, 2.0);
  EXPECT_EQ(m.completed, 3);
  EXPECT_EQ(m.failed, 1);
  EXPECT_EQ(m.total_input_tokens, 24);
  EXPECT_EQ(m.total_output_tokens, 9);
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(m.output_throughput, 4.5);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 16.5);
  EXPECT_EQ(m.ttft_ms.count, 3u);
  EXPECT_NEAR(m.ttft_ms.mean, 20, 1e-9);
  EXPECT_NEAR(m.ttft_ms.median, 20, 1e-9);
  EXPECT_EQ(m.tpot_ms.count, 2u);
  EXPECT_NEAR(m.tpot_ms.mean, 15, 1e-9);
  EXPECT_EQ(m.itl_ms.count, 6u);
  EXPECT_NEAR(m.itl_ms.median, 15, 1e-9);
  EXPECT_NEAR(m.e2el_ms.max, 90, 1e-9);
}

TEST(AggregateTest, NothingSucceededAndZeroDuration) {
  RequestRecord failed;
  const BenchMetrics m = Aggregate({failed, failed}, 0);
  EXPECT_EQ(m.completed, 0);
  EXPECT_EQ(m.failed, 2);
  EXPECT_EQ(m.request_throughput, 0);
  EXPECT_EQ(m.ttft_ms.count, 0u);
  EXPECT_EQ(m.ttft_ms.mean, 0);
  const BenchMetrics none = Aggregate({}, 1.0);
  EXPECT_EQ(none.completed, 0);
  EXPECT_EQ(none.e2el_ms.p99, 0);
}

TEST(FormatReportTest, VllmLayout) {
  RequestRecord a;
  a.ok = true;
  a.prompt_tokens = 128;
  a.output_tokens = 64;
  a.ttft_s = 0.05;
  a.e2e_s = 0.68;
  a.itl_s = std::vector<double>(63, 0.01);
  const std::string r = FormatReport(Aggregate({a}, 0.7), 1);
  EXPECT_EQ(r.rfind("============ Serving Benchmark Result ============\n", 0), 0u) << r;
  EXPECT_NE(r.find("Successful requests:                     1\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Maximum request concurrency:             1\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Benchmark duration (s):                  0.70\n"), std::string::npos) << r;
  EXPECT_NE(r.find("---------------Time to First Token----------------\n"), std::string::npos) << r;
  EXPECT_NE(r.find("-----Time per Output Token (excl. 1st token)------\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Median TTFT (ms):                        50.00\n"), std::string::npos) << r;
  EXPECT_NE(r.find("P90 ITL (ms):                            10.00\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Mean TPOT (ms):                          10.00\n"), std::string::npos) << r;
  EXPECT_NE(r.find("P99 E2EL (ms):                           680.00\n"), std::string::npos) << r;
  EXPECT_EQ(r.substr(r.size() - 51), std::string(50, '=') + "\n");
  EXPECT_EQ(FormatReport(Aggregate({a}, 0.7), 0).find("Maximum request concurrency"), std::string::npos);

  const nlohmann::ordered_json j = ReportJson(Aggregate({a}, 0.7));
  EXPECT_EQ(j["completed"], 1);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_NEAR(j["median_ttft_ms"].get<double>(), 50, 1e-9);
  EXPECT_TRUE(j.contains("p99_itl_ms"));
  EXPECT_TRUE(j.contains("std_e2el_ms"));
}

}  // namespace
}  // namespace tq::tqctl
