#include "engine/runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/model/cuda_transformer.h"
#include "engine/model/mla_transformer.h"
#include "kernels/nn/ops.h"
#include "kernels/util/status_macros.h"

namespace tq {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Length of the longest prefix of s[0, n) that ends on a UTF-8 character boundary.
size_t Utf8Boundary(const std::string& s, size_t n) {
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

struct Engine::Sequence {
  uint64_t id = 0;
  GenerationRequest req;
  EventCallback cb;
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t prompt_len = 0;
  int64_t computed = 0;         // tokens whose K/V are in the cache
  SeqHandle kv = 0;             // 0: no cache space held
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<IncrementalDecoder> decoder;
  std::string text;  // decoded output so far
  size_t sent = 0;   // bytes of `text` already delivered
  size_t max_stop_len = 0;
  int64_t generated = 0;
  bool scheduled = false;
  bool got_token = false;
  Clock::time_point submitted, first_scheduled, first_token;
};

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
    case FinishReason::kTimeLimit:
      return "time_limit";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  if (options.max_num_seqs < 1) return absl::InvalidArgumentError("max_num_seqs must be >= 1");
  if (options.max_num_batched_tokens < 1) return absl::InvalidArgumentError("max_num_batched_tokens must be >= 1");
  if (options.kv_block_size < 1 || options.kv_block_size > 1024) {
    return absl::InvalidArgumentError("kv_block_size must be in [1, 1024]");
  }
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  CheckpointOpenOptions open;
  open.store = options.store;
  open.verify_checksums = options.verify_checksums;
  TQ_ASSIGN_OR_RETURN(e->ckpt_, ModelCheckpoint::Open(options.model_uri, open));
  TQ_ASSIGN_OR_RETURN(ModelConfig cfg,
                      ParseModelConfig(e->ckpt_->config_json(), e->ckpt_->generation_config_json()));
  // Device and KV cache settings are checked before any weight is bound (fail fast).
  const bool on_gpu = options.device == "cuda";
  if (!on_gpu && options.device != "cpu") {
    return absl::InvalidArgumentError(absl::StrCat("device must be \"cpu\" or \"cuda\", got \"", options.device, "\""));
  }
  if ((options.tq_int8_gemv || options.tq_int8_gemv_all_rows) && !on_gpu) {
    return absl::InvalidArgumentError("the int8-activation TQ3 GEMV (tq_int8_gemv) is a CUDA kernel: it needs device \"cuda\"");
  }
  if (options.tq_int8_gemv_all_rows && !options.tq_int8_gemv) {
    return absl::InvalidArgumentError("tq_int8_gemv_all_rows needs tq_int8_gemv");
  }
  // MLA models cache one latent per token: k_pe as the key, c as the value (model_config.h).
  const int kv_heads = cfg.kv_cache_heads(), kv_dim = cfg.kv_cache_key_dim();
  TQ_ASSIGN_OR_RETURN(KvCacheFormat kv_format,
                      cfg.is_mla() ? MakeMlaKvCacheFormat(options.kv_codec, cfg.num_layers, cfg.kv_cache_value_dim(), kv_dim)
                                   : MakeKvCacheFormat(options.kv_codec, cfg.num_layers, kv_dim));
  if (on_gpu) {
    TQ_RETURN_IF_ERROR(cfg.is_mla() ? CudaTransformer::CheckMlaKvFormat(kv_format)
                                    : CudaTransformer::CheckKvFormat(kv_format, cfg.num_heads, kv_heads, kv_dim));
  }
  BindOptions bind;
  bind.dequantize_tq = options.dequantize_tq;
  TQ_ASSIGN_OR_RETURN(e->weights_, BindModelWeights(*e->ckpt_, cfg, bind));

  auto t0 = Clock::now();
  if (!e->ckpt_->tokenizer_json().empty()) {
    TQ_ASSIGN_OR_RETURN(e->tokenizer_, Tokenizer::FromJson(e->ckpt_->tokenizer_json()));
  }
  e->info_.tokenizer_s = Since(t0, Clock::now());

  const int64_t max_len = options.max_model_len > 0 ? options.max_model_len : cfg.max_position_embeddings;
  if (max_len < 2) return absl::InvalidArgumentError("max_model_len must be >= 2");
  TQ_ASSIGN_OR_RETURN(RopeTable rope, RopeTable::Create(cfg.rope, cfg.rope_dim(), max_len));
  const int threads = options.threads > 0 ? options.threads : ThreadPool::HardwareThreads();
  e->pool_ = std::make_unique<ThreadPool>(threads);

  t0 = Clock::now();
  KvCacheOptions kv;
  kv.num_layers = cfg.num_layers;
  kv.num_kv_heads = kv_heads;
  kv.head_dim = kv_dim;
  kv.value_head_dim = cfg.kv_cache_value_dim();
  kv.block_size = options.kv_block_size;
  kv.host_storage = !on_gpu;
  const int64_t per_token = kv_heads * kv_format.BytesPerTokenPerHead();
  // Sink positions live beside the pool, per sequence; reserve them for max_num_seqs.
  const int64_t sink_reserve =
      kv_format.sink_tokens > 0
          ? static_cast<int64_t>(options.max_num_seqs) * 2 * cfg.num_layers * kv_format.sink_tokens *
                kv_heads * kv_format.sink->BytesPerVector(kv_dim)
          : 0;
  int64_t budget = options.kv_cache_bytes;
  if (budget <= 0) {
    budget = std::min<int64_t>(static_cast<int64_t>(options.max_num_seqs) * max_len * per_token + sink_reserve,
                               1LL << 30);
    budget = std::max<int64_t>(budget, (max_len + options.kv_block_size) * per_token + sink_reserve);
  }
  kv.num_blocks = (budget - sink_reserve) / (per_token * options.kv_block_size);
  if (kv.num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_cache_bytes ", budget, " is smaller than one block (",
                                                   per_token * options.kv_block_size, " bytes) plus the sink ",
                                                   "positions of max_num_seqs sequences (", sink_reserve, " bytes)"));
  }
  const std::string kv_name = kv_format.name, kv_layout = kv_format.Describe();
  TQ_ASSIGN_OR_RETURN(e->cache_, PagedKvCache::Create(kv, std::move(kv_format)));
  if (on_gpu) {
    CudaRunnerOptions copt;
    copt.device = options.cuda_device;
    copt.cuda_graphs = options.cuda_graphs;
    copt.dequantize_tq = options.dequantize_tq;
    copt.int8_gemv = options.tq_int8_gemv;
    copt.int8_gemv_all_rows = options.tq_int8_gemv_all_rows;
    copt.kv = kv;
    copt.kv_format = e->cache_->format();
    copt.max_num_seqs = options.max_num_seqs;
    TQ_ASSIGN_OR_RETURN(e->model_, CudaTransformer::Create(cfg, *e->weights_, rope, copt));
  } else if (cfg.is_mla()) {
    e->model_ = std::make_unique<MlaTransformer>(cfg, *e->weights_, std::move(rope), e->pool_.get());
  } else {
    e->model_ = std::make_unique<Transformer>(cfg, *e->weights_, std::move(rope), e->pool_.get());
  }
  e->info_.kv_alloc_s = Since(t0, Clock::now());
  if (options.wrap_model) e->model_ = options.wrap_model(std::move(e->model_));
  e->info_.device = e->model_->device();
  e->info_.runner = e->model_->Describe();

