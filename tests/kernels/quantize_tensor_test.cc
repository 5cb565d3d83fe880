#include "kernels/quantize_tensor.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "kernels/awq.h"
#include "kernels/calibration_stats.h"
#include "kernels/dtype.h"
#include "kernels/float_formats.h"
#include "kernels/ggml_formats.h"
#include "kernels/gptq.h"
#include "kernels/hqq.h"
#include "kernels/layout.h"
#include "kernels/metrics.h"
#include "kernels/nonuniform.h"
#include "kernels/output_error.h"
#include "kernels/parts.h"
#include "kernels/quantize.h"
#include "kernels/range_estimators.h"
#include "kernels/scheme.h"
#include "kernels/scheme_options.h"

namespace quantd {
namespace {

Layout LayoutOf(const char* scheme, std::vector<int64_t> shape) {
  absl::StatusOr<Scheme> s = ParseScheme(scheme);
  EXPECT_TRUE(s.ok()) << s.status();
  absl::StatusOr<Layout> layout = MakeLayout(*s, shape);
  EXPECT_TRUE(layout.ok()) << layout.status();
  return *layout;
}

constexpr uint32_t kSeed = 20261207;

std::vector<float> RandomWeights(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(n);
  for (float& v : w) v = normal(rng);
  return w;
}

absl::Status NotCancelled() { return absl::OkStatus(); }

template <typename T>
std::vector<uint8_t> BytesOf(const std::vector<T>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<uint8_t> BytesOf(const PartBuffer& part) {
  return std::vector<uint8_t>(part.bytes().begin(), part.bytes().end());
}

// Metrics are equal bit for bit (NaN-free here), bits per weight included.
void ExpectSameMetrics(const ErrorMetrics& got, const ErrorMetrics& want) {
  EXPECT_EQ(got.mse, want.mse);
  EXPECT_EQ(got.rmse, want.rmse);
  EXPECT_EQ(got.max_abs_error, want.max_abs_error);
  EXPECT_EQ(got.sqnr_db, want.sqnr_db);
  EXPECT_EQ(got.cosine_similarity, want.cosine_similarity);
  EXPECT_EQ(got.bits_per_weight, want.bits_per_weight);
}

TensorJob JobOf(const char* scheme, std::vector<int64_t> shape,
                OutputKind output = OutputKind::kBoth) {
  TensorJob job;
  job.name = "blk.0.w";
  job.layout = LayoutOf(scheme, shape);
  job.output = output;
  return job;
}

absl::StatusOr<TensorResult> QuantizeAll(const TensorJob& job,
                                         const std::vector<float>& w) {
  return QuantizeTensor(job, w.data(), NotCancelled);
}

TEST(QuantizeTensorTest, IntEqualsQuantize) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  const TensorJob job = JobOf("int4_asym_g128", {8, 256});
  const std::vector<float> w = RandomWeights(8 * 256, kSeed);
  absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
  ASSERT_TRUE(r.ok()) << r.status();

  QuantizedTensor q = AllocateQuantized(job.layout);
  ASSERT_TRUE(Quantize(w.data(), q).ok());
  std::vector<float> w_hat(w.size());
  const ErrorMetrics metrics = DequantizeAndMeasure(q, w.data(), w_hat.data());
  EXPECT_EQ(BytesOf(r->parts[Part::kCodes]), q.codes);
  EXPECT_EQ(BytesOf(r->parts[Part::kScales]), BytesOf(q.scales));
  EXPECT_EQ(BytesOf(r->parts[Part::kZeroPoints]), q.zero_points);
  EXPECT_EQ(BytesOf(r->parts[Part::kFakeQuant]), BytesOf(w_hat));
  EXPECT_TRUE(r->parts[Part::kGroupIndex].empty());
  ExpectSameMetrics(r->metrics, metrics);
  EXPECT_FALSE(r->calibration.has_value());
}

TEST(QuantizeTensorTest, IntWithImportedScalesEqualsQuantizeWithScales) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  TensorJob job = JobOf("int8_sym_channel", {4, 64}, OutputKind::kPacked);
  const std::vector<float> w = RandomWeights(4 * 64, kSeed);
  const std::vector<float> scales = {0.01f, 0.02f, 0.03f, 0.04f};
  job.imported_scales = scales;
  absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
  ASSERT_TRUE(r.ok()) << r.status();

