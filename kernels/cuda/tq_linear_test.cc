// Parity tests of the CUDA TQ kernels (kernels/cuda/tq_linear.h) against the CPU reference:
//   - LaunchTqRotateInput float32 output: bitwise equal to cpu::TqRotateInput (bf16 and f32
//     inputs, full and block-diagonal rotation); fp16 output within its rounding bound;
//   - LaunchTqLinearMma (fused and separate rotation, several tilings and K splits, m from 1 to
//     40, bits 2/3/4) against cpu::TqLinear(cpu::TqRotateInput(x)), error normalized by
//     ‖ŵ_j‖·‖x_i‖ (the Cauchy–Schwarz bound on |y_ij|, as kernels/cpu/linear_test.cc); the bf16
//     output is the round-to-nearest-even of the float32 one; guard columns stay untouched;
//     a second launch gives the same bits (deterministic split-K, counters reset);
//   - LaunchTqDequantize: float32 bitwise equal to quant::TqQuantizer::DequantizeRows, bf16 its
//     rounding;
//   - LaunchTqRotateInputInt8 bitwise equal to QuantizeRotatedInt8(cpu::TqRotateInput(x)) and
//     LaunchTqGemvInt8 against TqGemvInt8Reference (and, looser, cpu::TqLinear);
//   - TqLinearRunner on every path, real quantized Gaussian weights end to end against a float64
//     matmul with the dequantized weights, NaN propagation, and the support checks.
// Fresh random inputs per case (seed printed), outputs poisoned with NaN before every launch, and
// NaN/Inf counted before any error is computed. Without a GPU every test skips with the reason.
#include "kernels/cuda/tq_linear.h"

#include "gtest/gtest.h"
#include "kernels/cuda/device_testing.h"

#if TQ_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/half.h"
#include "kernels/cpu/linear.h"
#include "kernels/cuda/nn_ops.h"
#include "kernels/cuda/tq_gemv_int8_reference.h"
#include "kernels/cuda/tq_linear_runner.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/packing.h"
#include "kernels/quant/rotation.h"
#include "kernels/quant/tq_quantize.h"

namespace tq::cuda {
namespace {

// Max |y − y_cpu| / (‖ŵ_j‖·‖x_i‖) of the fp16-operand tensor-core kernel (fp16 x_rot after a
// power-of-two scale per group, fp16 codebook, fp32 accumulation): the worst-case bound is
// 2·2^-11 ≈ 9.8e-4 (tq_linear.h); random data sit near 1e-5.
constexpr double kMaxMmaErr = 1.2e-3;
// The same for dequantize → BF16 weight → cuBLAS BF16 GEMM (bf16 rounding of Ŵ, 2^-9 relative,
// and of x when it is float32... it is bf16 here): worst case 2^-9 ≈ 2e-3, plus bf16 output.
constexpr double kMaxCublasBf16Err = 5e-3;
// Dequantize → float32 → cuBLAS SGEMM: float32 accumulation only.
constexpr double kMaxCublasF32Err = 1e-5;
// End to end on quantized Gaussian weights vs float64 x·Ŵᵀ: the mma bound plus the float32
// rotations of x (CPU) and of the weights (DequantizeRows).
constexpr double kMaxEndToEndErr = 1.2e-3;
// The GEMM's fp16 operands (tq_linear.h "Precision of (c)"): worst case 1.5e-3.
constexpr double kMaxGemmErr = 1.5e-3;
// The int8 GEMV against its exact CPU reference (tq_gemv_int8_reference.h): the same integer
// group dots and float32 group terms; only the float32 sums' order differs.
constexpr double kMaxInt8VsReferenceErr = 2e-6;
// The int8 GEMV against float32 TQ (cpu::TqLinear): the int8 roundings of x_rot and the
// codebook (tq_linear.h "Precision of (f)"); random data sit near 1e-3.
constexpr double kMaxInt8VsFloatErr = 5e-3;

#define CUDA_ASSERT_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr << ": " << cudaGetErrorString(cudaGetLastError())

struct HostWeights {
  int bits = 3;
  int64_t n = 0, k = 0;
  int block = 0;
  std::vector<uint8_t> packed;
  std::vector<float> gains;
  std::vector<float> codebook;
  std::vector<double> row_norm;  // ‖ŵ_j‖ = sqrt(Σ_g gain² ‖c[idx]‖²) (the rotation is orthonormal)

  cpu::TqLinearParams CpuParams() const {
    cpu::TqLinearParams p;
    p.packed = packed.data();
    p.gains = gains.data();
    p.codebook = codebook.data();
    p.n = n;
    p.k = k;
    p.bits = bits;
    p.group_size = 128;
    p.rotation_block = block;
    return p;
  }
};

void ComputeRowNorms(HostWeights& w) {
  const int64_t groups = TqCudaGroups(w.k);
  const int64_t bpg = 128 * w.bits / 8;
  std::vector<uint8_t> idx(128);
  w.row_norm.assign(w.n, 0.0);
  for (int64_t j = 0; j < w.n; ++j) {
    double s = 0.0;
    for (int64_t g = 0; g < groups; ++g) {
      quant::UnpackIndices(w.packed.data() + (j * groups + g) * bpg, 128, w.bits, idx.data());
      double cc = 0.0;
      for (int t = 0; t < 128; ++t) cc += double(w.codebook[idx[t]]) * w.codebook[idx[t]];
      const double gain = w.gains[j * groups + g];
      s += gain * gain * cc;
    }
    w.row_norm[j] = std::sqrt(s);
  }
}

// Random codes (every byte pattern is a valid code sequence) and positive gains.
HostWeights RandomWeights(int bits, int64_t n, int64_t k, int block, uint32_t seed) {
  HostWeights w;
  w.bits = bits;
  w.n = n;
  w.k = k;
  w.block = block;
  const int64_t groups = TqCudaGroups(k);
  std::mt19937 gen(seed);
  w.packed.resize(n * groups * 128 * bits / 8);
  for (auto& b : w.packed) b = static_cast<uint8_t>(gen() & 0xff);
  std::uniform_real_distribution<float> gain(0.05f, 3.0f);
  w.gains.resize(n * groups);
  for (auto& g : w.gains) g = gain(gen);
  w.codebook = quant::GetCodebook(bits, 128).centroids;
  ComputeRowNorms(w);
  return w;
}

// `experts` TQ3 weight sets of n x k back to back (codes, then gains), as an MoE layer stores
// them; seeds *seed, *seed + 1, ...
HostWeights RandomExperts(int experts, int64_t n, int64_t k, uint32_t* seed) {
  HostWeights all;
  for (int e = 0; e < experts; ++e) {
    const HostWeights one = RandomWeights(3, n, k, 0, (*seed)++);
    all.packed.insert(all.packed.end(), one.packed.begin(), one.packed.end());
    all.gains.insert(all.gains.end(), one.gains.begin(), one.gains.end());
    all.codebook = one.codebook;
  }
  all.bits = 3, all.n = n, all.k = k;
  return all;
}

// Activations: Gaussian with per-row scales spanning many binades (1e-3 .. 1e3), so the fp16
// path's per-group scaling is exercised; bf16 inputs are rounded to bf16 first.
std::vector<float> RandomActivations(int64_t m, int64_t ldx, bool bf16, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(m * ldx);
  for (int64_t i = 0; i < m; ++i) {
    const float scale = std::pow(10.0f, -3.0f + 6.0f * static_cast<float>(i % 7) / 6.0f);
    for (int64_t t = 0; t < ldx; ++t) {
      float v = nd(gen) * scale;
      if (bf16) v = cpu::Bf16ToFloat(cpu::FloatToBf16(v));
      x[i * ldx + t] = v;
    }
  }
  return x;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = cpu::FloatToBf16(x[i]);
  return out;
}

int64_t CountNonFinite(const std::vector<float>& v) {
  int64_t bad = 0;
  for (float f : v) bad += std::isfinite(f) ? 0 : 1;
  return bad;
}

struct ErrorStats {
  double max_norm_err = 0.0;  // max |y − ref| / (‖ŵ_j‖‖x_i‖)
  double rel_l2 = 0.0;        // ‖y − ref‖ / ‖ref‖
  int64_t non_finite = 0;
};

// y: [m, ldy] (only [.., n) compared); ref: [m, n].
ErrorStats Compare(const std::vector<float>& y, int64_t ldy, const std::vector<double>& ref,
                   int64_t m, int64_t n, const std::vector<double>& w_norm,
                   const std::vector<double>& x_norm) {
  ErrorStats s;
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float v = y[i * ldy + j];
      if (!std::isfinite(v)) {
        ++s.non_finite;
        continue;
      }
      const double d = double(v) - ref[i * n + j];
      const double bound = w_norm[j] * x_norm[i];
      if (bound > 0) s.max_norm_err = std::max(s.max_norm_err, std::fabs(d) / bound);
      num += d * d;
      den += ref[i * n + j] * ref[i * n + j];
    }
  }
  s.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return s;
}

// The CPU reference: x_rot = cpu::TqRotateInput(x), y = cpu::TqLinear(x_rot).
struct CpuReference {
  std::vector<float> x_rot;   // [m, Kp]
  std::vector<double> y;      // [m, n]
  std::vector<double> x_norm;  // ‖x_rot_i‖ = ‖x_i‖
};

