// Command-line access to the codebook formats and HQQ, for the numpy
// reference tests (tests/e2e/python/test_nonuniform.py).
//
//   nonuniform_tool kmeans BITS GROUPING ROW_LENGTH [MAX_ITERATIONS [SEED]]
//   nonuniform_tool kmeans_reference BITS GROUPING ROW_LENGTH [...]
//   nonuniform_tool pow2 BITS GROUPING ROW_LENGTH
//   nonuniform_tool hqq BITS GROUP_SIZE ROW_LENGTH
//                   [LP_NORM BETA KAPPA ITERATIONS EARLY_STOP OPTIMIZE_SCALE
//                    MSE_GUARD]
//
// GROUPING is "tensor", "channel" or a group size. stdin: rows x ROW_LENGTH
// raw little-endian f32. stdout, raw little-endian and concatenated:
//   kmeans*, pow2: packed codes, the f32 codebooks, the f32 scales (pow2),
//                  then the dequantized f32 tensor (CodebookDequantize);
//   hqq:           packed codes, f32 scales, f32 zero points, then the
//                  dequantized f32 tensor (HqqDequantize).
// Exit status 2 and the status text on stderr on any error.
#include <cstdint>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/hqq.h"
#include "kernels/nonuniform.h"

namespace {

template <typename T>
void Write(const std::vector<T>& v) {
  std::cout.write(reinterpret_cast<const char*>(v.data()),
                  static_cast<std::streamsize>(v.size() * sizeof(T)));
}

absl::Status Int(const char* text, int64_t& out) {
  if (!absl::SimpleAtoi(text, &out)) {
    return absl::InvalidArgumentError(absl::StrCat("not an integer: ", text));
  }
  return absl::OkStatus();
}

absl::Status Run(int argc, char** argv) {
  if (argc < 5) {
    return absl::InvalidArgumentError(
        "usage: nonuniform_tool kmeans|kmeans_reference|pow2|hqq BITS "
        "GROUPING ROW_LENGTH [options...]");
  }
  const std::string mode = argv[1];
  int64_t bits = 0;
  int64_t row_length = 0;
  absl::Status s = Int(argv[2], bits);
  if (s.ok()) s = Int(argv[4], row_length);
  if (!s.ok()) return s;
  if (row_length < 1) return absl::InvalidArgumentError("ROW_LENGTH < 1");
  const std::vector<char> input((std::istreambuf_iterator<char>(std::cin)),
                                std::istreambuf_iterator<char>());
  const size_t row_bytes = static_cast<size_t>(row_length) * sizeof(float);
  if (input.empty() || input.size() % row_bytes != 0) {
    return absl::InvalidArgumentError("input is not a whole number of rows");
  }
  const int64_t rows = static_cast<int64_t>(input.size() / row_bytes);
  std::vector<float> src(static_cast<size_t>(rows * row_length));
  std::copy(input.begin(), input.end(), reinterpret_cast<char*>(src.data()));
  std::vector<float> out(src.size());

  if (mode == "hqq") {
    quantd::HqqOptions o;
    o.bits = static_cast<int>(bits);
    if (!Int(argv[3], o.group_size).ok()) {
      return absl::InvalidArgumentError("bad GROUP_SIZE");
    }
    if (argc == 12) {
      int64_t iterations = 0;
      int64_t early_stop = 0;
      int64_t optimize_scale = 0;
      int64_t mse_guard = 0;
      if (!absl::SimpleAtof(argv[5], &o.lp_norm) ||
          !absl::SimpleAtof(argv[6], &o.beta) ||
          !absl::SimpleAtof(argv[7], &o.kappa) ||
          !Int(argv[8], iterations).ok() || !Int(argv[9], early_stop).ok() ||
          !Int(argv[10], optimize_scale).ok() ||
          !Int(argv[11], mse_guard).ok()) {
        return absl::InvalidArgumentError("bad HQQ options");
      }
      o.iterations = static_cast<int>(iterations);
      o.early_stop = early_stop != 0;
      o.optimize_scale = optimize_scale != 0;
      o.mse_guard = mse_guard != 0;
    } else if (argc != 5) {
      return absl::InvalidArgumentError("hqq takes 0 or 7 options");
    }
    absl::StatusOr<quantd::HqqTensor> q =
        quantd::HqqQuantize(src.data(), rows, row_length, o);
    if (!q.ok()) return q.status();
    s = quantd::HqqDequantize(*q, out.data());
    if (!s.ok()) return s;
    Write(q->codes);
    Write(q->scales);
    Write(q->zero_points);
    Write(out);
    return absl::OkStatus();
  }

  quantd::CodebookOptions o;
  o.bits = static_cast<int>(bits);
  const std::string grouping = argv[3];
  if (grouping == "tensor") {
    o.granularity = quantd::Granularity::kPerTensor;
  } else if (grouping == "channel") {
    o.granularity = quantd::Granularity::kPerChannel;
  } else {
    o.granularity = quantd::Granularity::kPerGroup;
    s = Int(argv[3], o.group_size);
    if (!s.ok()) return s;
  }
  if (argc > 5) {
    int64_t iterations = 0;
    s = Int(argv[5], iterations);
    if (!s.ok()) return s;
    o.max_iterations = static_cast<int>(iterations);
  }
  if (argc > 6 && !absl::SimpleAtoi(argv[6], &o.seed)) {
    return absl::InvalidArgumentError("bad SEED");
  }
  absl::StatusOr<quantd::CodebookTensor> q;
  if (mode == "kmeans") {
    q = quantd::KMeansQuantize(src.data(), rows, row_length, o);
  } else if (mode == "kmeans_reference") {
    q = quantd::KMeansQuantizeReference(src.data(), rows, row_length, o);
  } else if (mode == "pow2") {
    q = quantd::PowerOfTwoQuantize(src.data(), rows, row_length, o);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown mode ", mode));
  }
  if (!q.ok()) return q.status();
  s = quantd::CodebookDequantize(*q, out.data());
  if (!s.ok()) return s;
  Write(q->codes);
  Write(q->codebooks);
  Write(q->scales);
  Write(out);
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
