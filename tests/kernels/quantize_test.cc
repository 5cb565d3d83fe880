#include "kernels/quantize.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "kernels/cpu.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/layout.h"
#include "kernels/scheme.h"
#include "tests/kernels/scheme_cases.h"

namespace quantd {
namespace {

struct IsaPath {
  const char* name;
  Isa isa;
  internal::CheckedQuantizeFn fn;
};

const IsaPath kPaths[] = {
    {"scalar", Isa::kScalar, &internal::QuantizeIntScalar},
    {"avx2", Isa::kAvx2, &internal::QuantizeIntAvx2},
    {"avx512", Isa::kAvx512, &internal::QuantizeIntAvx512},
};

bool CpuHas(Isa isa) {
  return static_cast<int>(internal::CpuIsa()) >= static_cast<int>(isa);
}

using ::quantd::testing::RandomValues;

void ExpectSameQuantized(const QuantizedTensor& want, const QuantizedTensor& got) {
  ASSERT_EQ(want.codes.size(), got.codes.size());
  for (size_t i = 0; i < want.codes.size(); ++i) {
    ASSERT_EQ(want.codes[i], got.codes[i]) << "code byte " << i;
  }
  ASSERT_EQ(want.scales.size(), got.scales.size());
  for (size_t i = 0; i < want.scales.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &want.scales[i], 4);
    std::memcpy(&b, &got.scales[i], 4);
    ASSERT_EQ(a, b) << "scale " << i << ": " << want.scales[i] << " vs "
                    << got.scales[i];
  }
  ASSERT_EQ(want.zero_points, got.zero_points);
}

struct ShapeCase {
  std::vector<int64_t> shape;
};

const std::vector<std::vector<int64_t>> kShapes = {
    {},       {1},     {7},     {13},     {1, 1},   {3, 5},  {7, 33},
    {4, 127}, {2, 9},  {5, 24}, {3, 256}, {64, 4096}, {2, 3, 96},
};

using ::quantd::testing::SchemesFor;

TEST(QuantizeTest, EveryFastPathMatchesReferenceBitExact) {
  const uint32_t seed = 20240601;
  int cases = 0;
  for (const IsaPath& path : kPaths) {
    if (!CpuHas(path.isa)) continue;
    for (int bits = 2; bits <= 8; ++bits) {
      for (bool symmetric : {true, false}) {
        for (const auto& shape : kShapes) {
          const int64_t row_length = shape.empty() ? 1 : shape.back();
          for (const Scheme& scheme : SchemesFor(bits, symmetric, row_length)) {
            const std::string trace = absl::StrCat(
                path.name, " ", SchemeToString(scheme), " shape [",
                absl::StrJoin(shape, ","), "] seed ", seed);
            SCOPED_TRACE(trace);
            auto layout = MakeLayout(scheme, shape);
            ASSERT_TRUE(layout.ok()) << layout.status();
            const auto n = static_cast<size_t>(layout->num_elements);
            const float spread = (bits + cases) % 3 == 0 ? 1e-3f : 2.0f;
            std::vector<float> x =
                RandomValues(n, seed + static_cast<uint32_t>(cases), spread);
            QuantizedTensor want = AllocateQuantized(*layout);
            QuantizedTensor got = AllocateQuantized(*layout);
            ASSERT_TRUE(QuantizeReference(x.data(), want).ok());
            ASSERT_EQ(path.fn(x.data(), got), -1);
            ExpectSameQuantized(want, got);
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_GT(cases, 500);
}

// int<b>_full (compressed-tensors' full-range convention, an f32 division
// per code): every vector path equals the reference byte for byte.
TEST(QuantizeTest, FullRangeFastPathsMatchReferenceBitExact) {
  const uint32_t seed = 20261123;
  int cases = 0;
  for (const IsaPath& path : kPaths) {
    if (!CpuHas(path.isa)) continue;
    for (int bits = 2; bits <= 8; ++bits) {
      for (const auto& shape : kShapes) {
        const int64_t row_length = shape.empty() ? 1 : shape.back();
        for (Scheme scheme : SchemesFor(bits, true, row_length)) {
          scheme.full_range = true;
          SCOPED_TRACE(absl::StrCat(path.name, " ", SchemeToString(scheme),
                                    " shape [", absl::StrJoin(shape, ","),
                                    "] seed ", seed));
          auto layout = MakeLayout(scheme, shape);
          ASSERT_TRUE(layout.ok()) << layout.status();
          const auto n = static_cast<size_t>(layout->num_elements);
          const float spread = (bits + cases) % 3 == 0 ? 1e-3f : 2.0f;
          std::vector<float> x =
              RandomValues(n, seed + static_cast<uint32_t>(cases), spread);
          if (cases % 5 == 0) std::fill(x.begin(), x.begin() + (n + 1) / 2, 0.0f);
          QuantizedTensor want = AllocateQuantized(*layout);
          QuantizedTensor got = AllocateQuantized(*layout);
          ASSERT_TRUE(QuantizeReference(x.data(), want).ok());
          ASSERT_EQ(path.fn(x.data(), got), -1);
          ExpectSameQuantized(want, got);
          ++cases;
        }
      }
    }
  }
  EXPECT_GT(cases, 100);
}

// The formula by hand: int4 full range, amax 7.5 -> scale 1 exactly; codes
// round half to even and clamp to [-8, 7]; an all-zero group gets
// FLT_EPSILON (not FLT_MIN like the default convention).
TEST(QuantizeTest, KnownCodesInt4FullRange) {
  Scheme scheme = *ParseScheme("int4_full_g8");
  ASSERT_TRUE(scheme.full_range);
  auto layout = MakeLayout(scheme, {2, 8});
  ASSERT_TRUE(layout.ok());
  const std::vector<float> x = {7.5f, -7.5f, 0.5f, 1.5f, 2.5f, -0.5f, 3.4f, -6.6f,
                                0, 0, 0, 0, 0, 0, 0, 0};
  QuantizedTensor q = AllocateQuantized(*layout);
  ASSERT_TRUE(Quantize(x.data(), q).ok());
  EXPECT_EQ(q.scales[0], 1.0f);
  EXPECT_EQ(q.scales[1], FLT_EPSILON);
  std::vector<uint8_t> codes(16);
  UnpackCodes(q.codes.data(), 16, 4, codes.data());
  const std::vector<int> want = {7, -8, 0, 2, 2, 0, 3, -7};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(codes[i], static_cast<uint8_t>(want[i] & 15)) << i;
  }
  // int8: amax / 127.5, so the largest value codes to 127 (not -128).
  auto l8 = MakeLayout(*ParseScheme("int8_full"), {1, 4});
  ASSERT_TRUE(l8.ok());
  const std::vector<float> y = {255.0f, -255.0f, 1.0f, 0.0f};
  QuantizedTensor q8 = AllocateQuantized(*l8);
  ASSERT_TRUE(Quantize(y.data(), q8).ok());
  EXPECT_EQ(q8.scales[0], 2.0f);
  EXPECT_EQ(q8.codes[0], 127);
  EXPECT_EQ(q8.codes[1], static_cast<uint8_t>(-128));
  EXPECT_EQ(q8.codes[2], 0);  // 0.5 rounds to even
}

// QAT import: given scales and zero points, codes clamp(round(x / scale)
// + zero_point); bad inputs are InvalidArgument naming the group.
TEST(QuantizeTest, QuantizeWithScalesKnownCodesAndErrors) {
  auto layout = MakeLayout(*ParseScheme("int4_asym_g4"), {1, 8});
  ASSERT_TRUE(layout.ok());
  const std::vector<float> x = {0.5f, 1.5f, -0.25f, 100.0f, 0.1f, -100.0f, 0.3f, 0.0f};
  const std::vector<float> scales = {0.5f, 0.1f};
  const std::vector<uint8_t> zps = {2, 15};
  QuantizedTensor q = AllocateQuantized(*layout);
  ASSERT_TRUE(QuantizeWithScales(x.data(), scales, zps, q).ok());
  std::vector<uint8_t> codes(8);
  UnpackCodes(q.codes.data(), 8, 4, codes.data());
  // 0.5/0.5=1 -> 3; 1.5/0.5=3 -> 5; -0.5 -> round to -0 -> 2; 200 -> 15;
  // 1 -> 16 -> 15; -1000 -> 0; 3 -> 15 (clamped); 0 -> 15.
  EXPECT_EQ(codes, (std::vector<uint8_t>{3, 5, 2, 15, 15, 0, 15, 15}));
  EXPECT_EQ(q.scales, scales);
  EXPECT_EQ(q.zero_points, zps);
  // A tiny scale cannot overflow the conversion: clamped in f32 first.
  auto sym = MakeLayout(*ParseScheme("int8_tensor"), {2});
  QuantizedTensor t = AllocateQuantized(*sym);
  const std::vector<float> big = {3e38f, -3e38f};
  ASSERT_TRUE(QuantizeWithScales(big.data(), {1e-30f}, {}, t).ok());
  EXPECT_EQ(t.codes, (std::vector<uint8_t>{127, 128}));
  for (const auto& [s, z] :
       std::vector<std::pair<std::vector<float>, std::vector<uint8_t>>>{
           {{0.5f}, {2, 15}},
           {{0.5f, 0.0f}, {2, 15}},
           {{0.5f, std::nanf("")}, {2, 15}},
           {{0.5f, -1.0f}, {2, 15}},
           {{0.5f, 0.1f}, {2}},
           {{0.5f, 0.1f}, {2, 16}}}) {
    QuantizedTensor bad = AllocateQuantized(*layout);
    EXPECT_EQ(QuantizeWithScales(x.data(), s, z, bad).code(),
              absl::StatusCode::kInvalidArgument);
  }
  std::vector<float> nan_x = x;
  nan_x[6] = std::nanf("");
  QuantizedTensor bad = AllocateQuantized(*layout);
  absl::Status st = QuantizeWithScales(nan_x.data(), scales, zps, bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("6"), std::string::npos) << st;
}

TEST(QuantizeTest, DispatchedQuantizeMatchesReference) {
  for (const char* text : {"int8", "int4_g128", "int4_asym_g128", "int3_asym_g64",
                           "int2_tensor", "int5_asym_channel", "int4_full_g128",
                           "int8_full"}) {
    SCOPED_TRACE(text);
    auto scheme = ParseScheme(text);
    ASSERT_TRUE(scheme.ok());
    auto layout = MakeLayout(*scheme, {17, 256});
    ASSERT_TRUE(layout.ok());
    std::vector<float> x = RandomValues(17 * 256, 7, 1.0f);
    QuantizedTensor want = AllocateQuantized(*layout);
    QuantizedTensor got = AllocateQuantized(*layout);
    ASSERT_TRUE(QuantizeReference(x.data(), want).ok());
    ASSERT_TRUE(Quantize(x.data(), got).ok());
    ExpectSameQuantized(want, got);
    // The table's own entries agree too.
    const FormatTraits* f = FindFormat(scheme->format);
    ASSERT_NE(f, nullptr);
    QuantizedTensor via_table = AllocateQuantized(*layout);
    f->fast(x.data(), via_table);
    ExpectSameQuantized(want, via_table);
  }
}

// Round-trip error: |x - x_hat| <= scale/2 (plus float slack) for values in
// the representable range.
TEST(QuantizeTest, DequantizeErrorWithinHalfScale) {
  const uint32_t seed = 99;
  for (int bits = 2; bits <= 8; ++bits) {
    for (bool symmetric : {true, false}) {
      for (const Scheme& scheme : SchemesFor(bits, symmetric, 96)) {
        SCOPED_TRACE(absl::StrCat(SchemeToString(scheme), " seed ", seed));
        auto layout = MakeLayout(scheme, {5, 96});
        ASSERT_TRUE(layout.ok());
        std::vector<float> x = RandomValues(5 * 96, seed, 3.0f);
        QuantizedTensor q = AllocateQuantized(*layout);
        ASSERT_TRUE(Quantize(x.data(), q).ok());
        std::vector<float> y(x.size());
        Dequantize(q, y.data());
        for (size_t i = 0; i < x.size(); ++i) {
          const int64_t g = static_cast<int64_t>(i) / layout->group_size;
          const float scale = q.scales[g];
          // The symmetric range tops at qmax*scale; the asymmetric grid holds
          // the zero exactly, so every x is within half a step of it.
          const float bound = scale * 0.5f * (1.0f + 1e-4f) + 1e-30f;
          ASSERT_LE(std::fabs(x[i] - y[i]), bound)
              << "i=" << i << " x=" << x[i] << " y=" << y[i];
        }
      }
    }
  }
}

TEST(QuantizeTest, AllZeroRowsDequantizeToExactZeros) {
  for (const char* text : {"int8", "int4_asym_g8", "int2_tensor", "int3_asym"}) {
    SCOPED_TRACE(text);
    auto layout = MakeLayout(*ParseScheme(text), {3, 64});
    ASSERT_TRUE(layout.ok());
    std::vector<float> x(3 * 64, 0.0f);
    QuantizedTensor q = AllocateQuantized(*layout);
    ASSERT_TRUE(Quantize(x.data(), q).ok());
    for (float s : q.scales) EXPECT_EQ(s, FLT_MIN);
    std::vector<float> y(x.size(), 1.0f);
    Dequantize(q, y.data());
    for (float v : y) ASSERT_EQ(v, 0.0f);
  }
}

TEST(QuantizeTest, ConstantAndExtremeRowsMatchReference) {
  struct Case {
    const char* name;
    float value;
  };
  const Case cases[] = {
      {"constant 3", 3.0f},           {"constant -7.5", -7.5f},
      {"subnormal", 1e-40f},          {"min normal", FLT_MIN},
      {"near FLT_MAX/2", FLT_MAX / 2}, {"neg near FLT_MAX/2", -FLT_MAX / 2},
  };
  for (const IsaPath& path : kPaths) {
    if (!CpuHas(path.isa)) continue;
    for (const Case& c : cases) {
      for (const char* text : {"int8", "int4_asym_g16", "int3_g8", "int2_asym"}) {
        SCOPED_TRACE(absl::StrCat(path.name, " ", c.name, " ", text));
        auto layout = MakeLayout(*ParseScheme(text), {2, 48});
        ASSERT_TRUE(layout.ok());
        std::vector<float> x(96, c.value);
        x[5] = -c.value / 3;  // not entirely constant in one row
        QuantizedTensor want = AllocateQuantized(*layout);
        QuantizedTensor got = AllocateQuantized(*layout);
        ASSERT_TRUE(QuantizeReference(x.data(), want).ok());
        ASSERT_EQ(path.fn(x.data(), got), -1);
        ExpectSameQuantized(want, got);
        std::vector<float> y(96);
        Dequantize(want, y.data());
        for (float v : y) ASSERT_TRUE(std::isfinite(v));
        for (float s : want.scales) ASSERT_GE(s, FLT_MIN);
      }
    }
  }
}

TEST(QuantizeTest, ConstantRowRoundTripsExactlySymmetric) {
  auto layout = MakeLayout(*ParseScheme("int8"), {2, 16});
  std::vector<float> x(32, 0.25f);
  QuantizedTensor q = AllocateQuantized(*layout);
  ASSERT_TRUE(Quantize(x.data(), q).ok());
  std::vector<float> y(32);
  Dequantize(q, y.data());
  for (float v : y) EXPECT_NEAR(v, 0.25f, 1e-7f);
}

TEST(QuantizeTest, NonFiniteInputIsInvalidArgumentNamingTheIndex) {
  struct Case {
    float value;
    const char* word;
  };
  const Case cases[] = {{std::numeric_limits<float>::quiet_NaN(), "NaN"},
                        {std::numeric_limits<float>::infinity(), "+Inf"},
                        {-std::numeric_limits<float>::infinity(), "-Inf"}};
  for (const Case& c : cases) {
    for (const char* text : {"int8", "int4_asym_g8", "int3_tensor", "int2_g1"}) {
      for (int64_t bad : {0, 37, 1023}) {
        SCOPED_TRACE(absl::StrCat(text, " ", c.word, " at ", bad));
        auto layout = MakeLayout(*ParseScheme(text), {8, 128});
        ASSERT_TRUE(layout.ok());
        std::vector<float> x = RandomValues(1024, 3, 1.0f);
        x[bad] = c.value;
        if (bad + 300 < 1024) x[bad + 300] = c.value;  // only the first counts
        const std::string want = absl::StrCat("element ", bad, " is ", c.word);
        for (const IsaPath& path : kPaths) {
          if (!CpuHas(path.isa)) continue;
          QuantizedTensor q = AllocateQuantized(*layout);
          EXPECT_EQ(path.fn(x.data(), q), bad) << path.name;
        }
        QuantizedTensor q = AllocateQuantized(*layout);
        absl::Status s = Quantize(x.data(), q);
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
        EXPECT_EQ(s.message(), want);
        s = QuantizeReference(x.data(), q);
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
        EXPECT_EQ(s.message(), want);
      }
    }
  }
}

TEST(QuantizeTest, BadDestinationIsInvalidArgument) {
  auto layout = MakeLayout(*ParseScheme("int4_asym_g8"), {2, 16});
  ASSERT_TRUE(layout.ok());
  std::vector<float> x(32, 1.0f);
  QuantizedTensor q = AllocateQuantized(*layout);
  q.codes.pop_back();
  EXPECT_EQ(Quantize(x.data(), q).code(), absl::StatusCode::kInvalidArgument);
  q = AllocateQuantized(*layout);
  q.zero_points.clear();
  EXPECT_EQ(Quantize(x.data(), q).code(), absl::StatusCode::kInvalidArgument);
  q = AllocateQuantized(*layout);
  q.layout.scheme.format = "int9";
  EXPECT_EQ(Quantize(x.data(), q).code(), absl::StatusCode::kInvalidArgument);
  q = AllocateQuantized(*layout);
  q.layout.bits = 3;
  EXPECT_EQ(QuantizeReference(x.data(), q).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(QuantizeTest, KnownCodesInt4Symmetric) {
  // amax 7 -> scale 1, codes are x itself in 4-bit two's complement.
  auto layout = MakeLayout(*ParseScheme("int4_tensor"), {4});
  std::vector<float> x = {1.0f, -1.0f, 7.0f, -2.5f};  // -2.5 -> -2 (even)
  QuantizedTensor q = AllocateQuantized(*layout);
  ASSERT_TRUE(Quantize(x.data(), q).ok());
  EXPECT_EQ(q.scales[0], 1.0f);
  ASSERT_EQ(q.codes.size(), 2u);
  EXPECT_EQ(q.codes[0], 0xF1);  // 1 | (-1 & 15) << 4
  EXPECT_EQ(q.codes[1], 0xE7);  // 7 | (-2 & 15) << 4
}

TEST(QuantizeTest, KnownCodesInt8Asymmetric) {
  // lo = -1, hi = 254/255*... keep it simple: range [-1, 254] -> scale 1.
  auto layout = MakeLayout(*ParseScheme("int8_asym_tensor"), {3});
  std::vector<float> x = {-1.0f, 254.0f, 0.5f};  // 0.5 -> 0 (even) + zp 1
  QuantizedTensor q = AllocateQuantized(*layout);
  ASSERT_TRUE(Quantize(x.data(), q).ok());
  EXPECT_EQ(q.scales[0], 1.0f);
  EXPECT_EQ(q.zero_points[0], 1);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0, 255, 1}));
}

TEST(PackCodesTest, RoundTripAllWidthsAndOddCounts) {
  const uint32_t seed = 12345;
  std::mt19937 rng(seed);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t n : {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 1000}) {
      SCOPED_TRACE(absl::StrCat("bits ", bits, " n ", n, " seed ", seed));
      std::vector<uint8_t> codes(static_cast<size_t>(n));
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      const size_t bytes = static_cast<size_t>((n * bits + 7) / 8);
      std::vector<uint8_t> packed(bytes + 1, 0xAB);  // guard byte
      PackCodes(codes.data(), n, bits, packed.data());
      EXPECT_EQ(packed[bytes], 0xAB) << "wrote past the end";
      // Bit-level check against the stream definition.
      for (int64_t i = 0; i < n; ++i) {
        unsigned v = 0;
        for (int b = 0; b < bits; ++b) {
          const int64_t bit = i * bits + b;
          v |= ((packed[bit / 8] >> (bit % 8)) & 1u) << b;
        }
        ASSERT_EQ(v, codes[i]) << "element " << i;
      }
      std::vector<uint8_t> back(static_cast<size_t>(n));
      UnpackCodes(packed.data(), n, bits, back.data());
      EXPECT_EQ(back, codes);
      if (bits >= 2 && n % 8 == 0 && CpuHas(Isa::kAvx2)) {
        std::vector<uint8_t> fast(bytes + 1, 0xAB);
        internal::PackCodesBmi2(codes.data(), n, bits, fast.data());
        EXPECT_EQ(fast, packed);
      }
    }
  }
}

TEST(FormatTableTest, ListsInt2ToInt8) {
  auto table = FormatTable();
  ASSERT_EQ(table.size(), 7u);
  for (int bits = 2; bits <= 8; ++bits) {
    const FormatTraits* f = FindFormat(absl::StrCat("int", bits));
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->bits, bits);
    EXPECT_TRUE(f->symmetric_ok);
    EXPECT_TRUE(f->asymmetric_ok);
    EXPECT_NE(f->reference, nullptr);
    EXPECT_NE(f->fast, nullptr);
    EXPECT_NE(f->dequantize, nullptr);
  }
  EXPECT_EQ(FindFormat("int9"), nullptr);
  EXPECT_EQ(FindFormat("q4_0"), nullptr);
}

}  // namespace
}  // namespace quantd
