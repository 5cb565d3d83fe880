// Command-line access to the ggml block formats, for conformance tests that
// compare our bytes with other implementations (tests/e2e/python).
//
//   ggml_quantize_tool quantize Q4_0 ROW_LENGTH [IMATRIX] < in.f32 > out.bin
//   ggml_quantize_tool reference Q4_0 ROW_LENGTH [IMATRIX] < in.f32 > out.bin
//   ggml_quantize_tool dequantize Q4_0 ROW_LENGTH < in.bin > out.f32
//
// Input and output are raw little-endian bytes on stdin/stdout: f32 values
// (rows x ROW_LENGTH, row-major) or ggml blocks. IMATRIX is a file of
// ROW_LENGTH raw f32 importance weights. `quantize` uses the dispatched fast
// path, `reference` the scalar one. Exit status 2 and a message on stderr on
// any error (the status text).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/ggml_formats.h"

namespace {

std::vector<char> ReadAll(std::istream& in) {
  return std::vector<char>(std::istreambuf_iterator<char>(in),
                           std::istreambuf_iterator<char>());
}

absl::Status Run(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    return absl::InvalidArgumentError(
        "usage: ggml_quantize_tool quantize|reference|dequantize TYPE "
        "ROW_LENGTH [IMATRIX]");
  }
  const std::string mode = argv[1];
  const quantd::GgmlFormatTraits* format = quantd::FindGgmlFormat(argv[2]);
  if (format == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown type ", argv[2]));
  }
  int64_t row_length = 0;
  if (!absl::SimpleAtoi(argv[3], &row_length)) {
    return absl::InvalidArgumentError(absl::StrCat("bad row length ", argv[3]));
  }
  absl::StatusOr<int64_t> row_bytes = quantd::GgmlRowBytes(*format, row_length);
  if (!row_bytes.ok()) return row_bytes.status();
  const std::vector<char> input = ReadAll(std::cin);

  if (mode == "dequantize") {
    if (input.size() % static_cast<size_t>(*row_bytes) != 0) {
      return absl::InvalidArgumentError("input is not a whole number of rows");
    }
    const int64_t rows = static_cast<int64_t>(input.size()) / *row_bytes;
    std::vector<float> out(static_cast<size_t>(rows * row_length));
    absl::Status s = quantd::GgmlDequantize(
        *format, reinterpret_cast<const uint8_t*>(input.data()), rows,
        row_length, out.data());
    if (!s.ok()) return s;
    std::cout.write(reinterpret_cast<const char*>(out.data()),
                    static_cast<std::streamsize>(out.size() * sizeof(float)));
    return absl::OkStatus();
  }
  if (mode != "quantize" && mode != "reference") {
    return absl::InvalidArgumentError(absl::StrCat("unknown mode ", mode));
  }
  const size_t row_f32_bytes = static_cast<size_t>(row_length) * sizeof(float);
  if (input.size() % row_f32_bytes != 0) {
    return absl::InvalidArgumentError("input is not a whole number of rows");
  }
  const int64_t rows = static_cast<int64_t>(input.size() / row_f32_bytes);
  std::vector<float> src(static_cast<size_t>(rows * row_length));
  std::copy(input.begin(), input.end(), reinterpret_cast<char*>(src.data()));
  std::vector<float> importance;
  if (argc == 5) {
    std::ifstream file(argv[4], std::ios::binary);
    const std::vector<char> bytes = ReadAll(file);
    if (bytes.size() != row_f32_bytes) {
      return absl::InvalidArgumentError("imatrix must hold ROW_LENGTH f32");
    }
    importance.resize(static_cast<size_t>(row_length));
    std::copy(bytes.begin(), bytes.end(),
              reinterpret_cast<char*>(importance.data()));
  }
  std::vector<uint8_t> out(static_cast<size_t>(rows * *row_bytes));
  const float* weights = importance.empty() ? nullptr : importance.data();
  absl::Status s =
      mode == "quantize"
          ? quantd::GgmlQuantize(*format, src.data(), rows, row_length,
                                 weights, out.data())
          : quantd::GgmlQuantizeReference(*format, src.data(), rows,
                                          row_length, weights, out.data());
  if (!s.ok()) return s;
  std::cout.write(reinterpret_cast<const char*>(out.data()),
                  static_cast<std::streamsize>(out.size()));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  absl::Status s = Run(argc, argv);
  if (!s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  std::cout.flush();
  return std::cout.good() ? 0 : 2;
}
