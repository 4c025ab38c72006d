#include "engine/compress/compressor.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/checkpoint/manifest.h"
#include "engine/checkpoint/source_checkpoint.h"
#include "engine/format/safetensors.h"
#include "engine/util/file_util.h"
#include "engine/util/sha256.h"
#include "engine/util/thread_pool.h"
#include "kernels/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using ojson = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kPartialSuffix[] = ".partial";

// One tensor of the output, in the order the plugin adds them to shards.
struct OutTensor {
  enum Role { kPacked, kNorms, kRaw };
  TensorSpec spec;
  int source = 0;  // index into the source tensor list
  Role role = kRaw;
  int shard = 0;
};

struct Plan {
  std::vector<TensorDecision> decisions;           // per source tensor
  std::vector<std::optional<double>> kurtosis;     // per source tensor
  std::vector<OutTensor> outputs;                  // arrival order
  std::vector<std::string> shard_names;
  std::vector<SafetensorsLayout> layouts;          // per shard
  std::vector<std::vector<int>> outputs_of;        // per source tensor -> output indices
  uint64_t output_tensor_bytes = 0;
  int compressed_layers = 0;
};

std::string NowRfc3339() {
  const std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

absl::Status CheckCancelled(const CompressOptions& opt) {
  if (opt.cancel != nullptr && opt.cancel->load()) {
    return absl::CancelledError("compression job cancelled");
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const CompressOptions& opt) {
  if (opt.source.empty()) return absl::InvalidArgumentError("no source checkpoint given");
  if (opt.destination.empty()) return absl::InvalidArgumentError("no destination given");
  if (opt.format == CheckpointFormat::kPlugin) {
    if (opt.policy != BitPolicy::kUniform) {
      return absl::InvalidArgumentError(
          "the plugin format records one bit width for the whole model: use --policy uniform "
          "or --format tq");
    }
    if (opt.rotation_block != 0) {
      return absl::InvalidArgumentError(
          "the plugin's checkpoint writer always uses the full rotation: --rotation-block needs "
          "--format tq");
    }
  }
  if (opt.thresholds.plus_one > opt.thresholds.keep) {
    return absl::InvalidArgumentError("kurtosis thresholds must satisfy t1 <= t2");
  }
  if (opt.max_shard_bytes == 0) return absl::InvalidArgumentError("max shard size must be > 0");
  quant::TqSpec spec;
  spec.bits = opt.bits;
  spec.group_size = opt.group_size;
  spec.rotation_block = opt.rotation_block;
  spec.torch_norm_lanes = opt.torch_norm_lanes;
  TQ_RETURN_IF_ERROR(quant::ValidateSpec(spec));
  if (opt.policy == BitPolicy::kKurtosis && opt.bits < 4) {
    spec.bits = opt.bits + 1;
    TQ_RETURN_IF_ERROR(quant::ValidateSpec(spec));
  }
  char a[PATH_MAX], b[PATH_MAX];
  if (realpath(opt.source.c_str(), a) != nullptr && realpath(opt.destination.c_str(), b) != nullptr &&
      std::string(a) == std::string(b)) {
    return absl::InvalidArgumentError("destination must differ from the source directory");
  }
  return absl::OkStatus();
}

// Converts rows [r0, r1) of a row-major source tensor with `cols` columns to float.
absl::Status RowsToFloat(const SourceTensor& t, int64_t cols, int64_t r0, int64_t r1, float* out) {
  const int esz = DTypeSize(t.info->dtype);
  const char* base = t.data().data() + static_cast<uint64_t>(r0) * cols * esz;
  return ConvertToFloat(t.info->dtype, base, (r1 - r0) * cols, out);
}

// Excess kurtosis of a floating-point tensor, two passes over float chunks.
absl::StatusOr<double> TensorKurtosis(const SourceTensor& t, ThreadPool& pool) {
  const int64_t n = t.info->numel();
  if (n == 0) return 0.0;
  const int64_t chunk = 1 << 16;
  const int64_t nchunks = (n + chunk - 1) / chunk;
  std::mutex mu;
  absl::Status err;
  double sum = 0, m2 = 0, m4 = 0;
  auto for_chunks = [&](const std::function<void(const float*, int64_t)>& fn) {
    pool.ParallelFor(nchunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<float> buf(chunk);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t b = c * chunk, e = std::min(n, b + chunk);
        absl::Status st = RowsToFloat(t, 1, b, e, buf.data());
        if (!st.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          err = st;
          return;
        }
        fn(buf.data(), e - b);
      }
    });
  };
  for_chunks([&](const float* x, int64_t k) {
    double s = 0;
    for (int64_t i = 0; i < k; ++i) s += x[i];
    std::lock_guard<std::mutex> lock(mu);
    sum += s;
  });
  TQ_RETURN_IF_ERROR(err);
  const double mean = sum / n;
  for_chunks([&](const float* x, int64_t k) {
    double a = 0, b = 0;
    for (int64_t i = 0; i < k; ++i) {
      const double d = x[i] - mean, d2 = d * d;
      a += d2;
      b += d2 * d2;
    }
    std::lock_guard<std::mutex> lock(mu);
    m2 += a;
    m4 += b;
  });
  TQ_RETURN_IF_ERROR(err);
  m2 /= n;
  m4 /= n;
  return m2 > 0 ? m4 / (m2 * m2) - 3.0 : 0.0;
}

