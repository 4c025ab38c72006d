#include "engine/storage/s3_store.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <ctime>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/storage/http_client.h"
#include "engine/util/sha256.h"
#include "kernels/util/status_macros.h"

namespace tq {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

int EnvInt(const char* name, int def) {
  int v;
  return absl::SimpleAtoi(Env(name), &v) && v > 0 ? v : def;
}

std::string AmzDate() {
  const std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[20];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string XmlUnescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    static const std::pair<const char*, char> kEntities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    bool matched = false;
    for (const auto& [ent, ch] : kEntities) {
      if (s.substr(i, strlen(ent)) == ent) {
        out.push_back(ch);
        i += strlen(ent) - 1;
        matched = true;
        break;
      }
    }
    if (!matched) out.push_back('&');
  }
  return out;
}

// The contents of every <tag>...</tag> element in `xml` (no nesting of the same tag).
std::vector<absl::string_view> XmlBlocks(absl::string_view xml, absl::string_view tag) {
  std::vector<absl::string_view> out;
  const std::string open = absl::StrCat("<", tag, ">"), close = absl::StrCat("</", tag, ">");
  size_t pos = 0;
  while (true) {
    const size_t a = xml.find(open, pos);
    if (a == absl::string_view::npos) break;
    const size_t b = xml.find(close, a + open.size());
    if (b == absl::string_view::npos) break;
    out.push_back(xml.substr(a + open.size(), b - a - open.size()));
    pos = b + close.size();
  }
  return out;
}

std::string XmlValue(absl::string_view xml, absl::string_view tag) {
  auto blocks = XmlBlocks(xml, tag);
  return blocks.empty() ? std::string() : XmlUnescape(blocks[0]);
}

struct Endpoint {
  std::string scheme;  // "http" or "https"
  std::string host;    // host[:port]
};

absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view url) {
  const size_t sep = url.find("://");
  if (sep == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("S3 endpoint '", url, "' must be http(s)://host[:port]"));
  }
  Endpoint e{std::string(url.substr(0, sep)), std::string(url.substr(sep + 3))};
  while (!e.host.empty() && e.host.back() == '/') e.host.pop_back();
  if ((e.scheme != "http" && e.scheme != "https") || e.host.empty() ||
      e.host.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("S3 endpoint '", url, "' must be http(s)://host[:port]"));
  }
  return e;
}

// absl status for an S3 error response.
absl::Status MapHttpError(long status, const std::string& what, const S3Error& err,
                          bool have_credentials) {
  std::string msg = absl::StrCat(what, ": HTTP ", status, " ", err.code.empty() ? "(no code)" : err.code);
  if (!err.message.empty()) absl::StrAppend(&msg, ": ", err.message);
  if ((status == 403 || status == 401) && !have_credentials) {
    absl::StrAppend(&msg, " (no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment)");
  } else if (err.code == "SignatureDoesNotMatch" || err.code == "InvalidAccessKeyId") {
    absl::StrAppend(&msg, " (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)");
  }
  switch (status) {
    case 404:
      return absl::NotFoundError(msg);
    case 403:
      return absl::PermissionDeniedError(msg);
    case 401:
      return absl::UnauthenticatedError(msg);
    case 400:
      return absl::InvalidArgumentError(msg);
    case 416:
      return absl::OutOfRangeError(msg);
    case 409:
    case 412:
      return absl::FailedPreconditionError(msg);
    default:
      return status >= 500 || status == 429 || status == 408 ? absl::UnavailableError(msg)
                                                              : absl::UnknownError(msg);
  }
}

bool Retryable(long status) { return status >= 500 || status == 429 || status == 408; }

// "Timeout", "ConnectionReset", ... from a transport error message, for the error metric.
std::string TransportCode(absl::string_view message) {
  if (absl::StrContains(message, "timed out") || absl::StrContains(message, "Timeout")) return "Timeout";
  if (absl::StrContains(message, "reset") || absl::StrContains(message, "Recv failure") ||
      absl::StrContains(message, "Send failure") || absl::StrContains(message, "Empty reply")) {
    return "ConnectionReset";
  }
  if (absl::StrContains(message, "Couldn't connect") || absl::StrContains(message, "refused")) {
    return "ConnectionRefused";
  }
  return "TransportError";
}

