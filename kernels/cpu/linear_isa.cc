// The kernels of linear.h, one instruction set per build. Compiled twice (see BUILD.bazel):
// TQ_ISA_NS = avx2 with -mavx2 -mfma -mf16c, and TQ_ISA_NS = portable without ISA flags. Code
// under `#if TQ_LINEAR_AVX2` is the hand-vectorized path; everything else is shared (the blocking
// of the m > 1 path) or the portable fallback.
//
// Structure:
//   TqRotateInput   copy + zero-pad each activation row, then per group: ·D1, Walsh–Hadamard
//                   butterflies inside each block of B, ·D2/sqrt(B). AVX2 does the h = 1, 2, 4
//                   stages inside one register (permute + blend) and h >= 8 across registers.
//   TqLinear m == 1 (AVX2) TqGemv: streams kRows weight rows at once (sharing the x_rot loads);
//                   per group the codebook, scaled by the row's gain, sits in one register (two
//                   for 4 bits) and the codes index it with vpermps.
//   m > 1, and every m on the portable build: BlockedLinear. The activation rows are packed in
//                   blocks that fit half of L2; for each block, kNr weight rows at a time are
//                   decoded (TQ) or converted (BF16/F16; F32 is read in place), kKc columns at a
//                   time, into a float32 tile, and a kMr × kNr micro-kernel of dot products runs
//                   over the block's activation rows with the tile. The next tile's weights are
//                   prefetched meanwhile.
//
// Batch invariance (linear.h). Every output y[i, j] is summed in one canonical order that depends
// only on k (Kp for TQ) and the build, never on m, on row i's place in the batch, on the other
// rows or on the slice, so the GEMV and the blocked path give the same bits:
//   AVX2      one 8-lane accumulator A = 0; for each chunk c of 8 columns in increasing order,
//             A = fma(w_c, x_c, A), where w_c are the exact float32 weights (TQ: the gain-scaled
//             table entries codebook[idx] * gain of GroupTable; BF16/F16 widened exactly) and a
//             partial last chunk (dense, k % 8 != 0) has its missing lanes zero in both w and x;
//             then y = HorizontalSum(A) (halves, then pairs, then lanes).
//   portable  eight scalar lanes; column t goes to lane t mod 8, lane += x * w (product rounded,
//             then the sum: -ffp-contract=off); then y = ((lane 0 + lane 1) + lane 2) + ...
// The GEMVs keep several FMA chains in flight by streaming several rows, not by splitting a row
// over accumulators; the blocked path carries each (row, column) pair's accumulator from one
// kKc-column block to the next in memory (`carry`) instead of reducing it per block.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TQ_LINEAR_AVX2 1
#else
#define TQ_LINEAR_AVX2 0
#endif

#include "kernels/cpu/half.h"
#include "kernels/cpu/linear_isa.h"
#include "kernels/quant/rotation.h"

#ifndef TQ_ISA_NS
#error "TQ_ISA_NS must be defined by the build"
#endif

namespace tq::cpu::TQ_ISA_NS {
namespace {

// Blocking of the m > 1 path (BlockedLinear).
constexpr int kMr = 4;         // activation rows per micro-kernel call
constexpr int kNr = 3;         // weight rows per micro-kernel call (4 x 3 = 12 accumulators)
constexpr int64_t kKc = 1024;  // columns per block: a multiple of every group size (<= 1024)
constexpr int64_t kXPanelBytes = 256 << 10;  // packed activation rows per block: half an L2
// Row stride of the weight tile: one cache line more than kKc, so that its rows do not all fall
// into the same L1 set.
constexpr int64_t kTileStride = kKc + 16;

// Weight rows the m == 1 AVX2 GEMVs stream at once (they share each x_rot load).
constexpr int kGemvRows2Bit = 4;
constexpr int kGemvRows3Bit = 4;
constexpr int kGemvRows4Bit = 2;  // two codebook registers per row: fewer rows fit in 16 ymm
constexpr int kDenseGemvRows = 4;

[[noreturn]] void FatalBits(int bits) {
  std::fprintf(stderr, "tq::cpu: unsupported TQ bit width %d (expected 2, 3 or 4)\n", bits);
  std::abort();
}

// Hints that [p, p + bytes) is read soon (one prefetch per 64-byte line).
inline void PrefetchBytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o);
}

inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// ------------------------------------------------------------------------------------------------
// Rotation of one group, in place.

