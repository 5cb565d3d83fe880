#include "kernels/float_formats.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/internal/float_kernels.h"
#include "kernels/internal/isa_kernels.h"

namespace quantd {
namespace {

using internal::FloatKernels;

uint32_t Bits(float f) { return std::bit_cast<uint32_t>(f); }

// ---------------------------------------------------------------- codecs

TEST(FloatCodecs, KnownEncodings) {
  EXPECT_EQ(FloatToE4m3(0.0f), 0x00);
  EXPECT_EQ(FloatToE4m3(-0.0f), 0x80);
  EXPECT_EQ(FloatToE4m3(1.0f), 0x38);
  EXPECT_EQ(FloatToE4m3(448.0f), 0x7E);
  EXPECT_EQ(FloatToE4m3(464.0f), 0x7E);  // ml_dtypes: NaN; here saturated
  EXPECT_EQ(FloatToE4m3(-1e30f), 0xFE);
  EXPECT_EQ(FloatToE4m3(std::ldexp(1.0f, -9)), 0x01);   // smallest subnormal
  EXPECT_EQ(FloatToE4m3(std::ldexp(1.0f, -10)), 0x00);  // tie to even: 0
  EXPECT_EQ(FloatToE4m3(std::ldexp(3.0f, -10)), 0x02);  // 1.5 ulp: tie to 2
  EXPECT_EQ(FloatToE4m3(std::ldexp(1.0f, -6)), 0x08);   // smallest normal
  EXPECT_EQ(FloatToE4m3(1.0625f), 0x38);  // tie between 1 and 1.125: even
  EXPECT_EQ(FloatToE4m3(1.1875f), 0x3A);  // tie between 1.125 and 1.25: even
  EXPECT_EQ(FloatToE4m3(1e-45f), 0x00);   // f32 subnormal
  EXPECT_EQ(FloatToE5m2(57344.0f), 0x7B);
  EXPECT_EQ(FloatToE5m2(1e9f), 0x7B);
  EXPECT_EQ(FloatToE5m2(std::ldexp(1.0f, -16)), 0x01);
  EXPECT_EQ(FloatToE5m2(1.0f), 0x3C);
  EXPECT_EQ(FloatToE2m1(0.25f), 0x0);  // tie 0 / 0.5: even (0)
  EXPECT_EQ(FloatToE2m1(0.75f), 0x2);  // tie 0.5 / 1: even (1.0)
  EXPECT_EQ(FloatToE2m1(1.25f), 0x2);
  EXPECT_EQ(FloatToE2m1(1.75f), 0x4);
  EXPECT_EQ(FloatToE2m1(2.5f), 0x4);
  EXPECT_EQ(FloatToE2m1(3.5f), 0x6);
  EXPECT_EQ(FloatToE2m1(5.0f), 0x6);
  EXPECT_EQ(FloatToE2m1(5.01f), 0x7);
  EXPECT_EQ(FloatToE2m1(-100.0f), 0xF);
  EXPECT_EQ(FloatToE2m1(-0.1f), 0x8);
}

TEST(FloatCodecs, DecodeSpecialsAndTables) {
  EXPECT_TRUE(std::isnan(E4m3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(E4m3ToFloat(0xFF)));
  EXPECT_EQ(E4m3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(E5m2ToFloat(0x7C), std::numeric_limits<float>::infinity());
  EXPECT_EQ(E5m2ToFloat(0xFC), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(E5m2ToFloat(0x7D)));
  EXPECT_EQ(E5m2ToFloat(0x7B), 57344.0f);
  const float e2m1[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int c = 0; c < 8; ++c) {
    EXPECT_EQ(E2m1ToFloat(static_cast<uint8_t>(c)), e2m1[c]);
    EXPECT_EQ(E2m1ToFloat(static_cast<uint8_t>(c | 8)), -e2m1[c]);
  }
  EXPECT_EQ(E8m0ToFloat(127), 1.0f);
  EXPECT_EQ(E8m0ToFloat(0), std::ldexp(1.0f, -127));
  EXPECT_EQ(E8m0ToFloat(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isnan(E8m0ToFloat(255)));
}

// Every finite code decodes and encodes back to itself; the midpoint
// between neighbours goes to the even one; just above it to the upper one.
TEST(FloatCodecs, RoundTripAndTiesForEveryCode) {
  struct Case {
    const char* name;
    uint8_t (*encode)(float);
    float (*decode)(uint8_t);
    int codes;
  };
  const Case cases[] = {{"e4m3", FloatToE4m3, E4m3ToFloat, 256},
                        {"e5m2", FloatToE5m2, E5m2ToFloat, 256},
                        {"e2m1", FloatToE2m1, E2m1ToFloat, 16}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const int sign_bit = c.codes / 2;
    for (int code = 0; code < sign_bit; ++code) {
      const float v = c.decode(static_cast<uint8_t>(code));
      if (!std::isfinite(v)) continue;
      EXPECT_EQ(c.encode(v), code) << v;
      EXPECT_EQ(c.encode(-v), code | sign_bit) << v;
      const float next = c.decode(static_cast<uint8_t>(code + 1));
      if (code + 1 >= sign_bit || !std::isfinite(next)) {
        // Beyond the largest finite value: saturation.
        EXPECT_EQ(c.encode(v * 4.0f), code);
        continue;
      }
      const float mid = (v + next) / 2.0f;  // exact: few mantissa bits
      const int even = (code % 2 == 0) ? code : code + 1;
      EXPECT_EQ(c.encode(mid), even) << mid;
      EXPECT_EQ(c.encode(std::nextafter(mid, 1e30f)), code + 1) << mid;
      EXPECT_EQ(c.encode(std::nextafter(mid, 0.0f)), code) << mid;
    }
  }
}

TEST(FloatCodecs, DynamicMap) {
  const absl::Span<const float> map = NfDynamicMap();
  ASSERT_EQ(map.size(), 256u);
  for (size_t i = 1; i < map.size(); ++i) EXPECT_LE(map[i - 1], map[i]);
  EXPECT_EQ(map[255], 1.0f);
  int zeros = 0;
  for (float v : map) zeros += v == 0.0f ? 1 : 0;
  EXPECT_EQ(zeros, 1);
  // 127 negatives, 0, 127 positives, 1: map[k] = -map[254 - k].
  for (int k = 0; k < 127; ++k) EXPECT_EQ(map[k], -map[254 - k]) << k;
  EXPECT_EQ(map[127], 0.0f);
  EXPECT_FLOAT_EQ(map[128], 0.55e-6f);
}

// ---------------------------------------------------------------- inputs

std::vector<float> Gaussian(int64_t n, uint32_t seed, bool outlier_channels,
                            int64_t row_length) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    float v = normal(rng);
    if (outlier_channels && (i % row_length) % 37 == 5) v *= 50.0f;
    x[i] = v;
  }
  return x;
}

// Hard values: ties of every element grid at many scales, signed zeros,
// f32 subnormals, values near the f32 limits, all-zero blocks.
std::vector<float> Hard(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  const float grid[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.0f,
                        1.0625f, 448.0f, 464.0f, 57344.0f, 61440.0f, 0.0f};
  std::uniform_int_distribution<int> pick(0, 19);
  std::uniform_int_distribution<int> exponent(-30, 30);
  for (int64_t i = 0; i < n; ++i) {
    const int p = pick(rng);
    float v;
    if (p < 14) {
      v = std::ldexp(grid[p], exponent(rng));
    } else if (p == 14) {
      v = -0.0f;
    } else if (p == 15) {
      v = std::bit_cast<float>(uint32_t{1} + static_cast<uint32_t>(rng() % 1000));
    } else if (p == 16) {
      v = std::numeric_limits<float>::max() / static_cast<float>(1 + rng() % 4);
    } else if (p == 17) {
      v = std::ldexp(1.0f, -126 + static_cast<int>(rng() % 8));
    } else {
      v = std::ldexp(static_cast<float>(rng() % 64), exponent(rng));
    }
    x[i] = (rng() & 1) ? -v : v;
  }
  // An all-zero block and an all -0 block at the start.
  for (int64_t i = 0; i < std::min<int64_t>(n, 64); ++i) x[i] = i < 32 ? 0.0f : -0.0f;
  return x;
}

struct PathCase {
  const char* format;
  const char* granularity;
  int block_size;
  bool double_quant;
};

const PathCase kPathCases[] = {
    {"fp8_e4m3", "tensor", 0, false},  {"fp8_e4m3", "channel", 0, false},
    {"fp8_e4m3", "block", 32, false},  {"fp8_e4m3", "block", 6, false},
    {"fp8_e5m2", "tensor", 0, false},  {"fp8_e5m2", "channel", 0, false},
    {"fp8_e5m2", "block", 128, false}, {"fp4_e2m1", "block", 16, false},
    {"fp4_e2m1", "block", 32, false},  {"fp4_e2m1", "channel", 0, false},
    {"fp4_e2m1", "tensor", 0, false},  {"nf4", "", 64, false},
    {"nf4", "", 32, true},             {"nf4", "", 2, true},
    {"ocp_mxfp8", "", 0, false},       {"ocp_mxfp4", "", 0, false},
    {"modelopt_nvfp4", "", 0, false},
};

struct Path {
  const char* name;
  const FloatKernels* kernels;
};

std::vector<Path> VectorPaths() {
  std::vector<Path> paths;
  const Isa cpu = internal::CpuIsa();
  if (cpu >= Isa::kAvx2) paths.push_back({"avx2", &internal::FloatKernelsAvx2()});
  if (cpu >= Isa::kAvx512) {
    paths.push_back({"avx512", &internal::FloatKernelsAvx512()});
  }
  paths.push_back({"selected", &internal::SelectedFloatKernels()});
  return paths;
}

void ExpectSameFloats(const std::vector<float>& a, const std::vector<float>& b,
                      const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(Bits(a[i]), Bits(b[i])) << what << " [" << i << "] " << a[i]
                                      << " vs " << b[i];
  }
}

void ExpectSame(const FloatQuantized& a, const FloatQuantized& b) {
  ASSERT_EQ(a.codes, b.codes);
  ExpectSameFloats(a.scales, b.scales, "scales");
  ASSERT_EQ(a.block_scales, b.block_scales);
  ExpectSameFloats(a.second_scales, b.second_scales, "second scales");
  EXPECT_EQ(Bits(a.scale_offset), Bits(b.scale_offset));
  EXPECT_EQ(Bits(a.tensor_scale), Bits(b.tensor_scale));
}

// Every vector path gives the reference's bytes and dequantized floats, on
// shapes whose groups end in partial vectors.
TEST(FloatPaths, ByteForByteWithReference) {
  const int64_t shapes[][2] = {{3, 96}, {5, 160}, {1, 2048}, {7, 32}, {2, 6}};
  const uint32_t seed = 20240601;
  for (const PathCase& c : kPathCases) {
    for (const auto& shape : shapes) {
      const int64_t rows = shape[0];
      const int64_t row_length = shape[1];
      absl::StatusOr<FloatFormatOptions> options = ParseFloatFormatOptions(
          c.format, c.granularity, c.block_size, c.double_quant);
      ASSERT_TRUE(options.ok()) << options.status();
      if (!ResolveFloatOptions(*options, rows, row_length).ok()) continue;
      for (int input = 0; input < 3; ++input) {
        SCOPED_TRACE(absl::StrCat(c.format, " ", c.granularity, " block ",
                                  c.block_size, " dq ", c.double_quant, " ",
                                  rows, "x", row_length, " input ", input,
                                  " seed ", seed));
        const int64_t n = rows * row_length;
        const std::vector<float> x =
            input == 0   ? Gaussian(n, seed, false, row_length)
            : input == 1 ? Gaussian(n, seed + 1, true, row_length)
                         : Hard(n, seed + 2);
        absl::StatusOr<FloatQuantized> ref =
            FloatQuantizeReference(x.data(), rows, row_length, *options);
        ASSERT_TRUE(ref.ok()) << ref.status();
        std::vector<float> ref_hat(static_cast<size_t>(n));
        ASSERT_TRUE(FloatDequantizeReference(*ref, ref_hat.data()).ok());
        for (const Path& path : VectorPaths()) {
          SCOPED_TRACE(path.name);
          absl::StatusOr<FloatQuantized> fast = internal::FloatQuantizeWith(
              *path.kernels, x.data(), rows, row_length, *options);
          ASSERT_TRUE(fast.ok()) << fast.status();
          ExpectSame(*ref, *fast);
          std::vector<float> hat(static_cast<size_t>(n));
          ASSERT_TRUE(
              internal::FloatDequantizeWith(*path.kernels, *ref, hat.data()).ok());
          ExpectSameFloats(ref_hat, hat, "dequantized");
        }
        // And the public fast entry points.
        absl::StatusOr<FloatQuantized> fast =
            FloatQuantize(x.data(), rows, row_length, *options);
        ASSERT_TRUE(fast.ok());
        ExpectSame(*ref, *fast);
      }
    }
  }
}

// ---------------------------------------------------------------- recipes

FloatFormatOptions Options(const char* format, const char* granularity = "",
                           int block_size = 0, bool double_quant = false) {
  absl::StatusOr<FloatFormatOptions> o =
      ParseFloatFormatOptions(format, granularity, block_size, double_quant);
  EXPECT_TRUE(o.ok()) << o.status();
  return *o;
}

TEST(FloatRecipes, Fp8PerChannelScalesAndValues) {
  const std::vector<float> x = {448.0f, -224.0f, 1.0f, 0.0f,  // scale 1
                                0.0f,   0.0f,    -0.0f, 0.0f,  // all zero
                                896.0f, 3.0f,    -5.0f, 1.0f};  // scale 2
  absl::StatusOr<FloatQuantized> q =
      FloatQuantize(x.data(), 3, 4, Options("fp8_e4m3", "channel"));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->scales, (std::vector<float>{1.0f, 1.0f, 2.0f}));
  EXPECT_EQ(q->codes[0], 0x7E);
  EXPECT_EQ(q->codes[1], FloatToE4m3(-224.0f));
  EXPECT_EQ(q->codes[6], 0x80);  // -0 keeps its sign
  std::vector<float> hat(12);
  ASSERT_TRUE(FloatDequantize(*q, hat.data()).ok());
  EXPECT_EQ(hat[0], 448.0f);
  EXPECT_EQ(hat[8], 896.0f);
  EXPECT_EQ(hat[9], 3.0f);
  EXPECT_EQ(hat[10], -5.0f);
  EXPECT_EQ(hat[11], 1.0f);
  EXPECT_EQ(FloatBitsPerWeight(*q), 8.0 + 32.0 * 3 / 12);
}

TEST(FloatRecipes, OcpMxSharedExponent) {
  std::vector<float> x(64, 0.0f);
  x[0] = 6.0f;    // block 0: amax 6 -> floor(log2 6) - 2 = 0 -> byte 127
  x[1] = 0.75f;   // a tie: 0.5 / 1.0 -> 1.0 (even)
  x[2] = -1.75f;  // tie 1.5 / 2 -> -2
  x[3] = 3.5f;    // tie 3 / 4 -> 4
  x[33] = std::nextafter(8.0f, 0.0f);  // block 1: floor(log2) = 2 -> byte 127
  absl::StatusOr<FloatQuantized> q =
      FloatQuantize(x.data(), 1, 64, Options("ocp_mxfp4"));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->block_scales, (std::vector<uint8_t>{127, 127}));
  std::vector<float> hat(64);
  ASSERT_TRUE(FloatDequantize(*q, hat.data()).ok());
  EXPECT_EQ(hat[0], 6.0f);
  EXPECT_EQ(hat[1], 1.0f);
  EXPECT_EQ(hat[2], -2.0f);
  EXPECT_EQ(hat[3], 4.0f);
  EXPECT_EQ(hat[33], 6.0f);  // 7.99.. saturates to 6
  // All-zero block: byte 0 (2^-127), zero codes.
  std::vector<float> zeros(32, 0.0f);
  q = FloatQuantize(zeros.data(), 1, 32, Options("ocp_mxfp8"));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->block_scales, std::vector<uint8_t>{0});
  EXPECT_EQ(q->codes, std::vector<uint8_t>(32, 0));
  // MXFP8: amax 1 -> floor(log2 1) - 8 = -8 -> byte 119; the smallest value
  // 2^-20 is 2^-12 after scaling, below E4M3's half subnormal: 0.
  std::vector<float> y(32, 0.5f);
  y[0] = 1.0f;
  y[1] = std::ldexp(1.0f, -20);
  q = FloatQuantize(y.data(), 1, 32, Options("ocp_mxfp8"));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->block_scales, std::vector<uint8_t>{119});
  EXPECT_EQ(q->codes[0], FloatToE4m3(256.0f));
  EXPECT_EQ(q->codes[1], 0);
  EXPECT_DOUBLE_EQ(FloatBitsPerWeight(*q), 8.25);
}