absl::StatusOr<Plan> MakePlan(const CompressOptions& opt, const SourceCheckpoint& src,
                              ThreadPool& pool, const std::function<void(int)>& on_analyzed) {
  PolicyOptions popt;
  popt.format = opt.format;
  popt.bits = opt.bits;
  popt.rotation_block = opt.rotation_block;
  popt.rotation_block_include = opt.rotation_block_include;
  popt.policy = opt.policy;
  popt.thresholds = opt.thresholds;
  Plan plan;
  const auto& tensors = src.tensors();
  plan.outputs_of.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& info = *tensors[i].info;
    TensorDecision d = DecideTensor(popt, info.name, info.dtype, info.shape);
    std::optional<double> kurt;
    if (d.quantize && opt.policy == BitPolicy::kKurtosis) {
      TQ_ASSIGN_OR_RETURN(double k, TensorKurtosis(tensors[i], pool));
      kurt = k;
      ApplyKurtosis(popt, k, info.dtype, &d);
      tensors[i].file->Release(info);
      if (on_analyzed) on_analyzed(static_cast<int>(i));
      TQ_RETURN_IF_ERROR(CheckCancelled(opt));
    }
    if (!d.quantize && opt.format == CheckpointFormat::kPlugin &&
        (info.dtype == DType::kF8E4M3 || info.dtype == DType::kF8E5M2)) {
      return absl::UnimplementedError(absl::StrCat(
          "tensor \"", info.name, "\" is ", DTypeName(info.dtype),
          ": float8 sources are not supported by the plugin format (compress a BF16 checkpoint)"));
    }
    if (d.quantize) {
      const int64_t cols = info.shape.back();
      const int64_t rows = info.numel() / std::max<int64_t>(cols, 1);
      const int64_t ngr = (cols + opt.group_size - 1) / opt.group_size;
      const int64_t bpg = opt.group_size * d.bits / 8;
      plan.outputs.push_back({{info.name + ".tq_packed", DType::kU8, {rows * ngr, bpg}},
                              static_cast<int>(i), OutTensor::kPacked});
      plan.outputs.push_back({{info.name + ".tq_norms", DType::kF32, {rows, ngr}},
                              static_cast<int>(i), OutTensor::kNorms});
      plan.compressed_layers++;
    } else {
      plan.outputs.push_back({{info.name, d.stored_dtype, info.shape}, static_cast<int>(i),
                              OutTensor::kRaw});
    }
    plan.decisions.push_back(std::move(d));
    plan.kurtosis.push_back(kurt);
  }
  // Shard assignment, exactly as the plugin's _add_tensor/_flush_shard.
  int shard = 0;
  uint64_t cur = 0;
  int cur_count = 0;
  for (size_t k = 0; k < plan.outputs.size(); ++k) {
    OutTensor& o = plan.outputs[k];
    const uint64_t nb = o.spec.nbytes();
    if (cur + nb > opt.max_shard_bytes && cur_count > 0) {
      ++shard;
      cur = 0;
      cur_count = 0;
    }
    o.shard = shard;
    cur += nb;
    cur_count++;
    plan.output_tensor_bytes += nb;
    plan.outputs_of[o.source].push_back(static_cast<int>(k));
  }
  const int nshards = plan.outputs.empty() ? 0 : shard + 1;
  for (int s = 0; s < nshards; ++s) {
    plan.shard_names.push_back(nshards == 1 ? std::string("model.safetensors")
                                            : absl::StrFormat("model-%05d-of-%05d.safetensors",
                                                              s + 1, nshards));
    std::vector<TensorSpec> specs;
    for (const OutTensor& o : plan.outputs) {
      if (o.shard == s) specs.push_back(o.spec);
    }
    TQ_ASSIGN_OR_RETURN(SafetensorsLayout layout, PlanSafetensors(std::move(specs)));
    plan.layouts.push_back(std::move(layout));
  }
  return plan;
}

