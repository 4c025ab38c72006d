#include "engine/storage/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tq {
namespace {

constexpr size_t kMaxErrorBody = 1 << 20;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// One handle per thread: libcurl keeps the connection cache in the handle, so consecutive
// requests of a thread reuse their keep-alive connections.
CURL* ThreadHandle() {
  struct Holder {
    CURL* h = nullptr;
    ~Holder() {
      if (h != nullptr) curl_easy_cleanup(h);
    }
  };
  thread_local Holder holder;
  if (holder.h == nullptr) {
    GlobalInit();
    holder.h = curl_easy_init();
  } else {
    curl_easy_reset(holder.h);
  }
  return holder.h;
}

struct Context {
  const HttpRequest* req;
  HttpResponse* resp;
  CURL* curl;
  size_t upload_pos = 0;
};

size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  auto* c = static_cast<Context*>(user);
  const size_t len = size * n;
  long status = 0;
  curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 200 && status < 300 && c->req->on_body) {
    if (!c->req->on_body(absl::string_view(data, len))) {
      c->resp->sink_aborted = true;
      return 0;  // aborts the transfer
    }
    c->resp->streamed += len;
    return len;
  }
  const bool ok = status >= 200 && status < 300;
  const size_t room = ok ? len : std::min(len, kMaxErrorBody - std::min(kMaxErrorBody, c->resp->body.size()));
  c->resp->body.append(data, room);
  return len;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* c = static_cast<Context*>(user);
  const absl::string_view line(data, size * n);
  const size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    c->resp->headers[absl::AsciiStrToLower(line.substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  } else if (absl::StartsWith(line, "HTTP/")) {
    c->resp->headers.clear();  // a new response (after 100-continue or a redirect)
  }
  return size * n;
}

size_t OnRead(char* buf, size_t size, size_t n, void* user) {
  auto* c = static_cast<Context*>(user);
  const size_t left = c->req->body.size() - c->upload_pos;
  const size_t len = std::min(left, size * n);
  std::memcpy(buf, c->req->body.data() + c->upload_pos, len);
  c->upload_pos += len;
  return len;
}

}  // namespace

absl::Status PerformHttp(const HttpRequest& req, HttpResponse* resp) {
  *resp = HttpResponse();
  CURL* curl = ThreadHandle();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  Context ctx{&req, resp, curl};
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, static_cast<long>(req.connect_timeout_s));
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(req.stall_timeout_s));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ctx);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &ctx);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  struct curl_slist* headers = nullptr;
  for (const std::string& h : req.headers) headers = curl_slist_append(headers, h.c_str());
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (req.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (req.method == "PUT") {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(curl, CURLOPT_READDATA, &ctx);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
  } else if (req.method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
  } else if (req.method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }
  const CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
  if (resp->sink_aborted) return absl::AbortedError("transfer aborted by the receiver");
  if (rc != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(
        req.method, " ", req.url, ": ", errbuf[0] ? errbuf : curl_easy_strerror(rc),
        " (curl error ", static_cast<int>(rc), ")"));
  }
  return absl::OkStatus();
}

}  // namespace tq
