#include "kernels/ggml_formats.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/convert.h"
#include "kernels/cpu.h"
#include "kernels/internal/ggml_kernels.h"
#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/metrics_internal.h"
#include "kernels/metrics.h"

namespace quantd {
namespace {

using Bytes = std::vector<uint8_t>;

// Gaussian values with a few large outliers, like LLM weights.
std::vector<float> RandomWeights(size_t n, uint32_t seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) {
    v = normal(rng);
    if (uniform(rng) < 0.01f) v *= 40.0f;
  }
  return x;
}

// Blocks of 32 that exercise the reference's corner cases: ties between
// codes, signed zeros, subnormals (1/scale overflowing), values at and
// beyond the f16 range, constant and all-zero blocks.
std::vector<float> HardBlocks() {
  std::vector<float> x;
  auto block = [&x](auto fill) {
    for (int j = 0; j < 32; ++j) x.push_back(fill(j));
  };
  block([](int) { return 0.0f; });
  block([](int) { return -0.0f; });
  block([](int j) { return j == 0 ? -0.0f : 0.0f; });
  block([](int j) { return j == 3 ? -0.0f : 1.0f; });
  block([](int j) { return j % 2 ? -0.0f : -2.0f; });
  block([](int) { return 0.7f; });
  block([](int) { return -3.0f; });
  block([](int j) { return j == 0 ? 127.0f : static_cast<float>(j - 15) + 0.5f; });
  block([](int j) { return j == 0 ? -8.0f : static_cast<float>(j - 16) * 0.5f; });
  block([](int j) { return j == 0 ? 15.0f : static_cast<float>(j) * 0.5f; });
  block([](int j) { return j == 0 ? -16.0f : static_cast<float>(j - 16) * 0.5f; });
  block([](int j) { return static_cast<float>(j - 16) * 1e-45f; });
  block([](int j) { return static_cast<float>(j - 16) * 1e-39f; });
  block([](int j) { return static_cast<float>(j - 16) * 1e-37f; });
  block([](int j) { return j == 5 ? std::numeric_limits<float>::denorm_min() : 0.0f; });
  block([](int j) { return static_cast<float>(j - 16) / 16.0f * 65504.0f; });
  block([](int j) { return j == 9 ? -65504.0f : 1.0f; });
  block([](int j) { return static_cast<float>(j - 16) * 1e6f; });
  block([](int j) { return static_cast<float>(j - 16) * 2e37f; });
  block([](int j) { return j % 2 ? std::numeric_limits<float>::max()
                                 : -std::numeric_limits<float>::max(); });
  block([](int j) { return std::ldexp(1.0f, j - 10); });
  block([](int j) { return std::nextafter(std::ldexp(1.0f, j - 10), 0.0f); });
  block([](int j) { return j == 31 ? 5.0f : -5.0f; });
  block([](int j) { return std::ldexp(static_cast<float>(j - 16), -126); });
  return x;  // 24 blocks: 3 super-blocks of 256
}

// Super-blocks of 256 whose sub-blocks interact through the super-block's
// scale: sub-blocks of very different magnitudes, opposite signs of equal
// magnitude (a sub-block scale of +32 clamps to 31), zero and subnormal
// sub-blocks next to normal ones, all sub-blocks zero.
std::vector<float> HardSuperBlocks() {
  std::vector<float> x;
  const std::vector<float> r = RandomWeights(256, 99, 1.0f);
  auto super = [&x](auto fill) {
    for (int j = 0; j < 256; ++j) x.push_back(fill(j));
  };
  super([&](int j) { return r[j] * std::ldexp(1.0f, 3 * (j / 32) - 12); });
  super([&](int j) { return j / 32 == 1 ? -r[j - 32] : r[j % 32]; });
  super([&](int j) { return j / 32 == 3 ? 0.0f : r[j]; });
  super([&](int j) { return j / 32 == 5 ? r[j] * 1e-39f : r[j]; });
  super([](int j) { return j == 77 ? std::numeric_limits<float>::denorm_min() : 0.0f; });
  super([](int j) { return j % 2 ? -0.0f : 0.0f; });
  super([&](int j) { return j / 32 == 6 ? r[j] * 60000.0f : r[j] * 1e-3f; });
  super([&](int j) { return j / 32 == 2 ? 65504.0f : r[j]; });
  return x;
}

// Hard inputs for a format of `block_size` (32 or 256).
std::vector<float> HardInput(int block_size) {
  std::vector<float> x = HardBlocks();
  if (block_size == 256) {
    const std::vector<float> more = HardSuperBlocks();
    x.insert(x.end(), more.begin(), more.end());
  }
  return x;
}

struct Path {
  const char* name;
  Isa isa;
  GgmlQuantizeFn fn;
};

std::vector<Path> VectorPaths(GgmlType type) {
  using namespace internal;  // NOLINT
  switch (type) {
    case GgmlType::kQ8_0:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ8_0Avx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ8_0Avx512}};
    case GgmlType::kQ4_0:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ4_0Avx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ4_0Avx512}};
    case GgmlType::kQ4_1:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ4_1Avx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ4_1Avx512}};
    case GgmlType::kQ5_0:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ5_0Avx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ5_0Avx512}};
    case GgmlType::kQ5_1:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ5_1Avx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ5_1Avx512}};
    case GgmlType::kIq4Nl:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeIq4NlAvx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeIq4NlAvx512}};
    case GgmlType::kIq4Xs:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeIq4XsAvx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeIq4XsAvx512}};
    case GgmlType::kMxfp4:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeMxfp4Avx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeMxfp4Avx512}};
    case GgmlType::kQ2_K:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ2_KAvx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ2_KAvx512}};
    case GgmlType::kQ3_K:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ3_KAvx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ3_KAvx512}};
    case GgmlType::kQ4_K:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ4_KAvx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ4_KAvx512}};
    case GgmlType::kQ5_K:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ5_KAvx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ5_KAvx512}};
    case GgmlType::kQ6_K:
      return {{"avx2", Isa::kAvx2, GgmlQuantizeQ6_KAvx2},
              {"avx512", Isa::kAvx512, GgmlQuantizeQ6_KAvx512}};
  }
  return {};
}