CpuReference RunCpu(const HostWeights& w, const std::vector<float>& x, int64_t m, int64_t ldx) {
  CpuReference r;
  const int64_t kp = TqCudaPaddedK(w.k);
  r.x_rot.assign(m * kp, 0.0f);
  cpu::TqRotateInput(x.data(), m, w.k, ldx, 128, w.block, r.x_rot.data());
  std::vector<float> y(m * w.n);
  cpu::TqLinear(w.CpuParams(), r.x_rot.data(), m, y.data(), w.n, 0, w.n);
  r.y.assign(y.begin(), y.end());
  for (int64_t i = 0; i < m; ++i) {
    double s = 0.0;
    for (int64_t t = 0; t < kp; ++t) s += double(r.x_rot[i * kp + t]) * r.x_rot[i * kp + t];
    r.x_norm.push_back(std::sqrt(s));
  }
  return r;
}

struct DeviceWeights {
  DeviceVector<uint8_t> packed;
  DeviceVector<float> gains;
  DeviceVector<float> codebook;
  explicit DeviceWeights(const HostWeights& w)
      : packed(w.packed), gains(w.gains), codebook(w.codebook) {}
  TqCudaWeights View(const HostWeights& w) const {
    TqCudaWeights v;
    v.packed = packed.get();
    v.gains = gains.get();
    v.codebook = codebook.get();
    v.n = w.n;
    v.k = w.k;
    v.bits = w.bits;
    v.rotation_block = w.block;
    return v;
  }
};

struct Shape {
  int64_t m, n, k;
  int block;
};

// Awkward sizes: n = 1, 7, 4097 (not a multiple of any tile), k a multiple of 128 but not of
// the 4-group stage or the 8 warps, or not a multiple of 128 (padded), m across the 8/16 row
// tiles; k below one group (MoE experts' down projections: k = moe_intermediate_size).
const Shape kShapes[] = {
    {1, 1, 128, 0},     {1, 7, 1000, 0},   {1, 4097, 4096, 0},  {3, 130, 384, 0},
    {8, 33, 4224, 0},   {9, 7, 640, 0},    {16, 4097, 1024, 0}, {17, 65, 2048, 0},
    {40, 130, 512, 0},  {1, 256, 1024, 64}, {5, 100, 1000, 16}, {2, 1030, 14336, 0},
    {1, 128, 64, 0},    {6, 128, 64, 0},   {2, 300, 96, 0},
};

std::string ShapeName(int bits, const Shape& s) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "TQ%d m=%lld n=%lld k=%lld B=%d", bits,
                static_cast<long long>(s.m), static_cast<long long>(s.n),
                static_cast<long long>(s.k), s.block);
  return buf;
}

// ---------------------------------------------------------------------------------------------

TEST(TqCudaRotateTest, BitwiseEqualToCpu) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 1000;
  for (const Shape& s : kShapes) {
    for (bool bf16 : {false, true}) {
      SCOPED_TRACE(ShapeName(3, s) + (bf16 ? " bf16" : " f32") + " seed " + std::to_string(seed));
      const int64_t ldx = s.k + 3;
      const std::vector<float> x = RandomActivations(s.m, ldx, bf16, seed++);
      const int64_t kp = TqCudaPaddedK(s.k), groups = TqCudaGroups(s.k);
      std::vector<float> ref(s.m * kp);
      cpu::TqRotateInput(x.data(), s.m, s.k, ldx, 128, s.block, ref.data());
      DeviceVector<float> dx32(x);
      DeviceVector<uint16_t> dx16(ToBf16(x));
      DeviceVector<float> rot(s.m * kp);
      DeviceVector<uint16_t> rot_h(s.m * kp);
      DeviceVector<float> scale(s.m * groups);
      rot.Poison();
      rot_h.Poison();
      scale.Poison();
      const void* xp = bf16 ? static_cast<const void*>(dx16.get()) : dx32.get();
      CUDA_ASSERT_OK(LaunchTqRotateInput(xp, bf16 ? TqActType::kBF16 : TqActType::kF32, s.m, s.k,
                                         ldx, s.block, rot.get(), rot_h.get(), scale.get(),
                                         nullptr));
      CUDA_ASSERT_OK(cudaDeviceSynchronize());
      const std::vector<float> got = rot.Download();
      ASSERT_EQ(CountNonFinite(got), 0);
      int64_t mismatches = 0;
      for (int64_t i = 0; i < s.m * kp; ++i) {
        if (cpu::FloatBits(got[i]) != cpu::FloatBits(ref[i])) ++mismatches;
      }
      EXPECT_EQ(mismatches, 0) << "of " << s.m * kp << " values differ from cpu::TqRotateInput";
      // fp16 + scale within half an fp16 ulp at the group's scale.
      const std::vector<uint16_t> h = rot_h.Download();
      const std::vector<float> sc = scale.Download();
      double worst = 0.0;
      for (int64_t i = 0; i < s.m; ++i) {
        for (int64_t g = 0; g < groups; ++g) {
          float amax = 0.0f;
          for (int t = 0; t < 128; ++t) amax = std::max(amax, std::fabs(ref[i * kp + g * 128 + t]));
          for (int t = 0; t < 128; ++t) {
            const int64_t at = i * kp + g * 128 + t;
            const double d = std::fabs(double(cpu::HalfToFloat(h[at])) * sc[i * groups + g] - ref[at]);
            if (amax > 0) worst = std::max(worst, d / amax);
            else ASSERT_EQ(d, 0.0);
          }
        }
      }
      EXPECT_LE(worst, std::ldexp(1.0, -11)) << "fp16 x_rot error relative to the group max";
    }
  }
}

struct MmaVariant {
  const char* name;
  TqMmaConfig cfg;  // splits 0 = PlanTqMma's
  bool plan;
};

// Output buffers [m, ldy] of a launch: a sentinel in the guard columns [n, ldy), NaN (f32) and a
// NaN pattern (bf16) over [0, n) so that unwritten outputs show.
void PoisonOutputs(DeviceVector<float>& y32, DeviceVector<uint16_t>& y16, int64_t m, int64_t n,
                   int64_t ldy) {
  std::vector<float> guard32(m * ldy, -7.25f);
  std::vector<uint16_t> guard16(m * ldy, 0x4321);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      guard32[i * ldy + j] = std::numeric_limits<float>::quiet_NaN();
      guard16[i * ldy + j] = 0x7fc0;
    }
  }
  y32.Upload(guard32);
  y16.Upload(guard16);
}

// After PoisonOutputs and a launch: guard columns untouched, every output written and finite,
// bf16 output = RNE(float32 output).
void CheckOutputs(const std::vector<float>& got, const std::vector<uint16_t>& got16, int64_t m,
                  int64_t n, int64_t ldy) {
  int64_t guard_hits = 0, unwritten = 0, bf16_mismatch = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = n; j < ldy; ++j) {
      guard_hits += got[i * ldy + j] != -7.25f || got16[i * ldy + j] != 0x4321;
    }
    for (int64_t j = 0; j < n; ++j) {
      unwritten += !std::isfinite(got[i * ldy + j]);
      bf16_mismatch += got16[i * ldy + j] != cpu::FloatToBf16(got[i * ldy + j]);
    }
  }
  ASSERT_EQ(guard_hits, 0) << "writes outside [0, n)";
  ASSERT_EQ(unwritten, 0) << "outputs left NaN (unwritten) or non-finite";
  EXPECT_EQ(bf16_mismatch, 0) << "bf16 output is not RNE(float32 output)";
}

// Runs `launch` twice on poisoned outputs: each output passes CheckOutputs and the second launch
// gives the first's bits; *first = the first fp32 output.
void LaunchTwice(const std::function<cudaError_t()>& launch, DeviceVector<float>& y32, DeviceVector<uint16_t>& y16,
                 int64_t m, int64_t n, int64_t ldy, std::vector<float>* first) {
  for (int rep = 0; rep < 2; ++rep) {
    PoisonOutputs(y32, y16, m, n, ldy);
    CUDA_ASSERT_OK(launch());
    CUDA_ASSERT_OK(cudaDeviceSynchronize());
    const std::vector<float> got = y32.Download();
    ASSERT_NO_FATAL_FAILURE(CheckOutputs(got, y16.Download(), m, n, ldy));
    if (rep == 0) {
      *first = got;
    } else {
      EXPECT_EQ(std::memcmp(first->data(), got.data(), got.size() * sizeof(float)), 0)
          << "second launch differs (non-deterministic)";
    }
  }
}

