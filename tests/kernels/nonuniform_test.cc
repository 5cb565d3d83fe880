// Codebook formats (kernels/nonuniform.h): every vector path against the
// scalar reference, the k-means and power-of-two rules, and the quality
// claims (objective decreases, beats uniform RTN on Laplacian data, recovers
// separated clusters exactly).
#include "kernels/nonuniform.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/nonuniform_kernels.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

using internal::AssignCodesFn;
using internal::LookupFn;

struct AssignPath {
  const char* name;
  AssignCodesFn fn;
  Isa isa;
};
struct LookupPath {
  const char* name;
  LookupFn fn;
  Isa isa;
};

std::vector<AssignPath> AssignPaths() {
  std::vector<AssignPath> paths = {
      {"scalar", &internal::AssignCodesScalar, Isa::kScalar},
      {"avx2", &internal::AssignCodesAvx2, Isa::kAvx2},
      {"avx512", &internal::AssignCodesAvx512, Isa::kAvx512}};
  std::erase_if(paths, [](const AssignPath& p) {
    return p.isa > internal::CpuIsa();
  });
  return paths;
}

std::vector<LookupPath> LookupPaths() {
  std::vector<LookupPath> paths = {
      {"scalar", &internal::LookupScalar, Isa::kScalar},
      {"avx2", &internal::LookupAvx2, Isa::kAvx2},
      {"avx512", &internal::LookupAvx512, Isa::kAvx512}};
  std::erase_if(paths, [](const LookupPath& p) {
    return p.isa > internal::CpuIsa();
  });
  return paths;
}

std::vector<float> Gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<float> Laplacian(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::exponential_distribution<float> e(1.0f);
  std::bernoulli_distribution sign(0.5);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = sign(rng) ? e(rng) : -e(rng);
  return v;
}

// Gaussian with a few rows scaled by 30 and 1% single outliers x25.
std::vector<float> OutlierHeavy(int64_t rows, int64_t cols, uint32_t seed) {
  std::vector<float> v = Gaussian(rows * cols, seed, 0.02f);
  std::mt19937 rng(seed + 1);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const bool outlier_row = r % 7 == 3;
    for (int64_t c = 0; c < cols; ++c) {
      float& x = v[static_cast<size_t>(r * cols + c)];
      if (outlier_row) x *= 30.0f;
      if (u(rng) < 0.01f) x *= 25.0f;
    }
  }
  return v;
}

double SquaredError(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double{a[i]} - b[i];
    sum += d * d;
  }
  return sum;
}

double Sqnr(const std::vector<float>& w, const std::vector<float>& w_hat) {
  double signal = 0;
  for (float x : w) signal += double{x} * x;
  return 10.0 * std::log10(signal / SquaredError(w, w_hat));
}

std::vector<float> Dequantized(const CodebookTensor& q) {
  std::vector<float> out(static_cast<size_t>(q.num_elements()));
  EXPECT_TRUE(CodebookDequantize(q, out.data()).ok());
  return out;
}

std::vector<uint8_t> Codes(const CodebookTensor& q) {
  std::vector<uint8_t> codes(static_cast<size_t>(q.num_elements()));
  UnpackCodes(q.codes.data(), q.num_elements(), q.bits, codes.data());
  return codes;
}

CodebookOptions Options(int bits, Granularity granularity,
                        int64_t group_size = 0) {
  CodebookOptions o;
  o.bits = bits;
  o.granularity = granularity;
  o.group_size = group_size;
  return o;
}

// Sorted centroids with duplicates and their midpoints, padded like the
// quantizer pads them.
std::vector<float> MidpointsOf(std::vector<float> c) {
  std::sort(c.begin(), c.end());
  std::vector<float> m(internal::kMaxMidpoints, INFINITY);
  for (size_t j = 0; j + 1 < c.size(); ++j) m[j] = c[j] * 0.5f + c[j + 1] * 0.5f;
  return m;
}

