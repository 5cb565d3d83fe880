// Scalar references of the ggml block formats (the specification; see
// ggml_formats.h for what bit-exact means) and the format table.
//
// Each reference follows one routine of llama.cpp's ggml/src/ggml-quants.c,
// named in its comment, operation for operation: same f32 expressions in the
// same order, same comparisons (strict or not) and so the same tie breaking.
#include "kernels/ggml_formats.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/convert.h"
#include "kernels/cpu.h"
#include "kernels/internal/ggml_kernels.h"
#include "kernels/internal/isa_kernels.h"

namespace quantd {

float GgmlE8m0ToFloatHalf(uint8_t e) {
  const uint32_t bits =
      e < 2 ? uint32_t{0x00200000} << e : static_cast<uint32_t>(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

namespace internal {
namespace {

void StoreHalf(uint16_t h, uint8_t* dst) { std::memcpy(dst, &h, 2); }
float LoadHalf(const uint8_t* src) {
  uint16_t h;
  std::memcpy(&h, src, 2);
  return HalfToFloat(h);
}

// (int8_t)v in C, as X86TruncToByte defines it.
int CastToInt8(float v) { return static_cast<int8_t>(X86TruncToByte(v)); }

// The signed element of largest magnitude, the first one on ties; +0 when
// all are zero (ggml's `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`
// starting from 0).
float SignedAbsMax(const float* x, int n) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// ggml's min/max loop of Q4_1/Q5_1: first minimum and first maximum win
// (which matters only for -0 against +0).
void MinMax(const float* x, int n, float& min, float& max) {
  min = FLT_MAX;
  max = -FLT_MAX;
  for (int j = 0; j < n; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
}

// Index of the table value nearest to x in the sorted 16-entry `values`:
// the largest i with 2x >= values[i-1] + values[i], else 0. Exact (the
// doubled x and the integer sum are compared without rounding), ties to the
// upper value. ggml's best_index_int8.
int BestIndexSorted16(const int8_t* values, float x) {
  const float x2 = x + x;
  int index = 0;
  for (int step = 8; step > 0; step >>= 1) {
    const int j = index + step;
    if (x2 >= static_cast<float>(values[j - 1] + values[j])) index = j;
  }
  return index;
}

// ggml's best_index_mxfp4: first entry of least |value * e - x|.
int BestIndexMxfp4(float x, float e) {
  int best = 0;
  float best_err = std::fabs(static_cast<float>(kGgmlMxfp4Values[0]) * e - x);
  for (int i = 1; i < 16; ++i) {
    const float err = std::fabs(static_cast<float>(kGgmlMxfp4Values[i]) * e - x);
    if (err < best_err) {
      best = i;
      best_err = err;
    }
  }
  return best;
}

}  // namespace

// ggml: quantize_row_q4_0_ref.
void GgmlQuantizeQ4_0Reference(const float* src, int64_t num_blocks,
                               const float* /*importance*/, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ4_0);
    const float max = SignedAbsMax(x, 32);
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreHalf(FloatToHalf(d), y);
    for (int j = 0; j < 16; ++j) {
      const int xi0 = std::min(15, CastToInt8(x[j] * id + 8.5f));
      const int xi1 = std::min(15, CastToInt8(x[16 + j] * id + 8.5f));
      // C stores xi0, xi1 as uint8_t, then or-s xi1 << 4 into the byte.
      y[2 + j] = static_cast<uint8_t>(static_cast<uint8_t>(xi0) |
                                      (static_cast<uint8_t>(xi1) << 4));
    }
  }
}

// ggml: quantize_row_q4_1_ref.
void GgmlQuantizeQ4_1Reference(const float* src, int64_t num_blocks,
                               const float* /*importance*/, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ4_1);
    float min, max;
    MinMax(x, 32, min, max);
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreHalf(FloatToHalf(d), y);
    StoreHalf(FloatToHalf(min), y + 2);
    for (int j = 0; j < 16; ++j) {
      const int xi0 = std::min(15, CastToInt8((x[j] - min) * id + 0.5f));
      const int xi1 = std::min(15, CastToInt8((x[16 + j] - min) * id + 0.5f));
      y[4 + j] = static_cast<uint8_t>(static_cast<uint8_t>(xi0) |
                                      (static_cast<uint8_t>(xi1) << 4));
    }
  }
}

// ggml: quantize_row_q5_0_ref.
void GgmlQuantizeQ5_0Reference(const float* src, int64_t num_blocks,
                               const float* /*importance*/, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ5_0);
    const float max = SignedAbsMax(x, 32);
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreHalf(FloatToHalf(d), y);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const auto xi0 = static_cast<uint8_t>(
          std::min(31, CastToInt8(x[j] * id + 16.5f)));
      const auto xi1 = static_cast<uint8_t>(
          std::min(31, CastToInt8(x[16 + j] * id + 16.5f)));
      y[6 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << j;
      qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(y + 2, &qh, 4);
  }
}

