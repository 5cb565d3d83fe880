#include "kernels/scheme.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/ggml_formats.h"

namespace quantd {
namespace {

TEST(DTypeTest, SizesNamesAndParse) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4);
  EXPECT_EQ(DTypeSize(DType::kF16), 2);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(ParseDType("F64").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GranularityName(Granularity::kPerGroup), "group");
}

TEST(ParseSchemeTest, ValidTexts) {
  struct Case {
    const char* text;
    const char* format;
    bool symmetric;
    Granularity granularity;
    int64_t group_size;
    const char* canonical;
  };
  const Case cases[] = {
      {"int8", "int8", true, Granularity::kPerChannel, 0, "int8_sym_channel"},
      {"int4_asym_g128", "int4", false, Granularity::kPerGroup, 128,
       "int4_asym_g128"},
      {"int3_tensor_sym", "int3", true, Granularity::kPerTensor, 0,
       "int3_sym_tensor"},
      {"int2_g1_asym", "int2", false, Granularity::kPerGroup, 1, "int2_asym_g1"},
      {"int7_channel", "int7", true, Granularity::kPerChannel, 0,
       "int7_sym_channel"},
      {"int5_sym", "int5", true, Granularity::kPerChannel, 0, "int5_sym_channel"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto s = ParseScheme(c.text);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->format, c.format);
    EXPECT_EQ(s->symmetric, c.symmetric);
    EXPECT_EQ(s->granularity, c.granularity);
    EXPECT_EQ(s->group_size, c.group_size);
    EXPECT_EQ(SchemeToString(*s), c.canonical);
    auto again = ParseScheme(SchemeToString(*s));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *s);
  }
}

TEST(ParseSchemeTest, InvalidTexts) {
  // Which texts are refused: tests/data/shared_cases.json, checked for both
  // languages (tests/client/shared_cases_test.cc). Here: what the error says.
  EXPECT_NE(ParseScheme("int9").status().message().find("int9"),
            std::string::npos);
}

TEST(ParseSchemeTest, MethodSuffixesRoundTrip) {
  struct Case {
    const char* text;
    const char* canonical;
    MethodOptions method;
  };
  MethodOptions gptq{.method = Method::kGptq};
  MethodOptions gptq_opts = gptq;
  gptq_opts.act_order = true;
  gptq_opts.damp_percent = 0.05;
  MethodOptions gptq_all = gptq_opts;
  gptq_all.static_groups = true;
  gptq_all.block_size = 64;
  MethodOptions awq{.method = Method::kAwq};
  MethodOptions awq_opts = awq;
  awq_opts.n_grid = 10;
  awq_opts.clip_search = false;
  MethodOptions sq{.method = Method::kSmoothQuant};
  MethodOptions sq_half = sq;
  sq_half.alpha = 0.5;
  const Case cases[] = {
      {"int4_asym_g128+gptq", "int4_asym_g128+gptq", gptq},
      {"int4_g128+gptq(act_order,damp=0.05)",
       "int4_sym_g128+gptq(act_order,damp=0.05)", gptq_opts},
      {"int4_g128+gptq(block=64,damp=0.05,static_groups,act_order)",
       "int4_sym_g128+gptq(act_order,static_groups,damp=0.05,block=64)",
       gptq_all},
      {"int4_g128+gptq(damp=0.01,block=128)", "int4_sym_g128+gptq", gptq},
      {"int4_asym_g128+awq", "int4_asym_g128+awq", awq},
      {"int3_g128+awq(noclip,grid=10)", "int3_sym_g128+awq(grid=10,noclip)",
       awq_opts},
      {"int8+smoothquant(alpha=0.5)", "int8_sym_channel+smoothquant(alpha=0.5)",
       sq_half},
      {"int8+smoothquant", "int8_sym_channel+smoothquant", sq},
      {"int8+rtn", "int8_sym_channel", MethodOptions{}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto s = ParseScheme(c.text);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->method, c.method);
    EXPECT_EQ(SchemeToString(*s), c.canonical);
    auto again = ParseScheme(SchemeToString(*s));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, *s);
  }
  // Plain schemes are unchanged: RTN, no suffix.
  EXPECT_EQ(ParseScheme("int4_asym_g128")->method, MethodOptions{});
  EXPECT_EQ(SchemeToString(*ParseScheme("int4_asym_g128")), "int4_asym_g128");
  // A value that needs all its digits still round-trips.
  Scheme odd = *ParseScheme("int4+gptq");
  odd.method.damp_percent = 0.1 + 0.2;
  EXPECT_EQ(*ParseScheme(SchemeToString(odd)), odd);
}