TEST(AssignCodesTest, EveryPathEqualsTheLinearCount) {
  for (int bits = 1; bits <= 8; ++bits) {
    SCOPED_TRACE(absl::StrCat("bits ", bits));
    const int k = 1 << bits;
    std::mt19937 rng(static_cast<uint32_t>(bits));
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> c(static_cast<size_t>(k));
    for (float& v : c) v = d(rng);
    if (k >= 4) c[1] = c[2];  // a duplicate centroid
    const std::vector<float> m = MidpointsOf(c);
    // Random values, the centroids, the midpoints and their neighbours.
    std::vector<float> x = Gaussian(1000, 7u + static_cast<uint32_t>(bits));
    for (int j = 0; j + 1 < k; ++j) {
      x.push_back(m[j]);
      x.push_back(std::nextafter(m[j], INFINITY));
      x.push_back(std::nextafter(m[j], -INFINITY));
    }
    x.insert(x.end(), c.begin(), c.end());
    x.push_back(1e30f);
    x.push_back(-1e30f);
    std::vector<uint8_t> want(x.size());
    internal::AssignCodesReference(x.data(), static_cast<int64_t>(x.size()),
                                   m.data(), bits, want.data());
    // The rule: ties at a midpoint go to the lower index.
    for (int j = 0; j + 1 < k; ++j) {
      uint8_t code;
      internal::AssignCodesReference(&m[j], 1, m.data(), bits, &code);
      EXPECT_LE(code, j);
    }
    for (const AssignPath& path : AssignPaths()) {
      SCOPED_TRACE(path.name);
      for (size_t offset : {size_t{0}, size_t{3}}) {
        std::vector<uint8_t> got(x.size() - offset);
        path.fn(x.data() + offset, static_cast<int64_t>(got.size()), m.data(),
                bits, got.data());
        EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin() +
                               static_cast<std::ptrdiff_t>(offset)));
      }
    }
  }
}

