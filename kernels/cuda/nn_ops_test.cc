// Parity of the CUDA decoder-step kernels (kernels/cuda/nn_ops.h) with their CPU references
// (kernels/nn/ops.h, kernels/cpu/half.h) on random inputs of awkward sizes. Outputs are poisoned
// with NaN before each run; inputs are checked finite first. Skips with the reason when the
// binary has no CUDA or the machine has no GPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/half.h"
#include "kernels/cuda/device_testing.h"
#include "kernels/nn/ops.h"

#if TQ_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/nn_ops.h"
#endif

namespace tq::cuda {
namespace {

// Tolerances, per precision of the computation compared.
constexpr float kFp32ElementwiseTol = 2e-6f;  // relative, one-op fp32 results (silu, rope)
constexpr float kFp32ReductionTol = 2e-5f;    // relative, fp32 reductions in another order
constexpr float kAttentionTol = 1e-4f;        // absolute, softmax-weighted fp32 sums of bf16 values

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void ExpectFinite(const std::vector<float>& v, const char* what) {
  for (size_t i = 0; i < v.size(); ++i) ASSERT_TRUE(std::isfinite(v[i])) << what << "[" << i << "]";
}

#if TQ_HAVE_CUDA
std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = cpu::FloatToBf16(v[i]);
  return out;
}
#endif

TEST(NnOpsTest, EmbedRmsNormRopeSiluMatchCpu) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  // Embedding (bf16 table), awkward hidden size.
  const int64_t vocab = 37, hidden = 1000, rows = 5;
  std::vector<float> table = Random(vocab * hidden, 1);
  std::vector<uint16_t> table16 = ToBf16(table);
  std::vector<int32_t> ids = {0, 36, 5, 5, 17};
  DeviceVector<uint16_t> dt(table16);
  DeviceVector<int32_t> did(ids);
  auto dx = DeviceVector<float>::Poisoned(rows * hidden);
  ASSERT_EQ(EmbedRows(dt.get(), DType::kBF16, did.get(), rows, hidden, dx.get(), nullptr), cudaSuccess);
  std::vector<float> x = dx.Download();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < hidden; ++c) {
      ASSERT_EQ(x[r * hidden + c], cpu::Bf16ToFloat(table16[ids[r] * hidden + c])) << r << "," << c;
    }
  }
  // RMSNorm over rows of 1000 and per head of 64 (with and without weight).
  std::vector<float> w = Random(hidden, 2);
  ExpectFinite(w, "w");
  auto dw = DeviceVector<float>(w);
  auto dy = DeviceVector<float>::Poisoned(rows * hidden);
  ASSERT_EQ(RmsNormRows(dx.get(), hidden, dw.get(), rows, hidden, 1e-6f, dy.get(), hidden, nullptr), cudaSuccess);
  std::vector<float> y = dy.Download();
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> ref(hidden);
    nn::RmsNorm(x.data() + r * hidden, w.data(), hidden, 1e-6f, ref.data());
    for (int64_t c = 0; c < hidden; ++c) {
      ASSERT_NEAR(y[r * hidden + c], ref[c], kFp32ReductionTol * (1 + std::fabs(ref[c]))) << r << "," << c;
    }
  }
  // Both RMSNorm paths: float4 rows (n 4096, a model's hidden size; no weight) and rows that are
  // not 16-byte aligned (row stride 1001 floats, n 1000) or not a multiple of 4 wide (n 999).
  for (const auto& [n, ld, weighted] : {std::tuple<int64_t, int64_t, bool>{4096, 4096, false}, {1000, 1001, true},
                                        {999, 999, true}}) {
    SCOPED_TRACE("rmsnorm n " + std::to_string(n) + " ld " + std::to_string(ld));
    const int64_t r2 = 3;
    std::vector<float> xs = Random(r2 * ld, 11), ws = Random(n, 12);
    DeviceVector<float> dxs(xs), dws(ws);
    auto dys = DeviceVector<float>::Poisoned(r2 * ld);
    ASSERT_EQ(RmsNormRows(dxs.get(), ld, weighted ? dws.get() : nullptr, r2, n, 1e-5f, dys.get(), ld, nullptr),
              cudaSuccess);
    const std::vector<float> ys = dys.Download();
    for (int64_t r = 0; r < r2; ++r) {
      std::vector<float> ref(n);
      nn::RmsNorm(xs.data() + r * ld, weighted ? ws.data() : nullptr, n, 1e-5f, ref.data());
      for (int64_t c = 0; c < n; ++c) {
        ASSERT_NEAR(ys[r * ld + c], ref[c], kFp32ReductionTol * (1 + std::fabs(ref[c]))) << r << "," << c;
      }
    }
    // The fused residual add + norm: bitwise AddInPlace then RmsNormRows (x and y both).
    const std::vector<float> as = Random(r2 * ld, 13);
    DeviceVector<float> dx1(xs), dx2(xs), da(as);
    auto dy1 = DeviceVector<float>::Poisoned(r2 * ld), dy2 = DeviceVector<float>::Poisoned(r2 * ld);
    const float* w = weighted ? dws.get() : nullptr;
    ASSERT_EQ(AddRmsNormRows(dx1.get(), ld, da.get(), ld, w, r2, n, 1e-5f, dy1.get(), ld, nullptr), cudaSuccess);
    if (ld == n) {
      ASSERT_EQ(AddInPlace(dx2.get(), da.get(), r2 * ld, nullptr), cudaSuccess);
    } else {  // only the n used columns of each row, as the fused kernel touches
      for (int64_t r = 0; r < r2; ++r) ASSERT_EQ(AddInPlace(dx2.get() + r * ld, da.get() + r * ld, n, nullptr), cudaSuccess);
    }
    ASSERT_EQ(RmsNormRows(dx2.get(), ld, w, r2, n, 1e-5f, dy2.get(), ld, nullptr), cudaSuccess);
    const std::vector<float> x1 = dx1.Download(), x2 = dx2.Download(), y1 = dy1.Download(), y2 = dy2.Download();
    for (int64_t r = 0; r < r2; ++r) {
      for (int64_t c = 0; c < n; ++c) {
        ASSERT_EQ(x1[r * ld + c], x2[r * ld + c]) << "x " << r << "," << c;
        ASSERT_EQ(y1[r * ld + c], y2[r * ld + c]) << "y " << r << "," << c;
      }
    }
  }
  // Per-head RMSNorm in place on 3 heads of 48 inside rows of stride 200 (fused q|k|v layout).
  {
    const int64_t ld = 200;
    std::vector<float> hx = Random(rows * ld, 8), hw = Random(48, 9);
    DeviceVector<float> dhx(hx), dhw(hw);
    ASSERT_EQ(RmsNormHeads(dhx.get() + 16, ld, rows, 3, 48, dhw.get(), 1e-6f, nullptr), cudaSuccess);
    std::vector<float> got = dhx.Download();
    for (int64_t r = 0; r < rows; ++r) {
      for (int h = 0; h < 3; ++h) nn::RmsNorm(&hx[r * ld + 16 + h * 48], hw.data(), 48, 1e-6f, &hx[r * ld + 16 + h * 48]);
    }
    for (size_t i = 0; i < hx.size(); ++i) ASSERT_NEAR(got[i], hx[i], kFp32ReductionTol * (1 + std::fabs(hx[i]))) << i;
  }
  // Rope on 3 heads of 64 at positions 0, 7, 1999, 3, 3.
  const int heads = 3, hd = 64, maxpos = 2000;
  std::vector<float> cos = Random(maxpos * hd / 2, 3), sin = Random(maxpos * hd / 2, 4);
  std::vector<int32_t> pos = {0, 7, 1999, 3, 3};
  std::vector<float> q = Random(rows * heads * hd, 5);
  DeviceVector<float> dq(q), dcos(cos), dsin(sin);
  DeviceVector<int32_t> dpos(pos);
  ASSERT_EQ(ApplyRope(dq.get(), heads * hd, rows, heads, hd, dpos.get(), dcos.get(), dsin.get(), nullptr),
            cudaSuccess);
  std::vector<float> qr = dq.Download();
  for (int64_t r = 0; r < rows; ++r) {
    nn::ApplyRope(q.data() + r * heads * hd, hd, heads, cos.data() + pos[r] * hd / 2, sin.data() + pos[r] * hd / 2);
  }
  for (size_t i = 0; i < q.size(); ++i) ASSERT_NEAR(qr[i], q[i], kFp32ElementwiseTol * (1 + std::fabs(q[i]))) << i;
  // SiLU * up.
  std::vector<float> g = Random(rows * 333, 6, 3.0f), u = Random(rows * 333, 7);
  DeviceVector<float> dg(g), du(u);
  auto ds = DeviceVector<float>::Poisoned(rows * 333);
  ASSERT_EQ(SiluMul(dg.get(), 333, du.get(), 333, rows, 333, ds.get(), 333, nullptr), cudaSuccess);
  std::vector<float> s = ds.Download(), sref(rows * 333);
  nn::SiluMul(g.data(), u.data(), rows * 333, sref.data());
  for (size_t i = 0; i < s.size(); ++i) ASSERT_NEAR(s[i], sref[i], 1e-5f * (1 + std::fabs(sref[i]))) << i;
  // The MoE gather / scatter-add pair: 3 of 7 rows of 201 floats picked, scaled, added back.
  const int64_t n = 201, total = 7;
  std::vector<float> h = Random(total * n, 8), acc = Random(total * n, 9);
  std::vector<int32_t> pick = {5, 0, 3};
  std::vector<float> wts = {0.25f, -1.5f, 0.7f};
  DeviceVector<float> dh(h), dacc(acc), dwts(wts);
  DeviceVector<int32_t> dpick(pick);
  auto gathered = DeviceVector<float>::Poisoned(3 * n);
  ASSERT_EQ(GatherRows(dh.get(), dpick.get(), 3, n, gathered.get(), nullptr), cudaSuccess);
  ASSERT_EQ(AddScaledRows(gathered.get(), dpick.get(), dwts.get(), 3, n, dacc.get(), n, nullptr), cudaSuccess);
  std::vector<float> got = dacc.Download(), want = acc;
  for (int i = 0; i < 3; ++i) nn::Axpy(wts[i], h.data() + pick[i] * n, want.data() + pick[i] * n, n);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], kFp32ElementwiseTol * (1 + std::fabs(want[i]))) << i;
  EXPECT_EQ(AddScaledRows(nullptr, nullptr, nullptr, 1, 8, nullptr, 4, nullptr), cudaErrorInvalidValue);  // ldy < n
