#include "kernels/quantize_tensor.h"

#include "kernels/awq.h"
#include "kernels/calibration.h"
#include "kernels/convert.h"
#include "kernels/float_formats.h"
#include "kernels/ggml_formats.h"
#include "kernels/gptq.h"
#include "kernels/hqq.h"
#include "kernels/nonuniform.h"
#include "kernels/quantize.h"
#include "kernels/smoothquant.h"
#include "kernels/w8a8.h"

namespace quantd {

int64_t WorkingSetBytes(const Layout& layout, DType dtype, OutputKind output,
                        bool calibration, int64_t holdout_rows) {
  const int64_t n = layout.num_elements;
  int64_t bytes = n * DTypeSize(dtype);  // received
  if (dtype != DType::kF32) bytes += 4 * n;  // f32 copy
  const bool other = layout.kind == LayoutKind::kFloat ||
                     layout.kind == LayoutKind::kCodebook ||
                     layout.kind == LayoutKind::kHqq;
  if (output != OutputKind::kPacked || layout.IsBlockFormat() || other ||
      calibration) {
    bytes += 4 * n;  // dequantized values
  }
  switch (layout.kind) {
    case LayoutKind::kInt:
      break;
    case LayoutKind::kGgmlBlock:
      bytes += GgmlWorkingSetBytes(layout);
      break;
    case LayoutKind::kFloat:
      bytes += FloatWorkingSetBytes(layout);
      break;
    case LayoutKind::kCodebook:
      bytes += CodebookWorkingSetBytes(layout);
      break;
    case LayoutKind::kHqq:
      bytes += HqqWorkingSetBytes(layout);
      break;
  }
  if (calibration) bytes += CalibrationWorkingSetBytes(layout);
  if (calibration && holdout_rows > 0 && !layout.IsBlockFormat() &&
      layout.bits == 8) {
    bytes += W8A8CheckWorkingSetBytes(layout, holdout_rows);
  }
  bytes += QuantizedWorkingSetBytes(layout);
  switch (layout.scheme.method.method) {
    case Method::kRtn:
      break;
    case Method::kGptq:
      bytes += GptqWorkingSetBytes(layout);
      break;
    case Method::kAwq:
      bytes += AwqWorkingSetBytes(layout);
      break;
    case Method::kSmoothQuant:
      bytes += SmoothQuantWorkingSetBytes(layout);
      break;
  }
  return bytes;
}

}  // namespace quantd