TEST(TqCudaMmaTest, MatchesCpuTqLinear) {
  SKIP_WITHOUT_GPU();
  auto info = GetDeviceInfo(0);
  ASSERT_TRUE(info.ok()) << info.status();
  std::printf("device 0: %s, sm_%d%d, %d SMs\n", info->name.c_str(), info->sm_major,
              info->sm_minor, info->multiprocessors);
  uint32_t seed = 2000;
  double worst_overall = 0.0;
  for (int bits : {2, 3, 4}) {
    for (const Shape& s : kShapes) {
      const uint32_t wseed = seed++, xseed = seed++;
      SCOPED_TRACE(ShapeName(bits, s) + " seeds " + std::to_string(wseed) + "," +
                   std::to_string(xseed));
      const HostWeights hw = RandomWeights(bits, s.n, s.k, s.block, wseed);
      const int64_t ldx = s.k + 5;
      const std::vector<float> x = RandomActivations(s.m, ldx, /*bf16=*/true, xseed);
      ASSERT_EQ(CountNonFinite(x), 0);
      const CpuReference ref = RunCpu(hw, x, s.m, ldx);
      DeviceWeights dw(hw);
      const TqCudaWeights w = dw.View(hw);
      DeviceVector<uint16_t> dx(ToBf16(x));
      DeviceVector<float> dx32(x);
      const int64_t kp = TqCudaPaddedK(s.k), groups = TqCudaGroups(s.k);
      DeviceVector<uint16_t> x_h(s.m * kp);
      DeviceVector<float> x_scale(s.m * groups);
      CUDA_ASSERT_OK(LaunchTqRotateInput(dx.get(), TqActType::kBF16, s.m, s.k, ldx, s.block,
                                         nullptr, x_h.get(), x_scale.get(), nullptr));
      const int64_t ldy = s.n + 3;  // 3 guard columns per row
      DeviceVector<float> y32(s.m * ldy);
      DeviceVector<uint16_t> y16(s.m * ldy);
      std::vector<float> prev_fused;  // the first fused result, to compare the separate one
      const MmaVariant variants[] = {
          {"plan", {}, true},
          {"nt1 s1", {1, 1, true}, false},
          {"nt2 s2", {2, 2, true}, false},
          {"nt2 s3", {2, 3, true}, false},
          // A tiny persistent grid: many row blocks per CTA, the pipeline crossing them.
          {"nt1 s2 ctas5", {1, 2, true, 5}, false},
          {"nt2 s1 ctas1", {2, 1, true, 1}, false},
      };
      for (const MmaVariant& v : variants) {
        for (int mode = 0; mode < 3; ++mode) {  // 0 fused bf16, 1 separate, 2 fused f32
          if (mode == 2 && !v.plan) continue;
          TqMmaConfig cfg = v.plan ? PlanTqMma(s.m, s.n, s.k, bits, info->multiprocessors) : v.cfg;
          cfg.fused_rotation = mode != 1;
          SCOPED_TRACE(std::string(v.name) + (mode == 0 ? " fused bf16" : mode == 1 ? " separate" : " fused f32"));
          const size_t ws_bytes = TqMmaWorkspaceBytes(s.m, s.n, s.k, bits, cfg);
          DeviceVector<uint8_t> ws(std::max<size_t>(ws_bytes, 16));
          CUDA_ASSERT_OK(cudaMemset(ws.get(), 0, ws.size()));
          TqMmaArgs a;
          a.w = w;
          a.m = s.m;
          a.x = mode == 2 ? static_cast<const void*>(dx32.get()) : dx.get();
          a.x_type = mode == 2 ? TqActType::kF32 : TqActType::kBF16;
          a.ldx = ldx;
          a.x_rot_f16 = x_h.get();
          a.x_scale = x_scale.get();
          a.y_f32 = y32.get();
          a.y_bf16 = y16.get();
          a.ldy = ldy;
          a.workspace = ws.get();
          a.workspace_bytes = ws.size();
          std::vector<float> first;
          ASSERT_NO_FATAL_FAILURE(LaunchTwice([&] { return LaunchTqLinearMma(a, cfg, nullptr); }, y32, y16, s.m,
                                              s.n, ldy, &first));
          const ErrorStats e = Compare(first, ldy, ref.y, s.m, s.n, hw.row_norm, ref.x_norm);
          EXPECT_LE(e.max_norm_err, kMaxMmaErr) << "rel_l2 " << e.rel_l2;
          worst_overall = std::max(worst_overall, e.max_norm_err);
          if (v.plan && mode == 0) {
            const TqMmaConfig c = NormalizeTqMmaConfig(s.m, s.n, s.k, bits, cfg);
            std::printf("%-34s plan nt=%d splits=%d: max norm err %.3g, rel L2 %.3g\n",
                        ShapeName(bits, s).c_str(), c.n_tiles, c.splits, e.max_norm_err, e.rel_l2);
          }
          // Fused (bf16 in) and separate rotation produce the same fp16 operands: same bits.
          if (mode == 0) prev_fused = first;
          if (mode == 1) {
            EXPECT_EQ(std::memcmp(prev_fused.data(), first.data(), first.size() * sizeof(float)), 0)
                << "fused and separate rotation differ";
          }
        }
      }
    }
  }
  std::printf("worst normalized error over all mma cases: %.3g (bound %.3g)\n", worst_overall,
              kMaxMmaErr);
}

// The GEMM path (c): tilings x awkward shapes, against the CPU, guards, determinism.
TEST(TqCudaGemmTest, MatchesCpuTqLinear) {
  SKIP_WITHOUT_GPU();
  auto info = GetDeviceInfo(0);
  ASSERT_TRUE(info.ok()) << info.status();
  int optin = 0;
  CUDA_ASSERT_OK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  const Shape shapes[] = {{1, 1, 128, 0},     {9, 7, 1000, 0},    {63, 129, 4096, 0},
                          {65, 4097, 384, 0}, {130, 300, 1280, 32}, {200, 257, 2048, 0},
                          {17, 1024, 4096, 0}, {40, 128, 64, 0},   {25, 256, 96, 0}};
  uint32_t seed = 9000;
  double worst = 0.0;
  for (int bits : {2, 3, 4}) {
    for (const Shape& s : shapes) {
      const uint32_t wseed = seed++, xseed = seed++;
      SCOPED_TRACE(ShapeName(bits, s) + " seeds " + std::to_string(wseed) + "," +
                   std::to_string(xseed));
      const HostWeights hw = RandomWeights(bits, s.n, s.k, s.block, wseed);
      const int64_t ldx = s.k + 3;
      const std::vector<float> x = RandomActivations(s.m, ldx, /*bf16=*/true, xseed);
      const CpuReference ref = RunCpu(hw, x, s.m, ldx);
      DeviceWeights dw(hw);
      const TqCudaWeights w = dw.View(hw);
      DeviceVector<uint16_t> dx(ToBf16(x));
      const int64_t kp = TqCudaPaddedK(s.k), groups = TqCudaGroups(s.k);
      DeviceVector<uint16_t> x_h(s.m * kp);
      DeviceVector<float> x_scale(s.m * groups);
      CUDA_ASSERT_OK(LaunchTqRotateInput(dx.get(), TqActType::kBF16, s.m, s.k, ldx, s.block,
                                         nullptr, x_h.get(), x_scale.get(), nullptr));
      const int64_t ldy = s.n + 3;
      DeviceVector<float> y32(s.m * ldy);
      DeviceVector<uint16_t> y16(s.m * ldy);
      struct Variant {
        const char* name;
        TqGemmConfig cfg;
        bool plan;
      };
      const Variant variants[] = {{"plan", {}, true},
                                  {"bm64 s1", {64, 1}, false},
                                  {"bm64 s3", {64, 3}, false},
                                  {"bm128 s1", {128, 1}, false},
                                  {"bm128 s5", {128, 5}, false}};
      for (const Variant& v : variants) {
        const TqGemmConfig cfg =
            v.plan ? PlanTqGemm(s.m, s.n, s.k, bits, info->multiprocessors, info->sm_major,
                                info->sm_minor)
                   : v.cfg;
        if (cfg.bm == 0 ||
            TqGemmSharedBytes(bits, cfg.bm) > static_cast<size_t>(optin)) {
          std::printf("%s %s: skipped (shared memory)\n", ShapeName(bits, s).c_str(), v.name);
          continue;
        }
        SCOPED_TRACE(v.name);
        DeviceVector<uint8_t> ws(std::max<size_t>(TqGemmWorkspaceBytes(s.m, s.n, s.k, cfg), 16));
        TqGemmArgs a;
        a.w = w;
        a.m = s.m;
        a.x_rot_f16 = x_h.get();
        a.x_scale = x_scale.get();
        a.y_f32 = y32.get();
        a.y_bf16 = y16.get();
        a.ldy = ldy;
        a.workspace = ws.get();
        a.workspace_bytes = ws.size();
        std::vector<float> first;
        ASSERT_NO_FATAL_FAILURE(
            LaunchTwice([&] { return LaunchTqGemm(a, cfg, nullptr); }, y32, y16, s.m, s.n, ldy, &first));
        const ErrorStats e = Compare(first, ldy, ref.y, s.m, s.n, hw.row_norm, ref.x_norm);
        EXPECT_LE(e.max_norm_err, kMaxGemmErr) << "rel_l2 " << e.rel_l2;
        worst = std::max(worst, e.max_norm_err);
        if (v.plan) {
          const TqGemmConfig c = NormalizeTqGemmConfig(s.m, s.n, s.k, cfg);
          std::printf("%-34s gemm plan bm=%d splits=%d: max norm err %.3g, rel L2 %.3g\n",
                      ShapeName(bits, s).c_str(), c.bm, c.splits, e.max_norm_err, e.rel_l2);
        }
      }
    }
  }
  std::printf("worst normalized error over all gemm cases: %.3g (bound %.3g)\n", worst,
              kMaxGemmErr);
}

