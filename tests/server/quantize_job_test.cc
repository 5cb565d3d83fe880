#include "server/quantize_job.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/crc32c.h"
#include "gtest/gtest.h"
#include "kernels/convert.h"
#include "kernels/ggml_formats.h"
#include "kernels/metrics.h"

namespace quantd {
namespace {

// Seeded Gaussian weights with one large outlier per 97 elements.
std::vector<float> Weights(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(n));
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = normal(rng) * (i % 97 == 0 ? 20.0f : 1.0f);
  }
  return w;
}

TensorInput MakeInput(const std::string& scheme_text,
                      const std::vector<int64_t>& shape,
                      const std::vector<float>& w, OutputKind output) {
  TensorInput input;
  input.name = "blk.0.attn_q.weight";
  input.dtype = DType::kF32;
  input.layout = *MakeLayout(*ParseScheme(scheme_text), shape);
  input.output = output;
  input.storage = w;
  input.bytes = static_cast<int64_t>(w.size() * sizeof(float));
  return input;
}

TEST(QuantizeJobTest, BlockFormatsGiveTheKernelsBytesAndMetrics) {
  const uint32_t seed = 20250611;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const int64_t rows = 6;
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const int64_t row_length = int64_t{2} * f.block_size;
    const std::vector<float> w = Weights(rows * row_length, seed);
    std::vector<uint8_t> want(
        static_cast<size_t>(rows * *GgmlRowBytes(f, row_length)));
    ASSERT_TRUE(GgmlQuantize(f, w.data(), rows, row_length, nullptr,
                             want.data())
                    .ok());
    std::vector<float> want_hat(w.size());
    ASSERT_TRUE(
        GgmlDequantize(f, want.data(), rows, row_length, want_hat.data()).ok());
    // The kernels' fused measure (tested against ComputeErrorMetrics in
    // tests/kernels): the server reports exactly its figures.
    absl::StatusOr<ErrorMetrics> measured = GgmlDequantizeAndMeasure(
        f, want.data(), rows, row_length, w.data(), nullptr);
    ASSERT_TRUE(measured.ok()) << measured.status();
    const ErrorMetrics want_metrics = *measured;

    for (OutputKind output :
         {OutputKind::kPacked, OutputKind::kFakeQuant, OutputKind::kBoth}) {
      SCOPED_TRACE(static_cast<int>(output));
      TensorInput input = MakeInput(f.name, {rows, row_length}, w, output);
      std::atomic<bool> cancelled{false};
      absl::StatusOr<TensorOutput> out = RunQuantizeJob(input, cancelled);
      ASSERT_TRUE(out.ok()) << out.status();
      // Codes only when packed output is asked for: a fake-quant job sends
      // the dequantized values alone.
      EXPECT_EQ(out->parts[Part::kCodes].Values<uint8_t>(),
                output == OutputKind::kFakeQuant ? std::vector<uint8_t>{}
                                                 : want);
      EXPECT_TRUE(out->parts[Part::kScales].empty());
      EXPECT_TRUE(out->parts[Part::kZeroPoints].empty());
      EXPECT_EQ(out->parts[Part::kCodes].empty(),
                output == OutputKind::kFakeQuant);
      if (output == OutputKind::kPacked) {
        EXPECT_TRUE(out->parts[Part::kFakeQuant].empty());
      } else {
        ASSERT_EQ(out->parts[Part::kFakeQuant].size() / 4, want_hat.size());
        EXPECT_EQ(0, std::memcmp(out->parts[Part::kFakeQuant].bytes().data(), want_hat.data(),
                                 want_hat.size() * sizeof(float)));
      }
      EXPECT_EQ(out->metrics.mse, want_metrics.mse);
      EXPECT_EQ(out->metrics.max_abs_error, want_metrics.max_abs_error);
      EXPECT_EQ(out->metrics.sqnr_db, want_metrics.sqnr_db);
      EXPECT_EQ(out->metrics.cosine_similarity, want_metrics.cosine_similarity);
      EXPECT_DOUBLE_EQ(out->metrics.bits_per_weight,
                       8.0 * f.block_bytes / f.block_size);
      EXPECT_GT(out->metrics.sqnr_db, 10.0);
      if (output != OutputKind::kFakeQuant) {
        EXPECT_EQ(out->crc32c[Part::kCodes], Crc32c(want.data(), want.size()));
        EXPECT_EQ(out->bytes_out,
                  static_cast<int64_t>(want.size()) +
                      (output == OutputKind::kBoth
                           ? static_cast<int64_t>(w.size() * 4)
                           : 0));
      }
    }
  }
}