TEST(ParseSchemeTest, InvalidMethodSuffixes) {
  // Which texts are refused: tests/data/shared_cases.json, checked for both
  // languages (tests/client/shared_cases_test.cc). Here: what the error says.
  EXPECT_NE(ParseScheme("q4_0+awq").status().message().find("Q4_0"),
            std::string::npos);
  // GPTQ is the one method a ggml block format takes, without static_groups.
  absl::StatusOr<Scheme> gptq = ParseScheme("q4_k+gptq(act_order,damp=0.05)");
  ASSERT_TRUE(gptq.ok()) << gptq.status();
  EXPECT_EQ(gptq->format, "Q4_K");
  EXPECT_EQ(gptq->method.method, Method::kGptq);
  EXPECT_EQ(SchemeToString(*gptq), "Q4_K+gptq(act_order,damp=0.05)");
  EXPECT_EQ(*ParseScheme(SchemeToString(*gptq)), *gptq);
  absl::StatusOr<Layout> layout = MakeLayout(*gptq, {4, 256});
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->scheme.method, gptq->method);
  Scheme block = *ParseScheme("Q4_0");
  block.method.method = Method::kAwq;
  EXPECT_EQ(MakeLayout(block, {4, 32}).status().code(),
            absl::StatusCode::kInvalidArgument);
  block.method.method = Method::kGptq;
  block.method.static_groups = true;
  EXPECT_EQ(MakeLayout(block, {4, 32}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The float, codebook and HQQ formats and int<b>_full: text in any case,
// canonical lower-case text out, resolved defaults, round trip.
TEST(ParseSchemeTest, FloatCodebookHqqAndFullRangeTexts) {
  struct Case {
    const char* text;
    const char* canonical;
    LayoutKind kind;
    Granularity granularity;
    int64_t group_size;
    bool double_quant;
  };
  using G = Granularity;
  using K = LayoutKind;
  const Case cases[] = {
      {"fp8_e4m3", "fp8_e4m3_tensor", K::kFloat, G::kPerTensor, 0, false},
      {"FP8_E4M3_channel", "fp8_e4m3_channel", K::kFloat, G::kPerChannel, 0, false},
      {"fp8_e4m3_block", "fp8_e4m3_g128", K::kFloat, G::kPerGroup, 128, false},
      {"fp8_e5m2_g64", "fp8_e5m2_g64", K::kFloat, G::kPerGroup, 64, false},
      {"fp8_e5m2_tensor", "fp8_e5m2_tensor", K::kFloat, G::kPerTensor, 0, false},
      {"fp4_e2m1", "fp4_e2m1_g32", K::kFloat, G::kPerGroup, 32, false},
      {"fp4_e2m1_block", "fp4_e2m1_g32", K::kFloat, G::kPerGroup, 32, false},
      {"Fp4_E2m1_Channel", "fp4_e2m1_channel", K::kFloat, G::kPerChannel, 0, false},
      {"nf4", "nf4_g64", K::kFloat, G::kPerGroup, 64, false},
      {"NF4_dq", "nf4_g64_dq", K::kFloat, G::kPerGroup, 64, true},
      {"nf4_dq_g128", "nf4_g128_dq", K::kFloat, G::kPerGroup, 128, true},
      {"ocp_mxfp8", "ocp_mxfp8", K::kFloat, G::kPerGroup, 32, false},
      {"OCP_MXFP4", "ocp_mxfp4", K::kFloat, G::kPerGroup, 32, false},
      {"modelopt_nvfp4", "modelopt_nvfp4", K::kFloat, G::kPerGroup, 16, false},
      {"kmeans4", "kmeans4_channel", K::kCodebook, G::kPerChannel, 0, false},
      {"KMEANS1_tensor", "kmeans1_tensor", K::kCodebook, G::kPerTensor, 0, false},
      {"kmeans8_g128", "kmeans8_g128", K::kCodebook, G::kPerGroup, 128, false},
      {"pot2", "pot2_channel", K::kCodebook, G::kPerChannel, 0, false},
      {"pot8_g32", "pot8_g32", K::kCodebook, G::kPerGroup, 32, false},
      {"hqq4", "hqq4_g64", K::kHqq, G::kPerGroup, 64, false},
      {"HQQ1_channel", "hqq1_channel", K::kHqq, G::kPerChannel, 0, false},
      {"hqq8_g128", "hqq8_g128", K::kHqq, G::kPerGroup, 128, false},
      {"int4_full_g128", "int4_full_g128", K::kInt, G::kPerGroup, 128, false},
      {"int8_full", "int8_full_channel", K::kInt, G::kPerChannel, 0, false},
      {"int3_tensor_full", "int3_full_tensor", K::kInt, G::kPerTensor, 0, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<Scheme> s = ParseScheme(c.text);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(LayoutKindOf(*s), c.kind);
    EXPECT_EQ(s->granularity, c.granularity);
    EXPECT_EQ(s->group_size, c.group_size);
    EXPECT_EQ(s->double_quant, c.double_quant);
    EXPECT_EQ(s->full_range, absl::StrContains(c.text, "full"));
    EXPECT_TRUE(s->symmetric);
    EXPECT_EQ(SchemeToString(*s), c.canonical);
    absl::StatusOr<Scheme> again = ParseScheme(SchemeToString(*s));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, *s);
    EXPECT_EQ(GgmlFormatOf(*s), nullptr);
  }
  // ggml's own MXFP4 stays the ggml block format.
  EXPECT_EQ(LayoutKindOf(*ParseScheme("mxfp4")), LayoutKind::kGgmlBlock);
  EXPECT_EQ(ParseScheme("MXFP4")->format, "MXFP4");
}

TEST(ParseSchemeTest, FloatCodebookHqqRefusals) {
  // Which texts are refused: tests/data/shared_cases.json, checked for both
  // languages (tests/client/shared_cases_test.cc). Here: what the error says.
  // "+rtn" is the default and allowed.
  EXPECT_TRUE(ParseScheme("nf4+rtn").ok());
  EXPECT_NE(ParseScheme("nf4+gptq").status().message().find("nf4"),
            std::string::npos);
}

TEST(MakeLayoutTest, FloatCodebookHqqLayouts) {
  struct Case {
    const char* scheme;
    std::vector<int64_t> shape;
    int bits;
    int64_t group_size, num_groups, packed_bytes, block_scales, second_scales,
        codebooks;
    bool float_zero_points;
    double bits_per_weight;
  };
  const double n = 4.0 * 512;
  const Case cases[] = {
      {"fp8_e4m3", {4, 512}, 8, 2048, 1, 2048, 0, 0, 0, false, 8 + 32 / n},
      {"fp8_e5m2_channel", {4, 512}, 8, 512, 4, 2048, 0, 0, 0, false,
       8 + 128 / n},
      {"fp4_e2m1", {4, 512}, 4, 32, 64, 1024, 0, 0, 0, false, 5},
      {"nf4", {4, 512}, 4, 64, 32, 1024, 0, 0, 0, false, 4.5},
      {"nf4_g32_dq", {4, 512}, 4, 32, 0, 1024, 64, 1, 0, false,
       4 + (64 * 8 + 32 + 32) / n},
      {"ocp_mxfp8", {4, 512}, 8, 32, 0, 2048, 64, 0, 0, false, 8.25},
      {"ocp_mxfp4", {4, 512}, 4, 32, 0, 1024, 64, 0, 0, false, 4.25},
      {"modelopt_nvfp4", {4, 512}, 4, 16, 0, 1024, 128, 0, 0, false,
       4.5 + 32 / n},
      {"kmeans3", {4, 512}, 3, 512, 0, 768, 0, 0, 4, false, 3 + 4 * 8 * 32 / n},
      {"pot4_g128", {4, 512}, 4, 128, 16, 1024, 0, 0, 16, false, 4.25},
      {"hqq4", {4, 512}, 4, 64, 32, 1024, 0, 0, 0, true, 5},
      {"hqq3_channel", {4, 512}, 3, 512, 4, 768, 0, 0, 0, true, 3.125},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scheme);
    absl::StatusOr<Layout> l = MakeLayout(*ParseScheme(c.scheme), c.shape);
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_EQ(l->bits, c.bits);
    EXPECT_EQ(l->group_size, c.group_size);
    EXPECT_EQ(l->num_groups, c.num_groups);
    EXPECT_EQ(l->packed_bytes, c.packed_bytes);
    EXPECT_EQ(l->num_block_scales, c.block_scales);
    EXPECT_EQ(l->num_second_scales, c.second_scales);
    EXPECT_EQ(l->num_codebooks, c.codebooks);
    EXPECT_EQ(l->float_zero_points, c.float_zero_points);
    EXPECT_DOUBLE_EQ(l->BitsPerWeight(), c.bits_per_weight);
    EXPECT_FALSE(l->IsBlockFormat());
  }
}

TEST(MakeLayoutTest, FloatCodebookHqqShapeErrorsNameTheShape) {
  struct Case {
    const char* scheme;
    std::vector<int64_t> shape;
  };
  for (const Case& c : {Case{"fp4_e2m1_channel", {2, 33}}, Case{"nf4", {2, 96}},
                        Case{"ocp_mxfp8", {2, 48}}, Case{"modelopt_nvfp4", {3, 24}},
                        Case{"fp8_e4m3_block", {2, 192}},
                        Case{"kmeans4_g64", {2, 96}}, Case{"hqq4", {2, 96}}}) {
    SCOPED_TRACE(c.scheme);
    absl::StatusOr<Layout> l = MakeLayout(*ParseScheme(c.scheme), c.shape);
    ASSERT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(l.status().message().find(absl::StrCat(c.shape.back())),
              std::string::npos)
        << l.status();
  }
  // Fields a family does not take.
  Scheme asym = *ParseScheme("nf4");
  asym.symmetric = false;
  EXPECT_EQ(MakeLayout(asym, {2, 64}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Scheme dq = *ParseScheme("fp4_e2m1");
  dq.double_quant = true;
  EXPECT_EQ(MakeLayout(dq, {2, 64}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Scheme full_asym = *ParseScheme("int4_asym");
  full_asym.full_range = true;
  EXPECT_EQ(MakeLayout(full_asym, {2, 64}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Scheme full_gptq = *ParseScheme("int4_full+rtn");
  full_gptq.method.method = Method::kGptq;
  EXPECT_EQ(MakeLayout(full_gptq, {2, 64}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Scheme q4 = *ParseScheme("Q4_0");
  q4.full_range = true;
  EXPECT_EQ(MakeLayout(q4, {2, 64}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MakeLayoutTest, Shapes) {
  struct Case {
    const char* scheme;
    std::vector<int64_t> shape;
    int64_t rows, row_length, group_size, num_groups, num_elements,
        packed_bytes;
  };
  const Case cases[] = {
      {"int8", {}, 1, 1, 1, 1, 1, 1},
      {"int8", {7}, 1, 7, 7, 1, 7, 7},
      {"int4_tensor", {3, 5}, 3, 5, 15, 1, 15, 8},
      {"int4_g128", {4096, 11008}, 4096, 11008, 128, 4096 * 86,
       4096LL * 11008, 4096LL * 11008 / 2},
      {"int3_asym_g3", {2, 9}, 2, 9, 3, 6, 18, 7},
      {"int2_channel", {2, 3, 4}, 6, 4, 4, 6, 24, 6},
      {"int5_g1", {1, 1}, 1, 1, 1, 1, 1, 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scheme);
    auto layout = MakeLayout(*ParseScheme(c.scheme), c.shape);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->shape, c.shape);
    EXPECT_EQ(layout->rows, c.rows);
    EXPECT_EQ(layout->row_length, c.row_length);
    EXPECT_EQ(layout->group_size, c.group_size);
    EXPECT_EQ(layout->num_groups, c.num_groups);
    EXPECT_EQ(layout->num_elements, c.num_elements);
    EXPECT_EQ(layout->packed_bytes, c.packed_bytes);
  }
}

TEST(MakeLayoutTest, BitsPerWeight) {
  auto sym = MakeLayout(*ParseScheme("int4_g128"), {4, 256});
  ASSERT_TRUE(sym.ok());
  EXPECT_DOUBLE_EQ(sym->BitsPerWeight(), 4.0 + 32.0 / 128);
  auto asym = MakeLayout(*ParseScheme("int4_asym_g128"), {4, 256});
  ASSERT_TRUE(asym.ok());
  EXPECT_DOUBLE_EQ(asym->BitsPerWeight(), 4.0 + 40.0 / 128);
  auto odd = MakeLayout(*ParseScheme("int3_tensor"), {3});
  ASSERT_TRUE(odd.ok());  // 2 bytes of codes + 32-bit scale over 3 weights
  EXPECT_DOUBLE_EQ(odd->BitsPerWeight(), (16.0 + 32.0) / 3);
}

// Only GPTQ's act_order with dynamic groups of less than a row forms groups
// out of column order and needs the group index.
TEST(MakeLayoutTest, GroupIndexOnlyForActOrderWithDynamicGroups) {
  const struct {
    const char* scheme;
    bool group_index;
  } cases[] = {
      {"int4_asym_g128+gptq(act_order)", true},
      {"int3_g64+gptq(act_order,damp=0.05)", true},
      {"int4_asym_g128+gptq", false},
      {"int4_asym_g128+gptq(act_order,static_groups)", false},
      {"int4_channel+gptq(act_order)", false},
      {"int4_asym_g256+gptq(act_order)", false},  // one group per row
      {"int4_asym_g128+awq", false},
      {"int4_asym_g128", false},
      {"Q4_K+gptq(act_order)", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.scheme);
    absl::StatusOr<Scheme> scheme = ParseScheme(c.scheme);
    ASSERT_TRUE(scheme.ok()) << scheme.status();
    absl::StatusOr<Layout> layout = MakeLayout(*scheme, {4, 256});
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->group_index, c.group_index);
  }
  // The index costs 32 bits per column, spread over the rows.
  auto indexed = MakeLayout(*ParseScheme("int4_asym_g128+gptq(act_order)"),
                            {4, 256});
  ASSERT_TRUE(indexed.ok());
  EXPECT_DOUBLE_EQ(indexed->BitsPerWeight(), 4.0 + 40.0 / 128 + 32.0 / 4);
}

TEST(MakeLayoutTest, Errors) {
  struct Case {
    Scheme scheme;
    std::vector<int64_t> shape;
    const char* needle;
  };
  Scheme g5 = *ParseScheme("int4_g5");
  Scheme g0 = g5;
  g0.group_size = 0;
  Scheme unknown;
  unknown.format = "int12";
  const int64_t big = std::numeric_limits<int64_t>::max() / 2;
  const Case cases[] = {
      {g5, {4, 12}, "does not divide"},
      {g0, {4, 12}, "group_size 0"},
      {unknown, {4}, "int12"},
      {Scheme{}, {4, 0}, "dimension 1"},
      {Scheme{}, {-1}, "is -1"},
      {Scheme{}, {big, 4}, "int64"},
      {Scheme{}, {big / 4, 3}, "overflows"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.needle);
    auto layout = MakeLayout(c.scheme, c.shape);
    ASSERT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(layout.status().message().find(c.needle), std::string::npos)
        << layout.status();
  }
}

TEST(ParseSchemeTest, GgmlBlockFormatsByNameAnyCase) {
  ASSERT_FALSE(GgmlFormatTable().empty());
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const std::string upper = f.name;
    for (const std::string& text :
         {upper, absl::AsciiStrToLower(upper),
          absl::StrCat(absl::AsciiStrToLower(upper.substr(0, 1)),
                       upper.substr(1))}) {
      SCOPED_TRACE(text);
      auto s = ParseScheme(text);
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(s->format, upper);
      EXPECT_EQ(GgmlFormatOf(*s), &f);
      EXPECT_EQ(SchemeToString(*s), upper);
      Scheme want;
      want.format = upper;
      EXPECT_EQ(*s, want);  // the other fields are the defaults
    }
  }
  EXPECT_EQ(GgmlFormatOf(*ParseScheme("int4_g32")), nullptr);
  EXPECT_EQ(SchemeToString(*ParseScheme("q8_0")), "Q8_0");
}

TEST(ParseSchemeTest, GgmlBlockFormatsTakeNoOptions) {
  // Which texts are refused: tests/data/shared_cases.json, checked for both
  // languages (tests/client/shared_cases_test.cc). Here: what the error says.
  EXPECT_NE(ParseScheme("q4_0_g32").status().message().find("Q4_0"),
            std::string::npos);
}

TEST(MakeLayoutTest, GgmlBlockFormatsForEveryTableEntry) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const int64_t row_length = int64_t{3} * f.block_size;
    const std::vector<int64_t> shape = {2, 5, row_length};
    auto layout = MakeLayout(*ParseScheme(f.name), shape);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_TRUE(layout->IsBlockFormat());
    EXPECT_EQ(layout->scheme.format, f.name);
    EXPECT_EQ(layout->shape, shape);
    EXPECT_EQ(layout->rows, 10);
    EXPECT_EQ(layout->row_length, row_length);
    EXPECT_EQ(layout->num_elements, 10 * row_length);
    EXPECT_EQ(layout->block_size, f.block_size);
    EXPECT_EQ(layout->block_bytes, f.block_bytes);
    EXPECT_EQ(layout->group_size, f.block_size);
    EXPECT_EQ(layout->num_groups, 0);
    EXPECT_EQ(layout->bits, 0);
    EXPECT_EQ(layout->packed_bytes, 10 * 3 * f.block_bytes);
    EXPECT_EQ(layout->packed_bytes, 10 * *GgmlRowBytes(f, row_length));
    EXPECT_DOUBLE_EQ(layout->BitsPerWeight(),
                     8.0 * f.block_bytes / f.block_size);
    // The lower-case spelling in a hand-made Scheme gives the same layout.
    Scheme lower;
    lower.format = absl::AsciiStrToLower(f.name);
    auto same = MakeLayout(lower, shape);
    ASSERT_TRUE(same.ok()) << same.status();
    EXPECT_EQ(same->scheme.format, f.name);
    EXPECT_EQ(same->packed_bytes, layout->packed_bytes);
    // A 1-D tensor is one row.
    auto one_d = MakeLayout(*ParseScheme(f.name), {f.block_size});
    ASSERT_TRUE(one_d.ok()) << one_d.status();
    EXPECT_EQ(one_d->rows, 1);
    EXPECT_EQ(one_d->packed_bytes, f.block_bytes);
  }
}

TEST(MakeLayoutTest, GgmlKnownBitsPerWeight) {
  struct Case {
    const char* format;
    double bits_per_weight;
  };
  for (const Case& c : {Case{"Q4_0", 4.5}, Case{"Q4_1", 5.0},
                        Case{"Q5_0", 5.5}, Case{"Q5_1", 6.0},
                        Case{"Q8_0", 8.5}, Case{"IQ4_NL", 4.5},
                        Case{"MXFP4", 4.25}}) {
    SCOPED_TRACE(c.format);
    auto layout = MakeLayout(*ParseScheme(c.format), {4, 64});
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_DOUBLE_EQ(layout->BitsPerWeight(), c.bits_per_weight);
  }
}

TEST(MakeLayoutTest, GgmlErrors) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const Scheme scheme = *ParseScheme(f.name);
    // Row length not a multiple of the block size: both are named.
    const int64_t bad_row = f.block_size + 1;
    auto odd = MakeLayout(scheme, {4, bad_row});
    ASSERT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(odd.status().message().find(absl::StrCat(bad_row)),
              std::string::npos) << odd.status();
    EXPECT_NE(odd.status().message().find(absl::StrCat(f.block_size)),
              std::string::npos) << odd.status();
    // A scalar has a row of one element.
    EXPECT_EQ(MakeLayout(scheme, {}).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(MakeLayout(scheme, {4, 0}).status().code(),
              absl::StatusCode::kInvalidArgument);
    // Options a block fixes.
    Scheme asym = scheme;
    asym.symmetric = false;
    Scheme grouped = scheme;
    grouped.granularity = Granularity::kPerGroup;
    grouped.group_size = f.block_size;
    Scheme per_tensor = scheme;
    per_tensor.granularity = Granularity::kPerTensor;
    for (const Scheme& s : {asym, grouped, per_tensor}) {
      auto layout = MakeLayout(s, {4, f.block_size});
      ASSERT_EQ(layout.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(layout.status().message().find(f.name), std::string::npos)
          << layout.status();
    }
  }
}

}  // namespace
}  // namespace quantd