Bytes QuantizeRef(const GgmlFormatTraits& f, const std::vector<float>& x,
                  int64_t row_length, const float* importance = nullptr) {
  const int64_t rows = static_cast<int64_t>(x.size()) / row_length;
  Bytes out(static_cast<size_t>(rows * *GgmlRowBytes(f, row_length)));
  EXPECT_TRUE(GgmlQuantizeReference(f, x.data(), rows, row_length, importance,
                                    out.data())
                  .ok());
  return out;
}

Bytes Quantize1(GgmlType type, const std::vector<float>& block) {
  return QuantizeRef(*FindGgmlFormat(type), block, 32);
}

uint16_t HalfAt(const Bytes& b, size_t offset) {
  uint16_t h;
  std::memcpy(&h, b.data() + offset, 2);
  return h;
}

TEST(GgmlFormatTableTest, LayoutsAndNamesMatchGgml) {
  struct Want {
    const char* name;
    GgmlType type;
    int ggml_type;  // ggml's enum value, as GGUF stores it
    int block_size;
    int bytes;
  };
  // In ggml type order, as the table is.
  const Want wants[] = {
      {"Q4_0", GgmlType::kQ4_0, 2, 32, 18},
      {"Q4_1", GgmlType::kQ4_1, 3, 32, 20},
      {"Q5_0", GgmlType::kQ5_0, 6, 32, 22},
      {"Q5_1", GgmlType::kQ5_1, 7, 32, 24},
      {"Q8_0", GgmlType::kQ8_0, 8, 32, 34},
      {"Q2_K", GgmlType::kQ2_K, 10, 256, 84},
      {"Q3_K", GgmlType::kQ3_K, 11, 256, 110},
      {"Q4_K", GgmlType::kQ4_K, 12, 256, 144},
      {"Q5_K", GgmlType::kQ5_K, 13, 256, 176},
      {"Q6_K", GgmlType::kQ6_K, 14, 256, 210},
      {"IQ4_NL", GgmlType::kIq4Nl, 20, 32, 18},
      {"IQ4_XS", GgmlType::kIq4Xs, 23, 256, 136},
      {"MXFP4", GgmlType::kMxfp4, 39, 32, 17}};
  const absl::Span<const GgmlFormatTraits> table = GgmlFormatTable();
  ASSERT_EQ(table.size(), std::size(wants));
  for (size_t i = 0; i < table.size(); ++i) {
    const Want& w = wants[i];
    SCOPED_TRACE(w.name);
    const GgmlFormatTraits* f = FindGgmlFormat(w.name);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f, &table[i]);
    EXPECT_STREQ(f->name, w.name);
    EXPECT_EQ(static_cast<int>(f->type), w.ggml_type);
    EXPECT_EQ(f, FindGgmlFormat(w.type));
    EXPECT_EQ(f, FindGgmlFormat(absl::AsciiStrToLower(w.name)));
    EXPECT_EQ(f->block_size, w.block_size);
    EXPECT_EQ(f->block_bytes, w.bytes);
    EXPECT_NE(f->reference, nullptr);
    EXPECT_NE(f->fast, nullptr);
    EXPECT_NE(f->dequantize, nullptr);
    EXPECT_NE(std::string(f->description), "");
  }
  EXPECT_EQ(FindGgmlFormat("Q4_K")->block_bytes, 144);
  EXPECT_EQ(FindGgmlFormat("Q8_K"), nullptr);
  EXPECT_EQ(FindGgmlFormat("IQ4"), nullptr);
  EXPECT_EQ(FindGgmlFormat(""), nullptr);
  EXPECT_EQ(FindGgmlFormat(static_cast<GgmlType>(15)), nullptr);  // Q8_K
}

TEST(GgmlFormatTableTest, KQuantRowsAreTheKQuantTable) {
  // The K-quants reach the table through internal::GgmlKQuantFormats(),
  // which their own tests check path by path; the table holds those rows.
  for (const GgmlFormatTraits& k : internal::GgmlKQuantFormats()) {
    SCOPED_TRACE(k.name);
    const GgmlFormatTraits* f = FindGgmlFormat(k.type);
    ASSERT_NE(f, nullptr);
    EXPECT_STREQ(f->name, k.name);
    EXPECT_EQ(f->reference, k.reference);
    EXPECT_EQ(f->fast, k.fast);
    EXPECT_EQ(f->dequantize, k.dequantize);
    EXPECT_TRUE(f->uses_importance);
  }
}

