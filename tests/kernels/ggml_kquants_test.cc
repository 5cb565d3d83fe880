// ggml's K-quants (Q2_K..Q6_K): every vector path byte for byte against the
// scalar reference on random and hard super-blocks, with and without an
// importance matrix; hand-computed blocks pinning ggml's rules; dequantizers.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/convert.h"
#include "kernels/cpu.h"
#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/ggml_search.h"
#include "kernels/internal/isa_kernels.h"

namespace quantd {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr int kQK = kGgmlBlock256;

struct KQuant {
  const char* name;
  GgmlType type;
  int block_bytes;
  GgmlQuantizeFn reference;
  GgmlQuantizeFn avx2;
  GgmlQuantizeFn avx512;
  GgmlDequantizeFn dequantize;
};

// The vector paths of a K-quant this CPU can run.
struct VectorPath {
  const char* isa;
  GgmlQuantizeFn fn;
};
std::vector<VectorPath> VectorPaths(const KQuant& k) {
  std::vector<VectorPath> paths;
  if (internal::CpuIsa() >= Isa::kAvx2) paths.push_back({"avx2", k.avx2});
  if (internal::CpuIsa() >= Isa::kAvx512) paths.push_back({"avx512", k.avx512});
  return paths;
}

std::vector<KQuant> KQuants() {
  using namespace internal;  // NOLINT
  return {
      {"Q2_K", GgmlType::kQ2_K, 84, GgmlQuantizeQ2_KReference,
       GgmlQuantizeQ2_KAvx2, GgmlQuantizeQ2_KAvx512, GgmlDequantizeQ2_K},
      {"Q3_K", GgmlType::kQ3_K, 110, GgmlQuantizeQ3_KReference,
       GgmlQuantizeQ3_KAvx2, GgmlQuantizeQ3_KAvx512, GgmlDequantizeQ3_K},
      {"Q4_K", GgmlType::kQ4_K, 144, GgmlQuantizeQ4_KReference,
       GgmlQuantizeQ4_KAvx2, GgmlQuantizeQ4_KAvx512, GgmlDequantizeQ4_K},
      {"Q5_K", GgmlType::kQ5_K, 176, GgmlQuantizeQ5_KReference,
       GgmlQuantizeQ5_KAvx2, GgmlQuantizeQ5_KAvx512, GgmlDequantizeQ5_K},
      {"Q6_K", GgmlType::kQ6_K, 210, GgmlQuantizeQ6_KReference,
       GgmlQuantizeQ6_KAvx2, GgmlQuantizeQ6_KAvx512, GgmlDequantizeQ6_K},
  };
}

const KQuant& Find(GgmlType type) {
  static const std::vector<KQuant> all = KQuants();
  for (const KQuant& k : all) {
    if (k.type == type) return k;
  }
  return all.front();
}

// Gaussian values, a few 40x outliers, and every 37th column 20x larger
// (outlier channels, as in LLM weights).
std::vector<float> RandomWeights(size_t n, uint32_t seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(n);
  for (size_t j = 0; j < n; ++j) {
    x[j] = normal(rng);
    if (uniform(rng) < 0.01f) x[j] *= 40.0f;
    if (j % 37 == 5) x[j] *= 20.0f;
  }
  return x;
}

// Positive importance weights spanning several decades, some exactly 0.
std::vector<float> RandomImportance(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<float> lognormal(0.0f, 2.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> w(n);
  for (float& v : w) v = uniform(rng) < 0.02f ? 0.0f : lognormal(rng);
  return w;
}

// Super-blocks that exercise the corner cases of the searches: all-zero and
// signed-zero blocks, constants, exact ties of nearest_int (x.5 grids),
// subnormals and maxima so small that 1/scale overflows, values at the f16
// limit and far beyond (sums overflowing to Inf and NaN), one sub-block tiny
// next to large ones (its 6-bit scale rounds to 0), all-negative blocks
// (max < 0 after the min is fitted), alternating signs.
std::vector<float> HardSuperBlocks() {
  std::vector<float> x;
  auto block = [&x](auto fill) {
    for (int j = 0; j < kQK; ++j) x.push_back(fill(j));
  };
  const float fmax = std::numeric_limits<float>::max();
  const float denorm = std::numeric_limits<float>::denorm_min();
  block([](int) { return 0.0f; });
  block([](int) { return -0.0f; });
  block([](int j) { return j % 3 == 0 ? -0.0f : 0.0f; });
  block([](int) { return 1.0f; });
  block([](int) { return -1.0f; });
  block([](int) { return 0.7f; });
  block([](int) { return -3.0f; });
  block([](int j) { return static_cast<float>(j % 16) - 7.5f; });
  block([](int j) { return static_cast<float>(j % 32) * 0.5f; });
  block([](int j) { return static_cast<float>((j * 7) % 64 - 32); });
  block([](int j) { return static_cast<float>(j % 8) + 0.5f; });
  block([](int j) { return j % 16 == 0 ? 15.0f : static_cast<float>(j % 16) * 0.5f; });
  block([](int j) { return static_cast<float>(j - 128) * 1e-45f; });
  block([](int j) { return static_cast<float>(j - 128) * 1e-39f; });
  block([](int j) { return static_cast<float>(j - 128) * 1e-37f; });
  block([](int j) { return static_cast<float>(j % 5) * 1e-16f; });
  block([=](int j) { return j == 77 ? denorm : 0.0f; });
  block([](int j) { return static_cast<float>(j - 128) / 128.0f * 65504.0f; });
  block([](int j) { return j == 9 ? -65504.0f : 1.0f; });
  block([](int j) { return j % 2 ? 65504.0f : -65504.0f; });
  block([](int j) { return static_cast<float>(j - 128) * 1e6f; });
  block([](int j) { return static_cast<float>(j - 128) * 2e36f; });
  block([=](int j) { return j % 2 ? fmax : -fmax; });
  block([=](int j) { return j % 7 == 0 ? fmax : 1.0f; });
  block([](int j) { return std::ldexp(1.0f, j % 40 - 20); });
  block([](int j) { return -std::ldexp(1.0f, j % 40 - 20); });
  block([](int j) { return std::nextafter(std::ldexp(1.0f, j % 24 - 10), 0.0f); });
  block([](int j) { return j < 32 ? static_cast<float>(j % 16) : 2000.0f; });
  block([](int j) { return j < 16 ? 1e-3f * static_cast<float>(j) : 50.0f - static_cast<float>(j % 9); });
  block([](int j) { return -10.0f + static_cast<float>(j % 3) * 0.25f; });
  block([](int j) { return -100.0f - static_cast<float>(j % 16); });
  block([](int j) { return 100.0f + static_cast<float>(j % 16); });
  block([](int j) { return j % 32 == 31 ? 5.0f : -5.0f; });
  block([](int j) { return (j % 2 ? 1.0f : -1.0f) * static_cast<float>(j % 11); });
  return x;
}

struct Weights {
  const char* name;
  std::vector<float> w;  // empty: no importance
};

// Importance variants for `n` elements.
std::vector<Weights> ImportanceCases(size_t n, uint32_t seed) {
  std::vector<Weights> cases;
  cases.push_back({"none", {}});
  cases.push_back({"random", RandomImportance(n, seed)});
  cases.push_back({"ones", std::vector<float>(n, 1.0f)});
  std::vector<float> skewed(n);
  for (size_t j = 0; j < n; ++j) skewed[j] = j % 7 == 0 ? 1e4f : 1e-4f;
  cases.push_back({"skewed", skewed});
  std::vector<float> sparse(n, 0.0f);
  for (size_t j = 0; j < n; j += 29) sparse[j] = 3.0f;
  cases.push_back({"sparse", sparse});
  return cases;
}

Bytes QuantizeWith(GgmlQuantizeFn fn, const KQuant& k, const std::vector<float>& x,
          const float* importance) {
  const int64_t blocks = static_cast<int64_t>(x.size()) / kQK;
  Bytes out(static_cast<size_t>(blocks * k.block_bytes), 0xAA);
  fn(x.data(), blocks, importance, out.data());
  return out;
}

// First differing block, for a readable failure.
void ExpectSameBlocks(const KQuant& k, const Bytes& got, const Bytes& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t b = 0; b * k.block_bytes < want.size(); ++b) {
    const auto at = static_cast<long>(b * static_cast<size_t>(k.block_bytes));
    ASSERT_EQ(Bytes(got.begin() + at, got.begin() + at + k.block_bytes),
              Bytes(want.begin() + at, want.begin() + at + k.block_bytes))
        << "block " << b;
  }
}

TEST(GgmlKQuantsTest, LayoutsMatchGgml) {
  EXPECT_EQ(sizeof(GgmlBlockQ2_K), 84u);
  EXPECT_EQ(sizeof(GgmlBlockQ3_K), 110u);
  EXPECT_EQ(sizeof(GgmlBlockQ4_K), 144u);
  EXPECT_EQ(sizeof(GgmlBlockQ5_K), 176u);
  EXPECT_EQ(sizeof(GgmlBlockQ6_K), 210u);
  EXPECT_EQ(offsetof(GgmlBlockQ2_K, d), 80u);
  EXPECT_EQ(offsetof(GgmlBlockQ3_K, d), 108u);
  EXPECT_EQ(offsetof(GgmlBlockQ5_K, qs), 48u);
  EXPECT_EQ(offsetof(GgmlBlockQ6_K, d), 208u);
  EXPECT_EQ(static_cast<int>(GgmlType::kQ2_K), 10);
  EXPECT_EQ(static_cast<int>(GgmlType::kQ6_K), 14);
}

TEST(GgmlKQuantsTest, TableRowsDispatchToPathsEqualToTheReference) {
  const absl::Span<const GgmlFormatTraits> rows = internal::GgmlKQuantFormats();
  const std::vector<KQuant> want = KQuants();
  ASSERT_EQ(rows.size(), want.size());
  const std::vector<float> x = RandomWeights(static_cast<size_t>(6 * kQK), 9, 0.05f);
  const std::vector<float> imp = RandomImportance(static_cast<size_t>(2 * kQK), 9);
  for (size_t i = 0; i < rows.size(); ++i) {
    const GgmlFormatTraits& f = rows[i];
    SCOPED_TRACE(f.name);
    EXPECT_STREQ(f.name, want[i].name);
    EXPECT_EQ(f.type, want[i].type);
    EXPECT_EQ(f.block_size, kQK);
    EXPECT_EQ(f.block_bytes, want[i].block_bytes);
    EXPECT_TRUE(f.uses_importance);
    EXPECT_EQ(f.reference, want[i].reference);
    EXPECT_EQ(f.dequantize, want[i].dequantize);
    EXPECT_EQ(f.fast, DetectedIsa() == Isa::kAvx512 ? want[i].avx512
                      : DetectedIsa() == Isa::kAvx2 ? want[i].avx2
                                                    : want[i].reference);
    // Three rows of two blocks; the importance covers one row.
    EXPECT_EQ(QuantizeWith(f.fast, want[i], x, nullptr),
              QuantizeWith(f.reference, want[i], x, nullptr));
    for (int r = 0; r < 3; ++r) {
      const std::vector<float> row(x.begin() + r * 2 * kQK, x.begin() + (r + 1) * 2 * kQK);
      EXPECT_EQ(QuantizeWith(f.fast, want[i], row, imp.data()),
                QuantizeWith(f.reference, want[i], row, imp.data()));
    }
  }
}

TEST(GgmlKQuantsTest, NearestIntIsGgmlsMagicNumberRounding) {
  using internal::GgmlNearestInt;
  EXPECT_EQ(GgmlNearestInt(2.5f), 2);  // ties to even
  EXPECT_EQ(GgmlNearestInt(3.5f), 4);
  EXPECT_EQ(GgmlNearestInt(-2.5f), -2);
  EXPECT_EQ(GgmlNearestInt(-0.0f), 0);
  EXPECT_EQ(GgmlNearestInt(4194303.0f), 4194303);
  EXPECT_EQ(GgmlNearestInt(-4194303.0f), -4194303);
  // Beyond ggml's asserted range the bits wrap; reproduced, not clamped.
  EXPECT_EQ(GgmlNearestInt(4194304.0f), -4194304);
  EXPECT_EQ(GgmlNearestInt(std::numeric_limits<float>::quiet_NaN()), 0);
}

TEST(GgmlKQuantsTest, VectorPathsMatchReferenceOnRandomTensors) {
  if (internal::CpuIsa() < Isa::kAvx2) GTEST_SKIP() << "no AVX2";
  const uint32_t seed = 20260601;
  int cases = 0;
  for (const KQuant& k : KQuants()) {
    for (int64_t blocks : {1, 3, 16}) {
      for (float spread : {1e-4f, 0.02f, 1.0f, 500.0f}) {
        const uint32_t s = seed + static_cast<uint32_t>(cases++);
        const std::vector<float> x =
            RandomWeights(static_cast<size_t>(blocks * kQK), s, spread);
        for (const Weights& w : ImportanceCases(x.size(), s * 3)) {
          const float* imp = w.w.empty() ? nullptr : w.w.data();
          const Bytes want = QuantizeWith(k.reference, k, x, imp);
          for (const VectorPath& path : VectorPaths(k)) {
            SCOPED_TRACE(absl::StrCat(k.name, " ", path.isa, " blocks ", blocks,
                                      " spread ", spread, " importance ", w.name,
                                      " seed ", s));
            ExpectSameBlocks(k, QuantizeWith(path.fn, k, x, imp), want);
          }
        }
      }
    }
  }
}

TEST(GgmlKQuantsTest, VectorPathsMatchReferenceOnHardBlocks) {
  if (internal::CpuIsa() < Isa::kAvx2) GTEST_SKIP() << "no AVX2";
  const std::vector<float> hard = HardSuperBlocks();
  for (const KQuant& k : KQuants()) {
    for (const Weights& w : ImportanceCases(hard.size(), 99)) {
      const float* imp = w.w.empty() ? nullptr : w.w.data();
      const Bytes want = QuantizeWith(k.reference, k, hard, imp);
      for (const VectorPath& path : VectorPaths(k)) {
        SCOPED_TRACE(absl::StrCat(k.name, " ", path.isa,
                                  " hard blocks, importance ", w.name));
        ExpectSameBlocks(k, QuantizeWith(path.fn, k, hard, imp), want);
      }
    }
  }
}

TEST(GgmlKQuantsTest, VectorPathsMatchReferenceOnManySmallBlocks) {
  // Many independent super-blocks of few distinct values: the searches'
  // ties and early exits per lane.
  if (internal::CpuIsa() < Isa::kAvx2) GTEST_SKIP() << "no AVX2";
  const uint32_t seed = 777;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> level(-4, 4);
  std::vector<float> x(static_cast<size_t>(64 * kQK));
  for (size_t j = 0; j < x.size(); ++j) {
    const size_t block = j / kQK;
    x[j] = static_cast<float>(level(rng)) * std::ldexp(1.0f, static_cast<int>(block % 9) - 4);
  }
  const std::vector<float> imp = RandomImportance(x.size(), seed);
  for (const KQuant& k : KQuants()) {
    for (const VectorPath& path : VectorPaths(k)) {
      SCOPED_TRACE(absl::StrCat(k.name, " ", path.isa, " seed ", seed));
      ExpectSameBlocks(k, QuantizeWith(path.fn, k, x, nullptr),
                       QuantizeWith(k.reference, k, x, nullptr));
      ExpectSameBlocks(k, QuantizeWith(path.fn, k, x, imp.data()),
                       QuantizeWith(k.reference, k, x, imp.data()));
    }
  }
}

uint16_t HalfAt(const Bytes& b, size_t offset) {
  uint16_t h;
  std::memcpy(&h, b.data() + offset, 2);
  return h;
}

Bytes QuantizeBlock(GgmlType type, const std::vector<float>& x,
                    const float* importance = nullptr) {
  const KQuant& k = Find(type);
  return QuantizeWith(k.reference, k, x, importance);
}

std::vector<float> Dequantize(GgmlType type, const Bytes& b) {
  const KQuant& k = Find(type);
  std::vector<float> y(b.size() / static_cast<size_t>(k.block_bytes) * kQK);
  k.dequantize(b.data(), static_cast<int64_t>(b.size()) / k.block_bytes, y.data());
  return y;
}

// Hand-computed blocks: each pins one rule of ggml's reference.

TEST(GgmlKQuantsKnownBytesTest, AllZeroBlocksAreAllZeroBytes) {
  for (const KQuant& k : KQuants()) {
    SCOPED_TRACE(k.name);
    const Bytes b = QuantizeBlock(k.type, std::vector<float>(kQK, 0.0f));
    EXPECT_EQ(b, Bytes(static_cast<size_t>(k.block_bytes), 0));
  }
}

TEST(GgmlKQuantsKnownBytesTest, Q4_KConstantBlock) {
  // x = 15: each sub-block fits scale 1, min 0, codes 15 exactly, so the
  // search keeps it (error 0 is never beaten by `<`). ls = 63, d = f16(1/63)
  // = 0x2410; min -0 is not > 0, so dmin = 0 and every lm = 0.
  const Bytes b = QuantizeBlock(GgmlType::kQ4_K, std::vector<float>(kQK, 15.0f));
  EXPECT_EQ(HalfAt(b, 0), 0x2410);
  EXPECT_EQ(HalfAt(b, 2), 0x0000);
  // scales[0..3] = 63 | (63 >> 4) << 6, scales[4..7] = lm = 0,
  // scales[8..11] = (63 & 0xF) | (0 << 4).
  const uint8_t scales[12] = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0,
                              0x0F, 0x0F, 0x0F, 0x0F};
  for (int j = 0; j < 12; ++j) EXPECT_EQ(b[4 + j], scales[j]) << j;
  // Requantized with the stored d: 15 / (0x2410 * 63) = 15.0037 -> 15.
  for (int j = 0; j < 128; ++j) EXPECT_EQ(b[16 + j], 0xFF) << j;
  const std::vector<float> y = Dequantize(GgmlType::kQ4_K, b);
  EXPECT_EQ(y[0], 0.015869140625f * 63.0f * 15.0f);
}

