// End to end against the real S3 server of the s3 suite (Ceph RGW): the compression server
// writes to s3:// (and reads from it), jobs are cancelled midway, stored bytes are corrupted,
// faults are injected by the proxy, and an independent client (boto3) checks what we wrote.
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/manifest.h"
#include "engine/checkpoint/tq_checkpoint.h"
#include "engine/storage/http_client.h"
#include "engine/storage/object_store.h"
#include "engine/storage/s3_store.h"
#include "gtest/gtest.h"
#include "proto/tq/compression/v1/compression.grpc.pb.h"
#include "tests/e2e/server_process.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

namespace v1 = ::tq::compression::v1;
using ::tq::testing::CommandResult;
using ::tq::testing::MakeTempDir;
using ::tq::testing::RunCommand;
using ::tq::testing::ServerProcess;
using ::tq::testing::TestDataPath;

constexpr char kBucket[] = "tq-e2e";

class Counting : public StorageObserver {
 public:
  void OnBytesRead(uint64_t) override {}
  void OnBytesWritten(uint64_t) override {}
  void OnRequestError(absl::string_view) override {}
  void OnRetry() override {}
  void OnChecksumFailure() override { checksum_failures++; }
  std::atomic<int> checksum_failures{0};
};

class CompressionS3Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::getenv("AWS_ENDPOINT_URL_S3") == nullptr) return;
    auto c = S3Config::FromEnv();
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(CreateS3Bucket(*c, kBucket).ok());
  }

  void SetUp() override {
    if (std::getenv("AWS_ENDPOINT_URL_S3") == nullptr) {
      GTEST_SKIP() << "no S3 server: run through //tests/s3:s3_suite (starts Ceph RGW)";
    }
  }

  // Starts the server; `endpoint` overrides AWS_ENDPOINT_URL_S3 for it (the fault proxy).
  std::unique_ptr<ServerProcess> Start(const std::string& endpoint = "", std::vector<std::string> args = {}) {
    const std::string saved = std::getenv("AWS_ENDPOINT_URL_S3");
    if (!endpoint.empty()) setenv("AWS_ENDPOINT_URL_S3", endpoint.c_str(), 1);
    args.insert(args.begin(), {"--listen=127.0.0.1:0", "--metrics_host=127.0.0.1", "--metrics_port=0"});
    auto s = ServerProcess::Start(TestDataPath("services/compression/tq-compression-server"), args, "srv");
    setenv("AWS_ENDPOINT_URL_S3", saved.c_str(), 1);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  static grpc::Status Run(const ServerProcess& s, const std::string& src, const std::string& dst,
                          v1::Job* last = nullptr) {
    auto stub = v1::Compression::NewStub(grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    v1::CompressRequest req;
    req.set_source_uri(src);
    req.set_destination_uri(dst);
    auto stream = stub->Compress(&ctx, req);
    v1::CompressUpdate u;
    while (stream->Read(&u)) {
      if (last != nullptr) *last = u.job();
    }
    return stream->Finish();
  }

  static std::string Uri(const std::string& prefix) { return absl::StrCat("s3://", kBucket, "/", prefix); }

  static void SetFaults(const std::string& mode, int every) {
    HttpRequest req;
    req.url = absl::StrCat(std::getenv("TQ_TEST_S3_PROXY"), "/__fault__?mode=", mode, "&every=", every);
    HttpResponse resp;
    ASSERT_TRUE(PerformHttp(req, &resp).ok());
    ASSERT_EQ(resp.status, 200);
  }
};

TEST_F(CompressionS3Test, FileToS3ThenS3ToS3AndAnIndependentClientAgrees) {
  auto server = Start();
  ASSERT_NE(server, nullptr);
  v1::Job last;
  grpc::Status st = Run(*server, TestDataPath("testdata/models/tq-tiny-qwen3"), Uri("tiny-tq3"), &last);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << server->Log();
  EXPECT_EQ(last.summary().destination_uri(), Uri("tiny-tq3"));

  auto store = OpenObjectStore(Uri("tiny-tq3"));
  ASSERT_TRUE(store.ok());
  auto report = VerifyCheckpoint(**store);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok());
  auto ck = TqCheckpoint::Open(Uri("tiny-tq3"), VerifyLevel::kChecksums);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->tensors().size(), 69u);

  CommandResult boto = RunCommand(absl::StrCat("/usr/bin/python3 ", TestDataPath("tests/s3/boto3_check.py"),
                                               " ", Uri("tiny-tq3")));
  EXPECT_EQ(boto.exit_code, 0) << boto.output;
  EXPECT_NE(boto.output.find("9 files checked, 0 bad"), std::string::npos) << boto.output;

  // s3 -> s3: the source itself in the bucket.
  auto src = OpenObjectStore(Uri("sources/tiny"));
  ASSERT_TRUE(src.ok());
  const std::string local = TestDataPath("testdata/models/tq-tiny-qwen3");
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}) {
    ASSERT_TRUE(WriteObject(**src, f, testing::ReadFileOrDie(local + "/" + f)).ok());
  }
  st = Run(*server, Uri("sources/tiny"), Uri("tiny-from-s3"), &last);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto from_s3 = OpenObjectStore(Uri("tiny-from-s3"));
  EXPECT_TRUE(VerifyCheckpoint(**from_s3)->ok());
  // Same weights in, same tensor bytes out.
  auto a = ReadObject(**store, "model.safetensors");
  auto b = ReadObject(**from_s3, "model.safetensors");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(*a == *b);

  CommandResult tqctl = RunCommand(absl::StrCat(TestDataPath("services/tqctl/tqctl"), " list s3://", kBucket));
  EXPECT_EQ(tqctl.exit_code, 0) << tqctl.output;
  EXPECT_NE(tqctl.output.find("complete  tq"), std::string::npos) << tqctl.output;
}