TEST(GgmlFormatTableTest, RowLengthNotAMultipleOfTheBlockIsInvalidArgument) {
  const GgmlFormatTraits& f = *FindGgmlFormat("Q8_0");
  EXPECT_EQ(*GgmlRowBytes(f, 4096), 128 * 34);
  for (int64_t bad : {int64_t{0}, int64_t{-32}, int64_t{33}, int64_t{4100}}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<int64_t> s = GgmlRowBytes(f, bad);
    ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(absl::StrCat("row length ", bad)),
              std::string::npos);
    EXPECT_NE(s.status().message().find("block size 32"), std::string::npos);
  }
  std::vector<float> x(40, 1.0f);
  Bytes out(64);
  EXPECT_EQ(GgmlQuantize(f, x.data(), 1, 40, nullptr, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> y(40);
  EXPECT_EQ(GgmlDequantize(f, out.data(), 1, 40, y.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GgmlFormatTableTest, NonFiniteInputIsInvalidArgumentNamingTheIndex) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
      SCOPED_TRACE(absl::StrCat(f.name, " ", bad));
      std::vector<float> x(512, 0.5f);
      x[37] = bad;
      Bytes out(static_cast<size_t>(512 / f.block_size * f.block_bytes));
      absl::Status s = GgmlQuantize(f, x.data(), 1, 512, nullptr, out.data());
      ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(s.message().find("element 37"), std::string::npos) << s;
    }
  }
}

// Importance weights like an imatrix's: positive, spread over two orders of
// magnitude, with some zeros.
std::vector<float> RandomImportance(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> w(n);
  for (float& v : w) {
    const float u = uniform(rng);
    v = u < 0.05f ? 0.0f : std::exp(4.6f * u - 2.3f);
  }
  return w;
}

TEST(GgmlFormatTableTest, ImportanceChangesExactlyTheFormatsWhereGgmlUsesIt) {
  const std::vector<float> x = RandomWeights(512, 5, 1.0f);
  const std::vector<float> w = RandomImportance(512, 6);
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const Bytes plain = QuantizeRef(f, x, 512);
    Bytes weighted(plain.size());
    ASSERT_TRUE(GgmlQuantize(f, x.data(), 1, 512, w.data(), weighted.data()).ok());
    // Q8_0 and MXFP4 ignore an imatrix in ggml; every other format here has
    // an importance path.
    const bool ignored = f.type == GgmlType::kQ8_0 || f.type == GgmlType::kMxfp4;
    EXPECT_EQ(f.uses_importance, !ignored);
    if (ignored) {
      EXPECT_EQ(weighted, plain);
    } else {
      EXPECT_NE(weighted, plain);
    }
  }
}

TEST(GgmlQuantizeTest, ImportanceFastPathsMatchReferenceBitExact) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    if (!f.uses_importance) continue;
    std::vector<Path> paths = VectorPaths(f.type);
    paths.push_back({"dispatched", Isa::kScalar, f.fast});
    for (const Path& path : paths) {
      if (internal::CpuIsa() < path.isa) continue;
      uint32_t seed = 4242;
      for (int64_t blocks : {1, 2, 17, 40}) {
        for (float spread : {1e-3f, 1.0f, 300.0f}) {
          ++seed;
          SCOPED_TRACE(absl::StrCat(f.name, " ", path.name, " blocks ", blocks,
                                    " spread ", spread, " seed ", seed));
          const auto n = static_cast<size_t>(blocks * f.block_size);
          const std::vector<float> x = RandomWeights(n, seed, spread);
          const std::vector<float> w = RandomImportance(n, seed + 1000);
          Bytes want(static_cast<size_t>(blocks * f.block_bytes));
          Bytes got(want.size(), 0xAA);
          f.reference(x.data(), blocks, w.data(), want.data());
          path.fn(x.data(), blocks, w.data(), got.data());
          ASSERT_EQ(got, want);
        }
      }
      // Hard inputs, as one row, with uniform and with random weights.
      const std::vector<float> hard = HardInput(f.block_size);
      const int64_t blocks = static_cast<int64_t>(hard.size()) / f.block_size;
      for (const std::vector<float>& w :
           {std::vector<float>(hard.size(), 1.0f), RandomImportance(hard.size(), 9)}) {
        SCOPED_TRACE(absl::StrCat(f.name, " ", path.name, " hard input"));
        Bytes want(static_cast<size_t>(blocks * f.block_bytes));
        Bytes got(want.size(), 0xAA);
        f.reference(hard.data(), blocks, w.data(), want.data());
        path.fn(hard.data(), blocks, w.data(), got.data());
        ASSERT_EQ(got, want);
      }
    }
  }
}