  e->eos_ids_ = cfg.eos_token_ids;
  // A sequence never grows beyond the context or the whole cache.
  e->context_limit_ = std::min<int64_t>(max_len, kv.num_blocks * kv.block_size);
  e->info_.uri = options.model_uri;
  e->info_.checkpoint_kind = e->ckpt_->kind_name();
  e->info_.config = cfg;
  e->info_.max_model_len = max_len;
  e->info_.weight_file_bytes = e->ckpt_->weight_bytes();
  e->info_.linear_weight_bytes = e->weights_->linear_weight_bytes;
  e->info_.quantized_linears = e->weights_->quantized_linears;
  e->info_.dense_linears = e->weights_->dense_linears;
  e->info_.kv_codec = kv_name;
  e->info_.kv_layout = kv_layout;
  e->info_.load = e->ckpt_->timings();
  e->info_.kv_capacity_tokens = kv.num_blocks * kv.block_size;
  e->info_.kv_block_size = kv.block_size;
  e->info_.kv_bytes_per_token = e->cache_->bytes_per_token();
  {
    std::set<int> bits;
    std::set<std::string> gains;
    double stored = 0, weights = 0;
    for (const WeightTensor& t : e->ckpt_->tensors()) {
      if (!t.quantized) continue;
      bits.insert(t.spec.bits);
      gains.insert(quant::GainModeName(t.spec.gain));
      e->info_.tq_group_size = t.spec.group_size;
      stored += 8.0 * static_cast<double>(t.packed.size() + t.gains.size());
      weights += static_cast<double>(t.rows) * static_cast<double>(t.cols);
    }
    e->info_.tq_bits.assign(bits.begin(), bits.end());
    e->info_.tq_gain = gains.empty() ? "" : gains.size() == 1 ? *gains.begin() : "mixed";
    e->info_.tq_bits_per_weight = weights > 0 ? stored / weights : 0;
    e->info_.tq_policy = e->ckpt_->quant_policy();
    e->info_.manifest_sha256 = e->ckpt_->manifest_sha256();
  }
  e->stats_.kv_blocks_total = kv.num_blocks;
  e->stats_.kv_bytes_per_token = e->cache_->bytes_per_token();
  e->thread_ = std::thread([eng = e.get()] { eng->Loop(); });
  return e;
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Whatever is left ends as aborted.
  std::vector<std::unique_ptr<Sequence>> left;
  for (auto& s : running_) left.push_back(std::move(s));
  for (auto& s : waiting_) left.push_back(std::move(s));
  running_.clear();
  waiting_.clear();
  for (auto& s : left) {
    GenerationEvent ev;
    Finish(*s, FinishReason::kAbort, "engine shutdown", absl::OkStatus(), &ev);
    s->cb(ev);
  }
}

