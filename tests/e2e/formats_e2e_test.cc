// The float, codebook and HQQ formats and int<b>_full end to end through the
// real server on loopback and the C++ client: for every format, every part
// the server sends (codes, scales, block scales, second scales, codebooks,
// f32 zero points, per-tensor values) equals the local kernel's bytes on the
// same input, FAKE_QUANT equals the kernel's dequantizer bit for bit (with
// and without the packed parts), the metrics equal ComputeErrorMetrics of
// that round trip and bits_per_weight the kernel's own count; bad shapes are
// INVALID_ARGUMENT naming the tensor; ServerInfo lists the formats.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "client/quantd_client.h"
#include "gtest/gtest.h"
#include "kernels/float_formats.h"
#include "kernels/hqq.h"
#include "kernels/metrics.h"
#include "kernels/nonuniform.h"
#include "kernels/output_error.h"
#include "kernels/quantize.h"
#include "tests/e2e/test_server.h"

namespace quantd {
namespace {

using testing::ChannelTo;
using testing::RandomWeights;
using testing::StartTestServer;

constexpr uint32_t kSeed = 20261123;

template <typename T>
std::vector<uint8_t> Bytes(const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  return std::vector<uint8_t>(p, p + v.size() * sizeof(T));
}

// What the local kernels give for one tensor: every part as bytes, the
// dequantized values, the per-tensor values and the kernel's bits per weight.
struct Local {
  std::vector<uint8_t> codes, scales, block_scales, second_scales, codebooks,
      zero_points_f32;
  std::vector<float> w_hat;
  float tensor_scale = 0.0f;
  float scale_offset = 0.0f;
  double bits_per_weight = 0;
  v1::LayoutKind kind = v1::LAYOUT_KIND_UNSPECIFIED;
};

Local FromFloat(const std::vector<float>& w, int64_t rows, int64_t cols,
                const FloatFormatOptions& options) {
  Local l;
  absl::StatusOr<FloatQuantized> q =
      FloatQuantizeReference(w.data(), rows, cols, options);
  EXPECT_TRUE(q.ok()) << q.status();
  if (!q.ok()) return l;
  l.w_hat.resize(w.size());
  EXPECT_TRUE(FloatDequantizeReference(*q, l.w_hat.data()).ok());
  l.codes = q->codes;
  l.scales = Bytes(q->scales);
  l.block_scales = q->block_scales;
  l.second_scales = Bytes(q->second_scales);
  if (options.format == FloatFormat::kNvfp4) l.tensor_scale = q->tensor_scale;
  if (options.double_quant) l.scale_offset = q->scale_offset;
  l.bits_per_weight = FloatBitsPerWeight(*q);
  l.kind = v1::LAYOUT_KIND_FLOAT;
  return l;
}

Local FromCodebook(const std::vector<float>& w, int64_t rows, int64_t cols,
                   const CodebookOptions& options, bool power_of_two) {
  Local l;
  absl::StatusOr<CodebookTensor> q =
      power_of_two ? PowerOfTwoQuantize(w.data(), rows, cols, options)
                   : KMeansQuantizeReference(w.data(), rows, cols, options);
  EXPECT_TRUE(q.ok()) << q.status();
  if (!q.ok()) return l;
  l.w_hat.resize(w.size());
  EXPECT_TRUE(CodebookDequantizeReference(*q, l.w_hat.data()).ok());
  l.codes = q->codes;
  l.scales = Bytes(q->scales);
  l.codebooks = Bytes(q->codebooks);
  l.bits_per_weight = q->BitsPerWeight();
  l.kind = v1::LAYOUT_KIND_CODEBOOK;
  return l;
}

Local FromHqq(const std::vector<float>& w, int64_t rows, int64_t cols,
              int bits, int64_t group_size) {
  Local l;
  HqqOptions options;
  options.bits = bits;
  options.group_size = group_size;
  absl::StatusOr<HqqTensor> q = HqqQuantize(w.data(), rows, cols, options);
  EXPECT_TRUE(q.ok()) << q.status();
  if (!q.ok()) return l;
  l.w_hat.resize(w.size());
  EXPECT_TRUE(HqqDequantize(*q, l.w_hat.data()).ok());
  l.codes = q->codes;
  l.scales = Bytes(q->scales);
  l.zero_points_f32 = Bytes(q->zero_points);
  l.bits_per_weight = q->BitsPerWeight();
  l.kind = v1::LAYOUT_KIND_HQQ;
  return l;
}

// compressed-tensors' full-range symmetric int<b>, written here from its
// calculate_qparams / _quantize / _dequantize: scale = amax / ((2^b-1)/2),
// 0 -> FLT_EPSILON, q = clamp(round_half_even(x / scale)), x_hat = q * scale.
Local FromFullRange(const std::vector<float>& w, int64_t group_size,
                    int bits) {
  Local l;
  const auto n = static_cast<int64_t>(w.size());
  std::vector<uint8_t> codes(w.size());
  std::vector<float> scales;
  l.w_hat.resize(w.size());
  const float qmin = -std::ldexp(1.0f, bits - 1);
  const float qmax = std::ldexp(1.0f, bits - 1) - 1.0f;
  const float half_range = (std::ldexp(1.0f, bits) - 1.0f) / 2.0f;
  for (int64_t g = 0; g < n / group_size; ++g) {
    float amax = 0;
    for (int64_t i = 0; i < group_size; ++i) {
      amax = std::max(amax, std::fabs(w[static_cast<size_t>(g * group_size + i)]));
    }
    float scale = amax / half_range;
    if (scale == 0.0f) scale = FLT_EPSILON;
    scales.push_back(scale);
    for (int64_t i = 0; i < group_size; ++i) {
      const auto k = static_cast<size_t>(g * group_size + i);
      const float q = std::nearbyint(std::clamp(w[k] / scale, qmin, qmax));
      codes[k] = static_cast<uint8_t>(static_cast<int>(q) & ((1 << bits) - 1));
      // _dequantize of the integer codes: a zero code gives +0.
      l.w_hat[k] = static_cast<float>(static_cast<int>(q)) * scale;
    }
  }
  l.codes.resize(static_cast<size_t>((n * bits + 7) / 8));
  PackCodes(codes.data(), n, bits, l.codes.data());
  l.scales = Bytes(scales);
  l.bits_per_weight =
      (8.0 * static_cast<double>(l.codes.size()) +
       32.0 * static_cast<double>(scales.size())) / static_cast<double>(n);
  l.kind = v1::LAYOUT_KIND_INT;
  return l;
}

FloatFormatOptions FloatOpts(FloatFormat f, FloatGranularity g, int block,
                             bool dq = false) {
  FloatFormatOptions o;
  o.format = f;
  o.granularity = g;
  o.block_size = block;
  o.double_quant = dq;
  return o;
}

CodebookOptions CodebookOpts(int bits, Granularity g, int64_t group_size) {
  CodebookOptions o;
  o.bits = bits;
  o.granularity = g;
  o.group_size = group_size;
  return o;
}

struct Case {
  std::string scheme;
  int64_t rows;
  int64_t cols;
  std::function<Local(const std::vector<float>&, int64_t, int64_t)> local;
};

std::vector<Case> Cases() {
  using FF = FloatFormat;
  using FG = FloatGranularity;
  auto fl = [](FloatFormatOptions o) {
    return [o](const std::vector<float>& w, int64_t r, int64_t c) {
      return FromFloat(w, r, c, o);
    };
  };
  auto cb = [](CodebookOptions o, bool pot) {
    return [o, pot](const std::vector<float>& w, int64_t r, int64_t c) {
      return FromCodebook(w, r, c, o, pot);
    };
  };
  auto hqq = [](int bits, int64_t group) {
    return [bits, group](const std::vector<float>& w, int64_t r, int64_t c) {
      return FromHqq(w, r, c, bits, group);
    };
  };
  auto full = [](int bits, int64_t group) {
    // group 0: per row; -1: per tensor.
    return [bits, group](const std::vector<float>& w, int64_t r, int64_t c) {
      return FromFullRange(w, group == 0 ? c : (group < 0 ? r * c : group),
                           bits);
    };
  };
  return {
      {"fp8_e4m3", 6, 256, fl(FloatOpts(FF::kFp8E4m3, FG::kTensor, 0))},
      {"FP8_E4M3_channel", 6, 256, fl(FloatOpts(FF::kFp8E4m3, FG::kChannel, 0))},
      {"fp8_e4m3_block", 6, 256, fl(FloatOpts(FF::kFp8E4m3, FG::kBlock, 128))},
      {"fp8_e5m2_g64", 6, 256, fl(FloatOpts(FF::kFp8E5m2, FG::kBlock, 64))},
      {"fp4_e2m1", 6, 256, fl(FloatOpts(FF::kFp4E2m1, FG::kBlock, 32))},
      {"fp4_e2m1_channel", 6, 256, fl(FloatOpts(FF::kFp4E2m1, FG::kChannel, 0))},
      {"nf4", 6, 256, fl(FloatOpts(FF::kNf4, FG::kBlock, 64))},
      // 600 blocks: three second-level scales, the last partial.
      {"nf4_dq", 10, 3840, fl(FloatOpts(FF::kNf4, FG::kBlock, 64, true))},
      {"nf4_g32_dq", 6, 256, fl(FloatOpts(FF::kNf4, FG::kBlock, 32, true))},
      {"ocp_mxfp8", 6, 256, fl(FloatOpts(FF::kOcpMxfp8, FG::kBlock, 32))},
      {"ocp_mxfp4", 6, 256, fl(FloatOpts(FF::kOcpMxfp4, FG::kBlock, 32))},
      {"modelopt_nvfp4", 6, 256, fl(FloatOpts(FF::kNvfp4, FG::kBlock, 16))},
      {"kmeans3", 6, 256, cb(CodebookOpts(3, Granularity::kPerChannel, 0), false)},
      {"kmeans4_g64", 6, 256, cb(CodebookOpts(4, Granularity::kPerGroup, 64), false)},
      {"kmeans2_tensor", 6, 256, cb(CodebookOpts(2, Granularity::kPerTensor, 0), false)},
      // 8-bit tables of groups of 32: the codebooks outweigh the input.
      {"kmeans8_g32", 2, 64, cb(CodebookOpts(8, Granularity::kPerGroup, 32), false)},
      {"pot4", 6, 256, cb(CodebookOpts(4, Granularity::kPerChannel, 0), true)},
      {"pot3_g32", 6, 256, cb(CodebookOpts(3, Granularity::kPerGroup, 32), true)},
      {"hqq4", 6, 256, hqq(4, 64)},
      {"hqq2_channel", 6, 256, hqq(2, 0)},
      {"hqq3_g32", 6, 96, hqq(3, 32)},
      {"int4_full_g32", 6, 256, full(4, 32)},
      {"int8_full", 6, 256, full(8, 0)},
      {"int3_full_tensor", 6, 256, full(3, -1)},
  };
}

class FormatsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.workers = 2;
    server_ = StartTestServer(options);
    ASSERT_NE(server_, nullptr);
    channel_ = ChannelTo(*server_);
  }