TEST(QuantizeJobTest, BlockFormatsFromHalfPrecisionInput) {
  const GgmlFormatTraits& q8 = *FindGgmlFormat("Q8_0");
  const std::vector<float> w = Weights(4 * 64, 3);
  std::vector<uint16_t> half(w.size());
  for (size_t i = 0; i < w.size(); ++i) half[i] = FloatToHalf(w[i]);
  std::vector<float> widened(w.size());
  ASSERT_TRUE(
      ConvertToF32(DType::kF16, half.data(), half.size(), widened.data()).ok());
  std::vector<uint8_t> want(static_cast<size_t>(4 * 2 * q8.block_bytes));
  ASSERT_TRUE(
      GgmlQuantize(q8, widened.data(), 4, 64, nullptr, want.data()).ok());

  TensorInput input;
  input.name = "h";
  input.dtype = DType::kF16;
  input.layout = *MakeLayout(*ParseScheme("q8_0"), {4, 64});
  input.storage.resize(half.size() / 2);
  std::memcpy(input.storage.data(), half.data(), half.size() * 2);
  input.bytes = static_cast<int64_t>(half.size() * 2);
  std::atomic<bool> cancelled{false};
  absl::StatusOr<TensorOutput> out = RunQuantizeJob(input, cancelled);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->parts[Part::kCodes].Values<uint8_t>(), want);
}

TEST(QuantizeJobTest, ImportanceWeightsReachTheKernels) {
  const int64_t rows = 5;
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    SCOPED_TRACE(f.name);
    const int64_t row_length = int64_t{4} * f.block_size;
    const std::vector<float> w = Weights(rows * row_length, 17);
    std::vector<float> importance(static_cast<size_t>(row_length));
    for (size_t i = 0; i < importance.size(); ++i) {
      importance[i] = i % 3 == 0 ? 50.0f : 0.01f;
    }
    std::vector<uint8_t> want(
        static_cast<size_t>(rows * *GgmlRowBytes(f, row_length)));
    const absl::Status local = GgmlQuantize(
        f, w.data(), rows, row_length, importance.data(), want.data());

    TensorInput input = MakeInput(f.name, {rows, row_length}, w,
                                  OutputKind::kPacked);
    input.importance = importance;
    std::atomic<bool> cancelled{false};
    absl::StatusOr<TensorOutput> out = RunQuantizeJob(input, cancelled);
    ASSERT_EQ(out.status().code(), local.code()) << out.status();
    if (!local.ok()) {
      EXPECT_NE(out.status().message().find("tensor blk.0.attn_q.weight"),
                std::string::npos)
          << out.status();
      continue;
    }
    EXPECT_EQ(out->parts[Part::kCodes].Values<uint8_t>(), want);
    std::vector<uint8_t> plain(want.size());
    ASSERT_TRUE(
        GgmlQuantize(f, w.data(), rows, row_length, nullptr, plain.data()).ok());
    if (f.uses_importance) {
      EXPECT_NE(out->parts[Part::kCodes].Values<uint8_t>(), plain);
    } else {
      EXPECT_EQ(out->parts[Part::kCodes].Values<uint8_t>(), plain);
    }
  }
}

TEST(QuantizeJobTest, BlockFormatNonFiniteInputNamesTensorAndElement) {
  std::vector<float> w = Weights(2 * 32, 5);
  w[40] = std::nanf("");
  TensorInput input = MakeInput("Q4_0", {2, 32}, w, OutputKind::kPacked);
  std::atomic<bool> cancelled{false};
  absl::StatusOr<TensorOutput> out = RunQuantizeJob(input, cancelled);
  ASSERT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("tensor blk.0.attn_q.weight"),
            std::string::npos)
      << out.status();
  EXPECT_NE(out.status().message().find("40"), std::string::npos)
      << out.status();
}