  QuantizedTensor q = AllocateQuantized(job.layout);
  ASSERT_TRUE(QuantizeWithScales(w.data(), scales, {}, q).ok());
  EXPECT_EQ(BytesOf(r->parts[Part::kCodes]), q.codes);
  EXPECT_EQ(BytesOf(r->parts[Part::kScales]), BytesOf(q.scales));
  // A packed output drops the dequantized values.
  EXPECT_TRUE(r->parts[Part::kFakeQuant].empty());
  ExpectSameMetrics(r->metrics, DequantizeAndMeasure(q, w.data(), nullptr));
}

TEST(QuantizeTensorTest, GgmlEqualsGgmlQuantize) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  for (const char* scheme : {"Q4_K", "Q8_0", "IQ4_XS"}) {
    SCOPED_TRACE(scheme);
    TensorJob job = JobOf(scheme, {4, 256});
    const std::vector<float> w = RandomWeights(4 * 256, kSeed);
    std::vector<float> importance(256);
    for (size_t j = 0; j < importance.size(); ++j) {
      importance[j] = 0.5f + static_cast<float>(j % 7);
    }
    const GgmlFormatTraits* block = GgmlFormatOf(job.layout.scheme);
    ASSERT_NE(block, nullptr);
    if (block->uses_importance) job.importance = importance;
    absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
    ASSERT_TRUE(r.ok()) << r.status();

    std::vector<uint8_t> codes(static_cast<size_t>(job.layout.packed_bytes));
    ASSERT_TRUE(GgmlQuantize(*block, w.data(), 4, 256,
                             block->uses_importance ? importance.data()
                                                    : nullptr,
                             codes.data())
                    .ok());
    std::vector<float> w_hat(w.size());
    absl::StatusOr<ErrorMetrics> metrics = GgmlDequantizeAndMeasure(
        *block, codes.data(), 4, 256, w.data(), w_hat.data());
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    metrics->bits_per_weight = job.layout.BitsPerWeight();
    EXPECT_EQ(BytesOf(r->parts[Part::kCodes]), codes);
    EXPECT_TRUE(r->parts[Part::kScales].empty());
    EXPECT_EQ(BytesOf(r->parts[Part::kFakeQuant]), BytesOf(w_hat));
    ExpectSameMetrics(r->metrics, *metrics);
  }
}

TEST(QuantizeTensorTest, FloatEqualsFloatQuantize) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  for (const char* scheme :
       {"fp8_e4m3", "nf4_g64_dq", "modelopt_nvfp4", "ocp_mxfp4"}) {
    SCOPED_TRACE(scheme);
    const TensorJob job = JobOf(scheme, {8, 256});
    const std::vector<float> w = RandomWeights(8 * 256, kSeed);
    absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
    ASSERT_TRUE(r.ok()) << r.status();

    absl::StatusOr<FloatFormatOptions> options =
        FloatOptionsOf(job.layout.scheme);
    ASSERT_TRUE(options.ok()) << options.status();
    absl::StatusOr<FloatQuantized> q =
        FloatQuantize(w.data(), 8, 256, *options);
    ASSERT_TRUE(q.ok()) << q.status();
    std::vector<float> w_hat(w.size());
    ASSERT_TRUE(FloatDequantize(*q, w_hat.data()).ok());
    ErrorMetrics metrics =
        ComputeErrorMetrics(w.data(), w_hat.data(), w.size());
    metrics.bits_per_weight = FloatBitsPerWeight(*q);
    EXPECT_EQ(BytesOf(r->parts[Part::kCodes]), q->codes);
    EXPECT_EQ(BytesOf(r->parts[Part::kScales]), BytesOf(q->scales));
    EXPECT_EQ(BytesOf(r->parts[Part::kBlockScales]), q->block_scales);
    EXPECT_EQ(BytesOf(r->parts[Part::kSecondScales]),
              BytesOf(q->second_scales));
    EXPECT_EQ(BytesOf(r->parts[Part::kFakeQuant]), BytesOf(w_hat));
    ExpectSameMetrics(r->metrics, metrics);
    const bool nvfp4 = q->options.format == FloatFormat::kNvfp4;
    EXPECT_EQ(r->tensor_scale, nvfp4 ? q->tensor_scale : 0.0f);
    EXPECT_EQ(r->scale_offset,
              q->options.double_quant ? q->scale_offset : 0.0f);
  }
}

