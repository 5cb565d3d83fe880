#include "kernels/quantize.h"

#include <algorithm>
#include <cassert>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/metrics_internal.h"

namespace quantd {
namespace {

// ---------------------------------------------------------------------------
// The scalar reference: this is the specification of the int<b> formats
// (proto message Scheme). Written plainly on purpose; every fast path is
// tested against it byte for byte.
//
// For each group (per tensor: all elements; per channel: one row; per group:
// group_size consecutive elements of a row):
//   symmetric:  amax = max|x|, qmax = 2^(b-1)-1, scale = amax / qmax (f32),
//               raised to FLT_MIN if smaller, inv = 1/scale,
//               q = clamp(round_half_even(x*inv), -(qmax+1), qmax),
//               stored field = q mod 2^b (two's complement), no zero point.
//   asymmetric: lo = min(min x, 0), hi = max(max x, 0), qmax = 2^b-1,
//               scale = (hi-lo)/qmax raised to FLT_MIN, inv = 1/scale,
//               zp = clamp(round_half_even(-lo*inv), 0, qmax),
//               q = clamp(round_half_even(x*inv) + zp, 0, qmax).
//   full range (symmetric, Scheme::full_range): compressed-tensors' /
//               llm-compressor's convention, from calculate_qparams
//               (quantization/utils/helpers.py) and _quantize / _dequantize
//               (quantization/lifecycle/forward_helpers.py):
//               scale = amax / ((2^b - 1) / 2) (one f32 division: amax / 7.5
//               at 4 bits, amax / 127.5 at 8), a scale of exactly 0 replaced
//               by FLT_EPSILON (torch.finfo(float32).eps, their
//               _get_dtype_eps; nonzero subnormal scales are kept),
//               q = round_half_even(clamp(x / scale, -2^(b-1), 2^(b-1) - 1))
//               (an f32 division, not a multiply by 1/scale), dequantized
//               q * scale as above. Since |x / scale| <= (2^b - 1) / 2 up
//               to rounding, clamping before or after rounding agree.
// Codes are then packed with PackCodes over the whole tensor.
// ---------------------------------------------------------------------------
void QuantizeIntReference(const float* src, QuantizedTensor& dst) {
  const Layout& layout = dst.layout;
  const int bits = layout.bits;
  const int64_t group_size = layout.group_size;
  const unsigned mask = (1u << bits) - 1;
  std::vector<uint8_t> codes(static_cast<size_t>(layout.num_elements));

  for (int64_t g = 0; g < layout.num_groups; ++g) {
    const float* x = src + g * group_size;
    uint8_t* q_out = codes.data() + g * group_size;
    if (layout.scheme.full_range) {
      const float qmin = -static_cast<float>(1 << (bits - 1));
      const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
      float amax = 0.0f;
      for (int64_t i = 0; i < group_size; ++i) {
        amax = std::max(amax, std::fabs(x[i]));
      }
      float scale = amax / (static_cast<float>((1 << bits) - 1) / 2.0f);
      if (scale == 0.0f) scale = FLT_EPSILON;
      for (int64_t i = 0; i < group_size; ++i) {
        const float q = std::nearbyint(std::clamp(x[i] / scale, qmin, qmax));
        q_out[i] = static_cast<uint8_t>(static_cast<unsigned>(static_cast<int>(q)) &
                                        mask);
      }
      dst.scales[g] = scale;
    } else if (layout.scheme.symmetric) {
      const int qmax = (1 << (bits - 1)) - 1;
      float amax = 0.0f;
      for (int64_t i = 0; i < group_size; ++i) {
        amax = std::max(amax, std::fabs(x[i]));
      }
      float scale = amax / static_cast<float>(qmax);
      if (scale < FLT_MIN) scale = FLT_MIN;
      const float inv = 1.0f / scale;
      for (int64_t i = 0; i < group_size; ++i) {
        int q = static_cast<int>(std::nearbyint(x[i] * inv));
        q = std::clamp(q, -(qmax + 1), qmax);
        q_out[i] = static_cast<uint8_t>(static_cast<unsigned>(q) & mask);
      }
      dst.scales[g] = scale;
    } else {
      const int qmax = (1 << bits) - 1;
      float lo = 0.0f;
      float hi = 0.0f;
      for (int64_t i = 0; i < group_size; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
      float scale = (hi - lo) / static_cast<float>(qmax);
      if (scale < FLT_MIN) scale = FLT_MIN;
      const float inv = 1.0f / scale;
      const int zp = std::clamp(static_cast<int>(std::nearbyint(-lo * inv)),
                                0, qmax);
      for (int64_t i = 0; i < group_size; ++i) {
        int q = static_cast<int>(std::nearbyint(x[i] * inv)) + zp;
        q = std::clamp(q, 0, qmax);
        q_out[i] = static_cast<uint8_t>(q);
      }
      dst.scales[g] = scale;
      dst.zero_points[g] = static_cast<uint8_t>(zp);
    }
  }
  PackCodes(codes.data(), layout.num_elements, bits, dst.codes.data());
}

void QuantizeIntFast(const float* src, QuantizedTensor& dst) {
  // Precondition (QuantizeFn): src is finite, so the index is always -1.
  (void)internal::SelectedQuantizeInt()(src, dst);
}

// The reference dequantizer (the specification, with the quantizer above):
// x = scale * (float)(q - zero_point), q the sign-extended field when
// symmetric (zero_point 0), the raw field when asymmetric. Writes elements
// [e0, e0 + m) to dst[0, m); e0 is a multiple of 8 (a byte of the stream).
void DequantizeIntRange(const QuantizedTensor& src, int64_t e0, int64_t m,
                        uint8_t* fields, float* dst) {
  const Layout& layout = src.layout;
  const int bits = layout.bits;
  const bool symmetric = layout.scheme.symmetric;
  const int shift = 8 - bits;
  UnpackCodes(src.codes.data() + e0 / 8 * bits, m, bits, fields);
  const bool indexed = layout.group_index;
  assert(!indexed || src.group_index.size() ==
                         static_cast<size_t>(layout.row_length));
  const int64_t groups_per_row =
      indexed ? layout.row_length / layout.group_size : 0;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t e = e0 + i;
    const int64_t g =
        indexed ? e / layout.row_length * groups_per_row +
                      src.group_index[static_cast<size_t>(e % layout.row_length)]
                : e / layout.group_size;
    int q;
    int zp = 0;
    if (symmetric) {
      // Sign-extend the b-bit two's complement field.
      q = static_cast<int8_t>(static_cast<uint8_t>(fields[i] << shift)) >>
          shift;
    } else {
      q = fields[i];
      zp = src.zero_points[g];
    }
    dst[i] = src.scales[g] * static_cast<float>(q - zp);
  }
}

// A multiple of 8 (chunks start on bytes) and the metrics block, so the
// scalar fused path sums exactly like ComputeErrorMetrics.
constexpr int64_t kDequantizeChunk =
    static_cast<int64_t>(internal::kMetricsBlock);
static_assert(kDequantizeChunk % 8 == 0);

void DequantizeIntReference(const QuantizedTensor& src, float* dst) {
  uint8_t fields[kDequantizeChunk];
  const int64_t n = src.layout.num_elements;
  for (int64_t e0 = 0; e0 < n; e0 += kDequantizeChunk) {
    DequantizeIntRange(src, e0, std::min(kDequantizeChunk, n - e0), fields,
                       dst + e0);
  }
}

void DequantizeIntFast(const QuantizedTensor& src, float* dst) {
  if (src.layout.group_index) {
    DequantizeIntReference(src, dst);
    return;
  }
  internal::SelectedDequantizeInt()(src, dst);
}

constexpr FormatTraits kFormats[] = {
    {"int2", 2, true, true, QuantizeIntReference, QuantizeIntFast,
     DequantizeIntFast, "2-bit integer affine, round to nearest"},
    {"int3", 3, true, true, QuantizeIntReference, QuantizeIntFast,
     DequantizeIntFast, "3-bit integer affine, round to nearest"},
    {"int4", 4, true, true, QuantizeIntReference, QuantizeIntFast,
     DequantizeIntFast, "4-bit integer affine, round to nearest"},
    {"int5", 5, true, true, QuantizeIntReference, QuantizeIntFast,
     DequantizeIntFast, "5-bit integer affine, round to nearest"},
    {"int6", 6, true, true, QuantizeIntReference, QuantizeIntFast,
     DequantizeIntFast, "6-bit integer affine, round to nearest"},
    {"int7", 7, true, true, QuantizeIntReference, QuantizeIntFast,
     DequantizeIntFast, "7-bit integer affine, round to nearest"},
    {"int8", 8, true, true, QuantizeIntReference, QuantizeIntFast,
     DequantizeIntFast, "8-bit integer affine, round to nearest"},
};

// Checks that `dst` is a consistent, fully sized int layout.
absl::Status ValidateDst(const QuantizedTensor& dst,
                         const FormatTraits** traits) {
  const Layout& layout = dst.layout;
  *traits = FindFormat(layout.scheme.format);
  if (*traits == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown format \"", layout.scheme.format, "\""));
  }
  if (layout.bits != (*traits)->bits) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout.bits is ", layout.bits, " but format ",
                     (*traits)->name, " has ", (*traits)->bits));
  }
  if (layout.num_elements < 1 || layout.group_size < 1 ||
      layout.num_groups < 1 ||
      layout.num_elements / layout.group_size != layout.num_groups ||
      layout.num_elements % layout.group_size != 0 ||
      layout.packed_bytes != (layout.num_elements * layout.bits + 7) / 8) {
    return absl::InvalidArgumentError(
        "inconsistent layout (build it with MakeLayout)");
  }
  const size_t groups = static_cast<size_t>(layout.num_groups);
  if (dst.codes.size() != static_cast<size_t>(layout.packed_bytes) ||
      dst.scales.size() != groups ||
      dst.zero_points.size() != (layout.scheme.symmetric ? 0 : groups)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination not sized for the layout (codes ", dst.codes.size(), "/",
        layout.packed_bytes, ", scales ", dst.scales.size(), "/", groups,
        ", zero points ", dst.zero_points.size(),
        "); use AllocateQuantized"));
  }
  return CheckGroupIndex(layout, dst.group_index);
}