TEST(TqCudaMmaTest, NanInOneRowStaysInThatRow) {
  SKIP_WITHOUT_GPU();
  const HostWeights hw = RandomWeights(3, 300, 1024, 0, 77);
  DeviceWeights dw(hw);
  const int64_t m = 4, k = 1024, n = 300;
  std::vector<float> x = RandomActivations(m, k, true, 78);
  x[1 * k + 500] = std::numeric_limits<float>::quiet_NaN();
  x[3 * k + 7] = std::numeric_limits<float>::infinity();
  DeviceVector<uint16_t> dx(ToBf16(x));
  DeviceVector<float> y(m * n);
  y.Poison(0x00);
  TqMmaArgs a;
  a.w = dw.View(hw);
  a.m = m;
  a.x = dx.get();
  a.ldx = k;
  a.y_f32 = y.get();
  a.ldy = n;
  TqMmaConfig cfg;
  cfg.splits = 1;
  CUDA_ASSERT_OK(LaunchTqLinearMma(a, cfg, nullptr));
  CUDA_ASSERT_OK(cudaDeviceSynchronize());
  const std::vector<float> got = y.Download();
  for (int64_t i = 0; i < m; ++i) {
    int64_t bad = 0;
    for (int64_t j = 0; j < n; ++j) bad += !std::isfinite(got[i * n + j]);
    if (i == 1 || i == 3) {
      EXPECT_EQ(bad, n) << "row " << i << " had a NaN/Inf input";
    } else {
      EXPECT_EQ(bad, 0) << "row " << i << " is clean";
    }
  }
}

TEST(TqCudaDequantizeTest, BitwiseEqualToDequantizeRows) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 3000;
  for (int bits : {2, 3, 4}) {
    for (const Shape& s : kShapes) {
      SCOPED_TRACE(ShapeName(bits, s) + " seed " + std::to_string(seed));
      const HostWeights hw = RandomWeights(bits, s.n, s.k, s.block, seed++);
      quant::TqSpec spec;
      spec.bits = bits;
      spec.group_size = 128;
      spec.rotation_block = s.block;
      auto q = quant::TqQuantizer::Create(spec);
      ASSERT_TRUE(q.ok()) << q.status();
      std::vector<float> ref(s.n * s.k);
      q->DequantizeRows(hw.packed.data(), hw.gains.data(), s.n, s.k, ref.data());
      DeviceWeights dw(hw);
      const int64_t ldw = s.k + 1;
      DeviceVector<float> out32(s.n * ldw);
      DeviceVector<uint16_t> out16(s.n * ldw);
      out32.Poison();
      out16.Poison();
      CUDA_ASSERT_OK(LaunchTqDequantize(dw.View(hw), out32.get(), nullptr, ldw, nullptr));
      CUDA_ASSERT_OK(LaunchTqDequantize(dw.View(hw), nullptr, out16.get(), ldw, nullptr));
      CUDA_ASSERT_OK(cudaDeviceSynchronize());
      const std::vector<float> got = out32.Download();
      const std::vector<uint16_t> got16 = out16.Download();
      int64_t nonfinite = 0, mismatch = 0, mismatch16 = 0;
      for (int64_t j = 0; j < s.n; ++j) {
        for (int64_t t = 0; t < s.k; ++t) {
          const float v = got[j * ldw + t];
          nonfinite += !std::isfinite(v);
          mismatch += cpu::FloatBits(v) != cpu::FloatBits(ref[j * s.k + t]);
          mismatch16 += got16[j * ldw + t] != cpu::FloatToBf16(ref[j * s.k + t]);
        }
      }
      ASSERT_EQ(nonfinite, 0) << "unwritten (NaN-poisoned) or non-finite values";
      EXPECT_EQ(mismatch, 0) << "float32 values differ from DequantizeRows";
      EXPECT_EQ(mismatch16, 0) << "bf16 values differ from RNE(DequantizeRows)";
      // The padding column ldw-1 beyond k stays poisoned.
      EXPECT_TRUE(std::isnan(got[ldw - 1])) << "wrote past k";
    }
  }
}

TEST(TqCudaRunnerTest, EveryPathAgainstCpu) {
  SKIP_WITHOUT_GPU();
  auto runner = TqLinearRunner::Create(0);
  ASSERT_TRUE(runner.ok()) << runner.status();
  uint32_t seed = 4000;
  for (int bits : {2, 3, 4}) {
    for (const Shape& s : {Shape{1, 513, 2048, 0}, Shape{12, 300, 1000, 0}, Shape{70, 257, 768, 32},
                           Shape{1, 128, 64, 0}, Shape{40, 128, 64, 0}, Shape{3, 256, 96, 0}}) {
      const HostWeights hw = RandomWeights(bits, s.n, s.k, s.block, seed++);
      DeviceWeights dw(hw);
      const TqCudaWeights w = dw.View(hw);
      for (bool bf16 : {true, false}) {
        const std::vector<float> x = RandomActivations(s.m, s.k, bf16, seed++);
        const CpuReference ref = RunCpu(hw, x, s.m, s.k);
        DeviceVector<uint16_t> dx16(ToBf16(x));
        DeviceVector<float> dx32(x);
        for (TqKernel kernel : {TqKernel::kUnsupported, TqKernel::kMmaFused,
                                TqKernel::kMmaSeparate, TqKernel::kDequantCublas,
                                TqKernel::kGemm}) {
          SCOPED_TRACE(ShapeName(bits, s) + (bf16 ? " bf16 " : " f32 ") + TqKernelName(kernel));
          DeviceVector<float> y(s.m * s.n);
          y.Poison();
          const absl::Status st = (*runner)->Run(
              w, bf16 ? static_cast<const void*>(dx16.get()) : dx32.get(),
              bf16 ? TqActType::kBF16 : TqActType::kF32, s.m, s.k, y.get(), nullptr, s.n,
              nullptr, kernel);
          ASSERT_TRUE(st.ok()) << st;
          CUDA_ASSERT_OK(cudaDeviceSynchronize());
          const std::vector<float> got = y.Download();
          ASSERT_EQ(CountNonFinite(got), 0);
          const ErrorStats e = Compare(got, s.n, ref.y, s.m, s.n, hw.row_norm, ref.x_norm);
          const TqKernel ran = kernel == TqKernel::kUnsupported ? (*runner)->KernelFor(w, s.m) : kernel;
          const double tol = ran == TqKernel::kDequantCublas ? (bf16 ? kMaxCublasBf16Err : kMaxCublasF32Err)
                             : ran == TqKernel::kGemm        ? kMaxGemmErr
                                                             : kMaxMmaErr;
          EXPECT_LE(e.max_norm_err, tol) << "ran " << TqKernelName(ran) << ", rel_l2 " << e.rel_l2;
        }
      }
    }
  }
}

// One runner (one split-K workspace) serving layers of different shapes in turn, as a model's
// layers do: every split-K launch must find its tile counters at zero whatever ran before (the
// shapes of a Qwen3-30B-A3B layer at m = 1: o_proj, an expert's gate|up, k/v; all split-K).
TEST(TqCudaRunnerTest, SharedWorkspaceAcrossShapes) {
  SKIP_WITHOUT_GPU();
  auto runner = TqLinearRunner::Create(0);
  ASSERT_TRUE(runner.ok()) << runner.status();
  const Shape shapes[] = {{1, 2048, 4096, 0}, {1, 1536, 2048, 0}, {1, 512, 2048, 0}, {2, 1000, 3000, 0}};
  std::vector<HostWeights> hws;
  std::vector<std::unique_ptr<DeviceWeights>> dws;
  std::vector<std::vector<float>> xs;
  std::vector<CpuReference> refs;
  uint32_t seed = 7100;
  for (const Shape& s : shapes) {
    hws.push_back(RandomWeights(3, s.n, s.k, s.block, seed++));
    dws.push_back(std::make_unique<DeviceWeights>(hws.back()));
    xs.push_back(RandomActivations(s.m, s.k, /*bf16=*/false, seed++));
    refs.push_back(RunCpu(hws.back(), xs.back(), s.m, s.k));
  }
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < std::size(shapes); ++i) {
      const Shape& s = shapes[i];
      SCOPED_TRACE(ShapeName(3, s) + " round " + std::to_string(round));
      const TqCudaWeights w = dws[i]->View(hws[i]);
      DeviceVector<float> dx(xs[i]);
      DeviceVector<float> y(s.m * s.n);
      y.Poison();
      ASSERT_TRUE((*runner)->Run(w, dx.get(), TqActType::kF32, s.m, s.k, y.get(), nullptr, s.n, nullptr).ok());
      CUDA_ASSERT_OK(cudaDeviceSynchronize());
      const std::vector<float> got = y.Download();
      ASSERT_EQ(CountNonFinite(got), 0);
      const ErrorStats e = Compare(got, s.n, refs[i].y, s.m, s.n, hws[i].row_norm, refs[i].x_norm);
      EXPECT_LE(e.max_norm_err, kMaxMmaErr) << "rel_l2 " << e.rel_l2;
    }
  }
}

