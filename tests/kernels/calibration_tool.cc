// Command-line access to the calibration statistics, for the Python tests
// that check them against numpy (tests/e2e/python/test_calibration_stats.py).
//
//   calibration_tool stats KEY=VALUE... < x.bin > report.json
//     keys: features (required), chunk (rows per Add, default all),
//     dtype (F32|F16|BF16, default F32), tensor_bins, channel_bins,
//     block_rows (CalibrationOptions), percentile (default 99.99),
//     mse_candidates (default 128), merge_at (rows: accumulate [0, merge_at)
//     and the rest separately, then Merge).
//   calibration_tool output_error OUT IN W.f32 W_HAT.f32 < x.f32 > out.json
//
// x is rows x features little-endian values, row-major. The report holds
// the token count, G, the per-channel stats, importance, every histogram and
// the int8 ranges of every estimator (per tensor and per channel, symmetric
// and asymmetric). Exit status 2 and the status text on stderr on error.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/calibration_stats.h"
#include "kernels/dtype.h"
#include "kernels/output_error.h"
#include "kernels/range_estimators.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

std::vector<char> ReadAll(std::istream& in) {
  return std::vector<char>(std::istreambuf_iterator<char>(in),
                           std::istreambuf_iterator<char>());
}

std::string Num(double v) {
  if (std::isinf(v)) return v > 0 ? "\"inf\"" : "\"-inf\"";
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

template <typename T>
std::string List(const std::vector<T>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ",";
    if constexpr (std::is_integral_v<T>) {
      absl::StrAppend(&out, v[i]);
    } else {
      out += Num(static_cast<double>(v[i]));
    }
  }
  return out + "]";
}

std::string HistogramJson(const Histogram& h) {
  return absl::StrCat("{\"bins\":", h.bins, ",\"exponent\":", h.exponent,
                      ",\"counts\":", List(h.counts), "}");
}

std::string RangeJson(const ActivationRange& r) {
  return absl::StrCat("{\"lo\":", Num(r.lo), ",\"hi\":", Num(r.hi),
                      ",\"scale\":", Num(r.scale),
                      ",\"zero_point\":", r.zero_point, "}");
}

absl::StatusOr<std::map<std::string, std::string>> ParseKeys(int argc,
                                                             char** argv) {
  std::map<std::string, std::string> keys;
  for (int i = 2; i < argc; ++i) {
    std::vector<std::string> kv = absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    if (kv.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("bad argument ", argv[i]));
    }
    keys[kv[0]] = kv[1];
  }
  return keys;
}

absl::StatusOr<int64_t> IntKey(const std::map<std::string, std::string>& keys,
                               const std::string& key, int64_t fallback) {
  auto it = keys.find(key);
  if (it == keys.end()) return fallback;
  int64_t v = 0;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(absl::StrCat("bad ", key));
  }
  return v;
}