  // One tensor through QuantdClient (which checks every part's size and
  // CRC-32C against the TensorResult); the reply or the stream's error.
  absl::StatusOr<TensorReply> ViaClient(const std::string& scheme,
                                        const std::string& name,
                                        std::vector<int64_t> shape,
                                        const std::vector<float>& w,
                                        v1::OutputKind output) {
    QuantdClient client(channel_);
    JobConfig job;
    absl::StatusOr<Scheme> parsed = ParseScheme(scheme);
    if (!parsed.ok()) return parsed.status();
    job.scheme = *parsed;
    job.output = output;
    job.chunk_bytes = 4096;  // a tensor spans many chunks
    std::optional<TensorRequest> next = TensorRequest{};
    next->name = name;
    next->shape = std::move(shape);
    next->data = absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(w.data()), w.size() * sizeof(float));
    std::optional<absl::StatusOr<TensorReply>> reply;
    absl::Status s = client.RunJob(
        job,
        [&]() {
          std::optional<TensorRequest> out = std::move(next);
          next.reset();
          return out;
        },
        [&](const std::string&, absl::StatusOr<TensorReply> r) {
          reply = std::move(r);
        });
    if (!s.ok()) return s;
    if (!reply.has_value()) return absl::InternalError("no reply");
    return *std::move(reply);
  }

  std::unique_ptr<QuantdServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