absl::StatusOr<uint64_t> Engine::Submit(GenerationRequest request, EventCallback callback) {
  const ModelConfig& cfg = info_.config;
  auto s = std::make_unique<Sequence>();
  if (request.prompt_ids.empty()) {
    if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
    if (tokenizer_ == nullptr) {
      return absl::InvalidArgumentError("this model has no tokenizer.json: send token ids instead of text");
    }
    s->tokens = tokenizer_->Encode(request.prompt);
    if (s->tokens.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  } else {
    s->tokens = request.prompt_ids;
  }
  for (int32_t id : s->tokens) {
    if (id < 0 || id >= cfg.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ",
                                                     cfg.vocab_size, ")"));
    }
  }
  const int64_t n = static_cast<int64_t>(s->tokens.size());
  if (n >= info_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", n, " tokens; the context (max_model_len) is ",
                                                   info_.max_model_len, " and must leave room for one more"));
  }
  if (cache_->BlocksForTokens(n + 1) > cache_->options().num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", n, " tokens; the KV cache holds only ",
                                                   cache_->options().num_blocks * cache_->options().block_size));
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 1, got ", request.max_tokens));
  }
  if (request.min_tokens < 0 || request.min_tokens > request.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("min_tokens must be in [0, max_tokens = ", request.max_tokens,
                                                   "], got ", request.min_tokens));
  }
  TQ_RETURN_IF_ERROR(ValidateSamplingParams(request.sampling));
  for (int32_t id : request.stop_token_ids) {
    if (id < 0 || id >= cfg.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop token id ", id, " is outside the vocabulary"));
    }
  }
  for (const std::string& st : request.stop) {
    if (st.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
    s->max_stop_len = std::max(s->max_stop_len, st.size());
  }
  if (!request.stop.empty() && tokenizer_ == nullptr) {
    return absl::InvalidArgumentError("stop strings need a tokenizer; this model has none");
  }
  s->prompt_len = n;
  s->sampler = std::make_unique<Sampler>(request.sampling);
  if (tokenizer_ != nullptr) s->decoder = std::make_unique<IncrementalDecoder>(*tokenizer_);
  s->req = std::move(request);
  s->cb = std::move(callback);
  s->submitted = Clock::now();
  uint64_t id;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return absl::UnavailableError("the engine is shutting down");
    if (static_cast<int>(waiting_.size()) >= options_.max_waiting) {
      return absl::ResourceExhaustedError(absl::StrCat("the request queue is full (", options_.max_waiting,
                                                       " waiting)"));
    }
    const int64_t queued = WaitingTokensLocked();
    if (options_.max_waiting_tokens > 0 && queued + n > options_.max_waiting_tokens && !waiting_.empty()) {
      return absl::ResourceExhaustedError(absl::StrCat("the waiting token budget is full (", queued,
                                                       " prompt tokens queued, limit ",
                                                       options_.max_waiting_tokens, ")"));
    }
    id = next_id_++;
    s->id = id;
    abort_requested_[id] = false;
    waiting_.push_back(std::move(s));
    stats_.waiting = static_cast<int>(waiting_.size());
  }
  cv_.notify_all();
  return id;
}