#if TQ_LINEAR_AVX2

// One butterfly stage inside each 8-float register: partner = v permuted; lanes in `upper_mask`
// take partner - v (= lower - upper), the others v + partner.
template <int kUpperMask>
inline __m256 ButterflyInRegister(__m256 v, __m256 partner) {
  return _mm256_blend_ps(_mm256_add_ps(v, partner), _mm256_sub_ps(partner, v), kUpperMask);
}

void RotateGroup(float* v, int group, int block, const float* s1, const float* s2, float inv_div) {
  if (block < 8) {  // tiny blocks (2, 4): scalar butterflies
    for (int i = 0; i < group; ++i) v[i] *= s1[i];
    for (int b = 0; b < group; b += block) quant::FwhtInPlace(v + b, block);
    for (int i = 0; i < group; ++i) v[i] = v[i] * inv_div * s2[i];
    return;
  }
  for (int i = 0; i < group; i += 8) {
    __m256 x = _mm256_mul_ps(_mm256_loadu_ps(v + i), _mm256_loadu_ps(s1 + i));
    x = ButterflyInRegister<0xAA>(x, _mm256_permute_ps(x, 0xB1));           // h = 1: [1,0,3,2]
    x = ButterflyInRegister<0xCC>(x, _mm256_permute_ps(x, 0x4E));           // h = 2: [2,3,0,1]
    x = ButterflyInRegister<0xF0>(x, _mm256_permute2f128_ps(x, x, 0x01));  // h = 4: swap halves
    _mm256_storeu_ps(v + i, x);
  }
  for (int h = 8; h < block; h *= 2) {
    for (int i = 0; i < group; i += 2 * h) {  // blocks are aligned to 2h, so this stays inside one
      for (int j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(v + j);
        const __m256 b = _mm256_loadu_ps(v + j + h);
        _mm256_storeu_ps(v + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(v + j + h, _mm256_sub_ps(a, b));
      }
    }
  }
  const __m256 scale = _mm256_set1_ps(inv_div);
  for (int i = 0; i < group; i += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(v + i), scale);
    _mm256_storeu_ps(v + i, _mm256_mul_ps(x, _mm256_loadu_ps(s2 + i)));
  }
}

#else  // portable

void RotateGroup(float* v, int group, int block, const float* s1, const float* s2, float inv_div) {
  for (int i = 0; i < group; ++i) v[i] *= s1[i];
  for (int b = 0; b < group; b += block) quant::FwhtInPlace(v + b, block);
  for (int i = 0; i < group; ++i) v[i] = v[i] * inv_div * s2[i];
}

#endif

// ------------------------------------------------------------------------------------------------
// Reductions and loads.

#if TQ_LINEAR_AVX2

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// maskload mask with the first `count` (0..8) lanes on.
inline __m256i TailMask(int64_t count) {
  static const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - count));
}

inline __m256 LoadBf16x8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline __m256 LoadF16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

#endif

// ------------------------------------------------------------------------------------------------
// TQ code decoding. A group's codebook scaled by its gain is the lookup table `table`:
// decoding writes table[idx_t] for t < G.

#if TQ_LINEAR_AVX2

// Per-lane shift counts that move code t of a little-endian word to the bottom of lane t.
inline __m256i Shifts(int first, int step) {
  return _mm256_setr_epi32(first, first + step, first + 2 * step, first + 3 * step,
                           first + 4 * step, first + 5 * step, first + 6 * step, first + 7 * step);
}

// vpermps uses the low 3 bits of each index lane, so a 3-bit code needs no masking, and a 2-bit
// code none either when the 4-entry table is repeated twice (bit 2 then does not matter).
inline __m256 Lookup(__m256 table, uint32_t word, __m256i shifts) {
  return _mm256_permutevar8x32_ps(table, _mm256_srlv_epi32(_mm256_set1_epi32(word), shifts));
}

// 4 bits: bits 0..2 pick an entry of each 8-entry half, bit 3 (moved to the sign bit, which
// blendv reads) picks the half.
inline __m256 Lookup4(__m256 lo, __m256 hi, uint32_t word, __m256i shifts) {
  const __m256i idx = _mm256_srlv_epi32(_mm256_set1_epi32(word), shifts);
  const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                          sel);
}

