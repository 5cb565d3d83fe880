// Mixed precision: the optimiser against brute force on small instances
// (equal when exact, within the stated bound when discretised, the LP bound
// never above the optimum), Pareto and hull flags, and QuantizeModel with a
// target against an in-process fake server on a model of LLM-like tensors
// of different sensitivity (Gaussian, outlier channels, heavy-tailed): the
// target is met, and the mixed choice has less total error than every
// uniform candidate of equal or larger size.
#include "client/mixed_precision.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "client/dispatcher.h"
#include "client/json.h"
#include "client/quantd_client.h"
#include "client/quantize_model.h"
#include "client/safetensors.h"
#include "kernels/convert.h"
#include "kernels/ggml_formats.h"
#include "kernels/metrics.h"
#include "kernels/quantize.h"
#include "proto/wire_convert.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------
// The optimiser.

CurvePoint Point(double bits, double error) {
  CurvePoint p;
  p.scheme = absl::StrCat("b", bits, "e", error);
  p.bits = bits;
  p.weight_error = error;
  return p;
}

// The least total error within `budget` over every assignment; +inf if none.
double BruteForce(const std::vector<TensorCurve>& curves, double budget) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> at(curves.size(), 0);
  while (true) {
    double bits = 0, error = 0;
    for (size_t i = 0; i < curves.size(); ++i) {
      bits += curves[i].points[at[i]].bits;
      error += curves[i].points[at[i]].weight_error;
    }
    if (bits <= budget) best = std::min(best, error);
    size_t i = 0;
    while (i < curves.size() && ++at[i] == curves[i].points.size()) {
      at[i++] = 0;
    }
    if (i == curves.size()) return best;
  }
}

// Random curves: 1-6 tensors of 1-5 points, whole sizes (multiples of
// `granule` bits) and arbitrary errors, dominated points included.
std::vector<TensorCurve> RandomCurves(std::mt19937& rng, double granule) {
  std::uniform_int_distribution<int> tensors(1, 6), points(1, 5),
      size(1, 40);
  std::uniform_real_distribution<double> error(0.0, 100.0);
  std::vector<TensorCurve> curves(static_cast<size_t>(tensors(rng)));
  for (size_t i = 0; i < curves.size(); ++i) {
    curves[i].name = absl::StrCat("t", i);
    const int k = points(rng);
    for (int j = 0; j < k; ++j) {
      curves[i].points.push_back(Point(granule * size(rng), error(rng)));
    }
  }
  return curves;
}

double MinTotal(const std::vector<TensorCurve>& curves, bool least) {
  double total = 0;
  for (const TensorCurve& c : curves) {
    double m = c.points[0].bits;
    for (const CurvePoint& p : c.points) {
      m = least ? std::min(m, p.bits) : std::max(m, p.bits);
    }
    total += m;
  }
  return total;
}

// Checks that `choice` is what it says: its points' bits and error.
void ExpectConsistent(const std::vector<TensorCurve>& curves,
                      const MixedChoice& choice, double budget) {
  ASSERT_EQ(choice.point.size(), curves.size());
  double bits = 0, error = 0;
  for (size_t i = 0; i < curves.size(); ++i) {
    ASSERT_GE(choice.point[i], 0);
    const CurvePoint& p = curves[i].points[static_cast<size_t>(choice.point[i])];
    EXPECT_TRUE(p.pareto);
    bits += p.bits;
    error += p.weight_error;
  }
  EXPECT_DOUBLE_EQ(bits, choice.bits);
  EXPECT_NEAR(error, choice.error, 1e-9 * std::max(1.0, error));
  EXPECT_LE(choice.bits, budget);
}

