// Bits per weight against SQNR for every format quantd implements, on the
// same tensors: synthetic LLM-like weights (Gaussian with outlier input
// channels and scattered outliers) and, when given, the 2-D weights of a
// real model's safetensors file. Prints one markdown table per tensor set,
// sorted by bits per weight.
//
//   quantd_format_quality                       # synthetic tensors only
//   quantd_format_quality --model model.safetensors [--synthetic-rows 1024]
//
// SQNR is over the whole set: 10 log10(sum ||w||^2 / sum ||w - w_hat||^2)
// across the tensors the format accepts (K-quants need rows that are whole
// 256-blocks: the table says how many tensors each row covers). bpw is the
// stored bits per weight (codes + every scale, zero point and table),
// weighted by element count. Quality only: no timing.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/safetensors.h"
#include "kernels/convert.h"
#include "kernels/dtype.h"
#include "kernels/float_formats.h"
#include "kernels/ggml_formats.h"
#include "kernels/hqq.h"
#include "kernels/layout.h"
#include "kernels/nonuniform.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

struct Tensor {
  std::string name;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> w;
};

// Quantizes `t` and writes the dequantized values to w_hat; returns bpw.
using RoundTrip =
    std::function<absl::StatusOr<double>(const Tensor& t, float* w_hat)>;

struct Format {
  std::string family;
  std::string name;
  RoundTrip run;
};

absl::StatusOr<double> IntRoundTrip(const std::string& text, const Tensor& t,
                                    float* w_hat) {
  QUANTD_ASSIGN_OR_RETURN(Scheme scheme, ParseScheme(text));
  QUANTD_ASSIGN_OR_RETURN(Layout layout, MakeLayout(scheme, {t.rows, t.cols}));
  QuantizedTensor q = AllocateQuantized(layout);
  QUANTD_RETURN_IF_ERROR(Quantize(t.w.data(), q));
  Dequantize(q, w_hat);
  return layout.BitsPerWeight();
}

absl::StatusOr<double> GgmlRoundTrip(const GgmlFormatTraits& f, const Tensor& t,
                                     float* w_hat) {
  QUANTD_ASSIGN_OR_RETURN(int64_t row_bytes, GgmlRowBytes(f, t.cols));
  std::vector<uint8_t> bytes(static_cast<size_t>(row_bytes * t.rows));
  QUANTD_RETURN_IF_ERROR(
      GgmlQuantize(f, t.w.data(), t.rows, t.cols, nullptr, bytes.data()));
  QUANTD_RETURN_IF_ERROR(GgmlDequantize(f, bytes.data(), t.rows, t.cols, w_hat));
  return 8.0 * static_cast<double>(f.block_bytes) / f.block_size;
}

absl::StatusOr<double> FloatRoundTrip(const FloatFormatOptions& options,
                                      const Tensor& t, float* w_hat) {
  QUANTD_ASSIGN_OR_RETURN(FloatQuantized q,
                          FloatQuantize(t.w.data(), t.rows, t.cols, options));
  QUANTD_RETURN_IF_ERROR(FloatDequantize(q, w_hat));
  return FloatBitsPerWeight(q);
}

CodebookOptions Codebook(int bits, Granularity g, int64_t group) {
  CodebookOptions o;
  o.bits = bits;
  o.granularity = g;
  o.group_size = group;
  return o;
}