// Weights with a few outlier columns, so scales, tables and blocks differ.
std::vector<float> Weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::vector<float> w = RandomWeights(rows * cols, seed);
  for (int64_t r = 0; r < rows; ++r) {
    w[static_cast<size_t>(r * cols + (r * 7) % cols)] *= 30.0f;
  }
  return w;
}

TEST_F(FormatsE2eTest, EveryPartEqualsTheLocalKernels) {
  SCOPED_TRACE(::testing::Message() << "seed " << kSeed);
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.scheme);
    const std::vector<float> w = Weights(c.rows, c.cols, kSeed);
    const Local want = c.local(w, c.rows, c.cols);
    ASSERT_FALSE(want.w_hat.empty());
    absl::StatusOr<TensorReply> got = ViaClient(
        c.scheme, "model.layers.0.mlp.up_proj.weight", {c.rows, c.cols}, w,
        v1::OUTPUT_KIND_BOTH);
    ASSERT_TRUE(got.ok()) << got.status();
    const v1::Layout& l = got->layout;
    EXPECT_EQ(l.kind(), want.kind);
    EXPECT_EQ(got->part(Part::kCodes), want.codes);
    EXPECT_EQ(got->part(Part::kScales), want.scales);
    EXPECT_TRUE(got->part(Part::kZeroPoints).empty());
    EXPECT_EQ(got->part(Part::kBlockScales), want.block_scales);
    EXPECT_EQ(got->part(Part::kSecondScales), want.second_scales);
    EXPECT_EQ(got->part(Part::kCodebooks), want.codebooks);
    EXPECT_EQ(got->part(Part::kZeroPointsF32), want.zero_points_f32);
    // The reply carries each part's checked CRC-32C, so writers need not
    // read the bytes again.
    for (const PartSpec& spec : PartTable()) {
      const std::vector<uint8_t>& bytes = got->part(spec.part);
      EXPECT_EQ(got->crc32c[spec.part], Crc32c(bytes.data(), bytes.size()))
          << spec.name;
    }
    EXPECT_EQ(l.tensor_scale(), want.tensor_scale);
    EXPECT_EQ(l.scale_offset(), want.scale_offset);
    // The layout alone sizes every part.
    EXPECT_EQ(l.packed_bytes(), want.codes.size());
    EXPECT_EQ(l.num_scales() * 4, want.scales.size());
    EXPECT_EQ(l.num_block_scales(), want.block_scales.size());
    EXPECT_EQ(l.num_second_scales() * 4, want.second_scales.size());
    EXPECT_EQ(uint64_t{l.codebook_entries()} * l.num_codebooks() * 4,
              want.codebooks.size());
    EXPECT_EQ(l.has_zero_points_f32(), !want.zero_points_f32.empty());
    // Fake quant: the kernel's dequantizer, bit for bit.
    ASSERT_EQ(got->part(Part::kFakeQuant).size(), want.w_hat.size() * 4);
    EXPECT_EQ(0, std::memcmp(got->part(Part::kFakeQuant).data(), want.w_hat.data(),
                             got->part(Part::kFakeQuant).size()));
    // Metrics: ComputeErrorMetrics of the round trip, the kernel's bpw.
    const ErrorMetrics m =
        ComputeErrorMetrics(w.data(), want.w_hat.data(), w.size());
    // Int layouts are measured by DequantizeAndMeasure, whose vector sums
    // are within a relative 1e-12 of these (quantize.h); the other
    // families by ComputeErrorMetrics itself.
    const double tol = want.kind == v1::LAYOUT_KIND_INT ? 1e-12 : 0.0;
    EXPECT_NEAR(got->metrics.mse(), m.mse, tol * m.mse);
    EXPECT_NEAR(got->metrics.rmse(), m.rmse, tol * m.rmse);
    EXPECT_EQ(got->metrics.max_abs_error(), m.max_abs_error);
    if (std::isinf(m.sqnr_db)) {
      EXPECT_EQ(got->metrics.sqnr_db(), m.sqnr_db);  // exact (kmeans8_g32)
    } else {
      EXPECT_NEAR(got->metrics.sqnr_db(), m.sqnr_db, 9 * tol);
    }
    EXPECT_NEAR(got->metrics.cosine_similarity(), m.cosine_similarity, 3 * tol);
    EXPECT_DOUBLE_EQ(got->metrics.bits_per_weight(), want.bits_per_weight);
    // And the layout's own count agrees with the kernel's.
    absl::StatusOr<Layout> local_layout =
        MakeLayout(*ParseScheme(c.scheme), {c.rows, c.cols});
    ASSERT_TRUE(local_layout.ok()) << local_layout.status();
    EXPECT_DOUBLE_EQ(local_layout->BitsPerWeight(), want.bits_per_weight);
    EXPECT_EQ(got->bytes_out,
              want.codes.size() + want.scales.size() + want.block_scales.size() +
                  want.second_scales.size() + want.codebooks.size() +
                  want.zero_points_f32.size() + w.size() * 4);
  }
}