// The quantizers write groups of consecutive columns: a reused destination
// gets the identity index back.
void ResetGroupIndex(QuantizedTensor& dst) {
  for (size_t c = 0; c < dst.group_index.size(); ++c) {
    dst.group_index[c] = static_cast<int32_t>(
        static_cast<int64_t>(c) / dst.layout.group_size);
  }
}

}  // namespace

namespace internal {

int64_t FirstNonFinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return i;
  }
  return -1;
}

int64_t QuantizeIntScalar(const float* src, QuantizedTensor& dst) {
  const int64_t bad = FirstNonFinite(src, dst.layout.num_elements);
  if (bad >= 0) return bad;
  QuantizeIntReference(src, dst);
  return -1;
}

void DequantizeIntScalar(const QuantizedTensor& src, float* dst) {
  DequantizeIntReference(src, dst);
}

ErrorMetrics DequantizeAndMeasureScalar(const QuantizedTensor& q,
                                        const float* src, float* w_hat) {
  uint8_t fields[kDequantizeChunk];
  float values[kDequantizeChunk];
  MetricSums sums;
  const int64_t n = q.layout.num_elements;
  for (int64_t e0 = 0; e0 < n; e0 += kDequantizeChunk) {
    const int64_t m = std::min(kDequantizeChunk, n - e0);
    float* out = w_hat != nullptr ? w_hat + e0 : values;
    DequantizeIntRange(q, e0, m, fields, out);
    AccumulateBlockReference(src + e0, out, static_cast<size_t>(m), sums);
  }
  ErrorMetrics metrics = FinishMetrics(sums, static_cast<size_t>(n));
  metrics.bits_per_weight = q.layout.BitsPerWeight();
  return metrics;
}

