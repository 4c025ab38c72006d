#include "engine/storage/file_store.h"

#include "engine/storage/store_conformance.h"
#include "gtest/gtest.h"
#include "tests/util/testdata.h"

namespace tq {
namespace {

TEST(FileStoreTest, Conformance) {
  const std::string dir = testing::MakeTempDir("fs");
  auto store = OpenObjectStore("file://" + dir);
  ASSERT_TRUE(store.ok()) << store.status();
  testing::RunStoreConformance(**store, 12 << 20);
  EXPECT_EQ((*store)->LocalPath("x/y").value(), dir + "/x/y");
}

TEST(FileStoreTest, PlainPathsAndBadUris) {
  const std::string dir = testing::MakeTempDir("fs2");
  auto plain = OpenObjectStore(dir);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->Uri(), "file://" + dir);
  EXPECT_FALSE(OpenObjectStore("file://relative/x").ok());
  EXPECT_FALSE(OpenObjectStore("gs://bucket/x").ok());
  EXPECT_FALSE(OpenObjectStore("").ok());
  EXPECT_EQ(WriteObject(**plain, "../escape", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteObject(**plain, "/abs", "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenObjectStore("s3://Bad_Bucket/x").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tq