// ggml: quantize_row_q5_1_ref (no clamp to 31: ggml casts straight to
// uint8_t).
void GgmlQuantizeQ5_1Reference(const float* src, int64_t num_blocks,
                               const float* /*importance*/, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ5_1);
    float min, max;
    MinMax(x, 32, min, max);
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreHalf(FloatToHalf(d), y);
    StoreHalf(FloatToHalf(min), y + 2);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const uint8_t xi0 = X86TruncToByte((x[j] - min) * id + 0.5f);
      const uint8_t xi1 = X86TruncToByte((x[16 + j] - min) * id + 0.5f);
      y[8 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << j;
      qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(y + 4, &qh, 4);
  }
}

// ggml: quantize_row_q8_0_ref (roundf: half away from zero).
void GgmlQuantizeQ8_0Reference(const float* src, int64_t num_blocks,
                               const float* /*importance*/, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ8_0);
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreHalf(FloatToHalf(d), y);
    for (int j = 0; j < 32; ++j) y[2 + j] = X86TruncToByte(std::round(x[j] * id));
  }
}

// ggml: quantize_iq4_nl -> quantize_row_iq4_nl_impl(32, 32, 16, ..., ntry 7),
// the path llama-quantize takes (not quantize_row_iq4_nl_ref, ntry -1).
// Without importance the weights are x^2; with it, w * sqrt(sigma2 + x^2),
// sigma2 = 2 * mean(x^2) of the block.
void GgmlQuantizeIq4NlReference(const float* src, int64_t num_blocks,
                                const float* importance, uint8_t* dst) {
  constexpr int kNtry = 7;
  constexpr float kGroupMaxEps = 1e-15f;
  const int8_t* values = kGgmlIq4NlValues;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    const float* qw = importance != nullptr ? importance + b * 32 : nullptr;
    uint8_t* y = dst + b * sizeof(GgmlBlockIq4Nl);
    float sigma2 = 0.0f;
    for (int j = 0; j < 32; ++j) sigma2 += x[j] * x[j];
    sigma2 *= 2.0f / 32.0f;
    std::array<float, 32> weight;
    for (int j = 0; j < 32; ++j) {
      weight[j] = qw != nullptr ? qw[j] * std::sqrt(sigma2 + x[j] * x[j])
                                : x[j] * x[j];
    }
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    float scale = 0.0f;
    if (!(amax < kGroupMaxEps)) {
      float d = -max / static_cast<float>(values[0]);
      float id = 1.0f / d;
      float sumqx = 0.0f;
      float sumq2 = 0.0f;
      for (int j = 0; j < 32; ++j) {
        const float q = values[BestIndexSorted16(values, id * x[j])];
        sumqx += weight[j] * q * x[j];
        sumq2 += weight[j] * q * q;
      }
      d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
      float best = d * sumqx;
      for (int itry = -kNtry; itry <= kNtry; ++itry) {
        id = static_cast<float>(itry + values[0]) / max;
        sumqx = 0.0f;
        sumq2 = 0.0f;
        for (int j = 0; j < 32; ++j) {
          const float q = values[BestIndexSorted16(values, id * x[j])];
          sumqx += weight[j] * q * x[j];
          sumq2 += weight[j] * q * q;
        }
        if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
          d = sumqx / sumq2;
          best = d * sumqx;
        }
      }
      scale = d;
    }
    StoreHalf(FloatToHalf(scale), y);
    // The codes come from the f32 scale, not the stored f16 one.
    const float id = scale != 0.0f ? 1.0f / scale : 0.0f;
    for (int j = 0; j < 16; ++j) {
      const int l0 = BestIndexSorted16(values, id * x[j]);
      const int l1 = BestIndexSorted16(values, id * x[16 + j]);
      y[2 + j] = static_cast<uint8_t>(l0 | (l1 << 4));
    }
  }
}

// ggml: quantize_row_mxfp4_ref (log2f of the block maximum picks the
// exponent; a C cast to uint8_t stores it).
void GgmlQuantizeMxfp4Reference(const float* src, int64_t num_blocks,
                                const float* /*importance*/, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockMxfp4);
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (amax < std::fabs(x[j])) amax = std::fabs(x[j]);
    }
    const uint8_t e =
        amax > 0.0f
            ? X86TruncToByte(std::floor(std::log2(amax)) - 2.0f + 127.0f)
            : uint8_t{0};
    const float d = GgmlE8m0ToFloatHalf(e);
    y[0] = e;
    for (int j = 0; j < 16; ++j) {
      const int l0 = BestIndexMxfp4(x[j], d);
      const int l1 = BestIndexMxfp4(x[16 + j], d);
      y[1 + j] = static_cast<uint8_t>(l0 | (l1 << 4));
    }
  }
}