TEST(GgmlKQuantsKnownBytesTest, Q5_KConstantBlockSetsEveryHighBit) {
  const Bytes b = QuantizeBlock(GgmlType::kQ5_K, std::vector<float>(kQK, 31.0f));
  EXPECT_EQ(HalfAt(b, 0), 0x2410);  // f16(1 / 63)
  EXPECT_EQ(HalfAt(b, 2), 0x0000);
  EXPECT_EQ(b[4], 0xFF);
  EXPECT_EQ(b[12], 0x0F);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b[16 + j], 0xFF) << "qh " << j;
  for (int j = 0; j < 128; ++j) EXPECT_EQ(b[48 + j], 0xFF) << "qs " << j;
}

TEST(GgmlKQuantsKnownBytesTest, Q6_KConstantBlockTiesKeepTheFirstScale) {
  // x = -1: make_qx_quants starts at iscale 32, l = -32, scale 1/32 and
  // best = 16. Candidate 31.1 gives l = -31 with sumlx^2 == best * suml2
  // exactly (496^2 = 16 * 15376): a tie, which `>` does not take.
  // iscale = -128 / (1/32) = -4096, d = f16(-2^-12) = 0x8C00, every
  // scale -128, codes nearest(-1 / (2^-12 * 128)) + 32 = 0.
  Bytes b = QuantizeBlock(GgmlType::kQ6_K, std::vector<float>(kQK, -1.0f));
  EXPECT_EQ(HalfAt(b, 208), 0x8C00);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[192 + j], 0x80) << j;
  for (int j = 0; j < 192; ++j) EXPECT_EQ(b[j], 0) << j;
  EXPECT_EQ(Dequantize(GgmlType::kQ6_K, b), std::vector<float>(kQK, -1.0f));
  // x = +1: the scale search gives -1/32, so d flips sign instead.
  b = QuantizeBlock(GgmlType::kQ6_K, std::vector<float>(kQK, 1.0f));
  EXPECT_EQ(HalfAt(b, 208), 0x0C00);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[192 + j], 0x80) << j;
  EXPECT_EQ(Dequantize(GgmlType::kQ6_K, b), std::vector<float>(kQK, 1.0f));
}

