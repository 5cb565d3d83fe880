// Command-line access to GPTQ onto ggml's formats (gptq_ggml.h) and the
// W8A8 check (w8a8.h), for the numpy references in
// tests/e2e/python/test_gptq_ggml.py and test_w8a8.py.
//
//   gptq_ggml_w8a8_tool gptq_ggml format=Q8_0 rows=R cols=C tokens=T w=F g=F
//       out=DIR [damp=0.01] [block=128] [act_order=0] [importance=1]
//   gptq_ggml_w8a8_tool w8a8 m=M n=N k=K x=F w=F out=DIR scheme=int8|
//       int8_tensor act_scale=S [act_zero_point=0] [asymmetric=0] [smooth=F]
//
// Files are raw little-endian: w (rows*cols or n*k f32), g (cols*cols f64,
// G = X^T X), x (m*k f32), smooth (k f32).
// gptq_ggml writes bytes.u8 (GPTQ's ggml bytes), rtn.u8 (the static pass),
// w_hat.f32 (GgmlDequantize of bytes.u8); prints output_error,
// rtn_output_error, loss and dead_columns.
// w8a8 quantizes W diag(smooth) (W without smooth) with quantize.h's int8
// scheme, writes wq.i8, w_scales.f32, xq.u8 (activation codes) and y.f32
// (the W8A8 output); prints the report's figures.
// Prints key=value lines on stdout; exit status 2 and the status on stderr
// on any error.
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
#include "base/status_macros.h"
#include "kernels/ggml_formats.h"
#include "kernels/gptq.h"
#include "kernels/gptq_ggml.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"
#include "kernels/w8a8.h"

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
absl::Status WriteFile(const std::string& path, const T* data, size_t n) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(data),
             static_cast<std::streamsize>(n * sizeof(T)));
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