#endif
}

TEST(NnOpsTest, PagedAttentionMatchesCpu) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  for (int hd : {48, 64, 128, 576}) {  // 576: an MLA latent (DeepSeek-V3) read as one KV head
    for (int block : {16, 5}) {
      for (int64_t window : {int64_t{0}, int64_t{7}}) {
        const int heads = 8, kvh = 2, width = kvh * hd;
        const int64_t num_blocks = 64;
        // Three sequences of lengths 1, 23, 140, each with its own shuffled blocks.
        const std::vector<int64_t> lens = {1, 23, 140};
        std::vector<int32_t> perm(num_blocks);
        for (int i = 0; i < num_blocks; ++i) perm[i] = i;
        std::shuffle(perm.begin(), perm.end(), std::mt19937(hd + block));
        std::vector<int32_t> tables;
        std::vector<int32_t> seq_offset;
        size_t used = 0;
        for (int64_t len : lens) {
          seq_offset.push_back(static_cast<int32_t>(tables.size()));
          for (int64_t b = 0; b < (len + block - 1) / block; ++b) tables.push_back(perm[used++]);
        }
        ASSERT_LE(used, static_cast<size_t>(num_blocks));
        // Cache contents: random bf16 K/V for every slot.
        std::vector<uint16_t> kc = ToBf16(Random(num_blocks * block * width, 10 + hd));
        std::vector<uint16_t> vc = ToBf16(Random(num_blocks * block * width, 20 + hd));
        // Query rows: the last position of each sequence, plus a middle one of the longest.
        std::vector<int32_t> row_seq = {0, 1, 2, 2}, row_pos = {0, 22, 139, 64}, row_off;
        for (int s : row_seq) row_off.push_back(seq_offset[s]);
        const int64_t rows = static_cast<int64_t>(row_seq.size());
        std::vector<float> q = Random(rows * heads * hd, 30 + hd);
        DeviceVector<float> dq(q);
        DeviceVector<uint16_t> dk(kc), dv(vc);
        DeviceVector<int32_t> dtab(tables), doff(row_off), dpos(row_pos);
        auto dout = DeviceVector<float>::Poisoned(rows * heads * hd);
        PagedAttentionParams p;
        p.q = dq.get();
        p.ldq = heads * hd;
        p.k_cache = dk.get();
        p.v_cache = dv.get();
        p.block_table = dtab.get();
        p.table_offset = doff.get();
        p.positions = dpos.get();
        p.rows = rows;
        p.num_heads = heads;
        p.num_kv_heads = kvh;
        p.head_dim = hd;
        p.block_size = block;
        p.window = window;
        p.scale = 1.0f / std::sqrt(static_cast<float>(hd));
        p.out = dout.get();
        p.ldo = heads * hd;
        ASSERT_EQ(PagedAttention(p, nullptr), cudaSuccess);
        std::vector<float> out = dout.Download();
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t pos = row_pos[r];
          const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
          const int64_t n = pos + 1 - lo;
          for (int h = 0; h < heads; ++h) {
            const int g = h / (heads / kvh);
            std::vector<float> kr(n * hd), vr(n * hd), scores(n), ref(hd);
            for (int64_t j = lo; j <= pos; ++j) {
              const int64_t slot = static_cast<int64_t>(tables[seq_offset[row_seq[r]] + j / block]) * block + j % block;
              for (int c = 0; c < hd; ++c) {
                kr[(j - lo) * hd + c] = cpu::Bf16ToFloat(kc[slot * width + g * hd + c]);
                vr[(j - lo) * hd + c] = cpu::Bf16ToFloat(vc[slot * width + g * hd + c]);
              }
            }
            nn::AttendOne(q.data() + (r * heads + h) * hd, kr.data(), hd, vr.data(), hd, n, hd, p.scale,
                          scores.data(), ref.data());
            for (int c = 0; c < hd; ++c) {
              ASSERT_NEAR(out[(r * heads + h) * hd + c], ref[c], kAttentionTol)
                  << "hd " << hd << " block " << block << " window " << window << " row " << r << " head " << h;
            }
          }
        }
      }
    }
  }
  // The K/V writer stores round-to-nearest-even bf16 at the given slots.
  const int64_t rows = 3, width = 2 * 64;
  std::vector<float> k = Random(rows * width, 40), v = Random(rows * width, 41);
  std::vector<int64_t> slots = {9, 0, 4};
  DeviceVector<float> dk(k), dv(v);
  DeviceVector<int64_t> dslots(slots);
  auto kc = DeviceVector<uint16_t>::Poisoned(10 * width), vc = DeviceVector<uint16_t>::Poisoned(10 * width);
  ASSERT_EQ(WriteKvBf16(dk.get(), dv.get(), width, rows, 2, 64, dslots.get(), kc.get(), vc.get(), nullptr),
            cudaSuccess);
  std::vector<uint16_t> kh = kc.Download(), vh = vc.Download();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < width; ++j) {
      ASSERT_EQ(kh[slots[r] * width + j], cpu::FloatToBf16(k[r * width + j]));
      ASSERT_EQ(vh[slots[r] * width + j], cpu::FloatToBf16(v[r * width + j]));
    }
  }