std::vector<Format> Formats() {
  std::vector<Format> out;
  for (const char* s :
       {"int8", "int8_asym_g128", "int4", "int4_g128", "int4_asym_g128",
        "int4_asym_g32", "int3_asym_g128", "int3_asym_g32", "int2_asym_g64",
        "int2_asym_g32"}) {
    const std::string text = s;
    out.push_back({"int (RTN)", text, [text](const Tensor& t, float* w_hat) {
                     return IntRoundTrip(text, t, w_hat);
                   }});
  }
  // compressed-tensors' full-range symmetric convention, where the scheme
  // parser knows it.
  for (const char* s : {"int8_full", "int4_full_g128"}) {
    const std::string text = s;
    if (!ParseScheme(text).ok()) continue;
    out.push_back({"int (RTN)", text, [text](const Tensor& t, float* w_hat) {
                     return IntRoundTrip(text, t, w_hat);
                   }});
  }
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    const GgmlFormatTraits* fp = &f;
    out.push_back({"ggml", f.name, [fp](const Tensor& t, float* w_hat) {
                     return GgmlRoundTrip(*fp, t, w_hat);
                   }});
  }
  struct FloatEntry {
    const char* label;
    const char* format;
    const char* granularity;
    int block;
    bool dq;
  };
  for (const FloatEntry& e : std::vector<FloatEntry>{
           {"fp8_e4m3 tensor", "fp8_e4m3", "tensor", 0, false},
           {"fp8_e4m3 channel", "fp8_e4m3", "channel", 0, false},
           {"fp8_e4m3 block128", "fp8_e4m3", "block", 128, false},
           {"fp8_e5m2 channel", "fp8_e5m2", "channel", 0, false},
           {"fp4_e2m1 g32", "fp4_e2m1", "block", 32, false},
           {"fp4_e2m1 g16", "fp4_e2m1", "block", 16, false},
           {"nf4 g64", "nf4", "", 0, false},
           {"nf4 g64 double-quant", "nf4", "", 0, true},
           {"ocp_mxfp8", "ocp_mxfp8", "", 0, false},
           {"ocp_mxfp4", "ocp_mxfp4", "", 0, false},
           {"modelopt_nvfp4", "modelopt_nvfp4", "", 0, false}}) {
    absl::StatusOr<FloatFormatOptions> o =
        ParseFloatFormatOptions(e.format, e.granularity, e.block, e.dq);
    if (!o.ok()) {
      std::fprintf(stderr, "skipping %s: %s\n", e.label,
                   std::string(o.status().message()).c_str());
      continue;
    }
    const FloatFormatOptions options = *o;
    out.push_back({"float", e.label, [options](const Tensor& t, float* w_hat) {
                     return FloatRoundTrip(options, t, w_hat);
                   }});
  }
  struct CodebookEntry {
    const char* label;
    bool kmeans;
    int bits;
    Granularity g;
    int64_t group;
  };
  for (const CodebookEntry& e : std::vector<CodebookEntry>{
           {"kmeans4 channel", true, 4, Granularity::kPerChannel, 0},
           {"kmeans4 g128", true, 4, Granularity::kPerGroup, 128},
           {"kmeans3 channel", true, 3, Granularity::kPerChannel, 0},
           {"kmeans3 g128", true, 3, Granularity::kPerGroup, 128},
           {"kmeans2 channel", true, 2, Granularity::kPerChannel, 0},
           {"pot4 channel", false, 4, Granularity::kPerChannel, 0},
           {"pot4 g128", false, 4, Granularity::kPerGroup, 128},
           {"pot3 g128", false, 3, Granularity::kPerGroup, 128}}) {
    const CodebookOptions o = Codebook(e.bits, e.g, e.group);
    const bool kmeans = e.kmeans;
    out.push_back({"codebook", e.label,
                   [o, kmeans](const Tensor& t,
                               float* w_hat) -> absl::StatusOr<double> {
                     absl::StatusOr<CodebookTensor> q =
                         kmeans ? KMeansQuantize(t.w.data(), t.rows, t.cols, o)
                                : PowerOfTwoQuantize(t.w.data(), t.rows,
                                                     t.cols, o);
                     if (!q.ok()) return q.status();
                     QUANTD_RETURN_IF_ERROR(CodebookDequantize(*q, w_hat));
                     return q->BitsPerWeight();
                   }});
  }
  for (int bits : {4, 3, 2}) {
    HqqOptions o;
    o.bits = bits;
    o.group_size = 64;
    out.push_back({"hqq", absl::StrCat("hqq", bits, " g64"),
                   [o](const Tensor& t, float* w_hat) -> absl::StatusOr<double> {
                     QUANTD_ASSIGN_OR_RETURN(
                         HqqTensor q, HqqQuantize(t.w.data(), t.rows, t.cols, o));
                     QUANTD_RETURN_IF_ERROR(HqqDequantize(q, w_hat));
                     return q.BitsPerWeight();
                   }});
  }
  return out;
}