// Open output shard files, header written, data filled in as tensors arrive.
class ShardWriter {
 public:
  ShardWriter(std::string dir, const Plan& plan) : dir_(std::move(dir)), plan_(plan) {}
  ~ShardWriter() { Abort(); }

  absl::Status Open() {
    for (size_t s = 0; s < plan_.shard_names.size(); ++s) {
      const SafetensorsLayout& l = plan_.layouts[s];
      const std::string path = JoinPath(dir_, plan_.shard_names[s] + kPartialSuffix);
      TQ_ASSIGN_OR_RETURN(auto f, RandomAccessOutputFile::Create(path, l.file_size()));
      char len[8];
      const uint64_t n = l.header.size();
      for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
      TQ_RETURN_IF_ERROR(f->WriteAt(0, len, 8));
      TQ_RETURN_IF_ERROR(f->WriteAt(8, l.header.data(), l.header.size()));
      files_.push_back(std::move(f));
    }
    return absl::OkStatus();
  }

  // Writes `n` bytes at `offset` within output tensor `k`'s data.
  absl::Status Write(const OutTensor& o, uint64_t offset, const void* data, size_t n) {
    const SafetensorsLayout& l = plan_.layouts[o.shard];
    const TensorInfo* t = l.Find(o.spec.name);
    if (t == nullptr || offset + n > t->nbytes()) {
      return absl::InternalError(absl::StrCat("shard writer: bad write to ", o.spec.name));
    }
    return files_[o.shard]->WriteAt(8 + l.header.size() + t->begin + offset, data, n);
  }

  // Syncs and closes every shard (still under its ".partial" name).
  absl::Status Sync() {
    for (auto& f : files_) TQ_RETURN_IF_ERROR(f->Close());
    return absl::OkStatus();
  }

  // Renames every synced shard to its final name.
  absl::Status Publish() {
    for (size_t s = 0; s < files_.size(); ++s) {
      const std::string final_path = JoinPath(dir_, plan_.shard_names[s]);
      TQ_RETURN_IF_ERROR(RenameFile(final_path + kPartialSuffix, final_path));
    }
    files_.clear();
    return absl::OkStatus();
  }

  // Removes partial files (idempotent).
  void Abort() {
    for (size_t s = 0; s < plan_.shard_names.size() && !files_.empty(); ++s) {
      (void)RemoveFile(JoinPath(dir_, plan_.shard_names[s] + kPartialSuffix));
    }
    files_.clear();
  }

 private:
  std::string dir_;
  const Plan& plan_;
  std::vector<std::unique_ptr<RandomAccessOutputFile>> files_;
};

// Python's json.dump(obj, f, indent=2): what the plugin writes for the index and tq_config.
std::string PythonJsonDump(const ojson& j) { return j.dump(2, ' ', /*ensure_ascii=*/true); }

