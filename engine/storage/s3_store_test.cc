// The S3 backend against a real S3 server (Ceph RGW on loopback, started by the s3 suite in
// tests/s3) and through the fault-injecting proxy. Skips when no server is configured.
#include "engine/storage/s3_store.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "engine/storage/http_client.h"
#include "engine/storage/store_conformance.h"
#include "gtest/gtest.h"

namespace tq {
namespace {

class CountingObserver : public StorageObserver {
 public:
  void OnBytesRead(uint64_t n) override { read += n; }
  void OnBytesWritten(uint64_t n) override { written += n; }
  void OnRequestError(absl::string_view code) override {
    std::lock_guard<std::mutex> lock(mu);
    errors[std::string(code)]++;
  }
  void OnRetry() override { retries++; }
  std::atomic<uint64_t> read{0}, written{0};
  std::atomic<int> retries{0};
  std::mutex mu;
  std::map<std::string, int> errors;
};

class S3StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("AWS_ENDPOINT_URL_S3") == nullptr) {
      GTEST_SKIP() << "no S3 server: run through //tests/s3:s3_suite (starts Ceph RGW)";
    }
    auto c = S3Config::FromEnv();
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
    config_.part_bytes = kMinS3PartBytes;  // several parts for the 12 MiB objects
    ASSERT_TRUE(CreateS3Bucket(config_, "tq-store-test").ok());
  }

  std::unique_ptr<ObjectStore> Store(const S3Config& c, const std::string& prefix,
                                     StorageObserver* obs = nullptr) {
    auto s = NewS3ObjectStore(c, absl::StrCat("tq-store-test/", prefix), obs);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }

  // The fault proxy in front of the server, with a plan set.
  S3Config Proxied(const std::string& mode, int every, double seconds = 0) {
    const char* proxy = std::getenv("TQ_TEST_S3_PROXY");
    EXPECT_NE(proxy, nullptr);
    HttpRequest req;
    req.url = absl::StrCat(proxy, "/__fault__?mode=", mode, "&every=", every, "&seconds=", seconds);
    HttpResponse resp;
    EXPECT_TRUE(PerformHttp(req, &resp).ok());
    EXPECT_EQ(resp.status, 200);
    S3Config c = config_;
    c.endpoint = proxy;
    c.retry_base_ms = 10;
    c.retry_max_ms = 200;
    return c;
  }

  S3Config config_;
};

TEST_F(S3StoreTest, Conformance) {
  CountingObserver obs;
  auto store = Store(config_, "conformance", &obs);
  testing::RunStoreConformance(*store, 12 << 20);
  EXPECT_EQ(store->Uri(), "s3://tq-store-test/conformance");
  EXPECT_GT(obs.written.load(), 24u << 20);
  EXPECT_GT(obs.read.load(), 24u << 20);
}

TEST_F(S3StoreTest, ClearErrorsForBadCredentialsAndMissingThings) {
  auto store = Store(config_, "errors");
  ASSERT_TRUE(WriteObject(*store, "x", "data").ok());
  auto missing = ReadObject(*store, "nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("NoSuchKey"), std::string::npos) << missing.status();
  EXPECT_NE(missing.status().message().find("s3://tq-store-test/errors/nope"), std::string::npos);

  S3Config wrong = config_;
  wrong.credentials.secret_key = "not-the-secret";
  CountingObserver obs;
  auto bad = Store(wrong, "errors", &obs);
  auto denied = ReadObject(*bad, "x");
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied) << denied.status();
  EXPECT_NE(denied.status().message().find("SignatureDoesNotMatch"), std::string::npos) << denied.status();
  EXPECT_EQ(obs.retries.load(), 0) << "403 must not be retried";

  S3Config anonymous = config_;
  anonymous.credentials.access_key.clear();
  anonymous.credentials.secret_key.clear();
  auto anon = ReadObject(*Store(anonymous, "errors"), "x");
  EXPECT_EQ(anon.status().code(), absl::StatusCode::kPermissionDenied) << anon.status();
  EXPECT_NE(anon.status().message().find("AWS_ACCESS_KEY_ID"), std::string::npos) << anon.status();

  auto nobucket = NewS3ObjectStore(config_, "no-such-bucket-tq/x", nullptr);
  ASSERT_TRUE(nobucket.ok());
  auto nb = ReadObject(**nobucket, "y");
  EXPECT_EQ(nb.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(nb.status().message().find("NoSuchBucket"), std::string::npos) << nb.status();
}

TEST_F(S3StoreTest, RetriesThroughResetsAnd503s) {
  const std::string big = testing::PatternBytes(12 << 20, 9);
  for (const char* mode : {"503", "reset", "reset-mid"}) {
    CountingObserver obs;
    auto store = Store(Proxied(mode, 3), absl::StrCat("faults-", mode), &obs);
    ASSERT_TRUE(WriteObject(*store, "big.bin", big).ok()) << mode;
    auto back = ReadObject(*store, "big.bin");
    ASSERT_TRUE(back.ok()) << mode << ": " << back.status();
    EXPECT_TRUE(*back == big) << mode;
    auto page = store->List("", "", 10);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_GT(obs.retries.load(), 0) << mode;
    std::lock_guard<std::mutex> lock(obs.mu);
    EXPECT_FALSE(obs.errors.empty()) << mode;
    if (std::string(mode) == "503") EXPECT_GT(obs.errors["SlowDown"], 0);
  }
}

TEST_F(S3StoreTest, StalledRequestsTimeOutAndRetry) {
  S3Config c = Proxied("stall", 2, 5.0);
  c.stall_timeout_s = 1;
  CountingObserver obs;
  auto store = Store(c, "stall", &obs);
  ASSERT_TRUE(WriteObject(*store, "a", "hello").ok());
  auto back = ReadObject(*store, "a");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, "hello");
  EXPECT_GT(obs.retries.load(), 0);
}

TEST_F(S3StoreTest, PersistentFailureGivesUpWithTheCode) {
  S3Config c = Proxied("503", 1);
  c.max_attempts = 3;
  CountingObserver obs;
  auto store = Store(c, "down", &obs);
  absl::Status st = WriteObject(*store, "a", "x");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_NE(st.message().find("SlowDown"), std::string::npos) << st;
  EXPECT_NE(st.message().find("after 3 attempts"), std::string::npos) << st;
  EXPECT_EQ(obs.retries.load(), 2);
  (void)Proxied("none", 0);
}

}  // namespace
}  // namespace tq