// The gain-scaled table registers of one group: `lo` (entries 0..7, or the 2-bit table twice)
// and, for 4 bits, `hi` (entries 8..15).
template <int kBits>
struct GroupTable {
  __m256 lo, hi;
  GroupTable(const float* codebook, float gain) {
    const __m256 g = _mm256_set1_ps(gain);
    if constexpr (kBits == 2) {
      const __m128 c = _mm_loadu_ps(codebook);
      lo = _mm256_mul_ps(_mm256_set_m128(c, c), g);
      hi = lo;
    } else {
      lo = _mm256_mul_ps(_mm256_loadu_ps(codebook), g);
      hi = kBits == 4 ? _mm256_mul_ps(_mm256_loadu_ps(codebook + 8), g) : lo;
    }
  }
};

// Decodes one group of G codes into out[0, G).
//   3 bits: chunk c (8 codes) is the 24-bit word at byte 3c; it is read as 4 bytes, except the
//           group's last chunk, read from byte 3c - 1 and shifted by 8 more, so that no read
//           goes past the group (the last group of a tensor ends its buffer).
//   2 bits: 16 codes per 4-byte word.   4 bits: 8 codes per 4-byte word.
template <int kBits>
void DecodeGroup(const uint8_t* src, int group, const GroupTable<kBits>& t, float* out) {
  if constexpr (kBits == 3) {
    const __m256i sh = Shifts(0, 3), sh_last = Shifts(8, 3);
    const int chunks = group / 8;
    for (int c = 0; c < chunks - 1; ++c) {
      _mm256_storeu_ps(out + 8 * c, Lookup(t.lo, LoadU32(src + 3 * c), sh));
    }
    const int c = chunks - 1;
    _mm256_storeu_ps(out + 8 * c, Lookup(t.lo, LoadU32(src + 3 * c - 1), sh_last));
  } else if constexpr (kBits == 2) {
    const __m256i sh_lo = Shifts(0, 2), sh_hi = Shifts(16, 2);
    for (int q = 0; q < group / 16; ++q) {
      const uint32_t w = LoadU32(src + 4 * q);
      _mm256_storeu_ps(out + 16 * q, Lookup(t.lo, w, sh_lo));
      _mm256_storeu_ps(out + 16 * q + 8, Lookup(t.lo, w, sh_hi));
    }
  } else {
    const __m256i sh = Shifts(0, 4);
    for (int c = 0; c < group / 8; ++c) {
      _mm256_storeu_ps(out + 8 * c, Lookup4(t.lo, t.hi, LoadU32(src + 4 * c), sh));
    }
  }
}

#else  // portable

template <int kBits>
struct GroupTable {
  float v[1 << kBits];
  GroupTable(const float* codebook, float gain) {
    for (int i = 0; i < (1 << kBits); ++i) v[i] = codebook[i] * gain;
  }
};

template <int kBits>
void DecodeGroup(const uint8_t* src, int group, const GroupTable<kBits>& t, float* out) {
  if constexpr (kBits == 3) {
    for (int c = 0; c < group / 8; ++c) {
      const uint32_t w = src[3 * c] | (src[3 * c + 1] << 8) | (src[3 * c + 2] << 16);
      for (int i = 0; i < 8; ++i) out[8 * c + i] = t.v[(w >> (3 * i)) & 7u];
    }
  } else if constexpr (kBits == 2) {
    for (int b = 0; b < group / 4; ++b) {
      const uint8_t w = src[b];
      for (int i = 0; i < 4; ++i) out[4 * b + i] = t.v[(w >> (2 * i)) & 3u];
    }
  } else {
    for (int b = 0; b < group / 2; ++b) {
      out[2 * b] = t.v[src[b] & 15u];
      out[2 * b + 1] = t.v[src[b] >> 4];
    }
  }
}

#endif

// ------------------------------------------------------------------------------------------------
// m == 1, AVX2: streaming GEMVs.

#if TQ_LINEAR_AVX2

