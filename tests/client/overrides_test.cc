#include "client/overrides.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace quantd {
namespace {

TEST(OverridesTest, ParsesSchemeAndSkip) {
  absl::StatusOr<SchemeOverride> rule = ParseOverride("mlp\\.=int4_asym_g128");
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ(rule->pattern, "mlp\\.");
  ASSERT_TRUE(rule->scheme.has_value());
  EXPECT_EQ(rule->scheme->format, "int4");
  EXPECT_FALSE(rule->scheme->symmetric);
  EXPECT_EQ(rule->scheme->granularity, Granularity::kPerGroup);
  EXPECT_EQ(rule->scheme->group_size, 128);

  absl::StatusOr<SchemeOverride> skip = ParseOverride("lm_head=skip");
  ASSERT_TRUE(skip.ok()) << skip.status();
  EXPECT_FALSE(skip->scheme.has_value());
}

TEST(OverridesTest, SplitsAtTheLastEquals) {
  absl::StatusOr<SchemeOverride> rule = ParseOverride("a=b=int8");
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ(rule->pattern, "a=b");
}

TEST(OverridesTest, RejectsBadRules) {
  const char* bad[] = {"noequals", "=int8", "([=int8", "x=int99", "x=",
                       "x=int4_g"};
  for (const char* text : bad) {
    SCOPED_TRACE(text);
    absl::StatusOr<SchemeOverride> rule = ParseOverride(text);
    ASSERT_FALSE(rule.ok());
    EXPECT_EQ(rule.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(rule.status().message().find(text), std::string::npos)
        << rule.status();
  }
}

TEST(OverridesTest, FirstMatchWinsAndSearchIsUnanchored) {
  absl::StatusOr<std::vector<SchemeOverride>> rules = ParseOverrides(
      {"^lm_head\\.weight$=skip", "self_attn\\.(q|k)_proj=int8",
       "layers\\.0\\.=int4_g64", "proj=int3_tensor"});
  ASSERT_TRUE(rules.ok()) << rules.status();
  struct Case {
    const char* name;
    int want;  // index of the rule, -1 for none
  };
  const Case cases[] = {
      {"lm_head.weight", 0},
      {"x.lm_head.weight", -1},  // anchored rule
      {"model.layers.0.self_attn.q_proj.weight", 1},
      {"model.layers.0.self_attn.v_proj.weight", 2},
      {"model.layers.1.self_attn.v_proj.weight", 3},
      {"model.layers.1.mlp.up_proj.weight", 3},
      {"model.norm.weight", -1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const SchemeOverride* rule = FindOverride(*rules, c.name);
    if (c.want < 0) {
      EXPECT_EQ(rule, nullptr);
    } else {
      EXPECT_EQ(rule, &(*rules)[static_cast<size_t>(c.want)]);
    }
  }
}

TEST(OverridesTest, NoRulesMatchNothing) {
  EXPECT_EQ(FindOverride({}, "anything"), nullptr);
}

}  // namespace
}  // namespace quantd
