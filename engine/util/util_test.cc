#include <atomic>
#include <vector>

#include "engine/util/file_util.h"
#include "engine/util/sha256.h"
#include "engine/util/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(h.HexDigest(), Sha256Hex("abc"));
}

TEST(Sha256Test, File) {
  const std::string dir = testing::MakeTempDir("sha");
  const std::string p = JoinPath(dir, "f");
  std::string big(3 << 20, 'x');
  ASSERT_TRUE(WriteFileAtomic(p, big).ok());
  auto d = Sha256File(p);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->size, big.size());
  EXPECT_EQ(d->sha256, Sha256Hex(big));
  EXPECT_EQ(Sha256File(JoinPath(dir, "missing")).status().code(), absl::StatusCode::kNotFound);
}

TEST(FileUtilTest, AtomicWriteListRename) {
  const std::string dir = testing::MakeTempDir("fu");
  ASSERT_TRUE(MakeDirs(JoinPath(dir, "a/b/c")).ok());
  EXPECT_TRUE(IsDirectory(JoinPath(dir, "a/b/c")));
  ASSERT_TRUE(WriteFileAtomic(JoinPath(dir, "x.json"), "{}").ok());
  EXPECT_EQ(*ReadFile(JoinPath(dir, "x.json")), "{}");
  ASSERT_TRUE(RenameFile(JoinPath(dir, "x.json"), JoinPath(dir, "y.json")).ok());
  auto names = ListDirectory(dir);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "y.json"}));
  EXPECT_TRUE(RemoveFile(JoinPath(dir, "y.json")).ok());
  EXPECT_TRUE(RemoveFile(JoinPath(dir, "y.json")).ok());
  EXPECT_EQ(ReadFile(JoinPath(dir, "y.json")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Basename("/a/b/c.txt"), "c.txt");
  EXPECT_EQ(JoinPath("/a/", "b"), "/a/b");
}

TEST(FileUtilTest, RandomAccessOutput) {
  const std::string dir = testing::MakeTempDir("ra");
  auto f = RandomAccessOutputFile::Create(JoinPath(dir, "o"), 6);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(3, "def", 3).ok());
  ASSERT_TRUE((*f)->WriteAt(0, "abc", 3).ok());
  ASSERT_TRUE((*f)->Close().ok());
  EXPECT_EQ(*ReadFile(JoinPath(dir, "o")), "abcdef");
}

TEST(FileUtilTest, FullDiskIsResourceExhausted) {
  // /dev/full fails every write with ENOSPC.
  EXPECT_EQ(ErrnoToStatus(ENOSPC, "write x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(WriteFileAtomic("/proc/definitely/not/here", "x").code(), absl::StatusCode::kNotFound);
}

TEST(ThreadPoolTest, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 1000, 100003}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, 3, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << n;
    }
  }
}

}  // namespace
}  // namespace tq
