#include "engine/kv_cache/paged_kv_cache.h"

#include <cmath>
#include <random>
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

TEST(PagedKvCacheTest, RejectsBadShapes) {
  KvCacheOptions o;
  auto c = MakeKvCodec("bf16");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(PagedKvCache::Create(o, std::move(*c)).ok());
  EXPECT_FALSE(PagedKvCache::Create(o, nullptr).ok());
}

}  // namespace
}  // namespace tq