bool Engine::Abort(uint64_t request_id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = abort_requested_.find(request_id);
    if (it == abort_requested_.end()) return false;
    it->second = true;
  }
  cv_.notify_all();
  return true;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  EngineStats s = stats_;
  s.waiting = static_cast<int>(waiting_.size());
  s.waiting_tokens = WaitingTokensLocked();
  return s;
}

int64_t Engine::WaitingTokensLocked() const {
  int64_t n = 0;
  for (const auto& w : waiting_) n += static_cast<int64_t>(w->tokens.size());
  return n;
}

bool Engine::HasWork() const {
  if (!waiting_.empty() || !running_.empty()) return true;
  return false;
}

void Engine::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || HasWork(); });
      if (stop_) return;
    }
    Step();
  }
}

void Engine::Finish(Sequence& s, FinishReason reason, const std::string& stop_reason, absl::Status status,
                    GenerationEvent* ev) {
  if (s.kv != 0) {
    cache_->FreeSequence(s.kv);
    s.kv = 0;
  }
  // Deliver held-back text (unless a stop string cut it).
  if (reason != FinishReason::kStop || stop_reason.rfind("string:", 0) != 0) {
    if (s.decoder) s.text += s.decoder->Flush();
    if (s.sent < s.text.size()) ev->text += s.text.substr(s.sent);
    s.sent = s.text.size();
  }
  const auto now = Clock::now();
  ev->request_id = s.id;
  ev->finished = true;
  ev->finish_reason = reason;
  ev->stop_reason = stop_reason;
  ev->status = std::move(status);
  ev->prompt_tokens = s.prompt_len;
  ev->completion_tokens = s.generated;
  ev->queue_s = s.scheduled ? Since(s.submitted, s.first_scheduled) : Since(s.submitted, now);
  ev->first_token_s = s.got_token ? Since(s.submitted, s.first_token) : 0;
  ev->total_s = Since(s.submitted, now);
}

void Engine::AppendText(Sequence& s, int32_t token, bool finishing, GenerationEvent* ev) {
  if (!s.decoder) return;
  s.text += s.decoder->Push(token);
  if (finishing) return;  // Finish() delivers the rest
  if (!s.req.stop.empty()) {
    const size_t start = s.sent >= s.max_stop_len ? s.sent - s.max_stop_len + 1 : 0;
    size_t best = std::string::npos;
    std::string which;
    for (const std::string& st : s.req.stop) {
      const size_t at = s.text.find(st, start);
      if (at != std::string::npos && at < best) {
        best = at;
        which = st;
      }
    }
    if (best != std::string::npos) {
      if (best > s.sent) ev->text += s.text.substr(s.sent, best - s.sent);
      s.text.resize(std::max(best, s.sent));
      s.sent = s.text.size();
      ev->stop_reason = "string:" + which;
      return;
    }
    // Hold back what could still become a stop string.
    size_t safe = s.text.size() >= s.max_stop_len - 1 ? s.text.size() - (s.max_stop_len - 1) : 0;
    safe = Utf8Boundary(s.text, safe);
    if (safe > s.sent) {
      ev->text += s.text.substr(s.sent, safe - s.sent);
      s.sent = safe;
    }
    return;
  }
  ev->text += s.text.substr(s.sent);
  s.sent = s.text.size();
}