class S3Store;

// One S3 request, executed with retries.
struct Call {
  std::string method = "GET";
  std::string key;  // full key, empty for bucket-level requests
  std::vector<std::pair<std::string, std::string>> query;
  absl::string_view body;
  std::string body_sha256;  // computed when empty
  std::string range;        // "bytes=..." (set per attempt for resumable reads)
  // Streaming reads: consecutive bytes of [begin, end) go to sink; retried reads resume.
  const ChunkSink* sink = nullptr;
  uint64_t begin = 0, end = ObjectStore::kToEnd;
  bool suffix = false;  // range "bytes=-<end>"
};

class S3Store : public ObjectStore {
 public:
  S3Store(S3Config cfg, Endpoint ep, std::string bucket, std::string prefix, StorageObserver* obs)
      : cfg_(std::move(cfg)), ep_(std::move(ep)), bucket_(std::move(bucket)),
        prefix_(std::move(prefix)), observer_(obs) {}

  using ObjectStore::Uri;
  std::string Uri() const override {
    return absl::StrCat("s3://", bucket_, prefix_.empty() ? "" : "/",
                        absl::string_view(prefix_).substr(0, prefix_.empty() ? 0 : prefix_.size() - 1));
  }

  absl::StatusOr<ObjectInfo> Head(absl::string_view key) override {
    Call c;
    c.method = "HEAD";
    c.key = Full(key);
    HttpResponse r;
    TQ_RETURN_IF_ERROR(Execute(c, &r, absl::StrCat(Uri(key), ": HEAD")));
    ObjectInfo info{std::string(key), 0, r.headers["etag"]};
    if (!absl::SimpleAtoi(r.headers["content-length"], &info.size)) {
      return absl::DataLossError(absl::StrCat(Uri(key), ": HEAD without Content-Length"));
    }
    return info;
  }

  absl::Status Read(absl::string_view key, uint64_t offset, uint64_t length,
                    const ChunkSink& sink) override {
    Call c;
    c.key = Full(key);
    c.sink = &sink;
    c.begin = offset;
    c.end = length == kToEnd ? kToEnd : offset + length;
    if (length == 0) return absl::OkStatus();
    HttpResponse r;
    return Execute(c, &r, absl::StrCat(Uri(key), ": GET"));
  }

  absl::StatusOr<std::string> ReadSuffix(absl::string_view key, uint64_t n) override {
    std::string out;
    ChunkSink sink = [&](absl::string_view chunk) {
      out.append(chunk.data(), chunk.size());
      return absl::OkStatus();
    };
    Call c;
    c.key = Full(key);
    c.sink = &sink;
    c.suffix = true;
    c.end = n;
    HttpResponse r;
    TQ_RETURN_IF_ERROR(Execute(c, &r, absl::StrCat(Uri(key), ": GET suffix")));
    return out;
  }

  absl::StatusOr<ListPage> List(absl::string_view prefix, absl::string_view token,
                                int max_keys) override {
    Call c;
    c.query = {{"list-type", "2"}, {"prefix", absl::StrCat(prefix_, prefix)},
               {"max-keys", absl::StrCat(max_keys)}};
    if (!token.empty()) c.query.emplace_back("continuation-token", std::string(token));
    HttpResponse r;
    TQ_RETURN_IF_ERROR(Execute(c, &r, absl::StrCat(Uri(), ": LIST ", prefix)));
    ListPage page;
    for (absl::string_view block : XmlBlocks(r.body, "Contents")) {
      ObjectInfo o;
      const std::string full = XmlValue(block, "Key");
      if (!absl::StartsWith(full, prefix_)) continue;
      o.key = full.substr(prefix_.size());
      absl::SimpleAtoi(XmlValue(block, "Size"), &o.size);
      o.etag = XmlValue(block, "ETag");
      page.objects.push_back(std::move(o));
    }
    if (XmlValue(r.body, "IsTruncated") == "true") {
      page.next_token = XmlValue(r.body, "NextContinuationToken");
      if (page.next_token.empty()) {
        return absl::DataLossError(absl::StrCat(Uri(), ": truncated listing without a continuation token"));
      }
    }
    return page;
  }

  absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view key) override;
  absl::StatusOr<std::unique_ptr<RandomAccessObjectWriter>> NewRandomAccessWriter(
      absl::string_view key, uint64_t size) override;

  absl::Status Delete(absl::string_view key) override {
    Call c;
    c.method = "DELETE";
    c.key = Full(key);
    HttpResponse r;
    absl::Status st = Execute(c, &r, absl::StrCat(Uri(key), ": DELETE"));
    return st.code() == absl::StatusCode::kNotFound ? absl::OkStatus() : st;
  }

  // Multipart pieces, used by the writers.
  absl::StatusOr<std::string> CreateUpload(const std::string& key) {
    Call c;
    c.method = "POST";
    c.key = key;
    c.query = {{"uploads", ""}};
    HttpResponse r;
    TQ_RETURN_IF_ERROR(Execute(c, &r, absl::StrCat(UriOfFull(key), ": CreateMultipartUpload")));
    std::string id = XmlValue(r.body, "UploadId");
    if (id.empty()) return absl::DataLossError(absl::StrCat(UriOfFull(key), ": no UploadId in reply"));
    return id;
  }

  absl::StatusOr<std::string> UploadPart(const std::string& key, const std::string& upload_id,
                                         int part, absl::string_view data) {
    Call c;
    c.method = "PUT";
    c.key = key;
    c.query = {{"partNumber", absl::StrCat(part)}, {"uploadId", upload_id}};
    c.body = data;
    HttpResponse r;
    TQ_RETURN_IF_ERROR(Execute(c, &r, absl::StrCat(UriOfFull(key), ": UploadPart ", part)));
    if (observer_ != nullptr) observer_->OnBytesWritten(data.size());
    return r.headers["etag"];
  }

  absl::Status CompleteUpload(const std::string& key, const std::string& upload_id,
                              const std::map<int, std::string>& etags) {
    std::string body = "<CompleteMultipartUpload>";
    for (const auto& [n, etag] : etags) {
      absl::StrAppend(&body, "<Part><PartNumber>", n, "</PartNumber><ETag>", etag, "</ETag></Part>");
    }
    absl::StrAppend(&body, "</CompleteMultipartUpload>");
    Call c;
    c.method = "POST";
    c.key = key;
    c.query = {{"uploadId", upload_id}};
    c.body = body;
    HttpResponse r;
    TQ_RETURN_IF_ERROR(Execute(c, &r, absl::StrCat(UriOfFull(key), ": CompleteMultipartUpload")));
    // S3 may answer 200 and still report an error in the body.
    const S3Error err = ParseS3Error(r.body);
    if (!err.code.empty()) {
      if (observer_ != nullptr) observer_->OnRequestError(err.code);
      return absl::UnavailableError(absl::StrCat(UriOfFull(key), ": CompleteMultipartUpload: ",
                                                 err.code, ": ", err.message));
    }
    return absl::OkStatus();
  }

  void AbortUpload(const std::string& key, const std::string& upload_id) {
    Call c;
    c.method = "DELETE";
    c.key = key;
    c.query = {{"uploadId", upload_id}};
    HttpResponse r;
    (void)Execute(c, &r, absl::StrCat(UriOfFull(key), ": AbortMultipartUpload"));
  }

  absl::Status PutObject(const std::string& key, absl::string_view data) {
    Call c;
    c.method = "PUT";
    c.key = key;
    c.body = data;
    HttpResponse r;
    TQ_RETURN_IF_ERROR(Execute(c, &r, absl::StrCat(UriOfFull(key), ": PUT")));
    if (observer_ != nullptr) observer_->OnBytesWritten(data.size());
    return absl::OkStatus();
  }

  absl::Status CreateBucket() {
    Call c;
    c.method = "PUT";
    HttpResponse r;
    absl::Status st = Execute(c, &r, absl::StrCat("s3://", bucket_, ": CreateBucket"));
    if (!st.ok() && absl::StrContains(st.message(), "BucketAlreadyOwnedByYou")) return absl::OkStatus();
    return st;
  }

  std::string Full(absl::string_view key) const { return absl::StrCat(prefix_, key); }
  std::string UriOfFull(absl::string_view full) const { return absl::StrCat("s3://", bucket_, "/", full); }
  const S3Config& config() const { return cfg_; }

 private:
  absl::Status Execute(Call& c, HttpResponse* resp, const std::string& what);

  S3Config cfg_;
  Endpoint ep_;
  std::string bucket_;
  std::string prefix_;  // "" or "dir/sub/"
  StorageObserver* observer_;
};

