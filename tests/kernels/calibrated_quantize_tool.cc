// Command-line access to the calibrated methods (gptq.h, awq.h,
// smoothquant.h), for tests that compare them with independent numpy
// implementations (tests/e2e/python/test_calibrated_methods.py).
//
//   calibrated_quantize_tool gptq key=value...
//   calibrated_quantize_tool awq key=value...
//   calibrated_quantize_tool smoothquant key=value...
//
// Common keys: rows, cols, w (file of rows*cols raw f32), g (file of
// cols*cols raw f64, G = X^T X), tokens, out (an existing directory).
// gptq: scheme, damp, block, act_order (0/1), static_groups (0/1).
// awq: scheme, act (cols raw f32 mean|x|), n_grid, clip (0/1).
// smoothquant: act (cols raw f32 max|x|), alpha, search (0/1), n_grid; g
// optional.
//
// Writes raw little-endian files into `out`: w_hat.f32 (gptq: the
// dequantized weight in the original column order; awq: the fake-quant
// weight with the scales folded back; smoothquant: W diag(s)), and for
// gptq/awq codes.u8 (one unpacked code field per element, in the quantized
// tensor's order), scales.f32 and zero_points.u8 (the group parameters);
// gptq: perm.i32 and g_idx.i32 (may be empty); awq/smoothquant: smooth.f32
// (s). Prints key=value results on stdout. Exit status 2 and the status
// text on stderr on any error.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/awq.h"
#include "kernels/gptq.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"
#include "kernels/smoothquant.h"

namespace {

using Args = std::map<std::string, std::string>;

template <typename T>
absl::StatusOr<std::vector<T>> ReadFile(const std::string& path,
                                        int64_t count) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)),
                                std::istreambuf_iterator<char>());
  if (bytes.size() != static_cast<size_t>(count) * sizeof(T)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " has ", bytes.size(), " bytes, expected ",
        static_cast<size_t>(count) * sizeof(T)));
  }
  std::vector<T> out(static_cast<size_t>(count));
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(out.data()));
  return out;
}

template <typename T>
absl::Status WriteFile(const std::string& path, const std::vector<T>& data) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(data.data()),
             static_cast<std::streamsize>(data.size() * sizeof(T)));
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Get(const Args& args, const std::string& key) {
  auto it = args.find(key);
  if (it == args.end()) {
    return absl::InvalidArgumentError(absl::StrCat("missing ", key, "="));
  }
  return it->second;
}

int64_t GetInt(const Args& args, const std::string& key, int64_t fallback) {
  auto it = args.find(key);
  int64_t v = fallback;
  if (it != args.end() && !absl::SimpleAtoi(it->second, &v)) v = fallback;
  return v;
}

double GetDouble(const Args& args, const std::string& key, double fallback) {
  auto it = args.find(key);
  double v = fallback;
  if (it != args.end() && !absl::SimpleAtod(it->second, &v)) v = fallback;
  return v;
}

absl::Status WriteQuantized(const std::string& out,
                            const quantd::QuantizedTensor& q) {
  std::vector<uint8_t> fields(static_cast<size_t>(q.layout.num_elements));
  quantd::UnpackCodes(q.codes.data(), q.layout.num_elements, q.layout.bits,
                      fields.data());
  absl::Status s = WriteFile(out + "/codes.u8", fields);
  if (!s.ok()) return s;
  s = WriteFile(out + "/scales.f32", q.scales);
  if (!s.ok()) return s;
  return WriteFile(out + "/zero_points.u8", q.zero_points);
}

