#include "engine/kv_cache/paged_kv_cache.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tq {
namespace {

std::unique_ptr<PagedKvCache> Make(const char* codec, int64_t blocks, int block_size = 4) {
  KvCacheOptions o;
  o.num_layers = 2;
  o.num_kv_heads = 3;
  o.head_dim = 6;
  o.block_size = block_size;
  o.num_blocks = blocks;
  auto c = MakeKvCodec(codec);
  EXPECT_TRUE(c.ok());
  auto cache = PagedKvCache::Create(o, std::move(*c));
  EXPECT_TRUE(cache.ok()) << cache.status();
  return std::move(*cache);
}

TEST(KvCodecTest, UnknownCodecIsAClearError) {
  auto c = MakeKvCodec("int3");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("bf16, fp32"), std::string::npos);
}

TEST(PagedKvCacheTest, ReserveIsAllOrNothingAndFreeReturnsBlocks) {
  auto cache = Make("fp32", 5);
  EXPECT_EQ(cache->num_free_blocks(), 5);
  SeqHandle a = cache->AddSequence(), b = cache->AddSequence();
  EXPECT_TRUE(cache->Reserve(a, 9));  // 3 blocks
  EXPECT_EQ(cache->Capacity(a), 12);
  EXPECT_EQ(cache->num_free_blocks(), 2);
  EXPECT_FALSE(cache->Reserve(b, 13));  // needs 4
  EXPECT_EQ(cache->num_free_blocks(), 2);
  EXPECT_EQ(cache->Capacity(b), 0);
  EXPECT_TRUE(cache->Reserve(b, 8));
  EXPECT_EQ(cache->num_free_blocks(), 0);
  EXPECT_TRUE(cache->Reserve(a, 12));  // already has room
  cache->FreeSequence(a);
  EXPECT_EQ(cache->num_free_blocks(), 3);
  EXPECT_EQ(cache->num_sequences(), 1);
  cache->FreeSequence(a);  // twice: no effect
  EXPECT_EQ(cache->num_free_blocks(), 3);
  EXPECT_FALSE(cache->Reserve(12345, 1));
}

TEST(PagedKvCacheTest, WriteGatherRoundTripAcrossBlocks) {
  for (const char* codec : {"fp32", "bf16"}) {
    auto cache = Make(codec, 8);
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    const int width = 3 * 6;
    SeqHandle a = cache->AddSequence(), b = cache->AddSequence();
    ASSERT_TRUE(cache->Reserve(a, 11));
    ASSERT_TRUE(cache->Reserve(b, 5));
    std::vector<std::vector<float>> ka(11, std::vector<float>(width)), va = ka;
    for (int p = 0; p < 11; ++p) {
      for (int i = 0; i < width; ++i) {
        ka[p][i] = nd(rng);
        va[p][i] = nd(rng);
      }
      cache->Write(a, 1, p, ka[p].data(), va[p].data());
    }
    std::vector<float> junk(width, 99.0f);
    for (int p = 0; p < 5; ++p) cache->Write(b, 1, p, junk.data(), junk.data());
    const bool exact = std::string(codec) == "fp32";
    for (int h = 0; h < 3; ++h) {
      std::vector<float> k(8 * 6), v(8 * 6);
      cache->Gather(a, 1, h, 3, 11, k.data(), v.data());
      for (int p = 3; p < 11; ++p) {
        for (int i = 0; i < 6; ++i) {
          const float want_k = ka[p][h * 6 + i], want_v = va[p][h * 6 + i];
          const float got_k = k[(p - 3) * 6 + i], got_v = v[(p - 3) * 6 + i];
          if (exact) {
            EXPECT_EQ(got_k, want_k);
            EXPECT_EQ(got_v, want_v);
          } else {
            EXPECT_NEAR(got_k, want_k, std::fabs(want_k) / 128);
            EXPECT_NEAR(got_v, want_v, std::fabs(want_v) / 128);
          }
        }
      }
    }
    EXPECT_EQ(cache->bytes_per_token(), 2 * 2 * 3 * (exact ? 24 : 12));
  }
}

std::unique_ptr<PagedKvCache> MakeFormat(const std::string& spec, int64_t blocks, int layers = 3) {
  KvCacheOptions o;
  o.num_layers = layers;
  o.num_kv_heads = 2;
  o.head_dim = 64;
  o.block_size = 4;
  o.num_blocks = blocks;
  auto f = MakeKvCacheFormat(spec, layers, 64);
  EXPECT_TRUE(f.ok()) << f.status();
  auto cache = PagedKvCache::Create(o, *std::move(f));
  EXPECT_TRUE(cache.ok()) << cache.status();
  return std::move(*cache);
}

