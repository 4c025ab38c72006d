#include "engine/format/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/util/file_util.h"
#include "nlohmann/json.hpp"

namespace tq {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view origin, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": invalid safetensors file: ", what));
}

// JSON string escaping as serde_json writes it (compact, UTF-8 passed through).
void AppendJsonString(std::string* out, absl::string_view s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Parses one tensor entry; `data_bytes` bounds its offsets.
absl::StatusOr<TensorInfo> ParseTensorEntry(const std::string& name, const json& v,
                                            uint64_t data_bytes, absl::string_view origin) {
  const std::string where = absl::StrCat("tensor \"", name, "\"");
  if (!v.is_object()) return Bad(origin, absl::StrCat(where, " is not a JSON object"));
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(key)) return Bad(origin, absl::StrCat(where, " has no \"", key, "\""));
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets") {
      return Bad(origin, absl::StrCat(where, " has unknown field \"", it.key(), "\""));
    }
  }
  TensorInfo t;
  t.name = name;
  const json& dt = v["dtype"];
  if (!dt.is_string()) return Bad(origin, absl::StrCat(where, ": dtype is not a string"));
  auto parsed = ParseDType(dt.get<std::string>());
  if (!parsed.ok()) return Bad(origin, absl::StrCat(where, ": ", parsed.status().message()));
  t.dtype = *parsed;

  const json& shape = v["shape"];
  if (!shape.is_array()) return Bad(origin, absl::StrCat(where, ": shape is not an array"));
  uint64_t numel = 1;
  for (const json& d : shape) {
    if (!d.is_number_unsigned()) {
      return Bad(origin, absl::StrCat(where, ": shape ", shape.dump(),
                                      " has an entry that is not a non-negative integer"));
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(INT64_MAX) || !CheckedMul(numel, dim, &numel) ||
        numel > static_cast<uint64_t>(INT64_MAX)) {
      return Bad(origin, absl::StrCat(where, ": shape ", shape.dump(), " overflows 64 bits"));
    }
    t.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t nbytes;
  if (!CheckedMul(numel, DTypeSize(t.dtype), &nbytes)) {
    return Bad(origin, absl::StrCat(where, ": byte size of shape ", shape.dump(), " x ",
                                    DTypeName(t.dtype), " overflows 64 bits"));
  }

  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned()) {
    return Bad(origin, absl::StrCat(where, ": data_offsets must be [begin, end] of non-negative "
                                           "integers, got ",
                                    off.dump()));
  }
  t.begin = off[0].get<uint64_t>();
  t.end = off[1].get<uint64_t>();
  if (t.end < t.begin) {
    return Bad(origin, absl::StrCat(where, ": data_offsets [", t.begin, ", ", t.end,
                                    ") end before they begin"));
  }
  if (t.end > data_bytes) {
    return Bad(origin,
               absl::StrCat(where, ": data_offsets [", t.begin, ", ", t.end,
                            ") go past the data section, which holds ", data_bytes,
                            " bytes (truncated file?)"));
  }
  if (t.end - t.begin != nbytes) {
    return Bad(origin, absl::StrCat(where, ": shape ", shape.dump(), " x ", DTypeName(t.dtype),
                                    " is ", nbytes, " bytes but data_offsets [", t.begin, ", ",
                                    t.end, ") hold ", t.end - t.begin));
  }
  return t;
}

}  // namespace