namespace {

// Dequantizers: ggml's dequantize_row_*, the same f32 operations.
void DequantizeQ4_0(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 18, dst += 32) {
    const float d = LoadHalf(src);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>((src[2 + j] & 0x0F) - 8) * d;
      dst[16 + j] = static_cast<float>((src[2 + j] >> 4) - 8) * d;
    }
  }
}

void DequantizeQ4_1(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 20, dst += 32) {
    const float d = LoadHalf(src);
    const float m = LoadHalf(src + 2);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>(src[4 + j] & 0x0F) * d + m;
      dst[16 + j] = static_cast<float>(src[4 + j] >> 4) * d + m;
    }
  }
}

void DequantizeQ5_0(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 22, dst += 32) {
    const float d = LoadHalf(src);
    uint32_t qh;
    std::memcpy(&qh, src + 2, 4);
    for (int j = 0; j < 16; ++j) {
      const int h0 = static_cast<int>((qh >> j) << 4 & 0x10);
      const int h1 = static_cast<int>((qh >> (j + 12)) & 0x10);
      dst[j] = static_cast<float>(((src[6 + j] & 0x0F) | h0) - 16) * d;
      dst[16 + j] = static_cast<float>(((src[6 + j] >> 4) | h1) - 16) * d;
    }
  }
}

void DequantizeQ5_1(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 24, dst += 32) {
    const float d = LoadHalf(src);
    const float m = LoadHalf(src + 2);
    uint32_t qh;
    std::memcpy(&qh, src + 4, 4);
    for (int j = 0; j < 16; ++j) {
      const int h0 = static_cast<int>((qh >> j) << 4 & 0x10);
      const int h1 = static_cast<int>((qh >> (j + 12)) & 0x10);
      dst[j] = static_cast<float>((src[8 + j] & 0x0F) | h0) * d + m;
      dst[16 + j] = static_cast<float>((src[8 + j] >> 4) | h1) * d + m;
    }
  }
}

void DequantizeQ8_0(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 34, dst += 32) {
    const float d = LoadHalf(src);
    for (int j = 0; j < 32; ++j) {
      dst[j] = static_cast<float>(static_cast<int8_t>(src[2 + j])) * d;
    }
  }
}

void DequantizeIq4Nl(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 18, dst += 32) {
    const float d = LoadHalf(src);
    for (int j = 0; j < 16; ++j) {
      dst[j] = d * static_cast<float>(kGgmlIq4NlValues[src[2 + j] & 0x0F]);
      dst[16 + j] = d * static_cast<float>(kGgmlIq4NlValues[src[2 + j] >> 4]);
    }
  }
}

void DequantizeMxfp4(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 17, dst += 32) {
    const float d = GgmlE8m0ToFloatHalf(src[0]);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>(kGgmlMxfp4Values[src[1 + j] & 0x0F]) * d;
      dst[16 + j] = static_cast<float>(kGgmlMxfp4Values[src[1 + j] >> 4]) * d;
    }
  }
}

GgmlQuantizeFn Pick(GgmlQuantizeFn reference, GgmlQuantizeFn avx2,
                    GgmlQuantizeFn avx512) {
  switch (DetectedIsa()) {
    case Isa::kAvx512:
      return avx512 != nullptr ? avx512 : avx2 != nullptr ? avx2 : reference;
    case Isa::kAvx2:
      return avx2 != nullptr ? avx2 : reference;
    case Isa::kScalar:
      break;
  }
  return reference;
}

}  // namespace
}  // namespace internal

