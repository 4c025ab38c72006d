#include "services/compression/proto_convert.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace tq::compression {
namespace {

void SetTime(google::protobuf::Timestamp* ts, SystemTime t) {
  if (t == SystemTime{}) return;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  ts->set_seconds(ns / 1000000000);
  ts->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

v1::JobState StateToProto(JobState s) {
  switch (s) {
    case JobState::kQueued:
      return v1::JOB_STATE_QUEUED;
    case JobState::kRunning:
      return v1::JOB_STATE_RUNNING;
    case JobState::kSucceeded:
      return v1::JOB_STATE_SUCCEEDED;
    case JobState::kFailed:
      return v1::JOB_STATE_FAILED;
    case JobState::kCancelled:
      return v1::JOB_STATE_CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

v1::CompressRequest RequestToProtoImpl(const CompressOptions& o) {
  v1::CompressRequest r;
  r.set_source_uri(o.source);
  r.set_destination_uri(o.destination);
  auto* p = r.mutable_options();
  p->set_bits(o.bits);
  p->set_group_size(o.group_size);
  p->set_format(o.format == CheckpointFormat::kPlugin ? v1::CompressOptions::FORMAT_PLUGIN
                                                      : v1::CompressOptions::FORMAT_TQ);
  if (o.gain.has_value()) {
    p->set_gain(*o.gain == quant::GainMode::kNormCorrected  ? v1::CompressOptions::GAIN_NORM_CORRECTED
                : *o.gain == quant::GainMode::kLeastSquares ? v1::CompressOptions::GAIN_LEAST_SQUARES
                                                            : v1::CompressOptions::GAIN_RAW);
  }
  p->set_policy(o.policy == BitPolicy::kKurtosis ? v1::CompressOptions::POLICY_KURTOSIS
                                                 : v1::CompressOptions::POLICY_UNIFORM);
  p->set_kurtosis_plus_one(o.thresholds.plus_one);
  p->set_kurtosis_keep(o.thresholds.keep);
  p->set_rotation_block(o.rotation_block);
  for (const auto& inc : o.rotation_block_include) p->add_rotation_block_include(inc);
  p->set_max_shard_bytes(o.max_shard_bytes);
  if (!o.original_model.empty()) p->set_original_model(o.original_model);
  p->set_threads(o.threads);
  return r;
}

}  // namespace

v1::CompressRequest ToProtoRequest(const CompressOptions& options, bool detach) {
  v1::CompressRequest r = RequestToProtoImpl(options);
  r.set_detach(detach);
  return r;
}

absl::StatusOr<CompressOptions> FromProto(const v1::CompressRequest& r) {
  CompressOptions o;
  if (r.source_uri().empty()) return absl::InvalidArgumentError("source_uri is required");
  if (r.destination_uri().empty()) return absl::InvalidArgumentError("destination_uri is required");
  o.source = r.source_uri();
  o.destination = r.destination_uri();
  const v1::CompressOptions& p = r.options();
  if (p.has_bits()) o.bits = p.bits();
  if (p.has_group_size()) o.group_size = p.group_size();
  switch (p.format()) {
    case v1::CompressOptions::FORMAT_UNSPECIFIED:
    case v1::CompressOptions::FORMAT_TQ:
      o.format = CheckpointFormat::kTq;
      break;
    case v1::CompressOptions::FORMAT_PLUGIN:
      o.format = CheckpointFormat::kPlugin;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("options.format: unknown value ", p.format()));
  }
  switch (p.gain()) {
    case v1::CompressOptions::GAIN_UNSPECIFIED:
      break;
    case v1::CompressOptions::GAIN_NORM_CORRECTED:
      o.gain = quant::GainMode::kNormCorrected;
      break;
    case v1::CompressOptions::GAIN_LEAST_SQUARES:
      o.gain = quant::GainMode::kLeastSquares;
      break;
    case v1::CompressOptions::GAIN_RAW:
      o.gain = quant::GainMode::kRaw;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("options.gain: unknown value ", p.gain()));
  }
  switch (p.policy()) {
    case v1::CompressOptions::POLICY_UNSPECIFIED:
    case v1::CompressOptions::POLICY_UNIFORM:
      o.policy = BitPolicy::kUniform;
      break;
    case v1::CompressOptions::POLICY_KURTOSIS:
      o.policy = BitPolicy::kKurtosis;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("options.policy: unknown value ", p.policy()));
  }
  if (p.has_kurtosis_plus_one()) o.thresholds.plus_one = p.kurtosis_plus_one();
  if (p.has_kurtosis_keep()) o.thresholds.keep = p.kurtosis_keep();
  if (p.has_rotation_block()) o.rotation_block = p.rotation_block();
  for (const auto& inc : p.rotation_block_include()) o.rotation_block_include.push_back(inc);
  if (p.has_max_shard_bytes()) o.max_shard_bytes = p.max_shard_bytes();
  if (p.has_original_model()) o.original_model = p.original_model();
  if (p.has_threads()) {
    if (p.threads() < 0 || p.threads() > 4096) {
      return absl::InvalidArgumentError("options.threads must be in [0, 4096]");
    }
    o.threads = p.threads();
  }
  absl::Status st = ValidateCompressOptions(o);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("options: ", st.message()));
  return o;
}

v1::Job ToProto(const JobSnapshot& s) {
  v1::Job j;
  j.set_job_id(s.id);
  j.set_state(StateToProto(s.state));
  *j.mutable_request() = ToProtoRequest(s.options, false);
  auto* p = j.mutable_progress();
  p->set_phase(s.progress.phase);
  p->set_tensors_done(s.progress.tensors_done);
  p->set_tensors_total(s.progress.tensors_total);
  p->set_bytes_in_done(s.progress.bytes_in_done);
  p->set_bytes_in_total(s.progress.bytes_in_total);
  p->set_bytes_out_done(s.progress.bytes_out_done);
  p->set_bytes_out_total(s.progress.bytes_out_total);
  p->set_elapsed_seconds(s.progress.elapsed_s);
  const double rate = s.progress.elapsed_s > 0 ? s.progress.bytes_in_done / s.progress.elapsed_s : 0;
  p->set_bytes_per_second(rate);
  p->set_eta_seconds(rate > 0 ? (s.progress.bytes_in_total - s.progress.bytes_in_done) / rate : -1);
  p->set_current_tensor(s.progress.current);
  p->set_queue_position(s.queue_position);
  if (s.result.has_value()) {
    const CompressResult& r = *s.result;
    auto* m = j.mutable_summary();
    m->set_destination_uri(r.destination_uri);
    m->set_source_tensor_bytes(r.source_tensor_bytes);
    m->set_output_tensor_bytes(r.output_tensor_bytes);
    m->set_output_file_bytes(r.output_file_bytes);
    m->set_compression_ratio(r.ratio());
    m->set_manifest_sha256(r.manifest_sha256);
    m->set_quantized_tensors(r.quantized);
    m->set_passthrough_tensors(r.passthrough);
    m->set_seconds(r.seconds);
    for (const auto& f : r.files) m->add_files(f);
    if (r.seconds > 0) m->set_tensors_per_second((r.quantized + r.passthrough) / r.seconds);
  }
  if (!s.status.ok()) {
    j.set_error_code(static_cast<int32_t>(s.status.code()));
    j.set_error_message(std::string(s.status.message()));
  }
  SetTime(j.mutable_created_at(), s.created_at);
  SetTime(j.mutable_started_at(), s.started_at);
  SetTime(j.mutable_finished_at(), s.finished_at);
  return j;
}

}  // namespace tq::compression
