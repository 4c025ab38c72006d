// tq-compression-server: the compression gRPC service (tq.compression.v1.Compression), with
// grpc.health.v1, server reflection, Prometheus /metrics, optional TLS and bearer-token auth,
// and a SIGTERM drain (stop accepting; running jobs finish within the grace period or are
// cancelled with nothing half-published; exit 0).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/manifest.h"
#include "prometheus/registry.h"
#include "services/common/log.h"
#include "services/common/server_util.h"
#include "services/compression/compression_service.h"
#include "services/compression/job_manager.h"
#include "services/compression/metrics.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50052", "gRPC listen address HOST:PORT (port 0: any free port)");
ABSL_FLAG(std::string, metrics_host, "0.0.0.0", "address of the Prometheus /metrics endpoint");
ABSL_FLAG(int, metrics_port, 9092, "port of the Prometheus /metrics endpoint; -1 disables it, 0 picks one");
ABSL_FLAG(int, max_concurrent_jobs, 1, "jobs compressed at the same time");
ABSL_FLAG(int, max_queued_jobs, 8, "jobs waiting beyond the running ones; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, threads_per_job, 0, "quantization threads of a job that does not set them (0 = all cores)");
ABSL_FLAG(int, drain_grace_seconds, 30, "on SIGTERM, how long running jobs may take before they are cancelled");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain; with --tls_key serves TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, auth_token, "", "require 'authorization: Bearer <token>' on every RPC");
ABSL_FLAG(std::string, auth_token_file, "", "read the bearer token from this file instead");
ABSL_FLAG(std::string, port_file, "", "write the bound gRPC and metrics ports here (\"grpc metrics\")");

namespace {

using tq::LogError;
using tq::LogInfo;
using tq::LogWarning;

// Logs job transitions and forwards them to the metrics.
class LoggingListener : public tq::compression::JobListener {
 public:
  explicit LoggingListener(tq::compression::CompressionMetrics* metrics) : metrics_(metrics) {}
  void OnJobQueued(const tq::compression::JobSnapshot& j) override { metrics_->OnJobQueued(j); }
  void OnJobStarted(const tq::compression::JobSnapshot& j) override {
    LogInfo("job started", {{"job_id", j.id}, {"source", j.options.source},
                            {"destination", j.options.destination}});
    metrics_->OnJobStarted(j);
  }
  void OnJobFinished(const tq::compression::JobSnapshot& j) override {
    tq::LogFields f = {{"job_id", j.id}, {"state", tq::compression::JobStateName(j.state)},
                       {"tensors", absl::StrCat(j.progress.tensors_done)}};
    if (j.result) {
      f.push_back({"seconds", absl::StrCat(j.result->seconds)});
      f.push_back({"ratio", absl::StrCat(j.result->ratio())});
      f.push_back({"manifest_sha256", j.result->manifest_sha256});
    }
    if (!j.status.ok()) f.push_back({"error", j.status.ToString()});
    if (j.state == tq::compression::JobState::kFailed) {
      tq::LogError("job finished", f);
    } else {
      LogInfo("job finished", f);
    }
    metrics_->OnJobFinished(j);
  }
  tq::StorageObserver* storage_observer() override { return metrics_; }

 private:
  tq::compression::CompressionMetrics* metrics_;
};

int Fail(const std::string& msg) {
  LogError(msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  tq::ParseServerFlags(argc, argv, "tq-compression-server",
                       "compresses Hugging Face checkpoints into TQ checkpoints in object "
      "storage (file:// or s3://) over gRPC.\nUsage: tq-compression-server [--listen HOST:PORT] "
      "[--metrics_port N] [--max_concurrent_jobs N] [--tls_cert F --tls_key F] [--auth_token T]",
                       "services/compression/main.cc");

  // Signals go to one thread (sigwait); block them before any thread starts.
  sigset_t signals = tq::BlockShutdownSignals();

  auto token_or = tq::ResolveAuthToken(absl::GetFlag(FLAGS_auth_token), absl::GetFlag(FLAGS_auth_token_file));
  if (!token_or.ok()) return Fail(std::string(token_or.status().message()));
  const std::string token = *token_or;
  if (absl::GetFlag(FLAGS_max_concurrent_jobs) < 1 || absl::GetFlag(FLAGS_max_queued_jobs) < 0) {
    return Fail("--max_concurrent_jobs must be >= 1 and --max_queued_jobs >= 0");
  }

  auto registry = std::make_shared<prometheus::Registry>();
  tq::compression::CompressionMetrics metrics(*registry);
  std::unique_ptr<tq::MetricsServer> metrics_server;
  int metrics_port = -1;
  if (absl::GetFlag(FLAGS_metrics_port) >= 0) {
    auto started =
        tq::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_host), absl::GetFlag(FLAGS_metrics_port), registry);
    if (!started.ok()) return Fail(std::string(started.status().message()));
    metrics_server = std::move(*started);
    metrics_port = metrics_server->port();
  }

  tq::compression::JobManagerOptions jopt;
  jopt.max_running = absl::GetFlag(FLAGS_max_concurrent_jobs);
  jopt.max_queued = absl::GetFlag(FLAGS_max_queued_jobs);
  jopt.threads_per_job = absl::GetFlag(FLAGS_threads_per_job);
  LoggingListener listener(&metrics);
  tq::compression::JobManager jobs(jopt, &listener);
  tq::compression::ServiceOptions sopt;
  sopt.auth_token = token;
  sopt.observer = &metrics;
  tq::compression::CompressionService service(&jobs, sopt);

  auto creds = tq::MakeServerCredentials(absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key));
  if (!creds.ok()) return Fail(std::string(creds.status().message()));
  const bool tls = !absl::GetFlag(FLAGS_tls_cert).empty();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), *creds, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_listen)));
  }
  auto* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus("tq.compression.v1.Compression", true);
  tq::WritePortFile(absl::GetFlag(FLAGS_port_file), port, metrics_port);
  LogInfo("serving", {{"grpc_port", absl::StrCat(port)}, {"metrics_port", absl::StrCat(metrics_port)},
                      {"tls", tls ? "on" : "off"}, {"auth", token.empty() ? "off" : "bearer"},
                      {"version", tq::kTqserveVersion},
                      {"max_concurrent_jobs", absl::StrCat(jopt.max_running)},
                      {"max_queued_jobs", absl::StrCat(jopt.max_queued)}});

  int sig = 0;
  sigwait(&signals, &sig);
  const auto grace = std::chrono::seconds(absl::GetFlag(FLAGS_drain_grace_seconds));
  LogInfo("draining", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"},
                       {"running", absl::StrCat(jobs.running())}, {"queued", absl::StrCat(jobs.queued())},
                       {"grace_seconds", absl::StrCat(grace.count())}});
  health->SetServingStatus(false);
  const int cancelled = jobs.Drain(grace);
  // Streams of finished jobs end by themselves; give them a moment, then stop.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  LogInfo("stopped", {{"jobs_cancelled", absl::StrCat(cancelled)}});
  return 0;
}