// y[r] = row (j0 + r) · x_rot for r < kRows, in the canonical order (one accumulator per row,
// chunks in order; see the file comment); the kRows rows give the FMA chains to overlap. The gain
// is folded into the per-group table.
template <int kBits, int kRows>
void TqGemv(const TqLinearParams& p, const float* xr, int64_t j0, float* y) {
  const int G = p.group_size;
  const int64_t groups = TqGroups(p.k, G);
  const int64_t bpg = G * kBits / 8;
  const uint8_t* src[kRows];
  const float* gains[kRows];
  __m256 acc[kRows];
  for (int r = 0; r < kRows; ++r) {
    src[r] = p.packed + (j0 + r) * groups * bpg;
    gains[r] = p.gains + (j0 + r) * groups;
    acc[r] = _mm256_setzero_ps();
  }
  // The kRows rows are adjacent in memory, and so are the next kRows: prefetch that next block
  // spread over this block's groups (kRows * bpg bytes per group), since its rows are too short
  // (k * bits / 8 bytes) for the hardware prefetcher to ramp up on its own.
  const uint8_t* next_block = src[0] + kRows * groups * bpg;
  const uint8_t* packed_end = p.packed + p.n * groups * bpg;
  for (int64_t g = 0; g < groups; ++g) {
    if (next_block + (g + 1) * kRows * bpg <= packed_end) {
      PrefetchBytes(next_block + g * kRows * bpg, kRows * bpg);
    }
    const float* xg = xr + g * G;
    const uint8_t* s[kRows];
    __m256 lo[kRows], hi[kRows];
    for (int r = 0; r < kRows; ++r) {
      s[r] = src[r] + g * bpg;
      const GroupTable<kBits> t(p.codebook, gains[r][g]);
      lo[r] = t.lo;
      hi[r] = t.hi;
    }
    if constexpr (kBits == 3) {
      const __m256i sh = Shifts(0, 3);
      const int chunks = G / 8;
      int c = 0;
      for (; c < chunks - 2; c += 2) {
        const __m256 x0 = _mm256_loadu_ps(xg + 8 * c), x1 = _mm256_loadu_ps(xg + 8 * c + 8);
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
          acc[r] = _mm256_fmadd_ps(Lookup(lo[r], LoadU32(s[r] + 3 * c), sh), x0, acc[r]);
          acc[r] = _mm256_fmadd_ps(Lookup(lo[r], LoadU32(s[r] + 3 * c + 3), sh), x1, acc[r]);
        }
      }
      // The last two chunks; the very last is read from one byte earlier (see DecodeGroup).
      const __m256i sh_last = Shifts(8, 3);
      const __m256 x0 = _mm256_loadu_ps(xg + 8 * c), x1 = _mm256_loadu_ps(xg + 8 * c + 8);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        acc[r] = _mm256_fmadd_ps(Lookup(lo[r], LoadU32(s[r] + 3 * c), sh), x0, acc[r]);
        acc[r] = _mm256_fmadd_ps(Lookup(lo[r], LoadU32(s[r] + 3 * c + 2), sh_last), x1, acc[r]);
      }
    } else if constexpr (kBits == 2) {
      const __m256i sh_lo = Shifts(0, 2), sh_hi = Shifts(16, 2);
      for (int q = 0; q < G / 16; ++q) {
        const __m256 x0 = _mm256_loadu_ps(xg + 16 * q), x1 = _mm256_loadu_ps(xg + 16 * q + 8);
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
          const uint32_t w = LoadU32(s[r] + 4 * q);
          acc[r] = _mm256_fmadd_ps(Lookup(lo[r], w, sh_lo), x0, acc[r]);
          acc[r] = _mm256_fmadd_ps(Lookup(lo[r], w, sh_hi), x1, acc[r]);
        }
      }
    } else {
      const __m256i sh = Shifts(0, 4);
      for (int c = 0; c < G / 8; c += 2) {
        const __m256 x0 = _mm256_loadu_ps(xg + 8 * c), x1 = _mm256_loadu_ps(xg + 8 * c + 8);
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
          acc[r] = _mm256_fmadd_ps(Lookup4(lo[r], hi[r], LoadU32(s[r] + 4 * c), sh), x0, acc[r]);
          acc[r] =
              _mm256_fmadd_ps(Lookup4(lo[r], hi[r], LoadU32(s[r] + 4 * c + 4), sh), x1, acc[r]);
        }
      }
    }
  }
  for (int r = 0; r < kRows; ++r) y[r] = HorizontalSum(acc[r]);
}

template <int kBits, int kRows>
void TqGemvSlice(const TqLinearParams& p, const float* xr, float* y, int64_t n_begin,
                 int64_t n_end) {
  int64_t j = n_begin;
  for (; j + kRows <= n_end; j += kRows) TqGemv<kBits, kRows>(p, xr, j, y + j);
  for (; j < n_end; ++j) TqGemv<kBits, 1>(p, xr, j, y + j);
}