TEST(QuantizeTensorTest, CodebookEqualsKMeansAndPowerOfTwo) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  for (const char* scheme : {"kmeans4_g64", "pot3"}) {
    SCOPED_TRACE(scheme);
    const TensorJob job = JobOf(scheme, {8, 256});
    const std::vector<float> w = RandomWeights(8 * 256, kSeed);
    absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
    ASSERT_TRUE(r.ok()) << r.status();

    bool power_of_two = false;
    CodebookOptions options;
    options.bits = CodebookBits(job.layout.scheme, &power_of_two);
    options.granularity = job.layout.scheme.granularity;
    options.group_size = job.layout.scheme.group_size;
    absl::StatusOr<CodebookTensor> q =
        power_of_two ? PowerOfTwoQuantize(w.data(), 8, 256, options)
                     : KMeansQuantize(w.data(), 8, 256, options);
    ASSERT_TRUE(q.ok()) << q.status();
    std::vector<float> w_hat(w.size());
    ASSERT_TRUE(CodebookDequantize(*q, w_hat.data()).ok());
    ErrorMetrics metrics =
        ComputeErrorMetrics(w.data(), w_hat.data(), w.size());
    metrics.bits_per_weight = q->BitsPerWeight();
    EXPECT_EQ(BytesOf(r->parts[Part::kCodes]), q->codes);
    EXPECT_EQ(BytesOf(r->parts[Part::kScales]), BytesOf(q->scales));
    EXPECT_EQ(BytesOf(r->parts[Part::kCodebooks]), BytesOf(q->codebooks));
    EXPECT_EQ(BytesOf(r->parts[Part::kFakeQuant]), BytesOf(w_hat));
    ExpectSameMetrics(r->metrics, metrics);
  }
}

TEST(QuantizeTensorTest, HqqEqualsHqqQuantize) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  const TensorJob job = JobOf("hqq4", {8, 256});
  const std::vector<float> w = RandomWeights(8 * 256, kSeed);
  absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
  ASSERT_TRUE(r.ok()) << r.status();

  absl::StatusOr<HqqOptions> options = HqqOptionsOf(job.layout.scheme);
  ASSERT_TRUE(options.ok()) << options.status();
  absl::StatusOr<HqqTensor> q = HqqQuantize(w.data(), 8, 256, *options);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<float> w_hat(w.size());
  ASSERT_TRUE(HqqDequantize(*q, w_hat.data()).ok());
  ErrorMetrics metrics = ComputeErrorMetrics(w.data(), w_hat.data(), w.size());
  metrics.bits_per_weight = q->BitsPerWeight();
  EXPECT_EQ(BytesOf(r->parts[Part::kCodes]), q->codes);
  EXPECT_EQ(BytesOf(r->parts[Part::kScales]), BytesOf(q->scales));
  EXPECT_EQ(BytesOf(r->parts[Part::kZeroPointsF32]), BytesOf(q->zero_points));
  EXPECT_EQ(BytesOf(r->parts[Part::kFakeQuant]), BytesOf(w_hat));
  ExpectSameMetrics(r->metrics, metrics);
}

// An ACTIVATIONS set of `tokens` rows over `features` columns.
struct TestSet {
  CalibrationAccumulator accumulator;
  std::vector<double> gram;
  std::vector<float> importance;

  static TestSet Make(int64_t tokens, int64_t features, uint32_t seed) {
    CalibrationOptions options;
    options.channel_histogram_bins = 0;
    absl::StatusOr<CalibrationAccumulator> acc =
        CalibrationAccumulator::Create("x", features, options);
    EXPECT_TRUE(acc.ok()) << acc.status();
    const std::vector<float> x =
        RandomWeights(static_cast<size_t>(tokens * features), seed);
    EXPECT_TRUE(acc->Add(x.data(), tokens, features).ok());
    TestSet set{*std::move(acc), {}, {}};
    set.gram = *set.accumulator.Gram();
    set.importance = *set.accumulator.Importance();
    return set;
  }
  CalibrationView View() const {
    return CalibrationView("x", accumulator.features(), accumulator, gram,
                           importance, {});
  }
};

