#include "client/json.h"

#include <cmath>
#include <limits>
#include <string>

#include <gtest/gtest.h>

namespace quantd {
namespace {

TEST(JsonTest, ParsesEveryKind) {
  absl::StatusOr<Json> j = ParseJson(
      R"( {"s": "a\"b\\c\n\u00e9\ud83d\ude00", "i": -42, "u": 18446744073709551615,
          "d": 1.5e3, "t": true, "f": false, "n": null, "a": [1, [2, {}]]} )");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ((*j)["s"].get<std::string>(), "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE((*j)["i"].is_number_integer());
  EXPECT_EQ((*j)["i"].get<int64_t>(), -42);
  EXPECT_TRUE((*j)["u"].is_number_unsigned());
  EXPECT_EQ((*j)["u"].get<uint64_t>(), std::numeric_limits<uint64_t>::max());
  EXPECT_TRUE((*j)["d"].is_number_float());
  EXPECT_DOUBLE_EQ((*j)["d"].get<double>(), 1500.0);
  EXPECT_TRUE((*j)["t"].get<bool>());
  EXPECT_FALSE((*j)["f"].get<bool>());
  EXPECT_TRUE((*j)["n"].is_null());
  EXPECT_EQ((*j)["a"][1][1], Json::object());
}

TEST(JsonTest, RoundTrips) {
  const char* texts[] = {
      R"({"a":[1,2.5,-3,"x\u0001y",true,false,null],"b":{"c":{}},"d":[]})",
      R"("just a string")", "0", "-1.25", "[]", "{}",
  };
  for (const char* text : texts) {
    SCOPED_TRACE(text);
    absl::StatusOr<Json> j = ParseJson(text);
    ASSERT_TRUE(j.ok()) << j.status();
    std::string written = WriteJson(*j);
    absl::StatusOr<Json> again = ParseJson(written);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*j, *again);
    EXPECT_EQ(WriteJson(*again), written);
  }
}

TEST(JsonTest, WriterIsCompactAndKeepsOrder) {
  OrderedJson j;
  j["z"] = 1;
  j["a"] = {1, 2};
  j["m"] = "t\"x";
  EXPECT_EQ(WriteJson(j), R"({"z":1,"a":[1,2],"m":"t\"x"})");
  EXPECT_EQ(WritePrettyJson(j, 1), "{\n \"z\": 1,\n \"a\": [\n  1,\n  2\n ],\n"
                                   " \"m\": \"t\\\"x\"\n}\n");
}

TEST(JsonTest, NonFiniteNumbersBecomeNull) {
  OrderedJson j;
  j["inf"] = std::numeric_limits<double>::infinity();
  j["nan"] = std::nan("");
  EXPECT_EQ(WriteJson(j), R"({"inf":null,"nan":null})");
}

TEST(JsonTest, InvalidUtf8IsReplacedWhenWriting) {
  Json j = std::string("a\xff" "b");
  EXPECT_EQ(WriteJson(j), "\"a\xef\xbf\xbd" "b\"");
}

TEST(JsonTest, RejectsMalformedInput) {
  struct Case {
    const char* text;
    const char* want;  // substring of the message
  };
  const Case cases[] = {
      {"", "parse error"},
      {"{", "parse error"},
      {R"({"a":1,})", "parse error"},           // trailing comma
      {R"([1,2,])", "parse error"},
      {R"({"a":1 // c
         })", "parse error"},                    // comments
      {R"({'a':1})", "parse error"},            // single quotes
      {"NaN", "parse error"},
      {"Infinity", "parse error"},
      {"01", "parse error"},                    // leading zero
      {R"("\x")", "parse error"},               // bad escape
      {R"("\ud800")", "parse error"},           // lone surrogate
      {"\"a\x01\"", "parse error"},             // raw control character
      {"\"\xff\"", "parse error"},              // invalid UTF-8
      {"1 2", "parse error"},                   // two values
      {R"({"a":1,"a":2})", "duplicate key \"a\""},
      {R"({"x":{"k":1,"k":1}})", "duplicate key \"k\""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<Json> j = ParseJson(c.text);
    ASSERT_FALSE(j.ok());
    EXPECT_EQ(j.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(j.status().message().find(c.want), std::string::npos)
        << j.status();
  }
}

TEST(JsonTest, DuplicateKeysInSiblingObjectsAreFine) {
  EXPECT_TRUE(ParseJson(R"([{"a":1},{"a":2}])").ok());
  EXPECT_TRUE(ParseJson(R"({"a":{"a":{"a":1}}})").ok());
}

TEST(JsonTest, DuplicateKeysCanBeAllowed) {
  JsonParseOptions options;
  options.allow_duplicate_keys = true;
  absl::StatusOr<Json> j = ParseJson(R"({"a":1,"a":2})", options);
  ASSERT_TRUE(j.ok()) << j.status();
}

TEST(JsonTest, LimitsNesting) {
  std::string deep(65, '[');
  deep += std::string(65, ']');
  absl::StatusOr<Json> j = ParseJson(deep);
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("nesting"), std::string::npos);
  std::string ok(64, '[');
  ok += std::string(64, ']');
  EXPECT_TRUE(ParseJson(ok).ok());
}

}  // namespace
}  // namespace quantd