TEST_F(FormatsE2eTest, FakeQuantOnlySendsNoPackedParts) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.scheme);
    const std::vector<float> w = Weights(c.rows, c.cols, kSeed + 1);
    const Local want = c.local(w, c.rows, c.cols);
    absl::StatusOr<TensorReply> got =
        ViaClient(c.scheme, "lm_head.weight", {c.rows, c.cols}, w,
                  v1::OUTPUT_KIND_FAKE_QUANT);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(got->part(Part::kCodes).empty());
    EXPECT_TRUE(got->part(Part::kScales).empty());
    EXPECT_TRUE(got->part(Part::kBlockScales).empty());
    EXPECT_TRUE(got->part(Part::kSecondScales).empty());
    EXPECT_TRUE(got->part(Part::kCodebooks).empty());
    EXPECT_TRUE(got->part(Part::kZeroPointsF32).empty());
    ASSERT_EQ(got->part(Part::kFakeQuant).size(), want.w_hat.size() * 4);
    EXPECT_EQ(0, std::memcmp(got->part(Part::kFakeQuant).data(), want.w_hat.data(),
                             got->part(Part::kFakeQuant).size()));
    EXPECT_EQ(got->bytes_out, w.size() * 4);
  }
}

TEST_F(FormatsE2eTest, PackedOnlyHasEveryPartAndNoFakeQuant) {
  for (const char* scheme : {"nf4_dq", "modelopt_nvfp4", "kmeans4", "hqq4"}) {
    SCOPED_TRACE(scheme);
    const std::vector<float> w = Weights(4, 128, kSeed + 2);
    absl::StatusOr<TensorReply> got =
        ViaClient(scheme, "w", {4, 128}, w, v1::OUTPUT_KIND_PACKED);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_FALSE(got->part(Part::kCodes).empty());
    EXPECT_TRUE(got->part(Part::kFakeQuant).empty());
    EXPECT_FALSE(got->part(Part::kBlockScales).empty() && got->part(Part::kCodebooks).empty() &&
                 got->part(Part::kZeroPointsF32).empty());
  }
}