void Engine::Step() {
  std::lock_guard<std::mutex> model_lock(model_mu_);
  const auto step_start = Clock::now();
  std::vector<std::pair<std::unique_ptr<Sequence>, GenerationEvent>> done;

  // 1. Aborts and time limits.
  size_t aborted = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto leaving = [&](const Sequence& s) {
      return abort_requested_[s.id] || (s.req.deadline != Clock::time_point{} && step_start >= s.req.deadline);
    };
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (leaving(**it)) {
        done.push_back({std::move(*it), GenerationEvent()});
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = running_.begin(); it != running_.end();) {
      if (leaving(**it)) {
        done.push_back({std::move(*it), GenerationEvent()});
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [s, ev] : done) aborted += abort_requested_[s->id] ? 1 : 0;
  }
  for (auto& [s, ev] : done) {
    bool abort;
    {
      std::lock_guard<std::mutex> l(mu_);
      abort = abort_requested_[s->id];
    }
    if (abort) {
      Finish(*s, FinishReason::kAbort, "aborted", absl::OkStatus(), &ev);
    } else {
      Finish(*s, FinishReason::kTimeLimit, "time limit", absl::OkStatus(), &ev);
    }
  }

  // 2. Plan the batch: decodes first (one token each, in admission order), then prefill chunks
  // of running sequences, then newly admitted requests, until the token budget is spent. When
  // the cache is full, sequences are preempted from the back (most recently admitted first).
  struct Planned {
    Sequence* s;
    int64_t n;
  };
  std::vector<Planned> plan;
  int64_t budget = 0;
  auto preempt_last = [&]() -> Sequence* {
    std::unique_ptr<Sequence> victim = std::move(running_.back());
    running_.pop_back();
    cache_->FreeSequence(victim->kv);
    victim->kv = 0;
    victim->computed = 0;
    Sequence* raw = victim.get();
    std::lock_guard<std::mutex> l(mu_);
    waiting_.push_front(std::move(victim));
    ++stats_.preemptions;
    return raw;
  };
  auto unplan = [&](Sequence* victim) {
    plan.erase(std::remove_if(plan.begin(), plan.end(),
                              [&](const Planned& p) {
                                if (p.s == victim) budget += p.n;
                                return p.s == victim;
                              }),
               plan.end());
  };
  // Positions a sequence could add now: its spare capacity plus every free block.
  auto room = [&](const Sequence* s) {
    return cache_->Capacity(s->kv) - s->computed + cache_->num_free_blocks() * cache_->options().block_size;
  };
  for (;;) {
    plan.clear();
    budget = options_.max_num_batched_tokens;
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
      Sequence* s = running_[i].get();
      if (static_cast<int64_t>(s->tokens.size()) - s->computed != 1) continue;
      bool ok = cache_->Reserve(s->kv, s->computed + 1);
      while (!ok) {
        Sequence* victim = preempt_last();
        unplan(victim);
        if (victim == s) break;
        ok = cache_->Reserve(s->kv, s->computed + 1);
      }
      if (!ok) break;  // s itself was the last running sequence and is now waiting
      plan.push_back({s, 1});
      --budget;
    }
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
      Sequence* s = running_[i].get();
      const int64_t pending = static_cast<int64_t>(s->tokens.size()) - s->computed;
      if (pending <= 1) continue;
      const int64_t chunk = std::min({pending, budget, room(s)});
      if (chunk < 1 || !cache_->Reserve(s->kv, s->computed + chunk)) continue;
      plan.push_back({s, chunk});
      budget -= chunk;
    }
    while (budget > 0 && static_cast<int>(running_.size()) < options_.max_num_seqs) {
      std::unique_ptr<Sequence> s;
      int64_t chunk = 0;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (waiting_.empty()) break;
        Sequence* head = waiting_.front().get();
        chunk = std::min<int64_t>(static_cast<int64_t>(head->tokens.size()), budget);
        // A prompt that needs more than its first chunk must still fit the free blocks whole:
        // admitting it into a nearly full cache would only force a preemption later.
        if (cache_->BlocksForTokens(static_cast<int64_t>(head->tokens.size()) + 1) >
            cache_->num_free_blocks()) {
          break;
        }
        s = std::move(waiting_.front());
        waiting_.pop_front();
      }
      s->kv = cache_->AddSequence();
      cache_->Reserve(s->kv, chunk);
      if (!s->scheduled) {
        s->scheduled = true;
        s->first_scheduled = Clock::now();
      }
      plan.push_back({s.get(), chunk});
      budget -= chunk;
      running_.push_back(std::move(s));
    }
    if (!plan.empty() || running_.empty()) break;
    preempt_last();  // running sequences are all stuck on a full cache: make room
  }

  // 3. Run. A sequence whose step reaches its last token gets logits and samples.
  auto completes = [](const Planned& p) {
    return p.s->computed + p.n == static_cast<int64_t>(p.s->tokens.size());
  };
  ForwardBatch batch;
  for (const Planned& p : plan) {
    Sequence* s = p.s;
    batch.tokens.insert(batch.tokens.end(), s->tokens.begin() + s->computed,
                        s->tokens.begin() + s->computed + p.n);
    batch.seqs.push_back({s->kv, s->computed, p.n, completes(p) ? LogitsMode::kLast : LogitsMode::kNone});
  }
  // 4. Sample. The sequences whose step completes sample their next token from their logits row
  // (in plan order): on the device when the backend can (only the tokens come back), else here,
  // in parallel — each touches only its own row and sampler, and a vocabulary-sized row costs
  // ~0.1–0.7 ms (engine/sampling/sampler_benchmark). Not yet allowed to end (min_tokens): eos
  // and stop token ids are masked out.
  const int64_t vocab = info_.config.vocab_size;
  struct Sampled {
    int32_t token = 0;
    float logprob = 0.0f;
  };
  std::vector<Sequence*> sampling;
  for (const Planned& p : plan) {
    if (completes(p)) sampling.push_back(p.s);
  }
  auto masked_ids = [&](const Sequence& s, std::vector<int32_t>* ids) {
    if (s.generated >= s.req.min_tokens) return;
    if (!s.req.ignore_eos) ids->insert(ids->end(), eos_ids_.begin(), eos_ids_.end());
    ids->insert(ids->end(), s.req.stop_token_ids.begin(), s.req.stop_token_ids.end());
  };
  std::vector<Sampled> sampled(sampling.size());
  absl::Status fwd = absl::OkStatus();
  if (plan.empty()) {
    // Nothing to run this step.
  } else if (options_.device_sampling && model_->SamplesOnDevice()) {
    std::vector<RowSampling> rows(sampling.size());
    for (size_t i = 0; i < sampling.size(); ++i) {
      Sampler& sm = *sampling[i]->sampler;
      cuda::SampleRowParams& p = rows[i].params;
      p.temperature = sm.greedy() ? 0.0f : sm.params().temperature;
      p.top_k = sm.params().top_k;
      p.top_p = sm.params().top_p;
      p.min_p = sm.params().min_p;
      p.key = sm.stream_key();
      p.index = sm.TakeDrawIndex();
      masked_ids(*sampling[i], &rows[i].masked);
    }
    std::vector<SampledToken> tokens;
    fwd = model_->ForwardSample(batch, *cache_, rows, &tokens);
    for (size_t i = 0; fwd.ok() && i < tokens.size(); ++i) sampled[i] = {tokens[i].token, tokens[i].logprob};
  } else {
    std::vector<float>& logits = step_logits_;
    fwd = model_->Forward(batch, *cache_, &logits);
    if (fwd.ok()) {
      pool_->ParallelFor(static_cast<int64_t>(sampling.size()), 1, [&](int64_t begin, int64_t end) {
        std::vector<int32_t> masked;
        for (int64_t i = begin; i < end; ++i) {
          Sequence* s = sampling[i];
          float* row_logits = logits.data() + i * vocab;
          masked.clear();
          masked_ids(*s, &masked);
          for (int32_t e : masked) row_logits[e] = -std::numeric_limits<float>::infinity();
          sampled[i].token = s->sampler->Sample(row_logits, vocab, &sampled[i].logprob);
        }
      });
    }
  }

  // 5. Stream, finish.
  std::vector<std::pair<Sequence*, GenerationEvent>> events;
  std::vector<Sequence*> finished;
  int64_t row = 0;
  uint64_t prompt_tokens = 0, generated = 0;
  for (const Planned& p : plan) {
    Sequence* s = p.s;
    GenerationEvent ev;
    ev.request_id = s->id;
    if (!fwd.ok()) {
      Finish(*s, FinishReason::kError, "", fwd, &ev);
      events.push_back({s, std::move(ev)});
      finished.push_back(s);
      continue;
    }
    const bool done = completes(p);  // before `computed` moves on
    if (p.n > 1 || s->generated == 0) prompt_tokens += p.n;
    s->computed += p.n;
    if (!done) continue;
    const int32_t tok = sampled[row].token;
    const float lp = sampled[row].logprob;
    ++row;
    ++generated;
    s->tokens.push_back(tok);
    ++s->generated;
    if (!s->got_token) {
      s->got_token = true;
      s->first_token = Clock::now();
    }
    ev.token_ids.push_back(tok);
    ev.logprobs.push_back(lp);
    FinishReason reason = FinishReason::kNone;
    std::string why;
    const bool is_eos = !s->req.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), tok) != eos_ids_.end();
    const bool is_stop_token =
        std::find(s->req.stop_token_ids.begin(), s->req.stop_token_ids.end(), tok) != s->req.stop_token_ids.end();
    if (is_eos || is_stop_token) {
      reason = FinishReason::kStop;
      why = absl::StrCat("token:", tok);
      ev.stop_token_id = tok;
      ev.eos = is_eos;
    } else {
      const bool at_limit = s->generated >= s->req.max_tokens ||
                            static_cast<int64_t>(s->tokens.size()) >= context_limit_;
      AppendText(*s, tok, at_limit, &ev);
      if (!ev.stop_reason.empty()) {
        reason = FinishReason::kStop;
        why = ev.stop_reason;
        ev.stop_string = why.substr(7);  // after "string:"
      } else if (at_limit) {
        reason = FinishReason::kLength;
      }
    }
    ev.prompt_tokens = s->prompt_len;
    ev.completion_tokens = s->generated;
    if (reason != FinishReason::kNone) {
      Finish(*s, reason, why, absl::OkStatus(), &ev);
      finished.push_back(s);
    }
    events.push_back({s, std::move(ev)});
  }

  // Remove finished sequences from the running set.
  std::vector<std::unique_ptr<Sequence>> gone;
  for (Sequence* f : finished) {
    for (auto it = running_.begin(); it != running_.end(); ++it) {
      if (it->get() == f) {
        gone.push_back(std::move(*it));
        running_.erase(it);
        break;
      }
    }
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [s, ev] : done) abort_requested_.erase(s->id);
    for (auto& s : gone) abort_requested_.erase(s->id);
    stats_.aborted_requests += aborted;
    stats_.finished_requests += done.size() - aborted;
    stats_.finished_requests += gone.size();
    ++stats_.steps;
    stats_.prompt_tokens += prompt_tokens;
    stats_.generated_tokens += generated;
    stats_.running = static_cast<int>(running_.size());
    stats_.waiting = static_cast<int>(waiting_.size());
    stats_.kv_blocks_used = cache_->num_used_blocks();
  }
  if (options_.on_step && !plan.empty()) {
    StepInfo info;
    for (const Planned& p : plan) info.tokens += p.n;
    info.sequences = static_cast<int>(plan.size());
    info.prefill_tokens = static_cast<int64_t>(prompt_tokens);
    info.seconds = Since(step_start, Clock::now());
    options_.on_step(info);
  }
  // Deliver (no engine lock held except the model's).
  for (auto& [s, ev] : done) s->cb(ev);
  for (auto& [s, ev] : events) s->cb(ev);
}