TEST(GgmlKnownBytesTest, ImportanceSearchFindsExactIntegerGrids) {
  // Integers that are codes times 1: the weighted least-squares fit of
  // make_qx_quants / make_qkx3_quants is exact (sum w x l == sum w l^2, the
  // same f32 products), so d = 1 and the codes are the integers.
  const std::vector<float> w = RandomImportance(32, 3);
  auto quantize = [&w](const char* type, const std::vector<float>& x) {
    const GgmlFormatTraits& f = *FindGgmlFormat(type);
    Bytes out(static_cast<size_t>(f.block_bytes));
    EXPECT_TRUE(GgmlQuantizeReference(f, x.data(), 1, 32, w.data(), out.data()).ok());
    return out;
  };
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16 - 8);
  const Bytes q40 = quantize("Q4_0", x);
  EXPECT_EQ(HalfAt(q40, 0), 0x3C00);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q40[2 + j], j | (j << 4)) << j;

  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  const Bytes q50 = quantize("Q5_0", x);
  EXPECT_EQ(HalfAt(q50, 0), 0x3C00);
  EXPECT_EQ(q50[2] | q50[3] << 8 | q50[4] << 16 | static_cast<uint32_t>(q50[5]) << 24,
            0xFFFF0000u);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q50[6 + j], j | (j << 4)) << j;

  // Asymmetric: codes 0..15 (0..31) with minimum 0; m is stored as +0.
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16);
  const Bytes q41 = quantize("Q4_1", x);
  EXPECT_EQ(HalfAt(q41, 0), 0x3C00);
  EXPECT_EQ(HalfAt(q41, 2), 0x0000);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q41[4 + j], j | (j << 4)) << j;
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j);
  const Bytes q51 = quantize("Q5_1", x);
  EXPECT_EQ(HalfAt(q51, 0), 0x3C00);
  EXPECT_EQ(HalfAt(q51, 2), 0x0000);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q51[8 + j], j | (j << 4)) << j;

  // ggml's imatrix search never takes a positive minimum (it starts from
  // min(0, min x) and clamps every fitted minimum above 0 to 0): a block of
  // 16..31 gets m <= 0 and spends its codes on about [0, 31].
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(16 + j % 16);
  const Bytes pos = quantize("Q4_1", x);
  EXPECT_LE(HalfToFloat(HalfAt(pos, 2)), 0.0f);
  EXPECT_GT(HalfToFloat(HalfAt(pos, 0)), 1.9f);
}

TEST(GgmlQuantizeTest, ImportanceWeightsUseEachRowsOwnMeanSquare) {
  // ggml's Q4_0..Q5_1 weights are qw * sqrt(sigma2 + x^2) with sigma2 the
  // mean square of the row: the same block quantizes differently next to
  // large or small neighbours, and a tensor is quantized row by row.
  const std::vector<float> block = RandomWeights(32, 12, 1.0f);
  const std::vector<float> w = RandomImportance(256, 13);
  for (const char* type : {"Q4_0", "Q4_1", "Q5_0", "Q5_1"}) {
    SCOPED_TRACE(type);
    const GgmlFormatTraits& f = *FindGgmlFormat(type);
    std::vector<float> rows = block;
    const std::vector<float> small = RandomWeights(224, 14, 1e-3f);
    rows.insert(rows.end(), small.begin(), small.end());
    rows.insert(rows.end(), block.begin(), block.end());
    const std::vector<float> large = RandomWeights(224, 15, 1e3f);
    rows.insert(rows.end(), large.begin(), large.end());
    const size_t row_bytes = static_cast<size_t>(*GgmlRowBytes(f, 256));
    Bytes both(2 * row_bytes);
    ASSERT_TRUE(GgmlQuantize(f, rows.data(), 2, 256, w.data(), both.data()).ok());
    EXPECT_NE(Bytes(both.begin(), both.begin() + f.block_bytes),
              Bytes(both.begin() + static_cast<long>(row_bytes),
                    both.begin() + static_cast<long>(row_bytes) + f.block_bytes));
    for (int r = 0; r < 2; ++r) {
      Bytes one(row_bytes);
      f.reference(rows.data() + 256 * r, 8, w.data(), one.data());
      EXPECT_EQ(Bytes(both.begin() + static_cast<long>(r * row_bytes),
                      both.begin() + static_cast<long>((r + 1) * row_bytes)),
                one);
    }
  }
}

TEST(GgmlQuantizeTest, EveryFastPathMatchesReferenceBitExact) {
  const uint32_t seed = 20250301;
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    const std::vector<float> hard = HardInput(f.block_size);
    std::vector<Path> paths = VectorPaths(f.type);
    paths.push_back({"dispatched", Isa::kScalar, f.fast});
    for (const Path& path : paths) {
      if (internal::CpuIsa() < path.isa) continue;
      int cases = 0;
      for (int64_t blocks : {1, 2, 3, 7, 32, 67, 256}) {
        for (float spread : {1e-3f, 0.02f, 1.0f, 300.0f}) {
          const uint32_t s = seed + static_cast<uint32_t>(cases++);
          SCOPED_TRACE(absl::StrCat(f.name, " ", path.name, " blocks ", blocks,
                                    " spread ", spread, " seed ", s));
          std::vector<float> x =
              RandomWeights(static_cast<size_t>(blocks * f.block_size), s, spread);
          Bytes want(static_cast<size_t>(blocks * f.block_bytes));
          Bytes got(want.size(), 0xAA);
          f.reference(x.data(), blocks, nullptr, want.data());
          path.fn(x.data(), blocks, nullptr, got.data());
          ASSERT_EQ(got, want);
        }
      }
      SCOPED_TRACE(absl::StrCat(f.name, " ", path.name, " hard blocks"));
      const int64_t blocks = static_cast<int64_t>(hard.size()) / f.block_size;
      Bytes want(static_cast<size_t>(blocks * f.block_bytes));
      Bytes got(want.size(), 0xAA);
      f.reference(hard.data(), blocks, nullptr, want.data());
      path.fn(hard.data(), blocks, nullptr, got.data());
      for (int64_t b = 0; b < blocks; ++b) {
        SCOPED_TRACE(absl::StrCat("hard block ", b));
        const auto first = want.begin() + b * f.block_bytes;
        ASSERT_EQ(Bytes(got.begin() + b * f.block_bytes,
                        got.begin() + (b + 1) * f.block_bytes),
                  Bytes(first, first + f.block_bytes));
      }
    }
  }
}

