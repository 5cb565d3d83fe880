// Command-line access to the ggml K-quants' block quantizers, for the
// Python conformance tests (tests/e2e/python/test_ggml_kquants_conformance.py).
//
//   ggml_kquants_tool reference|avx2 Q4_K ROW_LENGTH [IMATRIX] < in.f32 > out.bin
//   ggml_kquants_tool dequantize Q4_K ROW_LENGTH < in.bin > out.f32
//
// Raw little-endian bytes on stdin/stdout: f32 rows of ROW_LENGTH (a
// multiple of 256) or ggml blocks. IMATRIX is a file of ROW_LENGTH f32
// importance weights, shared by every row (ggml's quantize_qX_K). `avx2`
// exits with status 3 on a CPU without AVX2. Exit status 2 and a message on
// stderr on any other error.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/isa_kernels.h"

namespace {

struct KQuant {
  const char* name;
  int block_bytes;
  quantd::GgmlQuantizeFn reference;
  quantd::GgmlQuantizeFn avx2;
  quantd::GgmlDequantizeFn dequantize;
};

const KQuant kKQuants[] = {
    {"Q2_K", 84, quantd::internal::GgmlQuantizeQ2_KReference,
     quantd::internal::GgmlQuantizeQ2_KAvx2, quantd::internal::GgmlDequantizeQ2_K},
    {"Q3_K", 110, quantd::internal::GgmlQuantizeQ3_KReference,
     quantd::internal::GgmlQuantizeQ3_KAvx2, quantd::internal::GgmlDequantizeQ3_K},
    {"Q4_K", 144, quantd::internal::GgmlQuantizeQ4_KReference,
     quantd::internal::GgmlQuantizeQ4_KAvx2, quantd::internal::GgmlDequantizeQ4_K},
    {"Q5_K", 176, quantd::internal::GgmlQuantizeQ5_KReference,
     quantd::internal::GgmlQuantizeQ5_KAvx2, quantd::internal::GgmlDequantizeQ5_K},
    {"Q6_K", 210, quantd::internal::GgmlQuantizeQ6_KReference,
     quantd::internal::GgmlQuantizeQ6_KAvx2, quantd::internal::GgmlDequantizeQ6_K},
};

std::vector<char> ReadAll(std::istream& in) {
  return std::vector<char>(std::istreambuf_iterator<char>(in),
                           std::istreambuf_iterator<char>());
}

int Fail(const std::string& message) {
  std::cerr << message << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  if (argc < 4 || argc > 5) {
    return Fail("usage: ggml_kquants_tool reference|avx2|dequantize TYPE "
                "ROW_LENGTH [IMATRIX]");
  }
  const std::string mode = argv[1];
  const KQuant* k = nullptr;
  for (const KQuant& c : kKQuants) {
    if (std::string(c.name) == argv[2]) k = &c;
  }
  if (k == nullptr) return Fail(std::string("unknown type ") + argv[2]);
  const int64_t row_length = std::atoll(argv[3]);
  if (row_length < 1 || row_length % quantd::kGgmlBlock256 != 0) {
    return Fail("ROW_LENGTH must be a positive multiple of 256");
  }
  const int64_t blocks_per_row = row_length / quantd::kGgmlBlock256;
  const int64_t row_bytes = blocks_per_row * k->block_bytes;
  const std::vector<char> input = ReadAll(std::cin);
  if (mode == "dequantize") {
    if (input.size() % static_cast<size_t>(row_bytes) != 0) {
      return Fail("input is not a whole number of rows");
    }
    const int64_t rows = static_cast<int64_t>(input.size()) / row_bytes;
    std::vector<float> out(static_cast<size_t>(rows * row_length));
    k->dequantize(reinterpret_cast<const uint8_t*>(input.data()),
                  rows * blocks_per_row, out.data());
    std::cout.write(reinterpret_cast<const char*>(out.data()),
                    static_cast<std::streamsize>(out.size() * sizeof(float)));
    return std::cout.good() ? 0 : 2;
  }
  quantd::GgmlQuantizeFn fn = nullptr;
  if (mode == "reference") {
    fn = k->reference;
  } else if (mode == "avx2") {
    if (quantd::internal::CpuIsa() < quantd::Isa::kAvx2) return 3;
    fn = k->avx2;
  } else {
    return Fail("unknown mode " + mode);
  }
  const size_t row_f32_bytes = static_cast<size_t>(row_length) * sizeof(float);
  if (input.size() % row_f32_bytes != 0) {
    return Fail("input is not a whole number of rows");
  }
  const int64_t rows = static_cast<int64_t>(input.size() / row_f32_bytes);
  std::vector<float> src(static_cast<size_t>(rows * row_length));
  std::copy(input.begin(), input.end(), reinterpret_cast<char*>(src.data()));
  std::vector<float> importance;
  if (argc == 5) {
    std::ifstream file(argv[4], std::ios::binary);
    const std::vector<char> bytes = ReadAll(file);
    if (bytes.size() != row_f32_bytes) return Fail("IMATRIX must hold ROW_LENGTH f32");
    importance.resize(static_cast<size_t>(row_length));
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(importance.data()));
  }
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    fn(src.data() + r * row_length, blocks_per_row,
       importance.empty() ? nullptr : importance.data(), out.data() + r * row_bytes);
  }
  std::cout.write(reinterpret_cast<const char*>(out.data()),
                  static_cast<std::streamsize>(out.size()));
  return std::cout.good() ? 0 : 2;
}