TEST(GgmlKQuantsKnownBytesTest, Q3_KConstantBlock) {
  // x = -1: make_q3_quants gives l = -4 and scale 64 / 256 = 0.25 with no
  // refinement; iscale = -32 / 0.25 = -128 maps every scale to -32 + 32 = 0,
  // d = f16(-1/128) = 0xA000; codes nearest(-1 / 0.25) + 4 = 0, no high bit.
  const Bytes b = QuantizeBlock(GgmlType::kQ3_K, std::vector<float>(kQK, -1.0f));
  EXPECT_EQ(HalfAt(b, 108), 0xA000);
  for (int j = 0; j < 108; ++j) EXPECT_EQ(b[j], 0) << j;
  EXPECT_EQ(Dequantize(GgmlType::kQ3_K, b), std::vector<float>(kQK, -1.0f));
}

TEST(GgmlKQuantsKnownBytesTest, Q2_KConstantBlock) {
  // x = 1: scale 1/3 (codes 3, error 0), min 0. Sub-block scale
  // nearest(15 / (1/3) * (1/3)) = 15, d = f16((1/3) / 15) = 0x25B0,
  // dmin = 0; codes nearest(1 / (0x25B0 * 15)) = 3.
  const Bytes b = QuantizeBlock(GgmlType::kQ2_K, std::vector<float>(kQK, 1.0f));
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[j], 15) << j;
  for (int j = 0; j < 64; ++j) EXPECT_EQ(b[16 + j], 0xFF) << j;
  EXPECT_EQ(HalfAt(b, 80), 0x25B0);
  EXPECT_EQ(HalfAt(b, 82), 0x0000);
}