TEST(GgmlQuantizeTest, DispatchedTensorEqualsReferenceTensor) {
  const std::vector<float> x = RandomWeights(7 * 512, 77, 0.05f);
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    Bytes fast(static_cast<size_t>(7 * *GgmlRowBytes(f, 512)));
    ASSERT_TRUE(GgmlQuantize(f, x.data(), 7, 512, nullptr, fast.data()).ok());
    EXPECT_EQ(fast, QuantizeRef(f, x, 512));
  }
}

// Hand-computed blocks: each pins one rule of ggml's reference.

TEST(GgmlKnownBytesTest, Q8_0RoundsHalfAwayFromZero) {
  std::vector<float> x(32, 0.0f);
  const float in[] = {127.0f, -0.5f, 0.5f, 1.5f, -1.5f, 2.5f, 126.5f, -126.5f};
  std::copy(std::begin(in), std::end(in), x.begin());
  const Bytes b = Quantize1(GgmlType::kQ8_0, x);
  EXPECT_EQ(HalfAt(b, 0), 0x3C00);  // d = 127 / 127 = 1
  const int8_t want[] = {127, -1, 1, 2, -2, 3, 127, -127};
  for (int j = 0; j < 8; ++j) EXPECT_EQ(static_cast<int8_t>(b[2 + j]), want[j]) << j;
  for (int j = 8; j < 32; ++j) EXPECT_EQ(b[2 + j], 0) << j;
}

TEST(GgmlKnownBytesTest, Q8_0ScaleBeyondF16IsInfiniteCodesStillF32) {
  std::vector<float> x(32, 0.0f);
  x[0] = 1e7f;  // d = 78740.16 > 65504: stored as +Inf
  x[1] = -5e6f;
  const Bytes b = Quantize1(GgmlType::kQ8_0, x);
  EXPECT_EQ(HalfAt(b, 0), 0x7C00);
  EXPECT_EQ(static_cast<int8_t>(b[2]), 127);
  EXPECT_EQ(static_cast<int8_t>(b[3]), -64);  // roundf(-63.5) = -64
  x.assign(32, 0.0f);
  x[0] = 65504.0f * 127.0f;  // d = 65504 exactly: the largest finite f16
  EXPECT_EQ(HalfAt(Quantize1(GgmlType::kQ8_0, x), 0), 0x7BFF);
}

TEST(GgmlKnownBytesTest, SubnormalMaximumGivesCodeZeroAsX86Does) {
  // max|x| = 16e-39: d = max/127 is a subnormal and 1/d overflows to +Inf, so
  // x * (1/d) is +-Inf (or NaN for 0) and ggml's float->int8 cast yields the
  // low byte of 0x80000000 on x86-64.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) * 1e-39f;
  const Bytes q8 = Quantize1(GgmlType::kQ8_0, x);
  EXPECT_EQ(HalfAt(q8, 0), 0x0000);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(q8[2 + j], 0) << j;
  const Bytes q4 = Quantize1(GgmlType::kQ4_0, x);
  EXPECT_EQ(HalfAt(q4, 0), 0x0000);  // d = -16e-39 / -8 rounds to +0 in f16
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q4[2 + j], 0) << j;
}

TEST(GgmlKnownBytesTest, Q4_0ScaleIsSignedMaxOverMinusEightTruncatedCodes) {
  std::vector<float> x(32, 0.0f);
  const float in[] = {-8.0f, 7.0f, 7.5f, -0.5f, 0.5f, -7.6f, 0.49f};
  std::copy(std::begin(in), std::end(in), x.begin());
  x[16] = 1.0f;
  x[17] = -1.0f;
  const Bytes b = Quantize1(GgmlType::kQ4_0, x);
  EXPECT_EQ(HalfAt(b, 0), 0x3C00);  // d = -8 / -8 = 1, id = 1
  // code = min(15, trunc(x + 8.5)); byte j = code(j) | code(j + 16) << 4.
  const uint8_t lo[] = {0, 15, 15, 8, 9, 0, 8};
  EXPECT_EQ(b[2], lo[0] | (9 << 4));
  EXPECT_EQ(b[3], lo[1] | (7 << 4));
  for (int j = 2; j < 7; ++j) EXPECT_EQ(b[2 + j], lo[j] | (8 << 4)) << j;
  // A positive maximum gives a negative scale.
  x.assign(32, 0.0f);
  x[0] = 8.0f;
  x[1] = -8.0f;
  const Bytes p = Quantize1(GgmlType::kQ4_0, x);
  EXPECT_EQ(HalfAt(p, 0), 0xBC00);  // d = -1
  EXPECT_EQ(p[2], 0x80);            // 8 -> trunc(0.5) = 0; x[16] = 0 -> 8
  EXPECT_EQ(p[3], 0x8F);            // -8 -> trunc(16.5) = 16 -> 15
}