void AccumulateMetricsScalar(const float* w, const float* w_hat, int64_t n,
                             MetricSums& sums) {
  AccumulateBlockReference(w, w_hat, static_cast<size_t>(n), sums);
}

AccumulateMetricsFn SelectedAccumulateMetrics() {
  static const AccumulateMetricsFn fn = [] {
    switch (DetectedIsa()) {
      case Isa::kAvx512:
        return &AccumulateMetricsAvx512;
      case Isa::kAvx2:
        return &AccumulateMetricsAvx2;
      case Isa::kScalar:
        break;
    }
    return &AccumulateMetricsScalar;
  }();
  return fn;
}

DequantizeFn SelectedDequantizeInt() {
  static const DequantizeFn fn = [] {
    switch (DetectedIsa()) {
      case Isa::kAvx512:
        return &DequantizeIntAvx512;
      case Isa::kAvx2:
        return &DequantizeIntAvx2;
      case Isa::kScalar:
        break;
    }
    return &DequantizeIntScalar;
  }();
  return fn;
}

DequantizeAndMeasureFn SelectedDequantizeAndMeasure() {
  static const DequantizeAndMeasureFn fn = [] {
    switch (DetectedIsa()) {
      case Isa::kAvx512:
        return &DequantizeAndMeasureAvx512;
      case Isa::kAvx2:
        return &DequantizeAndMeasureAvx2;
      case Isa::kScalar:
        break;
    }
    return &DequantizeAndMeasureScalar;
  }();
  return fn;
}

