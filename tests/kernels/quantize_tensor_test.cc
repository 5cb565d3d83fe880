#include "kernels/quantize_tensor.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/parts.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

Layout LayoutOf(const char* scheme, std::vector<int64_t> shape) {
  absl::StatusOr<Scheme> s = ParseScheme(scheme);
  EXPECT_TRUE(s.ok()) << s.status();
  absl::StatusOr<Layout> layout = MakeLayout(*s, shape);
  EXPECT_TRUE(layout.ok()) << layout.status();
  return *layout;
}

// The numbers are those of the server's TensorWorkingSetBytes before each
// family stated its own share (server/quantize_job.cc at the merge of
// 'parts'), so a changed formula fails here.
TEST(WorkingSetBytesTest, EqualsTheFormulasPerFamily) {
  struct Case {
    const char* scheme;
    std::vector<int64_t> shape;
    DType dtype;
    OutputKind output;
    bool calibration;
    int64_t holdout_rows;
    int64_t bytes;
  };
  const Case cases[] = {
      // int: input 4n, codes n/2, 5 bytes per group of 128.
      {"int4_asym_g128", {64, 256}, DType::kF32, OutputKind::kPacked, false, 0,
       4 * 16384 + 8192 + 5 * 128},
      // int8 with a calibration set and 16 held-back rows (W8A8 check).
      {"int8_sym_channel", {32, 128}, DType::kBF16, OutputKind::kFakeQuant,
       true, 16, 161952},
      // ggml: input, f32 copy, dequantized values, importance, blocks.
      {"Q4_K", {4, 256}, DType::kF16, OutputKind::kPacked, false, 0,
       2 * 1024 + 4 * 1024 + 4 * 1024 + 4 * 256 + 576},
      {"Q8_0", {8, 64}, DType::kF32, OutputKind::kBoth, true, 16, 27424},
      // float: NF4 with double quantization (block and second scales).
      {"nf4_g64_dq", {16, 1024}, DType::kF32, OutputKind::kPacked, false, 0,
       4 * 16384 + 4 * 16384 + (8192 + 16384 + 9 * 256 + 4 * 1) + 8192},
      {"modelopt_nvfp4", {8, 256}, DType::kF32, OutputKind::kBoth, false, 0,
       21632},
      // An 8-bit float format counts the W8A8 check too (bits == 8).
      {"fp8_e4m3", {8, 256}, DType::kF32, OutputKind::kPacked, true, 8,
       314633},
      // codebook.
      {"kmeans4_g64", {8, 256}, DType::kF32, OutputKind::kPacked, false, 0,
       22528},
      {"pot3", {8, 256}, DType::kF32, OutputKind::kPacked, false, 0, 20296},
      // HQQ (f32 zero points).
      {"hqq4", {8, 256}, DType::kF32, OutputKind::kPacked, false, 0, 20896},
      // Methods.
      {"int4_asym_g128+gptq", {16, 256}, DType::kF32, OutputKind::kPacked,
       true, 0, 1411232},
      {"int4_g64+gptq(act_order,block=64)", {16, 256}, DType::kF32,
       OutputKind::kPacked, true, 0, 1408320},
      {"q4_k+gptq", {4, 256}, DType::kF32, OutputKind::kPacked, true, 0,
       1343040},
      {"int4_asym_g128+awq", {16, 256}, DType::kF32, OutputKind::kPacked, true,
       0, 649376},
      {"int8+smoothquant", {16, 256}, DType::kF16, OutputKind::kPacked, true,
       32, 686160},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scheme);
    const Layout layout = LayoutOf(c.scheme, c.shape);
    EXPECT_EQ(WorkingSetBytes(layout, c.dtype, c.output, c.calibration,
                              c.holdout_rows),
              c.bytes);
  }
}

}  // namespace
}  // namespace quantd
