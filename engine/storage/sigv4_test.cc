#include "engine/storage/sigv4.h"

#include "gtest/gtest.h"

namespace tq {
namespace {

// The worked examples of AWS's "Signature Calculations for the Authorization Header" (S3 API
// reference): example credentials, 2013-05-24, bucket "examplebucket", us-east-1.
SigV4Credentials Example() {
  SigV4Credentials c;
  c.access_key = "AKIAIOSFODNN7EXAMPLE";
  c.secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
  return c;
}

TEST(SigV4Test, GetObjectExample) {
  SigV4Request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test.txt";
  r.headers = {{"range", "bytes=0-9"},
               {"x-amz-content-sha256", kEmptySha256},
               {"x-amz-date", "20130524T000000Z"}};
  r.payload_sha256 = kEmptySha256;
  EXPECT_EQ(SignV4(r, Example(), "20130524T000000Z"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4Test, ListObjectsExample) {
  SigV4Request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/";
  r.query = {{"prefix", "J"}, {"max-keys", "2"}};
  r.headers = {{"x-amz-content-sha256", kEmptySha256}, {"x-amz-date", "20130524T000000Z"}};
  r.payload_sha256 = kEmptySha256;
  EXPECT_EQ(SignV4(r, Example(), "20130524T000000Z"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(SigV4Test, CanonicalQueryIsSortedAndEncoded) {
  EXPECT_EQ(CanonicalQueryString({{"prefix", "dir/"}, {"uploads", ""}, {"a b", "c+d"}}),
            "a%20b=c%2Bd&prefix=dir%2F&uploads=");
  EXPECT_EQ(CanonicalQueryString({{"partNumber", "2"}, {"uploadId", "x~y"}}),
            "partNumber=2&uploadId=x~y");
  EXPECT_EQ(UriEncode("a b/ü.safetensors", false), "a%20b/%C3%BC.safetensors");
  EXPECT_EQ(UriEncode("a/b", true), "a%2Fb");
}

}  // namespace
}  // namespace tq
