#include "engine/storage/store_conformance.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace tq::testing {

std::string PatternBytes(uint64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

namespace {

std::string ReadRange(ObjectStore& store, const std::string& key, uint64_t off, uint64_t len) {
  std::string out;
  absl::Status st = store.Read(key, off, len, [&](absl::string_view c) {
    out.append(c.data(), c.size());
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

}  // namespace

void RunStoreConformance(ObjectStore& store, uint64_t big_bytes) {
  // Small object: whole, ranges, suffix, head.
  const std::string small = PatternBytes(1000, 1);
  ASSERT_TRUE(WriteObject(store, "dir/small.bin", small).ok());
  auto whole = ReadObject(store, "dir/small.bin");
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(*whole, small);
  EXPECT_EQ(ReadRange(store, "dir/small.bin", 10, 20), small.substr(10, 20));
  EXPECT_EQ(ReadRange(store, "dir/small.bin", 990, ObjectStore::kToEnd), small.substr(990));
  EXPECT_EQ(ReadRange(store, "dir/small.bin", 995, 100), small.substr(995));  // clamped
  auto suffix = store.ReadSuffix("dir/small.bin", 10);
  ASSERT_TRUE(suffix.ok()) << suffix.status();
  EXPECT_EQ(*suffix, small.substr(990));
  auto head = store.Head("dir/small.bin");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->size, 1000u);

  // Missing objects.
  EXPECT_EQ(store.Head("dir/missing.bin").status().code(), absl::StatusCode::kNotFound);
  auto missing = ReadObject(store, "dir/missing.bin");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_NE(missing.status().message().find("missing.bin"), std::string::npos) << missing.status();

  // Empty object.
  ASSERT_TRUE(WriteObject(store, "dir/empty", "").ok());
  EXPECT_EQ(store.Head("dir/empty")->size, 0u);
  EXPECT_EQ(*ReadObject(store, "dir/empty"), "");

  // Listing with pagination and prefixes.
  for (int i = 0; i < 23; ++i) {
    ASSERT_TRUE(WriteObject(store, absl::StrFormat("list/k%02d", i), absl::StrCat(i)).ok());
  }
  ASSERT_TRUE(WriteObject(store, "listing-other", "x").ok());
  std::vector<std::string> keys;
  std::string token;
  int pages = 0;
  do {
    auto page = store.List("list/", token, 10);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& o : page->objects) keys.push_back(o.key);
    token = page->next_token;
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(keys.size(), 23u);
  EXPECT_EQ(keys.front(), "list/k00");
  EXPECT_EQ(keys.back(), "list/k22");
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  auto all = ListAll(store, "list");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 24u);  // list/* and listing-other

  // A big object through the sequential writer (several parts on S3), uneven appends.
  const std::string big = PatternBytes(big_bytes, 2);
  {
    auto w = store.NewWriter("big/seq.bin");
    ASSERT_TRUE(w.ok()) << w.status();
    for (uint64_t off = 0; off < big.size();) {
      const uint64_t n = std::min<uint64_t>(big.size() - off, 777777);
      ASSERT_TRUE((*w)->Append(absl::string_view(big).substr(off, n)).ok());
      off += n;
    }
    EXPECT_EQ(store.Head("big/seq.bin").status().code(), absl::StatusCode::kNotFound)
        << "visible before commit";
    ASSERT_TRUE((*w)->Commit().ok());
  }
  EXPECT_EQ(store.Head("big/seq.bin")->size, big.size());
  EXPECT_TRUE(*ReadObject(store, "big/seq.bin") == big);
  EXPECT_EQ(ReadRange(store, "big/seq.bin", big.size() / 2, 12345),
            big.substr(big.size() / 2, 12345));

  // The random-access writer, bytes arriving back to front in odd-sized pieces.
  {
    auto w = store.NewRandomAccessWriter("big/random.bin", big.size());
    ASSERT_TRUE(w.ok()) << w.status();
    const uint64_t piece = 1000003;
    std::vector<uint64_t> starts;
    for (uint64_t off = 0; off < big.size(); off += piece) starts.push_back(off);
    std::reverse(starts.begin(), starts.end());
    for (uint64_t off : starts) {
      const uint64_t n = std::min<uint64_t>(piece, big.size() - off);
      ASSERT_TRUE((*w)->WriteAt(off, absl::string_view(big).substr(off, n)).ok());
    }
    ASSERT_TRUE((*w)->Commit().ok());
  }
  EXPECT_TRUE(*ReadObject(store, "big/random.bin") == big);

  // A random-access writer missing bytes cannot commit, and leaves nothing.
  {
    auto w = store.NewRandomAccessWriter("big/holes.bin", 3000);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->WriteAt(0, small).ok());
    EXPECT_FALSE((*w)->Commit().ok());
  }
  EXPECT_EQ(store.Head("big/holes.bin").status().code(), absl::StatusCode::kNotFound);

  // Abort (explicit and by destruction) leaves nothing.
  {
    auto w = store.NewWriter("aborted.bin");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(big).ok());
    (*w)->Abort();
  }
  {
    auto w = store.NewWriter("dropped.bin");
    ASSERT_TRUE((*w)->Append(small).ok());
  }
  EXPECT_EQ(store.Head("aborted.bin").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.Head("dropped.bin").status().code(), absl::StatusCode::kNotFound);

  // Overwrite, delete, delete again.
  ASSERT_TRUE(WriteObject(store, "dir/small.bin", "new").ok());
  EXPECT_EQ(*ReadObject(store, "dir/small.bin"), "new");
  EXPECT_TRUE(store.Delete("dir/small.bin").ok());
  EXPECT_TRUE(store.Delete("dir/small.bin").ok());
  EXPECT_EQ(store.Head("dir/small.bin").status().code(), absl::StatusCode::kNotFound);

  // URIs name the store.
  EXPECT_NE(store.Uri("a/b").find("a/b"), std::string::npos);
}

}  // namespace tq::testing
