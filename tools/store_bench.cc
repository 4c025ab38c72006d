// store_bench: upload and download throughput of an object store (docs/BENCHMARKS.md).
//   store_bench URI [MIB] [REPEATS]
// Writes a MIB-MiB object with the sequential writer (multipart on S3), then with the
// random-access writer (parts assembled out of order), reads it back whole, and prints MB/s
// (best of REPEATS).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "engine/storage/object_store.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: store_bench URI [MIB] [REPEATS]\n");
    return 2;
  }
  const uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  auto store = tq::OpenObjectStore(argv[1]);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  std::string data(mib << 20, '\0');
  std::mt19937_64 gen(1);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    const uint64_t v = gen();
    std::memcpy(&data[i], &v, 8);
  }
  using Clock = std::chrono::steady_clock;
  auto secs = [](Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); };
  double best_put = 1e9, best_rand = 1e9, best_get = 1e9;
  for (int r = 0; r < reps; ++r) {
    auto t = Clock::now();
    auto w = (*store)->NewWriter("bench/seq.bin");
    for (size_t off = 0; off < data.size(); off += 4 << 20) {
      if (!(*w)->Append(absl::string_view(data).substr(off, 4 << 20)).ok()) return 1;
    }
    if (!(*w)->Commit().ok()) return 1;
    best_put = std::min(best_put, secs(t));
    t = Clock::now();
    auto rw = (*store)->NewRandomAccessWriter("bench/rand.bin", data.size());
    const size_t piece = 3 << 20;
    for (size_t k = (data.size() + piece - 1) / piece; k-- > 0;) {
      const size_t off = k * piece;
      if (!(*rw)->WriteAt(off, absl::string_view(data).substr(off, piece)).ok()) return 1;
    }
    if (!(*rw)->Commit().ok()) return 1;
    best_rand = std::min(best_rand, secs(t));
    t = Clock::now();
    uint64_t n = 0;
    if (!(*store)->Read("bench/seq.bin", 0, tq::ObjectStore::kToEnd, [&](absl::string_view c) {
          n += c.size();
          return absl::OkStatus();
        }).ok() || n != data.size()) {
      return 1;
    }
    best_get = std::min(best_get, secs(t));
  }
  (void)(*store)->Delete("bench/seq.bin");
  (void)(*store)->Delete("bench/rand.bin");
  const double mb = data.size() / 1e6;
  std::printf("| %s | %llu MiB | %.0f | %.0f | %.0f |\n", argv[1], static_cast<unsigned long long>(mib),
              mb / best_put, mb / best_rand, mb / best_get);
  return 0;
}