absl::StatusOr<std::vector<std::vector<float>>> Engine::Score(const std::vector<std::vector<int32_t>>& seqs) {
  std::lock_guard<std::mutex> model_lock(model_mu_);
  const int64_t vocab = info_.config.vocab_size;
  ForwardBatch batch;
  std::vector<SeqHandle> handles;
  absl::Status status;
  for (const auto& ids : seqs) {
    if (ids.size() < 2) {
      status = absl::InvalidArgumentError("each scored sequence needs at least 2 tokens");
      break;
    }
    if (static_cast<int64_t>(ids.size()) > info_.max_model_len) {
      status = absl::InvalidArgumentError(absl::StrCat("a scored sequence of ", ids.size(),
                                                       " tokens exceeds max_model_len ", info_.max_model_len));
      break;
    }
    SeqHandle h = cache_->AddSequence();
    handles.push_back(h);
    if (!cache_->Reserve(h, static_cast<int64_t>(ids.size()))) {
      status = absl::ResourceExhaustedError("not enough free KV cache blocks to score these sequences");
      break;
    }
    batch.tokens.insert(batch.tokens.end(), ids.begin(), ids.end());
    batch.seqs.push_back({h, 0, static_cast<int64_t>(ids.size()), LogitsMode::kAll});
  }
  std::vector<float> logits;
  if (status.ok()) status = model_->Forward(batch, *cache_, &logits);
  for (SeqHandle h : handles) cache_->FreeSequence(h);
  TQ_RETURN_IF_ERROR(status);
  std::vector<std::vector<float>> out;
  int64_t row = 0;
  for (const auto& ids : seqs) {
    std::vector<float> nll;
    for (size_t i = 0; i < ids.size(); ++i, ++row) {
      if (i + 1 == ids.size()) continue;
      const float* l = logits.data() + row * vocab;
      nll.push_back(nn::LogSumExp(l, vocab) - l[ids[i + 1]]);
    }
    out.push_back(std::move(nll));
  }
  return out;
}

}  // namespace tq
