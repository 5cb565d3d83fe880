// Command-line access to the low-precision float formats, for tests that
// compare our outputs with other implementations (tests/e2e/python).
//
//   float_quantize_tool quantize|reference FORMAT ROW_LENGTH OUT_DIR
//       [--granularity=tensor|channel|block] [--block=N] [--double_quant]
//       < in.f32
//
// Reads rows x ROW_LENGTH raw little-endian f32 values from stdin and writes
// into OUT_DIR (which must exist): codes.bin, scales.f32, block_scales.bin,
// second_scales.f32, tensor.f32 (scale_offset then tensor_scale) and
// dequant.f32 (the dequantized tensor). `quantize` uses the dispatched fast
// paths, `reference` the scalar ones. Exit status 2 and the status text on
// stderr on any error.
#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/float_formats.h"

namespace {

template <typename T>
absl::Status WriteFile(const std::string& path, const std::vector<T>& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(T)));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status Run(int argc, char** argv) {
  if (argc < 5) {
    return absl::InvalidArgumentError(
        "usage: float_quantize_tool quantize|reference FORMAT ROW_LENGTH "
        "OUT_DIR [--granularity=G] [--block=N] [--double_quant]");
  }
  const std::string mode = argv[1];
  if (mode != "quantize" && mode != "reference") {
    return absl::InvalidArgumentError(absl::StrCat("unknown mode ", mode));
  }
  int64_t row_length = 0;
  if (!absl::SimpleAtoi(argv[3], &row_length) || row_length < 1) {
    return absl::InvalidArgumentError(absl::StrCat("bad row length ", argv[3]));
  }
  const std::string dir = argv[4];
  std::string granularity;
  int block_size = 0;
  bool double_quant = false;
  for (int i = 5; i < argc; ++i) {
    const std::string arg = argv[i];
    if (absl::StartsWith(arg, "--granularity=")) {
      granularity = arg.substr(14);
    } else if (absl::StartsWith(arg, "--block=")) {
      if (!absl::SimpleAtoi(arg.substr(8), &block_size)) {
        return absl::InvalidArgumentError(absl::StrCat("bad ", arg));
      }
    } else if (arg == "--double_quant") {
      double_quant = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    }
  }
  absl::StatusOr<quantd::FloatFormatOptions> options =
      quantd::ParseFloatFormatOptions(argv[2], granularity, block_size,
                                      double_quant);
  if (!options.ok()) return options.status();

  const std::vector<char> input((std::istreambuf_iterator<char>(std::cin)),
                                std::istreambuf_iterator<char>());
  const size_t row_bytes = static_cast<size_t>(row_length) * sizeof(float);
  if (input.size() % row_bytes != 0) {
    return absl::InvalidArgumentError("input is not a whole number of rows");
  }
  const auto rows = static_cast<int64_t>(input.size() / row_bytes);
  std::vector<float> src(input.size() / sizeof(float));
  std::copy(input.begin(), input.end(), reinterpret_cast<char*>(src.data()));

  const bool reference = mode == "reference";
  absl::StatusOr<quantd::FloatQuantized> q =
      reference
          ? quantd::FloatQuantizeReference(src.data(), rows, row_length, *options)
          : quantd::FloatQuantize(src.data(), rows, row_length, *options);
  if (!q.ok()) return q.status();
  std::vector<float> dequant(src.size());
  const absl::Status s =
      reference ? quantd::FloatDequantizeReference(*q, dequant.data())
                : quantd::FloatDequantize(*q, dequant.data());
  if (!s.ok()) return s;
  for (const absl::Status& w :
       {WriteFile(dir + "/codes.bin", q->codes),
        WriteFile(dir + "/scales.f32", q->scales),
        WriteFile(dir + "/block_scales.bin", q->block_scales),
        WriteFile(dir + "/second_scales.f32", q->second_scales),
        WriteFile(dir + "/tensor.f32",
                  std::vector<float>{q->scale_offset, q->tensor_scale}),
        WriteFile(dir + "/dequant.f32", dequant)}) {
    if (!w.ok()) return w;
  }
  std::cout << "bits_per_weight " << quantd::FloatBitsPerWeight(*q) << "\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  const absl::Status s = Run(argc, argv);
  if (!s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  return 0;
}