// The runner's own kernel choice over m = 1…160 on the small layers of a tiny MoE model
// (hidden 128, experts of 64: k below one group, n of one row block).
TEST(TqCudaRunnerTest, SmallLayersEveryM) {
  SKIP_WITHOUT_GPU();
  auto runner = TqLinearRunner::Create(0);
  ASSERT_TRUE(runner.ok()) << runner.status();
  uint32_t seed = 7300;
  double worst = 0;
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{128, 128}, {128, 64}, {256, 128}, {512, 128}, {128, 256}}) {
    const HostWeights hw = RandomWeights(3, n, k, 0, seed++);
    DeviceWeights dw(hw);
    const TqCudaWeights w = dw.View(hw);
    for (int64_t m = 1; m <= 160; m += (m < 20 ? 1 : 7)) {
      SCOPED_TRACE(ShapeName(3, Shape{m, n, k, 0}) + " ran " + TqKernelName((*runner)->KernelFor(w, m)));
      const std::vector<float> x = RandomActivations(m, k, /*bf16=*/false, seed++);
      const CpuReference ref = RunCpu(hw, x, m, k);
      DeviceVector<float> dx(x);
      DeviceVector<float> y(m * n);
      y.Poison();
      ASSERT_TRUE((*runner)->Run(w, dx.get(), TqActType::kF32, m, k, y.get(), nullptr, n, nullptr).ok());
      CUDA_ASSERT_OK(cudaDeviceSynchronize());
      const std::vector<float> got = y.Download();
      ASSERT_EQ(CountNonFinite(got), 0);
      const ErrorStats e = Compare(got, n, ref.y, m, n, hw.row_norm, ref.x_norm);
      worst = std::max(worst, e.max_norm_err);
      EXPECT_LE(e.max_norm_err, kMaxGemmErr) << "rel_l2 " << e.rel_l2;
    }
  }
  std::printf("small layers, m = 1..160: worst normalized error %.3g\n", worst);
}

// MoE: experts stored back to back, the one to run chosen by an index in device memory
// (RunExpert). Each run equals the CPU reference of that expert's own weights; m = 1 (fused
// rotation) and 5; split-K (n 1536, k 2048) and k below one group.
TEST(TqCudaRunnerTest, ExpertSelectedOnTheDevice) {
  SKIP_WITHOUT_GPU();
  auto runner = TqLinearRunner::Create(0);
  ASSERT_TRUE(runner.ok()) << runner.status();
  uint32_t seed = 7500;
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{1536, 2048}, {128, 64}}) {
    constexpr int kExperts = 3;
    std::vector<HostWeights> experts;
    HostWeights all;  // the three back to back
    for (int e = 0; e < kExperts; ++e) {
      experts.push_back(RandomWeights(3, n, k, 0, seed++));
      all.packed.insert(all.packed.end(), experts[e].packed.begin(), experts[e].packed.end());
      all.gains.insert(all.gains.end(), experts[e].gains.begin(), experts[e].gains.end());
    }
    all.bits = 3, all.n = n, all.k = k, all.codebook = experts[0].codebook;
    DeviceWeights dw(all);
    const TqCudaWeights w = dw.View(all);  // expert 0's view; the others by stride
    const int64_t packed_stride = static_cast<int64_t>(experts[0].packed.size());
    const int64_t gains_stride = static_cast<int64_t>(experts[0].gains.size());
    DeviceVector<int32_t> order(std::vector<int32_t>{2, 0, 1});
    for (int64_t m : {1, 5}) {
      for (int i = 0; i < kExperts; ++i) {
        const int e = std::vector<int>{2, 0, 1}[i];
        SCOPED_TRACE(ShapeName(3, Shape{m, n, k, 0}) + " expert " + std::to_string(e));
        const std::vector<float> x = RandomActivations(m, k, /*bf16=*/false, seed++);
        const CpuReference ref = RunCpu(experts[e], x, m, k);
        DeviceVector<float> dx(x);
        DeviceVector<float> y(m * n);
        y.Poison();
        const absl::Status st = (*runner)->RunExpert(w, order.get() + i, packed_stride, gains_stride, dx.get(),
                                                    TqActType::kF32, m, k, y.get(), n, nullptr);
        ASSERT_TRUE(st.ok()) << st;
        CUDA_ASSERT_OK(cudaDeviceSynchronize());
        const std::vector<float> got = y.Download();
        ASSERT_EQ(CountNonFinite(got), 0);
        const ErrorStats err = Compare(got, n, ref.y, m, n, experts[e].row_norm, ref.x_norm);
        EXPECT_LE(err.max_norm_err, kMaxMmaErr) << "rel_l2 " << err.rel_l2;
      }
    }
  }
  EXPECT_FALSE((*runner)->RunExpert(TqCudaWeights(), nullptr, 0, 0, nullptr, TqActType::kF32, 1, 0, nullptr, 0,
                                    nullptr).ok());
}

// Grouped experts (one launch for all of a decode step's (token, slot) pairs): every slot's
// output equals, bit for bit, a launch of that expert on that token alone — with the slots of a
// token sharing its x row (x_slot_div = top-k, the gate|up projection) and with one x row per
// slot (x_slot_div = 1, the down projection); shapes with and without split-K.
TEST(TqCudaRunnerTest, GroupedExpertsEqualSoloLaunches) {
  SKIP_WITHOUT_GPU();
  auto runner = TqLinearRunner::Create(0);
  ASSERT_TRUE(runner.ok()) << runner.status();
  uint32_t seed = 7700;
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{1536, 2048}, {2048, 768}, {136, 200}}) {
    constexpr int kExperts = 4, kTopK = 3, kTokens = 2, kSlots = kTokens * kTopK;
    const HostWeights all = RandomExperts(kExperts, n, k, &seed);
    const int64_t packed_stride = static_cast<int64_t>(all.packed.size()) / kExperts;
    const int64_t gains_stride = static_cast<int64_t>(all.gains.size()) / kExperts;
    DeviceWeights dw(all);
    const TqCudaWeights w = dw.View(all);
    const std::vector<int32_t> ids = {2, 0, 3, 1, 2, 0};  // token 0: 2, 0, 3; token 1: 1, 2, 0
    DeviceVector<int32_t> dids(ids);
    for (int64_t m : {1, 2}) {
      for (int div : {kTopK, 1}) {
        SCOPED_TRACE(ShapeName(3, Shape{m, n, k, 0}) + " x_slot_div " + std::to_string(div));
        const int64_t x_rows = (kSlots / div) * m;
        const std::vector<float> x = RandomActivations(x_rows, k, /*bf16=*/false, seed++);
        DeviceVector<float> dx(x);
        DeviceVector<float> y(kSlots * m * n);
        y.Poison();
        absl::Status st = (*runner)->RunExpert(w, dids.get(), packed_stride, gains_stride, dx.get(), TqActType::kF32,
                                               m, k, y.get(), n, nullptr, kSlots, div);
        ASSERT_TRUE(st.ok()) << st;
        CUDA_ASSERT_OK(cudaDeviceSynchronize());
        const std::vector<float> got = y.Download();
        ASSERT_EQ(CountNonFinite(got), 0);
        for (int s = 0; s < kSlots; ++s) {
          DeviceVector<float> solo(m * n);
          solo.Poison();
          st = (*runner)->RunExpert(w, dids.get() + s, packed_stride, gains_stride,
                                    dx.get() + (s / div) * m * k, TqActType::kF32, m, k, solo.get(), n, nullptr);
          ASSERT_TRUE(st.ok()) << st;
          CUDA_ASSERT_OK(cudaDeviceSynchronize());
          const std::vector<float> want = solo.Download();
          for (int64_t i = 0; i < m * n; ++i) {
            ASSERT_EQ(got[s * m * n + i], want[i]) << "slot " << s << " element " << i;
          }
        }
      }
    }
  }
  // The kernel's own split-K per plane (RunExpert never splits): a grouped LaunchTqLinearMma with
  // 2 K splits equals each slot launched alone with the same config, bit for bit.
  {
    const int64_t n = 272, k = 2048;
    constexpr int kExperts = 3, kSlots = 5;
    const HostWeights all = RandomExperts(kExperts, n, k, &seed);
    DeviceWeights dw(all);
    DeviceVector<int32_t> dids(std::vector<int32_t>{1, 2, 0, 2, 1});
    const std::vector<float> x = RandomActivations(kSlots, k, /*bf16=*/false, seed++);
    DeviceVector<float> dx(x);
    TqMmaConfig cfg;
    cfg.n_tiles = 1;
    cfg.splits = 2;
    cfg.fused_rotation = true;
    const size_t ws_bytes = TqMmaWorkspaceBytes(1, n, k, 3, cfg, kSlots);
    ASSERT_GT(ws_bytes, 0u);
    DeviceVector<uint8_t> ws(std::vector<uint8_t>(ws_bytes, 0));
    TqMmaArgs a;
    a.w = dw.View(all);
    a.m = 1;
    a.x = dx.get();
    a.x_type = TqActType::kF32;
    a.ldx = k;
    a.ldy = n;
    a.workspace = ws.get();
    a.workspace_bytes = ws_bytes;
    a.expert = dids.get();
    a.expert_packed_stride = static_cast<int64_t>(all.packed.size()) / kExperts;
    a.expert_gains_stride = static_cast<int64_t>(all.gains.size()) / kExperts;
    a.expert_slots = kSlots;
    a.x_slot_div = 1;
    DeviceVector<float> y(kSlots * n);
    y.Poison();
    a.y_f32 = y.get();
    CUDA_ASSERT_OK(LaunchTqLinearMma(a, cfg, nullptr));
    CUDA_ASSERT_OK(cudaDeviceSynchronize());
    const std::vector<float> got = y.Download();
    for (int s = 0; s < kSlots; ++s) {
      TqMmaArgs one = a;
      one.expert = dids.get() + s;
      one.expert_slots = 0;
      one.x = dx.get() + s * k;
      DeviceVector<float> solo(n);
      solo.Poison();
      one.y_f32 = solo.get();
      CUDA_ASSERT_OK(LaunchTqLinearMma(one, cfg, nullptr));
      CUDA_ASSERT_OK(cudaDeviceSynchronize());
      const std::vector<float> want = solo.Download();
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[s * n + i], want[i]) << "split-K slot " << s << " row " << i;
    }
  }
  // Bad groupings are refused.
  DeviceVector<int32_t> one(std::vector<int32_t>{0});
  HostWeights hw = RandomWeights(3, 32, 128, 0, 1);
  DeviceWeights dw(hw);
  DeviceVector<float> x(std::vector<float>(2 * 128, 0.5f)), y(4 * 32 * 4);
  EXPECT_FALSE((*runner)->RunExpert(dw.View(hw), one.get(), 0, 0, x.get(), TqActType::kF32, 4, 128, y.get(), 32,
                                    nullptr, /*slots=*/2, 1).ok());  // m > 2 grouped
  EXPECT_FALSE((*runner)->RunExpert(dw.View(hw), one.get(), 0, 0, x.get(), TqActType::kF32, 1, 128, y.get(), 32,
                                    nullptr, 2, /*x_slot_div=*/0).ok());
}

