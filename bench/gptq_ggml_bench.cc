// GPTQ onto ggml's block formats (GptqGgmlQuantize) beside ggml's own
// quantizer with the same importance (the RTN baseline) on one layer with
// correlated calibration inputs: for each format the time of both and the
// output-space error sqrt(tr(dW G dW^T) / tr(W G W^T)) of both.
//
//   quantd_gptq_ggml_bench                 # 1024 x 4096, 2048 tokens
//   quantd_gptq_ggml_bench ROWS COLS TOKENS [FORMAT...]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/ggml_formats.h"
#include "kernels/gptq.h"
#include "kernels/gptq_ggml.h"
#include "kernels/internal/linalg.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                       start)
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 1024;
  int64_t cols = 4096;
  int64_t tokens = 2048;
  std::vector<std::string> names;
  if (argc >= 4) {
    rows = std::atoll(argv[1]);
    cols = std::atoll(argv[2]);
    tokens = std::atoll(argv[3]);
    for (int i = 4; i < argc; ++i) names.emplace_back(argv[i]);
  }
  // Inputs: 16 latent factors plus noise, every 17th channel 20x larger.
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t latent = 16;
  std::vector<float> mix(static_cast<size_t>(latent * cols));
  for (float& v : mix) v = normal(rng);
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (int64_t t = 0; t < tokens; ++t) {
    float z[latent];
    for (float& v : z) v = normal(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float s = 0.5f * normal(rng);
      for (int64_t l = 0; l < latent; ++l) s += z[l] * mix[l * cols + c];
      x[t * cols + c] = c % 17 == 0 ? 20.0f * s : s;
    }
  }
  std::vector<float> g32(static_cast<size_t>(cols * cols));
  if (!quantd::internal::Sgemm(true, false, cols, cols, tokens, 1.0f, x.data(),
                               cols, x.data(), cols, 0.0f, g32.data(), cols)
           .ok()) {
    std::fprintf(stderr, "sgemm failed\n");
    return 1;
  }
  const std::vector<double> g(g32.begin(), g32.end());
  const quantd::GramView gram = quantd::GramView::F64(g, cols, tokens);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = 0.02f * normal(rng);
  for (size_t i = 0; i < w.size(); i += 97) w[i] *= 8.0f;

  std::printf("%lld x %lld weight, G from %lld tokens\n",
              static_cast<long long>(rows), static_cast<long long>(cols),
              static_cast<long long>(tokens));
  std::printf("%-8s | %9s %9s | %9s %9s | %6s\n", "format", "RTN ms",
              "GPTQ ms", "RTN err", "GPTQ err", "ratio");
  std::vector<float> importance(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) {
    importance[c] = static_cast<float>(g[c * cols + c] /
                                       static_cast<double>(tokens));
  }
  {
    // For scale: gptq.h's GPTQ onto int4 groups of 128 (RTN: Quantize).
    const quantd::Layout layout =
        *quantd::MakeLayout(*quantd::ParseScheme("int4_asym_g128"),
                            {rows, cols});
    quantd::QuantizedTensor q = quantd::AllocateQuantized(layout);
    auto start = std::chrono::steady_clock::now();
    (void)quantd::Quantize(w.data(), q);
    const double t_rtn = Seconds(start);
    quantd::GptqOptions options;
    start = std::chrono::steady_clock::now();
    const absl::StatusOr<quantd::GptqResult> r =
        quantd::GptqQuantize(w.data(), layout, gram, options);
    const double t_gptq = Seconds(start);  // includes the two error GEMMs
    if (r.ok()) {
      std::printf("%-8s | %9.1f %9.1f | %9.5f %9.5f | %6.3f\n", "int4g128",
                  t_rtn * 1e3, t_gptq * 1e3, r->rtn_output_error,
                  r->output_error, r->output_error / r->rtn_output_error);
    }
  }
  for (const quantd::GgmlFormatTraits& format : quantd::GgmlFormatTable()) {
    if (!names.empty()) {
      bool wanted = false;
      for (const std::string& n : names) wanted |= n == format.name;
      if (!wanted) continue;
    }
    const int64_t row_bytes = *quantd::GgmlRowBytes(format, cols);
    std::vector<uint8_t> bytes(static_cast<size_t>(rows * row_bytes));
    auto start = std::chrono::steady_clock::now();
    if (!quantd::GgmlQuantize(format, w.data(), rows, cols,
                              format.uses_importance ? importance.data()
                                                     : nullptr,
                              bytes.data())
             .ok()) {
      std::fprintf(stderr, "%s: GgmlQuantize failed\n", format.name);
      return 1;
    }
    const double t_rtn = Seconds(start);
    quantd::GptqGgmlOptions options;
    options.measure_output_error = false;
    start = std::chrono::steady_clock::now();
    absl::StatusOr<quantd::GptqGgmlResult> r =
        quantd::GptqGgmlQuantize(format, w.data(), rows, cols, gram, options);
    const double t_gptq = Seconds(start);
    if (!r.ok()) {
      std::fprintf(stderr, "%s: %s\n", format.name,
                   r.status().ToString().c_str());
      return 1;
    }
    std::vector<float> w_hat(w.size());
    (void)quantd::GgmlDequantize(format, r->bytes.data(), rows, cols,
                                 w_hat.data());
    const double e_gptq =
        *quantd::OutputRelativeError(w.data(), w_hat.data(), rows, cols, gram);
    (void)quantd::GgmlDequantize(format, r->rtn_bytes.data(), rows, cols,
                                 w_hat.data());
    const double e_rtn =
        *quantd::OutputRelativeError(w.data(), w_hat.data(), rows, cols, gram);
    std::printf("%-8s | %9.1f %9.1f | %9.5f %9.5f | %6.3f\n", format.name,
                t_rtn * 1e3, t_gptq * 1e3, e_rtn, e_gptq, e_gptq / e_rtn);
    std::fflush(stdout);
  }
  return 0;
}