// Dense GEMV over kRows rows of W: y[r] = W[j0 + r] · x, in the canonical order.
template <class T, int kRows, __m256 (*Load8)(const T*), float (*ToFloat)(T)>
void DenseGemv(const T* w, int64_t k, const float* x, int64_t j0, float* y) {
  const T* row[kRows];
  __m256 acc[kRows];
  for (int r = 0; r < kRows; ++r) {
    row[r] = w + (j0 + r) * k;
    acc[r] = _mm256_setzero_ps();
  }
  int64_t t = 0;
  for (; t + 8 <= k; t += 8) {
    const __m256 xv = _mm256_loadu_ps(x + t);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) acc[r] = _mm256_fmadd_ps(Load8(row[r] + t), xv, acc[r]);
  }
  if (t < k) {  // the partial last chunk, zero-padded (as the m > 1 path's masked loads do)
    const int64_t rem = k - t;
    const __m256 xv = _mm256_maskload_ps(x + t, TailMask(rem));
    for (int r = 0; r < kRows; ++r) {
      alignas(32) float wt[8] = {};
      for (int64_t u = 0; u < rem; ++u) wt[u] = ToFloat(row[r][t + u]);
      acc[r] = _mm256_fmadd_ps(_mm256_load_ps(wt), xv, acc[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) y[r] = HorizontalSum(acc[r]);
}

inline __m256 LoadF32x8(const float* p) { return _mm256_loadu_ps(p); }
inline float F32ToFloat(float v) { return v; }

template <class T, __m256 (*Load8)(const T*), float (*ToFloat)(T)>
void DenseGemvSlice(const T* w, int64_t k, const float* x, float* y, int64_t n_begin,
                    int64_t n_end) {
  int64_t j = n_begin;
  for (; j + kDenseGemvRows <= n_end; j += kDenseGemvRows) {
    DenseGemv<T, kDenseGemvRows, Load8, ToFloat>(w, k, x, j, y + j);
  }
  for (; j < n_end; ++j) DenseGemv<T, 1, Load8, ToFloat>(w, k, x, j, y + j);
}

#endif  // TQ_LINEAR_AVX2

// ------------------------------------------------------------------------------------------------
// m > 1 (all m on the portable build): tile sources and the blocked driver.

// A weight source hands BlockedLinear float32 rows: Row(j, k0, len, buf) returns a pointer to
// W[j, k0 .. k0 + len), either into W itself or decoded/converted into buf (kKc floats).

template <int kBits>
struct TqRows {
  const TqLinearParams& p;
  int64_t groups;
  int64_t bytes_per_group;

  explicit TqRows(const TqLinearParams& params)
      : p(params),
        groups(TqGroups(params.k, params.group_size)),
        bytes_per_group(params.group_size * kBits / 8) {}

  // k0 and len are multiples of the group size.
  const float* Row(int64_t j, int64_t k0, int64_t len, float* buf) const {
    const int G = p.group_size;
    for (int64_t g = k0 / G, end = (k0 + len) / G; g < end; ++g) {
      const int64_t at = j * groups + g;
      DecodeGroup<kBits>(p.packed + at * bytes_per_group, G,
                         GroupTable<kBits>(p.codebook, p.gains[at]), buf + (g * G - k0));
    }
    return buf;
  }

  void Prefetch(int64_t j, int64_t k0, int64_t len) const {
    const int G = p.group_size;
    PrefetchBytes(p.packed + (j * groups + k0 / G) * bytes_per_group, len / G * bytes_per_group);
    PrefetchBytes(p.gains + j * groups + k0 / G, len / G * int64_t{sizeof(float)});
  }
};

struct F32Rows {
  const float* w;
  int64_t k;
  const float* Row(int64_t j, int64_t k0, int64_t, float*) const { return w + j * k + k0; }
  void Prefetch(int64_t j, int64_t k0, int64_t len) const {
    PrefetchBytes(w + j * k + k0, len * int64_t{sizeof(float)});
  }
};

struct Bf16Rows {
  const uint16_t* w;
  int64_t k;
  const float* Row(int64_t j, int64_t k0, int64_t len, float* buf) const {
    const uint16_t* src = w + j * k + k0;
    int64_t t = 0;
#if TQ_LINEAR_AVX2
    for (; t + 8 <= len; t += 8) _mm256_storeu_ps(buf + t, LoadBf16x8(src + t));
#endif
    for (; t < len; ++t) buf[t] = Bf16ToFloat(src[t]);
    return buf;
  }
  void Prefetch(int64_t j, int64_t k0, int64_t len) const {
    PrefetchBytes(w + j * k + k0, len * int64_t{sizeof(uint16_t)});
  }
};

struct F16Rows {
  const uint16_t* w;
  int64_t k;
  const float* Row(int64_t j, int64_t k0, int64_t len, float* buf) const {
    const uint16_t* src = w + j * k + k0;
    int64_t t = 0;
#if TQ_LINEAR_AVX2
    for (; t + 8 <= len; t += 8) _mm256_storeu_ps(buf + t, LoadF16x8(src + t));
#endif
    for (; t < len; ++t) buf[t] = HalfToFloat(src[t]);
    return buf;
  }
  void Prefetch(int64_t j, int64_t k0, int64_t len) const {
    PrefetchBytes(w + j * k + k0, len * int64_t{sizeof(uint16_t)});
  }
};

// Row stride of the packed activation panel: `width` rounded up to 8 plus one cache line, so
// that rows a power of two apart do not share L1 sets.
inline int64_t XPanelStride(int64_t width) { return (width + 7) / 8 * 8 + 16; }

// Activation rows per panel: as many as fit kXPanelBytes, a multiple of kMr, and at least 2·kMr
// even when that overflows L2 (k > 8 Ki): a second pass over the weights (decode included)
// costs more than reading the panel from L3.
inline int64_t XPanelRows(int64_t width) {
  const int64_t rows = kXPanelBytes / (XPanelStride(width) * int64_t{sizeof(float)});
  return std::max<int64_t>(2 * kMr, rows / kMr * kMr);
}

// The packed activation panel of BlockedLinear, per thread, grown on demand. On the heap: a
// large thread_local array would enlarge every thread's static TLS block (see kernels/quant).
float* ThreadXPanel(int64_t floats) {
  thread_local std::unique_ptr<float[]> panel;
  thread_local int64_t size = 0;
  if (size < floats) {
    panel.reset(new float[floats]);
    size = floats;
  }
  return panel.get();
}

// Floats of the accumulator carry of one (activation row, weight row) pair: its 8 lanes.
constexpr int64_t kCarryFloats = 8;

// The canonical reduction (file comment) of y[i*ldy + r] = x[i] · w[r] over columns
// [k0, k0 + len) of one column block, for i < MR, r < NR; k0 is a multiple of kKc, so chunks and
// lanes are the row's own. `first`: the accumulators start at zero, else they are read from
// `carry` ([MR][NR][kCarryFloats]); `last`: they are reduced into y, else written to `carry`.
template <int MR, int NR>
void MicroKernel(const float* const* w, const float* x, int64_t ldx, int64_t len, float* carry,
                 bool first, bool last, float* y, int64_t ldy) {
#if TQ_LINEAR_AVX2
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      acc[i][r] =
          first ? _mm256_setzero_ps() : _mm256_loadu_ps(carry + (i * NR + r) * kCarryFloats);
    }
  }
  int64_t t = 0;
  for (; t + 8 <= len; t += 8) {
    __m256 wv[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) wv[r] = _mm256_loadu_ps(w[r] + t);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * ldx + t);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  if (t < len) {  // dense weights only: the partial last chunk, zero-padded
    const __m256i mask = TailMask(len - t);
    __m256 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = _mm256_maskload_ps(w[r] + t, mask);
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_maskload_ps(x + i * ldx + t, mask);
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      if (last) {
        y[i * ldy + r] = HorizontalSum(acc[i][r]);
      } else {
        _mm256_storeu_ps(carry + (i * NR + r) * kCarryFloats, acc[i][r]);
      }
    }
  }