#endif
}

TEST(NnOpsTest, DenseLinearMatchesCpu) {
  SKIP_WITHOUT_GPU();
#if TQ_HAVE_CUDA
  for (DType t : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (int64_t n : {1, 7, 130, 4097}) {
      for (const auto& [m, k] : {std::pair<int64_t, int64_t>{1, 1032}, {1, 4360}, {3, 1032}, {9, 1032}, {17, 1032}}) {
        std::vector<float> w = Random(n * k, 50 + n, 0.05f), x = Random(m * k, 60 + m), bias = Random(n, 70);
        std::vector<uint16_t> w16(n * k);
        for (int64_t i = 0; i < n * k; ++i) {
          w16[i] = t == DType::kBF16 ? cpu::FloatToBf16(w[i]) : cpu::FloatToHalf(w[i]);
          if (t == DType::kBF16) w[i] = cpu::Bf16ToFloat(w16[i]);
          if (t == DType::kF16) w[i] = cpu::HalfToFloat(w16[i]);
        }
        DeviceVector<uint16_t> dw16(w16);
        DeviceVector<float> dw32(w), dx(x), db(bias);
        auto dy = DeviceVector<float>::Poisoned(m * n);
        const void* wp = t == DType::kF32 ? static_cast<const void*>(dw32.get()) : dw16.get();
        ASSERT_EQ(DenseLinear(wp, t, n, k, dx.get(), k, m, db.get(), dy.get(), n, nullptr), cudaSuccess);
        std::vector<float> y = dy.Download();
        for (int64_t r = 0; r < m; ++r) {
          for (int64_t j = 0; j < n; ++j) {
            double ref = bias[j], mag = std::fabs(bias[j]);
            for (int64_t c = 0; c < k; ++c) {
              ref += static_cast<double>(w[j * k + c]) * x[r * k + c];
              mag += std::fabs(static_cast<double>(w[j * k + c]) * x[r * k + c]);
            }
            ASSERT_NEAR(y[r * n + j], ref, kFp32ReductionTol * mag + 1e-6) << "type " << static_cast<int>(t)
                                                                          << " n " << n << " m " << m;
          }
        }
      }
    }
  }
  // Unsupported shapes are refused, not computed wrongly.
  EXPECT_EQ(DenseLinear(nullptr, DType::kBF16, 4, 12, nullptr, 12, 1, nullptr, nullptr, 4, nullptr),
            cudaErrorInvalidValue);
  EXPECT_TRUE(PagedAttentionSupports(258));
  EXPECT_TRUE(PagedAttentionSupports(576));
  EXPECT_FALSE(PagedAttentionSupports(578));
  EXPECT_FALSE(PagedAttentionSupports(47));
#endif
}

}  // namespace
}  // namespace tq::cuda