TEST(TqCudaRunnerTest, QuantizedGaussianWeightsEndToEnd) {
  SKIP_WITHOUT_GPU();
  auto runner = TqLinearRunner::Create(0);
  ASSERT_TRUE(runner.ok()) << runner.status();
  for (int bits : {2, 3, 4}) {
    const int64_t n = 257, k = 1000, m = 3;
    quant::TqSpec spec;
    spec.bits = bits;
    spec.gain = quant::GainMode::kLeastSquares;
    auto q = quant::TqQuantizer::Create(spec);
    ASSERT_TRUE(q.ok());
    std::mt19937 gen(5000 + bits);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    std::vector<float> wf(n * k);
    for (float& v : wf) v = nd(gen);
    HostWeights hw;
    hw.bits = bits;
    hw.n = n;
    hw.k = k;
    hw.packed.resize(q->PackedSize(n, k));
    hw.gains.resize(q->GainsSize(n, k));
    q->QuantizeRows(wf.data(), n, k, hw.packed.data(), hw.gains.data());
    hw.codebook = quant::GetCodebook(bits, 128).centroids;
    std::vector<float> w_hat(n * k);
    q->DequantizeRows(hw.packed.data(), hw.gains.data(), n, k, w_hat.data());
    const std::vector<float> x = RandomActivations(m, k, true, 6000 + bits);
    std::vector<double> ref(m * n), w_norm(n), x_norm(m);
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += double(w_hat[j * k + t]) * w_hat[j * k + t];
      w_norm[j] = std::sqrt(s);
    }
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += double(x[i * k + t]) * x[i * k + t];
      x_norm[i] = std::sqrt(s);
      for (int64_t j = 0; j < n; ++j) {
        double d = 0;
        for (int64_t t = 0; t < k; ++t) d += double(x[i * k + t]) * w_hat[j * k + t];
        ref[i * n + j] = d;
      }
    }
    DeviceWeights dw(hw);
    DeviceVector<uint16_t> dx(ToBf16(x));
    DeviceVector<float> y(m * n);
    y.Poison();
    ASSERT_TRUE((*runner)->Run(dw.View(hw), dx.get(), TqActType::kBF16, m, k, y.get(), nullptr, n,
                               nullptr).ok());
    CUDA_ASSERT_OK(cudaDeviceSynchronize());
    const std::vector<float> got = y.Download();
    ASSERT_EQ(CountNonFinite(got), 0);
    const ErrorStats e = Compare(got, n, ref, m, n, w_norm, x_norm);
    std::printf("TQ%d quantized Gaussian end to end: max norm err %.3g, rel L2 %.3g\n", bits,
                e.max_norm_err, e.rel_l2);
    EXPECT_LE(e.max_norm_err, kMaxEndToEndErr);
  }
}

// ---------------------------------------------------------------------------------------------
// (f) The int8-activation GEMV.

// The CPU reference of one activation row: its int8 quantization (x_q, scales) and y.
struct Int8Reference {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<double> y;
};
Int8Reference RunInt8Cpu(const HostWeights& w, const float* x_rot_row) {
  Int8Reference r;
  const int64_t kp = TqCudaPaddedK(w.k);
  r.q.resize(kp);
  r.scale.resize(TqCudaGroups(w.k));
  r.y.resize(w.n);
  QuantizeRotatedInt8(x_rot_row, kp, r.q.data(), r.scale.data());
  TqGemvInt8Reference(w.packed.data(), w.gains.data(), w.codebook.data(), w.n, w.k, r.q.data(), r.scale.data(),
                      r.y.data());
  return r;
}

TEST(TqCudaInt8GemvTest, MatchesReference) {
  SKIP_WITHOUT_GPU();
  uint32_t seed = 9000;
  struct NK {
    int64_t n, k;
    int block;
  };
  // n = 1, 7, 4097; k under one group, not a multiple of 128, of the 32-group slice, and more
  // slices (320 groups = 10) than a CTA's 8 slice warps.
  for (const NK s : {NK{1, 128, 0}, NK{7, 1000, 0}, NK{4097, 4096, 0}, NK{130, 384, 0}, NK{33, 4224, 0},
                     NK{1030, 14336, 0}, NK{300, 96, 0}, NK{256, 1024, 64}, NK{65, 40960, 0}, NK{5, 64, 0}}) {
    const HostWeights hw = RandomWeights(3, s.n, s.k, s.block, seed++);
    DeviceWeights dw(hw);
    const TqCudaWeights w = dw.View(hw);
    const int64_t kp = TqCudaPaddedK(s.k), groups = TqCudaGroups(s.k);
    for (bool bf16 : {true, false}) {
      SCOPED_TRACE(ShapeName(3, Shape{1, s.n, s.k, s.block}) + (bf16 ? " bf16" : " f32") + " seed " +
                   std::to_string(seed));
      const std::vector<float> x = RandomActivations(1, s.k, bf16, seed++);
      const CpuReference ref = RunCpu(hw, x, 1, s.k);
      const Int8Reference i8 = RunInt8Cpu(hw, ref.x_rot.data());
      const std::vector<int8_t>& q_ref = i8.q;
      const std::vector<float>& qs_ref = i8.scale;
      const std::vector<double>& y_ref = i8.y;

      DeviceVector<uint16_t> dx16(ToBf16(x));
      DeviceVector<float> dx32(x);
      DeviceVector<int8_t> q(kp);
      DeviceVector<float> qs(groups);
      q.Poison();
      qs.Poison();
      CUDA_ASSERT_OK(LaunchTqRotateInputInt8(bf16 ? static_cast<const void*>(dx16.get()) : dx32.get(),
                                             bf16 ? TqActType::kBF16 : TqActType::kF32, 1, s.k, s.k,
                                             s.block, q.get(), qs.get(), nullptr));
      CUDA_ASSERT_OK(cudaDeviceSynchronize());
      const std::vector<int8_t> q_got = q.Download();
      const std::vector<float> qs_got = qs.Download();
      int64_t q_diff = 0, s_diff = 0;
      for (int64_t t = 0; t < kp; ++t) q_diff += q_got[t] != q_ref[t];
      for (int64_t g = 0; g < groups; ++g) s_diff += cpu::FloatBits(qs_got[g]) != cpu::FloatBits(qs_ref[g]);
      EXPECT_EQ(q_diff, 0) << "int8 activations differ from QuantizeRotatedInt8";
      EXPECT_EQ(s_diff, 0) << "scales differ";

      const TqGemvInt8Config plan = PlanTqGemvInt8(s.n, s.k, 132);
      for (int rows : {plan.rows_per_chunk, 2, 3, 256}) {
        SCOPED_TRACE("rows_per_chunk " + std::to_string(rows));
        int major = 0;
        CUDA_ASSERT_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
        const bool programmatic = rows == 3 && major >= 9;  // programmatic dependent launch (Hopper)
        TqGemvInt8Args a;
        a.w = w;
        a.m = 1;
        a.ldy = s.n;
        a.x_q = q.get();
        a.x_qscale = qs.get();
        DeviceVector<float> y(s.n + 1);
        DeviceVector<uint16_t> yb(s.n + 1);
        y.Poison();
        yb.Poison();
        a.y_f32 = y.get();
        a.y_bf16 = yb.get();
        TqGemvInt8Config cfg;
        cfg.rows_per_chunk = rows;
        cfg.programmatic = programmatic;
        CUDA_ASSERT_OK(LaunchTqGemvInt8(a, cfg, nullptr));
        CUDA_ASSERT_OK(cudaDeviceSynchronize());
        const std::vector<float> got = y.Download();
        const std::vector<uint16_t> got_b = yb.Download();
        ASSERT_TRUE(std::isnan(got[s.n])) << "guard element written";
        ASSERT_EQ(got_b[s.n], 0xffff) << "guard element written";
        std::vector<float> got_n(got.begin(), got.begin() + s.n);
        ASSERT_EQ(CountNonFinite(got_n), 0);
        const ErrorStats e = Compare(got_n, s.n, y_ref, 1, s.n, hw.row_norm, ref.x_norm);
        EXPECT_LE(e.max_norm_err, kMaxInt8VsReferenceErr) << "vs TqGemvInt8Reference, rel_l2 " << e.rel_l2;
        const ErrorStats f = Compare(got_n, s.n, ref.y, 1, s.n, hw.row_norm, ref.x_norm);
        EXPECT_LE(f.max_norm_err, kMaxInt8VsFloatErr) << "vs cpu::TqLinear, rel_l2 " << f.rel_l2;
        int64_t bf_diff = 0;
        for (int64_t j = 0; j < s.n; ++j) bf_diff += got_b[j] != cpu::FloatToBf16(got[j]);
        EXPECT_EQ(bf_diff, 0) << "bf16 output is not the rounding of the float32 one";
        // Deterministic: the same bits again.
        y.Poison();
        CUDA_ASSERT_OK(LaunchTqGemvInt8(a, cfg, nullptr));
        CUDA_ASSERT_OK(cudaDeviceSynchronize());
        const std::vector<float> again = y.Download();
        int64_t nd = 0;
        for (int64_t j = 0; j < s.n; ++j) nd += cpu::FloatBits(again[j]) != cpu::FloatBits(got[j]);
        EXPECT_EQ(nd, 0) << "second launch differs";
      }
    }
  }
}