TEST(FloatRecipes, Nvfp4TwoLevelScales) {
  std::vector<float> x(32, 0.0f);
  x[0] = 2688.0f;  // tensor amax: g = 1
  x[1] = -3.0f;
  x[16] = 12.0f;   // block 1: s = 12 / 6 = 2 -> E4M3 2
  x[17] = 5.0f;    // 5 / 2 = 2.5 -> tie 2 / 3 -> 2 (even) -> 4
  absl::StatusOr<FloatQuantized> q =
      FloatQuantize(x.data(), 1, 32, Options("modelopt_nvfp4"));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->tensor_scale, 1.0f);
  EXPECT_EQ(q->block_scales,
            (std::vector<uint8_t>{FloatToE4m3(448.0f), FloatToE4m3(2.0f)}));
  std::vector<float> hat(32);
  ASSERT_TRUE(FloatDequantize(*q, hat.data()).ok());
  EXPECT_EQ(hat[0], 2688.0f);
  EXPECT_EQ(hat[1], 0.0f);  // -3 / 448 = -0.0067 -> -0
  EXPECT_TRUE(std::signbit(hat[1]));
  EXPECT_EQ(hat[16], 12.0f);
  EXPECT_EQ(hat[17], 4.0f);
  EXPECT_DOUBLE_EQ(FloatBitsPerWeight(*q), 4.0 + 0.5 + 1.0);
  // A block whose E4M3 scale underflows gets zero codes, not a division by 0.
  std::vector<float> y(32, 0.0f);
  y[0] = 1.0f;
  y[16] = 1e-9f;
  q = FloatQuantize(y.data(), 1, 32, Options("modelopt_nvfp4"));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->block_scales[1], 0);
  EXPECT_EQ(q->codes[8], 0);
}