TEST(ChooseMixedPrecisionTest, EqualsBruteForceWhenExact) {
  const uint32_t seed = 20240611;
  std::mt19937 rng(seed);
  int infeasible = 0, solved = 0, above_hull_greedy = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    SCOPED_TRACE(absl::StrCat("seed ", seed, " trial ", trial));
    std::vector<TensorCurve> curves = RandomCurves(rng, trial % 2 ? 8 : 1);
    const double lo = MinTotal(curves, true), hi = MinTotal(curves, false);
    std::uniform_real_distribution<double> pick(lo - 10, hi + 10);
    const double budget = std::floor(pick(rng));
    const double opt = BruteForce(curves, budget);
    absl::StatusOr<MixedChoice> choice = ChooseMixedPrecision(curves, budget);
    if (std::isinf(opt)) {
      EXPECT_EQ(choice.status().code(), absl::StatusCode::kInvalidArgument);
      ++infeasible;
      continue;
    }
    ASSERT_TRUE(choice.ok()) << choice.status();
    ++solved;
    EXPECT_TRUE(choice->exact);
    ExpectConsistent(curves, *choice, budget);
    EXPECT_NEAR(choice->error, opt, 1e-9 * std::max(1.0, opt));
    EXPECT_LE(choice->lower_bound, opt + 1e-9 * std::max(1.0, opt));
    if (choice->lower_bound < opt - 1e-9) ++above_hull_greedy;
  }
  EXPECT_GT(solved, 2000);
  EXPECT_GT(infeasible, 0);
  // The LP bound is below the optimum on many instances: rounding the
  // relaxation (a Lagrangian with greedy) would not be exact, the DP is.
  EXPECT_GT(above_hull_greedy, 100);
}

TEST(ChooseMixedPrecisionTest, DiscretisedIsFeasibleAndWithinBound) {
  const uint32_t seed = 777;
  std::mt19937 rng(seed);
  MixedChoiceOptions options;
  options.max_units = 8;  // coarse on purpose
  int coarse = 0, bound_binds = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    SCOPED_TRACE(absl::StrCat("seed ", seed, " trial ", trial));
    std::vector<TensorCurve> curves = RandomCurves(rng, 1);
    const double lo = MinTotal(curves, true), hi = MinTotal(curves, false);
    std::uniform_real_distribution<double> pick(lo, hi + 5);
    const double budget = std::floor(pick(rng));
    absl::StatusOr<MixedChoice> choice =
        ChooseMixedPrecision(curves, budget, options);
    ASSERT_TRUE(choice.ok()) << choice.status();
    ExpectConsistent(curves, *choice, budget);
    const double opt = BruteForce(curves, budget);
    EXPECT_GE(choice->error, opt - 1e-9 * std::max(1.0, opt));
    EXPECT_LE(choice->lower_bound, opt + 1e-9 * std::max(1.0, opt));
    if (choice->exact) {
      EXPECT_NEAR(choice->error, opt, 1e-9 * std::max(1.0, opt));
      continue;
    }
    ++coarse;
    // At least as good as the exact optimum for B - T u.
    const double shrunk = BruteForce(
        curves, budget - static_cast<double>(curves.size()) * choice->unit_bits);
    if (!std::isinf(shrunk)) {
      ++bound_binds;
      EXPECT_LE(choice->error, shrunk + 1e-9 * std::max(1.0, shrunk));
    }
  }
  EXPECT_GT(coarse, 1000);
  EXPECT_GT(bound_binds, 100);
}

TEST(ChooseMixedPrecisionTest, KeepsParetoPointsOffTheHull) {
  std::vector<TensorCurve> curves(1);
  curves[0].name = "w";
  curves[0].points = {Point(2, 100), Point(3, 40), Point(4, 35),
                      Point(5, 10),  Point(6, 10), Point(3, 50)};
  struct Case {
    double budget;
    int want;
  };
  for (const Case& c : {Case{2, 0}, Case{3, 1}, Case{4, 2}, Case{5, 3},
                        Case{100, 3}}) {
    SCOPED_TRACE(c.budget);
    absl::StatusOr<MixedChoice> choice = ChooseMixedPrecision(curves, c.budget);
    ASSERT_TRUE(choice.ok()) << choice.status();
    EXPECT_EQ(choice->point[0], c.want);
  }
  const std::vector<bool> pareto = {true, true, true, true, false, false};
  const std::vector<bool> hull = {true, true, false, true, false, false};
  for (size_t k = 0; k < pareto.size(); ++k) {
    SCOPED_TRACE(k);
    EXPECT_EQ(curves[0].points[k].pareto, pareto[k]);
    EXPECT_EQ(curves[0].points[k].hull, hull[k]);
  }
  // Budget 4: the LP mixes (3, 40) and (5, 10) half and half: 25, with a
  // multiplier of 15 error per bit; the integer optimum is (4, 35).
  absl::StatusOr<MixedChoice> choice = ChooseMixedPrecision(curves, 4);
  ASSERT_TRUE(choice.ok());
  EXPECT_DOUBLE_EQ(choice->lower_bound, 25);
  EXPECT_DOUBLE_EQ(choice->lambda, 15);
  EXPECT_DOUBLE_EQ(choice->error, 35);
}