absl::Status S3Store::Execute(Call& c, HttpResponse* resp, const std::string& what) {
  const bool have_creds = !cfg_.credentials.access_key.empty();
  if (c.body_sha256.empty()) c.body_sha256 = c.body.empty() ? kEmptySha256 : Sha256Hex(c.body);
  std::string host = ep_.host, path;
  if (cfg_.path_style) {
    path = absl::StrCat("/", bucket_, c.key.empty() ? "" : "/", UriEncode(c.key, false));
  } else {
    host = absl::StrCat(bucket_, ".", ep_.host);
    path = absl::StrCat("/", UriEncode(c.key, false));
  }
  const std::string query = CanonicalQueryString(c.query);
  const std::string url = absl::StrCat(ep_.scheme, "://", host, path, query.empty() ? "" : "?", query);
  absl::Status sink_status;
  uint64_t pos = c.begin;  // next byte a streaming read needs
  std::mt19937_64 rng(std::random_device{}());
  for (int attempt = 1;; ++attempt) {
    std::string range;
    if (c.sink != nullptr) {
      if (c.suffix) {
        range = absl::StrCat("bytes=-", c.end);
      } else if (pos > 0 || c.end != kToEnd) {
        if (c.end != kToEnd && pos >= c.end) return absl::OkStatus();
        range = absl::StrCat("bytes=", pos, "-", c.end == kToEnd ? "" : absl::StrCat(c.end - 1));
      }
    }
    SigV4Request sr;
    sr.method = c.method;
    sr.host = host;
    sr.path = path;
    sr.query = c.query;
    const std::string date = AmzDate();
    sr.headers = {{"x-amz-content-sha256", c.body_sha256}, {"x-amz-date", date}};
    if (!cfg_.credentials.session_token.empty()) {
      sr.headers["x-amz-security-token"] = cfg_.credentials.session_token;
    }
    sr.payload_sha256 = c.body_sha256;
    HttpRequest req;
    req.method = c.method;
    req.url = url;
    for (const auto& [k, v] : sr.headers) req.headers.push_back(absl::StrCat(k, ": ", v));
    if (have_creds) req.headers.push_back(absl::StrCat("Authorization: ", SignV4(sr, cfg_.credentials, date)));
    if (!range.empty()) req.headers.push_back(absl::StrCat("Range: ", range));
    req.body = c.body;
    req.connect_timeout_s = cfg_.connect_timeout_s;
    req.stall_timeout_s = cfg_.stall_timeout_s;
    if (c.sink != nullptr) {
      req.on_body = [&](absl::string_view chunk) {
        if (observer_ != nullptr) observer_->OnBytesRead(chunk.size());
        sink_status = (*c.sink)(chunk);
        pos += chunk.size();
        return sink_status.ok();
      };
    }
    absl::Status st = PerformHttp(req, resp);
    if (!sink_status.ok()) return sink_status;
    if (st.code() == absl::StatusCode::kUnavailable) {
      const std::string code = TransportCode(st.message());
      if (observer_ != nullptr) observer_->OnRequestError(code);
      if (c.suffix && pos != c.begin) {
        return absl::UnavailableError(absl::StrCat(what, ": connection lost during a suffix read: ", st.message()));
      }
      if (attempt >= cfg_.max_attempts) {
        return absl::UnavailableError(
            absl::StrCat(what, ": ", code, " after ", attempt, " attempts: ", st.message()));
      }
    } else if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat(what, ": ", st.message()));
    } else if (resp->status >= 200 && resp->status < 300) {
      return absl::OkStatus();
    } else {
      S3Error err = ParseS3Error(resp->body);
      if (err.code.empty()) err.code = absl::StrCat("HTTP", resp->status);
      if (observer_ != nullptr) observer_->OnRequestError(err.code);
      if (!Retryable(resp->status) || attempt >= cfg_.max_attempts) {
        absl::Status mapped = MapHttpError(resp->status, what, err, have_creds);
        if (Retryable(resp->status)) {
          mapped = absl::Status(mapped.code(), absl::StrCat(mapped.message(), " (after ", attempt, " attempts)"));
        }
        return mapped;
      }
    }
    if (observer_ != nullptr) observer_->OnRetry();
    const int cap = std::min<int64_t>(cfg_.retry_max_ms, int64_t{cfg_.retry_base_ms} << std::min(attempt - 1, 20));
    std::uniform_int_distribution<int> jitter(0, std::max(cap, 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
  }
}

