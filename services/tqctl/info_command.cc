// tqctl info --server: what an inference server serves (GetModelInfo) and its load (GetLoads).
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "services/tqctl/arg_parser.h"
#include "services/tqctl/commands.h"
#include "services/tqctl/grpc_client.h"
#include "services/tqctl/inference_client.h"
#include "services/tqctl/progress_bar.h"

namespace tq::tqctl {
namespace {

int Fail(const absl::Status& st) {
  absl::FPrintF(stderr, "tqctl info: %s\n", st.ToString());
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<nlohmann::ordered_json> ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  std::string s;
  if (auto st = google::protobuf::util::MessageToJsonString(m, &s, o); !st.ok()) {
    return absl::InternalError(absl::StrCat("cannot print ", m.GetTypeName(), " as JSON: ", st.ToString()));
  }
  return nlohmann::ordered_json::parse(s);
}

std::string OrNone(const std::string& s) { return s.empty() ? "-" : s; }

std::string Quantization(const inference_v1::QuantizationInfo& q) {
  if (q.bits_size() == 0) return absl::StrFormat("none (%d dense linear layers)", q.dense_linears());
  return absl::StrFormat("TQ%s g%d, codebook %s, gain %s, policy %s, %.2f bits/weight; "
                         "%d quantized + %d dense linear layers",
                         absl::StrJoin(q.bits(), "/"), q.group_size(), OrNone(q.codebook()), OrNone(q.gain()),
                         OrNone(q.policy()), q.bits_per_weight(), q.quantized_linears(), q.dense_linears());
}

// Startup phases in the server's order, then any others by name.
std::string StartupPhases(const google::protobuf::Map<std::string, double>& phases) {
  if (phases.empty()) return "-";
  static const char* const kOrder[] = {"open", "verify", "bind", "tokenizer", "kv_alloc", "warmup"};
  std::map<std::string, double> rest(phases.begin(), phases.end());
  std::vector<std::string> parts;
  double total = 0;
  for (const char* name : kOrder) {
    if (auto it = rest.find(name); it != rest.end()) {
      parts.push_back(absl::StrFormat("%s %.3f s", it->first, it->second));
      total += it->second;
      rest.erase(it);
    }
  }
  for (const auto& [name, s] : rest) {
    parts.push_back(absl::StrFormat("%s %.3f s", name, s));
    total += s;
  }
  return absl::StrFormat("%s; total %.3f s", absl::StrJoin(parts, ", "), total);
}

void PrintReadable(const std::string& address, const inference_v1::ModelInfo& m, const inference_v1::Loads& l) {
  auto row = [](const char* key, const std::string& value) { absl::PrintF("  %-14s %s\n", key, value); };
  absl::PrintF("server %s (%s)\n", address, OrNone(m.server_version()));
  absl::PrintF("model %s\n", m.model_uri());
  row("architecture", absl::StrFormat("%s (%s), %d layers, hidden size %d, vocabulary %d", OrNone(m.architecture()),
                                      OrNone(m.model_type()), m.num_layers(), m.hidden_size(), m.vocab_size()));
  row("checkpoint", absl::StrFormat("%s, %s of weights, manifest sha256 %s", OrNone(m.checkpoint_format()),
                                    HumanBytes(static_cast<double>(m.weight_bytes())), OrNone(m.manifest_sha256())));
  row("quantization", Quantization(m.quantization()));
  row("context", absl::StrFormat("%d tokens; eos ids %s", m.max_context_length(),
                                 m.eos_token_ids().empty() ? "-" : absl::StrJoin(m.eos_token_ids(), " ")));
  row("kv cache", absl::StrFormat("%s, %d bytes/token, capacity %d tokens", OrNone(m.kv_codec()),
                                  m.kv_bytes_per_token(), m.kv_capacity_tokens()));
  row("device", absl::StrFormat("%s, tensor parallel %d", OrNone(m.device()), m.tensor_parallel_size()));
  row("tokenizer", m.has_tokenizer() ? "yes (text prompts, Tokenize)" : "no (token id prompts only)");
  absl::PrintF("loads\n");
  row("state", l.draining() ? "draining" : l.ready() ? "ready" : "not ready");
  row("requests", absl::StrFormat("%d running, %d waiting (%d prompt tokens waiting)", l.running(), l.waiting(),
                                  l.waiting_tokens()));
  row("kv cache", absl::StrFormat("%.1f%% used (%d of %d blocks), capacity %d tokens", 100 * l.kv_cache_usage(),
                                  l.kv_blocks_used(), l.kv_blocks_total(), l.kv_capacity_tokens()));
  row("since start", absl::StrFormat("%d requests finished, %d aborted; %d prompt + %d generated tokens; "
                                     "%d preemptions",
                                     l.requests_finished(), l.requests_aborted(), l.prompt_tokens(),
                                     l.generation_tokens(), l.preemptions()));
  row("startup", StartupPhases(l.startup_phase_seconds()));
}

}  // namespace

int RunInfo(const std::vector<std::string>& args) {
  ArgParser p("tqctl info", "tqctl info --server HOST:PORT [--json]",
              "Shows what an inference server serves (GetModelInfo: model, quantization, context, KV\n"
              "cache, device) and its load (GetLoads: running and waiting requests, KV cache usage,\n"
              "readiness, totals, startup phases). --json prints {\"model_info\": ..., \"loads\": ...}\n"
              "with the proto's field names.");
  p.Option("server", "", "the inference server HOST:PORT (required)");
  p.Option("token", "", "bearer token (default $TQ_AUTH_TOKEN)");
  p.Option("tls-ca", "", "CA certificates (PEM) to reach the server over TLS");
  p.Option("timeout-ms", "10000", "deadline of each call");
  p.Switch("json", "machine-readable output");
  if (auto st = p.Parse(args); !st.ok()) {
    absl::FPrintF(stderr, "tqctl info: %s\n\n%s", st.message(), p.Help());
    return 2;
  }
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  if (p.Get("server").empty() || !p.positional().empty()) {
    absl::FPrintF(stderr, "tqctl info: --server HOST:PORT is required (and no positional arguments)\n\n%s",
                  p.Help());
    return 2;
  }
  auto timeout_ms = p.GetInt("timeout-ms", 1, INT32_MAX);
  if (!timeout_ms.ok()) return Fail(timeout_ms.status());
  const ServerTarget target{p.Get("server"), p.Get("tls-ca"), p.Get("token")};
  auto channel = Connect(target);
  if (!channel.ok()) return Fail(channel.status());
  auto stub = inference_v1::Inference::NewStub(*channel);
  auto deadline = [&] { return std::chrono::system_clock::now() + std::chrono::milliseconds(*timeout_ms); };

  inference_v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    Authorize(target, &ctx);
    ctx.set_deadline(deadline());
    const grpc::Status st = stub->GetModelInfo(&ctx, inference_v1::GetModelInfoRequest(), &info);
    if (!st.ok()) {
      absl::FPrintF(stderr, "tqctl info: %s: GetModelInfo: %s\n", target.address, StatusFromGrpc(st, ctx).ToString());
      return 1;
    }
  }
  inference_v1::Loads loads;
  {
    grpc::ClientContext ctx;
    Authorize(target, &ctx);
    ctx.set_deadline(deadline());
    const grpc::Status st = stub->GetLoads(&ctx, inference_v1::GetLoadsRequest(), &loads);
    if (!st.ok()) {
      absl::FPrintF(stderr, "tqctl info: %s: GetLoads: %s\n", target.address, StatusFromGrpc(st, ctx).ToString());
      return 1;
    }
  }
  if (p.GetSwitch("json")) {
    auto mj = ToJson(info);
    if (!mj.ok()) return Fail(mj.status());
    auto lj = ToJson(loads);
    if (!lj.ok()) return Fail(lj.status());
    nlohmann::ordered_json j;
    j["server"] = target.address;
    j["model_info"] = *mj;
    j["loads"] = *lj;
    absl::PrintF("%s\n", j.dump(2));
    return 0;
  }
  PrintReadable(target.address, info, loads);
  return 0;
}

}  // namespace tq::tqctl