TEST(ChooseMixedPrecisionTest, RefusesWhatItCannotDo) {
  std::vector<TensorCurve> curves(2);
  curves[0].name = "a";
  curves[0].points = {Point(10, 5), Point(20, 1)};
  curves[1].name = "b";
  EXPECT_EQ(ChooseMixedPrecision(curves, 100).status().code(),
            absl::StatusCode::kInvalidArgument);  // b has no point
  curves[1].points = {Point(10, 5)};
  absl::Status low = ChooseMixedPrecision(curves, 19).status();
  EXPECT_EQ(low.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(low.message().find("20 bits"), std::string::npos) << low;
  MixedChoiceOptions output;
  output.measure = ErrorMeasure::kOutput;
  EXPECT_EQ(ChooseMixedPrecision(curves, 100, output).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // With output-space errors, those are minimised instead.
  curves[0].points[0].output_error = 1;  // the small point is better there
  curves[0].points[1].output_error = 2;
  curves[1].points[0].output_error = 0;
  absl::StatusOr<MixedChoice> by_output =
      ChooseMixedPrecision(curves, 100, output);
  ASSERT_TRUE(by_output.ok()) << by_output.status();
  EXPECT_EQ(by_output->point[0], 0);
  EXPECT_DOUBLE_EQ(by_output->error, 1);
  absl::StatusOr<MixedChoice> by_weight = ChooseMixedPrecision(curves, 100);
  ASSERT_TRUE(by_weight.ok());
  EXPECT_EQ(by_weight->point[0], 1);
}

TEST(ParseCandidatesTest, ParsesAndDropsRepeats) {
  absl::StatusOr<std::vector<Scheme>> c =
      ParseCandidates("int4_asym_g128, q4_k,int4_g128_asym,int8");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->size(), 3u);
  EXPECT_EQ(SchemeToString((*c)[1]), "Q4_K");
  EXPECT_EQ(ParseCandidates("int4,int99").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCandidates(" , ").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseCandidates(kDefaultCandidates).ok());
}

// ---------------------------------------------------------------------------
// QuantizeModel with a target, against a fake server.

// Quantizes int and ggml block schemes with the kernels; packed output.
// Calibration sets are not read; a tensor that names one gets output
// metrics as if G were diagonal with G_jj = 1 + j % 7:
// error_sq = sum_ij G_jj (w_ij - w_hat_ij)^2.
class FakeQuantizer final : public v1::Quantizer::Service {
 public:
  grpc::Status GetServerInfo(grpc::ServerContext*,
                             const v1::GetServerInfoRequest*,
                             v1::ServerInfo* info) override {
    info->set_version("fake");
    info->set_workers(1);
    info->mutable_limits()->set_max_chunk_bytes(1 << 20);
    return grpc::Status::OK;
  }

  grpc::Status Quantize(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::QuantizeResponse, v1::QuantizeRequest>*
          stream) override {
    v1::QuantizeRequest request;
    Scheme job_scheme;
    v1::OutputKind output = v1::OUTPUT_KIND_PACKED;
    v1::TensorHeader header;
    std::string data;
    while (stream->Read(&request)) {
      if (request.has_start()) {
        job_scheme = *SchemeFromProto(request.start().scheme());
        output = request.start().options().output();
      } else if (request.has_header()) {
        header = request.header();
        data.clear();
      } else if (request.has_chunk()) {
        data += request.chunk().data();
      } else if (request.has_end()) {
        Scheme scheme = header.has_scheme() ? *SchemeFromProto(header.scheme())
                                            : job_scheme;
        if (!Answer(stream, header, scheme, output, data)) {
          return grpc::Status(grpc::StatusCode::INTERNAL, "fake failed");
        }
      }
    }
    return grpc::Status::OK;
  }

 private:
  static bool Answer(grpc::ServerReaderWriter<v1::QuantizeResponse,
                                              v1::QuantizeRequest>* stream,
                     const v1::TensorHeader& header, const Scheme& scheme,
                     v1::OutputKind output, const std::string& data) {
    std::vector<int64_t> shape(header.shape().begin(), header.shape().end());
    absl::StatusOr<Layout> layout = MakeLayout(scheme, shape);
    absl::StatusOr<DType> dtype = DTypeFromProto(header.dtype());
    if (!layout.ok() || !dtype.ok()) return false;
    const auto n = static_cast<size_t>(layout->num_elements);
    std::vector<float> w(n), w_hat(n);
    if (!ConvertToF32(*dtype, data.data(), n, w.data()).ok()) return false;
    std::vector<uint8_t> codes, scales, zero_points;
    if (const GgmlFormatTraits* ggml = GgmlFormatOf(scheme); ggml != nullptr) {
      codes.resize(static_cast<size_t>(layout->packed_bytes));
      if (!GgmlQuantize(*ggml, w.data(), layout->rows, layout->row_length,
                        nullptr, codes.data())
               .ok() ||
          !GgmlDequantize(*ggml, codes.data(), layout->rows,
                          layout->row_length, w_hat.data())
               .ok()) {
        return false;
      }
    } else {
      QuantizedTensor q = AllocateQuantized(*layout);
      if (!quantd::Quantize(w.data(), q).ok()) return false;
      Dequantize(q, w_hat.data());
      codes = q.codes;
      scales.resize(q.scales.size() * 4);
      std::memcpy(scales.data(), q.scales.data(), scales.size());
      zero_points = q.zero_points;
    }
    v1::TensorResult result;
    result.set_tensor(header.name());
    LayoutToProto(*layout, result.mutable_layout());
    ErrorMetrics metrics = ComputeErrorMetrics(w.data(), w_hat.data(), n);
    metrics.bits_per_weight = layout->BitsPerWeight();
    MetricsToProto(metrics, result.mutable_metrics());
    if (!header.calibration().empty()) {
      double error_sq = 0;
      for (size_t i = 0; i < n; ++i) {
        const double d = static_cast<double>(w[i]) - w_hat[i];
        const auto column = static_cast<int64_t>(i) % layout->row_length;
        error_sq += static_cast<double>(1 + column % 7) * d * d;
      }
      result.mutable_output_metrics()->set_calibration(header.calibration());
      result.mutable_output_metrics()->set_error_sq(error_sq);
    }
    result.set_bytes_in(data.size());
    auto send = [&](v1::ShardChunk::Part part, const void* p, size_t size) {
      if (size > 0) {
        v1::QuantizeResponse response;
        v1::ShardChunk* shard = response.mutable_shard();
        shard->set_tensor(header.name());
        shard->set_part(part);
        shard->set_offset(0);
        shard->set_data(p, size);
        shard->set_crc32c(Crc32c(p, size));
        stream->Write(response);
      }
      if (size > 0) {  // the result lists every part sent
        v1::PartInfo* info = result.add_parts();
        info->set_part(part);
        info->set_bytes(size);
        info->set_crc32c(Crc32c(p, size));
      }
    };
    if (output != v1::OUTPUT_KIND_FAKE_QUANT) {
      send(v1::ShardChunk::PART_CODES, codes.data(), codes.size());
      send(v1::ShardChunk::PART_SCALES, scales.data(), scales.size());
      send(v1::ShardChunk::PART_ZERO_POINTS,
                                         zero_points.data(),
                                         zero_points.size());
    }
    if (output != v1::OUTPUT_KIND_PACKED) {
      send(v1::ShardChunk::PART_FAKE_QUANT, w_hat.data(), n * 4);
    }
    v1::QuantizeResponse response;
    *response.mutable_result() = result;
    return stream->Write(response);
  }
};

enum class Kind { kGaussian, kOutlierChannels, kHeavyTailed };

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  Kind kind;
  float scale;
};

class MixedQuantizeModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           absl::StrCat("quantd_mixed_", info->name(), "_", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    server_->Shutdown();
    fs::remove_all(dir_);
  }

  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }

  // LLM-like weights of different sensitivity: Gaussian; Gaussian with a
  // few input columns 25x larger (outlier channels); Student-t with 3
  // degrees of freedom (heavy tails). Seeded.
  std::string WriteModel(const std::vector<Spec>& specs, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::student_t_distribution<float> student(3.0f);
    std::vector<SafetensorsWriter::Entry> entries;
    std::vector<std::vector<float>> values;
    for (const Spec& s : specs) {
      entries.push_back({s.name, "F32", s.shape});
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      const int64_t cols = s.shape.back();
      std::vector<float> v(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        float x = 0;
        switch (s.kind) {
          case Kind::kGaussian:
            x = normal(rng);
            break;
          case Kind::kOutlierChannels:
            x = normal(rng) * ((i % cols) % 37 == 5 ? 25.0f : 1.0f);
            break;
          case Kind::kHeavyTailed:
            x = student(rng);
            break;
        }
        v[static_cast<size_t>(i)] = x * s.scale;
      }
      values.push_back(std::move(v));
    }
    std::string path = Path("model.safetensors");
    auto writer = SafetensorsWriter::Create(path, entries, {{"format", "pt"}});
    EXPECT_TRUE(writer.ok()) << writer.status();
    for (size_t i = 0; i < specs.size(); ++i) {
      const auto* p = reinterpret_cast<const uint8_t*>(values[i].data());
      EXPECT_TRUE(
          (*writer)->Write(specs[i].name, 0, {p, values[i].size() * 4}).ok());
    }
    EXPECT_TRUE((*writer)->Finish().ok());
    return path;
  }

  QuantizeModelOptions Options(const std::string& model,
                               const std::string& out) {
    QuantizeModelOptions options;
    options.model = model;
    options.output = Path(out);
    options.channels = {server_->InProcessChannel(grpc::ChannelArguments())};
    options.progress = ProgressStyle::kNone;
    return options;
  }

  // Total squared error of the quantized tensors, from the run's metrics.
  static double TotalError(const RunSummary& run) {
    double error = 0;
    for (const TensorSummary& t : run.tensors) {
      if (t.action == TensorAction::kQuantized) {
        error += t.metrics.mse() * static_cast<double>(t.num_elements);
      }
    }
    return error;
  }

  const std::vector<Spec> kModel = {
      {"blk.0.attn_q.weight", {64, 256}, Kind::kGaussian, 0.02f},
      {"blk.0.attn_k.weight", {64, 256}, Kind::kOutlierChannels, 0.02f},
      {"blk.0.ffn_up.weight", {128, 256}, Kind::kHeavyTailed, 0.02f},
      {"blk.0.ffn_down.weight", {256, 128}, Kind::kGaussian, 0.01f},
      {"blk.0.attn_norm.weight", {256}, Kind::kGaussian, 1.0f},
  };

  fs::path dir_;
  FakeQuantizer service_;
  std::unique_ptr<grpc::Server> server_;
};