// A multipart upload with at most `upload_concurrency` parts in flight. Created on the first
// part; aborted when destroyed uncompleted. Thread-safe.
class MultipartUpload {
 public:
  MultipartUpload(S3Store* store, std::string key) : store_(store), key_(std::move(key)) {}
  ~MultipartUpload() { Abort(); }

  bool started() const {
    std::lock_guard<std::mutex> lock(mu_);
    return !upload_id_.empty();
  }

  absl::Status AddPart(int number, std::string data) {
    std::unique_lock<std::mutex> lock(mu_);
    TQ_RETURN_IF_ERROR(error_);
    if (upload_id_.empty()) {
      auto id = store_->CreateUpload(key_);
      if (!id.ok()) return Fail(id.status());
      upload_id_ = *id;
    }
    while (static_cast<int>(inflight_.size()) >= store_->config().upload_concurrency) {
      auto oldest = std::move(inflight_.front());
      inflight_.erase(inflight_.begin());
      lock.unlock();
      auto etag = oldest.second.get();
      lock.lock();
      if (!etag.ok()) return Fail(etag.status());
      etags_[oldest.first] = *etag;
    }
    const std::string id = upload_id_;
    inflight_.push_back({number, std::async(std::launch::async, [this, number, id, d = std::move(data)] {
                           return store_->UploadPart(key_, id, number, d);
                         })});
    return absl::OkStatus();
  }

  // Waits for every part; completes the upload when exactly `parts` parts made it.
  absl::Status Complete(int parts) {
    absl::Status st = WaitAll();
    std::string id;
    std::map<int, std::string> etags;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (st.ok()) st = error_;
      if (st.ok() && static_cast<int>(etags_.size()) != parts) {
        st = absl::FailedPreconditionError(absl::StrCat(store_->UriOfFull(key_), ": ", etags_.size(),
                                                        " of ", parts, " parts uploaded"));
      }
      id = upload_id_;
      etags = etags_;
    }
    if (st.ok()) st = store_->CompleteUpload(key_, id, etags);
    if (st.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      upload_id_.clear();  // done: nothing to abort
    } else {
      Abort();
    }
    return st;
  }

  void Abort() {
    (void)WaitAll();
    std::string id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id.swap(upload_id_);
    }
    if (!id.empty()) store_->AbortUpload(key_, id);
  }

 private:
  absl::Status WaitAll() {
    std::vector<std::pair<int, std::future<absl::StatusOr<std::string>>>> inflight;
    {
      std::lock_guard<std::mutex> lock(mu_);
      inflight.swap(inflight_);
    }
    absl::Status st;
    for (auto& [part, fut] : inflight) {
      auto etag = fut.get();
      std::lock_guard<std::mutex> lock(mu_);
      if (etag.ok()) {
        etags_[part] = *etag;
      } else if (st.ok()) {
        st = etag.status();
      }
    }
    return st;
  }

  absl::Status Fail(absl::Status st) {
    if (error_.ok()) error_ = st;  // under mu_
    return st;
  }

  S3Store* store_;
  std::string key_;
  mutable std::mutex mu_;
  std::string upload_id_;
  std::vector<std::pair<int, std::future<absl::StatusOr<std::string>>>> inflight_;
  std::map<int, std::string> etags_;
  absl::Status error_;
};

// Sequential writer: single PUT when small, multipart otherwise.
class S3Writer : public ObjectWriter {
 public:
  S3Writer(S3Store* store, std::string key) : store_(store), key_(key), upload_(store, key) {}
  ~S3Writer() override { Abort(); }

