// Replays every seed of the fuzz corpora through the fuzz targets with the regular toolchain,
// plus deterministic mutations of each seed (truncations and byte flips), so that the targets'
// invariants are checked on every test run even where clang's libFuzzer is not used.
#include <dirent.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/util/testdata.h"

extern "C" int SafetensorsFuzz(const uint8_t* data, size_t size);
extern "C" int ManifestFuzz(const uint8_t* data, size_t size);
extern "C" int TokenizerFuzz(const uint8_t* data, size_t size);
extern "C" int ModelConfigFuzz(const uint8_t* data, size_t size);

namespace {

std::vector<std::string> Seeds(const std::string& dir) {
  std::vector<std::string> out;
  const std::string path = tq::testing::TestDataPath(dir);
  DIR* d = opendir(path.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    out.push_back(tq::testing::ReadFileOrDie(path + "/" + e->d_name));
  }
  closedir(d);
  return out;
}

void Replay(const std::string& dir, int (*target)(const uint8_t*, size_t)) {
  const std::vector<std::string> seeds = Seeds(dir);
  ASSERT_FALSE(seeds.empty()) << dir;
  std::mt19937 gen(5);
  for (const std::string& s : seeds) {
    target(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    for (int i = 0; i < 500; ++i) {
      std::string m = s.substr(0, gen() % (s.size() + 1));
      if (!m.empty() && (gen() & 1)) m[gen() % m.size()] ^= static_cast<char>(1 + gen() % 255);
      target(reinterpret_cast<const uint8_t*>(m.data()), m.size());
    }
  }
}

TEST(FuzzReplayTest, Safetensors) { Replay("tests/fuzz/corpus/safetensors", SafetensorsFuzz); }
TEST(FuzzReplayTest, Manifest) { Replay("tests/fuzz/corpus/manifest", ManifestFuzz); }
TEST(FuzzReplayTest, Tokenizer) { Replay("tests/fuzz/corpus/tokenizer", TokenizerFuzz); }
TEST(FuzzReplayTest, ModelConfig) { Replay("tests/fuzz/corpus/model_config", ModelConfigFuzz); }

}  // namespace