// For each uniform candidate: a mixed run whose target is that uniform
// run's bits per weight is no larger and has less total error.
TEST_F(MixedQuantizeModelTest, BeatsEveryUniformCandidateOfEqualSize) {
  const std::string model = WriteModel(kModel, 11);
  absl::StatusOr<std::vector<Scheme>> candidates =
      ParseCandidates(kDefaultCandidates);
  ASSERT_TRUE(candidates.ok());
  int strictly_better = 0;
  for (size_t k = 0; k < candidates->size(); ++k) {
    const std::string scheme = SchemeToString((*candidates)[k]);
    SCOPED_TRACE(scheme);
    QuantizeModelOptions uniform = Options(model, "uniform.safetensors");
    uniform.scheme = scheme;
    absl::StatusOr<RunSummary> u = QuantizeModel(uniform);
    ASSERT_TRUE(u.ok()) << u.status();
    ASSERT_EQ(u->num_failed, 0);
    ASSERT_EQ(u->num_quantized, 4);

    QuantizeModelOptions mixed = Options(model, "mixed.safetensors");
    mixed.target_bpw = u->quantized_bits_per_weight;
    absl::StatusOr<RunSummary> m = QuantizeModel(mixed);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_EQ(m->num_failed, 0);
    ASSERT_TRUE(m->mixed.has_value());
    EXPECT_TRUE(m->mixed->choice.exact);
    EXPECT_LE(m->quantized_bits_per_weight, mixed.target_bpw);
    EXPECT_DOUBLE_EQ(m->quantized_bits_per_weight, m->mixed->planned_bpw);
    const double mixed_error = TotalError(*m), uniform_error = TotalError(*u);
    EXPECT_LE(mixed_error, uniform_error * (1 + 1e-12));
    EXPECT_NEAR(mixed_error, m->mixed->choice.error, 1e-9 * mixed_error);
    if (k > 0 && k + 1 < candidates->size()) {
      // Between the smallest and the largest there is room to mix.
      EXPECT_LT(mixed_error, uniform_error);
    }
    if (mixed_error < uniform_error * (1 - 1e-9)) ++strictly_better;
    // The run used the chosen schemes.
    for (size_t i = 0; i < m->mixed->curves.size(); ++i) {
      const TensorCurve& curve = m->mixed->curves[i];
      const std::string& chosen =
          curve.points[static_cast<size_t>(m->mixed->choice.point[i])].scheme;
      for (const TensorSummary& t : m->tensors) {
        if (t.name == curve.name) {
          EXPECT_EQ(t.scheme, chosen) << t.name;
        }
      }
    }
  }
  EXPECT_GE(strictly_better, static_cast<int>(candidates->size()) - 2);
}

