// tq-inference-server: serves one model (a TQ or BF16 checkpoint from file:// or s3://) over
// gRPC (tq.inference.v1.Inference), with grpc.health.v1, server reflection, Prometheus /metrics
// (vLLM-compatible names), optional TLS and bearer-token auth.
//
// Startup: listen first (health NOT_SERVING, RPCs UNAVAILABLE "loading"), then open and verify
// the checkpoint, allocate the KV cache, run a warm-up generation, and only then report SERVING.
// SIGTERM/SIGINT: report NOT_SERVING, refuse new requests with UNAVAILABLE, let running ones
// finish within --drain_grace_seconds, abort what is left, exit 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/manifest.h"
#include "engine/runtime/engine.h"
#include "prometheus/registry.h"
#include "services/common/log.h"
#include "services/common/server_util.h"
#include "services/inference/inference_service.h"
#include "services/inference/metrics.h"

ABSL_FLAG(std::string, model, "", "checkpoint to serve: a directory, file:///path or s3://bucket/prefix (required)");
ABSL_FLAG(std::string, served_model_name, "", "model_name label of the metrics (default: the URI's last part)");
ABSL_FLAG(std::string, device, "cpu", "where to run the model: cpu or cuda");
ABSL_FLAG(int, cuda_device, 0, "CUDA device ordinal (with --device cuda)");
ABSL_FLAG(bool, host_sampling, false,
          "with --device cuda: sample on the host (the CPU backend's sampler and generator) instead of on "
          "the GPU");
ABSL_FLAG(bool, tq_int8_gemv, false,
          "with --device cuda: one-token decode steps run TQ3 layers on int8 activations (W3A8; faster, not "
          "the checkpoint's float arithmetic; docs/ENGINE.md)");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address HOST:PORT (port 0: any free port)");
ABSL_FLAG(std::string, metrics_host, "0.0.0.0", "address of the Prometheus /metrics endpoint");
ABSL_FLAG(int, metrics_port, 9091, "port of the Prometheus /metrics endpoint; -1 disables it, 0 picks one");
ABSL_FLAG(std::string, metrics_prefix, "vllm:",
          "prefix of the vLLM-compatible metrics (\"vllm:\" keeps vLLM dashboards working; e.g. \"tq:\")");
ABSL_FLAG(int, threads, 0, "compute threads (0: all cores)");
ABSL_FLAG(int, max_num_seqs, 32, "sequences batched at once");
ABSL_FLAG(int64_t, max_num_batched_tokens, 512, "token budget of one engine step (decodes + prefill chunks)");
ABSL_FLAG(int, max_waiting_requests, 256, "queued requests beyond this get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_waiting_tokens, 0,
          "queued prompt tokens beyond this get RESOURCE_EXHAUSTED (0: no limit; ~ target TTFT x prefill rate)");
ABSL_FLAG(int64_t, kv_cache_bytes, 0, "KV cache size in bytes (0: room for max_num_seqs full contexts, <= 1 GiB)");
ABSL_FLAG(std::string, kv_codec, "bf16",
          "KV cache codec: bf16, fp32, fp8, k8v4, 4bit_nc, k3v4_nc, 3bit_nc, turbo4, turbo3, k4v3, with "
          "options after a colon (sink=N, boundary=N, qjl=0|1); with --device cuda: bf16, turbo3, turbo4, k4v3 "
          "(no qjl; MLA models: bf16)");
ABSL_FLAG(std::string, kv_cache, "", "the same as --kv_codec (a KV cache preset name)");
ABSL_FLAG(int64_t, max_model_len, 0, "context length (0: the model's max_position_embeddings)");
ABSL_FLAG(int64_t, default_max_tokens, 16, "max_tokens of requests that do not set it");
ABSL_FLAG(bool, verify_checksums, true, "verify every TQ checkpoint file's sha256 against its manifest");
ABSL_FLAG(int, drain_grace_seconds, 30, "on SIGTERM, how long running requests may take before they are aborted");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain; with --tls_key serves TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, auth_token, "", "require 'authorization: Bearer <token>' on every RPC (health excluded)");
ABSL_FLAG(std::string, auth_token_file, "", "read the bearer token from this file instead");
ABSL_FLAG(std::string, port_file, "", "write the bound gRPC and metrics ports here (\"grpc metrics\") once listening");
ABSL_FLAG(int, debug_load_delay_ms, 0, "(testing) wait this long before loading, to observe NOT_SERVING");

