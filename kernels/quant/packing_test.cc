#include "kernels/quant/packing.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tq::quant {
namespace {

std::vector<uint8_t> Pack(const std::vector<uint8_t>& idx, int bits) {
  std::vector<uint8_t> out(PackedBytes(bits, idx.size()));
  PackIndices(idx.data(), idx.size(), bits, out.data());
  return out;
}

TEST(PackingTest, ThreeBitVectors) {
  EXPECT_EQ(Pack({0, 1, 2, 3, 4, 5, 6, 7}, 3), (std::vector<uint8_t>{0x88, 0xc6, 0xfa}));
  EXPECT_EQ(Pack({5, 3, 6, 1, 7, 2, 4, 0}, 3), (std::vector<uint8_t>{0x9d, 0x73, 0x11}));
}

TEST(PackingTest, TwoAndFourBitLayout) {
  // 2 bits: element k at bits 2*(k%4) of byte k/4.
  EXPECT_EQ(Pack({1, 2, 3, 0, 3, 3, 3, 3}, 2), (std::vector<uint8_t>{0x39, 0xff}));
  // 4 bits: even index low nibble, odd index high nibble.
  EXPECT_EQ(Pack({0x1, 0xa, 0xf, 0x0}, 4), (std::vector<uint8_t>{0xa1, 0x0f}));
}

TEST(PackingTest, GroupSizesMatchThePlugin) {
  EXPECT_EQ(PackedBytes(2, 128), 32);
  EXPECT_EQ(PackedBytes(3, 128), 48);
  EXPECT_EQ(PackedBytes(4, 128), 64);
}

TEST(PackingTest, RoundTripEveryWidth) {
  std::mt19937 gen(1);
  for (int bits : {2, 3, 4, 8}) {
    for (int n : {8, 16, 24, 64, 128, 256, 1000}) {
      if (!IsPackable(bits, n)) continue;
      std::vector<uint8_t> idx(n);
      for (auto& v : idx) v = gen() % (1u << bits);
      std::vector<uint8_t> packed = Pack(idx, bits);
      std::vector<uint8_t> back(n);
      UnpackIndices(packed.data(), n, bits, back.data());
      EXPECT_EQ(back, idx) << bits << " bits, n=" << n;
    }
  }
}

TEST(PackingTest, Packable) {
  EXPECT_TRUE(IsPackable(3, 128));
  EXPECT_FALSE(IsPackable(3, 12));
  EXPECT_FALSE(IsPackable(2, 6));
  EXPECT_FALSE(IsPackable(4, 3));
  EXPECT_FALSE(IsPackable(5, 8));
}

}  // namespace
}  // namespace tq::quant