TEST(QuantizeJobTest, CancelledBeforeTheFirstStepIsCancelled) {
  for (const char* scheme : {"Q4_0", "int4_g32"}) {
    SCOPED_TRACE(scheme);
    TensorInput input =
        MakeInput(scheme, {2, 32}, Weights(64, 9), OutputKind::kBoth);
    std::atomic<bool> cancelled{true};
    absl::StatusOr<TensorOutput> out = RunQuantizeJob(input, cancelled);
    ASSERT_EQ(out.status().code(), absl::StatusCode::kCancelled);
    EXPECT_NE(out.status().message().find("blk.0.attn_q.weight"),
              std::string::npos);
  }
}

// Float, codebook and HQQ formats: every output kind carries what it asks
// for, and the reserved working set covers the input, the dequantized values
// and every part the job holds.
TEST(QuantizeJobTest, FloatCodebookHqqOutputsAndWorkingSet) {
  const std::vector<float> w = Weights(8 * 256, 31);
  for (const char* scheme : {"fp8_e4m3", "fp4_e2m1", "nf4_dq", "ocp_mxfp4",
                             "modelopt_nvfp4", "kmeans4_g64", "pot3",
                             "hqq4"}) {
    for (OutputKind kind :
         {OutputKind::kPacked, OutputKind::kFakeQuant, OutputKind::kBoth}) {
      SCOPED_TRACE(::testing::Message() << scheme << " output "
                                        << static_cast<int>(kind));
      TensorInput input = MakeInput(scheme, {8, 256}, w, kind);
      const Layout layout = input.layout;
      const int64_t reserved = WorkingSetBytes(layout, DType::kF32, kind);
      std::atomic<bool> cancelled{false};
      absl::StatusOr<TensorOutput> out = RunQuantizeJob(input, cancelled);
      ASSERT_TRUE(out.ok()) << out.status();
      const bool packed = kind != OutputKind::kFakeQuant;
      // Every part the table says the layout and kind have, no other, each
      // of its size and checksummed.
      int64_t parts = 0;  // bytes of the packed parts
      for (const PartSpec& spec : PartTable()) {
        SCOPED_TRACE(spec.name);
        const PartBuffer& part = out->parts[spec.part];
        EXPECT_EQ(static_cast<int64_t>(part.size()),
                  PartBytes(spec, layout, kind));
        EXPECT_EQ(out->crc32c[spec.part],
                  part.empty() ? 0u : Crc32c(part.bytes().data(), part.size()));
        if (spec.part != Part::kFakeQuant) {
          parts += static_cast<int64_t>(part.size());
        }
      }
      EXPECT_EQ(out->parts[Part::kFakeQuant].empty(),
                kind == OutputKind::kPacked);
      EXPECT_EQ(out->parts[Part::kCodes].empty(), !packed);
      EXPECT_EQ(out->bytes_out,
                parts + static_cast<int64_t>(
                            out->parts[Part::kFakeQuant].size()));
      if (packed) {
        EXPECT_GT(out->crc32c[Part::kCodes], 0u);
      } else {
        EXPECT_EQ(parts, 0);
        EXPECT_EQ(out->bytes_out, static_cast<int64_t>(4 * w.size()));
      }
      // Input, dequantized values and the parts (twice: the kernel's
      // result beside the preallocated buffers) at least.
      EXPECT_GE(reserved, static_cast<int64_t>(8 * w.size()) + parts);
      EXPECT_EQ(out->metrics.bits_per_weight, layout.BitsPerWeight());
    }
  }
}

TEST(QuantizeJobTest, WorkingSetOfBlockFormats) {
  const Layout layout = *MakeLayout(*ParseScheme("Q8_0"), {8, 64});
  const int64_t n = 8 * 64;
  const int64_t codes = 8 * 2 * 34;
  // F32 input, dequantized values (always: the metrics need them), codes,
  // importance weights.
  EXPECT_EQ(WorkingSetBytes(layout, DType::kF32, OutputKind::kPacked),
            4 * n + 4 * n + codes + 4 * 64);
  // Fake-quant output reuses the dequantized values; F16 adds an f32 copy.
  EXPECT_EQ(WorkingSetBytes(layout, DType::kF32, OutputKind::kBoth),
            4 * n + 4 * n + codes + 4 * 64);
  EXPECT_EQ(WorkingSetBytes(layout, DType::kF16, OutputKind::kPacked),
            2 * n + 4 * n + 4 * n + codes + 4 * 64);
}

}  // namespace
}  // namespace quantd
