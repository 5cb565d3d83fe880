#include "kernels/convert.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu.h"
#include "kernels/internal/isa_kernels.h"

namespace quantd {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Independent decoding of an IEEE binary16 value in double.
double HalfByFormula(uint16_t h) {
  const int sign = h >> 15;
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  double v;
  if (e == 0) {
    v = std::ldexp(m, -24);
  } else if (e == 31) {
    v = m == 0 ? std::numeric_limits<double>::infinity()
               : std::numeric_limits<double>::quiet_NaN();
  } else {
    v = std::ldexp(1024 + m, e - 25);
  }
  return sign ? -v : v;
}

TEST(HalfTest, AllBitPatternsDecodeExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    const float f = HalfToFloat(b);
    const double want = HalfByFormula(b);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), want) << h;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
    // Narrowing an exactly representable value gives the pattern back.
    ASSERT_EQ(FloatToHalf(f), b) << h;
  }
}

TEST(HalfTest, NarrowingRoundsHalfToEven) {
  // For each pair of adjacent finite positive halves, the midpoint (exact in
  // f32) goes to the one with the even mantissa; just above/below go to the
  // nearer one.
  for (uint32_t h = 0; h < 0x7BFF; ++h) {
    const double a = HalfByFormula(static_cast<uint16_t>(h));
    const double b = HalfByFormula(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((a + b) / 2);
    ASSERT_EQ(static_cast<double>(mid), (a + b) / 2);
    const uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    ASSERT_EQ(FloatToHalf(mid), even) << h;
    ASSERT_EQ(FloatToHalf(-mid), even | 0x8000) << h;
    ASSERT_EQ(FloatToHalf(std::nextafter(mid, 0.0f)), h) << h;
    ASSERT_EQ(FloatToHalf(std::nextafter(mid, 1e9f)), h + 1) << h;
  }
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65519.99f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // ties to even -> Inf
  EXPECT_EQ(FloatToHalf(1e10f), 0x7C00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(FloatToHalf(1e-10f), 0x0000);
  EXPECT_EQ(FloatToHalf(-1e-10f), 0x8000);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE((nan & 0x7C00) == 0x7C00 && (nan & 0x3FF) != 0);
}

TEST(BFloat16Test, AllBitPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    const float f = BFloat16ToFloat(b);
    ASSERT_EQ(Bits(f), h << 16) << h;
    if (!std::isnan(f)) {
      ASSERT_EQ(FloatToBFloat16(f), b) << h;
    } else {
      ASSERT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(f)))) << h;
    }
  }
  // Ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(FloatToBFloat16(1.0f + 1.0f / 256), 0x3F80);
  EXPECT_EQ(FloatToBFloat16(1.0f + 3.0f / 256), 0x3F82);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

struct ConvertPath {
  const char* name;
  Isa isa;
  int64_t (*f16)(const uint16_t*, size_t, float*);
  int64_t (*bf16)(const uint16_t*, size_t, float*);
  int64_t (*f32)(const float*, size_t, float*);
};

const ConvertPath kPaths[] = {
    {"avx2", Isa::kAvx2, internal::ConvertF16Avx2, internal::ConvertBF16Avx2,
     internal::ConvertF32Avx2},
    {"avx512", Isa::kAvx512, internal::ConvertF16Avx512,
     internal::ConvertBF16Avx512, internal::ConvertF32Avx512},
};

TEST(ConvertToF32Test, VectorPathsMatchScalarOnAllFinitePatterns) {
  std::vector<uint16_t> halfs, bf16s;
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7C00) != 0x7C00) halfs.push_back(static_cast<uint16_t>(h));
    if ((h & 0x7F80) != 0x7F80) bf16s.push_back(static_cast<uint16_t>(h));
  }
  for (const ConvertPath& path : kPaths) {
    if (static_cast<int>(internal::CpuIsa()) < static_cast<int>(path.isa)) {
      continue;
    }
    for (size_t n : {halfs.size(), size_t{1}, size_t{7}, size_t{17}, size_t{0}}) {
      SCOPED_TRACE(testing::Message() << path.name << " n " << n);
      std::vector<float> want(n), got(n);
      ASSERT_TRUE(ConvertToF32Reference(DType::kF16, halfs.data(), n, want.data()).ok());
      ASSERT_EQ(path.f16(halfs.data(), n, got.data()), -1);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(Bits(want[i]), Bits(got[i])) << i;
      ASSERT_TRUE(ConvertToF32Reference(DType::kBF16, bf16s.data(), n, want.data()).ok());
      ASSERT_EQ(path.bf16(bf16s.data(), n, got.data()), -1);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(Bits(want[i]), Bits(got[i])) << i;
      ASSERT_EQ(path.f32(want.data(), n, got.data()), -1);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(Bits(want[i]), Bits(got[i])) << i;
    }
  }
}

TEST(ConvertToF32Test, UnalignedSourceAndDispatcher) {
  std::mt19937 rng(5);
  std::vector<uint8_t> bytes(2 * 1001 + 1);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng() & 0x3B);  // finite
  std::vector<float> want(1000), got(1000);
  for (DType d : {DType::kF16, DType::kBF16}) {
    ASSERT_TRUE(ConvertToF32Reference(d, bytes.data() + 1, 1000, want.data()).ok());
    ASSERT_TRUE(ConvertToF32(d, bytes.data() + 1, 1000, got.data()).ok());
    for (size_t i = 0; i < 1000; ++i) ASSERT_EQ(Bits(want[i]), Bits(got[i]));
  }
}

TEST(ConvertToF32Test, NonFiniteIsInvalidArgumentNamingFirstIndex) {
  struct Case {
    DType dtype;
    uint32_t pattern;
    const char* word;
  };
  const Case cases[] = {
      {DType::kF16, 0x7E00, "NaN"},      {DType::kF16, 0x7C00, "+Inf"},
      {DType::kF16, 0xFC00, "-Inf"},     {DType::kBF16, 0x7FC0, "NaN"},
      {DType::kBF16, 0x7F80, "+Inf"},    {DType::kBF16, 0xFF80, "-Inf"},
      {DType::kF32, 0x7FC00000, "NaN"},  {DType::kF32, 0x7F800000, "+Inf"},
      {DType::kF32, 0xFF800000, "-Inf"},
  };
  for (const Case& c : cases) {
    for (size_t bad : {size_t{0}, size_t{5}, size_t{40}, size_t{99}}) {
      SCOPED_TRACE(testing::Message() << DTypeName(c.dtype) << " " << c.word
                                      << " at " << bad);
      const int size = DTypeSize(c.dtype);
      std::vector<uint8_t> bytes(100 * static_cast<size_t>(size), 0);
      std::memcpy(bytes.data() + bad * size, &c.pattern, static_cast<size_t>(size));
      if (bad + 1 < 100) {
        std::memcpy(bytes.data() + (bad + 1) * size, &c.pattern, static_cast<size_t>(size));
      }
      std::vector<float> out(100);
      const std::string want = "element " + std::to_string(bad) + " is " + c.word;
      absl::Status s = ConvertToF32(c.dtype, bytes.data(), 100, out.data());
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(s.message(), want);
      s = ConvertToF32Reference(c.dtype, bytes.data(), 100, out.data());
      EXPECT_EQ(s.message(), want);
    }
  }
}

}  // namespace
}  // namespace quantd
