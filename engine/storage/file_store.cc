#include "engine/storage/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/util/file_util.h"
#include "kernels/util/status_macros.h"

namespace tq {
namespace {

constexpr char kPartial[] = ".partial";

class FileWriter : public ObjectWriter {
 public:
  FileWriter(std::string path, int fd, StorageObserver* obs)
      : path_(std::move(path)), fd_(fd), observer_(obs) {}
  ~FileWriter() override { Abort(); }

  absl::Status Append(absl::string_view data) override {
    const char* p = data.data();
    size_t n = data.size();
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, absl::StrCat("write ", path_));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    if (observer_ != nullptr) observer_->OnBytesWritten(data.size());
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    absl::Status st;
    if (::fdatasync(fd_) != 0) st = ErrnoToStatus(errno, absl::StrCat("fsync ", path_));
    if (::close(fd_) != 0 && st.ok()) st = ErrnoToStatus(errno, absl::StrCat("close ", path_));
    fd_ = -1;
    if (st.ok()) st = RenameFile(path_ + kPartial, path_);
    if (!st.ok()) ::unlink((path_ + kPartial).c_str());
    done_ = true;
    return st;
  }

  void Abort() override {
    if (done_) return;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    ::unlink((path_ + kPartial).c_str());
    done_ = true;
  }

 private:
  std::string path_;
  int fd_;
  StorageObserver* observer_;
  bool done_ = false;
};

class FileRandomWriter : public RandomAccessObjectWriter {
 public:
  FileRandomWriter(std::string path, std::unique_ptr<RandomAccessOutputFile> f, uint64_t size,
                   StorageObserver* obs)
      : path_(std::move(path)), file_(std::move(f)), size_(size), observer_(obs) {}
  ~FileRandomWriter() override { Abort(); }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    if (offset + data.size() > size_) {
      return absl::OutOfRangeError(absl::StrCat("write past the end of ", path_));
    }
    TQ_RETURN_IF_ERROR(file_->WriteAt(offset, data.data(), data.size()));
    written_ += data.size();
    if (observer_ != nullptr) observer_->OnBytesWritten(data.size());
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    if (written_.load() != size_) {
      Abort();
      return absl::FailedPreconditionError(absl::StrCat(path_, ": ", written_.load(), " of ", size_,
                                                        " bytes written; not committed"));
    }
    absl::Status st = file_->Close();
    if (st.ok()) st = RenameFile(path_ + kPartial, path_);
    if (!st.ok()) ::unlink((path_ + kPartial).c_str());
    done_ = true;
    return st;
  }

  void Abort() override {
    if (done_) return;
    file_.reset();
    ::unlink((path_ + kPartial).c_str());
    done_ = true;
  }

 private:
  std::string path_;
  std::unique_ptr<RandomAccessOutputFile> file_;
  uint64_t size_;
  std::atomic<uint64_t> written_{0};  // writes never overlap (the interface's contract)
  StorageObserver* observer_;
  bool done_ = false;
};

class FileStore : public ObjectStore {
 public:
  FileStore(std::string root, StorageObserver* obs) : root_(std::move(root)), observer_(obs) {}

  using ObjectStore::Uri;
  std::string Uri() const override { return absl::StrCat("file://", root_); }

