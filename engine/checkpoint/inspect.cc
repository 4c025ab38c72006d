#include "engine/checkpoint/inspect.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/source_checkpoint.h"
#include "engine/util/file_util.h"
#include "engine/util/sha256.h"
#include "engine/util/thread_pool.h"
#include "kernels/util/status_macros.h"

namespace tq {
namespace {

// Error of one quantized tensor against its source, in row blocks.
absl::StatusOr<double> MeasureNmse(const TqTensor& t, const SourceTensor& s, ThreadPool& pool,
                                   double* energy_out) {
  const TensorInfo& si = *s.info;
  const int64_t cols = si.shape.empty() ? 0 : si.shape.back();
  const int64_t rows = cols > 0 ? si.numel() / cols : 0;
  const int64_t g = t.spec.group_size;
  if (rows != t.rows || (cols + g - 1) / g != (t.cols + g - 1) / g) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", t.name, "\": source shape does not match the checkpoint (", rows, "x", cols,
        " vs ", t.rows, "x", t.cols, ")"));
  }
  TQ_ASSIGN_OR_RETURN(quant::TqQuantizer q, quant::TqQuantizer::Create(t.spec));
  TQ_ASSIGN_OR_RETURN(TensorBytes src_bytes, s.Fetch());
  const int64_t ngr = q.GroupsPerRow(cols);
  const int64_t bpg = t.spec.bytes_per_group();
  const auto* packed = reinterpret_cast<const uint8_t*>(t.packed.data().data());
  const char* norms = t.norms.data().data();
  std::mutex mu;
  double err = 0, energy = 0;
  absl::Status status;
  const int64_t block = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(cols, 1));
  pool.ParallelFor(rows, block, [&](int64_t r0, int64_t r1) {
    std::vector<float> ref, dec, gains;
    double e = 0, en = 0;
    for (int64_t r = r0; r < r1; r += block) {
      const int64_t re = std::min(r1, r + block);
      const int64_t n = (re - r) * cols;
      ref.resize(n);
      dec.resize(n);
      gains.resize((re - r) * ngr);
      std::memcpy(gains.data(), norms + r * ngr * sizeof(float), gains.size() * sizeof(float));
      absl::Status st = ConvertToFloat(
          si.dtype, src_bytes.data().data() + r * cols * DTypeSize(si.dtype), n, ref.data());
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        status = st;
        return;
      }
      q.DequantizeRows(packed + r * ngr * bpg, gains.data(), re - r, cols, dec.data());
      for (int64_t i = 0; i < n; ++i) {
        const double d = double(ref[i]) - dec[i];
        e += d * d;
        en += double(ref[i]) * ref[i];
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    err += e;
    energy += en;
  });
  TQ_RETURN_IF_ERROR(status);
  *energy_out = energy;
  return energy > 0 ? err / energy : 0.0;
}

}  // namespace

absl::StatusOr<CheckpointReport> InspectCheckpoint(const std::string& dir,
                                                   const std::string& source_dir, int threads) {
  CheckpointReport rep;
  TQ_ASSIGN_OR_RETURN(auto ck, TqCheckpoint::Open(dir, VerifyLevel::kSizes));
  rep.dir = ck->uri();
  std::unique_ptr<SourceCheckpoint> src;
  if (!source_dir.empty()) {
    TQ_ASSIGN_OR_RETURN(src, SourceCheckpoint::Open(source_dir));
  }
  ThreadPool pool(threads > 0 ? threads : ThreadPool::HardwareThreads());

  rep.mode = ck->mode() == TqCheckpointMode::kTq ? "tq" : "plugin";
  rep.file_bytes = ck->file_bytes();
  if (ck->manifest().has_value()) {
    const Manifest& m = *ck->manifest();
    TQ_ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenObjectStore(dir));
    TQ_ASSIGN_OR_RETURN(std::string text, ReadObject(*store, kManifestName));
    rep.manifest_sha256 = Sha256Hex(text);
    rep.source_uri = m.source_uri;
    rep.source_digest = m.source_digest;
    rep.source_tensor_bytes = m.source_tensor_bytes;
  }
  std::map<std::string, const SourceTensor*> by_name;
  if (src) {
    for (const SourceTensor& s : src->tensors()) by_name[s.name()] = &s;
    rep.source_tensor_bytes = src->tensor_bytes();
  }
  double err_sum = 0, energy_sum = 0;
  for (const TqTensor& t : ck->tensors()) {
    TensorStats s;
    s.name = t.name;
    s.quantized = t.quantized;
    s.shape = t.shape;
    s.shape_exact = t.shape_exact;
    s.stored_bytes = t.stored_bytes();
    if (ck->manifest().has_value()) {
      const ManifestTensor* mt = ck->manifest()->FindTensor(t.name);
      s.kurtosis = mt->kurtosis;
      s.reason = mt->reason;
      if (t.source_dtype.has_value()) {
        uint64_t n = DTypeSize(*t.source_dtype);
        for (int64_t d : mt->shape) n *= d;
        s.source_bytes = n;
      }
    }
    auto it = by_name.find(t.name);
    if (it != by_name.end()) {
      s.source_bytes = it->second->info->nbytes();
      if (!t.shape_exact) {
        s.shape = it->second->info->shape;
        s.shape_exact = true;
      }
    }
    if (t.quantized) {
      s.bits = t.spec.bits;
      s.group_size = t.spec.group_size;
      s.rotation_block = t.spec.block();
      s.gain = quant::GainModeName(t.spec.gain);
      s.params = 1;
      for (int64_t d : s.shape) s.params *= d;
      rep.quantized++;
      rep.quantized_params += s.params;
      rep.quantized_bytes += s.stored_bytes;
      if (it != by_name.end()) {
        double energy = 0;
        TQ_ASSIGN_OR_RETURN(double nmse, MeasureNmse(t, *it->second, pool, &energy));
        s.nmse = nmse;
        err_sum += nmse * energy;
        energy_sum += energy;
        it->second->shard->Release(*it->second->info);
      }
    } else {
      s.dtype = std::string(DTypeName(t.data.info->dtype));
      s.params = t.data.info->numel();
      rep.passthrough++;
    }
    rep.stored_tensor_bytes += s.stored_bytes;
    rep.tensors.push_back(std::move(s));
  }
  if (src && src->tensors().size() != 0 && energy_sum > 0) rep.weighted_nmse = err_sum / energy_sum;
  if (src) {
    for (const auto& [name, st] : by_name) {
      if (ck->Find(name) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "source tensor \"", name, "\" is not in the checkpoint: is ", source_dir,
            " the source of ", dir, "?"));
      }
    }
  }
  return rep;
}

}  // namespace tq