TEST(FloatRecipes, Nf4AndDoubleQuant) {
  std::vector<float> x(128);
  for (int i = 0; i < 64; ++i) x[i] = kNf4Values[i % 16] * 2.0f;
  for (int i = 64; i < 128; ++i) x[i] = kNf4Values[15 - i % 16] * 0.5f;
  absl::StatusOr<FloatQuantized> q = FloatQuantize(x.data(), 2, 64, Options("nf4"));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->scales, (std::vector<float>{2.0f, 0.5f}));
  // High nibble first: elements 0 and 1 have codes 0 and 1.
  EXPECT_EQ(q->codes[0], 0x01);
  EXPECT_EQ(q->codes[32], 0xFE);
  std::vector<float> hat(128);
  ASSERT_TRUE(FloatDequantize(*q, hat.data()).ok());
  for (int i = 0; i < 128; ++i) EXPECT_EQ(hat[i], x[i]) << i;

  // Double quantization: 600 blocks of 2 (three second-level blocks, the
  // last partial); dequantized absmax = map[code] * a2 + offset.
  std::vector<float> y = Gaussian(1200, 7, false, 1200);
  q = FloatQuantize(y.data(), 1, 1200, Options("nf4", "", 2, true));
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->block_scales.size(), 600u);
  ASSERT_EQ(q->second_scales.size(), 3u);
  EXPECT_TRUE(q->scales.empty());
  absl::StatusOr<FloatQuantized> plain =
      FloatQuantize(y.data(), 1, 1200, Options("nf4", "", 2, false));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->codes, q->codes);  // codes use the f32 absmax
  std::vector<float> y_hat(1200);
  ASSERT_TRUE(FloatDequantize(*q, y_hat.data()).ok());
  const absl::Span<const float> map = NfDynamicMap();
  for (int b = 0; b < 600; ++b) {
    const float absmax =
        map[q->block_scales[b]] * q->second_scales[b / 256] + q->scale_offset;
    for (int j = 0; j < 2; ++j) {
      const int i = 2 * b + j;
      const uint8_t code =
          static_cast<uint8_t>(j == 0 ? q->codes[b] >> 4 : q->codes[b] & 15);
      EXPECT_EQ(Bits(y_hat[i]), Bits(kNf4Values[code] * absmax)) << i;
    }
    // The second level is close: 8-bit dynamic codes of the centred absmax.
    EXPECT_NEAR(absmax, plain->scales[b], 0.02 * q->second_scales[b / 256]);
  }
  EXPECT_DOUBLE_EQ(FloatBitsPerWeight(*q),
                   (1200.0 * 4 + 600 * 8 + 3 * 32 + 32) / 1200.0);
}

