// Our signs and codebooks for every supported group size equal what torch 2.11 + scipy compute
// on the GPU machine (testdata/golden/plugin/constants.json, made by tools/plugin_reference.py),
// so G = 64 and 256 are compatible with the plugin's own code path as well, not only G = 128.
#include <string>

#include "gtest/gtest.h"
#include "kernels/quant/codebook.h"
#include "kernels/quant/rotation.h"
#include "nlohmann/json.hpp"
#include "tests/util/testdata.h"

namespace tq::quant {
namespace {

TEST(TorchConstantsTest, SignsAndCodebooksMatchTorch) {
  const auto c = nlohmann::json::parse(
      testing::ReadFileOrDie(testing::TestDataPath("testdata/golden/plugin/constants.json")));
  for (int group : {64, 128, 256}) {
    const RotationSigns& s = GetRotationSigns(group);
    std::string s1, s2;
    for (float v : s.signs1) s1 += v > 0 ? '+' : '-';
    for (float v : s.signs2) s2 += v > 0 ? '+' : '-';
    EXPECT_EQ(s1, c["signs"][std::to_string(group)][0].get<std::string>()) << group;
    EXPECT_EQ(s2, c["signs"][std::to_string(group)][1].get<std::string>()) << group;
    for (int bits : {2, 3, 4}) {
      const auto& ref = c["codebooks"][std::to_string(bits) + "/" + std::to_string(group)];
      const Codebook& cb = GetCodebook(bits, group);
      ASSERT_EQ(static_cast<int>(ref.size()), cb.size());
      for (int i = 0; i < cb.size(); ++i) {
        EXPECT_EQ(cb.centroids[i], ref[i].get<float>()) << bits << " bits, d=" << group << ", " << i;
      }
    }
  }
}

}  // namespace
}  // namespace tq::quant