TEST_F(CompressionS3Test, CorruptedByteIsRefused) {
  auto server = Start();
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(Run(*server, TestDataPath("testdata/models/tq-tiny-qwen3"), Uri("corrupt")).ok());
  auto store = OpenObjectStore(Uri("corrupt"));
  ASSERT_TRUE(store.ok());
  auto bytes = ReadObject(**store, "model.safetensors");
  ASSERT_TRUE(bytes.ok());
  std::string bad = *bytes;
  bad[bad.size() / 2] ^= 0x01;
  ASSERT_TRUE(WriteObject(**store, "model.safetensors", bad).ok());

  Counting obs;
  StoreOptions so;
  so.observer = &obs;
  auto ck = TqCheckpoint::Open(Uri("corrupt"), VerifyLevel::kSizes, so);
  EXPECT_EQ(ck.status().code(), absl::StatusCode::kDataLoss) << ck.status();
  EXPECT_NE(ck.status().message().find("model.safetensors"), std::string::npos) << ck.status();
  EXPECT_EQ(obs.checksum_failures.load(), 1);
  CommandResult verify = RunCommand(absl::StrCat(TestDataPath("services/tqctl/tqctl"), " verify ", Uri("corrupt")));
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_NE(verify.output.find("BAD  s3://tq-e2e/corrupt/model.safetensors"), std::string::npos) << verify.output;
}

TEST_F(CompressionS3Test, CancelledJobLeavesNothing) {
  const std::string big = MakeTempDir("big") + "/llama";
  CommandResult gen = RunCommand(absl::StrCat(TestDataPath("tools/gen_checkpoint"), " --out ", big,
                                              " --hidden 512 --intermediate 1536 --layers 20 --vocab 4096",
                                              " --heads 8 --kv-heads 2"));
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto server = Start("", {"--threads_per_job=1"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::Compression::NewStub(grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::CompressRequest req;
  req.set_source_uri(big);
  req.set_destination_uri(Uri("cancelled"));
  auto stream = stub->Compress(&ctx, req);
  v1::CompressUpdate u;
  std::string id;
  while (stream->Read(&u)) {
    id = u.job().job_id();
    if (u.job().progress().tensors_done() >= 20) break;
  }
  grpc::ClientContext cctx;
  v1::CancelJobRequest creq;
  creq.set_job_id(id);
  v1::Job job;
  ASSERT_TRUE(stub->CancelJob(&cctx, creq, &job).ok());
  while (stream->Read(&u)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  auto store = OpenObjectStore(Uri("cancelled"));
  ASSERT_TRUE(store.ok());
  auto left = ListAll(**store, "");
  ASSERT_TRUE(left.ok());
  for (const auto& o : *left) ADD_FAILURE() << "left in the bucket: " << o.key;
}

TEST_F(CompressionS3Test, JobsSurviveInjectedFaultsOrFailWithoutAManifest) {
  const std::string proxy = std::getenv("TQ_TEST_S3_PROXY");
  setenv("TQ_S3_RETRY_BASE_MS", "10", 1);
  auto server = Start(proxy);
  ASSERT_NE(server, nullptr);
  for (const char* mode : {"503", "reset", "reset-mid"}) {
    SetFaults(mode, 4);
    const std::string dst = absl::StrCat("faults-", mode);
    grpc::Status st = Run(*server, TestDataPath("testdata/models/tq-tiny-qwen3"), Uri(dst));
    EXPECT_TRUE(st.ok()) << mode << ": " << st.error_message();
    SetFaults("none", 0);
    auto store = OpenObjectStore(Uri(dst));
    EXPECT_TRUE(VerifyCheckpoint(**store)->ok()) << mode;
  }
  auto metrics = testing::HttpGet(server->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->find("tq_storage_request_errors_total{code=\"SlowDown\"}"), std::string::npos) << *metrics;
  EXPECT_EQ(metrics->find("tq_storage_retries_total 0"), std::string::npos) << *metrics;

  // Storage down for good: the job fails after its retries and publishes nothing.
  setenv("TQ_S3_MAX_ATTEMPTS", "2", 1);
  auto failing = Start(proxy);
  unsetenv("TQ_S3_MAX_ATTEMPTS");
  ASSERT_NE(failing, nullptr);
  SetFaults("503", 1);
  v1::Job last;
  grpc::Status st = Run(*failing, TestDataPath("testdata/models/tq-tiny-qwen3"), Uri("down"), &last);
  SetFaults("none", 0);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_EQ(last.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(st.error_message().find("SlowDown"), std::string::npos) << st.error_message();
  auto store = OpenObjectStore(Uri("down"));
  EXPECT_EQ((*store)->Head(kManifestName).status().code(), absl::StatusCode::kNotFound);
  unsetenv("TQ_S3_RETRY_BASE_MS");
}

}  // namespace
}  // namespace tq