// Sink positions are per sequence: every sequence's first N positions come back as bf16, not
// only the first sequence the cache ever saw (the plugin's per-layer counter, ALGORITHMS.md §4.2).
TEST(PagedKvCacheTest, SinkPositionsArePerSequence) {
  auto cache = MakeFormat("turbo3:sink=3,boundary=0", 16);
  EXPECT_EQ(cache->sink_bytes_per_sequence(), 2 * 3 * 3 * 2 * 128);
  EXPECT_EQ(cache->bytes_per_token(), 2 * 3 * (28 + 28));
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int width = 2 * 64;
  for (int round = 0; round < 2; ++round) {
    SeqHandle a = cache->AddSequence(), b = cache->AddSequence();
    for (SeqHandle s : {a, b}) {
      ASSERT_TRUE(cache->Reserve(s, 10));
      std::vector<std::vector<float>> k(10, std::vector<float>(width)), v = k;
      for (int p = 0; p < 10; ++p) {
        for (int i = 0; i < width; ++i) {
          k[p][i] = nd(rng);
          v[p][i] = nd(rng);
        }
        for (int l = 0; l < 3; ++l) cache->Write(s, l, p, k[p].data(), v[p].data());
      }
      for (int l = 0; l < 3; ++l) {
        for (int h = 0; h < 2; ++h) {
          std::vector<float> kg(10 * 64), vg(10 * 64);
          cache->Gather(s, l, h, 0, 10, kg.data(), vg.data());
          for (int p = 0; p < 10; ++p) {
            double err = 0, norm = 0;
            for (int i = 0; i < 64; ++i) {
              const float want = k[p][h * 64 + i];
              if (p < 3) {
                ASSERT_NEAR(kg[p * 64 + i], want, std::fabs(want) / 128) << "sink " << p;
              }
              err += (kg[p * 64 + i] - want) * (kg[p * 64 + i] - want);
              norm += want * want;
            }
            if (p >= 3) {
              EXPECT_GT(err / norm, 1e-3) << "position " << p << " should be 3-bit";
            }
          }
        }
      }
    }
    cache->FreeSequence(a);
    cache->FreeSequence(b);
  }
  EXPECT_EQ(cache->num_free_blocks(), 16);
}

// GatherAttention rows, used with PrepareQuery and FinishValue, give what Gather's fp32 rows give.
TEST(PagedKvCacheTest, GatherAttentionMatchesGather) {
  for (const char* spec : {"bf16", "fp8", "k8v4", "4bit_nc", "turbo3:sink=2", "turbo4:qjl=1,boundary=1,sink=1"}) {
    auto cache = MakeFormat(spec, 8);
    std::mt19937 rng(9);
    std::normal_distribution<float> nd;
    SeqHandle s = cache->AddSequence();
    ASSERT_TRUE(cache->Reserve(s, 7));
    for (int p = 0; p < 7; ++p) {
      std::vector<float> k(128), v(128);
      for (int i = 0; i < 128; ++i) {
        k[i] = nd(rng);
        v[i] = nd(rng);
      }
      for (int l = 0; l < 3; ++l) cache->Write(s, l, p, k.data(), v.data());
    }
    for (int l = 0; l < 3; ++l) {
      const KvCodec& kc = cache->key_codec(l);
      const KvCodec& vc = cache->value_codec(l);
      const int kd = kc.AttentionDim(64);
      std::vector<float> kg(7 * 64), vg(7 * 64), ka(7 * kd), va(7 * 64), q(64), qa(kd), acc(64, 0.0f),
          want(64, 0.0f), got(64);
      cache->Gather(s, l, 1, 0, 7, kg.data(), vg.data());
      cache->GatherAttention(s, l, 1, 0, 7, ka.data(), va.data());
      for (float& x : q) x = nd(rng);
      kc.PrepareQuery(q.data(), 64, qa.data());
      for (int p = 0; p < 7; ++p) {
        double a = 0, b = 0;
        for (int i = 0; i < kd; ++i) a += static_cast<double>(qa[i]) * ka[p * kd + i];
        for (int i = 0; i < 64; ++i) b += static_cast<double>(q[i]) * kg[p * 64 + i];
        EXPECT_NEAR(a, b, 1e-3) << spec << " layer " << l << " position " << p;
        const float w = 0.1f * (p + 1);
        for (int i = 0; i < 64; ++i) {
          acc[i] += w * va[p * 64 + i];
          want[i] += w * vg[p * 64 + i];
        }
      }
      vc.FinishValue(acc.data(), 64, got.data());
      for (int i = 0; i < 64; ++i) EXPECT_NEAR(got[i], want[i], 1e-4) << spec << " layer " << l;
    }
  }
}