TEST(QuantizeTensorTest, GptqEqualsGptqQuantize) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  for (const char* scheme :
       {"int4_asym_g128+gptq", "int4_g64+gptq(act_order,block=64)"}) {
    SCOPED_TRACE(scheme);
    const TestSet set = TestSet::Make(512, 256, kSeed + 1);
    const CalibrationView view = set.View();
    TensorJob job = JobOf(scheme, {16, 256});
    job.calibration = &view;
    const std::vector<float> w = RandomWeights(16 * 256, kSeed);
    absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
    ASSERT_TRUE(r.ok()) << r.status();

    const MethodOptions& m = job.layout.scheme.method;
    GptqOptions options;
    options.damp_percent = m.damp_percent;
    options.block_size = m.block_size;
    options.act_order = m.act_order;
    options.static_groups = m.static_groups;
    options.measure_output_error = false;
    absl::StatusOr<GptqResult> g = GptqQuantize(
        w.data(), job.layout,
        GramView::F64(set.gram, 256, set.accumulator.tokens()), options);
    ASSERT_TRUE(g.ok()) << g.status();
    std::vector<float> w_hat(w.size());
    const ErrorMetrics metrics =
        DequantizeAndMeasure(g->quantized, w.data(), w_hat.data());
    EXPECT_EQ(BytesOf(r->parts[Part::kCodes]), g->quantized.codes);
    EXPECT_EQ(BytesOf(r->parts[Part::kScales]), BytesOf(g->quantized.scales));
    EXPECT_EQ(BytesOf(r->parts[Part::kZeroPoints]), g->quantized.zero_points);
    EXPECT_EQ(BytesOf(r->parts[Part::kGroupIndex]),
              BytesOf(g->quantized.group_index));
    EXPECT_EQ(r->layout.group_index, job.layout.group_index);
    EXPECT_EQ(BytesOf(r->parts[Part::kFakeQuant]), BytesOf(w_hat));
    ExpectSameMetrics(r->metrics, metrics);
    ASSERT_TRUE(r->calibration.has_value());
    EXPECT_EQ(r->calibration->calibration, "x");
    EXPECT_EQ(r->calibration->tokens, 512);
    EXPECT_TRUE(r->calibration->output_error.has_value());
  }
}

TEST(QuantizeTensorTest, AwqEqualsAwqQuantize) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  const TestSet set = TestSet::Make(512, 256, kSeed + 1);
  const CalibrationView view = set.View();
  TensorJob job = JobOf("int4_asym_g128+awq", {16, 256});
  job.calibration = &view;
  const std::vector<float> w = RandomWeights(16 * 256, kSeed);
  absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
  ASSERT_TRUE(r.ok()) << r.status();

  const MethodOptions& m = job.layout.scheme.method;
  absl::StatusOr<ChannelStats> stats = set.accumulator.Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  const std::vector<float> mean_abs(stats->mean_abs.begin(),
                                    stats->mean_abs.end());
  AwqOptions options;
  options.n_grid = m.n_grid;
  options.clip = m.clip_search;
  options.fake_quant = true;
  absl::StatusOr<AwqResult> a = AwqQuantize(
      w.data(), job.layout, mean_abs,
      GramView::F64(set.gram, 256, set.accumulator.tokens()), options);
  ASSERT_TRUE(a.ok()) << a.status();
  ErrorMetrics metrics =
      ComputeErrorMetrics(w.data(), a->fake_quant.data(), w.size());
  metrics.bits_per_weight = job.layout.BitsPerWeight();
  EXPECT_EQ(BytesOf(r->parts[Part::kCodes]), a->quantized.codes);
  EXPECT_EQ(BytesOf(r->parts[Part::kScales]), BytesOf(a->quantized.scales));
  EXPECT_EQ(BytesOf(r->parts[Part::kZeroPoints]), a->quantized.zero_points);
  EXPECT_EQ(BytesOf(r->parts[Part::kChannelScales]), BytesOf(a->scales));
  EXPECT_EQ(BytesOf(r->parts[Part::kFakeQuant]), BytesOf(a->fake_quant));
  ExpectSameMetrics(r->metrics, metrics);
}