TEST_F(MixedQuantizeModelTest, OverridesStayFixedAndBytesTargetIsMet) {
  std::vector<Spec> specs = kModel;
  // Rows of 96: only per-channel int8 and Q8_0 of these candidates fit.
  specs.push_back({"blk.0.odd.weight", {8, 96}, Kind::kGaussian, 0.02f});
  const std::string model = WriteModel(specs, 5);
  QuantizeModelOptions options = Options(model, "out.safetensors");
  options.candidates = "int3_asym_g64,int4_asym_g128,Q4_K,Q8_0,int8";
  options.overrides = {"attn_k=int8"};
  options.target_bytes = 60000;
  absl::StatusOr<RunSummary> run = QuantizeModel(options);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->num_failed, 0);
  ASSERT_TRUE(run->mixed.has_value());
  const MixedPrecisionPlan& plan = *run->mixed;
  EXPECT_EQ(plan.curves.size(), 4u);  // attn_k fixed, the norm copied
  uint64_t bytes = 0;
  for (const TensorSummary& t : run->tensors) {
    SCOPED_TRACE(t.name);
    bytes += t.bytes_out;
    if (t.name == "blk.0.attn_k.weight") {
      EXPECT_EQ(t.scheme, "int8_sym_channel");
    }
  }
  EXPECT_LE(bytes, options.target_bytes);
  EXPECT_EQ(bytes, run->output_bytes);
  for (const TensorCurve& curve : plan.curves) {
    SCOPED_TRACE(curve.name);
    EXPECT_NE(curve.name, "blk.0.attn_k.weight");
    if (curve.name == "blk.0.odd.weight") {
      EXPECT_EQ(curve.points.size(), 2u);
      EXPECT_EQ(curve.skipped.size(), 3u);
    } else if (curve.name == "blk.0.ffn_down.weight") {  // rows of 128
      EXPECT_EQ(curve.points.size(), 4u);
      ASSERT_EQ(curve.skipped.size(), 1u);
      EXPECT_EQ(curve.skipped[0].rfind("Q4_K: ", 0), 0u) << curve.skipped[0];
    } else {
      EXPECT_EQ(curve.points.size(), 5u);
    }
  }
  // The report carries the curves, the choice and the achieved figures.
  std::ifstream in(run->report);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  absl::StatusOr<Json> report = ParseJson(text);
  ASSERT_TRUE(report.ok()) << report.status();
  const Json& mixed = (*report)["mixed_precision"];
  EXPECT_EQ(mixed["target_bytes"].get<uint64_t>(), options.target_bytes);
  EXPECT_LE(mixed["achieved_bytes"].get<uint64_t>(), options.target_bytes);
  ASSERT_EQ(mixed["tensors"].size(), 4u);
  for (const Json& t : mixed["tensors"]) {
    EXPECT_TRUE(t["chosen"].is_string());
    for (const Json& p : t["points"]) {
      EXPECT_TRUE(p["output_error"].is_null());
      EXPECT_GT(p["bits"].get<double>(), 0);
    }
  }
  EXPECT_TRUE(mixed["uniform_over_free_tensors"].is_array());
  EXPECT_NE(FormatTotals(*run).find("target 60000 bytes"), std::string::npos);
}