TEST(GgmlKQuantsKnownBytesTest, SubBlockWhoseScaleRoundsToZeroKeepsSearchCodes) {
  // Sub-block 0 holds 0..15 twice (its search fits scale 1 and codes 0..15
  // exactly); the others are 2000 (scale 2000/15). Its 6-bit scale is
  // nearest(63 / 133.3) = 0, so d = 0 and ggml skips its requantization:
  // the nibbles keep the search codes.
  std::vector<float> x(kQK, 2000.0f);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16);
  const Bytes b = QuantizeBlock(GgmlType::kQ4_K, x);
  EXPECT_EQ(b[4] & 63, 0);  // sub-block 0's scale
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b[16 + j] & 0x0F, j % 16) << j;
}

TEST(GgmlKQuantsTest, ImportanceChangesTheResultAndFavouredErrorsShrink) {
  const std::vector<float> x = RandomWeights(static_cast<size_t>(8 * kQK), 41, 1.0f);
  std::vector<float> skewed(x.size());
  for (size_t j = 0; j < skewed.size(); ++j) skewed[j] = j % 5 == 0 ? 100.0f : 0.01f;
  for (const KQuant& k : KQuants()) {
    SCOPED_TRACE(k.name);
    const Bytes plain = QuantizeWith(k.reference, k, x, nullptr);
    const Bytes skew = QuantizeWith(k.reference, k, x, skewed.data());
    EXPECT_NE(plain, skew);
    const std::vector<float> a = Dequantize(k.type, plain);
    const std::vector<float> b = Dequantize(k.type, skew);
    double err_plain = 0, err_skew = 0;
    for (size_t j = 0; j < x.size(); ++j) {
      err_plain += skewed[j] * (x[j] - a[j]) * (x[j] - a[j]);
      err_skew += skewed[j] * (x[j] - b[j]) * (x[j] - b[j]);
    }
    // Q2_K's importance path fits 2-bit codes with a different search
    // (make_qkx3_quants, squared error instead of the reference's absolute
    // error), which does not promise a lower weighted error on every input.
    if (k.type != GgmlType::kQ2_K) {
      EXPECT_LT(err_skew, err_plain);
    }
  }
}