TEST(QuantizeTensorTest, MethodWithoutSetNamesTheTensor) {
  const TensorJob job = JobOf("int4_asym_g128+gptq", {16, 256});
  const std::vector<float> w = RandomWeights(16 * 256, kSeed);
  absl::StatusOr<TensorResult> r = QuantizeAll(job, w);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("tensor blk.0.w: method gptq needs a "
                                      "calibration set"),
            std::string::npos)
      << r.status();
}

TEST(QuantizeTensorTest, CancellationIsReturnedAsIs) {
  for (const char* scheme : {"int4_asym_g128", "Q4_K", "nf4_g64", "hqq4"}) {
    SCOPED_TRACE(scheme);
    const TensorJob job = JobOf(scheme, {4, 256});
    const std::vector<float> w = RandomWeights(4 * 256, kSeed);
    int calls = 0;
    absl::StatusOr<TensorResult> r =
        QuantizeTensor(job, w.data(), [&]() -> absl::Status {
          ++calls;
          return absl::CancelledError("stop");
        });
    EXPECT_EQ(r.status(), absl::CancelledError("stop"));
    EXPECT_EQ(calls, 1);
  }
}

// The numbers are those of the server's TensorWorkingSetBytes before each
// family stated its own share (server/quantize_job.cc at the merge of
// 'parts'), so a changed formula fails here.
TEST(WorkingSetBytesTest, EqualsTheFormulasPerFamily) {
  struct Case {
    const char* scheme;
    std::vector<int64_t> shape;
    DType dtype;
    OutputKind output;
    bool calibration;
    int64_t holdout_rows;
    int64_t bytes;
  };
  const Case cases[] = {
      // int: input 4n, codes n/2, 5 bytes per group of 128.
      {"int4_asym_g128", {64, 256}, DType::kF32, OutputKind::kPacked, false, 0,
       4 * 16384 + 8192 + 5 * 128},
      // int8 with a calibration set and 16 held-back rows (W8A8 check).
      {"int8_sym_channel", {32, 128}, DType::kBF16, OutputKind::kFakeQuant,
       true, 16, 161952},
      // ggml: input, f32 copy, dequantized values, importance, blocks.
      {"Q4_K", {4, 256}, DType::kF16, OutputKind::kPacked, false, 0,
       2 * 1024 + 4 * 1024 + 4 * 1024 + 4 * 256 + 576},
      {"Q8_0", {8, 64}, DType::kF32, OutputKind::kBoth, true, 16, 27424},
      // float: NF4 with double quantization (block and second scales).
      {"nf4_g64_dq", {16, 1024}, DType::kF32, OutputKind::kPacked, false, 0,
       4 * 16384 + 4 * 16384 + (8192 + 16384 + 9 * 256 + 4 * 1) + 8192},
      {"modelopt_nvfp4", {8, 256}, DType::kF32, OutputKind::kBoth, false, 0,
       21632},
      // An 8-bit float format counts the W8A8 check too (bits == 8).
      {"fp8_e4m3", {8, 256}, DType::kF32, OutputKind::kPacked, true, 8,
       314633},
      // codebook.
      {"kmeans4_g64", {8, 256}, DType::kF32, OutputKind::kPacked, false, 0,
       22528},
      {"pot3", {8, 256}, DType::kF32, OutputKind::kPacked, false, 0, 20296},
      // HQQ (f32 zero points).
      {"hqq4", {8, 256}, DType::kF32, OutputKind::kPacked, false, 0, 20896},
      // Methods.
      {"int4_asym_g128+gptq", {16, 256}, DType::kF32, OutputKind::kPacked,
       true, 0, 1411232},
      {"int4_g64+gptq(act_order,block=64)", {16, 256}, DType::kF32,
       OutputKind::kPacked, true, 0, 1408320},
      {"q4_k+gptq", {4, 256}, DType::kF32, OutputKind::kPacked, true, 0,
       1343040},
      {"int4_asym_g128+awq", {16, 256}, DType::kF32, OutputKind::kPacked, true,
       0, 649376},
      {"int8+smoothquant", {16, 256}, DType::kF16, OutputKind::kPacked, true,
       32, 686160},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scheme);
    const Layout layout = LayoutOf(c.scheme, c.shape);
    EXPECT_EQ(WorkingSetBytes(layout, c.dtype, c.output, c.calibration,
                              c.holdout_rows),
              c.bytes);
  }
}

}  // namespace
}  // namespace quantd