// Gaussian weights with outlier channels: finer scales do better.
TEST(FloatRecipes, SqnrOrdering) {
  const int64_t rows = 64, row_length = 256;
  const std::vector<float> x = Gaussian(rows * row_length, 11, true, row_length);
  auto sqnr = [&](const FloatFormatOptions& o) {
    absl::StatusOr<FloatQuantized> q = FloatQuantize(x.data(), rows, row_length, o);
    EXPECT_TRUE(q.ok());
    std::vector<float> hat(x.size());
    EXPECT_TRUE(FloatDequantize(*q, hat.data()).ok());
    double num = 0, den = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      num += double{x[i]} * x[i];
      den += (double{x[i]} - hat[i]) * (double{x[i]} - hat[i]);
    }
    return 10.0 * std::log10(num / den);
  };
  const double e4m3 = sqnr(Options("fp8_e4m3", "tensor"));
  const double e5m2 = sqnr(Options("fp8_e5m2", "tensor"));
  const double fp4_tensor = sqnr(Options("fp4_e2m1", "tensor"));
  const double fp4_block = sqnr(Options("fp4_e2m1", "block", 16));
  EXPECT_GT(e4m3, 25.0);
  EXPECT_GT(e4m3, e5m2);
  EXPECT_GT(fp4_block, fp4_tensor);
  EXPECT_GT(sqnr(Options("modelopt_nvfp4")), sqnr(Options("ocp_mxfp4")) - 3.0);
  EXPECT_GT(sqnr(Options("nf4")), 15.0);
}

