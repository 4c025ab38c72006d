// Parity of the CUDA packed-KV decode attention (kernels/cuda/kv_attention.h) with a CPU
// reference: keys and values are encoded with the CPU KV quantizers (kernels/quant/kv_quant.h,
// the codecs of the turbo presets) or rounded to bf16, decoded on the CPU, and attention is
// computed in double. Paged caches with shuffled block tables, several sequences of awkward
// lengths, GQA groups 1/4/8, several split counts; outputs poisoned with NaN first. Skips with
// the reason when the binary has no CUDA or the machine has no GPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/half.h"
#include "kernels/cuda/device_testing.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/kv_quant.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/kv_attention.h"
#include "kernels/cuda/kv_side_testing.h"
#endif

namespace tq::cuda {
namespace {

// Absolute, on outputs of magnitude ~1: fp32 scores / softmax / sums (and __expf) against double.
constexpr double kAttentionTol = 2e-4;
// The tensor-core kernel: fp16 operands (the query scaled to [0.5, 1) per head, the centroids,
// the weights times gain / largest gain), fp32 accumulation — ~2^-11 relative per product.
constexpr double kTensorCoreTol = 4e-3;

#if TQ_HAVE_CUDA
struct Case {
  int num_heads, num_kv_heads;
  std::vector<int32_t> positions;  // one row per sequence
  int block_size;
  KvCacheLayout layout = KvCacheLayout::kHeadMajor;
  int64_t window = 0;
  int head_dim = 128;
  int sink = 0;  // sink positions per sequence (bf16 in a side store, written by WriteKvSinks)
  float value_scale = 1.0f;  // values ~ N(0, value_scale²): gains far from 1 (errors are divided by it)
};

// Runs one case for the given K/V bit widths (0 = bf16) and split counts, on the tensor-core
// kernel where it applies when `tensor_cores` (it must apply to every eligible case: *used says
// whether it did); returns the worst absolute error over value_scale.
double RunCase(const Case& c, int kbits, int vbits, const std::vector<int>& split_list, uint32_t seed,
               bool tensor_cores, bool* used) {
  const int kD = c.head_dim;
  const KvSide ks = MakeKvSide(kD, kbits, quant::kKvKeySeed), vs = MakeKvSide(kD, vbits, quant::kKvValueSeed);
  const int rows = static_cast<int>(c.positions.size());
  const int bs = c.block_size, nkv = c.num_kv_heads, nh = c.num_heads;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Blocks of every sequence, allocated in a shuffled order.
  std::vector<int32_t> table, offset;
  const int total_blocks = ShuffledBlockTables(c.positions, bs, rng, &table, &offset);
  // Cache contents and the decoded vectors the reference uses.
  const int64_t kb = ks.bytes(), vb = vs.bytes();
  std::vector<uint8_t> kc(static_cast<size_t>(total_blocks) * nkv * bs * kb, 0);
  std::vector<uint8_t> vc(static_cast<size_t>(total_blocks) * nkv * bs * vb, 0);
  // decoded[r][pos][head][d]
  std::vector<std::vector<float>> kdec(rows), vdec(rows);
  std::vector<float> x(kD);
  // Sink positions: rows of K and V for the sink writer (sequence r in sink slot rows − 1 − r);
  // their cache slots stay zero (a kernel reading them would score 0 and fail the comparison).
  std::vector<float> sink_k, sink_v;
  std::vector<int32_t> sink_pos, sink_row_slot, sink_slot(rows);
  const KvSide bf16 = MakeKvSide(kD, 0, 0);
  std::vector<uint8_t> scratch(2 * kD);
  for (int r = 0; r < rows; ++r) {
    const int n = c.positions[r] + 1;
    sink_slot[r] = rows - 1 - r;
    kdec[r].resize(static_cast<size_t>(n) * nkv * kD);
    vdec[r].resize(static_cast<size_t>(n) * nkv * kD);
    for (int j = 0; j < n; ++j) {
      const int64_t blk = table[offset[r] + j / bs];
      const bool sink = j < c.sink;
      if (sink) {
        sink_pos.push_back(j);
        sink_row_slot.push_back(sink_slot[r]);
      }
      for (int h = 0; h < nkv; ++h) {
        const int64_t slot = c.layout == KvCacheLayout::kHeadMajor ? (blk * nkv + h) * bs + j % bs
                                                                   : (blk * bs + j % bs) * nkv + h;
        float* kd = &kdec[r][(static_cast<size_t>(j) * nkv + h) * kD];
        float* vd = &vdec[r][(static_cast<size_t>(j) * nkv + h) * kD];
        for (float& v : x) v = nd(rng) * 2.0f;
        if (sink) {
          bf16.Encode(x.data(), scratch.data(), kd);
          sink_k.insert(sink_k.end(), x.begin(), x.end());
        } else {
          ks.Encode(x.data(), kc.data() + slot * kb, kd);
        }
        for (float& v : x) v = nd(rng) * c.value_scale;
        if (sink) {
          bf16.Encode(x.data(), scratch.data(), vd);
          sink_v.insert(sink_v.end(), x.begin(), x.end());
        } else {
          vs.Encode(x.data(), vc.data() + slot * vb, vd);
        }
      }
    }
  }
  std::vector<float> q(static_cast<size_t>(rows) * nh * kD);
  for (float& v : q) v = nd(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
  // Reference in double.
  std::vector<double> ref(q.size());
  const int group = nh / nkv;
  for (int r = 0; r < rows; ++r) {
    const int n = c.positions[r] + 1;
    const int first = c.window > 0 && n > c.window ? n - static_cast<int>(c.window) : 0;
    for (int h = 0; h < nh; ++h) {
      const int kvh = h / group;
      std::vector<double> s(n, 0.0);
      double big = -1e300;
      for (int j = first; j < n; ++j) {
        double acc = 0;
        const float* kv = &kdec[r][(static_cast<size_t>(j) * nkv + kvh) * kD];
        for (int i = 0; i < kD; ++i) acc += static_cast<double>(q[(r * nh + h) * kD + i]) * kv[i];
        s[j] = acc * scale;
        big = std::max(big, s[j]);
      }
      double sum = 0;
      for (int j = first; j < n; ++j) sum += (s[j] = std::exp(s[j] - big));
      for (int i = 0; i < kD; ++i) {
        double a = 0;
        for (int j = first; j < n; ++j) a += s[j] * vdec[r][(static_cast<size_t>(j) * nkv + kvh) * kD + i];
        ref[(r * nh + h) * kD + i] = a / sum;
      }
    }
  }
  DeviceVector<float> dq(q);
  DeviceVector<uint8_t> dkc(kc), dvc(vc);
  DeviceVector<int32_t> dtab(table), doff(offset), dpos(c.positions);
  DeviceKvFormat kf(ks), vf(vs);
  // The sink store, written by the GPU sink writer in each side's attention space.
  const size_t store_floats = static_cast<size_t>(rows) * std::max(c.sink, 1) * nkv * kD;
  DeviceVector<float> dsk(std::vector<float>(store_floats, std::nanf(""))),
      dsv(std::vector<float>(store_floats, std::nanf("")));
  DeviceVector<int32_t> dslot(sink_slot);
  if (c.sink > 0) {
    const int64_t n = static_cast<int64_t>(sink_pos.size());
    DeviceVector<float> xk(sink_k), xv(sink_v);
    DeviceVector<int32_t> dsp(sink_pos), dss(sink_row_slot);
    const int64_t ld = static_cast<int64_t>(nkv) * kD;
    EXPECT_EQ(WriteKvSinks(xk.get(), ld, n, nkv, kD, dsp.get(), dss.get(), c.sink, kf.f.signs,
                           kbits == 0 ? 0.0f : kf.f.divisor, dsk.get(), nullptr),
              cudaSuccess);
    EXPECT_EQ(WriteKvSinks(xv.get(), ld, n, nkv, kD, dsp.get(), dss.get(), c.sink, vf.f.signs,
                           vbits == 0 ? 0.0f : vf.f.divisor, dsv.get(), nullptr),
              cudaSuccess);
  }
  double worst = 0.0;
  for (int splits : split_list) {
    SCOPED_TRACE("splits " + std::to_string(splits));
    DeviceVector<float> out(std::vector<float>(q.size(), std::nanf("")));
    DeviceVector<float> ws(std::vector<float>(PackedAttentionWorkspaceBytes(rows, nh, kD, splits) / 4 + 1));
    PackedAttentionParams p;
    p.q = dq.get();
    p.ldq = static_cast<int64_t>(nh) * kD;
    p.k_cache = dkc.get();
    p.v_cache = dvc.get();
    p.k_format = kf.f;
    p.v_format = vf.f;
    p.block_table = dtab.get();
    p.table_offset = doff.get();
    p.positions = dpos.get();
    p.rows = rows;
    p.num_heads = nh;
    p.num_kv_heads = nkv;
    p.head_dim = kD;
    p.block_size = bs;
    p.layout = c.layout;
    p.window = c.window;
    p.scale = scale;
    p.out = out.get();
    p.ldo = static_cast<int64_t>(nh) * kD;
    p.splits = splits;
    if (c.sink > 0) {
      p.sink_tokens = c.sink;
      p.sink_k = dsk.get();
      p.sink_v = dsv.get();
      p.sink_slot = dslot.get();
    }
    p.workspace = ws.get();
    p.workspace_bytes = PackedAttentionWorkspaceBytes(rows, nh, kD, splits);
    p.tensor_cores = tensor_cores;
    *used = UseTensorCores(p);
    EXPECT_EQ(PackedAttentionUnsupportedReason(p), nullptr);
    EXPECT_EQ(PackedAttention(p, nullptr), cudaSuccess);
    const std::vector<float> got = out.Download();
    for (size_t i = 0; i < got.size(); ++i) {
      if (!std::isfinite(got[i])) {
        ADD_FAILURE() << "output " << i << " not finite (unwritten?)";
        return 1e30;
      }
      worst = std::max(worst, std::fabs(got[i] - ref[i]) / c.value_scale);
    }
  }
  return worst;
}
#endif

TEST(PackedAttentionTest, MatchesCpuReference) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  const Case cases[] = {
      {8, 8, {0, 16, 130}, 16},      // MHA, a 1-position sequence, a block boundary
      {8, 2, {299, 5}, 16},          // GQA 4
      {8, 1, {1000}, 32},            // GQA 8 (MQA), long enough for many splits
      {6, 2, {47, 300, 77, 1}, 8},   // GQA 3 (padded to a group of 4), small blocks
      // The engine's slot-major layout; a sliding window (also shorter than a split).
      {8, 2, {700, 3, 129}, 16, KvCacheLayout::kSlotMajor, 0},
      {4, 2, {900, 40}, 16, KvCacheLayout::kSlotMajor, 100},
      {4, 4, {600}, 16, KvCacheLayout::kHeadMajor, 300},
      // Smaller heads (the tiny test models').
      {4, 2, {333, 20}, 16, KvCacheLayout::kSlotMajor, 0, 64},
      {6, 2, {260, 0}, 16, KvCacheLayout::kSlotMajor, 0, 32},
      {4, 1, {500}, 8, KvCacheLayout::kHeadMajor, 130, 32},
      // Sinks (the plugin presets keep 4): fewer positions than sinks, a split boundary
      // inside none of them, a window that has moved past them, more sinks than a warp's tile.
      {8, 2, {2, 4, 300, 130}, 16, KvCacheLayout::kSlotMajor, 0, 128, 4},
      {4, 4, {400, 9}, 16, KvCacheLayout::kSlotMajor, 100, 64, 4},
      {6, 2, {200, 40}, 16, KvCacheLayout::kHeadMajor, 0, 32, 37},
      // Gains far from 1 (the tensor-core kernel's weights are scaled by the largest gain), a
      // window shorter than a tile, and a block of 32 positions (two tiles per block).
      {8, 1, {700, 20}, 16, KvCacheLayout::kSlotMajor, 0, 128, 4, 3.0e4f},
      {8, 2, {500}, 32, KvCacheLayout::kHeadMajor, 0, 128, 0, 2.0e-5f},
      {16, 2, {400, 65}, 16, KvCacheLayout::kSlotMajor, 11, 128, 0},
  };
  // (K bits, V bits), 0 = bf16; 8-bit keys are the plugin presets' boundary layers.
  const std::pair<int, int> formats[] = {{0, 0}, {3, 3}, {4, 4}, {4, 3}, {2, 2}, {8, 3}, {8, 4}};
  uint32_t seed = 5;
  double worst_fp32 = 0.0, worst_tc = 0.0;
  int tc_runs = 0;
  for (const bool tensor_cores : {false, true}) {
    for (const auto& [kbits, vbits] : formats) {
      for (const Case& c : cases) {
        SCOPED_TRACE("K bits " + std::to_string(kbits) + " V bits " + std::to_string(vbits) + " heads " +
                     std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) + " d " +
                     std::to_string(c.head_dim) + " sinks " + std::to_string(c.sink) + " block " +
                     std::to_string(c.block_size) + (tensor_cores ? " tensor cores allowed" : " fp32 kernel"));
        bool used = false;
        const double worst = RunCase(c, kbits, vbits, {1, 3, 16, 200}, seed++, tensor_cores, &used);
        if (!tensor_cores) {
          EXPECT_FALSE(used);
        }
        // Eligible: packed K and V (2/2, 3/3, 4/4, 4/3, and 8-bit boundary keys with 3- or 4-bit
        // values), d 128, <= 8 heads per KV head, blocks of 16k.
        const bool packed = (kbits == vbits && kbits >= 2 && kbits <= 4) || (kbits == 4 && vbits == 3) ||
                            (kbits == 8 && (vbits == 3 || vbits == 4));
        const bool eligible = tensor_cores && packed && c.head_dim == 128 &&
                              c.num_heads / c.num_kv_heads <= 8 && c.block_size % 16 == 0;
        EXPECT_EQ(used, eligible);
        EXPECT_LE(worst, used ? kTensorCoreTol : kAttentionTol);
        (used ? worst_tc : worst_fp32) = std::max(used ? worst_tc : worst_fp32, worst);
        tc_runs += used ? 1 : 0;
      }
    }
  }
  EXPECT_GT(tc_runs, 0);
  std::printf("packed attention: worst |gpu - cpu| %.3g on the fp32 kernel (bound %.1g), %.3g on tensor cores "
              "(%d cases, bound %.1g)\n",
              worst_fp32, kAttentionTol, worst_tc, tc_runs, kTensorCoreTol);
#endif
}

// The GPU writer produces the CPU quantizer's bytes: codes bitwise, the gain within an ulp
// (its double sums are reduced in another order). Plugin keys and values (signs, ties to the
// lower bucket) and vLLM-style keys (plain Hadamard, ties up); a zero vector; shuffled slots.
TEST(PackedAttentionTest, WriterMatchesCpuEncoder) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  int64_t code_mismatch = 0, gain_far = 0, vectors = 0;
  uint32_t seed = 90;
  for (int d : {32, 64, 128}) {
    for (int bits : {2, 3, 4, 8}) {
      for (bool plugin : {true, false}) {
        quant::KvMseSpec spec;
        spec.dim = d;
        spec.bits = bits;
        spec.signs = plugin;
        spec.ties_up = !plugin;
        spec.seed = quant::kKvKeySeed;
        spec.gain = quant::KvGain::kNormCorrected;
        spec.norm_type = quant::KvScalar::kF32;
        const quant::KvMseQuantizer q(spec);
        const int nkv = 3, rows = 37;
        const int64_t bytes = q.bytes();
        std::mt19937 rng(seed++);
        std::normal_distribution<float> nd(0.0f, 1.5f);
        std::vector<float> x(static_cast<size_t>(rows) * nkv * d);
        for (float& v : x) v = nd(rng);
        std::fill(x.begin(), x.begin() + d, 0.0f);  // row 0, head 0: a zero vector
        std::vector<int64_t> slots(rows);
        for (int r = 0; r < rows; ++r) slots[r] = r;
        std::shuffle(slots.begin(), slots.end(), rng);
        std::vector<uint8_t> want(static_cast<size_t>(rows) * nkv * bytes, 0);
        for (int r = 0; r < rows; ++r) {
          for (int h = 0; h < nkv; ++h) {
            q.Encode(&x[(static_cast<size_t>(r) * nkv + h) * d], &want[(slots[r] * nkv + h) * bytes]);
          }
        }
        const std::vector<float> sg = q.rotation().signs12();
        DeviceVector<float> dx(x), dcent(q.codebook().centroids), dbound(q.codebook().boundaries),
            dsign(sg.empty() ? std::vector<float>(1) : sg);
        DeviceVector<int64_t> dslots(slots);
        DeviceVector<uint8_t> cache(std::vector<uint8_t>(want.size(), 0xAB));
        KvPolarEncoder enc;
        enc.bits = bits;
        enc.centroids = dcent.get();
        enc.boundaries = dbound.get();
        enc.signs = plugin ? dsign.get() : nullptr;
        enc.divisor = q.rotation().divisor();
        enc.ties_up = spec.ties_up;
        ASSERT_EQ(WriteKvPolar(dx.get(), static_cast<int64_t>(nkv) * d, rows, nkv, d, dslots.get(), enc,
                               cache.get(), nullptr),
                  cudaSuccess);
        const std::vector<uint8_t> got = cache.Download();
        const int64_t code_bytes = bytes - 4;
        for (int64_t v = 0; v < static_cast<int64_t>(rows) * nkv; ++v) {
          ++vectors;
          if (std::memcmp(&got[v * bytes], &want[v * bytes], code_bytes) != 0) ++code_mismatch;
          int32_t a, b;
          std::memcpy(&a, &got[v * bytes + code_bytes], 4);
          std::memcpy(&b, &want[v * bytes + code_bytes], 4);
          if (std::abs(static_cast<int64_t>(a) - b) > 1) ++gain_far;
        }
        if (bits == 2) {  // the sink writer: R·bf16(x), bitwise the CPU's KvRotation::Forward
          std::vector<int32_t> pos(rows), sink_slot(rows);
          for (int r = 0; r < rows; ++r) pos[r] = r % 5, sink_slot[r] = r / 5;  // positions 0-4, 4 sinks
          const int sinks = 4, slot_count = (rows + 4) / 5;
          std::vector<float> want_sink(static_cast<size_t>(slot_count) * sinks * nkv * d, -7.0f), bx(d);
          for (int r = 0; r < rows; ++r) {
            if (pos[r] >= sinks) continue;
            for (int h = 0; h < nkv; ++h) {
              for (int i = 0; i < d; ++i) {
                bx[i] = cpu::Bf16ToFloat(cpu::FloatToBf16(x[(static_cast<size_t>(r) * nkv + h) * d + i]));
              }
              q.rotation().Forward(bx.data(),
                                   &want_sink[((static_cast<size_t>(sink_slot[r]) * sinks + pos[r]) * nkv + h) * d]);
            }
          }
          DeviceVector<int32_t> dpos(pos), dss(sink_slot);
          DeviceVector<float> store(std::vector<float>(want_sink.size(), -7.0f));
          ASSERT_EQ(WriteKvSinks(dx.get(), static_cast<int64_t>(nkv) * d, rows, nkv, d, dpos.get(), dss.get(), sinks,
                                 plugin ? dsign.get() : nullptr, q.rotation().divisor(), store.get(), nullptr),
                    cudaSuccess);
          const std::vector<float> got_sink = store.Download();
          EXPECT_EQ(std::memcmp(got_sink.data(), want_sink.data(), want_sink.size() * sizeof(float)), 0)
              << "sink store differs from the CPU's rotation of the bf16 vectors (d " << d << ")";
        }
      }
    }
  }
  EXPECT_EQ(code_mismatch, 0) << "of " << vectors << " vectors";
  EXPECT_EQ(gain_far, 0) << "gains more than an ulp apart, of " << vectors;
  std::printf("packed KV writer: %lld vectors, codes bitwise equal to the CPU encoder\n",
              static_cast<long long>(vectors));
  // Bad arguments.
  KvPolarEncoder enc;
  EXPECT_EQ(WriteKvPolar(nullptr, 128, 1, 1, 48, nullptr, enc, nullptr, nullptr), cudaErrorInvalidValue);
  enc.bits = 5;
  EXPECT_EQ(WriteKvPolar(nullptr, 128, 1, 1, 128, nullptr, enc, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(WriteKvSinks(nullptr, 128, 1, 1, 48, nullptr, nullptr, 4, nullptr, 0.0f, nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(WriteKvSinks(nullptr, 128, 1, 1, 128, nullptr, nullptr, 4, nullptr, 0.0f, nullptr, nullptr),
            cudaErrorInvalidValue);  // rows to write, no buffers
#endif
}

TEST(PackedAttentionTest, RejectsWhatItCannotRun) {
#if TQ_HAVE_CUDA
  PackedAttentionParams p;
  p.num_heads = 8;
  p.num_kv_heads = 8;
  p.head_dim = 48;
  EXPECT_NE(PackedAttentionUnsupportedReason(p), nullptr);
  p.head_dim = 64;
  EXPECT_EQ(PackedAttentionUnsupportedReason(p), nullptr);
  p.head_dim = 128;
  EXPECT_EQ(PackedAttentionUnsupportedReason(p), nullptr);
  p.num_kv_heads = 3;
  EXPECT_NE(PackedAttentionUnsupportedReason(p), nullptr);  // 8 % 3
  p.num_heads = 48;
  p.num_kv_heads = 3;
  EXPECT_NE(PackedAttentionUnsupportedReason(p), nullptr);  // 16 per KV head
  p.num_heads = 8;
  p.num_kv_heads = 2;
  p.k_format.kind = KvVectorKind::kPolar;
  p.k_format.bits = 3;  // no codebook
  EXPECT_NE(PackedAttentionUnsupportedReason(p), nullptr);
  float cb[8] = {};
  p.k_format.codebook = cb;
  EXPECT_NE(PackedAttentionUnsupportedReason(p), nullptr);  // K packed, V bf16
  p.k_format.bits = 5;
  EXPECT_NE(PackedAttentionUnsupportedReason(p), nullptr);
  p.k_format.bits = 8;  // 8-bit keys (boundary layers), but not 8-bit values
  p.v_format = p.k_format;
  p.v_format.divisor = p.k_format.divisor = 1.0f;
  EXPECT_NE(PackedAttentionUnsupportedReason(p), nullptr);
  p.v_format.bits = 3;
  EXPECT_EQ(PackedAttentionUnsupportedReason(p), nullptr);
  p.sink_tokens = -1;
  EXPECT_NE(PackedAttentionUnsupportedReason(p), nullptr);
  p.sink_tokens = 0;
  p.k_format.bits = 5;
  EXPECT_EQ(PackedAttention(p, nullptr), cudaErrorInvalidValue);
  p.k_format = p.v_format = KvVectorFormat();
  p.block_size = 16;
  p.window = -1;  // everything else valid (rows = 0 would be a no-op)
  EXPECT_EQ(PackedAttention(p, nullptr), cudaErrorInvalidValue);
  // The tensor-core kernel: packed 2-4-bit K and V (K = V, or 4/3; 8-bit keys with 3/4-bit
  // values), d 128, G <= 8, blocks of 16k.
  {
    PackedAttentionParams t;
    t.num_heads = 32;
    t.num_kv_heads = 4;
    t.head_dim = 128;
    t.block_size = 32;
    t.k_format.kind = t.v_format.kind = KvVectorKind::kPolar;
    t.k_format.codebook = t.v_format.codebook = cb;
    t.k_format.bits = t.v_format.bits = 3;
    EXPECT_TRUE(UseTensorCores(t));
    t.k_format.bits = 4;
    EXPECT_TRUE(UseTensorCores(t));  // k4v3
    t.k_format.bits = 2;
    EXPECT_FALSE(UseTensorCores(t));  // 2/3
    t.k_format.bits = 8;
    EXPECT_TRUE(UseTensorCores(t));  // boundary-layer keys, 3-bit values
    t.v_format.bits = 2;
    EXPECT_FALSE(UseTensorCores(t));  // 8/2: no preset stores it
    t.v_format.bits = 3;
    t.k_format.bits = 3;
    t.tensor_cores = false;
    EXPECT_FALSE(UseTensorCores(t));
    t.tensor_cores = true;
    t.block_size = 8;
    EXPECT_FALSE(UseTensorCores(t));
    t.block_size = 16;
    t.head_dim = 64;
    EXPECT_FALSE(UseTensorCores(t));
    t.head_dim = 128;
    t.num_kv_heads = 2;  // 16 heads per KV head
    EXPECT_FALSE(UseTensorCores(t));
    t.k_format = t.v_format = KvVectorFormat();  // bf16
    EXPECT_FALSE(UseTensorCores(t));
  }
  // Splits: about 8 CTAs per SM, >= 128 positions each, at most kMaxAttentionSplits.
  EXPECT_EQ(PlanAttentionSplits(1, 8, 32768, 132), 132);
  EXPECT_EQ(PlanAttentionSplits(1, 8, 100, 132), 1);
  EXPECT_EQ(PlanAttentionSplits(64, 8, 32768, 132), 3);
  EXPECT_LE(PlanAttentionSplits(1, 1, 1 << 20, 1000), kMaxAttentionSplits);
#else
  GTEST_SKIP() << "CUDA test skipped: built without the CUDA toolkit";
#endif
}

}  // namespace
}  // namespace tq::cuda