TEST(GgmlKnownBytesTest, SignedZerosFollowGgmlsComparisons) {
  // All zeros, the first one -0: ggml's max stays its initial +0, so
  // d = +0 / -8 = -0 (f16 0x8000). gguf's numpy Q4_0 takes the element
  // itself (-0) and stores +0: one of the documented differences.
  std::vector<float> x(32, 0.0f);
  x[0] = -0.0f;
  const Bytes q4 = Quantize1(GgmlType::kQ4_0, x);
  EXPECT_EQ(HalfAt(q4, 0), 0x8000);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q4[2 + j], 0x88);
  const Bytes q5 = Quantize1(GgmlType::kQ5_0, x);
  EXPECT_EQ(HalfAt(q5, 0), 0x8000);
  // Q4_1: `if (v < min)` keeps the first of -0 and +0 as the minimum.
  const Bytes q41 = Quantize1(GgmlType::kQ4_1, x);
  EXPECT_EQ(HalfAt(q41, 0), 0x0000);  // d = (0 - -0) / 15 = +0
  EXPECT_EQ(HalfAt(q41, 2), 0x8000);  // m = -0
  x[0] = 0.0f;
  x[1] = -0.0f;
  EXPECT_EQ(HalfAt(Quantize1(GgmlType::kQ4_1, x), 2), 0x0000);
}

TEST(GgmlKnownBytesTest, Q5_1HasNoClampAndSplitsTheFifthBit) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 32);
  x[31] = 31.0f;
  const Bytes b = Quantize1(GgmlType::kQ5_1, x);
  EXPECT_EQ(HalfAt(b, 0), 0x3C00);  // d = 31 / 31
  EXPECT_EQ(HalfAt(b, 2), 0x0000);  // m = 0
  uint32_t qh;
  std::memcpy(&qh, b.data() + 4, 4);
  EXPECT_EQ(qh, 0xFFFF0000u);  // codes 16..31 have bit 4
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[8 + j], j | (j << 4)) << j;
}

TEST(GgmlKnownBytesTest, Mxfp4ExponentAndNearestTableEntry) {
  std::vector<float> x(32, 0.0f);
  const float in[] = {1.0f, 0.5f, -0.75f, 0.1875f, -0.0f, -1.0f};
  std::copy(std::begin(in), std::end(in), x.begin());
  const Bytes b = Quantize1(GgmlType::kMxfp4, x);
  // e = floor(log2 1) - 2 + 127 = 125; the half scale 2^(125-128) = 0.125.
  EXPECT_EQ(b[0], 125);
  EXPECT_EQ(GgmlE8m0ToFloatHalf(125), 0.125f);
  // 1 = 8 * 0.125 (index 6), 0.5 -> 4 (4), -0.75 -> -6 (13), 0.1875 is a tie
  // of 1 and 2 -> first entry (1), -0 -> 0 (index 0), -1 -> -8 (14).
  const uint8_t want[] = {6, 4, 13, 1, 0, 14};
  for (int j = 0; j < 6; ++j) EXPECT_EQ(b[1 + j], want[j]) << j;
  // A subnormal maximum: floor(log2 2^-130) - 2 + 127 = -5, cast to uint8
  // on x86-64 -> 251.
  x.assign(32, 0.0f);
  x[3] = std::ldexp(1.0f, -130);
  EXPECT_EQ(Quantize1(GgmlType::kMxfp4, x)[0], 251);
  EXPECT_EQ(GgmlE8m0ToFloatHalf(0), std::ldexp(1.0f, -128));
  EXPECT_EQ(GgmlE8m0ToFloatHalf(1), std::ldexp(1.0f, -127));
  EXPECT_EQ(GgmlE8m0ToFloatHalf(254), std::ldexp(1.0f, 126));
}

TEST(GgmlKnownBytesTest, Iq4NlAllZeroAndExactTableBlocks) {
  // All zero (and below ggml's 1e-15 group epsilon): scale 0, and the codes
  // of 0 * x = 0 are index 8 (value 1 is nearer than -10).
  for (float v : {0.0f, 1e-16f}) {
    const Bytes z = Quantize1(GgmlType::kIq4Nl, std::vector<float>(32, v));
    EXPECT_EQ(HalfAt(z, 0), 0x0000);
    for (int j = 0; j < 16; ++j) EXPECT_EQ(z[2 + j], 0x88) << j;
  }
  // x = table * 2^-6: the scale search reaches the exact fit, d = 2^-6.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) {
    x[j] = std::ldexp(static_cast<float>(kGgmlIq4NlValues[j % 16]), -6);
  }
  const Bytes b = Quantize1(GgmlType::kIq4Nl, x);
  EXPECT_EQ(HalfAt(b, 0), 0x2400);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[2 + j], j | (j << 4)) << j;
}