TEST_F(FormatsE2eTest, BadShapesAreInvalidArgumentNamingTheTensor) {
  struct Bad {
    const char* scheme;
    int64_t cols;
  };
  for (const Bad& b : {Bad{"fp4_e2m1_channel", 33}, Bad{"nf4", 63},
                       Bad{"nf4", 96}, Bad{"ocp_mxfp8", 48},
                       Bad{"ocp_mxfp4", 40}, Bad{"modelopt_nvfp4", 24},
                       Bad{"fp8_e4m3_block", 192}, Bad{"kmeans4_g64", 96},
                       Bad{"pot4_g64", 96}, Bad{"hqq4", 96},
                       Bad{"int4_full_g64", 96}}) {
    SCOPED_TRACE(b.scheme);
    const std::vector<float> w = RandomWeights(2 * b.cols, kSeed + 3);
    absl::StatusOr<TensorReply> reply =
        ViaClient(b.scheme, "blk.3.attn_q.weight", {2, b.cols}, w,
                  v1::OUTPUT_KIND_PACKED);
    ASSERT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument)
        << reply.status();
    const std::string message(reply.status().message());
    EXPECT_NE(message.find("blk.3.attn_q.weight"), std::string::npos)
        << message;
    EXPECT_NE(message.find(absl::StrCat(b.cols)), std::string::npos)
        << message;
  }
  // The server keeps serving.
  const std::vector<float> w = RandomWeights(2 * 64, kSeed + 4);
  absl::StatusOr<TensorReply> good =
      ViaClient("nf4", "after", {2, 64}, w, v1::OUTPUT_KIND_PACKED);
  EXPECT_TRUE(good.ok()) << good.status();
}

TEST_F(FormatsE2eTest, NonFiniteInputIsInvalidArgumentNamingTheTensor) {
  for (const char* scheme : {"fp8_e4m3", "kmeans4", "hqq4", "int4_full"}) {
    SCOPED_TRACE(scheme);
    std::vector<float> w = RandomWeights(2 * 64, kSeed + 5);
    w[70] = std::nanf("");
    absl::StatusOr<TensorReply> reply =
        ViaClient(scheme, "output.weight", {2, 64}, w, v1::OUTPUT_KIND_BOTH);
    ASSERT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument)
        << reply.status();
    EXPECT_NE(reply.status().message().find("output.weight"),
              std::string::npos)
        << reply.status();
  }
}