// Hashes the source files on a background thread (for the manifest's source digest).
class SourceHasher {
 public:
  SourceHasher(const SourceCheckpoint& src) {
    for (const auto& s : src.shards()) paths_.push_back(s->path());
    for (const auto& f : src.side_files()) paths_.push_back(JoinPath(src.dir(), f));
    thread_ = std::thread([this] { Run(); });
  }
  ~SourceHasher() {
    if (thread_.joinable()) thread_.join();
  }
  absl::StatusOr<std::vector<ManifestFile>> Wait() {
    thread_.join();
    if (!status_.ok()) return status_;
    return files_;
  }

 private:
  void Run() {
    for (const std::string& p : paths_) {
      auto d = Sha256File(p);
      if (!d.ok()) {
        status_ = d.status();
        return;
      }
      files_.push_back({Basename(p), d->size, d->sha256});
    }
  }
  std::vector<std::string> paths_;
  std::vector<ManifestFile> files_;
  absl::Status status_;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<CompressResult> Compress(const CompressOptions& opt, const ProgressFn& progress) {
  const auto t0 = Clock::now();
  TQ_RETURN_IF_ERROR(ValidateOptions(opt));
  const quant::GainMode gain = opt.gain.value_or(opt.format == CheckpointFormat::kPlugin
                                                     ? quant::GainMode::kNormCorrected
                                                     : quant::GainMode::kLeastSquares);
  TQ_ASSIGN_OR_RETURN(std::unique_ptr<SourceCheckpoint> src, SourceCheckpoint::Open(opt.source));
  if (!src->config_json().empty()) {
    try {
      const auto cfg = ojson::parse(src->config_json());
      if (cfg.is_object() && cfg.contains("quantization_config") &&
          !cfg["quantization_config"].is_null()) {
        return absl::FailedPreconditionError(absl::StrCat(
            opt.source, "/config.json has a quantization_config: the source is already quantized; "
                        "compress a BF16/FP16/FP32 checkpoint"));
      }
    } catch (const ojson::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(opt.source, "/config.json is not valid JSON: ", e.what()));
    }
  }
  const int threads = opt.threads > 0 ? opt.threads : ThreadPool::HardwareThreads();
  ThreadPool pool(threads);
  const auto& tensors = src->tensors();

  CompressProgress prog;
  prog.tensors_total = static_cast<int>(tensors.size());
  prog.bytes_in_total = src->tensor_bytes();
  auto report = [&](const std::string& phase) {
    if (!progress) return;
    prog.phase = phase;
    prog.elapsed_s = std::chrono::duration<double>(Clock::now() - t0).count();
    progress(prog);
  };
  report("plan");

  std::unique_ptr<SourceHasher> hasher;
  if (opt.format == CheckpointFormat::kTq) hasher = std::make_unique<SourceHasher>(*src);

  TQ_ASSIGN_OR_RETURN(Plan plan, MakePlan(opt, *src, pool, [&](int i) {
                        prog.current = tensors[i].name();
                        report("analyze");
                      }));
  prog.bytes_out_total = plan.output_tensor_bytes;

  // The destination: an existing manifest goes first, so that the directory never looks like a
  // complete checkpoint while it is being rewritten.
  TQ_RETURN_IF_ERROR(MakeDirs(opt.destination));
  TQ_RETURN_IF_ERROR(RemoveFile(JoinPath(opt.destination, kManifestName)));
  TQ_RETURN_IF_ERROR(RemoveFile(JoinPath(opt.destination, kTqConfigName)));

  ShardWriter writer(opt.destination, plan);
  TQ_RETURN_IF_ERROR(writer.Open());

  std::map<int, quant::TqQuantizer> quantizers;  // by bits*4096 + rotation block
  auto quantizer_for = [&](const TensorDecision& d) -> absl::StatusOr<const quant::TqQuantizer*> {
    const int key = d.bits * 4096 + d.rotation_block;
    auto it = quantizers.find(key);
    if (it == quantizers.end()) {
      quant::TqSpec spec;
      spec.bits = d.bits;
      spec.group_size = opt.group_size;
      spec.rotation_block = d.rotation_block;
      spec.gain = gain;
      spec.torch_norm_lanes = opt.torch_norm_lanes;
      TQ_ASSIGN_OR_RETURN(quant::TqQuantizer q, quant::TqQuantizer::Create(spec));
      it = quantizers.emplace(key, std::move(q)).first;
    }
    return &it->second;
  };

