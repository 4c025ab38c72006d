#include "services/tqctl/remote_compress.h"

#include <signal.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "proto/tq/compression/v1/compression.grpc.pb.h"
#include "services/compression/proto_convert.h"
#include "services/tqctl/progress_bar.h"

namespace tq::tqctl {
namespace {

namespace v1 = ::tq::compression::v1;

CompressProgress FromProto(const v1::Progress& p) {
  CompressProgress c;
  c.phase = p.queue_position() > 0 ? absl::StrFormat("queued#%d", p.queue_position()) : p.phase();
  c.tensors_done = p.tensors_done();
  c.tensors_total = p.tensors_total();
  c.bytes_in_done = p.bytes_in_done();
  c.bytes_in_total = p.bytes_in_total();
  c.bytes_out_done = p.bytes_out_done();
  c.bytes_out_total = p.bytes_out_total();
  c.elapsed_s = p.elapsed_seconds();
  c.current = p.current_tensor();
  return c;
}

}  // namespace

int RunRemoteCompress(const ServerTarget& target, const CompressOptions& options, bool quiet,
                      bool detach) {
  auto channel = Connect(target);
  if (!channel.ok()) {
    absl::FPrintF(stderr, "tqctl compress: %s\n", channel.status().ToString());
    return 2;
  }
  auto stub = v1::Compression::NewStub(*channel);
  grpc::ClientContext ctx;
  Authorize(target, &ctx);

  // Ctrl-C / SIGTERM cancel the call, and with it the job.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::atomic<bool> done{false};
  std::thread canceller([&] {
    timespec tick{0, 100 * 1000 * 1000};
    while (!done) {
      if (sigtimedwait(&signals, nullptr, &tick) > 0) {
        absl::FPrintF(stderr, "\ntqctl: cancelling the job\n");
        ctx.TryCancel();
        return;
      }
    }
  });

  auto stream = stub->Compress(&ctx, compression::ToProtoRequest(options, detach));
  v1::CompressUpdate update;
  ProgressBar bar(stderr);
  v1::Job last;
  bool have_job = false;
  while (stream->Read(&update)) {
    last = update.job();
    have_job = true;
    if (detach) {
      absl::PrintF("queued job %s\n", last.job_id());
      ctx.TryCancel();
      break;
    }
    if (!quiet) bar.Update(FromProto(last.progress()));
  }
  grpc::Status st = stream->Finish();
  done = true;
  canceller.join();
  bar.Finish();
  if (detach && have_job) return 0;
  if (!st.ok()) {
    absl::FPrintF(stderr, "tqctl compress: %s job %s: %s (%d)\n", target.address,
                  have_job ? last.job_id() : "?", st.error_message(),
                  static_cast<int>(st.error_code()));
    return st.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? 2 : 1;
  }
  const v1::Summary& s = last.summary();
  absl::PrintF("job %s on %s: compressed %d tensors (%d quantized, %d kept) in %.2f s\n",
               last.job_id(), target.address, s.quantized_tensors() + s.passthrough_tensors(),
               s.quantized_tensors(), s.passthrough_tensors(), s.seconds());
  absl::PrintF("tensors: %s -> %s (%.2fx)\n", HumanBytes(s.source_tensor_bytes()),
               HumanBytes(s.output_tensor_bytes()), s.compression_ratio());
  absl::PrintF("wrote %s: %s\n", s.destination_uri(), absl::StrJoin(s.files(), ", "));
  if (!s.manifest_sha256().empty()) absl::PrintF("manifest sha256 %s\n", s.manifest_sha256());
  return 0;
}

}  // namespace tq::tqctl
