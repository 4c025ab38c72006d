#include "engine/util/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/util/file_util.h"

namespace tq {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(new Impl) {
  impl_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::Update(const void* data, size_t n) { EVP_DigestUpdate(impl_->ctx, data, n); }

std::string Sha256::HexDigest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &len);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

std::string Sha256Hex(absl::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.HexDigest();
}

absl::StatusOr<FileDigest> Sha256File(const std::string& path) {
  auto opened = OpenRegularFileForRead(path);
  if (!opened.ok()) return opened.status();
  const int fd = opened->fd;
  // Hash straight from the page cache through a sliding mapping: no copy into user buffers,
  // and at most one window resident.
  constexpr uint64_t kWindow = uint64_t{64} << 20;
  Sha256 h;
  FileDigest d;
  d.size = opened->size;
  for (uint64_t off = 0; off < d.size; off += kWindow) {
    const size_t len = static_cast<size_t>(std::min(kWindow, d.size - off));
    void* p = ::mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, static_cast<off_t>(off));
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::DataLossError(absl::StrCat("mmap ", path, ": ", std::strerror(err)));
    }
    ::madvise(p, len, MADV_SEQUENTIAL);
    ::madvise(p, len, MADV_WILLNEED);
    h.Update(p, len);
    ::munmap(p, len);
  }
  ::close(fd);
  d.sha256 = h.HexDigest();
  return d;
}

}  // namespace tq