absl::Status Stats(int argc, char** argv) {
  absl::StatusOr<std::map<std::string, std::string>> keys = ParseKeys(argc, argv);
  if (!keys.ok()) return keys.status();
  CalibrationOptions options;
  absl::StatusOr<int64_t> features = IntKey(*keys, "features", 0);
  absl::StatusOr<int64_t> chunk = IntKey(*keys, "chunk", 0);
  absl::StatusOr<int64_t> tbins = IntKey(*keys, "tensor_bins", 2048);
  absl::StatusOr<int64_t> cbins = IntKey(*keys, "channel_bins", 2048);
  absl::StatusOr<int64_t> block = IntKey(*keys, "block_rows", 512);
  absl::StatusOr<int64_t> merge_at = IntKey(*keys, "merge_at", 0);
  absl::StatusOr<int64_t> candidates = IntKey(*keys, "mse_candidates", 128);
  for (const auto* v : {&features, &chunk, &tbins, &cbins, &block, &merge_at,
                        &candidates}) {
    if (!v->ok()) return v->status();
  }
  options.tensor_histogram_bins = *tbins;
  options.channel_histogram_bins = *cbins;
  options.gram_block_rows = *block;
  double percentile = 99.99;
  if (keys->count("percentile") &&
      !absl::SimpleAtod(keys->at("percentile"), &percentile)) {
    return absl::InvalidArgumentError("bad percentile");
  }
  DType dtype = DType::kF32;
  if (keys->count("dtype")) {
    absl::StatusOr<DType> d = ParseDType(keys->at("dtype"));
    if (!d.ok()) return d.status();
    dtype = *d;
  }
  const std::vector<char> input = ReadAll(std::cin);
  const size_t row_bytes =
      static_cast<size_t>(*features) * static_cast<size_t>(DTypeSize(dtype));
  if (*features < 1 || input.size() % row_bytes != 0) {
    return absl::InvalidArgumentError("input is not whole rows of features");
  }
  const int64_t rows = static_cast<int64_t>(input.size() / row_bytes);
  const int64_t step = *chunk > 0 ? *chunk : rows;

  auto accumulate = [&](int64_t begin,
                        int64_t end) -> absl::StatusOr<CalibrationAccumulator> {
    absl::StatusOr<CalibrationAccumulator> acc =
        CalibrationAccumulator::Create("calibration_tool", *features, options);
    if (!acc.ok()) return acc.status();
    for (int64_t r = begin; r < end; r += step) {
      const int64_t n = std::min(step, end - r);
      absl::Status s =
          acc->Add(dtype, input.data() + static_cast<size_t>(r) * row_bytes,
                   static_cast<size_t>(n) * row_bytes, *features);
      if (!s.ok()) return s;
    }
    return acc;
  };
  const int64_t split = *merge_at > 0 ? std::min(*merge_at, rows) : rows;
  absl::StatusOr<CalibrationAccumulator> acc = accumulate(0, split);
  if (!acc.ok()) return acc.status();
  if (split < rows) {
    absl::StatusOr<CalibrationAccumulator> rest = accumulate(split, rows);
    if (!rest.ok()) return rest.status();
    absl::Status s = acc->Merge(*rest);
    if (!s.ok()) return s;
  }

  absl::StatusOr<std::vector<double>> gram = acc->Gram();
  absl::StatusOr<ChannelStats> stats = acc->Stats();
  absl::StatusOr<std::vector<float>> importance = acc->Importance();
  absl::StatusOr<Histogram> tensor = acc->TensorHistogram();
  if (!gram.ok()) return gram.status();
  if (!stats.ok()) return stats.status();
  if (!importance.ok()) return importance.status();
  if (!tensor.ok()) return tensor.status();
  std::string out = absl::StrCat(
      "{\"tokens\":", acc->tokens(), ",\"features\":", *features,
      ",\"memory_bytes\":", acc->MemoryBytes(), ",\"gram\":", List(*gram),
      ",\"min\":", List(stats->min), ",\"max\":", List(stats->max),
      ",\"mean_abs\":", List(stats->mean_abs),
      ",\"mean_sq\":", List(stats->mean_sq),
      ",\"importance\":", List(*importance),
      ",\"tensor_histogram\":", HistogramJson(*tensor),
      ",\"channel_histograms\":[");
  if (acc->has_channel_histograms()) {
    for (int64_t c = 0; c < *features; ++c) {
      absl::StatusOr<Histogram> h = acc->ChannelHistogram(c);
      if (!h.ok()) return h.status();
      absl::StrAppend(&out, c > 0 ? "," : "", HistogramJson(*h));
    }
  }
  out += "],\"ranges\":{";
  const std::pair<const char*, RangeMethod> methods[] = {
      {"minmax", RangeMethod::kMinMax},
      {"percentile", RangeMethod::kPercentile},
      {"mse", RangeMethod::kMse},
      {"kl", RangeMethod::kKl}};
  bool first = true;
  for (const auto& [name, method] : methods) {
    for (bool symmetric : {true, false}) {
      RangeOptions o{.method = method,
                     .symmetric = symmetric,
                     .percentile = percentile,
                     .mse_candidates = *candidates};
      absl::StatusOr<ActivationRange> t = EstimateTensorRange(*acc, o);
      if (!t.ok()) return t.status();
      absl::StrAppend(&out, first ? "" : ",", "\"", name,
                      symmetric ? "_sym" : "_asym", "\":{\"tensor\":",
                      RangeJson(*t), ",\"channels\":[");
      first = false;
      if (acc->has_channel_histograms() || method == RangeMethod::kMinMax) {
        absl::StatusOr<std::vector<ActivationRange>> ch =
            EstimateChannelRanges(*acc, o);
        if (!ch.ok()) return ch.status();
        for (size_t c = 0; c < ch->size(); ++c) {
          absl::StrAppend(&out, c > 0 ? "," : "", RangeJson((*ch)[c]));
        }
      }
      out += "]}";
    }
  }
  out += "}}\n";
  std::cout << out;
  return absl::OkStatus();
}