CheckedQuantizeFn SelectedQuantizeInt() {
  static const CheckedQuantizeFn fn = [] {
    switch (DetectedIsa()) {
      case Isa::kAvx512:
        return &QuantizeIntAvx512;
      case Isa::kAvx2:
        return &QuantizeIntAvx2;
      case Isa::kScalar:
        break;
    }
    return &QuantizeIntScalar;
  }();
  return fn;
}

}  // namespace internal

absl::Span<const FormatTraits> FormatTable() { return kFormats; }

const FormatTraits* FindFormat(absl::string_view name) {
  for (const FormatTraits& f : kFormats) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

QuantizedTensor AllocateQuantized(const Layout& layout) {
  QuantizedTensor q;
  q.layout = layout;
  q.codes.resize(static_cast<size_t>(layout.packed_bytes));
  q.scales.resize(static_cast<size_t>(layout.num_groups));
  if (!layout.scheme.symmetric) {
    q.zero_points.resize(static_cast<size_t>(layout.num_groups));
  }
  if (layout.group_index && layout.group_size > 0) {
    q.group_index.resize(static_cast<size_t>(layout.row_length));
    ResetGroupIndex(q);
  }
  return q;
}

int64_t QuantizedWorkingSetBytes(const Layout& layout) {
  int64_t bytes = 0;
  if (layout.group_index) bytes += 4 * layout.row_length;  // GPTQ's g_idx
  bytes += layout.packed_bytes + layout.num_groups * 5;
  return bytes;
}

absl::Status CheckGroupIndex(const Layout& layout,
                             absl::Span<const int32_t> group_index) {
  if (!layout.group_index) {
    if (group_index.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(
        "a group index was given but the layout has none");
  }
  return CheckGroupIndex(layout.row_length, layout.group_size, group_index);
}

absl::Status CheckGroupIndex(int64_t row_length, int64_t group_size,
                             absl::Span<const int32_t> group_index) {
  if (group_size < 1 || row_length % group_size != 0 ||
      group_index.size() != static_cast<size_t>(row_length)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group index has ", group_index.size(), " entries; the layout needs ",
        row_length, " (groups of ", group_size, ")"));
  }
  const int64_t groups_per_row = row_length / group_size;
  for (size_t c = 0; c < group_index.size(); ++c) {
    if (group_index[c] < 0 || group_index[c] >= groups_per_row) {
      return absl::InvalidArgumentError(absl::StrCat(
          "group index of column ", c, " is ", group_index[c],
          " (must be in [0, ", groups_per_row, "))"));
    }
  }
  return absl::OkStatus();
}

absl::Status Quantize(const float* src, QuantizedTensor& dst) {
  const FormatTraits* traits = nullptr;
  absl::Status status = ValidateDst(dst, &traits);
  if (!status.ok()) return status;
  ResetGroupIndex(dst);
  const int64_t bad = internal::SelectedQuantizeInt()(src, dst);
  if (bad >= 0) return internal::NonFiniteError(bad, src[bad]);
  return absl::OkStatus();
}

absl::Status QuantizeWithScales(const float* src, absl::Span<const float> scales,
                                absl::Span<const uint8_t> zero_points,
                                QuantizedTensor& dst) {
  const FormatTraits* traits = nullptr;
  if (absl::Status status = ValidateDst(dst, &traits); !status.ok()) {
    return status;
  }
  ResetGroupIndex(dst);
  const Layout& layout = dst.layout;
  const bool symmetric = layout.scheme.symmetric;
  const auto groups = static_cast<size_t>(layout.num_groups);
  if (scales.size() != groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        scales.size(), " scales given; the layout has ", groups, " groups"));
  }
  if (zero_points.size() != (symmetric ? 0 : groups)) {
    return absl::InvalidArgumentError(absl::StrCat(
        zero_points.size(), " zero points given; a ",
        symmetric ? "symmetric layout takes none" : "the layout has ",
        symmetric ? "" : absl::StrCat(groups, " groups")));
  }
  const int bits = layout.bits;
  const int lo = symmetric ? -(1 << (bits - 1)) : 0;
  const int hi = symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  for (size_t g = 0; g < groups; ++g) {
    if (!std::isfinite(scales[g]) || !(scales[g] > 0.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scale of group ", g, " is ", scales[g], " (must be finite and > 0)"));
    }
    if (!symmetric && zero_points[g] > hi) {
      return absl::InvalidArgumentError(
          absl::StrCat("zero point of group ", g, " is ", zero_points[g],
                       " (must be in [0, ", hi, "])"));
    }
  }
  const int64_t bad = internal::FirstNonFinite(src, layout.num_elements);
  if (bad >= 0) return internal::NonFiniteError(bad, src[bad]);
  const unsigned mask = (1u << bits) - 1;
  const int64_t group_size = layout.group_size;
  std::vector<uint8_t> codes(static_cast<size_t>(layout.num_elements));
  for (size_t g = 0; g < groups; ++g) {
    const float scale = scales[g];
    const int zp = symmetric ? 0 : zero_points[g];
    const float* x = src + static_cast<int64_t>(g) * group_size;
    uint8_t* q_out = codes.data() + static_cast<int64_t>(g) * group_size;
    for (int64_t i = 0; i < group_size; ++i) {
      const float v = std::clamp(x[i] / scale, static_cast<float>(lo - zp),
                                 static_cast<float>(hi - zp));
      const int q = static_cast<int>(std::nearbyint(v)) + zp;
      q_out[i] = static_cast<uint8_t>(static_cast<unsigned>(q) & mask);
    }
    dst.scales[g] = scale;
    if (!symmetric) dst.zero_points[g] = zero_points[g];
  }
  PackCodes(codes.data(), layout.num_elements, bits, dst.codes.data());
  return absl::OkStatus();
}