  absl::Status Append(absl::string_view data) override {
    while (!data.empty()) {
      const size_t take = std::min<size_t>(data.size(), store_->config().part_bytes - buf_.size());
      buf_.append(data.data(), take);
      data.remove_prefix(take);
      if (buf_.size() == store_->config().part_bytes) {
        TQ_RETURN_IF_ERROR(upload_.AddPart(++parts_, std::move(buf_)));
        buf_.clear();
      }
    }
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    done_ = true;
    if (!upload_.started()) return store_->PutObject(key_, buf_);
    if (!buf_.empty()) TQ_RETURN_IF_ERROR(upload_.AddPart(++parts_, std::move(buf_)));
    return upload_.Complete(parts_);
  }

  void Abort() override {
    if (done_) return;
    done_ = true;
    upload_.Abort();
  }

 private:
  S3Store* store_;
  std::string key_;
  std::string buf_;
  int parts_ = 0;
  MultipartUpload upload_;
  bool done_ = false;
};

// Random-access writer: fixed-size parts are assembled in memory as their bytes arrive and
// uploaded as soon as complete, in any order (S3 orders multipart parts by number).
class S3RandomWriter : public RandomAccessObjectWriter {
 public:
  S3RandomWriter(S3Store* store, std::string key, uint64_t size)
      : store_(store), key_(key), size_(size), upload_(store, key) {
    part_ = std::max<uint64_t>(store->config().part_bytes, (size + kMaxS3Parts - 1) / kMaxS3Parts);
    nparts_ = size == 0 ? 0 : static_cast<int>((size + part_ - 1) / part_);
  }
  ~S3RandomWriter() override { Abort(); }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    if (offset + data.size() > size_) {
      return absl::OutOfRangeError(absl::StrCat("write past the end of ", store_->UriOfFull(key_)));
    }
    while (!data.empty()) {
      const int p = static_cast<int>(offset / part_);
      const uint64_t in_part = offset - p * part_;
      const size_t take = std::min<uint64_t>(data.size(), PartLen(p) - in_part);
      std::string full;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto& buf = parts_[p];
        if (buf.data.empty()) buf.data.resize(PartLen(p));
        std::memcpy(buf.data.data() + in_part, data.data(), take);
        buf.filled += take;
        if (buf.filled > PartLen(p)) return absl::InternalError("overlapping writes");
        if (buf.filled == PartLen(p)) {
          full = std::move(buf.data);
          parts_.erase(p);
          if (nparts_ == 1) single_ = std::move(full);  // PUT at commit
        }
      }
      if (!full.empty()) TQ_RETURN_IF_ERROR(upload_.AddPart(p + 1, std::move(full)));
      offset += take;
      data.remove_prefix(take);
    }
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    done_ = true;
    if (nparts_ <= 1) {  // empty or single-part object: one PUT
      std::lock_guard<std::mutex> lock(mu_);
      if (single_.size() != size_) {
        return absl::FailedPreconditionError(
            absl::StrCat(store_->UriOfFull(key_), ": not every byte was written"));
      }
      return store_->PutObject(key_, single_);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!parts_.empty()) {
        upload_.Abort();
        return absl::FailedPreconditionError(absl::StrCat(
            store_->UriOfFull(key_), ": not every byte was written (", parts_.size(),
            " parts incomplete)"));
      }
    }
    return upload_.Complete(nparts_);
  }

  void Abort() override {
    if (done_) return;
    done_ = true;
    upload_.Abort();
  }

 private:
  struct PartBuffer {
    std::string data;
    uint64_t filled = 0;
  };

  uint64_t PartLen(int p) const { return std::min<uint64_t>(part_, size_ - p * part_); }

  S3Store* store_;
  std::string key_;
  uint64_t size_;
  uint64_t part_;
  int nparts_;
  std::mutex mu_;  // parts_, single_
  std::map<int, PartBuffer> parts_;
  std::string single_;
  MultipartUpload upload_;
  bool done_ = false;
};

absl::StatusOr<std::unique_ptr<ObjectWriter>> S3Store::NewWriter(absl::string_view key) {
  return std::unique_ptr<ObjectWriter>(new S3Writer(this, Full(key)));
}

absl::StatusOr<std::unique_ptr<RandomAccessObjectWriter>> S3Store::NewRandomAccessWriter(
    absl::string_view key, uint64_t size) {
  return std::unique_ptr<RandomAccessObjectWriter>(new S3RandomWriter(this, Full(key), size));
}

absl::StatusOr<std::pair<std::string, std::string>> SplitBucket(absl::string_view bucket_and_prefix) {
  const size_t slash = bucket_and_prefix.find('/');
  std::string bucket(bucket_and_prefix.substr(0, slash));
  std::string prefix = slash == absl::string_view::npos ? "" : std::string(bucket_and_prefix.substr(slash + 1));
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (bucket.size() < 3 || bucket.size() > 63 ||
      bucket.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid S3 bucket name '", bucket, "' (3-63 lowercase letters, digits, '.', '-')"));
  }
  if (!prefix.empty()) prefix += "/";
  return std::make_pair(bucket, prefix);
}

}  // namespace

S3Error ParseS3Error(absl::string_view xml) {
  return {XmlValue(xml, "Code"), XmlValue(xml, "Message")};
}

absl::StatusOr<S3Config> S3Config::FromEnv() {
  S3Config c;
  c.credentials.access_key = Env("AWS_ACCESS_KEY_ID");
  c.credentials.secret_key = Env("AWS_SECRET_ACCESS_KEY");
  c.credentials.session_token = Env("AWS_SESSION_TOKEN");
  if (c.credentials.access_key.empty() != c.credentials.secret_key.empty()) {
    return absl::InvalidArgumentError(
        "invalid AWS credentials: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or neither "
        "for anonymous access)");
  }
  std::string region = Env("AWS_REGION");
  if (region.empty()) region = Env("AWS_DEFAULT_REGION");
  if (region.empty()) region = "us-east-1";
  c.credentials.region = region;
  std::string endpoint = Env("AWS_ENDPOINT_URL_S3");
  if (endpoint.empty()) endpoint = Env("AWS_ENDPOINT_URL");
  const bool custom = !endpoint.empty();
  if (!custom) endpoint = absl::StrCat("https://s3.", region, ".amazonaws.com");
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  c.endpoint = endpoint;
  c.path_style = custom;
  const std::string style = absl::AsciiStrToLower(Env("AWS_S3_ADDRESSING_STYLE"));
  const std::string force = absl::AsciiStrToLower(Env("AWS_S3_FORCE_PATH_STYLE"));
  if (style == "path" || force == "true" || force == "1") c.path_style = true;
  if (style == "virtual" || force == "false" || force == "0") c.path_style = false;
  c.max_attempts = EnvInt("TQ_S3_MAX_ATTEMPTS", c.max_attempts);
  c.retry_base_ms = EnvInt("TQ_S3_RETRY_BASE_MS", c.retry_base_ms);
  c.retry_max_ms = EnvInt("TQ_S3_RETRY_MAX_MS", c.retry_max_ms);
  c.stall_timeout_s = EnvInt("TQ_S3_STALL_TIMEOUT_S", c.stall_timeout_s);
  c.connect_timeout_s = EnvInt("TQ_S3_CONNECT_TIMEOUT_S", c.connect_timeout_s);
  const int part_mib = EnvInt("TQ_S3_PART_MIB", 16);
  c.part_bytes = std::max<uint64_t>(kMinS3PartBytes, uint64_t(part_mib) << 20);
  return c;
}

absl::StatusOr<std::unique_ptr<ObjectStore>> NewS3ObjectStore(const S3Config& config,
                                                              absl::string_view bucket_and_prefix,
                                                              StorageObserver* observer) {
  TQ_ASSIGN_OR_RETURN(auto bp, SplitBucket(bucket_and_prefix));
  TQ_ASSIGN_OR_RETURN(Endpoint ep, ParseEndpoint(config.endpoint));
  return std::unique_ptr<ObjectStore>(new S3Store(config, ep, bp.first, bp.second, observer));
}

absl::Status CreateS3Bucket(const S3Config& config, absl::string_view bucket) {
  TQ_ASSIGN_OR_RETURN(auto bp, SplitBucket(bucket));
  TQ_ASSIGN_OR_RETURN(Endpoint ep, ParseEndpoint(config.endpoint));
  S3Store store(config, ep, bp.first, "", nullptr);
  return store.CreateBucket();
}

}  // namespace tq