const TensorInfo* SafetensorsHeader::Find(absl::string_view name) const {
  for (const TensorInfo& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<uint64_t> ParseSafetensorsHeaderLength(absl::string_view first8, uint64_t file_size,
                                                      absl::string_view origin) {
  if (file_size < 8 || first8.size() < 8) {
    return Bad(origin, absl::StrCat("truncated: ", file_size,
                                    " bytes, need at least 8 for the header length"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(first8[i]);
  if (n > kMaxSafetensorsHeaderBytes) {
    return Bad(origin, absl::StrCat("header length ", n, " exceeds the limit of ",
                                    kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (n > file_size - 8) {
    return Bad(origin, absl::StrCat("header length ", n, " goes past the end of the file (",
                                    file_size, " bytes; truncated?)"));
  }
  if (n < 2) return Bad(origin, absl::StrCat("header length ", n, " is too small for JSON"));
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view text,
                                                         uint64_t data_bytes,
                                                         absl::string_view origin) {
  json root;
  std::string duplicate;
  try {
    // The callback sees every object key; at depth 1 those are tensor names, which must be
    // unique (the JSON library would silently keep the last one).
    std::set<std::string> seen;
    json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!seen.insert(k).second) duplicate = k;
      }
      return true;
    };
    root = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    return Bad(origin, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!duplicate.empty()) {
    return Bad(origin, absl::StrCat("tensor \"", duplicate, "\" appears twice in the header"));
  }
  if (!root.is_object()) return Bad(origin, "header is not a JSON object");

  SafetensorsHeader h;
  h.header_bytes = text.size();
  h.data_bytes = data_bytes;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return Bad(origin, "__metadata__ is not a JSON object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) {
          return Bad(origin, absl::StrCat("__metadata__ value of \"", m.key(),
                                          "\" is not a string"));
        }
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto t = ParseTensorEntry(it.key(), it.value(), data_bytes, origin);
    if (!t.ok()) return t.status();
    h.tensors.push_back(std::move(*t));
  }
  std::stable_sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : h.tensors) {
    if (t.begin < cursor) {
      return Bad(origin, absl::StrCat("tensor \"", t.name, "\" [", t.begin, ", ", t.end,
                                      ") overlaps tensor \"", prev->name, "\" [", prev->begin,
                                      ", ", prev->end, ")"));
    }
    if (t.begin > cursor) {
      return Bad(origin, absl::StrCat("bytes [", cursor, ", ", t.begin,
                                      ") of the data section belong to no tensor (before \"",
                                      t.name, "\")"));
    }
    cursor = t.end;
    prev = &t;
  }
  if (cursor != data_bytes) {
    return Bad(origin, absl::StrCat("the tensors cover ", cursor, " bytes but the data section has ",
                                    data_bytes, " (trailing bytes)"));
  }
  return h;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsBuffer(absl::string_view file,
                                                         absl::string_view origin) {
  auto n = ParseSafetensorsHeaderLength(file.substr(0, 8), file.size(), origin);
  if (!n.ok()) return n.status();
  return ParseSafetensorsHeader(file.substr(8, *n), file.size() - 8 - *n, origin);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto opened = OpenRegularFileForRead(path);
  if (!opened.ok()) return opened.status();
  const int fd = opened->fd;
  const uint64_t size = opened->size;
  if (size < 8) {
    ::close(fd);
    return Bad(path, absl::StrCat("truncated: ", size, " bytes, need at least 8 for the header length"));
  }
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (base == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("mmap ", path, ": ", std::strerror(err)));
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->base_ = static_cast<const char*>(base);
  f->size_ = size;
  f->mapped_ = true;
  auto h = ParseSafetensorsBuffer(absl::string_view(f->base_, size), path);
  if (!h.ok()) return h.status();
  f->header_ = std::move(*h);
  return f;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(const std::string& name,
                                                                             std::string bytes) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  f->buffer_ = std::move(bytes);
  f->base_ = f->buffer_.data();
  f->size_ = f->buffer_.size();
  auto h = ParseSafetensorsBuffer(f->buffer_, name);
  if (!h.ok()) return h.status();
  f->header_ = std::move(*h);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_ && base_ != nullptr) ::munmap(const_cast<char*>(base_), size_);
}

void SafetensorsFile::Release(const TensorInfo& t) const {
  if (!mapped_) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t lo = header_.data_start() + t.begin;
  uint64_t hi = header_.data_start() + t.end;
  lo = (lo + page - 1) / page * page;
  hi = hi / page * page;
  if (hi > lo) ::madvise(const_cast<char*>(base_) + lo, hi - lo, MADV_DONTNEED);
}

uint64_t TensorSpec::nbytes() const {
  uint64_t n = DTypeSize(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

const TensorInfo* SafetensorsLayout::Find(absl::string_view name) const {
  for (const TensorInfo& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<SafetensorsLayout> PlanSafetensors(
    std::vector<TensorSpec> tensors, const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorSpec& a, const TensorSpec& b) {
    if (a.dtype != b.dtype) return a.dtype > b.dtype;
    return a.name < b.name;
  });
  SafetensorsLayout layout;
  std::string& h = layout.header;
  h.push_back('{');
  bool first = true;
  if (!metadata.empty()) {
    AppendJsonString(&h, "__metadata__");
    h.append(":{");
    bool mfirst = true;
    for (const auto& [k, v] : metadata) {
      if (!mfirst) h.push_back(',');
      mfirst = false;
      AppendJsonString(&h, k);
      h.push_back(':');
      AppendJsonString(&h, v);
    }
    h.push_back('}');
    first = false;
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    if (i > 0 && tensors[i - 1].name == t.name) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\" written twice"));
    }
    if (t.name == "__metadata__") {
      return absl::InvalidArgumentError("a tensor cannot be named __metadata__");
    }
    uint64_t n = DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0 || !CheckedMul(n, static_cast<uint64_t>(d), &n)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": bad shape"));
      }
    }
    if (!first) h.push_back(',');
    first = false;
    AppendJsonString(&h, t.name);
    absl::StrAppend(&h, ":{\"dtype\":\"", DTypeName(t.dtype), "\",\"shape\":[");
    for (size_t d = 0; d < t.shape.size(); ++d) absl::StrAppend(&h, d ? "," : "", t.shape[d]);
    absl::StrAppend(&h, "],\"data_offsets\":[", offset, ",", offset + n, "]}");
    layout.tensors.push_back({t.name, t.dtype, t.shape, offset, offset + n});
    offset += n;
  }
  h.push_back('}');
  h.append((8 - h.size() % 8) % 8, ' ');
  layout.data_bytes = offset;
  return layout;
}

absl::StatusOr<std::string> SerializeSafetensors(const std::vector<TensorSpec>& tensors,
                                                 const std::map<std::string, std::string>& data,
                                                 const std::map<std::string, std::string>& metadata) {
  auto layout = PlanSafetensors(tensors, metadata);
  if (!layout.ok()) return layout.status();
  std::string out;
  out.reserve(layout->file_size());
  const uint64_t n = layout->header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += layout->header;
  for (const TensorInfo& t : layout->tensors) {
    auto it = data.find(t.name);
    if (it == data.end() || it->second.size() != t.nbytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("data for tensor \"", t.name, "\" missing or not ", t.nbytes(), " bytes"));
    }
    out += it->second;
  }
  return out;
}

}  // namespace tq