// Keys and values of different widths (an MLA latent: k_pe 32 in bf16, c 128 in 3-bit
// PolarQuant, two sink positions per sequence): bytes, round trip, sinks, attention space.
TEST(PagedKvCacheTest, KeysAndValuesOfDifferentWidths) {
  auto f = MakeMlaKvCacheFormat("turbo3:sink=2", 2, 128, 32);
  ASSERT_TRUE(f.ok()) << f.status();
  KvCacheOptions o{2, 1, 32, 4, 6, true, 128};
  auto made = PagedKvCache::Create(o, *f);
  ASSERT_TRUE(made.ok()) << made.status();
  PagedKvCache& cache = **made;
  EXPECT_EQ(cache.bytes_per_token(), 2 * (2 * 32 + 128 * 3 / 8 + 4));
  EXPECT_EQ(cache.sink_bytes_per_sequence(), 2 * 2 * (2 * 32 + 2 * 128));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  const int n = 9;
  std::vector<float> k(n * 32), v(n * 128);
  for (float& x : k) x = nd(rng);
  for (float& x : v) x = nd(rng);
  SeqHandle other = cache.AddSequence(), s = cache.AddSequence();
  ASSERT_TRUE(cache.Reserve(other, 3));
  ASSERT_TRUE(cache.Reserve(s, n));
  for (int p = 0; p < n; ++p) {
    for (int l = 0; l < 2; ++l) {
      cache.Write(s, l, p, &k[p * 32], &v[p * 128]);
      if (p < 3) cache.Write(other, l, p, &v[p * 128], &k[p * 32]);  // anything: must not touch s
    }
  }
  for (int l = 0; l < 2; ++l) {
    std::vector<float> kg(n * 32), vg(n * 128), ka(n * 32), va(n * 128);
    cache.Gather(s, l, 0, 0, n, kg.data(), vg.data());
    cache.GatherAttention(s, l, 0, 0, n, ka.data(), va.data());
    for (int p = 0; p < n; ++p) {
      for (int i = 0; i < 32; ++i) {  // k_pe: bf16 everywhere
        ASSERT_NEAR(kg[p * 32 + i], k[p * 32 + i], std::fabs(k[p * 32 + i]) / 128) << p;
        ASSERT_EQ(ka[p * 32 + i], kg[p * 32 + i]) << p;
      }
      double err = 0, norm = 0;
      for (int i = 0; i < 128; ++i) {
        err += (vg[p * 128 + i] - v[p * 128 + i]) * (vg[p * 128 + i] - v[p * 128 + i]);
        norm += v[p * 128 + i] * v[p * 128 + i];
      }
      if (p < 2) {
        EXPECT_LT(err / norm, 1e-4) << "sink " << p;
      } else {
        EXPECT_GT(err / norm, 1e-3) << "position " << p << " should be 3-bit";
        EXPECT_LT(err / norm, 0.1) << "position " << p;
      }
    }
    // The latent's weighted sum through the attention space equals the decoded one.
    std::vector<float> acc(128, 0.0f), want(128, 0.0f), got(128);
    for (int p = 0; p < n; ++p) {
      for (int i = 0; i < 128; ++i) {
        acc[i] += 0.1f * (p + 1) * va[p * 128 + i];
        want[i] += 0.1f * (p + 1) * vg[p * 128 + i];
      }
    }
    cache.value_codec(l).FinishValue(acc.data(), 128, got.data());
    for (int i = 0; i < 128; ++i) EXPECT_NEAR(got[i], want[i], 1e-4);
  }
  // A format for other widths is refused.
  KvCacheOptions wrong = o;
  wrong.value_head_dim = 64;
  EXPECT_EQ(PagedKvCache::Create(wrong, *f).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagedKvCacheTest, RejectsBadShapes) {
  KvCacheOptions o;
  auto c = MakeKvCodec("bf16");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(PagedKvCache::Create(o, std::move(*c)).ok());
  EXPECT_FALSE(PagedKvCache::Create(o, nullptr).ok());
}

}  // namespace
}  // namespace tq