template <typename T>
absl::Status WriteFile(const std::string& path, const std::vector<T>& v) {
  return WriteFile(path, v.data(), v.size());
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

absl::Status RunGptqGgml(const Args& args) {
  QUANTD_ASSIGN_OR_RETURN(const std::string name, Get(args, "format"));
  const quantd::GgmlFormatTraits* format = quantd::FindGgmlFormat(name);
  if (format == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown format ", name));
  }
  const int64_t rows = GetInt(args, "rows", 0);
  const int64_t cols = GetInt(args, "cols", 0);
  const int64_t tokens = GetInt(args, "tokens", 0);
  QUANTD_ASSIGN_OR_RETURN(const std::string out, Get(args, "out"));
  QUANTD_ASSIGN_OR_RETURN(const std::string w_path, Get(args, "w"));
  QUANTD_ASSIGN_OR_RETURN(const std::string g_path, Get(args, "g"));
  QUANTD_ASSIGN_OR_RETURN(const std::vector<float> w,
                          ReadFile<float>(w_path, rows * cols));
  QUANTD_ASSIGN_OR_RETURN(const std::vector<double> g,
                          ReadFile<double>(g_path, cols * cols));
  quantd::GptqGgmlOptions options;
  options.damp_percent = GetDouble(args, "damp", 0.01);
  options.block_size = GetInt(args, "block", 128);
  options.act_order = GetInt(args, "act_order", 0) != 0;
  options.use_importance = GetInt(args, "importance", 1) != 0;
  options.return_w_hat = true;
  QUANTD_ASSIGN_OR_RETURN(
      const quantd::GptqGgmlResult r,
      quantd::GptqGgmlQuantize(*format, w.data(), rows, cols,
                               quantd::GramView::F64(g, cols, tokens),
                               options));
  std::vector<float> decoded(static_cast<size_t>(rows * cols));
  QUANTD_RETURN_IF_ERROR(quantd::GgmlDequantize(*format, r.bytes.data(), rows,
                                                cols, decoded.data()));
  QUANTD_RETURN_IF_ERROR(WriteFile(out + "/bytes.u8", r.bytes));
  QUANTD_RETURN_IF_ERROR(WriteFile(out + "/rtn.u8", r.rtn_bytes));
  QUANTD_RETURN_IF_ERROR(WriteFile(out + "/w_hat.f32", decoded));
  std::printf("output_error=%.17g\nrtn_output_error=%.17g\nloss=%.17g\n"
              "dead_columns=%lld\n",
              r.output_error, r.rtn_output_error, r.loss,
              static_cast<long long>(r.dead_columns));
  return absl::OkStatus();
}

absl::Status RunW8A8(const Args& args) {
  const int64_t m = GetInt(args, "m", 0);
  const int64_t n = GetInt(args, "n", 0);
  const int64_t k = GetInt(args, "k", 0);
  QUANTD_ASSIGN_OR_RETURN(const std::string out, Get(args, "out"));
  QUANTD_ASSIGN_OR_RETURN(const std::string x_path, Get(args, "x"));
  QUANTD_ASSIGN_OR_RETURN(const std::string w_path, Get(args, "w"));
  QUANTD_ASSIGN_OR_RETURN(const std::string scheme_text, Get(args, "scheme"));
  QUANTD_ASSIGN_OR_RETURN(const std::vector<float> x,
                          ReadFile<float>(x_path, m * k));
  QUANTD_ASSIGN_OR_RETURN(const std::vector<float> w,
                          ReadFile<float>(w_path, n * k));
  std::vector<float> smooth;
  if (args.count("smooth") != 0) {
    QUANTD_ASSIGN_OR_RETURN(smooth, ReadFile<float>(args.at("smooth"), k));
  }
  std::vector<float> w_smooth = w;
  if (!smooth.empty()) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t c = 0; c < k; ++c) w_smooth[j * k + c] *= smooth[c];
    }
  }
  QUANTD_ASSIGN_OR_RETURN(const quantd::Scheme scheme,
                          quantd::ParseScheme(scheme_text));
  QUANTD_ASSIGN_OR_RETURN(const quantd::Layout layout,
                          quantd::MakeLayout(scheme, {n, k}));
  quantd::QuantizedTensor wq = quantd::AllocateQuantized(layout);
  QUANTD_RETURN_IF_ERROR(quantd::Quantize(w_smooth.data(), wq));
  QUANTD_ASSIGN_OR_RETURN(const quantd::W8A8Weights weights,
                          quantd::W8A8Weights::From(wq));
  quantd::W8A8Activations act;
  act.scale = static_cast<float>(GetDouble(args, "act_scale", 0.0));
  act.zero_point = static_cast<int32_t>(GetInt(args, "act_zero_point", 0));
  act.asymmetric = GetInt(args, "asymmetric", 0) != 0;
  act.smooth = smooth;
  quantd::W8A8Options options;
  options.return_output = true;
  QUANTD_ASSIGN_OR_RETURN(
      const quantd::W8A8Report r,
      quantd::W8A8Check(x.data(), m, w.data(), n, k, weights, act, options));
  std::vector<uint8_t> xq(static_cast<size_t>(m * k));
  quantd::QuantizeActivationsInt8(x.data(), m, k, act, xq.data());
  QUANTD_RETURN_IF_ERROR(WriteFile(out + "/wq.i8", weights.codes,
                                   static_cast<size_t>(n * k)));
  QUANTD_RETURN_IF_ERROR(WriteFile(out + "/w_scales.f32", wq.scales));
  QUANTD_RETURN_IF_ERROR(WriteFile(out + "/xq.u8", xq));
  QUANTD_RETURN_IF_ERROR(WriteFile(out + "/y.f32", r.y));
  std::printf(
      "relative_error=%.17g\nsqnr_db=%.17g\nmax_abs_error=%.17g\n"
      "weight_only_relative_error=%.17g\nweight_only_sqnr_db=%.17g\n"
      "weight_only_max_abs_error=%.17g\nclipped_fraction=%.17g\n"
      "clipped=%lld\n",
      r.w8a8.relative_error, r.w8a8.sqnr_db, r.w8a8.max_abs_error,
      r.weight_only.relative_error, r.weight_only.sqnr_db,
      r.weight_only.max_abs_error, r.clipped_fraction,
      static_cast<long long>(r.clipped));
  return absl::OkStatus();
}

absl::Status Run(int argc, char** argv) {
  if (argc < 2) {
    return absl::InvalidArgumentError(
        "usage: gptq_ggml_w8a8_tool gptq_ggml|w8a8 key=value...");
  }
  const std::string mode = argv[1];
  Args args;
  for (int i = 2; i < argc; ++i) {
    std::vector<std::string> kv =
        absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    if (kv.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected key=value, got ", argv[i]));
    }
    args[kv[0]] = kv[1];
  }
  if (mode == "gptq_ggml") return RunGptqGgml(args);
  if (mode == "w8a8") return RunW8A8(args);
  return absl::InvalidArgumentError(absl::StrCat("unknown mode ", mode));
}

}  // namespace

int main(int argc, char** argv) {
  const absl::Status status = Run(argc, argv);
  if (!status.ok()) {
    std::cerr << status << "\n";
    return 2;
  }
  return 0;
}
