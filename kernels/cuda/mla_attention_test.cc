// Parity of the CUDA MLA decode attention (kernels/cuda/mla_attention.h) with a CPU reference:
// latents [c | k_pe] in two parts of their own widths (the engine's 128 + 32 and 512 + 64, equal
// parts, a wider second part), each encoded with the CPU KV quantizers (kernels/quant/kv_quant.h:
// the turbo presets' PolarQuant at 2/3/4/8 bits, block Hadamard) or rounded to bf16 — the engine's
// c packed with k_pe bf16 among them — decoded on the CPU, and absorbed attention is computed in
// double. Paged caches with shuffled block tables,
// sequences of awkward lengths, 1 to 20 heads (a partial second group of 16), sinks, the engine's
// contiguous bf16 latent, several split counts; outputs poisoned with NaN first. Skips with the
// reason when the binary has no CUDA or the machine has no GPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
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

#include "kernels/cuda/kv_side_testing.h"
#include "kernels/cuda/mla_attention.h"
#endif

namespace tq::cuda {
namespace {

// Absolute, on outputs of magnitude ~1: fp32 scores / softmax / sums against double.
constexpr double kMlaAttentionTol = 2e-4;
// The tensor-core kernel: fp16 operands (queries scaled per head into [0.5, 1), centroids,
// weights × gain / largest gain), fp32 accumulation — ~2^-11 relative per product.
constexpr double kMlaTensorCoreTol = 4e-3;

#if TQ_HAVE_CUDA
// One part of the latent: how the CPU encodes it, and a sink: bf16(x) as the reference sees it
// and its attention-space form for the side store.
struct Part : KvSide {
  void Sink(const float* x, float* decoded, float* store) const {
    for (int i = 0; i < d; ++i) decoded[i] = cpu::Bf16ToFloat(cpu::FloatToBf16(x[i]));
    if (bits == 0) {
      std::copy(decoded, decoded + d, store);
    } else {
      q->rotation().Forward(decoded, store);
    }
  }
};

Part MakePart(int d, int bits, uint32_t seed) {
  Part h;
  static_cast<KvSide&>(h) = MakeKvSide(d, bits, seed);
  return h;
}

struct Case {
  int heads;
  int lo_dim, hi_dim;
  std::vector<int32_t> positions;  // one row per sequence
  int block_size;
  int sink = 0;
  bool contiguous_bf16 = false;  // both parts bf16 in one latent_dim vector per slot (the engine's)
  int out_dim = 0;               // 0: latent_dim
};

// Runs one case for the parts' bit widths (0 = bf16) over the split counts, on the tensor-core
// kernel where it applies when `tensor_cores` (*used says whether it did); returns the worst
// absolute error.
double RunCase(const Case& c, int lo_bits, int hi_bits, const std::vector<int>& split_list, uint32_t seed,
               bool tensor_cores, bool* used) {
  const int d = c.lo_dim, dh = c.hi_dim, latent = d + dh, nh = c.heads;
  const int out_dim = c.out_dim > 0 ? c.out_dim : latent;
  const Part lo = MakePart(d, lo_bits, quant::kKvValueSeed), hi = MakePart(dh, hi_bits, quant::kKvKeySeed);
  const int rows = static_cast<int>(c.positions.size());
  const int bs = c.block_size;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<int32_t> table, offset;
  const int total_blocks = ShuffledBlockTables(c.positions, bs, rng, &table, &offset);
  const int64_t slots = static_cast<int64_t>(total_blocks) * bs;
  // Storage: two pools (slot stride = the part's bytes rounded up to 4, as the kernel needs), or
  // one contiguous bf16 latent.
  auto round4 = [](int64_t b) { return (b + 3) / 4 * 4; };
  const int64_t lo_stride = c.contiguous_bf16 ? 2 * latent : round4(lo.bytes());
  const int64_t hi_stride = c.contiguous_bf16 ? 2 * latent : round4(hi.bytes());
  std::vector<uint8_t> lo_pool(static_cast<size_t>(slots * lo_stride), 0), hi_pool(static_cast<size_t>(slots * hi_stride), 0);
  std::vector<std::vector<float>> dec(rows);  // decoded latents [pos][latent]
  const int sink_rows = std::max(c.sink, 1);
  std::vector<float> lo_sinks(static_cast<size_t>(rows) * sink_rows * d, std::nanf("")),
      hi_sinks(static_cast<size_t>(rows) * sink_rows * dh, std::nanf(""));
  std::vector<int32_t> sink_slot(rows);
  std::vector<float> x(latent);
  for (int r = 0; r < rows; ++r) {
    const int n = c.positions[r] + 1;
    sink_slot[r] = rows - 1 - r;
    dec[r].resize(static_cast<size_t>(n) * latent);
    for (int j = 0; j < n; ++j) {
      const int64_t slot = static_cast<int64_t>(table[offset[r] + j / bs]) * bs + j % bs;
      for (float& v : x) v = nd(rng);
      float* dj = &dec[r][static_cast<size_t>(j) * latent];
      if (j < c.sink) {
        const size_t at = static_cast<size_t>(sink_slot[r]) * c.sink + j;
        lo.Sink(x.data(), dj, &lo_sinks[at * d]);
        hi.Sink(x.data() + d, dj + d, &hi_sinks[at * dh]);
      } else if (c.contiguous_bf16) {
        lo.Encode(x.data(), lo_pool.data() + slot * lo_stride, dj);
        hi.Encode(x.data() + d, lo_pool.data() + slot * lo_stride + 2 * d, dj + d);
      } else {
        lo.Encode(x.data(), lo_pool.data() + slot * lo_stride, dj);
        hi.Encode(x.data() + d, hi_pool.data() + slot * hi_stride, dj + d);
      }
    }
  }
  std::vector<float> q(static_cast<size_t>(rows) * nh * latent);
  for (float& v : q) v = nd(rng);
  const float scale = 1.0f / std::sqrt(0.5f * static_cast<float>(latent));
  std::vector<double> ref(static_cast<size_t>(rows) * nh * out_dim);
  for (int r = 0; r < rows; ++r) {
    const int n = c.positions[r] + 1;
    for (int h = 0; h < nh; ++h) {
      std::vector<double> s(n);
      double big = -1e300;
      for (int j = 0; j < n; ++j) {
        double acc = 0;
        for (int i = 0; i < latent; ++i) {
          acc += static_cast<double>(q[(static_cast<size_t>(r) * nh + h) * latent + i]) * dec[r][static_cast<size_t>(j) * latent + i];
        }
        s[j] = acc * scale;
        big = std::max(big, s[j]);
      }
      double sum = 0;
      for (int j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - big));
      for (int i = 0; i < out_dim; ++i) {
        double a = 0;
        for (int j = 0; j < n; ++j) a += s[j] * dec[r][static_cast<size_t>(j) * latent + i];
        ref[(static_cast<size_t>(r) * nh + h) * out_dim + i] = a / sum;
      }
    }
  }
  DeviceVector<float> dq(q);
  DeviceVector<uint8_t> dlo(lo_pool), dhi(hi_pool);
  DeviceVector<int32_t> dtab(table), doff(offset), dpos(c.positions), dslot(sink_slot);
  DeviceVector<float> dlos(lo_sinks), dhis(hi_sinks);
  DeviceKvFormat lf(lo), hf(hi);
  double worst = 0.0;
  for (int splits : split_list) {
    SCOPED_TRACE("splits " + std::to_string(splits));
    DeviceVector<float> out(std::vector<float>(ref.size(), std::nanf("")));
    const size_t ws_bytes = MlaAttentionWorkspaceBytes(rows, nh, latent, splits);
    DeviceVector<float> ws(std::vector<float>(ws_bytes / 4 + 1, std::nanf("")));
    MlaAttentionParams p;
    p.q = dq.get();
    p.ldq = static_cast<int64_t>(nh) * latent;
    p.lo.cache = dlo.get();
    p.lo.stride = lo_stride;
    p.lo.format = lf.f;
    p.hi.cache = c.contiguous_bf16 ? dlo.get() + 2 * d : dhi.get();
    p.hi.stride = hi_stride;
    p.hi.format = hf.f;
    p.lo_dim = d;
    p.hi_dim = dh;
    p.block_table = dtab.get();
    p.table_offset = doff.get();
    p.positions = dpos.get();
    p.rows = rows;
    p.num_heads = nh;
    p.block_size = bs;
    p.scale = scale;
    p.out = out.get();
    p.ldo = static_cast<int64_t>(nh) * out_dim;
    p.out_dim = out_dim;
    if (c.sink > 0) {
      p.sink_tokens = c.sink;
      p.sink_slot = dslot.get();
      p.lo.sinks = dlos.get();
      p.hi.sinks = dhis.get();
    }
    p.splits = splits;
    p.workspace = ws.get();
    p.workspace_bytes = ws_bytes;
    p.tensor_cores = tensor_cores;
    *used = MlaUsesTensorCores(p);
    EXPECT_EQ(MlaAttentionUnsupportedReason(p), nullptr);
    EXPECT_EQ(MlaAttention(p, nullptr), cudaSuccess);
    const std::vector<float> got = out.Download();
    for (size_t i = 0; i < got.size(); ++i) {
      if (!std::isfinite(got[i])) {
        ADD_FAILURE() << "output " << i << " not finite (unwritten?)";
        return 1e30;
      }
      worst = std::max(worst, std::fabs(got[i] - ref[i]));
    }
  }
  return worst;
}
#endif

TEST(MlaAttentionTest, MatchesCpuReference) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  const Case cases[] = {
      {4, 128, 32, {0, 16, 130}, 16, 0, false, 128},  // the tiny model (c only out): 1 position, a block boundary
      {4, 128, 32, {300, 47}, 16, 4},                  // sinks (the plugin presets keep 4); the whole latent out
      {4, 128, 32, {2, 200}, 16, 4, false, 100},       // fewer positions than sinks; part of c out
      {16, 512, 64, {700, 3}, 16, 0, false, 512},      // DeepSeek-V3's latent, a full group of 16
      {16, 288, 288, {700, 3}, 16},                    // equal parts
      {20, 64, 64, {500, 129}, 8, 0},                  // a partial second group, small blocks
      {1, 512, 512, {260}, 64, 37},                    // the widest latent, one head, many sinks
      {7, 32, 16, {1000, 0, 65}, 5},                   // blocks of 5 (no power of two)
      {5, 16, 48, {90, 33}, 16, 2, false, 40},         // a wider second part, partly out
  };
  // (c, k_pe) bits; {3, 0} and {4, 0} are the engine's packed latents (k_pe bf16).
  const std::pair<int, int> formats[] = {{0, 0}, {3, 0}, {4, 0}, {3, 3}, {4, 4}, {3, 8}, {2, 2}, {0, 3}};
  uint32_t seed = 11;
  double worst_fp32 = 0.0, worst_tc = 0.0;
  int tc_runs = 0;
  for (const bool tensor_cores : {false, true}) {
    for (const auto& [lo_bits, hi_bits] : formats) {
      for (const Case& c : cases) {
        SCOPED_TRACE("bits " + std::to_string(lo_bits) + "/" + std::to_string(hi_bits) + " heads " +
                     std::to_string(c.heads) + " parts " + std::to_string(c.lo_dim) + "+" + std::to_string(c.hi_dim) +
                     " out " + std::to_string(c.out_dim) + " block " +
                     std::to_string(c.block_size) + " sinks " + std::to_string(c.sink) +
                     (tensor_cores ? " tensor cores allowed" : " fp32 kernel"));
        bool used = false;
        const double worst = RunCase(c, lo_bits, hi_bits, {1, 3, 16, 200}, seed++, tensor_cores, &used);
        EXPECT_EQ(used, tensor_cores && (lo_bits != 0 || hi_bits != 0));
        EXPECT_LE(worst, used ? kMlaTensorCoreTol : kMlaAttentionTol);
        (used ? worst_tc : worst_fp32) = std::max(used ? worst_tc : worst_fp32, worst);
        tc_runs += used ? 1 : 0;
      }
    }
  }
  // The engine's bf16 latent: both parts in one slot of latent_dim bf16 values.
  for (const Case& c : {Case{4, 128, 32, {300, 1}, 16, 0, true, 128}, Case{16, 512, 64, {900}, 16, 4, true, 512}}) {
    bool used = true;
    const double worst = RunCase(c, 0, 0, {1, 7}, seed++, true, &used);
    EXPECT_FALSE(used);
    EXPECT_LE(worst, kMlaAttentionTol);
    worst_fp32 = std::max(worst_fp32, worst);
  }
  EXPECT_GT(tc_runs, 0);
  std::printf("MLA attention: worst |gpu - cpu| %.3g on the fp32 kernel (bound %.1g), %.3g on tensor cores (%d cases, "
              "bound %.1g)\n",
              worst_fp32, kMlaAttentionTol, worst_tc, tc_runs, kMlaTensorCoreTol);
#endif
}