#else
  // Eight lanes per (i, r): column t goes to lane t mod 8 (the compiler vectorizes this without
  // reassociating); the lanes are summed in order at the end.
  constexpr int L = 8;
  float acc[MR][NR][L];
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      for (int l = 0; l < L; ++l) {
        acc[i][r][l] = first ? 0.0f : carry[(i * NR + r) * kCarryFloats + l];
      }
    }
  }
  int64_t t = 0;
  for (; t + L <= len; t += L) {
    for (int i = 0; i < MR; ++i) {
      const float* xi = x + i * ldx + t;
      for (int r = 0; r < NR; ++r) {
        const float* wr = w[r] + t;
        for (int l = 0; l < L; ++l) acc[i][r][l] += xi[l] * wr[l];
      }
    }
  }
  for (int64_t u = t; u < len; ++u) {  // dense weights only: the partial last chunk
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) acc[i][r][u - t] += x[i * ldx + u] * w[r][u];
  }
  for (int i = 0; i < MR; ++i) {
    for (int r = 0; r < NR; ++r) {
      if (!last) {
        for (int l = 0; l < L; ++l) carry[(i * NR + r) * kCarryFloats + l] = acc[i][r][l];
      } else {
        float s = 0.0f;
        for (int l = 0; l < L; ++l) s += acc[i][r][l];
        y[i * ldy + r] = s;
      }
    }
  }