namespace {

using tq::LogError;
using tq::LogInfo;
constexpr char kServiceName[] = "tq.inference.v1.Inference";

int Fail(const std::string& msg) {
  LogError(msg);
  return 2;
}

std::string DefaultModelName(std::string uri) {
  while (!uri.empty() && uri.back() == '/') uri.pop_back();
  const size_t slash = uri.find_last_of('/');
  return slash == std::string::npos ? uri : uri.substr(slash + 1);
}

// One short greedy generation, so the first real request does not pay for cold caches.
absl::Status WarmUp(tq::Engine& engine) {
  tq::GenerationRequest r;
  const int32_t vocab = static_cast<int32_t>(engine.model_info().config.vocab_size);
  for (int32_t i = 1; i <= 4; ++i) r.prompt_ids.push_back(std::min(i, vocab - 1));
  r.max_tokens = 2;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  auto done = std::make_shared<std::promise<tq::GenerationEvent>>();
  auto id = engine.Submit(r, [done](const tq::GenerationEvent& ev) {
    if (ev.finished) done->set_value(ev);
  });
  if (!id.ok()) return id.status();
  auto f = done->get_future();
  if (f.wait_for(std::chrono::minutes(10)) != std::future_status::ready) {
    return absl::DeadlineExceededError("warm-up generation did not finish in 10 minutes");
  }
  tq::GenerationEvent ev = f.get();
  if (ev.finish_reason == tq::FinishReason::kError) return ev.status;
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  tq::ParseServerFlags(argc, argv, "tq-inference-server",
                       "serves a TQ or BF16 checkpoint over gRPC (tq.inference.v1.Inference) with health, reflection and "
      "Prometheus metrics.\nUsage: tq-inference-server --model URI [--listen HOST:PORT] [--metrics_port N] "
      "[--max_num_seqs N] [--max_waiting_requests N] [--kv_cache_bytes N] [--tls_cert F --tls_key F] "
      "[--auth_token T]",
                       "services/inference/main.cc");

  // Signals go to one thread (sigwait); block them before any thread starts.
  sigset_t signals = tq::BlockShutdownSignals();

  const std::string model_uri = absl::GetFlag(FLAGS_model);
  if (model_uri.empty()) return Fail("--model is required (a directory, file:// or s3:// URI)");
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda") return Fail(absl::StrCat("--device must be cpu or cuda, got \"", device, "\""));
  if (absl::GetFlag(FLAGS_max_waiting_requests) < 0 || absl::GetFlag(FLAGS_drain_grace_seconds) < 0 ||
      absl::GetFlag(FLAGS_default_max_tokens) < 1) {
    return Fail("--max_waiting_requests and --drain_grace_seconds must be >= 0, --default_max_tokens >= 1");
  }
  auto token = tq::ResolveAuthToken(absl::GetFlag(FLAGS_auth_token), absl::GetFlag(FLAGS_auth_token_file));
  if (!token.ok()) return Fail(std::string(token.status().message()));
  auto creds = tq::MakeServerCredentials(absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key));
  if (!creds.ok()) return Fail(std::string(creds.status().message()));

  std::string model_name = absl::GetFlag(FLAGS_served_model_name);
  if (model_name.empty()) model_name = DefaultModelName(model_uri);
  auto registry = std::make_shared<prometheus::Registry>();
  tq::inference::MetricsOptions mopt;
  mopt.prefix = absl::GetFlag(FLAGS_metrics_prefix);
  mopt.model_name = model_name;
  mopt.max_model_len = absl::GetFlag(FLAGS_max_model_len) > 0 ? absl::GetFlag(FLAGS_max_model_len) : 131072;
  std::unique_ptr<tq::inference::InferenceMetrics> metrics;
  try {
    metrics = std::make_unique<tq::inference::InferenceMetrics>(*registry, mopt);
  } catch (const std::exception& e) {
    return Fail(absl::StrCat("--metrics_prefix \"", mopt.prefix, "\" makes invalid metric names: ", e.what()));
  }
  std::unique_ptr<tq::MetricsServer> metrics_server;
  int metrics_port = -1;
  if (absl::GetFlag(FLAGS_metrics_port) >= 0) {
    auto started =
        tq::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_host), absl::GetFlag(FLAGS_metrics_port), registry);
    if (!started.ok()) return Fail(std::string(started.status().message()));
    metrics_server = std::move(*started);
    metrics_port = metrics_server->port();
  }

  tq::inference::ServiceOptions sopt;
  sopt.auth_token = *token;
  sopt.device = device;
  sopt.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  tq::inference::InferenceService service(sopt, metrics.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), *creds, &port);
  builder.RegisterService(&service);
  // Tolerate clients' keepalive pings every 10 s (SERVING.md §1: vLLM's setting).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return Fail(absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_listen)));
  auto* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  metrics->SetReady(false);
  tq::WritePortFile(absl::GetFlag(FLAGS_port_file), port, metrics_port);
  LogInfo("listening; loading the model", {{"grpc_port", absl::StrCat(port)},
                                           {"metrics_port", absl::StrCat(metrics_port)},
                                           {"model", model_uri},
                                           {"tls", absl::GetFlag(FLAGS_tls_cert).empty() ? "off" : "on"},
                                           {"auth", token->empty() ? "off" : "bearer"},
                                           {"version", tq::kTqserveVersion}});

  // Signals: a thread waits for one and wakes main.
  std::mutex sig_mu;
  std::condition_variable sig_cv;
  int got_signal = 0;
  std::thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::lock_guard<std::mutex> l(sig_mu);
    got_signal = sig;
    sig_cv.notify_all();
  }).detach();
  auto signalled = [&] {
    std::lock_guard<std::mutex> l(sig_mu);
    return got_signal != 0;
  };

  if (absl::GetFlag(FLAGS_debug_load_delay_ms) > 0) {
    std::unique_lock<std::mutex> l(sig_mu);
    sig_cv.wait_for(l, std::chrono::milliseconds(absl::GetFlag(FLAGS_debug_load_delay_ms)),
                    [&] { return got_signal != 0; });
  }

  // Load.
  tq::EngineOptions eopt;
  eopt.model_uri = model_uri;
  eopt.device = device;
  eopt.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  eopt.device_sampling = !absl::GetFlag(FLAGS_host_sampling);
  eopt.tq_int8_gemv = absl::GetFlag(FLAGS_tq_int8_gemv);
  eopt.verify_checksums = absl::GetFlag(FLAGS_verify_checksums);
  eopt.threads = absl::GetFlag(FLAGS_threads);
  eopt.kv_codec = absl::GetFlag(FLAGS_kv_codec);
  if (!absl::GetFlag(FLAGS_kv_cache).empty()) eopt.kv_codec = absl::GetFlag(FLAGS_kv_cache);
  eopt.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  eopt.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  eopt.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  eopt.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  eopt.max_waiting = absl::GetFlag(FLAGS_max_waiting_requests);
  eopt.max_waiting_tokens = absl::GetFlag(FLAGS_max_waiting_tokens);
  eopt.on_step = [m = metrics.get()](const tq::StepInfo& s) { m->OnStep(s); };
  eopt.store.observer = metrics.get();
  const auto load_start = std::chrono::steady_clock::now();
  auto engine = tq::Engine::Create(eopt);
  if (!engine.ok()) {
    LogError("cannot load the model", {{"model", model_uri}, {"error", engine.status().ToString()}});
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    return 1;
  }
  const tq::ModelInfo& info = (*engine)->model_info();
  metrics->SetModel(info, device, 1);
  service.SetEngine(engine->get());
  for (const auto& [phase, s] : {std::pair<const char*, double>{"open", info.load.open_s},
                                 {"verify", info.load.verify_s},
                                 {"bind", info.load.bind_s},
                                 {"tokenizer", info.tokenizer_s},
                                 {"kv_alloc", info.kv_alloc_s}}) {
    service.SetStartupPhase(phase, s);
  }
  const auto warm_start = std::chrono::steady_clock::now();
  if (absl::Status w = WarmUp(**engine); !w.ok()) {
    LogError("warm-up generation failed", {{"error", w.ToString()}});
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    return 1;
  }
  const double warmup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - warm_start).count();
  const double startup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  metrics->SetStartupPhase("warmup", warmup_s);
  service.SetStartupPhase("warmup", warmup_s);

  if (!signalled()) {
    service.SetReady(true);
    health->SetServingStatus(true);
    health->SetServingStatus(kServiceName, true);
    metrics->SetReady(true);
    LogInfo("serving", {{"model", model_uri},
                        {"format", info.checkpoint_kind},
                        {"architecture", info.config.architecture},
                        {"runner", info.runner},
                        {"weight_bytes", absl::StrCat(info.weight_file_bytes)},
                        {"kv_codec", info.kv_codec},
                        {"kv_layout", info.kv_layout},
                        {"kv_capacity_tokens", absl::StrCat(info.kv_capacity_tokens)},
                        {"max_model_len", absl::StrCat(info.max_model_len)},
                        {"startup_seconds", absl::StrCat(startup_s)}});
  }

  // Engine gauges between requests.
  std::atomic<bool> stop_ticker{false};
  std::thread ticker([&] {
    while (!stop_ticker.load()) {
      metrics->UpdateEngineStats((*engine)->stats());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });

  {
    std::unique_lock<std::mutex> l(sig_mu);
    sig_cv.wait(l, [&] { return got_signal != 0; });
  }
  const auto grace = std::chrono::seconds(absl::GetFlag(FLAGS_drain_grace_seconds));
  LogInfo("draining", {{"signal", got_signal == SIGTERM ? "SIGTERM" : "SIGINT"},
                       {"in_flight", absl::StrCat(service.in_flight())},
                       {"grace_seconds", absl::StrCat(grace.count())}});
  service.BeginDrain();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  metrics->SetReady(false);
  int aborted = 0;
  if (!service.WaitIdle(grace)) {
    aborted = service.AbortAll();
    service.WaitIdle(std::chrono::seconds(10));
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  stop_ticker.store(true);
  ticker.join();
  LogInfo("stopped", {{"aborted_at_deadline", absl::StrCat(aborted)}});
  return 0;
}