TEST(GgmlKQuantsTest, RoundTripErrorShrinksWithBits) {
  const std::vector<float> x = RandomWeights(static_cast<size_t>(32 * kQK), 5, 1.0f);
  double previous = 1.0;
  for (const KQuant& k : KQuants()) {  // Q2_K .. Q6_K
    SCOPED_TRACE(k.name);
    const std::vector<float> y = Dequantize(k.type, QuantizeWith(k.reference, k, x, nullptr));
    double err = 0, energy = 0;
    for (size_t j = 0; j < x.size(); ++j) {
      err += (x[j] - y[j]) * (x[j] - y[j]);
      energy += x[j] * x[j];
    }
    EXPECT_LT(err / energy, previous);
    previous = err / energy;
  }
  EXPECT_LT(previous, 1e-3);  // Q6_K
}

TEST(GgmlKQuantsTest, DequantizeKnownValues) {
  // Q4_K: d = 1, dmin = 0.5, sub-block 0 scale 2 and min 3, sub-block 1
  // (elements 32..63, high nibbles) scale 5 and min 1.
  GgmlBlockQ4_K q4 = {};
  q4.d = FloatToHalf(1.0f);
  q4.dmin = FloatToHalf(0.5f);
  q4.scales[0] = 2;
  q4.scales[4] = 3;
  q4.scales[1] = 5;
  q4.scales[5] = 1;
  q4.qs[0] = 0x47;  // element 0: code 7, element 32: code 4
  Bytes b(sizeof(q4));
  std::memcpy(b.data(), &q4, sizeof(q4));
  std::vector<float> y = Dequantize(GgmlType::kQ4_K, b);
  EXPECT_EQ(y[0], 2.0f * 7.0f - 1.5f);
  EXPECT_EQ(y[1], -1.5f);
  EXPECT_EQ(y[32], 5.0f * 4.0f - 0.5f);
  // Q6_K: d = 0.5, scale of sub-block 0 = -3, element 0 code 63 (31).
  GgmlBlockQ6_K q6 = {};
  q6.d = FloatToHalf(0.5f);
  q6.scales[0] = -3;
  q6.ql[0] = 0x0F;
  q6.qh[0] = 0x03;
  b.resize(sizeof(q6));
  std::memcpy(b.data(), &q6, sizeof(q6));
  y = Dequantize(GgmlType::kQ6_K, b);
  EXPECT_EQ(y[0], 0.5f * -3.0f * 31.0f);
  EXPECT_EQ(y[1], 0.5f * -3.0f * -32.0f);
  EXPECT_EQ(y[16], 0.0f * -32.0f);
}

}  // namespace
}  // namespace quantd