#endif
}

using MicroKernelFn = void (*)(const float* const*, const float*, int64_t, int64_t, float*, bool,
                               bool, float*, int64_t);

// kMicroKernels[mr - 1][nr - 1] = MicroKernel<mr, nr>.
constexpr MicroKernelFn kMicroKernels[kMr][kNr] = {
    {MicroKernel<1, 1>, MicroKernel<1, 2>, MicroKernel<1, 3>},
    {MicroKernel<2, 1>, MicroKernel<2, 2>, MicroKernel<2, 3>},
    {MicroKernel<3, 1>, MicroKernel<3, 2>, MicroKernel<3, 3>},
    {MicroKernel<4, 1>, MicroKernel<4, 2>, MicroKernel<4, 3>},
};

// y[i, j] = Σ_{t < width} x[i, t] · W[j, t] for i < m, n_begin <= j < n_end, where W's rows
// come from `rows` (see TqRows) and x has row stride ldx.
// Loop order: blocks of activation rows (as many as fit kXPanelBytes), then kNr weight rows,
// then kKc columns. Each weight row is read front to back in one pass per activation block, so
// the weights stream from memory contiguously (a column-block-outer order touches each row in
// short bursts and runs at DRAM latency, not bandwidth); the packed activations stay in L2 and
// the tile in L1.
template <class Rows>
void BlockedLinear(const Rows& rows, int64_t width, const float* x, int64_t ldx, int64_t m,
                   float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  if (width == 0) {  // empty dot products
    for (int64_t i = 0; i < m; ++i) std::fill(y + i * ldy + n_begin, y + i * ldy + n_end, 0.0f);
    return;
  }
  alignas(64) float tile[kNr][kTileStride];
  const int64_t stride = XPanelStride(width);
  const int64_t mc = XPanelRows(width);
  // Past the panel: the accumulators each (row, weight row) pair carries from one column block
  // to the next, [mc][kNr][kCarryFloats] (only touched when width > kKc).
  const int64_t carry_floats = width > kKc ? mc * kNr * kCarryFloats : 0;
  float* xpack = ThreadXPanel(mc * stride + carry_floats);
  float* carry = carry_floats > 0 ? xpack + mc * stride : nullptr;
  for (int64_t i0 = 0; i0 < m; i0 += mc) {
    const int64_t i_end = std::min(m, i0 + mc);
    for (int64_t i = i0; i < i_end; ++i) {
      std::memcpy(xpack + (i - i0) * stride, x + i * ldx, width * sizeof(float));
    }
    for (int64_t j = n_begin; j < n_end; j += kNr) {
      const int nr = static_cast<int>(std::min<int64_t>(kNr, n_end - j));
      for (int64_t k0 = 0; k0 < width; k0 += kKc) {
        const int64_t len = std::min(kKc, width - k0);
        const float* w[kNr];
        for (int r = 0; r < nr; ++r) w[r] = rows.Row(j + r, k0, len, tile[r]);
        // Ask for the next block's weights now: the micro-kernels below hide the DRAM latency.
        if (k0 + kKc < width) {
          const int64_t next_len = std::min(kKc, width - k0 - kKc);
          for (int r = 0; r < nr; ++r) rows.Prefetch(j + r, k0 + kKc, next_len);
        } else {
          const int64_t next_len = std::min(kKc, width);
          for (int64_t r = j + kNr; r < std::min(n_end, j + 2 * kNr); ++r) {
            rows.Prefetch(r, 0, next_len);
          }
        }
        const bool first = k0 == 0, last = k0 + len == width;
        for (int64_t i = i0; i < i_end; i += kMr) {
          const int mr = static_cast<int>(std::min<int64_t>(kMr, i_end - i));
          kMicroKernels[mr - 1][nr - 1](w, xpack + (i - i0) * stride + k0, stride, len,
                                        carry ? carry + (i - i0) * kNr * kCarryFloats : nullptr,
                                        first, last, y + i * ldy + j, ldy);
        }
      }
    }
  }
}