  absl::StatusOr<ObjectInfo> Head(absl::string_view key) override {
    TQ_ASSIGN_OR_RETURN(std::string path, PathOf(key));
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, Uri(key));
    if (!S_ISREG(st.st_mode)) return absl::NotFoundError(absl::StrCat(Uri(key), " is not a file"));
    return ObjectInfo{std::string(key), static_cast<uint64_t>(st.st_size), ""};
  }

  absl::Status Read(absl::string_view key, uint64_t offset, uint64_t length,
                    const ChunkSink& sink) override {
    TQ_ASSIGN_OR_RETURN(std::string path, PathOf(key));
    auto opened = OpenRegularFileForRead(path);
    if (!opened.ok()) return opened.status();
    const int fd = opened->fd;
    const uint64_t end = length == kToEnd ? opened->size : std::min(opened->size, offset + length);
    std::vector<char> buf(4 << 20);
    absl::Status st;
    for (uint64_t pos = offset; pos < end && st.ok();) {
      const ssize_t n = ::pread(fd, buf.data(), std::min<uint64_t>(buf.size(), end - pos),
                                static_cast<off_t>(pos));
      if (n < 0) {
        if (errno == EINTR) continue;
        st = ErrnoToStatus(errno, absl::StrCat("read ", Uri(key)));
        break;
      }
      if (n == 0) {
        st = absl::DataLossError(absl::StrCat(Uri(key), " ended early (truncated while reading?)"));
        break;
      }
      if (observer_ != nullptr) observer_->OnBytesRead(static_cast<uint64_t>(n));
      st = sink(absl::string_view(buf.data(), static_cast<size_t>(n)));
      pos += static_cast<uint64_t>(n);
    }
    ::close(fd);
    return st;
  }

  absl::StatusOr<std::string> ReadSuffix(absl::string_view key, uint64_t n) override {
    TQ_ASSIGN_OR_RETURN(ObjectInfo info, Head(key));
    std::string out;
    const uint64_t from = info.size > n ? info.size - n : 0;
    TQ_RETURN_IF_ERROR(Read(key, from, kToEnd, [&](absl::string_view c) {
      out.append(c.data(), c.size());
      return absl::OkStatus();
    }));
    return out;
  }

  absl::StatusOr<ListPage> List(absl::string_view prefix, absl::string_view token,
                                int max_keys) override {
    std::vector<ObjectInfo> all;
    if (IsDirectory(root_)) TQ_RETURN_IF_ERROR(Walk("", &all));
    std::sort(all.begin(), all.end(),
              [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
    ListPage page;
    for (const ObjectInfo& o : all) {
      if (!absl::StartsWith(o.key, prefix) || (!token.empty() && o.key <= token)) continue;
      if (static_cast<int>(page.objects.size()) == max_keys) {
        page.next_token = page.objects.back().key;
        break;
      }
      page.objects.push_back(o);
    }
    return page;
  }

  absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view key) override {
    TQ_ASSIGN_OR_RETURN(std::string path, PathOf(key));
    TQ_RETURN_IF_ERROR(MakeParent(path));
    const int fd = ::open((path + kPartial).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("create ", path, kPartial));
    return std::unique_ptr<ObjectWriter>(new FileWriter(path, fd, observer_));
  }

  absl::StatusOr<std::unique_ptr<RandomAccessObjectWriter>> NewRandomAccessWriter(
      absl::string_view key, uint64_t size) override {
    TQ_ASSIGN_OR_RETURN(std::string path, PathOf(key));
    TQ_RETURN_IF_ERROR(MakeParent(path));
    TQ_ASSIGN_OR_RETURN(auto f, RandomAccessOutputFile::Create(path + kPartial, size));
    return std::unique_ptr<RandomAccessObjectWriter>(
        new FileRandomWriter(path, std::move(f), size, observer_));
  }

  absl::Status Delete(absl::string_view key) override {
    TQ_ASSIGN_OR_RETURN(std::string path, PathOf(key));
    return RemoveFile(path);
  }

  std::optional<std::string> LocalPath(absl::string_view key) const override {
    auto p = PathOf(key);
    if (!p.ok()) return std::nullopt;
    return *p;
  }

 private:
  absl::StatusOr<std::string> PathOf(absl::string_view key) const {
    if (!IsSafeRelativeName(key)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid object key \"", key, "\""));
    }
    return JoinPath(root_, key);
  }

  absl::Status MakeParent(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? absl::OkStatus() : MakeDirs(path.substr(0, slash));
  }

  absl::Status Walk(const std::string& rel, std::vector<ObjectInfo>* out) {
    const std::string dir = rel.empty() ? root_ : JoinPath(root_, rel);
    TQ_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirectory(dir));
    for (const std::string& n : names) {
      const std::string key = rel.empty() ? n : absl::StrCat(rel, "/", n);
      const std::string path = JoinPath(root_, key);
      struct stat st, lst;  // files behind symlinks count; symlinked directories are not followed
      if (::stat(path.c_str(), &st) != 0 || ::lstat(path.c_str(), &lst) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        if (!S_ISLNK(lst.st_mode)) TQ_RETURN_IF_ERROR(Walk(key, out));
      } else if (S_ISREG(st.st_mode) && !absl::EndsWith(n, kPartial) &&
                 n.find(".tmp-") == std::string::npos) {
        out->push_back({key, static_cast<uint64_t>(st.st_size), ""});
      }
    }
    return absl::OkStatus();
  }

  std::string root_;
  StorageObserver* observer_;
};

}  // namespace

std::unique_ptr<ObjectStore> NewFileObjectStore(std::string root, StorageObserver* observer) {
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return std::make_unique<FileStore>(std::move(root), observer);
}

}  // namespace tq