TEST(GgmlKnownBytesTest, Iq4XsSubBlockScalesAreSixBitMultiplesOfD) {
  // Sub-block k holds the table times 2^-6 (k != 1) or 2^-7 (k == 1): the
  // search finds those scales exactly; max_scale = 2^-6, so
  // d = -2^-6 / 32 = -2^-11 (f16 0x9000), l = nearest(scale / d) = -32 or -16,
  // stored as l + 32 = 0 or 16 (low nibble 0, high bits 01 at k = 1).
  std::vector<float> x(256);
  for (int j = 0; j < 256; ++j) {
    x[j] = std::ldexp(static_cast<float>(kGgmlIq4NlValues[j % 16]),
                      j / 32 == 1 ? -7 : -6);
  }
  const Bytes b = QuantizeRef(*FindGgmlFormat("IQ4_XS"), x, 256);
  ASSERT_EQ(b.size(), 136u);
  EXPECT_EQ(HalfAt(b, 0), 0x9000);
  EXPECT_EQ(HalfAt(b, 2), 0x0004);  // scales_h
  for (int k = 0; k < 4; ++k) EXPECT_EQ(b[4 + k], 0) << k;
  for (int j = 0; j < 128; ++j) EXPECT_EQ(b[8 + j], (j % 16) | ((j % 16) << 4)) << j;
  std::vector<float> back(256);
  ASSERT_TRUE(GgmlDequantize(*FindGgmlFormat("IQ4_XS"), b.data(), 1, 256, back.data()).ok());
  EXPECT_EQ(back, x);
  // All zero: max_scale stays +0, d = -0 / 32 = -0 (0x8000); every l is 0,
  // stored 32 (high bits 10), codes of 0 are index 8.
  const Bytes z = QuantizeRef(*FindGgmlFormat("IQ4_XS"), std::vector<float>(256, 0.0f), 256);
  EXPECT_EQ(HalfAt(z, 0), 0x8000);
  EXPECT_EQ(HalfAt(z, 2), 0xAAAA);
  for (int j = 0; j < 128; ++j) EXPECT_EQ(z[8 + j], 0x88) << j;
}

TEST(GgmlKnownBytesTest, Iq4NlImportanceChangesTheScaleSearch) {
  const GgmlFormatTraits& f = *FindGgmlFormat("IQ4_NL");
  const std::vector<float> x = RandomWeights(32 * 64, 11, 1.0f);
  std::vector<float> ones(32 * 64, 1.0f);
  std::vector<float> skewed(32 * 64);
  for (size_t j = 0; j < skewed.size(); ++j) skewed[j] = (j % 7 == 0) ? 100.0f : 0.01f;
  const Bytes plain = QuantizeRef(f, x, 32 * 64);
  const Bytes skew = QuantizeRef(f, x, 32 * 64, skewed.data());
  EXPECT_NE(plain, skew);
  // Importance-weighted error on the favoured elements is not worse.
  std::vector<float> a(x.size()), b(x.size());
  ASSERT_TRUE(GgmlDequantize(f, plain.data(), 1, 32 * 64, a.data()).ok());
  ASSERT_TRUE(GgmlDequantize(f, skew.data(), 1, 32 * 64, b.data()).ok());
  double err_plain = 0, err_skew = 0;
  for (size_t j = 0; j < x.size(); ++j) {
    err_plain += skewed[j] * (x[j] - a[j]) * (x[j] - a[j]);
    err_skew += skewed[j] * (x[j] - b[j]) * (x[j] - b[j]);
  }
  EXPECT_LT(err_skew, err_plain);
  // The tensor API passes the same row weights to every row.
  Bytes two_rows(2 * plain.size());
  std::vector<float> xx(x);
  xx.insert(xx.end(), x.begin(), x.end());
  ASSERT_TRUE(GgmlQuantize(f, xx.data(), 2, 32 * 64, skewed.data(), two_rows.data()).ok());
  EXPECT_EQ(Bytes(two_rows.begin() + static_cast<long>(skew.size()), two_rows.end()), skew);
}

TEST(GgmlDequantizeTest, KnownValuesAndRoundTripBounds) {
  // Q4_1: x = q * d + m.
  Bytes q41(20, 0);
  const uint16_t d = FloatToHalf(0.5f), m = FloatToHalf(-2.0f);
  std::memcpy(q41.data(), &d, 2);
  std::memcpy(q41.data() + 2, &m, 2);
  q41[4] = 0x3F;  // element 0: code 15, element 16: code 3
  std::vector<float> y(32);
  ASSERT_TRUE(GgmlDequantize(*FindGgmlFormat("Q4_1"), q41.data(), 1, 32, y.data()).ok());
  EXPECT_EQ(y[0], 5.5f);
  EXPECT_EQ(y[16], -0.5f);
  EXPECT_EQ(y[1], -2.0f);

  const std::vector<float> x = RandomWeights(32 * 64, 3, 1.0f);
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const Bytes b = QuantizeRef(f, x, 32 * 64);
    std::vector<float> w(x.size());
    ASSERT_TRUE(GgmlDequantize(f, b.data(), 1, 32 * 64, w.data()).ok());
    double err = 0, energy = 0;
    for (size_t j = 0; j < x.size(); ++j) {
      err += (x[j] - w[j]) * (x[j] - w[j]);
      energy += x[j] * x[j];
    }
    // Relative MSE of a sane quantizer on Gaussian data with 40x outliers.
    EXPECT_LT(err / energy, f.type == GgmlType::kQ8_0 ? 5e-4 : 5e-2);
  }
}