TEST_F(FormatsE2eTest, MethodsOnTheNewFormatsAreRefused) {
  for (const char* scheme : {"nf4+gptq", "kmeans4+awq", "hqq4+smoothquant",
                             "int4_full_g32+gptq"}) {
    SCOPED_TRACE(scheme);
    EXPECT_EQ(ParseScheme(scheme).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  // On the wire too: the format with a method field set.
  v1::Scheme proto;
  proto.set_format("nf4");
  proto.set_method(v1::QUANT_METHOD_GPTQ);
  absl::StatusOr<Scheme> s = SchemeFromProto(proto);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("nf4"), std::string::npos);
}

// Output-space metrics from a calibration set's G work for every family as
// for int and ggml: ComputeOutputError of the kernel's dequantized values.
TEST_F(FormatsE2eTest, CalibrationOutputMetricsFromTheDequantizedValues) {
  constexpr int64_t kOut = 4, kIn = 256, kTokens = 40;
  const std::vector<float> x = RandomWeights(kTokens * kIn, kSeed + 6);
  std::vector<double> g(static_cast<size_t>(kIn * kIn), 0.0);
  for (int64_t t = 0; t < kTokens; ++t) {
    for (int64_t i = 0; i < kIn; ++i) {
      for (int64_t j = 0; j < kIn; ++j) {
        g[static_cast<size_t>(i * kIn + j)] +=
            static_cast<double>(x[static_cast<size_t>(t * kIn + i)]) *
            x[static_cast<size_t>(t * kIn + j)];
      }
    }
  }
  const std::vector<float> w = Weights(kOut, kIn, kSeed + 7);
  const std::vector<Case> cases = Cases();
  JobConfig config;
  config.output = v1::OUTPUT_KIND_BOTH;
  config.calibration_sets.push_back(
      {"g", v1::CALIBRATION_KIND_GRAM, DType::kF32, kIn, kTokens,
       absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(g.data()),
                                 g.size() * 8),
       false});
  size_t next = 0;
  std::map<std::string, absl::StatusOr<TensorReply>> replies;
  QuantdClient client(channel_);
  absl::Status s = client.RunJob(
      config,
      [&]() -> std::optional<TensorRequest> {
        if (next == cases.size()) return std::nullopt;
        TensorRequest t;
        t.name = cases[next].scheme;
        t.scheme = *ParseScheme(cases[next].scheme);
        t.shape = {kOut, kIn};
        t.data = absl::Span<const uint8_t>(
            reinterpret_cast<const uint8_t*>(w.data()), w.size() * 4);
        t.calibration = "g";
        ++next;
        return t;
      },
      [&](const std::string& name, absl::StatusOr<TensorReply> r) {
        replies.emplace(name, std::move(r));
      });
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(replies.size(), cases.size());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scheme);
    const absl::StatusOr<TensorReply>& r = replies.at(c.scheme);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->output_metrics.has_value());
    const Local want = c.local(w, kOut, kIn);
    absl::StatusOr<OutputError> e =
        ComputeOutputError(w.data(), want.w_hat.data(), kOut, kIn, g);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(r->output_metrics->tokens(), static_cast<uint64_t>(kTokens));
    EXPECT_NEAR(r->output_metrics->error_sq(), e->error_sq, 1e-9 * e->error_sq);
    EXPECT_NEAR(r->output_metrics->signal_sq(), e->signal_sq,
                1e-9 * e->signal_sq);
    EXPECT_NEAR(r->output_metrics->relative_error(), e->relative_error,
                1e-9 * e->relative_error);
  }
}