TEST(LookupTest, EveryPathEqualsTheScalarCopy) {
  for (int bits = 1; bits <= 8; ++bits) {
    SCOPED_TRACE(absl::StrCat("bits ", bits));
    const std::vector<float> table = Gaussian(1 << bits, 11);
    std::mt19937 rng(3);
    std::vector<uint8_t> codes(203);
    for (uint8_t& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
    std::vector<float> want(codes.size());
    for (size_t i = 0; i < codes.size(); ++i) want[i] = table[codes[i]];
    for (const LookupPath& path : LookupPaths()) {
      SCOPED_TRACE(path.name);
      std::vector<float> got(codes.size(), -1.0f);
      path.fn(codes.data(), static_cast<int64_t>(codes.size()), table.data(),
              bits, got.data());
      EXPECT_EQ(got, want);
    }
  }
}

TEST(CodebookDequantizeTest, EveryPathEqualsTheReferenceOnUnalignedGroups) {
  // Groups of 7 elements: at 3 bits, groups start in the middle of bytes.
  for (int bits = 1; bits <= 8; ++bits) {
    SCOPED_TRACE(absl::StrCat("bits ", bits));
    const std::vector<float> w = Gaussian(5 * 1057, 5);
    absl::StatusOr<CodebookTensor> q =
        KMeansQuantize(w.data(), 5, 1057, Options(bits, Granularity::kPerGroup, 151));
    ASSERT_TRUE(q.ok()) << q.status();
    std::vector<float> want(w.size());
    ASSERT_TRUE(CodebookDequantizeReference(*q, want.data()).ok());
    const std::vector<uint8_t> codes = Codes(*q);
    for (size_t i = 0; i < w.size(); ++i) {
      ASSERT_EQ(want[i], q->codebooks[(i / 151 << bits) + codes[i]]) << i;
    }
    for (const LookupPath& path : LookupPaths()) {
      SCOPED_TRACE(path.name);
      std::vector<float> got(w.size());
      ASSERT_TRUE(internal::CodebookDequantizeWith(*q, path.fn, got.data()).ok());
      EXPECT_EQ(got, want);
    }
  }
}

TEST(CodebookDequantizeTest, RejectsInconsistentTensors) {
  const std::vector<float> w = Gaussian(64, 1);
  CodebookTensor q = *KMeansQuantize(w.data(), 2, 32, Options(3, Granularity::kPerChannel));
  std::vector<float> out(64);
  CodebookTensor bad = q;
  bad.codes.pop_back();
  EXPECT_EQ(CodebookDequantize(bad, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  bad = q;
  bad.codebooks.pop_back();
  EXPECT_EQ(CodebookDequantize(bad, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  bad = q;
  bad.group_size = 5;
  EXPECT_EQ(CodebookDequantize(bad, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

struct KMeansCase {
  int bits;
  Granularity granularity;
  int64_t group_size;
};

TEST(KMeansTest, EveryPathGivesTheReferenceBytes) {
  const std::vector<KMeansCase> cases = {
      {1, Granularity::kPerChannel, 0}, {2, Granularity::kPerGroup, 64},
      {3, Granularity::kPerTensor, 0},  {4, Granularity::kPerGroup, 128},
      {5, Granularity::kPerChannel, 0}, {6, Granularity::kPerChannel, 0},
      {8, Granularity::kPerChannel, 0}};
  const std::vector<float> w = OutlierHeavy(8, 512, 21);
  for (const KMeansCase& c : cases) {
    SCOPED_TRACE(absl::StrCat("bits ", c.bits, " group ", c.group_size));
    const CodebookOptions o = Options(c.bits, c.granularity, c.group_size);
    absl::StatusOr<CodebookTensor> want =
        KMeansQuantizeReference(w.data(), 8, 512, o);
    ASSERT_TRUE(want.ok()) << want.status();
    for (const AssignPath& path : AssignPaths()) {
      SCOPED_TRACE(path.name);
      absl::StatusOr<CodebookTensor> got =
          internal::KMeansQuantizeWith(w.data(), 8, 512, o, path.fn);
      ASSERT_TRUE(got.ok());
      EXPECT_EQ(got->codes, want->codes);
      EXPECT_EQ(got->codebooks, want->codebooks);
    }
    absl::StatusOr<CodebookTensor> again = KMeansQuantize(w.data(), 8, 512, o);
    EXPECT_EQ(again->codes, want->codes);
    EXPECT_EQ(again->codebooks, want->codebooks);
  }
}

TEST(KMeansTest, CodesNameTheNearestSortedCentroid) {
  const std::vector<float> w = Laplacian(4 * 300, 2);
  for (int bits : {1, 2, 4, 7}) {
    SCOPED_TRACE(absl::StrCat("bits ", bits));
    CodebookTensor q =
        *KMeansQuantize(w.data(), 4, 300, Options(bits, Granularity::kPerChannel));
    const std::vector<uint8_t> codes = Codes(q);
    const int k = 1 << bits;
    for (int64_t r = 0; r < 4; ++r) {
      const float* c = q.codebooks.data() + (r << bits);
      EXPECT_TRUE(std::is_sorted(c, c + k));
      for (int64_t i = 0; i < 300; ++i) {
        const float x = w[static_cast<size_t>(r * 300 + i)];
        const double chosen = std::fabs(double{x} - c[codes[r * 300 + i]]);
        for (int j = 0; j < k; ++j) {
          // Midpoints are rounded to f32: a relative slack of 2^-23.
          ASSERT_LE(chosen, std::fabs(double{x} - c[j]) + 1e-7 * std::fabs(x))
              << "row " << r << " element " << i << " centroid " << j;
        }
      }
    }
  }
}

TEST(KMeansTest, ConvergedCentroidsAreTheMeansOfTheirClusters) {
  const std::vector<float> w = Laplacian(3 * 500, 9);
  CodebookOptions o = Options(3, Granularity::kPerChannel);
  o.max_iterations = 10000;
  CodebookTensor q = *KMeansQuantize(w.data(), 3, 500, o);
  const std::vector<uint8_t> codes = Codes(q);
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<double> sum(8, 0.0);
    std::vector<int> count(8, 0);
    for (int64_t i = 0; i < 500; ++i) {
      const size_t e = static_cast<size_t>(r * 500 + i);
      sum[codes[e]] += w[e];
      ++count[codes[e]];
    }
    for (int j = 0; j < 8; ++j) {
      ASSERT_GT(count[j], 0);
      EXPECT_EQ(q.codebooks[static_cast<size_t>(r * 8 + j)],
                static_cast<float>(sum[j] / count[j]))
          << "row " << r << " centroid " << j;
    }
  }
}

TEST(KMeansTest, ObjectiveNeverIncreasesWithMoreIterations) {
  const std::vector<float> w = Laplacian(2 * 2048, 4);
  for (int bits : {2, 3, 4}) {
    SCOPED_TRACE(absl::StrCat("bits ", bits));
    double previous = INFINITY;
    double first = 0;
    for (int iterations = 0; iterations <= 12; ++iterations) {
      CodebookOptions o = Options(bits, Granularity::kPerChannel);
      o.max_iterations = iterations;
      const double objective =
          SquaredError(w, Dequantized(*KMeansQuantize(w.data(), 2, 2048, o)));
      if (iterations == 0) first = objective;
      EXPECT_LE(objective, previous * (1 + 1e-9)) << iterations;
      previous = objective;
    }
    EXPECT_LT(previous, first * 0.95);
  }
}

TEST(KMeansTest, BeatsUniformRoundToNearestOnLaplacianData) {
  const int64_t rows = 16;
  const int64_t cols = 1024;
  const std::vector<float> w = Laplacian(rows * cols, 13);
  for (int bits : {2, 3, 4}) {
    SCOPED_TRACE(absl::StrCat("bits ", bits));
    const double kmeans = Sqnr(
        w, Dequantized(*KMeansQuantize(w.data(), rows, cols,
                                       Options(bits, Granularity::kPerChannel))));
    absl::StatusOr<Layout> layout = MakeLayout(
        *ParseScheme(absl::StrCat("int", bits, "_asym_channel")), {rows, cols});
    ASSERT_TRUE(layout.ok());
    QuantizedTensor q = AllocateQuantized(*layout);
    ASSERT_TRUE(Quantize(w.data(), q).ok());
    std::vector<float> rtn(w.size());
    Dequantize(q, rtn.data());
    EXPECT_GT(kmeans, Sqnr(w, rtn) + 1.0);  // at least 1 dB better
  }
}

TEST(KMeansTest, RecoversWellSeparatedClusterMeansExactly) {
  for (int bits = 1; bits <= 5; ++bits) {
    SCOPED_TRACE(absl::StrCat("bits ", bits));
    const int k = 1 << bits;
    // Cluster j: 1000 * j - 300 plus offsets in (-1, 1) that are multiples of
    // 2^-10, members interleaved; the means are exact in f32.
    std::mt19937 rng(static_cast<uint32_t>(bits));
    std::vector<float> w;
    std::vector<double> sum(static_cast<size_t>(k), 0.0);
    std::vector<int> count(static_cast<size_t>(k), 0);
    for (int i = 0; i < 64 * k; ++i) {
      const int j = static_cast<int>(rng() % static_cast<uint32_t>(k));
      const int offset = static_cast<int>(rng() % 2047) - 1023;
      const float x = 1000.0f * static_cast<float>(j) - 300.0f +
                      static_cast<float>(offset) / 1024.0f;
      w.push_back(x);
      sum[static_cast<size_t>(j)] += x;
      ++count[static_cast<size_t>(j)];
    }
    CodebookTensor q = *KMeansQuantize(
        w.data(), 1, static_cast<int64_t>(w.size()),
        Options(bits, Granularity::kPerTensor));
    for (int j = 0; j < k; ++j) {
      ASSERT_GT(count[j], 0);
      EXPECT_EQ(q.codebooks[static_cast<size_t>(j)],
                static_cast<float>(sum[j] / count[j]))
          << "cluster " << j;
    }
    const std::vector<uint8_t> codes = Codes(q);
    for (size_t i = 0; i < w.size(); ++i) {
      ASSERT_EQ(codes[i], static_cast<int>(std::lround((w[i] + 300.0f) / 1000.0f)));
    }
  }
}

TEST(KMeansTest, FewerDistinctValuesThanCentroidsIsLossless) {
  const std::vector<float> w = {3, -1, 3, 3, 0.5f, -1, 0.5f, 3,   // 3 values
                                7, 7, 7, 7, 7, 7, 7, 7};          // constant
  CodebookTensor q = *KMeansQuantize(w.data(), 2, 8, Options(4, Granularity::kPerChannel));
  EXPECT_EQ(Dequantized(q), w);
  // A one-element group too.
  CodebookTensor one = *KMeansQuantize(w.data(), 16, 1, Options(2, Granularity::kPerChannel));
  EXPECT_EQ(Dequantized(one), w);
}

TEST(KMeansTest, SeedChangesOnlyTheSampling) {
  const std::vector<float> w = Gaussian(4096, 8);
  CodebookOptions a = Options(4, Granularity::kPerTensor);
  CodebookOptions b = a;
  b.seed = 12345;
  const double ea = SquaredError(w, Dequantized(*KMeansQuantize(w.data(), 1, 4096, a)));
  const double eb = SquaredError(w, Dequantized(*KMeansQuantize(w.data(), 1, 4096, b)));
  // Both converge to good local optima of the same data.
  EXPECT_NEAR(ea, eb, 0.05 * ea);
}

TEST(KMeansTest, RejectsBadInput) {
  std::vector<float> w = Gaussian(64, 1);
  EXPECT_EQ(KMeansQuantize(w.data(), 2, 32, Options(0, Granularity::kPerChannel)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KMeansQuantize(w.data(), 2, 32, Options(9, Granularity::kPerChannel)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KMeansQuantize(w.data(), 2, 32, Options(2, Granularity::kPerGroup, 5)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KMeansQuantize(w.data(), 0, 32, Options(2, Granularity::kPerChannel)).status().code(),
            absl::StatusCode::kInvalidArgument);
  CodebookOptions negative = Options(2, Granularity::kPerChannel);
  negative.max_iterations = -1;
  EXPECT_EQ(KMeansQuantize(w.data(), 2, 32, negative).status().code(),
            absl::StatusCode::kInvalidArgument);
  w[37] = NAN;
  absl::Status s =
      KMeansQuantize(w.data(), 2, 32, Options(2, Granularity::kPerChannel)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("37"), std::string::npos) << s;
}

// --- power of two --------------------------------------------------------

float PowerOfTwoRoundTrip(float x, float scale_element, int bits) {
  // A group holding the scale element (largest magnitude) and x.
  const std::vector<float> w = {scale_element, x};
  CodebookTensor q =
      *PowerOfTwoQuantize(w.data(), 1, 2, Options(bits, Granularity::kPerChannel));
  return Dequantized(q)[1];
}

TEST(PowerOfTwoTest, RoundsToTheNearestLevelWithTiesToTheSmallerMagnitude) {
  // bits 3: levels 1, 1/2, 1/4 and 0.
  EXPECT_EQ(PowerOfTwoRoundTrip(0.75f, 1.0f, 3), 0.5f);  // tie
  EXPECT_EQ(PowerOfTwoRoundTrip(std::nextafter(0.75f, 1.0f), 1.0f, 3), 1.0f);
  EXPECT_EQ(PowerOfTwoRoundTrip(-0.75f, 1.0f, 3), -0.5f);
  EXPECT_EQ(PowerOfTwoRoundTrip(0.375f, 1.0f, 3), 0.25f);  // tie
  EXPECT_EQ(PowerOfTwoRoundTrip(std::nextafter(0.375f, 1.0f), 1.0f, 3), 0.5f);
  EXPECT_EQ(PowerOfTwoRoundTrip(0.125f, 1.0f, 3), 0.0f);  // tie with zero
  EXPECT_EQ(PowerOfTwoRoundTrip(std::nextafter(0.125f, 1.0f), 1.0f, 3), 0.25f);
  EXPECT_EQ(PowerOfTwoRoundTrip(0.2f, 1.0f, 3), 0.25f);
  // A scale that is not a power of two: levels 3, 1.5, 0.75 (bits 3).
  EXPECT_EQ(PowerOfTwoRoundTrip(2.25f, 3.0f, 3), 1.5f);  // tie
  EXPECT_EQ(PowerOfTwoRoundTrip(std::nextafter(2.25f, 3.0f), 3.0f, 3), 3.0f);
  // bits 2: levels scale and 0.
  EXPECT_EQ(PowerOfTwoRoundTrip(0.5f, 1.0f, 2), 0.0f);
  EXPECT_EQ(PowerOfTwoRoundTrip(-0.6f, 1.0f, 2), -1.0f);
}

TEST(PowerOfTwoTest, LevelsRoundTripExactlyAndEveryValueGoesToItsNearest) {
  for (int bits = 2; bits <= 8; ++bits) {
    SCOPED_TRACE(absl::StrCat("bits ", bits));
    const int levels = (1 << (bits - 1)) - 1;
    const float scale = 1.7f;
    std::vector<float> w = {scale};
    for (int k = 0; k < levels; ++k) {
      w.push_back(std::ldexp(scale, -k));
      w.push_back(-std::ldexp(scale, -k));
    }
    const size_t exact = w.size();
    const std::vector<float> g = Gaussian(500, 17, 0.5f);
    for (float x : g) w.push_back(std::clamp(x, -scale, scale));
    CodebookTensor q = *PowerOfTwoQuantize(
        w.data(), 1, static_cast<int64_t>(w.size()), Options(bits, Granularity::kPerTensor));
    ASSERT_EQ(q.scales.size(), 1u);
    EXPECT_EQ(q.scales[0], scale);
    const std::vector<float> w_hat = Dequantized(q);
    for (size_t i = 0; i < exact; ++i) EXPECT_EQ(w_hat[i], w[i]) << i;
    for (size_t i = exact; i < w.size(); ++i) {
      const double chosen = std::fabs(double{w[i]} - w_hat[i]);
      EXPECT_LE(chosen, std::fabs(double{w[i]})) << i;  // zero level
      for (int k = 0; k < levels; ++k) {
        const double level = std::ldexp(double{scale}, -k);
        ASSERT_LE(chosen, std::fabs(std::fabs(double{w[i]}) - level)) << i;
      }
      ASSERT_TRUE(w_hat[i] == 0.0f || std::signbit(w_hat[i]) == std::signbit(w[i]));
    }
  }
}

TEST(PowerOfTwoTest, TablesFollowTheCodeLayout) {
  float table[8];
  PowerOfTwoCodebook(2.0f, 3, table);
  const std::vector<float> got(table, table + 8);
  EXPECT_EQ(got, (std::vector<float>{0, 2, 1, 0.5f, 0, -2, -1, -0.5f}));
  // All-zero groups: scale 0, everything decodes to 0.
  const std::vector<float> zeros(16, 0.0f);
  CodebookTensor q = *PowerOfTwoQuantize(zeros.data(), 2, 8, Options(4, Granularity::kPerChannel));
  EXPECT_EQ(q.scales, (std::vector<float>{0, 0}));
  EXPECT_EQ(Dequantized(q), zeros);
  EXPECT_EQ(q.codes, std::vector<uint8_t>(8, 0));
}

TEST(PowerOfTwoTest, RejectsBadInput) {
  std::vector<float> w = Gaussian(64, 1);
  EXPECT_EQ(PowerOfTwoQuantize(w.data(), 2, 32, Options(1, Granularity::kPerChannel)).status().code(),
            absl::StatusCode::kInvalidArgument);
  w[5] = INFINITY;
  absl::Status s =
      PowerOfTwoQuantize(w.data(), 2, 32, Options(4, Granularity::kPerChannel)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("5"), std::string::npos) << s;
}

TEST(CodebookTensorTest, BitsPerWeightCountsTablesOrScales) {
  const std::vector<float> w = Gaussian(4 * 128, 1);
  CodebookTensor k = *KMeansQuantize(w.data(), 4, 128, Options(2, Granularity::kPerChannel));
  EXPECT_DOUBLE_EQ(k.BitsPerWeight(), 2 + 4.0 * 32 * 4 / 512);
  CodebookTensor p = *PowerOfTwoQuantize(w.data(), 4, 128, Options(4, Granularity::kPerChannel));
  EXPECT_DOUBLE_EQ(p.BitsPerWeight(), 4 + 4.0 * 32 / 512);
}

}  // namespace
}  // namespace quantd