absl::Status Run(int argc, char** argv) {
  if (argc < 2) {
    return absl::InvalidArgumentError(
        "usage: calibrated_quantize_tool gptq|awq|smoothquant key=value...");
  }
  const std::string method = argv[1];
  Args args;
  for (int i = 2; i < argc; ++i) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    args[kv.first] = kv.second;
  }
  const int64_t rows = GetInt(args, "rows", 0);
  const int64_t cols = GetInt(args, "cols", 0);
  const int64_t tokens = GetInt(args, "tokens", 0);
  absl::StatusOr<std::string> out = Get(args, "out");
  if (!out.ok()) return out.status();
  absl::StatusOr<std::string> w_path = Get(args, "w");
  if (!w_path.ok()) return w_path.status();
  absl::StatusOr<std::vector<float>> w = ReadFile<float>(*w_path, rows * cols);
  if (!w.ok()) return w.status();
  std::vector<double> g;
  if (args.count("g") > 0) {
    absl::StatusOr<std::vector<double>> read =
        ReadFile<double>(args["g"], cols * cols);
    if (!read.ok()) return read.status();
    g = *std::move(read);
  }
  const quantd::GramView gram = quantd::GramView::F64(g, cols, tokens);

  if (method == "smoothquant") {
    absl::StatusOr<std::vector<float>> act =
        ReadFile<float>(args["act"], cols);
    if (!act.ok()) return act.status();
    quantd::SmoothQuantOptions options;
    options.alpha = GetDouble(args, "alpha", options.alpha);
    options.search_alpha = GetInt(args, "search", 0) != 0;
    options.n_grid = static_cast<int>(GetInt(args, "n_grid", options.n_grid));
    absl::StatusOr<quantd::SmoothQuantResult> r = quantd::SmoothQuant(
        w->data(), rows, cols, *act, g.empty() ? nullptr : &gram, options);
    if (!r.ok()) return r.status();
    absl::Status s = WriteFile(*out + "/w_hat.f32", r->smoothed_weight);
    if (s.ok()) s = WriteFile(*out + "/smooth.f32", r->scales);
    if (!s.ok()) return s;
    std::cout << "alpha=" << r->alpha << "\nestimated_error="
              << r->estimated_error << "\n";
    for (size_t i = 0; i < r->alpha_errors.size(); ++i) {
      std::cout << "alpha_error_" << i << "=" << r->alpha_errors[i] << "\n";
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> scheme_text = Get(args, "scheme");
  if (!scheme_text.ok()) return scheme_text.status();
  absl::StatusOr<quantd::Scheme> scheme = quantd::ParseScheme(*scheme_text);
  if (!scheme.ok()) return scheme.status();
  absl::StatusOr<quantd::Layout> layout =
      quantd::MakeLayout(*scheme, {rows, cols});
  if (!layout.ok()) return layout.status();

  if (method == "gptq") {
    quantd::GptqOptions options;
    options.damp_percent = GetDouble(args, "damp", options.damp_percent);
    options.block_size = GetInt(args, "block", options.block_size);
    options.act_order = GetInt(args, "act_order", 0) != 0;
    options.static_groups = GetInt(args, "static_groups", 0) != 0;
    absl::StatusOr<quantd::GptqResult> r =
        quantd::GptqQuantize(w->data(), *layout, gram, options);
    if (!r.ok()) return r.status();
    std::vector<float> w_hat(static_cast<size_t>(rows * cols));
    quantd::Dequantize(r->quantized, w_hat.data());
    absl::Status s = WriteFile(*out + "/w_hat.f32", w_hat);
    if (s.ok()) s = WriteQuantized(*out, r->quantized);
    if (s.ok()) s = WriteFile(*out + "/perm.i32", r->perm);
    if (s.ok()) s = WriteFile(*out + "/g_idx.i32", r->g_idx);
    if (!s.ok()) return s;
    std::cout << "group_index="
              << (r->quantized.layout.group_index ? 1 : 0)
              << "\ndead_columns=" << r->dead_columns
              << "\nloss=" << r->loss << "\noutput_error=" << r->output_error
              << "\nrtn_output_error=" << r->rtn_output_error << "\n";
    return absl::OkStatus();
  }
  if (method == "awq") {
    absl::StatusOr<std::vector<float>> act =
        ReadFile<float>(args["act"], cols);
    if (!act.ok()) return act.status();
    quantd::AwqOptions options;
    options.n_grid = static_cast<int>(GetInt(args, "n_grid", options.n_grid));
    options.clip = GetInt(args, "clip", 1) != 0;
    options.fake_quant = true;
    absl::StatusOr<quantd::AwqResult> r =
        quantd::AwqQuantize(w->data(), *layout, *act, gram, options);
    if (!r.ok()) return r.status();
    absl::Status s = WriteFile(*out + "/w_hat.f32", r->fake_quant);
    if (s.ok()) s = WriteQuantized(*out, r->quantized);
    if (s.ok()) s = WriteFile(*out + "/smooth.f32", r->scales);
    if (!s.ok()) return s;
    std::cout << "alpha=" << r->alpha << "\noutput_error=" << r->output_error
              << "\nrtn_output_error=" << r->rtn_output_error << "\n";
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown method ", method));
}

}  // namespace

int main(int argc, char** argv) {
  std::cout.precision(17);
  const absl::Status status = Run(argc, argv);
  if (!status.ok()) {
    std::cerr << status << "\n";
    return 2;
  }
  return 0;
}