// The latent writers against the CPU: codes bitwise equal to quant::KvMseQuantizer::Encode
// (the gain within an ulp: the double norms are summed in another order), sinks equal to the CPU
// rotation of the bf16-rounded vector.
TEST(MlaAttentionTest, WritersMatchCpu) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const int d : {16, 80, 96, 288, 512}) {
    for (const int bits : {2, 3, 4, 8}) {
      SCOPED_TRACE("dim " + std::to_string(d) + " bits " + std::to_string(bits));
      const Part h = MakePart(d, bits, quant::kKvValueSeed);
      const int rows = 37;
      const int64_t ld = 2 * d + 8, stride = (h.bytes() + 3) / 4 * 4 + 4;
      std::vector<float> x(static_cast<size_t>(rows) * ld);
      for (float& v : x) v = nd(rng) * 3.0f;
      for (int i = 0; i < d; ++i) x[5 * ld + i] = 0.0f;  // a zero vector (gain 0)
      std::vector<int64_t> slots(rows);
      for (int r = 0; r < rows; ++r) slots[r] = (r * 7) % rows;  // a permutation
      const std::vector<float> cb = h.q->codebook().centroids, bd = h.q->codebook().boundaries;
      DeviceVector<float> dx(x), dcb(cb), dbd(bd), dsg(h.q->rotation().signs12());
      DeviceVector<int64_t> dslots(slots);
      DeviceVector<uint8_t> dcache(static_cast<size_t>(rows * stride));
      dcache.Poison(0xab);
      KvPolarEncoder enc;
      enc.bits = bits;
      enc.centroids = dcb.get();
      enc.boundaries = dbd.get();
      enc.signs = dsg.get();
      enc.divisor = h.q->rotation().divisor();
      ASSERT_EQ(WriteLatentPolar(dx.get(), ld, rows, d, dslots.get(), enc, dcache.get(), stride, nullptr),
                cudaSuccess);
      const std::vector<uint8_t> got = dcache.Download();
      std::vector<uint8_t> want(h.bytes());
      const int64_t code_bytes = h.q->code_bytes();
      for (int r = 0; r < rows; ++r) {
        h.q->Encode(&x[r * ld], want.data());
        const uint8_t* g = &got[slots[r] * stride];
        ASSERT_EQ(std::memcmp(g, want.data(), code_bytes), 0) << "row " << r;
        float gg, wg;
        std::memcpy(&gg, g + code_bytes, 4);
        std::memcpy(&wg, want.data() + code_bytes, 4);
        EXPECT_NEAR(gg, wg, std::fabs(wg) * 2e-7f) << "row " << r;
        for (int64_t k = h.bytes(); k < stride; ++k) ASSERT_EQ(g[k], 0xab) << "row " << r << ": wrote past the vector";
      }
      // Sinks: rows at positions 0..3 of slots 0/1, the rest past the sinks (skipped).
      const int sinks = 4;
      std::vector<int32_t> pos(rows), sslot(rows);
      for (int r = 0; r < rows; ++r) {
        pos[r] = r < 8 ? r % 4 : 4 + r;
        sslot[r] = r < 4 ? 1 : 0;
      }
      DeviceVector<int32_t> dpos(pos), dsslot(sslot);
      const size_t store_n = 2 * sinks * d;
      DeviceVector<float> dstore(std::vector<float>(store_n, std::nanf("")));
      ASSERT_EQ(WriteLatentSinks(dx.get(), ld, rows, d, dpos.get(), dsslot.get(), sinks, dsg.get(),
                                     h.q->rotation().divisor(), dstore.get(), nullptr),
                cudaSuccess);
      const std::vector<float> store = dstore.Download();
      std::vector<float> dec(d), att(d);
      for (int r = 0; r < 8; ++r) {
        h.Sink(&x[r * ld], dec.data(), att.data());
        for (int i = 0; i < d; ++i) {
          ASSERT_EQ(store[(sslot[r] * sinks + pos[r]) * d + i], att[i]) << "row " << r << " value " << i;
        }
      }
    }
  }
  // Refusals: a width the block rotation does not take, too small a stride.
  KvPolarEncoder enc;
  enc.divisor = 1.0f;
  EXPECT_EQ(WriteLatentPolar(nullptr, 100, 1, 72, nullptr, enc, nullptr, 64, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(WriteLatentPolar(nullptr, 100, 1, 80, nullptr, enc, nullptr, 20, nullptr), cudaErrorInvalidValue);
#endif
}

// Shapes and formats the kernel refuses, checked on the host (runs without a GPU too).
TEST(MlaAttentionTest, RefusesUnsupportedParameters) {
#if TQ_HAVE_CUDA
  alignas(16) static uint8_t cache[64];
  alignas(16) static float buf[1024];
  static int32_t ints[4];
  MlaAttentionParams p;
  p.q = buf;
  p.ldq = 4 * 160;
  p.lo.cache = cache;  // the engine's bf16 latent: c (128) then k_pe (32) in one slot
  p.lo.stride = 320;
  p.hi.cache = cache + 256;
  p.hi.stride = 320;
  p.lo_dim = 128;
  p.hi_dim = 32;
  p.block_table = ints;
  p.table_offset = ints;
  p.positions = ints;
  p.rows = 1;
  p.num_heads = 4;
  p.block_size = 16;
  p.scale = 0.1f;
  p.out = buf;
  p.ldo = 4 * 128;
  p.out_dim = 128;
  p.workspace = buf;
  p.workspace_bytes = MlaAttentionWorkspaceBytes(1, 4, 160, 1);
  EXPECT_EQ(MlaAttentionUnsupportedReason(p), nullptr);
  auto refused = [&](auto mutate) {
    MlaAttentionParams b = p;
    mutate(b);
    return MlaAttentionUnsupportedReason(b) != nullptr && MlaAttention(b, nullptr) == cudaErrorInvalidValue;
  };
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.lo_dim = 72; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.hi_dim = 8; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.hi_dim = 528; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.lo.stride = 252; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.lo.stride = 322; }));  // not a multiple of 4
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.hi.cache = cache + 258; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) {
    b.hi.format.kind = KvVectorKind::kPolar;
    b.hi.format.bits = 5;
    b.hi.format.codebook = buf;
  }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) {
    b.hi.format.kind = KvVectorKind::kPolar;
    b.hi.format.bits = 3;  // no codebook
  }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.sink_tokens = 4; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.out_dim = 161; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.splits = 0; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.workspace_bytes -= 4; }));
  EXPECT_TRUE(refused([](MlaAttentionParams& b) { b.ldq = 100; }));
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace tq::cuda