// LLM-like weights: N(0, 0.02), 1 % of the input channels (columns) x8,
// 0.05 % of the values x20, per-row scale drawn in [0.5, 2].
std::vector<Tensor> SyntheticTensors(int64_t rows) {
  std::vector<Tensor> out;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{rows, 4096},
                                                           {rows, 11008}};
  std::mt19937_64 rng(20261123);
  int index = 0;
  for (const auto& [r, c] : shapes) {
    Tensor t;
    t.name = absl::StrCat("synthetic_", index++, "[", r, "x", c, "]");
    t.rows = r;
    t.cols = c;
    t.w.resize(static_cast<size_t>(r * c));
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    std::vector<float> col_scale(static_cast<size_t>(c), 1.0f);
    for (float& s : col_scale) {
      if (uniform(rng) < 0.01f) s = 8.0f;
    }
    for (int64_t i = 0; i < r; ++i) {
      const float row_scale = 0.5f + 1.5f * uniform(rng);
      for (int64_t j = 0; j < c; ++j) {
        float x = normal(rng) * row_scale * col_scale[static_cast<size_t>(j)];
        if (uniform(rng) < 0.0005f) x *= 20.0f;
        t.w[static_cast<size_t>(i * c + j)] = x;
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<std::vector<Tensor>> ModelTensors(const std::string& path) {
  QUANTD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsModel> model,
                          SafetensorsModel::Open(path));
  std::vector<Tensor> out;
  for (const SafetensorsTensor* st : model->tensors()) {
    if (st->shape.size() != 2 || st->shape[0] < 16 || st->shape[1] < 16) {
      continue;
    }
    absl::StatusOr<DType> dtype = ParseDType(st->dtype);
    if (!dtype.ok()) continue;
    // Embedding tables are rows of a lookup, not a linear layer: skipped.
    if (st->name.find("embeddings") != std::string::npos) continue;
    Tensor t;
    t.name = st->name;
    t.rows = st->shape[0];
    t.cols = st->shape[1];
    t.w.resize(static_cast<size_t>(st->num_elements));
    QUANTD_RETURN_IF_ERROR(ConvertToF32(*dtype, st->data.data(), t.w.size(),
                                        t.w.data()));
    out.push_back(std::move(t));
  }
  return out;
}

struct Row {
  std::string family;
  std::string name;
  double bpw = 0;
  double sqnr = 0;
  double median_sqnr = 0;
  int tensors = 0;
};

void Evaluate(const std::string& title, const std::vector<Tensor>& tensors,
              const std::vector<Format>& formats) {
  int64_t total = 0;
  for (const Tensor& t : tensors) total += t.rows * t.cols;
  std::printf("\n## %s: %zu tensors, %lld weights\n\n", title.c_str(),
              tensors.size(), static_cast<long long>(total));
  std::vector<Row> rows;
  std::vector<float> w_hat;
  for (const Format& f : formats) {
    Row row{f.family, f.name};
    double signal = 0;
    double noise = 0;
    double bits = 0;
    int64_t elements = 0;
    std::vector<double> per_tensor;
    for (const Tensor& t : tensors) {
      w_hat.assign(t.w.size(), 0.0f);
      absl::StatusOr<double> bpw = f.run(t, w_hat.data());
      if (!bpw.ok()) continue;
      double s = 0;
      double e = 0;
      for (size_t i = 0; i < t.w.size(); ++i) {
        const double d = double{t.w[i]} - w_hat[i];
        s += double{t.w[i]} * t.w[i];
        e += d * d;
      }
      signal += s;
      noise += e;
      bits += *bpw * static_cast<double>(t.w.size());
      elements += static_cast<int64_t>(t.w.size());
      per_tensor.push_back(10 * std::log10(s / e));
      ++row.tensors;
    }
    if (row.tensors == 0) continue;
    row.bpw = bits / static_cast<double>(elements);
    row.sqnr = 10 * std::log10(signal / noise);
    std::sort(per_tensor.begin(), per_tensor.end());
    const size_t m = per_tensor.size();
    row.median_sqnr = m % 2 == 1 ? per_tensor[m / 2]
                                 : (per_tensor[m / 2 - 1] + per_tensor[m / 2]) / 2;
    rows.push_back(row);
    std::fflush(stdout);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.bpw < b.bpw;
  });
  std::printf("| format | family | bpw | SQNR dB (set) | SQNR dB (median tensor) "
              "| tensors |\n|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %s | %.3f | %.2f | %.2f | %d/%zu |\n", r.name.c_str(),
                r.family.c_str(), r.bpw, r.sqnr, r.median_sqnr, r.tensors,
                tensors.size());
  }
}

int Main(int argc, char** argv) {
  std::string model;
  int64_t synthetic_rows = 1024;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      model = argv[++i];
    } else if (arg == "--synthetic-rows" && i + 1 < argc &&
               absl::SimpleAtoi(argv[i + 1], &synthetic_rows) &&
               synthetic_rows > 0) {
      ++i;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--model FILE.safetensors] [--synthetic-rows N]\n",
                   argv[0]);
      return 2;
    }
  }
  const std::vector<Format> formats = Formats();
  Evaluate("synthetic LLM-like weights (N(0,0.02), 1% outlier input channels "
           "x8, 0.05% outliers x20, row scales 0.5-2)",
           SyntheticTensors(synthetic_rows), formats);
  if (!model.empty()) {
    absl::StatusOr<std::vector<Tensor>> tensors = ModelTensors(model);
    if (!tensors.ok()) {
      std::fprintf(stderr, "%s\n", tensors.status().ToString().c_str());
      return 1;
    }
    Evaluate(absl::StrCat("2-D linear weights of ", model), *tensors, formats);
  }
  return 0;
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) { return quantd::Main(argc, argv); }
