// End to end: the real tq-compression-server binary on loopback, driven over gRPC (and tqctl),
// with local file:// stores. The S3 variants run in //tests/s3:s3_suite.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/manifest.h"
#include "engine/checkpoint/tq_checkpoint.h"
#include "engine/storage/object_store.h"
#include "engine/util/file_util.h"
#include "gtest/gtest.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"
#include "proto/grpc/reflection/v1alpha/reflection.grpc.pb.h"
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

std::string ServerBinary() { return TestDataPath("services/compression/tq-compression-server"); }
std::string Tiny() { return TestDataPath("testdata/models/tq-tiny-qwen3"); }

// A 120 MB generated checkpoint: long enough (with one thread) to cancel a running job.
const std::string& BigSource() {
  static const std::string dir = [] {
    const std::string d = MakeTempDir("big-src") + "/llama";
    CommandResult r = RunCommand(absl::StrCat(TestDataPath("tools/gen_checkpoint"), " --out ", d,
                                              " --hidden 512 --intermediate 1536 --layers 20",
                                              " --vocab 4096 --heads 8 --kv-heads 2"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return d;
  }();
  return dir;
}

std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> args = {}) {
  args.insert(args.begin(), {"--listen=127.0.0.1:0", "--metrics_host=127.0.0.1", "--metrics_port=0"});
  auto s = ServerProcess::Start(ServerBinary(), args, "compression-server");
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::unique_ptr<v1::Compression::Stub> Stub(const ServerProcess& s) {
  return v1::Compression::NewStub(grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials()));
}

v1::CompressRequest Request(const std::string& src, const std::string& dst) {
  v1::CompressRequest r;
  r.set_source_uri(src);
  r.set_destination_uri(dst);
  return r;
}

// Reads a Compress stream to its end: the updates and the final status.
struct StreamResult {
  std::vector<v1::Job> updates;
  grpc::Status status;
};

StreamResult RunCompress(v1::Compression::Stub& stub, const v1::CompressRequest& req) {
  grpc::ClientContext ctx;
  StreamResult r;
  auto stream = stub.Compress(&ctx, req);
  v1::CompressUpdate u;
  while (stream->Read(&u)) r.updates.push_back(u.job());
  r.status = stream->Finish();
  return r;
}

// Starts a Compress stream and returns once its job is running with a tensor done.
struct RunningJob {
  std::unique_ptr<grpc::ClientContext> ctx = std::make_unique<grpc::ClientContext>();
  std::unique_ptr<grpc::ClientReader<v1::CompressUpdate>> stream;
  std::string id;
};

RunningJob StartRunning(v1::Compression::Stub& stub, const v1::CompressRequest& req) {
  RunningJob j;
  j.stream = stub.Compress(j.ctx.get(), req);
  v1::CompressUpdate u;
  while (j.stream->Read(&u)) {
    j.id = u.job().job_id();
    if (u.job().state() == v1::JOB_STATE_RUNNING && u.job().progress().tensors_done() > 0) break;
  }
  return j;
}

v1::Job WaitForFinal(v1::Compression::Stub& stub, const std::string& id) {
  v1::Job job;
  for (int i = 0; i < 300; ++i) {
    grpc::ClientContext ctx;
    v1::GetJobRequest req;
    req.set_job_id(id);
    EXPECT_TRUE(stub.GetJob(&ctx, req, &job).ok());
    if (job.state() >= v1::JOB_STATE_SUCCEEDED) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "job " << id << " did not finish";
  return job;
}

// No manifest, and nothing half-written either.
void ExpectNothingPublished(const std::string& dir) {
  EXPECT_FALSE(PathExists(JoinPath(dir, kManifestName))) << dir;
  if (!IsDirectory(dir)) return;
  const std::vector<std::string> files = *ListDirectory(dir);
  for (const std::string& f : files) {
    EXPECT_EQ(f.find(".partial"), std::string::npos) << "partial file left: " << f;
  }
}

void PromtoolCheck(const std::string& metrics) {
  const std::string file = MakeTempDir("metrics") + "/metrics.txt";
  testing::WriteFileOrDie(file, metrics);
  CommandResult which = RunCommand("command -v promtool");
  ASSERT_EQ(which.exit_code, 0) << "promtool not found (Debian package prometheus; tools/setup.sh)";
  CommandResult r = RunCommand("promtool check metrics < " + file);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n" << metrics;
}

TEST(CompressionServerTest, HelpListsTheFlags) {
  CommandResult help = RunCommand(ServerBinary() + " --help");
  for (const char* flag : {"--listen", "--metrics_port", "--max_concurrent_jobs", "--max_queued_jobs",
                           "--drain_grace_seconds", "--tls_cert", "--auth_token"}) {
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag << "\n" << help.output;
  }
}

TEST(CompressionServerTest, HealthReflectionAndMetrics) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  for (const char* service : {"", "tq.compression.v1.Compression"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext rctx;
  auto rs = reflection->ServerReflectionInfo(&rctx);
  grpc::reflection::v1alpha::ServerReflectionRequest rreq;
  rreq.set_list_services("");
  ASSERT_TRUE(rs->Write(rreq));
  rs->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse rresp;
  ASSERT_TRUE(rs->Read(&rresp));
  std::vector<std::string> services;
  for (const auto& s : rresp.list_services_response().service()) services.push_back(s.name());
  EXPECT_NE(std::find(services.begin(), services.end(), "tq.compression.v1.Compression"), services.end());
  EXPECT_NE(std::find(services.begin(), services.end(), "grpc.health.v1.Health"), services.end());
  EXPECT_TRUE(rs->Finish().ok());

  auto metrics = testing::HttpGet(server->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_NE(metrics->find("tq_compression_jobs_started_total 0"), std::string::npos) << *metrics;
  PromtoolCheck(*metrics);
}

TEST(CompressionServerTest, CompressStreamsProgressAndPublishes) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  const std::string dst = MakeTempDir("out") + "/tiny";
  StreamResult r = RunCompress(*stub, Request(Tiny(), dst));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_GE(r.updates.size(), 3u);
  int last_done = -1;
  for (const v1::Job& j : r.updates) {
    EXPECT_GE(j.progress().tensors_done(), last_done);
    last_done = j.progress().tensors_done();
  }
  const v1::Job& final = r.updates.back();
  EXPECT_EQ(final.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(final.progress().tensors_done(), 69);
  EXPECT_NEAR(final.summary().compression_ratio(), 2.23, 0.01);
  EXPECT_EQ(final.summary().files(final.summary().files_size() - 1), kManifestName);
  EXPECT_EQ(final.summary().manifest_sha256().size(), 64u);
  EXPECT_TRUE(final.has_finished_at());

  auto store = OpenObjectStore(dst);
  auto report = VerifyCheckpoint(**store);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok());

  grpc::ClientContext ctx;
  v1::GetJobRequest get;
  get.set_job_id(final.job_id());
  v1::Job job;
  ASSERT_TRUE(stub->GetJob(&ctx, get, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);

  grpc::ClientContext lctx;
  v1::ListCheckpointsRequest lreq;
  lreq.set_prefix_uri("file://" + dst.substr(0, dst.rfind('/')));
  v1::ListCheckpointsResponse lresp;
  ASSERT_TRUE(stub->ListCheckpoints(&lctx, lreq, &lresp).ok());
  ASSERT_EQ(lresp.checkpoints_size(), 1);
  EXPECT_TRUE(lresp.checkpoints(0).complete());
  EXPECT_EQ(lresp.checkpoints(0).manifest_sha256(), final.summary().manifest_sha256());

  auto metrics = testing::HttpGet(server->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->find("tq_compression_jobs_completed_total{result=\"succeeded\"} 1"), std::string::npos);
  EXPECT_NE(metrics->find("tq_compression_tensors_total 69"), std::string::npos);
  PromtoolCheck(*metrics);
}

TEST(CompressionServerTest, BadRequestsGetClearStatuses) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  const std::string dst = MakeTempDir("bad") + "/x";
  v1::CompressRequest req = Request(Tiny(), dst);
  req.mutable_options()->set_bits(7);
  StreamResult r = RunCompress(*stub, req);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("bits"), std::string::npos);
  EXPECT_EQ(RunCompress(*stub, Request("", dst)).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  StreamResult missing = RunCompress(*stub, Request("/nonexistent/model", dst));
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::NOT_FOUND) << missing.status.error_message();
  ASSERT_FALSE(missing.updates.empty());
  EXPECT_EQ(missing.updates.back().state(), v1::JOB_STATE_FAILED);
  ExpectNothingPublished(dst);
  grpc::ClientContext ctx;
  v1::CancelJobRequest cancel;
  cancel.set_job_id("job-nope");
  v1::Job job;
  EXPECT_EQ(stub->CancelJob(&ctx, cancel, &job).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(CompressionServerTest, QueueBoundAndCancellation) {
  auto server = StartServer({"--max_concurrent_jobs=1", "--max_queued_jobs=1", "--threads_per_job=1"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  const std::string out = MakeTempDir("queue");
  RunningJob a = StartRunning(*stub, Request(BigSource(), out + "/a"));
  ASSERT_FALSE(a.id.empty());
  // B waits in the queue; C does not fit.
  grpc::ClientContext bctx;
  v1::CompressRequest breq = Request(BigSource(), out + "/b");
  breq.set_detach(true);
  auto bstream = stub->Compress(&bctx, breq);
  v1::CompressUpdate bu;
  ASSERT_TRUE(bstream->Read(&bu));
  EXPECT_EQ(bu.job().state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(bu.job().progress().queue_position(), 1);
  StreamResult c = RunCompress(*stub, Request(BigSource(), out + "/c"));
  EXPECT_EQ(c.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << c.status.error_message();
  // Cancel the queued job, then the running one.
  for (const std::string& id : {bu.job().job_id(), a.id}) {
    grpc::ClientContext ctx;
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::Job job;
    ASSERT_TRUE(stub->CancelJob(&ctx, req, &job).ok());
  }
  v1::CompressUpdate u;
  while (a.stream->Read(&u)) {
  }
  grpc::Status st = a.stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::CANCELLED) << st.error_message();
  EXPECT_EQ(WaitForFinal(*stub, a.id).state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(WaitForFinal(*stub, bu.job().job_id()).state(), v1::JOB_STATE_CANCELLED);
  bctx.TryCancel();
  ExpectNothingPublished(out + "/a");
  ExpectNothingPublished(out + "/b");
  auto metrics = testing::HttpGet(server->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->find("tq_compression_jobs_completed_total{result=\"cancelled\"} 2"), std::string::npos)
      << *metrics;
}

TEST(CompressionServerTest, ClientDisconnectCancelsTheJob) {
  auto server = StartServer({"--threads_per_job=1"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  const std::string dst = MakeTempDir("disc") + "/a";
  RunningJob a = StartRunning(*stub, Request(BigSource(), dst));
  ASSERT_FALSE(a.id.empty());
  a.ctx->TryCancel();
  (void)a.stream->Finish();
  EXPECT_EQ(WaitForFinal(*stub, a.id).state(), v1::JOB_STATE_CANCELLED);
  ExpectNothingPublished(dst);
}

TEST(CompressionServerTest, BearerToken) {
  auto server = StartServer({"--auth_token=s3cret"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  v1::GetJobRequest req;
  req.set_job_id("job-x");
  v1::Job job;
  grpc::ClientContext none;
  EXPECT_EQ(stub->GetJob(&none, req, &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext wrong;
  wrong.AddMetadata("authorization", "Bearer nope");
  EXPECT_EQ(stub->GetJob(&wrong, req, &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext right;
  right.AddMetadata("authorization", "Bearer s3cret");
  EXPECT_EQ(stub->GetJob(&right, req, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  // tqctl with the token runs a job; without it, it is refused.
  const std::string tqctl = TestDataPath("services/tqctl/tqctl");
  const std::string dst = MakeTempDir("tok") + "/t";
  CommandResult ok = RunCommand(absl::StrCat(tqctl, " compress ", Tiny(), " ", dst, " --server ",
                                             server->address(), " --token s3cret --quiet"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  CommandResult denied = RunCommand(absl::StrCat(tqctl, " list file://", dst, " --server ", server->address()));
  EXPECT_NE(denied.exit_code, 0) << denied.output;
}

TEST(CompressionServerTest, Tls) {
  const std::string dir = MakeTempDir("tls");
  CommandResult gen = RunCommand(absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ", dir, "/key.pem -out ", dir,
      "/cert.pem -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"));
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto server = StartServer({"--tls_cert=" + dir + "/cert.pem", "--tls_key=" + dir + "/key.pem"});
  ASSERT_NE(server, nullptr);
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = testing::ReadFileOrDie(dir + "/cert.pem");
  auto channel = grpc::CreateChannel("localhost:" + std::to_string(server->grpc_port()),
                                     grpc::SslCredentials(ssl));
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, {}, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  auto plain = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext pctx;
  pctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  EXPECT_FALSE(plain->Check(&pctx, {}, &resp).ok());
}

TEST(CompressionServerTest, SigtermCancelsRunningJobAfterGraceAndExitsCleanly) {
  auto server = StartServer({"--threads_per_job=1", "--drain_grace_seconds=0"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  const std::string dst = MakeTempDir("term") + "/a";
  RunningJob a = StartRunning(*stub, Request(BigSource(), dst));
  ASSERT_FALSE(a.id.empty());
  server->Signal(SIGTERM);
  v1::CompressUpdate u;
  while (a.stream->Read(&u)) {
  }
  EXPECT_EQ(a.stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  auto code = server->Wait(30);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << server->Log();
  ExpectNothingPublished(dst);
  EXPECT_NE(server->Log().find("\"msg\":\"draining\""), std::string::npos);
}

TEST(CompressionServerTest, SigtermLetsRunningJobFinish) {
  auto server = StartServer({"--threads_per_job=1", "--drain_grace_seconds=60"});
  ASSERT_NE(server, nullptr);
  auto stub = Stub(*server);
  const std::string dst = MakeTempDir("drain") + "/a";
  RunningJob a = StartRunning(*stub, Request(BigSource(), dst));
  ASSERT_FALSE(a.id.empty());
  server->Signal(SIGTERM);
  for (int i = 0; i < 200 && server->Log().find("\"msg\":\"draining\"") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // New jobs are refused while draining.
  StreamResult late = RunCompress(*stub, Request(Tiny(), dst + "-late"));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::UNAVAILABLE) << late.status.error_message();
  v1::CompressUpdate u;
  v1::Job last;
  while (a.stream->Read(&u)) last = u.job();
  EXPECT_TRUE(a.stream->Finish().ok());
  EXPECT_EQ(last.state(), v1::JOB_STATE_SUCCEEDED);
  auto code = server->Wait(60);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
  EXPECT_TRUE(PathExists(JoinPath(dst, kManifestName)));
}

}  // namespace
}  // namespace tq