absl::Status OutputErrorCommand(int argc, char** argv) {
  int64_t out_features = 0, in_features = 0;
  if (argc != 6 || !absl::SimpleAtoi(argv[2], &out_features) ||
      !absl::SimpleAtoi(argv[3], &in_features) || in_features < 1) {
    return absl::InvalidArgumentError(
        "usage: calibration_tool output_error OUT IN W.f32 W_HAT.f32 < x.f32");
  }
  auto read_f32 = [](const char* path) {
    std::ifstream file(path, std::ios::binary);
    const std::vector<char> bytes = ReadAll(file);
    std::vector<float> v(bytes.size() / sizeof(float));
    std::copy(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(
                                                 v.size() * sizeof(float)),
              reinterpret_cast<char*>(v.data()));
    return v;
  };
  const std::vector<float> w = read_f32(argv[4]);
  const std::vector<float> w_hat = read_f32(argv[5]);
  if (w.size() != static_cast<size_t>(out_features * in_features) ||
      w_hat.size() != w.size()) {
    return absl::InvalidArgumentError("W files must hold OUT x IN f32");
  }
  const std::vector<char> input = ReadAll(std::cin);
  const size_t row_bytes = static_cast<size_t>(in_features) * sizeof(float);
  if (input.size() % row_bytes != 0) {
    return absl::InvalidArgumentError("x is not whole rows");
  }
  absl::StatusOr<CalibrationAccumulator> acc =
      CalibrationAccumulator::Create("calibration_tool", in_features);
  if (!acc.ok()) return acc.status();
  absl::Status s = acc->Add(DType::kF32, input.data(), input.size(), in_features);
  if (!s.ok()) return s;
  absl::StatusOr<std::vector<double>> gram = acc->Gram();
  if (!gram.ok()) return gram.status();
  absl::StatusOr<OutputError> e = ComputeOutputError(
      w.data(), w_hat.data(), out_features, in_features, *gram);
  if (!e.ok()) return e.status();
  std::cout << "{\"error_sq\":" << Num(e->error_sq)
            << ",\"signal_sq\":" << Num(e->signal_sq)
            << ",\"relative_error\":" << Num(e->relative_error)
            << ",\"sqnr_db\":" << Num(e->sqnr_db) << "}\n";
  return absl::OkStatus();
}

absl::Status Run(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "stats") return Stats(argc, argv);
  if (mode == "output_error") return OutputErrorCommand(argc, argv);
  return absl::InvalidArgumentError(
      "usage: calibration_tool stats|output_error ...");
}

}  // namespace
}  // namespace quantd

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  absl::Status s = quantd::Run(argc, argv);
  if (!s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  std::cout.flush();
  return std::cout.good() ? 0 : 2;
}
