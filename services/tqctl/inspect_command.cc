// tqctl inspect CKPT: what a TQ checkpoint holds, and its error against the source.
#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/checkpoint/inspect.h"
#include "engine/util/file_util.h"
#include "nlohmann/json.hpp"
#include "services/tqctl/arg_parser.h"
#include "services/tqctl/commands.h"
#include "services/tqctl/progress_bar.h"

namespace tq::tqctl {
namespace {

int Fail(const absl::Status& st) {
  absl::FPrintF(stderr, "tqctl inspect: %s\n", st.ToString());
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

std::string Shape(const std::vector<int64_t>& s, bool exact) {
  return absl::StrCat("[", absl::StrJoin(s, ","), "]", exact ? "" : "*");
}

void PrintJson(const CheckpointReport& r) {
  nlohmann::ordered_json j;
  j["checkpoint"] = r.dir;
  j["mode"] = r.mode;
  if (!r.manifest_sha256.empty()) j["manifest_sha256"] = r.manifest_sha256;
  if (!r.source_uri.empty()) j["source"] = {{"uri", r.source_uri}, {"digest", r.source_digest}};
  j["quantized_tensors"] = r.quantized;
  j["passthrough_tensors"] = r.passthrough;
  j["stored_tensor_bytes"] = r.stored_tensor_bytes;
  j["file_bytes"] = r.file_bytes;
  j["source_tensor_bytes"] = r.source_tensor_bytes;
  j["compression_ratio"] = r.ratio();
  j["bits_per_quantized_weight"] = r.bits_per_quantized_weight();
  if (r.weighted_nmse) j["weighted_nmse"] = *r.weighted_nmse;
  j["tensors"] = nlohmann::ordered_json::array();
  for (const TensorStats& t : r.tensors) {
    nlohmann::ordered_json e;
    e["name"] = t.name;
    e["kind"] = t.quantized ? "tq" : "passthrough";
    e["shape"] = t.shape;
    if (t.quantized) {
      e["bits"] = t.bits;
      e["group_size"] = t.group_size;
      e["rotation_block"] = t.rotation_block;
      e["gain"] = t.gain;
    } else {
      e["dtype"] = t.dtype;
    }
    e["stored_bytes"] = t.stored_bytes;
    if (t.nmse) e["nmse"] = *t.nmse;
    if (t.kurtosis) e["kurtosis"] = *t.kurtosis;
    j["tensors"].push_back(e);
  }
  std::puts(j.dump(1).c_str());
}

}  // namespace

int RunInspect(const std::vector<std::string>& args) {
  ArgParser p("tqctl inspect", "tqctl inspect CKPT [--source SRC] [--json] [--summary]",
              "Lists the tensors of a TQ checkpoint (tq or plugin format): how each is stored, bytes,\n"
              "compression ratio, and with --source the per-tensor NMSE ||W-W'||^2/||W||^2.");
  p.Option("source", "", "the source checkpoint, to measure the quantization error");
  p.Option("threads", "0", "threads for the error measurement, 0 = all cores");
  p.Switch("json", "machine-readable output");
  p.Switch("summary", "totals only, no per-tensor table");
  absl::Status st = p.Parse(args);
  if (!st.ok()) return Fail(st);
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  if (p.positional().size() != 1) {
    absl::FPrintF(stderr, "tqctl inspect: expected one checkpoint\n\n%s", p.Help());
    return 2;
  }
  const std::string dir = p.positional()[0];
  const std::string source = p.Get("source");
  auto threads = p.GetInt("threads", 0, 4096);
  if (!threads.ok()) return Fail(threads.status());
  auto rep = InspectCheckpoint(dir, source, *threads);
  if (!rep.ok()) return Fail(rep.status());
  const CheckpointReport& r = *rep;
  if (p.GetSwitch("json")) {
    PrintJson(r);
    return 0;
  }
  absl::PrintF("checkpoint  %s (%s format)\n", r.dir, r.mode);
  if (!r.manifest_sha256.empty()) absl::PrintF("manifest    sha256 %s\n", r.manifest_sha256);
  if (!r.source_uri.empty()) absl::PrintF("source      %s (digest %s)\n", r.source_uri, r.source_digest);
  if (!p.GetSwitch("summary")) {
    absl::PrintF("\n%-56s %-16s %-10s %12s %10s\n", "tensor", "shape", "storage", "bytes",
                 source.empty() ? "" : "nmse");
    for (const TensorStats& t : r.tensors) {
      const std::string storage =
          t.quantized ? absl::StrFormat("TQ%d g%d%s", t.bits, t.group_size,
                                        t.rotation_block != t.group_size
                                            ? absl::StrCat(" b", t.rotation_block)
                                            : "")
                      : t.dtype;
      absl::PrintF("%-56s %-16s %-10s %12d %10s\n", t.name, Shape(t.shape, t.shape_exact), storage,
                   t.stored_bytes, t.nmse ? absl::StrFormat("%.6f", *t.nmse) : "");
    }
    absl::PrintF("\n");
  }
  absl::PrintF("tensors     %d (%d quantized, %d kept in high precision)\n",
               r.quantized + r.passthrough, r.quantized, r.passthrough);
  absl::PrintF("quantized   %d weights at %.3f bits/weight\n", r.quantized_params,
               r.bits_per_quantized_weight());
  absl::PrintF("bytes       %s of tensors (%s of files)", HumanBytes(r.stored_tensor_bytes),
               HumanBytes(r.file_bytes));
  if (r.source_tensor_bytes > 0) {
    absl::PrintF("; source %s -> %.2fx smaller", HumanBytes(r.source_tensor_bytes), r.ratio());
  }
  absl::PrintF("\n");
  if (r.weighted_nmse) absl::PrintF("error       weighted NMSE %.6f over quantized tensors\n", *r.weighted_nmse);
  return 0;
}

}  // namespace tq::tqctl
