// File: tests/util/testdata.h
//
// Paths of test data inside a Bazel test's runfiles, and scratch directories.
//   std::string p = TestDataPath("testdata/models/tq-tiny-qwen3/model.safetensors");
#ifndef TQSERVE_TESTS_UTIL_TESTDATA_H_
#define TQSERVE_TESTS_UTIL_TESTDATA_H_

#include <string>

namespace tq::testing {

// Absolute path of a workspace-relative file that the test lists in `data`.
std::string TestDataPath(const std::string& workspace_relative);

// A fresh empty directory under the test's temporary directory.
std::string MakeTempDir(const std::string& prefix);

// Whole file contents (empty on error) and writing a file.
std::string ReadFileOrDie(const std::string& path);
void WriteFileOrDie(const std::string& path, const std::string& contents);

}  // namespace tq::testing

#endif  // TQSERVE_TESTS_UTIL_TESTDATA_H_
