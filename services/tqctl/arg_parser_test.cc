#include "services/tqctl/arg_parser.h"

#include "gtest/gtest.h"

namespace tq::tqctl {
namespace {

ArgParser Make() {
  ArgParser p("t", "t [opts]", "test");
  p.Option("bits", "3", "bits");
  p.Option("group-size", "128", "group");
  p.Option("size", "5GiB", "size");
  p.Switch("quiet", "quiet");
  return p;
}

TEST(ArgParserTest, ParsesFormsAndPositionals) {
  ArgParser p = Make();
  ASSERT_TRUE(p.Parse({"src", "--bits", "4", "--group_size=64", "dst", "--quiet"}).ok());
  EXPECT_EQ(p.positional(), (std::vector<std::string>{"src", "dst"}));
  EXPECT_EQ(*p.GetInt("bits", 2, 4), 4);
  EXPECT_EQ(*p.GetInt("group-size", 1, 1024), 64);
  EXPECT_TRUE(p.GetSwitch("quiet"));
  EXPECT_EQ(*p.GetBytes("size"), uint64_t{5} << 30);
}

TEST(ArgParserTest, Errors) {
  EXPECT_FALSE(Make().Parse({"--nope"}).ok());
  EXPECT_FALSE(Make().Parse({"--bits"}).ok());
  EXPECT_FALSE(Make().Parse({"-x"}).ok());
  EXPECT_FALSE(Make().Parse({"--quiet=maybe"}).ok());
  ArgParser p = Make();
  ASSERT_TRUE(p.Parse({"--bits", "x", "--size", "12parsecs"}).ok());
  EXPECT_FALSE(p.GetInt("bits", 2, 4).ok());
  EXPECT_FALSE(p.GetBytes("size").ok());
  ArgParser h = Make();
  ASSERT_TRUE(h.Parse({"--help"}).ok());
  EXPECT_TRUE(h.help_requested());
  EXPECT_NE(h.Help().find("--group-size VALUE"), std::string::npos);
}

TEST(ArgParserTest, Bytes) {
  ArgParser p = Make();
  ASSERT_TRUE(p.Parse({"--size", "200KiB"}).ok());
  EXPECT_EQ(*p.GetBytes("size"), 200u * 1024);
  ArgParser q = Make();
  ASSERT_TRUE(q.Parse({"--size", "2GB"}).ok());
  EXPECT_EQ(*q.GetBytes("size"), 2000000000u);
}

}  // namespace
}  // namespace tq::tqctl
