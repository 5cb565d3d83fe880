// One tensor through the kernels, whatever its layout's family: how much
// memory that takes (WorkingSetBytes), summed from each family's own
// statement of what it allocates beside the tensor.
//
//   absl::StatusOr<Layout> layout = MakeLayout(*ParseScheme("q4_k"), {4096, 4096});
//   int64_t bytes = WorkingSetBytes(*layout, DType::kBF16, OutputKind::kPacked);
//
// Pure functions: thread-safe; nothing here owns memory beyond its result.
#ifndef QUANTD_KERNELS_QUANTIZE_TENSOR_H_
#define QUANTD_KERNELS_QUANTIZE_TENSOR_H_

#include <cstdint>

#include "kernels/parts.h"
#include "kernels/scheme.h"

namespace quantd {

// Bytes a tensor holds from header to last response: received bytes, an f32
// copy when the input is F16/BF16, the dequantized (fake-quant) values when
// `output` asks for them, codes, scales and zero points
// (QuantizedWorkingSetBytes). A block format always dequantizes the whole
// tensor to measure it, and may hold row_length importance weights
// (GgmlWorkingSetBytes). The float, codebook and HQQ formats also always
// dequantize, and hold the kernel's result beside the preallocated parts,
// their extra parts and one byte per element of unpacked codes
// (FloatWorkingSetBytes, CodebookWorkingSetBytes, HqqWorkingSetBytes). With
// a calibration set (`calibration`), also what measuring the output error
// takes: the dequantized values, G rounded to f32 and two GEMM panels
// (CalibrationWorkingSetBytes). Plus the working set of the scheme's method
// (GPTQ: H and its factor in f64, an f32 copy of W; AWQ, SmoothQuant: G in
// f32, W diag(s) and a trial W_hat: GptqWorkingSetBytes,
// AwqWorkingSetBytes, SmoothQuantWorkingSetBytes). With `holdout_rows` held
// back by the set, an int8 tensor's integer-only check also holds those
// rows' codes and three outputs (f32 reference, integer-only,
// weights-only) and their s32 accumulators (W8A8CheckWorkingSetBytes).
// What the server's MemoryBudget reserves per tensor.
int64_t WorkingSetBytes(const Layout& layout, DType dtype, OutputKind output,
                        bool calibration = false, int64_t holdout_rows = 0);

}  // namespace quantd

#endif  // QUANTD_KERNELS_QUANTIZE_TENSOR_H_