  CompressResult result;
  result.threads = threads;
  result.kernel_isa = quant::QuantKernelIsa();
  // Two buffer sets: tensor i is quantized into one while tensor i-1's output is written from
  // the other by an I/O task, so the threads never wait for the kernel's page-cache copies.
  struct Slot {
    std::vector<uint8_t> packed;
    std::vector<float> norms;
    std::future<absl::Status> write;
  };
  Slot slots[2];
  auto wait_all = [&]() -> absl::Status {
    absl::Status st;
    for (Slot& s : slots) {
      if (s.write.valid()) {
        absl::Status w = s.write.get();
        if (st.ok()) st = w;
      }
    }
    return st;
  };
  report("compress");
  for (size_t i = 0; i < tensors.size(); ++i) {
    absl::Status cancelled = CheckCancelled(opt);
    if (!cancelled.ok()) {
      (void)wait_all();
      return cancelled;
    }
    const SourceTensor& t = tensors[i];
    const TensorInfo& info = *t.info;
    const TensorDecision& d = plan.decisions[i];
    Slot& slot = slots[i % 2];
    if (slot.write.valid()) TQ_RETURN_IF_ERROR(slot.write.get());
    prog.current = info.name;
    TensorReport rep;
    rep.name = info.name;
    rep.shape = info.shape;
    rep.source_dtype = info.dtype;
    rep.quantized = d.quantize;
    rep.bits = d.bits;
    rep.stored_dtype = d.stored_dtype;
    rep.bytes_in = info.nbytes();
    rep.kurtosis = plan.kurtosis[i];
    rep.reason = d.reason;
    if (d.quantize) {
      TQ_ASSIGN_OR_RETURN(const quant::TqQuantizer* q, quantizer_for(d));
      const int64_t cols = info.shape.back();
      const int64_t rows = cols > 0 ? info.numel() / cols : 0;
      slot.packed.resize(q->PackedSize(rows, cols));
      slot.norms.resize(q->GainsSize(rows, cols));
      uint8_t* packed = slot.packed.data();
      float* norms = slot.norms.data();
      const int64_t ngr = q->GroupsPerRow(cols);
      const int64_t bpg = q->spec().bytes_per_group();
      std::mutex mu;
      absl::Status err;
      const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(cols, 1));
      pool.ParallelFor(rows, grain, [&](int64_t r0, int64_t r1) {
        thread_local std::vector<float> buf;
        const int64_t step = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(cols, 1));
        for (int64_t r = r0; r < r1; r += step) {
          const int64_t re = std::min(r1, r + step);
          buf.resize(static_cast<size_t>((re - r) * cols));
          absl::Status st = RowsToFloat(t, cols, r, re, buf.data());
          if (st.ok()) {
            const int64_t bad = quant::CountNonFinite(buf.data(), (re - r) * cols);
            if (bad > 0) {
              st = absl::InvalidArgumentError(absl::StrCat(
                  "tensor \"", info.name, "\" has ", bad, " NaN/Inf values in rows [", r, ", ",
                  re, "): cannot quantize it"));
            }
          }
          if (!st.ok()) {
            std::lock_guard<std::mutex> lock(mu);
            if (err.ok()) err = st;
            return;
          }
          q->QuantizeRows(buf.data(), re - r, cols, packed + r * ngr * bpg, norms + r * ngr);
        }
      });
      if (!err.ok()) {
        (void)wait_all();
        return err;
      }
      t.file->Release(info);
      const OutTensor* po = &plan.outputs[plan.outputs_of[i][0]];
      const OutTensor* no = &plan.outputs[plan.outputs_of[i][1]];
      slot.write = std::async(std::launch::async, [&writer, &slot, po, no]() -> absl::Status {
        TQ_RETURN_IF_ERROR(writer.Write(*po, 0, slot.packed.data(), slot.packed.size()));
        return writer.Write(*no, 0, slot.norms.data(), slot.norms.size() * sizeof(float));
      });
      rep.bytes_out = slot.packed.size() + slot.norms.size() * sizeof(float);
      result.quantized++;
    } else {
      const OutTensor* o = &plan.outputs[plan.outputs_of[i][0]];
      const SourceTensor src_t = t;
      slot.write = std::async(std::launch::async, [&writer, o, src_t]() -> absl::Status {
        const TensorInfo& in = *src_t.info;
        const absl::string_view data = src_t.data();
        absl::Status st;
        if (o->spec.dtype == in.dtype) {
          const size_t step = 8 << 20;
          for (size_t off = 0; off < data.size() && st.ok(); off += step) {
            st = writer.Write(*o, off, data.data() + off, std::min(step, data.size() - off));
          }
        } else {
          // The plugin's `.half()` of a floating-point tensor.
          const int64_t n = in.numel();
          const int64_t step = 1 << 20;
          std::vector<float> f(step);
          std::vector<uint16_t> h(step);
          for (int64_t b = 0; b < n && st.ok(); b += step) {
            const int64_t e = std::min(n, b + step);
            st = RowsToFloat(src_t, 1, b, e, f.data());
            if (!st.ok()) break;
            FloatToF16Array(f.data(), e - b, h.data());
            st = writer.Write(*o, static_cast<uint64_t>(b) * 2, h.data(), (e - b) * 2);
          }
        }
        src_t.file->Release(in);
        return st;
      });
      rep.bytes_out = o->spec.nbytes();
      result.passthrough++;
    }
    prog.tensors_done = static_cast<int>(i) + 1;
    prog.bytes_in_done += info.nbytes();
    prog.bytes_out_done += rep.bytes_out;
    result.tensors.push_back(std::move(rep));
    report("compress");
  }
  TQ_RETURN_IF_ERROR(wait_all());
  TQ_RETURN_IF_ERROR(CheckCancelled(opt));
  report("publish");
  // The shards' bytes are final: hash them (tq format) while their pages are flushed to disk.
  std::vector<std::future<absl::StatusOr<FileDigest>>> shard_digests;
  if (opt.format == CheckpointFormat::kTq) {
    for (const std::string& name : plan.shard_names) {
      const std::string path = JoinPath(opt.destination, name + kPartialSuffix);
      shard_digests.push_back(std::async(std::launch::async, [path] { return Sha256File(path); }));
    }
  }
  absl::Status finished = writer.Sync();
  std::map<std::string, FileDigest> digests;
  for (size_t s = 0; s < shard_digests.size(); ++s) {
    auto d = shard_digests[s].get();
    if (finished.ok() && !d.ok()) finished = d.status();
    if (d.ok()) digests[plan.shard_names[s]] = *d;
  }
  TQ_RETURN_IF_ERROR(finished);
  TQ_RETURN_IF_ERROR(writer.Publish());
  std::vector<std::string> written = plan.shard_names;

  if (plan.shard_names.size() > 1) {
    ojson index;
    index["metadata"]["total_size"] = plan.output_tensor_bytes;
    index["weight_map"] = ojson::object();
    for (const OutTensor& o : plan.outputs) {
      index["weight_map"][o.spec.name] = plan.shard_names[o.shard];
    }
    TQ_RETURN_IF_ERROR(
        WriteFileAtomic(JoinPath(opt.destination, kIndexName), PythonJsonDump(index)));
    written.push_back(kIndexName);
  }
  for (const std::string& f : src->side_files()) {
    TQ_ASSIGN_OR_RETURN(std::string contents, ReadFile(JoinPath(opt.source, f)));
    TQ_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(opt.destination, f), contents));
    written.push_back(f);
  }
  // Stale shards of an earlier run with a different shard count.
  TQ_ASSIGN_OR_RETURN(std::vector<std::string> existing, ListDirectory(opt.destination));
  for (const std::string& f : existing) {
    const bool ours = std::find(written.begin(), written.end(), f) != written.end();
    if (!ours && ((absl::StartsWith(f, "model") && absl::EndsWith(f, ".safetensors")) ||
                  f == kIndexName)) {
      TQ_RETURN_IF_ERROR(RemoveFile(JoinPath(opt.destination, f)));
    }
  }

  ojson tq_config;
  const bool plugin = opt.format == CheckpointFormat::kPlugin;
  bool uniform = true;
  for (const auto& d : plan.decisions) uniform &= !d.quantize || (d.bits == opt.bits && d.rotation_block == 0);
  // A tq-mode checkpoint the plugin can load as well keeps the plugin's format name.
  tq_config["format"] = (plugin || (uniform && opt.group_size == 128)) ? "tq3_native" : "tqserve";
  tq_config["bits"] = opt.bits;
  tq_config["group_size"] = opt.group_size;
  tq_config["quantizer_seed"] = 42;
  tq_config["compressed_layers"] = plan.compressed_layers;
  tq_config["original_model"] = opt.original_model.empty() ? opt.source : opt.original_model;
  if (!plugin) {
    tq_config["tqserve"] = {{"mode", "tq"}, {"manifest", kManifestName}, {"version", kTqserveVersion}};
  }
  TQ_RETURN_IF_ERROR(
      WriteFileAtomic(JoinPath(opt.destination, kTqConfigName), PythonJsonDump(tq_config)));
  written.push_back(kTqConfigName);

  result.output_tensor_bytes = plan.output_tensor_bytes;
  result.source_tensor_bytes = src->tensor_bytes();
  if (!plugin) {
    Manifest m;
    m.created_at = NowRfc3339();
    m.bits = opt.bits;
    m.group_size = opt.group_size;
    m.gain = quant::GainModeName(gain);
    m.policy = BitPolicyName(opt.policy);
    m.kurtosis_plus_one = opt.thresholds.plus_one;
    m.kurtosis_keep = opt.thresholds.keep;
    m.torch_norm_lanes = opt.torch_norm_lanes;
    m.source_uri = opt.original_model.empty() ? opt.source : opt.original_model;
    TQ_ASSIGN_OR_RETURN(m.source_files, hasher->Wait());
    m.source_digest = DigestOfFiles(m.source_files);
    m.source_tensor_bytes = src->tensor_bytes();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorInfo& info = *tensors[i].info;
      const TensorDecision& d = plan.decisions[i];
      ManifestTensor mt;
      mt.name = info.name;
      mt.quantized = d.quantize;
      mt.shape = info.shape;
      mt.source_dtype = std::string(DTypeName(info.dtype));
      if (d.quantize) {
        mt.bits = d.bits;
        mt.group_size = opt.group_size;
        mt.rotation_block = d.rotation_block == 0 ? opt.group_size : d.rotation_block;
        mt.gain = quant::GainModeName(gain);
      } else {
        mt.dtype = std::string(DTypeName(d.stored_dtype));
      }
      mt.kurtosis = plan.kurtosis[i];
      mt.reason = d.reason;
      m.tensors.push_back(std::move(mt));
    }
    for (const std::string& f : written) {
      auto known = digests.find(f);
      if (known != digests.end()) {
        m.files.push_back({f, known->second.size, known->second.sha256});
        continue;
      }
      TQ_ASSIGN_OR_RETURN(FileDigest fd, Sha256File(JoinPath(opt.destination, f)));
      m.files.push_back({f, fd.size, fd.sha256});
    }
    const std::string text = SerializeManifest(m);
    TQ_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(opt.destination, kManifestName), text));
    result.manifest_sha256 = Sha256Hex(text);
    written.push_back(kManifestName);
  }
  result.files = written;
  for (const std::string& f : written) {
    struct stat st;
    if (::stat(JoinPath(opt.destination, f).c_str(), &st) == 0) result.output_file_bytes += st.st_size;
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report("done");
  return result;
}

}  // namespace tq
