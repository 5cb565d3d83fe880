// Dequantize and DequantizeAndMeasure (kernels/quantize.h): every vector path
// against the scalar reference, byte for byte for the values and within the
// documented bound for the metrics.
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
#include "kernels/metrics.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"
#include "tests/kernels/scheme_cases.h"

namespace quantd {
namespace {

struct IsaPath {
  const char* name;
  Isa isa;
  DequantizeFn dequantize;
  internal::DequantizeAndMeasureFn measure;
};

const IsaPath kPaths[] = {
    {"scalar", Isa::kScalar, &internal::DequantizeIntScalar,
     &internal::DequantizeAndMeasureScalar},
    {"avx2", Isa::kAvx2, &internal::DequantizeIntAvx2,
     &internal::DequantizeAndMeasureAvx2},
    {"avx512", Isa::kAvx512, &internal::DequantizeIntAvx512,
     &internal::DequantizeAndMeasureAvx512},
};

bool CpuHas(Isa isa) {
  return static_cast<int>(internal::CpuIsa()) >= static_cast<int>(isa);
}

// The relative bound of the header contract, for the sizes tested here.
constexpr double kRelativeBound = 1e-12;

using ::quantd::testing::RandomValues;

const std::vector<std::vector<int64_t>> kShapes = {
    {},       {1},     {7},     {13},     {1, 1},     {3, 5},     {7, 33},
    {4, 127}, {2, 9},  {5, 24}, {3, 256}, {64, 4096}, {2, 3, 96},
    // Several metrics blocks with a partial last one, odd row lengths.
    {3, 4099}, {17, 1000},
};

using ::quantd::testing::SchemesFor;

void ExpectSameBits(const std::vector<float>& want,
                    const std::vector<float>& got) {
  ASSERT_EQ(want.size(), got.size());
  ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
      << [&] {
           for (size_t i = 0; i < want.size(); ++i) {
             uint32_t a, b;
             std::memcpy(&a, &want[i], 4);
             std::memcpy(&b, &got[i], 4);
             if (a != b) {
               return absl::StrCat("first difference at ", i, ": ", want[i],
                                   " vs ", got[i]);
             }
           }
           return std::string();
         }();
}

void ExpectRelativeNear(double want, double got, const char* what) {
  if (want == got) return;
  EXPECT_LE(std::fabs(want - got), kRelativeBound * std::fabs(want))
      << what << ": " << want << " vs " << got;
}

// The header's bound: identical max_abs_error and bits_per_weight, mse and
// rmse within the relative bound, sqnr_db within 9x it (dB), cosine 3x.
void ExpectMetricsWithinBound(const ErrorMetrics& want, const ErrorMetrics& got) {
  EXPECT_EQ(want.max_abs_error, got.max_abs_error);
  EXPECT_EQ(want.bits_per_weight, got.bits_per_weight);
  ExpectRelativeNear(want.mse, got.mse, "mse");
  ExpectRelativeNear(want.rmse, got.rmse, "rmse");
  if (std::isinf(want.sqnr_db)) {
    EXPECT_EQ(want.sqnr_db, got.sqnr_db);
  } else {
    EXPECT_NEAR(want.sqnr_db, got.sqnr_db, 9 * kRelativeBound);
  }
  EXPECT_NEAR(want.cosine_similarity, got.cosine_similarity, 3 * kRelativeBound);
}

// The reference pair the fused function replaces.
ErrorMetrics ReferenceMetrics(const QuantizedTensor& q, const float* src,
                              std::vector<float>* w_hat) {
  w_hat->assign(static_cast<size_t>(q.layout.num_elements), 0.0f);
  DequantizeReference(q, w_hat->data());
  ErrorMetrics m = ComputeErrorMetrics(src, w_hat->data(), w_hat->size());
  m.bits_per_weight = q.layout.BitsPerWeight();
  return m;
}

TEST(DequantizeTest, EveryPathMatchesReferenceBitExact) {
  const uint32_t seed = 20240611;
  int cases = 0;
  for (int bits = 2; bits <= 8; ++bits) {
    for (bool symmetric : {true, false}) {
      for (const auto& shape : kShapes) {
        const int64_t row_length = shape.empty() ? 1 : shape.back();
        for (const Scheme& scheme : SchemesFor(bits, symmetric, row_length)) {
          const uint32_t case_seed = seed + static_cast<uint32_t>(cases);
          SCOPED_TRACE(absl::StrCat(SchemeToString(scheme), " shape [",
                                    absl::StrJoin(shape, ","), "] seed ",
                                    case_seed));
          auto layout = MakeLayout(scheme, shape);
          ASSERT_TRUE(layout.ok()) << layout.status();
          const auto n = static_cast<size_t>(layout->num_elements);
          const float spread = (bits + cases) % 3 == 0 ? 1e-3f : 2.0f;
          const std::vector<float> x = RandomValues(n, case_seed, spread);
          QuantizedTensor q = AllocateQuantized(*layout);
          ASSERT_TRUE(QuantizeReference(x.data(), q).ok());
          std::vector<float> want;
          const ErrorMetrics want_metrics = ReferenceMetrics(q, x.data(), &want);
          for (const IsaPath& path : kPaths) {
            if (!CpuHas(path.isa)) continue;
            SCOPED_TRACE(path.name);
            // Guard values catch writes past the end.
            std::vector<float> got(n + 17, -1234.5f);
            path.dequantize(q, got.data());
            for (size_t i = n; i < got.size(); ++i) ASSERT_EQ(got[i], -1234.5f);
            got.resize(n);
            ExpectSameBits(want, got);

            std::vector<float> fused(n + 17, -1234.5f);
            const ErrorMetrics with = path.measure(q, x.data(), fused.data());
            for (size_t i = n; i < fused.size(); ++i) ASSERT_EQ(fused[i], -1234.5f);
            fused.resize(n);
            ExpectSameBits(want, fused);
            const ErrorMetrics without = path.measure(q, x.data(), nullptr);
            ExpectMetricsWithinBound(want_metrics, with);
            ExpectMetricsWithinBound(want_metrics, without);
            // Storing w_hat or not never changes the sums.
            EXPECT_EQ(with.mse, without.mse);
            EXPECT_EQ(with.sqnr_db, without.sqnr_db);
            EXPECT_EQ(with.cosine_similarity, without.cosine_similarity);
            if (path.isa == Isa::kScalar) {
              // Same summation order as ComputeErrorMetrics: exact.
              EXPECT_EQ(want_metrics.mse, with.mse);
              EXPECT_EQ(want_metrics.cosine_similarity, with.cosine_similarity);
            }
          }
          ++cases;
        }
      }
    }
  }
  EXPECT_GT(cases, 500);
}

TEST(DequantizeTest, DispatchedEntryPointsMatchReference) {
  for (const char* text : {"int8", "int8_asym_channel", "int4_g128",
                           "int4_asym_g128", "int3_asym_g64", "int2_tensor",
                           "int5_asym_g8", "int7_g1"}) {
    SCOPED_TRACE(text);
    auto layout = MakeLayout(*ParseScheme(text), {17, 256});
    ASSERT_TRUE(layout.ok());
    const std::vector<float> x = RandomValues(17 * 256, 7, 1.0f);
    QuantizedTensor q = AllocateQuantized(*layout);
    ASSERT_TRUE(Quantize(x.data(), q).ok());
    std::vector<float> want;
    const ErrorMetrics want_metrics = ReferenceMetrics(q, x.data(), &want);
    std::vector<float> got(x.size());
    Dequantize(q, got.data());
    ExpectSameBits(want, got);
    std::vector<float> via_table(x.size());
    FindFormat(q.layout.scheme.format)->dequantize(q, via_table.data());
    ExpectSameBits(want, via_table);
    std::vector<float> fused(x.size());
    ExpectMetricsWithinBound(want_metrics,
                             DequantizeAndMeasure(q, x.data(), fused.data()));
    ExpectSameBits(want, fused);
    const ErrorMetrics a = DequantizeAndMeasure(q, x.data(), nullptr);
    const ErrorMetrics b = DequantizeAndMeasure(q, x.data(), nullptr);
    ExpectMetricsWithinBound(want_metrics, a);
    // Deterministic run to run.
    EXPECT_EQ(std::memcmp(&a, &b, sizeof(a)), 0);
  }
}

TEST(DequantizeTest, ExactReconstructionGivesInfiniteSqnrAndCosineOne) {
  // Small integers with amax 7: int4 symmetric per tensor has scale 1 and
  // reproduces every value exactly.
  auto layout = MakeLayout(*ParseScheme("int4_tensor"), {5, 1000});
  ASSERT_TRUE(layout.ok());
  std::vector<float> x(5000);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>(static_cast<int>(i * 7919 % 15) - 7);
  }
  QuantizedTensor q = AllocateQuantized(*layout);
  ASSERT_TRUE(Quantize(x.data(), q).ok());
  ASSERT_EQ(q.scales[0], 1.0f);
  for (const IsaPath& path : kPaths) {
    if (!CpuHas(path.isa)) continue;
    SCOPED_TRACE(path.name);
    for (bool store : {true, false}) {
      std::vector<float> y(x.size());
      const ErrorMetrics m = path.measure(q, x.data(), store ? y.data() : nullptr);
      EXPECT_EQ(m.mse, 0.0);
      EXPECT_EQ(m.rmse, 0.0);
      EXPECT_EQ(m.max_abs_error, 0.0);
      EXPECT_EQ(m.sqnr_db, std::numeric_limits<double>::infinity());
      // dot == w2 == what2 exactly, but sqrt(w2)^2 may round: 1 within ulps
      // (as for ComputeErrorMetrics).
      EXPECT_DOUBLE_EQ(m.cosine_similarity, 1.0);
      EXPECT_EQ(m.bits_per_weight, layout->BitsPerWeight());
      if (store) ExpectSameBits(x, y);
    }
  }
}

TEST(DequantizeTest, AllZeroTensors) {
  for (const char* text : {"int8", "int4_asym_g8", "int2_tensor", "int3_asym",
                           "int6_g1"}) {
    auto layout = MakeLayout(*ParseScheme(text), {3, 4160});
    ASSERT_TRUE(layout.ok());
    const std::vector<float> x(3 * 4160, 0.0f);
    QuantizedTensor q = AllocateQuantized(*layout);
    ASSERT_TRUE(Quantize(x.data(), q).ok());
    for (const IsaPath& path : kPaths) {
      if (!CpuHas(path.isa)) continue;
      SCOPED_TRACE(absl::StrCat(text, " ", path.name));
      std::vector<float> y(x.size(), 1.0f);
      path.dequantize(q, y.data());
      for (float v : y) ASSERT_EQ(v, 0.0f);
      const ErrorMetrics m = path.measure(q, x.data(), nullptr);
      EXPECT_EQ(m.mse, 0.0);
      EXPECT_EQ(m.max_abs_error, 0.0);
      EXPECT_EQ(m.sqnr_db, std::numeric_limits<double>::infinity());
      // Both norms zero: cosine 1 by definition.
      EXPECT_EQ(m.cosine_similarity, 1.0);
    }
  }
}

TEST(DequantizeTest, ExtremeScalesMatchReference) {
  // FLT_MIN scales (zero rows next to a tiny value) and huge ones.
  for (float value : {1e-40f, FLT_MIN, 3.0f, FLT_MAX / 2}) {
    for (const char* text : {"int8", "int8_asym_g16", "int3_g8", "int2_asym",
                             "int5_asym_channel"}) {
      SCOPED_TRACE(absl::StrCat(text, " value ", value));
      auto layout = MakeLayout(*ParseScheme(text), {3, 48});
      ASSERT_TRUE(layout.ok());
      std::vector<float> x(144, value);
      x[5] = -value / 3;
      for (size_t i = 96; i < 144; ++i) x[i] = 0.0f;
      QuantizedTensor q = AllocateQuantized(*layout);
      ASSERT_TRUE(Quantize(x.data(), q).ok());
      std::vector<float> want;
      const ErrorMetrics want_metrics = ReferenceMetrics(q, x.data(), &want);
      for (const IsaPath& path : kPaths) {
        if (!CpuHas(path.isa)) continue;
        SCOPED_TRACE(path.name);
        std::vector<float> got(x.size());
        path.dequantize(q, got.data());
        ExpectSameBits(want, got);
        ExpectMetricsWithinBound(want_metrics, path.measure(q, x.data(), nullptr));
      }
    }
  }
}

TEST(UnpackCodesTest, Bmi2MatchesScalar) {
  if (!CpuHas(Isa::kAvx2)) GTEST_SKIP() << "no AVX2";
  const uint32_t seed = 4242;
  std::mt19937 rng(seed);
  for (int bits = 2; bits <= 8; ++bits) {
    for (int64_t n : {0, 8, 16, 64, 1000, 4096}) {
      SCOPED_TRACE(absl::StrCat("bits ", bits, " n ", n, " seed ", seed));
      std::vector<uint8_t> packed(static_cast<size_t>(n * bits / 8));
      for (auto& b : packed) b = static_cast<uint8_t>(rng());
      std::vector<uint8_t> want(static_cast<size_t>(n)), got(want.size() + 8, 0xAB);
      UnpackCodes(packed.data(), n, bits, want.data());
      internal::UnpackCodesBmi2(packed.data(), n, bits, got.data());
      for (size_t i = want.size(); i < got.size(); ++i) ASSERT_EQ(got[i], 0xAB);
      got.resize(want.size());
      EXPECT_EQ(want, got);
    }
  }
}

}  // namespace
}  // namespace quantd