absl::Span<const GgmlFormatTraits> GgmlFormatTable() {
  using namespace internal;  // NOLINT: the kernels of this table
  static const std::array<GgmlFormatTraits, 7> table = {{
      {GgmlType::kQ4_0, "Q4_0", 32, 18, GgmlQuantizeQ4_0Reference,
       Pick(GgmlQuantizeQ4_0Reference, GgmlQuantizeQ4_0Avx2,
            GgmlQuantizeQ4_0Avx512),
       DequantizeQ4_0, false, "4-bit symmetric, f16 scale, 4.5 bpw"},
      {GgmlType::kQ4_1, "Q4_1", 32, 20, GgmlQuantizeQ4_1Reference,
       Pick(GgmlQuantizeQ4_1Reference, GgmlQuantizeQ4_1Avx2,
            GgmlQuantizeQ4_1Avx512),
       DequantizeQ4_1, false, "4-bit with f16 scale and minimum, 5 bpw"},
      {GgmlType::kQ5_0, "Q5_0", 32, 22, GgmlQuantizeQ5_0Reference,
       Pick(GgmlQuantizeQ5_0Reference, GgmlQuantizeQ5_0Avx2,
            GgmlQuantizeQ5_0Avx512),
       DequantizeQ5_0, false, "5-bit symmetric, f16 scale, 5.5 bpw"},
      {GgmlType::kQ5_1, "Q5_1", 32, 24, GgmlQuantizeQ5_1Reference,
       GgmlQuantizeQ5_1Reference, DequantizeQ5_1, false,
       "5-bit with f16 scale and minimum, 6 bpw"},
      {GgmlType::kQ8_0, "Q8_0", 32, 34, GgmlQuantizeQ8_0Reference,
       Pick(GgmlQuantizeQ8_0Reference, GgmlQuantizeQ8_0Avx2,
            GgmlQuantizeQ8_0Avx512),
       DequantizeQ8_0, false, "8-bit symmetric, f16 scale, 8.5 bpw"},
      {GgmlType::kIq4Nl, "IQ4_NL", 32, 18, GgmlQuantizeIq4NlReference,
       GgmlQuantizeIq4NlReference, DequantizeIq4Nl, true,
       "4-bit non-linear table, searched f16 scale, 4.5 bpw"},
      {GgmlType::kMxfp4, "MXFP4", 32, 17, GgmlQuantizeMxfp4Reference,
       GgmlQuantizeMxfp4Reference, DequantizeMxfp4, false,
       "OCP MX FP4 (E2M1) with an E8M0 block exponent, 4.25 bpw"},
  }};
  return table;
}

const GgmlFormatTraits* FindGgmlFormat(absl::string_view name) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    if (absl::EqualsIgnoreCase(f.name, name)) return &f;
  }
  return nullptr;
}

const GgmlFormatTraits* FindGgmlFormat(GgmlType type) {
  for (const GgmlFormatTraits& f : GgmlFormatTable()) {
    if (f.type == type) return &f;
  }
  return nullptr;
}

absl::StatusOr<int64_t> GgmlRowBytes(const GgmlFormatTraits& format,
                                     int64_t row_length) {
  if (row_length < 1 || row_length % format.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        format.name, ": row length ", row_length,
        " is not a positive multiple of the block size ", format.block_size));
  }
  return row_length / format.block_size * format.block_bytes;
}

namespace {

absl::Status QuantizeWith(const GgmlFormatTraits& format, GgmlQuantizeFn fn,
                          const float* src, int64_t rows, int64_t row_length,
                          const float* importance, uint8_t* dst) {
  absl::StatusOr<int64_t> row_bytes = GgmlRowBytes(format, row_length);
  if (!row_bytes.ok()) return row_bytes.status();
  if (rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(format.name, ": rows ", rows, " is negative"));
  }
  if (importance != nullptr && !format.uses_importance &&
      format.type != GgmlType::kQ8_0 && format.type != GgmlType::kMxfp4) {
    return absl::UnimplementedError(absl::StrCat(
        format.name, ": ggml's importance-matrix path is not implemented"));
  }
  const int64_t n = rows * row_length;
  if (int64_t bad = internal::FirstNonFinite(src, n); bad >= 0) {
    return internal::NonFiniteError(bad, src[bad]);
  }
  const int64_t blocks_per_row = row_length / format.block_size;
  if (importance == nullptr || !format.uses_importance) {
    fn(src, rows * blocks_per_row, nullptr, dst);
    return absl::OkStatus();
  }
  for (int64_t r = 0; r < rows; ++r) {
    fn(src + r * row_length, blocks_per_row, importance, dst + r * *row_bytes);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status GgmlQuantize(const GgmlFormatTraits& format, const float* src,
                          int64_t rows, int64_t row_length,
                          const float* importance, uint8_t* dst) {
  return QuantizeWith(format, format.fast, src, rows, row_length, importance,
                      dst);
}

absl::Status GgmlQuantizeReference(const GgmlFormatTraits& format,
                                   const float* src, int64_t rows,
                                   int64_t row_length, const float* importance,
                                   uint8_t* dst) {
  return QuantizeWith(format, format.reference, src, rows, row_length,
                      importance, dst);
}

absl::Status GgmlDequantize(const GgmlFormatTraits& format,
                            const uint8_t* src, int64_t rows,
                            int64_t row_length, float* dst) {
  absl::StatusOr<int64_t> row_bytes = GgmlRowBytes(format, row_length);
  if (!row_bytes.ok()) return row_bytes.status();
  if (rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(format.name, ": rows ", rows, " is negative"));
  }
  format.dequantize(src, rows * (row_length / format.block_size), dst);
  return absl::OkStatus();
}

}  // namespace quantd