// The wire form of the schemes: a format name alone takes its defaults,
// PER_GROUP with group_size 0 its default block, and every parsed scheme
// goes through SchemeToProto / SchemeFromProto unchanged.
TEST(FormatsWireTest, SchemeProtoDefaultsRoundTripAndRefusals) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.scheme);
    const Scheme s = *ParseScheme(c.scheme);
    v1::Scheme proto;
    SchemeToProto(s, &proto);
    absl::StatusOr<Scheme> back = SchemeFromProto(proto);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, s);
  }
  auto from = [](const std::string& format, v1::Granularity g,
                 uint32_t group_size) {
    v1::Scheme p;
    p.set_format(format);
    p.set_granularity(g);
    p.set_group_size(group_size);
    return SchemeFromProto(p);
  };
  EXPECT_EQ(SchemeToString(*from("NF4", v1::GRANULARITY_UNSPECIFIED, 0)), "nf4_g64");
  EXPECT_EQ(SchemeToString(*from("fp8_e4m3", v1::GRANULARITY_PER_GROUP, 0)),
            "fp8_e4m3_g128");
  EXPECT_EQ(SchemeToString(*from("fp8_e5m2", v1::GRANULARITY_UNSPECIFIED, 0)),
            "fp8_e5m2_tensor");
  EXPECT_EQ(SchemeToString(*from("hqq3", v1::GRANULARITY_UNSPECIFIED, 0)), "hqq3_g64");
  EXPECT_EQ(SchemeToString(*from("kmeans2", v1::GRANULARITY_UNSPECIFIED, 0)),
            "kmeans2_channel");
  EXPECT_EQ(SchemeToString(*from("ocp_mxfp4", v1::GRANULARITY_PER_GROUP, 32)),
            "ocp_mxfp4");
  for (auto bad : {from("ocp_mxfp4", v1::GRANULARITY_PER_CHANNEL, 0),
                   from("modelopt_nvfp4", v1::GRANULARITY_PER_GROUP, 32),
                   from("kmeans4", v1::GRANULARITY_PER_GROUP, 0),
                   from("nf4_g64", v1::GRANULARITY_UNSPECIFIED, 0)}) {
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  }
  v1::Scheme dq;
  dq.set_format("fp8_e4m3");
  dq.set_double_quant(true);
  EXPECT_EQ(SchemeFromProto(dq).status().code(),
            absl::StatusCode::kInvalidArgument);
  dq.set_format("nf4");
  EXPECT_TRUE(SchemeFromProto(dq)->double_quant);
  v1::Scheme full;
  full.set_format("int4");
  full.set_full_range(true);
  EXPECT_EQ(SchemeFromProto(full).status().code(),
            absl::StatusCode::kInvalidArgument);  // not symmetric
  full.set_symmetric(true);
  EXPECT_TRUE(SchemeFromProto(full)->full_range);
  full.set_format("hqq4");
  EXPECT_EQ(SchemeFromProto(full).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// QAT import: scales (and zero points) learned elsewhere are used instead
// of computed ones; codes clamp(round(x / scale) + zero_point), written
// here from that definition.
TEST_F(FormatsE2eTest, ImportedScalesGiveTheirCodes) {
  struct Import {
    const char* scheme;
    int bits;
    bool symmetric;
    int64_t group;
  };
  constexpr int64_t kRows = 4, kCols = 64;
  const std::vector<float> w = Weights(kRows, kCols, kSeed + 8);
  for (const Import& c : {Import{"int4_g32", 4, true, 32},
                          Import{"int8", 8, true, kCols},
                          Import{"int4_asym_g16", 4, false, 16},
                          Import{"int3_asym_tensor", 3, false, kRows * kCols},
                          Import{"int4_full_g32", 4, true, 32}}) {
    SCOPED_TRACE(c.scheme);
    const int64_t groups = kRows * kCols / c.group;
    std::vector<float> scales;
    std::vector<uint8_t> zps;
    for (int64_t g = 0; g < groups; ++g) {
      // Deliberately not what the server would compute: some clip.
      scales.push_back(0.004f * static_cast<float>(g % 5 + 1));
      if (!c.symmetric) zps.push_back(static_cast<uint8_t>((g * 3) % (1 << c.bits)));
    }
    const int lo = c.symmetric ? -(1 << (c.bits - 1)) : 0;
    const int hi = c.symmetric ? (1 << (c.bits - 1)) - 1 : (1 << c.bits) - 1;
    std::vector<uint8_t> fields(w.size());
    std::vector<float> w_hat(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      const size_t g = i / static_cast<size_t>(c.group);
      const int zp = c.symmetric ? 0 : zps[g];
      const int q = std::clamp(
          static_cast<int>(std::nearbyint(w[i] / scales[g])) + zp, lo, hi);
      fields[i] = static_cast<uint8_t>(static_cast<unsigned>(q) & ((1u << c.bits) - 1));
      w_hat[i] = scales[g] * static_cast<float>(q - zp);
    }
    std::vector<uint8_t> packed((w.size() * static_cast<size_t>(c.bits) + 7) / 8);
    PackCodes(fields.data(), static_cast<int64_t>(w.size()), c.bits, packed.data());

    QuantdClient client(channel_);
    JobConfig job;
    job.scheme = *ParseScheme(c.scheme);
    job.output = v1::OUTPUT_KIND_BOTH;
    std::optional<TensorRequest> next = TensorRequest{};
    next->name = "qat.weight";
    next->shape = {kRows, kCols};
    next->data = absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(w.data()), w.size() * 4);
    next->scales = scales;
    next->zero_points = zps;
    std::optional<absl::StatusOr<TensorReply>> reply;
    ASSERT_TRUE(client
                    .RunJob(
                        job,
                        [&]() {
                          std::optional<TensorRequest> out = std::move(next);
                          next.reset();
                          return out;
                        },
                        [&](const std::string&, absl::StatusOr<TensorReply> r) {
                          reply = std::move(r);
                        })
                    .ok());
    ASSERT_TRUE(reply.has_value() && reply->ok()) << reply->status();
    const TensorReply& r = **reply;
    EXPECT_EQ(r.part(Part::kCodes), packed);
    EXPECT_EQ(r.part(Part::kScales), Bytes(scales));
    EXPECT_EQ(r.part(Part::kZeroPoints), zps);
    ASSERT_EQ(r.part(Part::kFakeQuant).size(), w_hat.size() * 4);
    EXPECT_EQ(0, std::memcmp(r.part(Part::kFakeQuant).data(), w_hat.data(), r.part(Part::kFakeQuant).size()));
  }
}

