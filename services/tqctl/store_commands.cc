// tqctl verify / list / job: checkpoint integrity, the catalog under a prefix, remote jobs.
#include <cstdio>

#include "absl/strings/str_format.h"
#include "engine/checkpoint/catalog.h"
#include "engine/checkpoint/tq_checkpoint.h"
#include "engine/storage/object_store.h"
#include "proto/tq/compression/v1/compression.grpc.pb.h"
#include "services/tqctl/arg_parser.h"
#include "services/tqctl/commands.h"
#include "services/tqctl/grpc_client.h"
#include "services/tqctl/progress_bar.h"

namespace tq::tqctl {
namespace {

namespace v1 = ::tq::compression::v1;

int Fail(const char* cmd, const absl::Status& st) {
  absl::FPrintF(stderr, "tqctl %s: %s\n", cmd, st.ToString());
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

void AddServerOptions(ArgParser& p) {
  p.Option("token", "", "bearer token for --server (default $TQ_AUTH_TOKEN)");
  p.Option("tls-ca", "", "CA certificates (PEM) to reach --server over TLS");
}

}  // namespace

int RunVerify(const std::vector<std::string>& args) {
  ArgParser p("tqctl verify", "tqctl verify URI",
              "Checks every file of a tq-format checkpoint against its tq_manifest.json (exists, size,\n"
              "sha256), streaming. Exits 1 naming each bad file, or when the manifest is missing.");
  absl::Status st = p.Parse(args);
  if (!st.ok()) return Fail("verify", st);
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  if (p.positional().size() != 1) {
    absl::FPrintF(stderr, "tqctl verify: expected one checkpoint URI\n\n%s", p.Help());
    return 2;
  }
  auto store = OpenObjectStore(p.positional()[0]);
  if (!store.ok()) return Fail("verify", store.status());
  auto report = VerifyCheckpoint(**store);
  if (!report.ok()) return Fail("verify", report.status());
  for (const std::string& problem : report->problems) absl::PrintF("BAD  %s\n", problem);
  absl::PrintF("%s: %d files, %s checked against %s: %s\n", (*store)->Uri(), report->files_checked,
               HumanBytes(report->bytes_checked), "tq_manifest.json",
               report->ok() ? "OK" : absl::StrFormat("%d bad", report->problems.size()));
  return report->ok() ? 0 : 1;
}

int RunList(const std::vector<std::string>& args) {
  ArgParser p("tqctl list", "tqctl list PREFIX_URI [--server HOST:PORT]",
              "Lists the TQ checkpoints under a storage prefix and whether each is complete.");
  p.Option("server", "", "ask a compression server (ListCheckpoints) instead of reading directly");
  AddServerOptions(p);
  absl::Status st = p.Parse(args);
  if (!st.ok()) return Fail("list", st);
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  if (p.positional().size() != 1) {
    absl::FPrintF(stderr, "tqctl list: expected one prefix URI\n\n%s", p.Help());
    return 2;
  }
  auto print = [](const std::string& uri, bool complete, const std::string& format, int bits,
                  uint64_t bytes, const std::string& note) {
    absl::PrintF("%-9s %-6s TQ%-2d %10s  %s%s\n", complete ? "complete" : "INCOMPLETE", format,
                 bits, HumanBytes(bytes), uri, note.empty() ? "" : "  (" + note + ")");
  };
  if (!p.Get("server").empty()) {
    ServerTarget target{p.Get("server"), p.Get("tls-ca"), p.Get("token")};
    auto channel = Connect(target);
    if (!channel.ok()) return Fail("list", channel.status());
    auto stub = v1::Compression::NewStub(*channel);
    std::string token;
    do {
      grpc::ClientContext ctx;
      Authorize(target, &ctx);
      v1::ListCheckpointsRequest req;
      req.set_prefix_uri(p.positional()[0]);
      req.set_page_token(token);
      v1::ListCheckpointsResponse resp;
      grpc::Status gs = stub->ListCheckpoints(&ctx, req, &resp);
      if (!gs.ok()) {
        absl::FPrintF(stderr, "tqctl list: %s: %s\n", target.address, gs.error_message());
        return 1;
      }
      for (const auto& c : resp.checkpoints()) {
        print(c.uri(), c.complete(), c.format(), c.bits(), c.total_bytes(), c.problem());
      }
      token = resp.next_page_token();
    } while (!token.empty());
    return 0;
  }
  auto store = OpenObjectStore(p.positional()[0]);
  if (!store.ok()) return Fail("list", store.status());
  auto entries = ListCheckpoints(**store);
  if (!entries.ok()) return Fail("list", entries.status());
  for (const CatalogEntry& e : *entries) {
    print(e.uri, e.complete, e.format, e.bits, e.total_bytes, e.problem);
  }
  return 0;
}

int RunJob(const std::vector<std::string>& args) {
  ArgParser p("tqctl job", "tqctl job get|cancel JOB_ID --server HOST:PORT",
              "Shows or cancels a job of a compression server.");
  p.Option("server", "", "the compression server HOST:PORT (required)");
  AddServerOptions(p);
  absl::Status st = p.Parse(args);
  if (!st.ok()) return Fail("job", st);
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  if (p.positional().size() != 2 || p.Get("server").empty() ||
      (p.positional()[0] != "get" && p.positional()[0] != "cancel")) {
    absl::FPrintF(stderr, "tqctl job: expected get|cancel JOB_ID and --server\n\n%s", p.Help());
    return 2;
  }
  ServerTarget target{p.Get("server"), p.Get("tls-ca"), p.Get("token")};
  auto channel = Connect(target);
  if (!channel.ok()) return Fail("job", channel.status());
  auto stub = v1::Compression::NewStub(*channel);
  grpc::ClientContext ctx;
  Authorize(target, &ctx);
  v1::Job job;
  grpc::Status gs;
  if (p.positional()[0] == "get") {
    v1::GetJobRequest req;
    req.set_job_id(p.positional()[1]);
    gs = stub->GetJob(&ctx, req, &job);
  } else {
    v1::CancelJobRequest req;
    req.set_job_id(p.positional()[1]);
    gs = stub->CancelJob(&ctx, req, &job);
  }
  if (!gs.ok()) {
    absl::FPrintF(stderr, "tqctl job: %s\n", gs.error_message());
    return 1;
  }
  absl::PrintF("%s %s %s -> %s phase=%s tensors=%d/%d%s\n", job.job_id(),
               v1::JobState_Name(job.state()), job.request().source_uri(),
               job.request().destination_uri(), job.progress().phase(), job.progress().tensors_done(),
               job.progress().tensors_total(),
               job.error_message().empty() ? "" : " error: " + job.error_message());
  return 0;
}

}  // namespace tq::tqctl