template <int kBits>
void TqLinearBits(const TqLinearParams& p, const float* x_rot, int64_t m, float* y, int64_t ldy,
                  int64_t n_begin, int64_t n_end) {
  const int64_t kp = TqPaddedK(p.k, p.group_size);
#if TQ_LINEAR_AVX2
  if (m == 1) {
    constexpr int kRows = kBits == 2 ? kGemvRows2Bit : kBits == 3 ? kGemvRows3Bit : kGemvRows4Bit;
    TqGemvSlice<kBits, kRows>(p, x_rot, y, n_begin, n_end);
    return;
  }
#endif
  BlockedLinear(TqRows<kBits>(p), kp, x_rot, kp, m, y, ldy, n_begin, n_end);
}

}  // namespace

void TqRotateInput(const float* x, int64_t m, int64_t k, int64_t ldx, int group_size,
                   int rotation_block, float* x_rot) {
  const int G = group_size;
  const int B = rotation_block == 0 ? G : rotation_block;
  const quant::RotationSigns& signs = quant::GetRotationSigns(G);
  const float inv_div = 1.0f / quant::RotationDivisor(B);
  const int64_t kp = TqPaddedK(k, G);
  for (int64_t i = 0; i < m; ++i) {
    float* out = x_rot + i * kp;
    std::memcpy(out, x + i * ldx, k * sizeof(float));
    std::fill(out + k, out + kp, 0.0f);
    for (int64_t g = 0; g < kp; g += G) {
      RotateGroup(out + g, G, B, signs.signs1.data(), signs.signs2.data(), inv_div);
    }
  }
}

void TqLinear(const TqLinearParams& p, const float* x_rot, int64_t m, float* y, int64_t ldy,
              int64_t n_begin, int64_t n_end) {
  if (m <= 0 || n_begin >= n_end) return;
  switch (p.bits) {
    case 2:
      return TqLinearBits<2>(p, x_rot, m, y, ldy, n_begin, n_end);
    case 3:
      return TqLinearBits<3>(p, x_rot, m, y, ldy, n_begin, n_end);
    case 4:
      return TqLinearBits<4>(p, x_rot, m, y, ldy, n_begin, n_end);
    default:
      FatalBits(p.bits);
  }
}

void DenseLinear(WeightType type, const void* w, int64_t n, int64_t k, const float* x, int64_t m,
                 int64_t ldx, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  (void)n;  // rows are addressed by index; only [n_begin, n_end) is read
  if (m <= 0 || n_begin >= n_end) return;
  switch (type) {
    case WeightType::kF32: {
      const auto* wf = static_cast<const float*>(w);
#if TQ_LINEAR_AVX2
      if (m == 1) return DenseGemvSlice<float, LoadF32x8, F32ToFloat>(wf, k, x, y, n_begin, n_end);
#endif
      return BlockedLinear(F32Rows{wf, k}, k, x, ldx, m, y, ldy, n_begin, n_end);
    }
    case WeightType::kBF16: {
      const auto* wb = static_cast<const uint16_t*>(w);
#if TQ_LINEAR_AVX2
      if (m == 1) {
        return DenseGemvSlice<uint16_t, LoadBf16x8, Bf16ToFloat>(wb, k, x, y, n_begin, n_end);
      }
#endif
      return BlockedLinear(Bf16Rows{wb, k}, k, x, ldx, m, y, ldy, n_begin, n_end);
    }
    case WeightType::kF16: {
      const auto* wh = static_cast<const uint16_t*>(w);
#if TQ_LINEAR_AVX2
      if (m == 1) {
        return DenseGemvSlice<uint16_t, LoadF16x8, HalfToFloat>(wh, k, x, y, n_begin, n_end);
      }
#endif
      return BlockedLinear(F16Rows{wh, k}, k, x, ldx, m, y, ldy, n_begin, n_end);
    }
  }
}

}  // namespace tq::cpu::TQ_ISA_NS