TEST(GgmlDequantizeAndMeasureTest, ValuesAndMetricsOfTheRoundTrip) {
  // 7 rows of 2304: chunks of 4096 elements cross rows, the last is short.
  const int64_t rows = 7, row_length = 2304;
  const uint32_t seed = 20261125;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<float> x =
      RandomWeights(static_cast<size_t>(rows * row_length), seed, 0.02f);
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    Bytes codes(static_cast<size_t>(rows * *GgmlRowBytes(f, row_length)));
    ASSERT_TRUE(
        GgmlQuantize(f, x.data(), rows, row_length, nullptr, codes.data())
            .ok());
    std::vector<float> want_hat(x.size());
    ASSERT_TRUE(
        GgmlDequantize(f, codes.data(), rows, row_length, want_hat.data())
            .ok());
    const ErrorMetrics want =
        ComputeErrorMetrics(x.data(), want_hat.data(), x.size());

    std::vector<float> w_hat(x.size(), -1.0f);
    absl::StatusOr<ErrorMetrics> with = GgmlDequantizeAndMeasure(
        f, codes.data(), rows, row_length, x.data(), w_hat.data());
    ASSERT_TRUE(with.ok()) << with.status();
    EXPECT_EQ(0, std::memcmp(w_hat.data(), want_hat.data(),
                             w_hat.size() * sizeof(float)));
    absl::StatusOr<ErrorMetrics> without = GgmlDequantizeAndMeasure(
        f, codes.data(), rows, row_length, x.data(), nullptr);
    ASSERT_TRUE(without.ok()) << without.status();
    for (const ErrorMetrics* m : {&*with, &*without}) {
      if (DetectedIsa() == Isa::kScalar) {
        EXPECT_EQ(m->mse, want.mse);
        EXPECT_EQ(m->sqnr_db, want.sqnr_db);
        EXPECT_EQ(m->cosine_similarity, want.cosine_similarity);
      }
      // DequantizeAndMeasure's bound for the vector paths.
      EXPECT_NEAR(m->mse, want.mse, 1e-12 * want.mse);
      EXPECT_NEAR(m->rmse, want.rmse, 1e-12 * want.rmse);
      EXPECT_NEAR(m->sqnr_db, want.sqnr_db, 1e-9);
      EXPECT_NEAR(m->cosine_similarity, want.cosine_similarity, 1e-12);
      EXPECT_EQ(m->max_abs_error, want.max_abs_error);
      EXPECT_EQ(m->bits_per_weight, 8.0 * f.block_bytes / f.block_size);
    }
    EXPECT_EQ(with->mse, without->mse);
    EXPECT_EQ(with->cosine_similarity, without->cosine_similarity);
  }
}

TEST(GgmlDequantizeAndMeasureTest, EveryAccumulatorOfThisCpuMatchesTheReference) {
  const std::vector<float> x = RandomWeights(4096, 7, 1.0f);
  const std::vector<float> y = RandomWeights(4096, 8, 1.0f);
  std::vector<internal::AccumulateMetricsFn> paths = {
      &internal::AccumulateMetricsScalar};
  if (internal::CpuIsa() >= Isa::kAvx2) {
    paths.push_back(&internal::AccumulateMetricsAvx2);
  }
  if (internal::CpuIsa() >= Isa::kAvx512) {
    paths.push_back(&internal::AccumulateMetricsAvx512);
  }
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{17}, int64_t{4096}}) {
    internal::MetricSums want;
    internal::AccumulateBlockReference(x.data(), y.data(),
                                       static_cast<size_t>(n), want);
    for (size_t p = 0; p < paths.size(); ++p) {
      SCOPED_TRACE(::testing::Message() << "path " << p << " n " << n);
      internal::MetricSums got;
      paths[p](x.data(), y.data(), n, got);
      EXPECT_NEAR(got.err2, want.err2, 1e-12 * want.err2);
      EXPECT_NEAR(got.w2, want.w2, 1e-12 * want.w2);
      EXPECT_NEAR(got.what2, want.what2, 1e-12 * want.what2);
      EXPECT_NEAR(got.dot, want.dot, 1e-12 * std::fabs(want.dot) + 1e-300);
      EXPECT_EQ(got.max_abs, want.max_abs);
    }
  }
}

TEST(GgmlDequantizeAndMeasureTest, RowsThatAreNotWholeBlocksAreInvalidArgument) {
  const GgmlFormatTraits& q4 = *FindGgmlFormat("Q4_0");
  const std::vector<float> x(48, 1.0f);
  Bytes codes(64);
  EXPECT_EQ(GgmlDequantizeAndMeasure(q4, codes.data(), 1, 48, x.data(), nullptr)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GgmlDequantizeAndMeasure(q4, codes.data(), -1, 32, x.data(), nullptr)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantd
