// Proves that every system library the project builds on is wired into the offline Bazel build
// (one repository each in WORKSPACE): gRPC + protobuf codegen with a server-streaming call over
// an in-process channel, prometheus-cpp, libcurl, PCRE2, OpenSSL, nlohmann-json, Abseil.
#include <curl/curl.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <grpcpp/grpcpp.h>
#include <pcre2.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/build/echo.grpc.pb.h"

namespace {

class EchoService final : public tq::buildtest::Echo::Service {
  grpc::Status Say(grpc::ServerContext*, const tq::buildtest::EchoRequest* req,
                   tq::buildtest::EchoReply* reply) override {
    reply->set_text(req->text());
    return grpc::Status::OK;
  }
  grpc::Status Stream(grpc::ServerContext*, const tq::buildtest::EchoRequest* req,
                      grpc::ServerWriter<tq::buildtest::EchoReply>* writer) override {
    for (int i = 0; i < req->repeat(); ++i) {
      tq::buildtest::EchoReply r;
      r.set_text(req->text());
      r.set_index(i);
      r.mutable_sent_at()->set_seconds(1700000000 + i);
      if (!writer->Write(r)) break;
    }
    return grpc::Status::OK;
  }
};

TEST(SystemLibrariesTest, GrpcServerStreaming) {
  EchoService service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto channel = server->InProcessChannel(grpc::ChannelArguments());
  auto stub = tq::buildtest::Echo::NewStub(channel);
  grpc::ClientContext ctx;
  tq::buildtest::EchoRequest req;
  req.set_text("hi");
  req.set_repeat(1000);
  auto reader = stub->Stream(&ctx, req);
  tq::buildtest::EchoReply reply;
  int n = 0;
  while (reader->Read(&reply)) {
    ASSERT_EQ(reply.index(), n);
    ++n;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(n, 1000);
  server->Shutdown();
}

TEST(SystemLibrariesTest, PrometheusCurlPcre2Json) {
  prometheus::Registry registry;
  auto& family = prometheus::BuildCounter().Name("tq_build_test_total").Help("test").Register(registry);
  family.Add({{"kind", "x"}}).Increment(3);
  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_NE(text.find("tq_build_test_total{kind=\"x\"} 3"), std::string::npos) << text;

  EXPECT_NE(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_SSL, 0);

  int err;
  PCRE2_SIZE off;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>("\\p{L}+"), PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  ASSERT_NE(re, nullptr);
  pcre2_code_free(re);

  EXPECT_EQ(nlohmann::json::parse(R"({"a": [1, 2]})")["a"][1], 2);
  EXPECT_EQ(absl::StrCat("a", 1), "a1");
}

}  // namespace