absl::Status QuantizeReference(const float* src, QuantizedTensor& dst) {
  const FormatTraits* traits = nullptr;
  absl::Status status = ValidateDst(dst, &traits);
  if (!status.ok()) return status;
  ResetGroupIndex(dst);
  const int64_t bad = internal::QuantizeIntScalar(src, dst);
  if (bad >= 0) return internal::NonFiniteError(bad, src[bad]);
  return absl::OkStatus();
}

void Dequantize(const QuantizedTensor& src, float* dst) {
  const FormatTraits* traits = FindFormat(src.layout.scheme.format);
  if (traits == nullptr) return;
  traits->dequantize(src, dst);
}

void DequantizeReference(const QuantizedTensor& src, float* dst) {
  if (FindFormat(src.layout.scheme.format) == nullptr) return;
  DequantizeIntReference(src, dst);
}

ErrorMetrics DequantizeAndMeasure(const QuantizedTensor& q, const float* src,
                                  float* w_hat) {
  if (q.layout.group_index) {
    return internal::DequantizeAndMeasureScalar(q, src, w_hat);
  }
  return internal::SelectedDequantizeAndMeasure()(q, src, w_hat);
}

// Element i occupies bits [i*bits, (i+1)*bits) of a little-endian bit
// stream. Any 8 consecutive codes starting at a multiple of 8 fill exactly
// `bits` whole bytes: the loops below move 8 codes through one uint64.
void PackCodes(const uint8_t* codes, int64_t n, int bits, uint8_t* dst) {
  if (bits == 8) {
    if (n > 0) std::memcpy(dst, codes, static_cast<size_t>(n));
    return;
  }
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word = 0;
    for (int j = 0; j < 8; ++j) word |= (codes[i + j] & mask) << (j * bits);
    for (int k = 0; k < bits; ++k) *dst++ = static_cast<uint8_t>(word >> (8 * k));
  }
  // Tail of fewer than 8 codes: ceil(rest*bits/8) bytes.
  uint64_t word = 0;
  const int64_t rest = n - i;
  for (int64_t j = 0; j < rest; ++j) {
    word |= (codes[i + j] & mask) << (j * bits);
  }
  const int64_t tail_bytes = (rest * bits + 7) / 8;
  for (int64_t k = 0; k < tail_bytes; ++k) {
    *dst++ = static_cast<uint8_t>(word >> (8 * k));
  }
}

void UnpackCodes(const uint8_t* src, int64_t n, int bits, uint8_t* codes) {
  if (bits == 8) {
    if (n > 0) std::memcpy(codes, src, static_cast<size_t>(n));
    return;
  }
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word = 0;
    for (int k = 0; k < bits; ++k) word |= uint64_t{*src++} << (8 * k);
    for (int j = 0; j < 8; ++j) {
      codes[i + j] = static_cast<uint8_t>((word >> (j * bits)) & mask);
    }
  }
  const int64_t rest = n - i;
  const int64_t tail_bytes = (rest * bits + 7) / 8;
  uint64_t word = 0;
  for (int64_t k = 0; k < tail_bytes; ++k) word |= uint64_t{src[k]} << (8 * k);
  for (int64_t j = 0; j < rest; ++j) {
    codes[i + j] = static_cast<uint8_t>((word >> (j * bits)) & mask);
  }
}

}  // namespace quantd