// MeasureCandidates fills the output-error column from the replies, and
// the choice on it is the brute-force optimum of those errors.
TEST_F(MixedQuantizeModelTest, OutputErrorColumnFromCalibratedReplies) {
  const std::string model = WriteModel(kModel, 9);
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> file =
      SafetensorsModel::Open(model);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<CandidateTensor> tensors;
  for (const SafetensorsTensor* t : (*file)->tensors()) {
    if (t->shape.size() == 2 && t->shape[1] == 256) {
      tensors.push_back({t->name, DType::kF32, t->shape, t->data, "x256"});
    }
  }
  ASSERT_EQ(tensors.size(), 3u);
  std::vector<float> activations(4 * 256, 0.5f);
  QuantdClient client(server_->InProcessChannel(grpc::ChannelArguments()));
  DispatchOptions dispatch;
  CalibrationSetRequest set;
  set.name = "x256";
  set.features = 256;
  set.data = {reinterpret_cast<const uint8_t*>(activations.data()),
              activations.size() * 4};
  dispatch.job.calibration_sets = {set};
  const std::vector<DispatchServer> servers = {{&client, "fake", 1 << 20, 2}};
  absl::StatusOr<std::vector<Scheme>> candidates =
      ParseCandidates("int2_asym_g64,int3_asym_g128,int4_asym_g128,int8");
  ASSERT_TRUE(candidates.ok());
  std::vector<TensorCurve> curves =
      MeasureCandidates(dispatch, servers, tensors, *candidates);
  ASSERT_EQ(curves.size(), 3u);
  for (const TensorCurve& curve : curves) {
    SCOPED_TRACE(curve.name);
    ASSERT_EQ(curve.points.size(), 4u);
    for (const CurvePoint& p : curve.points) {
      // Between 1x and 7x the weight error (G_jj in [1, 7]).
      EXPECT_GE(p.output_error, p.weight_error * (1 - 1e-9));
      EXPECT_LE(p.output_error, 7 * p.weight_error * (1 + 1e-9));
    }
  }
  // Brute force over the output errors (copies of the curves so that the
  // optimiser's flags do not matter).
  std::vector<TensorCurve> by_output = curves;
  for (TensorCurve& c : by_output) {
    for (CurvePoint& p : c.points) p.weight_error = p.output_error;
  }
  MixedChoiceOptions output;
  output.measure = ErrorMeasure::kOutput;
  const double budget = 4.0 * (16384 + 16384 + 32768);
  absl::StatusOr<MixedChoice> choice =
      ChooseMixedPrecision(curves, budget, output);
  ASSERT_TRUE(choice.ok()) << choice.status();
  const double opt = BruteForce(by_output, budget);
  EXPECT_NEAR(choice->error, opt, 1e-9 * opt);
  // Without calibration the column is empty and kOutput is refused.
  for (CandidateTensor& t : tensors) t.calibration.clear();
  dispatch.job.calibration_sets.clear();
  std::vector<TensorCurve> plain =
      MeasureCandidates(dispatch, servers, tensors, *candidates);
  ASSERT_EQ(plain.size(), 3u);
  EXPECT_TRUE(std::isnan(plain[0].points[0].output_error));
  EXPECT_EQ(ChooseMixedPrecision(plain, budget, output).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(MixedQuantizeModelTest, RefusesATargetBelowTheSmallestCandidate) {
  const std::string model = WriteModel(kModel, 3);
  QuantizeModelOptions options = Options(model, "out.safetensors");
  options.target_bpw = 2.0;  // int2_asym_g64 is 2.625
  absl::StatusOr<RunSummary> run = QuantizeModel(options);
  EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(run.status().message().find("2.625"), std::string::npos)
      << run.status();
  EXPECT_FALSE(fs::exists(options.output));
  options.target_bytes = 1000;  // both
  EXPECT_EQ(QuantizeModel(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quantd