TEST_F(FormatsE2eTest, BadImportedScalesAreInvalidArgumentNamingTheTensor) {
  struct Bad {
    const char* scheme;
    std::vector<float> scales;
    std::vector<uint8_t> zero_points;
    const char* needle;
  };
  const std::vector<float> two = {0.1f, 0.1f};
  const std::vector<Bad> cases = {
      {"int4_g32", {0.1f}, {}, "1 imported scales"},
      {"int4_g32", {0.1f, std::nanf("")}, {}, "group 1"},
      {"int4_g32", {0.1f, 0.0f}, {}, "group 1"},
      {"int4_g32", {-0.1f, 0.1f}, {}, "group 0"},
      {"int4_g32", {0.1f, HUGE_VALF}, {}, "group 1"},
      {"int4_g32", two, {1, 2}, "symmetric"},
      {"int4_asym_g32", two, {}, "zero points"},
      {"int4_asym_g32", two, {3, 16}, "group 1"},
      {"nf4_g32", two, {}, "int<b>"},
      {"Q4_0", two, {}, "int<b>"},
  };
  const std::vector<float> w = RandomWeights(64, kSeed + 9);
  for (const Bad& b : cases) {
    SCOPED_TRACE(b.scheme);
    QuantdClient client(channel_);
    JobConfig job;
    job.scheme = *ParseScheme(b.scheme);
    std::optional<TensorRequest> next = TensorRequest{};
    next->name = "qat.bad";
    next->shape = {1, 64};
    next->data = absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(w.data()), w.size() * 4);
    next->scales = b.scales;
    next->zero_points = b.zero_points;
    absl::Status answered;
    absl::Status s = client.RunJob(
        job,
        [&]() {
          std::optional<TensorRequest> out = std::move(next);
          next.reset();
          return out;
        },
        [&](const std::string&, absl::StatusOr<TensorReply> r) {
          if (!r.ok()) answered = r.status();
        });
    if (s.ok()) s = answered;
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("qat.bad"), std::string::npos) << s;
    EXPECT_NE(s.message().find(b.needle), std::string::npos) << s;
  }
}

TEST_F(FormatsE2eTest, ServerInfoListsTheFormatsWithTheirBitsPerWeight) {
  QuantdClient client(channel_);
  absl::StatusOr<v1::ServerInfo> info = client.GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  std::map<std::string, v1::FormatInfo> by_name;
  for (const v1::FormatInfo& fi : info->formats()) by_name[fi.name()] = fi;
  // 4096 x 4096 at the default granularity, counted by hand.
  const double n = 4096.0 * 4096.0;
  const std::map<std::string, double> want = {
      {"fp8_e4m3", 8 + 32 / n},
      {"fp8_e5m2", 8 + 32 / n},
      {"fp4_e2m1", 4 + 32.0 / 32},
      {"nf4", 4 + 32.0 / 64},
      {"ocp_mxfp8", 8 + 8.0 / 32},
      {"ocp_mxfp4", 4 + 8.0 / 32},
      {"modelopt_nvfp4", 4 + 8.0 / 16 + 32 / n},
      {"kmeans4", 4 + 16.0 * 32 / 4096},
      {"pot4", 4 + 32.0 / 4096},
      {"hqq4", 4 + 64.0 / 64},
      {"kmeans1", 1 + 2.0 * 32 / 4096},
      {"hqq8", 8 + 1.0},
  };
  for (const auto& [name, bpw] : want) {
    SCOPED_TRACE(name);
    ASSERT_EQ(by_name.count(name), 1u);
    EXPECT_DOUBLE_EQ(by_name[name].bits_per_weight(), bpw);
    EXPECT_NE(by_name[name].kind(), v1::LAYOUT_KIND_UNSPECIFIED);
  }
  EXPECT_EQ(by_name["nf4"].kind(), v1::LAYOUT_KIND_FLOAT);
  EXPECT_EQ(by_name["pot8"].kind(), v1::LAYOUT_KIND_CODEBOOK);
  EXPECT_EQ(by_name["hqq1"].kind(), v1::LAYOUT_KIND_HQQ);
  EXPECT_EQ(by_name["int4"].kind(), v1::LAYOUT_KIND_INT);
  EXPECT_EQ(by_name["Q4_0"].kind(), v1::LAYOUT_KIND_GGML_BLOCK);
  EXPECT_EQ(by_name.count("pot1"), 0u);
}

}  // namespace
}  // namespace quantd
