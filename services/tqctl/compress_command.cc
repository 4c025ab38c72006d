// tqctl compress SRC DST: runs the streaming compressor in-process.
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/compress/compressor.h"
#include "engine/util/file_util.h"
#include "services/tqctl/arg_parser.h"
#include "services/tqctl/commands.h"
#include "services/tqctl/progress_bar.h"
#include "services/tqctl/remote_compress.h"

namespace tq::tqctl {
namespace {

int Fail(const absl::Status& st) {
  absl::FPrintF(stderr, "tqctl compress: %s\n", st.ToString());
  return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int RunCompress(const std::vector<std::string>& args) {
  ArgParser p("tqctl compress", "tqctl compress SRC DST [options]",
              "Compresses the Hugging Face checkpoint directory SRC (BF16/FP16/FP32 safetensors) "
              "into a TQ checkpoint at DST.\nSRC and DST are paths, file:// or s3://bucket/prefix URIs "
              "(AWS_* environment variables configure S3).");
  p.Option("bits", "3", "bit width of quantized weights: 2, 3 or 4");
  p.Option("group-size", "128", "weights per group (power of two; the plugin uses 128)");
  p.Option("policy", "uniform", "bit widths: uniform, or kurtosis (per-tensor; tq format only)");
  p.Option("kurtosis-thresholds", "4,15",
           "t1,t2 for --policy kurtosis: kappa<t1 base bits, <t2 base+1, else source dtype");
  p.Option("gain", "", "per-group gain: ls (least squares) or nc (plugin's norm correction); "
                       "default ls for tq, nc for plugin");
  p.Option("format", "tq", "tq (ours, with manifest) or plugin (turboquant-plus-vllm bytes)");
  p.Option("rotation-block", "0", "block-diagonal WHT block for dense 2-D weights (tq format), 0 = full");
  p.Option("rotation-block-include", "",
           "comma-separated name substrings: apply --rotation-block only to matching tensors");
  p.Option("threads", "0", "worker threads, 0 = all cores");
  p.Option("max-shard-size", "5GiB", "largest output shard");
  p.Option("original-model", "", "name recorded as the source (default: SRC as given)");
  p.Switch("quiet", "no progress output");
  p.Option("server", "", "run the job on a compression server HOST:PORT and follow its progress");
  p.Option("token", "", "bearer token for --server (default $TQ_AUTH_TOKEN)");
  p.Option("tls-ca", "", "CA certificates (PEM) to reach --server over TLS");
  p.Switch("detach", "with --server: queue the job and return its id without following it");
  absl::Status st = p.Parse(args);
  if (!st.ok()) return Fail(st);
  if (p.help_requested()) {
    std::fputs(p.Help().c_str(), stdout);
    return 0;
  }
  if (p.positional().size() != 2) {
    absl::FPrintF(stderr, "tqctl compress: expected SRC and DST\n\n%s", p.Help());
    return 2;
  }
  CompressOptions opt;
  opt.source = p.positional()[0];
  opt.destination = p.positional()[1];
  opt.original_model = p.IsSet("original-model") ? p.Get("original-model") : p.positional()[0];
  auto bits = p.GetInt("bits", 2, 4);
  if (!bits.ok()) return Fail(bits.status());
  opt.bits = *bits;
  auto group = p.GetInt("group-size", 1, 1 << 20);
  if (!group.ok()) return Fail(group.status());
  opt.group_size = *group;
  auto policy = ParseBitPolicy(p.Get("policy"));
  if (!policy.ok()) return Fail(policy.status());
  opt.policy = *policy;
  std::vector<std::string> th = absl::StrSplit(p.Get("kurtosis-thresholds"), ',');
  if (th.size() != 2 || !absl::SimpleAtod(th[0], &opt.thresholds.plus_one) ||
      !absl::SimpleAtod(th[1], &opt.thresholds.keep)) {
    return Fail(absl::InvalidArgumentError("--kurtosis-thresholds must be two numbers: t1,t2"));
  }
  if (!p.Get("gain").empty()) {
    auto gain = quant::ParseGainMode(p.Get("gain"));
    if (!gain.ok()) return Fail(gain.status());
    opt.gain = *gain;
  }
  auto format = ParseCheckpointFormat(p.Get("format"));
  if (!format.ok()) return Fail(format.status());
  opt.format = *format;
  auto block = p.GetInt("rotation-block", 0, 1 << 20);
  if (!block.ok()) return Fail(block.status());
  opt.rotation_block = *block;
  for (absl::string_view inc : absl::StrSplit(p.Get("rotation-block-include"), ',', absl::SkipEmpty())) {
    opt.rotation_block_include.emplace_back(inc);
  }
  auto threads = p.GetInt("threads", 0, 4096);
  if (!threads.ok()) return Fail(threads.status());
  opt.threads = *threads;
  auto shard = p.GetBytes("max-shard-size");
  if (!shard.ok()) return Fail(shard.status());
  opt.max_shard_bytes = *shard;

  if (!p.Get("server").empty()) {
    return RunRemoteCompress({p.Get("server"), p.Get("tls-ca"), p.Get("token")}, opt,
                             p.GetSwitch("quiet"), p.GetSwitch("detach"));
  }
  ProgressBar bar(stderr);
  const bool quiet = p.GetSwitch("quiet");
  auto result = Compress(opt, [&](const CompressProgress& pr) {
    if (!quiet) bar.Update(pr);
  });
  bar.Finish();
  if (!result.ok()) return Fail(result.status());
  const CompressResult& r = *result;
  absl::PrintF("compressed %d tensors (%d quantized, %d kept) in %.2f s on %d threads (%s kernels)\n",
               r.quantized + r.passthrough, r.quantized, r.passthrough, r.seconds, r.threads,
               r.kernel_isa);
  absl::PrintF("tensors: %s -> %s (%.2fx); %s/s of source, %s/s per thread\n",
               HumanBytes(r.source_tensor_bytes), HumanBytes(r.output_tensor_bytes), r.ratio(),
               HumanBytes(r.source_tensor_bytes / r.seconds),
               HumanBytes(r.source_tensor_bytes / r.seconds / r.threads));
  absl::PrintF("wrote %s: %s\n", r.destination_uri, absl::StrJoin(r.files, ", "));
  if (!r.manifest_sha256.empty()) absl::PrintF("manifest sha256 %s\n", r.manifest_sha256);
  return 0;
}

}  // namespace tq::tqctl
