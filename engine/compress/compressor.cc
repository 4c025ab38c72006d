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
#include "engine/storage/object_store.h"
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

absl::Status ValidateOptionsImpl(const CompressOptions& opt) {
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
  return absl::OkStatus();
}

// Converts rows [r0, r1) of a row-major tensor (bytes of `dtype`, `cols` columns) to float.
absl::Status RowsToFloat(const TensorBytes& b, DType dtype, int64_t cols, int64_t r0, int64_t r1,
                         float* out) {
  const char* base = b.data().data() + static_cast<uint64_t>(r0) * cols * DTypeSize(dtype);
  return ConvertToFloat(dtype, base, (r1 - r0) * cols, out);
}

// Excess kurtosis of a floating-point tensor, two passes over float chunks.
absl::StatusOr<double> TensorKurtosis(const SourceTensor& t, ThreadPool& pool) {
  TQ_ASSIGN_OR_RETURN(TensorBytes bytes, t.Fetch());
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
        absl::Status st = RowsToFloat(bytes, t.info->dtype, 1, b, e, buf.data());
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
      tensors[i].shard->Release(info);
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

// The output shards: one random-access object writer each (a ".partial" file renamed on commit,
// or an S3 multipart upload), headers written first, tensor data filled in as it is produced.
class ShardWriter {
 public:
  ShardWriter(ObjectStore& store, const Plan& plan) : store_(store), plan_(plan) {}

  absl::Status Open() {
    for (size_t s = 0; s < plan_.shard_names.size(); ++s) {
      const SafetensorsLayout& l = plan_.layouts[s];
      TQ_ASSIGN_OR_RETURN(auto w, store_.NewRandomAccessWriter(plan_.shard_names[s], l.file_size()));
      char len[8];
      const uint64_t n = l.header.size();
      for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
      TQ_RETURN_IF_ERROR(w->WriteAt(0, absl::string_view(len, 8)));
      TQ_RETURN_IF_ERROR(w->WriteAt(8, l.header));
      writers_.push_back(std::move(w));
    }
    return absl::OkStatus();
  }

  // Writes `n` bytes at `offset` within output tensor `o`'s data. Thread-safe.
  absl::Status Write(const OutTensor& o, uint64_t offset, const void* data, size_t n) {
    const SafetensorsLayout& l = plan_.layouts[o.shard];
    const TensorInfo* t = l.Find(o.spec.name);
    if (t == nullptr || offset + n > t->nbytes()) {
      return absl::InternalError(absl::StrCat("shard writer: bad write to ", o.spec.name));
    }
    return writers_[o.shard]->WriteAt(8 + l.header.size() + t->begin + offset,
                                      absl::string_view(static_cast<const char*>(data), n));
  }

  // Commits every shard (durable and visible under its final name).
  absl::Status Commit() {
    for (auto& w : writers_) TQ_RETURN_IF_ERROR(w->Commit());
    writers_.clear();
    return absl::OkStatus();
  }

 private:
  ObjectStore& store_;
  const Plan& plan_;
  std::vector<std::unique_ptr<RandomAccessObjectWriter>> writers_;  // abort when destroyed
};

// sha256 and size of an object: through the page cache for local files, streamed otherwise.
absl::StatusOr<FileDigest> DigestObject(ObjectStore& store, const std::string& key) {
  if (auto local = store.LocalPath(key)) return Sha256File(*local);
  Sha256 h;
  FileDigest d;
  TQ_RETURN_IF_ERROR(store.Read(key, 0, ObjectStore::kToEnd, [&](absl::string_view c) {
    h.Update(c);
    d.size += c.size();
    return absl::OkStatus();
  }));
  d.sha256 = h.HexDigest();
  return d;
}

// Python's json.dump(obj, f, indent=2): what the plugin writes for the index and tq_config.
std::string PythonJsonDump(const ojson& j) { return j.dump(2, ' ', /*ensure_ascii=*/true); }

// Hashes the source files on a background thread (for the manifest's source digest).
class SourceHasher {
 public:
  explicit SourceHasher(const SourceCheckpoint& src) : store_(src.store()) {
    for (const auto& s : src.shards()) keys_.push_back(s->key());
    for (const auto& f : src.side_files()) keys_.push_back(f);
    thread_ = std::thread([this] { Run(); });
  }
  ~SourceHasher() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  absl::StatusOr<std::vector<ManifestFile>> Wait() {
    thread_.join();
    if (!status_.ok()) return status_;
    return files_;
  }

 private:
  void Run() {
    for (const std::string& k : keys_) {
      if (stop_) return;
      auto d = DigestObject(store_, k);
      if (!d.ok()) {
        status_ = d.status();
        return;
      }
      files_.push_back({k, d->size, d->sha256});
    }
  }
  ObjectStore& store_;
  std::vector<std::string> keys_;
  std::vector<ManifestFile> files_;
  absl::Status status_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

absl::Status ValidateCompressOptions(const CompressOptions& options) {
  return ValidateOptionsImpl(options);
}

absl::StatusOr<CompressResult> Compress(const CompressOptions& opt, const ProgressFn& progress) {
  const auto t0 = Clock::now();
  TQ_RETURN_IF_ERROR(ValidateCompressOptions(opt));
  const quant::GainMode gain = opt.gain.value_or(opt.format == CheckpointFormat::kPlugin
                                                     ? quant::GainMode::kNormCorrected
                                                     : quant::GainMode::kLeastSquares);
  StoreOptions store_options;
  store_options.observer = opt.observer;
  TQ_ASSIGN_OR_RETURN(std::unique_ptr<SourceCheckpoint> src,
                      SourceCheckpoint::Open(opt.source, store_options));
  TQ_ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> dst, OpenObjectStore(opt.destination, store_options));
  if (src->store().Uri() == dst->Uri()) {
    return absl::InvalidArgumentError("destination must differ from the source");
  }
  if (src->store().Head(kTqConfigName).ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        src->store().Uri(), " is already a TQ checkpoint (it has ", kTqConfigName,
        "); compress the original BF16/FP16/FP32 checkpoint"));
  }
  if (!src->config_json().empty()) {
    try {
      const auto cfg = ojson::parse(src->config_json());
      if (cfg.is_object() && cfg.contains("quantization_config") &&
          !cfg["quantization_config"].is_null()) {
        return absl::FailedPreconditionError(absl::StrCat(
            src->store().Uri("config.json"),
            " has a quantization_config: the source is already quantized; compress a "
            "BF16/FP16/FP32 checkpoint"));
      }
    } catch (const ojson::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(src->store().Uri("config.json"), " is not valid JSON: ", e.what()));
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

  // The destination: an existing manifest goes first, so that the checkpoint never looks
  // complete while it is being rewritten.
  if (auto root = dst->LocalPath("x")) TQ_RETURN_IF_ERROR(MakeDirs(root->substr(0, root->size() - 2)));
  TQ_RETURN_IF_ERROR(dst->Delete(kManifestName));
  TQ_RETURN_IF_ERROR(dst->Delete(kTqConfigName));

  ShardWriter writer(*dst, plan);
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
  // the other by an I/O task; and tensor i+1 is fetched while tensor i is quantized.
  struct Slot {
    std::vector<uint8_t> packed;
    std::vector<float> norms;
    std::future<absl::Status> write;
  };
  Slot slots[2];
  std::future<absl::StatusOr<TensorBytes>> prefetch;
  auto wait_all = [&]() -> absl::Status {
    absl::Status st;
    for (Slot& s : slots) {
      if (s.write.valid()) {
        absl::Status w = s.write.get();
        if (st.ok()) st = w;
      }
    }
    if (prefetch.valid()) (void)prefetch.get();
    return st;
  };
  auto fail = [&](absl::Status st) {
    (void)wait_all();
    return st;
  };
  report("compress");
  for (size_t i = 0; i < tensors.size(); ++i) {
    absl::Status cancelled = CheckCancelled(opt);
    if (!cancelled.ok()) return fail(cancelled);
    const SourceTensor& t = tensors[i];
    const TensorInfo& info = *t.info;
    const TensorDecision& d = plan.decisions[i];
    Slot& slot = slots[i % 2];
    if (slot.write.valid()) {
      absl::Status w = slot.write.get();
      if (!w.ok()) return fail(w);
    }
    absl::StatusOr<TensorBytes> fetched = prefetch.valid() ? prefetch.get() : t.Fetch();
    if (!fetched.ok()) return fail(fetched.status());
    const TensorBytes bytes = std::move(*fetched);
    if (i + 1 < tensors.size()) {
      const SourceTensor next = tensors[i + 1];
      prefetch = std::async(std::launch::async, [next] { return next.Fetch(); });
    }
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
      auto q_or = quantizer_for(d);
      if (!q_or.ok()) return fail(q_or.status());
      const quant::TqQuantizer* q = *q_or;
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
          absl::Status st = RowsToFloat(bytes, info.dtype, cols, r, re, buf.data());
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
      if (!err.ok()) return fail(err);
      t.shard->Release(info);
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
      slot.write = std::async(std::launch::async, [&writer, o, src_t, bytes]() -> absl::Status {
        const TensorInfo& in = *src_t.info;
        const absl::string_view data = bytes.data();
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
            st = RowsToFloat(bytes, in.dtype, 1, b, e, f.data());
            if (!st.ok()) break;
            FloatToF16Array(f.data(), e - b, h.data());
            st = writer.Write(*o, static_cast<uint64_t>(b) * 2, h.data(), (e - b) * 2);
          }
        }
        src_t.shard->Release(in);
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
  TQ_RETURN_IF_ERROR(writer.Commit());
  const bool plugin = opt.format == CheckpointFormat::kPlugin;
  // The shards' digests (tq format) while the small files are written.
  std::vector<std::future<absl::StatusOr<FileDigest>>> shard_digests;
  if (!plugin) {
    for (const std::string& name : plan.shard_names) {
      ObjectStore* store = dst.get();
      shard_digests.push_back(
          std::async(std::launch::async, [store, name] { return DigestObject(*store, name); }));
    }
  }
  auto collect_digests = [&]() -> absl::StatusOr<std::map<std::string, FileDigest>> {
    std::map<std::string, FileDigest> out;
    absl::Status st;
    for (size_t s = 0; s < shard_digests.size(); ++s) {
      auto d = shard_digests[s].get();
      if (!d.ok() && st.ok()) st = d.status();
      if (d.ok()) out[plan.shard_names[s]] = *d;
    }
    shard_digests.clear();
    if (!st.ok()) return st;
    return out;
  };
  auto publish_small = [&](std::vector<std::string>* written) -> absl::Status {
    if (plan.shard_names.size() > 1) {
      ojson index;
      index["metadata"]["total_size"] = plan.output_tensor_bytes;
      index["weight_map"] = ojson::object();
      for (const OutTensor& o : plan.outputs) {
        index["weight_map"][o.spec.name] = plan.shard_names[o.shard];
      }
      TQ_RETURN_IF_ERROR(WriteObject(*dst, kIndexName, PythonJsonDump(index)));
      written->push_back(kIndexName);
    }
    for (const std::string& f : src->side_files()) {
      TQ_ASSIGN_OR_RETURN(std::string contents, ReadObject(src->store(), f));
      TQ_RETURN_IF_ERROR(WriteObject(*dst, f, contents));
      written->push_back(f);
    }
    // Stale shards of an earlier run with a different shard count.
    TQ_ASSIGN_OR_RETURN(std::vector<ObjectInfo> existing, ListAll(*dst, ""));
    for (const ObjectInfo& o : existing) {
      const std::string& f = o.key;
      if (f.find('/') != std::string::npos) continue;
      const bool ours = std::find(written->begin(), written->end(), f) != written->end();
      if (!ours && ((absl::StartsWith(f, "model") && absl::EndsWith(f, ".safetensors")) ||
                    f == kIndexName)) {
        TQ_RETURN_IF_ERROR(dst->Delete(f));
      }
    }
    return absl::OkStatus();
  };
  std::vector<std::string> written = plan.shard_names;
  absl::Status small = publish_small(&written);
  if (!small.ok()) {
    (void)collect_digests();
    return small;
  }

  ojson tq_config;
  bool uniform = true;
  for (const auto& d : plan.decisions) uniform &= !d.quantize || (d.bits == opt.bits && d.rotation_block == 0);
  // A tq-format checkpoint the plugin can load as well keeps the plugin's format name.
  tq_config["format"] = (plugin || (uniform && opt.group_size == 128)) ? "tq3_native" : "tqserve";
  tq_config["bits"] = opt.bits;
  tq_config["group_size"] = opt.group_size;
  tq_config["quantizer_seed"] = 42;
  tq_config["compressed_layers"] = plan.compressed_layers;
  tq_config["original_model"] = opt.original_model.empty() ? opt.source : opt.original_model;
  if (!plugin) {
    tq_config["tqserve"] = {{"mode", "tq"}, {"manifest", kManifestName}, {"version", kTqserveVersion}};
  }
  const std::string tq_config_text = PythonJsonDump(tq_config);
  absl::Status cfg_st = WriteObject(*dst, kTqConfigName, tq_config_text);
  if (!cfg_st.ok()) {
    (void)collect_digests();
    return cfg_st;
  }
  written.push_back(kTqConfigName);

  result.output_tensor_bytes = plan.output_tensor_bytes;
  result.source_tensor_bytes = src->tensor_bytes();
  if (!plugin) {
    TQ_ASSIGN_OR_RETURN(auto digests, collect_digests());
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
      TQ_ASSIGN_OR_RETURN(FileDigest fd, DigestObject(*dst, f));
      m.files.push_back({f, fd.size, fd.sha256});
    }
    const std::string text = SerializeManifest(m);
    TQ_RETURN_IF_ERROR(CheckCancelled(opt));
    TQ_RETURN_IF_ERROR(WriteObject(*dst, kManifestName, text));
    result.manifest_sha256 = Sha256Hex(text);
    written.push_back(kManifestName);
    for (const ManifestFile& f : m.files) result.output_file_bytes += f.size;
    result.output_file_bytes += text.size();
  } else {
    for (const std::string& f : written) {
      auto info = dst->Head(f);
      if (info.ok()) result.output_file_bytes += info->size;
    }
  }
  result.files = written;
  result.destination_uri = dst->Uri();
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  report("done");
  return result;
}

}  // namespace tq