TEST(TqCudaInt8GemvTest, RunnerDispatchAndNaN) {
  SKIP_WITHOUT_GPU();
  auto runner = TqLinearRunner::Create(0);
  ASSERT_TRUE(runner.ok()) << runner.status();
  const HostWeights h3 = RandomWeights(3, 600, 2000, 0, 77), h4 = RandomWeights(4, 64, 256, 0, 78);
  DeviceWeights d3(h3), d4(h4);
  const TqCudaWeights w3 = d3.View(h3), w4 = d4.View(h4);
  EXPECT_NE((*runner)->KernelFor(w3, 1), TqKernel::kInt8Gemv) << "off by default";
  (*runner)->set_int8_gemv(true);
  EXPECT_EQ((*runner)->KernelFor(w3, 1), TqKernel::kInt8Gemv);
  EXPECT_NE((*runner)->KernelFor(w3, 2), TqKernel::kInt8Gemv);
  EXPECT_NE((*runner)->KernelFor(w4, 1), TqKernel::kInt8Gemv) << "TQ3 only";
  std::vector<float> x = RandomActivations(1, h3.k, false, 79);
  const CpuReference ref = RunCpu(h3, x, 1, h3.k);
  DeviceVector<float> dx(x);
  DeviceVector<float> y(h3.n);
  y.Poison();
  absl::Status st = (*runner)->Run(w3, dx.get(), TqActType::kF32, 1, h3.k, y.get(), nullptr, h3.n, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  CUDA_ASSERT_OK(cudaDeviceSynchronize());
  std::vector<float> got = y.Download();
  ASSERT_EQ(CountNonFinite(got), 0);
  EXPECT_LE(Compare(got, h3.n, ref.y, 1, h3.n, h3.row_norm, ref.x_norm).max_norm_err, kMaxInt8VsFloatErr);
  // Forced at m = 2: a clear error, nothing launched.
  DeviceVector<float> x2(std::vector<float>(2 * h3.k, 1.0f)), y2(2 * h3.n);
  st = (*runner)->Run(w3, x2.get(), TqActType::kF32, 2, h3.k, y2.get(), nullptr, h3.n, nullptr,
                      TqKernel::kInt8Gemv);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  // all_rows: any m, each row as its own GEMV (y row stride ldy; guard columns untouched).
  (*runner)->set_int8_gemv(true, /*all_rows=*/true);
  EXPECT_EQ((*runner)->KernelFor(w3, 5), TqKernel::kInt8Gemv);
  {
    const int64_t m = 5, ldy = h3.n + 3;
    const std::vector<float> xm = RandomActivations(m, h3.k, true, 80);
    const CpuReference rm = RunCpu(h3, xm, m, h3.k);
    DeviceVector<uint16_t> dxm(ToBf16(xm));
    DeviceVector<float> ym(m * ldy);
    ym.Poison();
    st = (*runner)->Run(w3, dxm.get(), TqActType::kBF16, m, h3.k, ym.get(), nullptr, ldy, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    CUDA_ASSERT_OK(cudaDeviceSynchronize());
    const std::vector<float> g = ym.Download();
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = h3.n; j < ldy; ++j) EXPECT_TRUE(std::isnan(g[i * ldy + j])) << "guard written";
      // Row i against the reference of row i alone.
      const std::vector<double> yi = RunInt8Cpu(h3, rm.x_rot.data() + i * TqCudaPaddedK(h3.k)).y;
      const std::vector<float> row(g.begin() + i * ldy, g.begin() + i * ldy + h3.n);
      const std::vector<double> xn = {rm.x_norm[i]};
      EXPECT_LE(Compare(row, h3.n, yi, 1, h3.n, h3.row_norm, xn).max_norm_err, kMaxInt8VsReferenceErr) << "row " << i;
    }
  }
  (*runner)->set_int8_gemv(true);
  // A NaN in x reaches every output.
  x[1234] = NAN;
  DeviceVector<float> dxn(x);
  st = (*runner)->Run(w3, dxn.get(), TqActType::kF32, 1, h3.k, y.get(), nullptr, h3.n, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  CUDA_ASSERT_OK(cudaDeviceSynchronize());
  got = y.Download();
  EXPECT_EQ(CountNonFinite(got), h3.n);
}

// A runner with every row on the int8 GEMV, and the device's compute capability major.
absl::StatusOr<std::unique_ptr<TqLinearRunner>> Int8RowsRunner(int* major) {
  auto runner = TqLinearRunner::Create(0);
  if (!runner.ok()) return runner.status();
  (*runner)->set_int8_gemv(true, /*all_rows=*/true);
  if (cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
    return absl::InternalError("cudaDeviceGetAttribute failed");
  }
  return runner;
}

// SiLU·mul fused into the int8 rotation (the MLP's down projection): bitwise nn_ops' SiluMul
// followed by the plain int8 rotation, and the same y through the runner.
TEST(TqCudaInt8GemvTest, SiluMulFusedIntoTheRotation) {
  SKIP_WITHOUT_GPU();
  int major = 0;
  auto runner = Int8RowsRunner(&major);
  ASSERT_TRUE(runner.ok()) << runner.status();
  uint32_t seed = 9500;
  for (const auto& [m, k] : {std::pair<int64_t, int64_t>{1, 14336}, {3, 1000}, {2, 64}}) {
    SCOPED_TRACE("m=" + std::to_string(m) + " k=" + std::to_string(k));
    const int64_t ld = 2 * k + 5, kp = TqCudaPaddedK(k), groups = TqCudaGroups(k), n = 300;
    const std::vector<float> gu = RandomActivations(m, ld, false, seed++);
    const HostWeights hw = RandomWeights(3, n, k, 0, seed++);
    DeviceWeights dw(hw);
    DeviceVector<float> dgu(gu), act(m * k);
    DeviceVector<int8_t> q1(m * kp), q2(m * kp);
    DeviceVector<float> s1(m * groups), s2(m * groups);
    q2.Poison();
    s2.Poison();
    CUDA_ASSERT_OK(SiluMul(dgu.get(), ld, dgu.get() + k, ld, m, k, act.get(), k, nullptr));
    CUDA_ASSERT_OK(LaunchTqRotateInputInt8(act.get(), TqActType::kF32, m, k, k, 0, q1.get(), s1.get(), nullptr));
    CUDA_ASSERT_OK(LaunchTqSiluMulRotateInt8(dgu.get(), ld, m, k, 0, q2.get(), s2.get(), nullptr, major >= 9));
    CUDA_ASSERT_OK(cudaDeviceSynchronize());
    EXPECT_EQ(q1.Download(), q2.Download());
    const std::vector<float> a1 = s1.Download(), a2 = s2.Download();
    for (int64_t g = 0; g < m * groups; ++g) EXPECT_EQ(cpu::FloatBits(a1[g]), cpu::FloatBits(a2[g])) << g;
    DeviceVector<float> y1(m * n), y2(m * n);
    y2.Poison();
    const TqCudaWeights w = dw.View(hw);
    absl::Status st = (*runner)->Run(w, act.get(), TqActType::kF32, m, k, y1.get(), nullptr, n, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    st = (*runner)->RunSiluMulInt8(w, dgu.get(), ld, m, y2.get(), n, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    CUDA_ASSERT_OK(cudaDeviceSynchronize());
    const std::vector<float> b1 = y1.Download(), b2 = y2.Download();
    ASSERT_EQ(CountNonFinite(b2), 0);
    int64_t diff = 0;
    for (int64_t i = 0; i < m * n; ++i) diff += cpu::FloatBits(b1[i]) != cpu::FloatBits(b2[i]);
    EXPECT_EQ(diff, 0) << "RunSiluMulInt8 differs from SiluMul + Run";
  }
  // Not an int8 problem (TQ4): refused.
  const HostWeights h4 = RandomWeights(4, 64, 256, 0, 9600);
  DeviceWeights d4(h4);
  DeviceVector<float> g4(std::vector<float>(512, 1.0f)), y4(64);
  EXPECT_EQ((*runner)->RunSiluMulInt8(d4.View(h4), g4.get(), 512, 1, y4.get(), 64, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// The residual add and RMSNorm fused into the int8 rotation (an engine layer's norm before its
// qkv or gate|up linear at m = 1): bitwise nn_ops' AddRmsNormRows (RmsNormRows without a) then the
// plain int8 rotation — x, the norm's output, x_q and scales — and the same y through the runner.
// Widths: one float4 per thread (4096), a loop of them (5120 > 1024 float4s), a single group (128,
// with a block-diagonal rotation); with and without the add and the weight.
TEST(TqCudaInt8GemvTest, RmsNormFusedIntoTheRotation) {
  SKIP_WITHOUT_GPU();
  int major = 0;
  auto runner = Int8RowsRunner(&major);
  ASSERT_TRUE(runner.ok()) << runner.status();
  uint32_t seed = 9700;
  struct Shape {
    int64_t m, k;
    bool add, weight;
    int block;
  };
  for (const Shape& c : {Shape{1, 4096, true, true, 0}, Shape{2, 5120, true, true, 0}, Shape{3, 128, false, true, 32},
                         Shape{1, 4096, false, false, 0}}) {
    SCOPED_TRACE("m=" + std::to_string(c.m) + " k=" + std::to_string(c.k) + (c.add ? " add" : "") +
                 (c.weight ? " weight" : ""));
    const int64_t ld = c.k + 4, groups = c.k / 128, n = 200;
    const float eps = 1e-6f;
    const std::vector<float> x0 = RandomActivations(c.m, ld, false, seed++);
    const std::vector<float> a0 = RandomActivations(c.m, ld, false, seed++);
    const std::vector<float> nw = RandomActivations(1, c.k, false, seed++);
    const HostWeights hw = RandomWeights(3, n, c.k, c.block, seed++);
    DeviceWeights dw(hw);
    DeviceVector<float> x1(x0), x2(x0), x3(x0), da(a0), dnw(nw), h1(c.m * ld), h2(c.m * ld), h3(c.m * ld);
    DeviceVector<int8_t> q1(c.m * c.k), q2(c.m * c.k);
    DeviceVector<float> s1(c.m * groups), s2(c.m * groups);
    h2.Poison();
    q2.Poison();
    s2.Poison();
    const float* a = c.add ? da.get() : nullptr;
    const float* w = c.weight ? dnw.get() : nullptr;
    if (c.add) {
      CUDA_ASSERT_OK(AddRmsNormRows(x1.get(), ld, a, ld, w, c.m, c.k, eps, h1.get(), ld, nullptr));
    } else {
      CUDA_ASSERT_OK(RmsNormRows(x1.get(), ld, w, c.m, c.k, eps, h1.get(), ld, nullptr));
    }
    CUDA_ASSERT_OK(LaunchTqRotateInputInt8(h1.get(), TqActType::kF32, c.m, c.k, ld, c.block, q1.get(), s1.get(), nullptr));
    CUDA_ASSERT_OK(LaunchTqAddRmsNormRotateInt8(x2.get(), ld, a, ld, w, c.m, c.k, eps, h2.get(), ld, c.block, q2.get(),
                                                s2.get(), nullptr, major >= 9));
    CUDA_ASSERT_OK(cudaDeviceSynchronize());
    auto same_bits = [](const std::vector<float>& u, const std::vector<float>& v, int64_t rows, int64_t stride,
                        int64_t width) {
      int64_t diff = 0;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < width; ++i) diff += cpu::FloatBits(u[r * stride + i]) != cpu::FloatBits(v[r * stride + i]);
      }
      return diff;
    };
    EXPECT_EQ(same_bits(x1.Download(), x2.Download(), c.m, ld, c.k), 0) << "x after the add";
    EXPECT_EQ(same_bits(h1.Download(), h2.Download(), c.m, ld, c.k), 0) << "the norm's output";
    EXPECT_EQ(q1.Download(), q2.Download());
    EXPECT_EQ(same_bits(s1.Download(), s2.Download(), 1, 0, c.m * groups), 0) << "scales";
    // Through the runner: AddRmsNormRows + Run against RunAddRmsNormInt8.
    DeviceVector<float> y1(c.m * n), y3(c.m * n);
    y3.Poison();
    const TqCudaWeights tw = dw.View(hw);
    absl::Status st = (*runner)->Run(tw, h1.get(), TqActType::kF32, c.m, ld, y1.get(), nullptr, n, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    st = (*runner)->RunAddRmsNormInt8(tw, x3.get(), ld, a, ld, w, eps, c.m, h3.get(), ld, y3.get(), n, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    CUDA_ASSERT_OK(cudaDeviceSynchronize());
    const std::vector<float> b3 = y3.Download();
    ASSERT_EQ(CountNonFinite(b3), 0);
    EXPECT_EQ(same_bits(y1.Download(), b3, 1, 0, c.m * n), 0) << "RunAddRmsNormInt8 differs from the norm + Run";
  }
  // Refused: k not a multiple of 128, a misaligned row, not an int8 problem (TQ4).
  DeviceVector<float> buf(std::vector<float>(4096, 1.0f));
  DeviceVector<int8_t> q(4096);
  DeviceVector<float> sc(64);
  EXPECT_EQ(LaunchTqAddRmsNormRotateInt8(buf.get(), 200, nullptr, 0, nullptr, 1, 200, 1e-6f, buf.get() + 2048, 200, 0,
                                         q.get(), sc.get(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchTqAddRmsNormRotateInt8(buf.get() + 1, 256, nullptr, 0, nullptr, 1, 256, 1e-6f, buf.get() + 2048, 256,
                                         0, q.get(), sc.get(), nullptr),
            cudaErrorInvalidValue);
  const HostWeights h4 = RandomWeights(4, 64, 256, 0, 9800);
  DeviceWeights d4(h4);
  DeviceVector<float> y4(64);
  EXPECT_EQ((*runner)->RunAddRmsNormInt8(d4.View(h4), buf.get(), 256, nullptr, 0, nullptr, 1e-6f, 1, buf.get() + 2048,
                                         256, y4.get(), 64, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
TEST(TqCudaSupportTest, Reasons) {
  // Pure host logic: runs without a GPU too.
  EXPECT_EQ(TqCudaUnsupportedReason(3, 128, 0, 9, 0), nullptr);
  EXPECT_EQ(TqCudaUnsupportedReason(2, 128, 64, 8, 0), nullptr);
  EXPECT_NE(TqCudaUnsupportedReason(5, 128, 0, 9, 0), nullptr);
  EXPECT_NE(TqCudaUnsupportedReason(3, 64, 0, 9, 0), nullptr);
  EXPECT_NE(TqCudaUnsupportedReason(3, 128, 48, 9, 0), nullptr);
  EXPECT_NE(TqCudaUnsupportedReason(3, 128, 0, 7, 5), nullptr);
  EXPECT_EQ(SelectTqKernel(3, 128, 0, 1, 9, 0), TqKernel::kMmaFused);
  EXPECT_EQ(SelectTqKernel(3, 128, 0, 16, 9, 0), TqKernel::kMmaSeparate);
  EXPECT_EQ(SelectTqKernel(3, 128, 0, 17, 9, 0), TqKernel::kGemm);
  EXPECT_EQ(SelectTqKernel(4, 128, 0, 512, 8, 0), TqKernel::kDequantCublas);  // smem
  EXPECT_EQ(SelectTqKernel(3, 64, 0, 1, 9, 0), TqKernel::kUnsupported);
  EXPECT_EQ(SelectTqKernel(4, 128, 0, 256, 9, 0), TqKernel::kGemm);
  EXPECT_EQ(SelectTqKernel(3, 128, 0, 512, 9, 0), TqKernel::kDequantCublas);
  EXPECT_EQ(SelectTqKernel(4, 128, 0, 4096, 9, 0), TqKernel::kDequantCublas);
  // Plans always fit and never leave a split empty.
  for (int bits : {2, 3, 4}) {
    for (int64_t m : {1, 4, 8, 16, 64}) {
      for (int64_t k : {128, 4096, 14336, 28672}) {
        const TqMmaConfig c = PlanTqMma(m, 4096, k, bits, 132);
        EXPECT_LE(TqMmaSharedBytes(m, 4096, k, bits, c), 160u * 1024) << bits << " " << m << " " << k;
        EXPECT_GE(c.splits, 1);
        EXPECT_LE(c.splits, TqCudaGroups(k));
      }
    }
  }
}

}  // namespace
}  // namespace tq::cuda

#else  // !TQ_HAVE_CUDA

TEST(TqCudaTest, SkippedWithoutToolkit) {
  GTEST_SKIP() << "CUDA test skipped: " << tq::cuda::GpuUnavailableReason();
}

#endif  // TQ_HAVE_CUDA