// ---------------------------------------------------------------- errors

TEST(FloatErrors, NonFiniteInputIsInvalidArgument) {
  for (const char* format : {"fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "nf4",
                             "ocp_mxfp8", "ocp_mxfp4", "modelopt_nvfp4"}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                      std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      SCOPED_TRACE(absl::StrCat(format, " ", bad));
      std::vector<float> x(128, 1.0f);
      x[77] = bad;
      for (bool reference : {false, true}) {
        absl::StatusOr<FloatQuantized> q =
            reference ? FloatQuantizeReference(x.data(), 2, 64, Options(format))
                      : FloatQuantize(x.data(), 2, 64, Options(format));
        ASSERT_FALSE(q.ok());
        EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_NE(q.status().message().find("77"), std::string::npos)
            << q.status();
      }
    }
  }
}

TEST(FloatErrors, BadOptionsAndShapes) {
  struct Case {
    const char* format;
    const char* granularity;
    int block_size;
    bool double_quant;
    int64_t rows, row_length;
    const char* needle;
  };
  const Case cases[] = {
      {"ocp_mxfp4", "", 16, false, 1, 64, "32"},
      {"modelopt_nvfp4", "", 32, false, 1, 64, "16"},
      {"ocp_mxfp8", "channel", 0, false, 1, 64, "block scales only"},
      {"nf4", "tensor", 0, false, 1, 64, "block scales only"},
      {"fp8_e4m3", "", 0, true, 1, 64, "nf4 only"},
      {"fp8_e4m3", "block", 48, false, 1, 64, "multiple"},
      {"fp4_e2m1", "block", 3, false, 1, 60, "even"},
      {"fp4_e2m1", "channel", 0, false, 2, 7, "even"},
      {"fp8_e4m3", "block", -1, false, 1, 64, "negative"},
      {"fp8_e4m3", "", 0, false, -1, 64, "rows"},
      {"fp8_e4m3", "", 0, false, 1, 0, "row length"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.format, " ", c.granularity, " ", c.block_size));
    FloatFormatOptions o;
    o.format = *ParseFloatFormat(c.format);
    o.granularity = c.granularity[0] == 0 ? FloatGranularity::kDefault
                    : std::string(c.granularity) == "tensor"
                        ? FloatGranularity::kTensor
                        : FloatGranularity::kChannel;
    o.block_size = c.block_size;
    o.double_quant = c.double_quant;
    if (std::string(c.granularity) == "block") o.granularity = FloatGranularity::kBlock;
    std::vector<float> x(static_cast<size_t>(std::max<int64_t>(0, c.rows * c.row_length)));
    absl::StatusOr<FloatQuantized> q = FloatQuantize(x.data(), c.rows, c.row_length, o);
    ASSERT_FALSE(q.ok());
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(q.status().message().find(c.needle), std::string::npos) << q.status();
  }
  EXPECT_EQ(ParseFloatFormat("mxfp4").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFloatFormat("NVFP4").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseFloatFormat("OCP_MXFP4"), FloatFormat::kOcpMxfp4);
  EXPECT_EQ(ParseFloatFormatOptions("fp8_e4m3", "row", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A quantized tensor whose arrays do not match its options.
  std::vector<float> x(64, 1.0f);
  absl::StatusOr<FloatQuantized> q = FloatQuantize(x.data(), 1, 64, Options("ocp_mxfp4"));
  ASSERT_TRUE(q.ok());
  q->block_scales.pop_back();
  std::vector<float> hat(64);
  EXPECT_EQ(FloatDequantize(*q, hat.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(FloatFormats, EmptyTensor) {
  absl::StatusOr<FloatQuantized> q = FloatQuantize(nullptr, 0, 64, Options("nf4", "", 0, true));
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->codes.empty());
  EXPECT_TRUE(FloatDequantize(*q, nullptr).ok());
  EXPECT_EQ(FloatBitsPerWeight(*q), 0.0);
}

}  // namespace
}  // namespace quantd
