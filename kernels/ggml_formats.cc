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
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/convert.h"
#include "kernels/cpu.h"
#include "kernels/internal/ggml_kernels.h"
#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/ggml_search.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/metrics_internal.h"
#include "kernels/scheme.h"

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

// The importance paths of Q4_0/Q4_1/Q5_0/Q5_1 (ggml's
// quantize_row_q4_0_impl etc. with quant_weights). `src` is one row of
// num_blocks blocks: the weights use the row's mean square,
// qw[j] * sqrt(sigma2 + x[j]^2) with sigma2 = sum(x^2) / row_length.
float RowSigma2(const float* x, int64_t n) {
  float sum_x2 = 0.0f;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / static_cast<float>(n);
}

void ImportanceWeights(const float* x, const float* qw, float sigma2,
                       float* weight) {
  for (int j = 0; j < 32; ++j) {
    weight[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
  }
}

// Bits 0-3 of the 32 codes as nibbles at qs, bit 4 (Q5) as qh at qh.
void PackCodes(const uint8_t* L, uint8_t* qs, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
    h |= ((L[j] & 0x10u) >> 4) << j;
    h |= ((L[j + 16] & 0x10u) >> 4) << (j + 16);
  }
  if (qh != nullptr) std::memcpy(qh, &h, 4);
}

// ggml: quantize_row_q4_0_impl (nmax 8) / quantize_row_q5_0_impl (nmax 16):
// make_qx_quants(32, nmax, x, L, rmse_type 1, weights).
void SymmetricImportance(const float* src, int64_t num_blocks,
                         const float* importance, int nmax, int block_bytes,
                         uint8_t* dst) {
  const float sigma2 = RowSigma2(src, num_blocks * 32);
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * block_bytes;
    std::array<float, 32> weight;
    ImportanceWeights(x, importance + b * 32, sigma2, weight.data());
    std::array<int8_t, 32> L;
    const float d = GgmlMakeQxQuants(32, nmax, x, L.data(), 1, weight.data());
    StoreHalf(FloatToHalf(d), y);
    std::array<uint8_t, 32> codes;
    for (int j = 0; j < 32; ++j) codes[j] = static_cast<uint8_t>(L[j]);
    if (nmax == 8) {
      PackCodes(codes.data(), y + 2, nullptr);
    } else {
      PackCodes(codes.data(), y + 6, y + 2);
    }
  }
}

// ggml: quantize_row_q4_1_impl (nmax 15) / quantize_row_q5_1_impl
// (nmax 31): make_qkx3_quants(32, nmax, x, weights, L, &min, Laux, -0.9,
// 0.05, 36, false); m is stored as -min.
void AffineImportance(const float* src, int64_t num_blocks,
                      const float* importance, int nmax, int block_bytes,
                      uint8_t* dst) {
  const float sigma2 = RowSigma2(src, num_blocks * 32);
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * block_bytes;
    std::array<float, 32> weight;
    ImportanceWeights(x, importance + b * 32, sigma2, weight.data());
    std::array<uint8_t, 32> L;
    std::array<uint8_t, 32> Laux;
    float min = 0.0f;
    const float d = GgmlMakeQkx3Quants(32, nmax, x, weight.data(), L.data(),
                                       &min, Laux.data(), -0.9f, 0.05f, 36,
                                       false);
    StoreHalf(FloatToHalf(d), y);
    StoreHalf(FloatToHalf(-min), y + 2);
    if (nmax == 15) {
      PackCodes(L.data(), y + 4, nullptr);
    } else {
      PackCodes(L.data(), y + 8, y + 4);
    }
  }
}

void Q4_0Importance(const float* src, int64_t num_blocks,
                    const float* importance, uint8_t* dst) {
  SymmetricImportance(src, num_blocks, importance, 8, sizeof(GgmlBlockQ4_0), dst);
}
void Q5_0Importance(const float* src, int64_t num_blocks,
                    const float* importance, uint8_t* dst) {
  SymmetricImportance(src, num_blocks, importance, 16, sizeof(GgmlBlockQ5_0), dst);
}
void Q4_1Importance(const float* src, int64_t num_blocks,
                    const float* importance, uint8_t* dst) {
  AffineImportance(src, num_blocks, importance, 15, sizeof(GgmlBlockQ4_1), dst);
}
void Q5_1Importance(const float* src, int64_t num_blocks,
                    const float* importance, uint8_t* dst) {
  AffineImportance(src, num_blocks, importance, 31, sizeof(GgmlBlockQ5_1), dst);
}

}  // namespace

int GgmlIq4NlIndex(float x) {
  const float x2 = x + x;
  int index = 0;
  for (int step = 8; step > 0; step >>= 1) {
    const int j = index + step;
    if (x2 >= static_cast<float>(kGgmlIq4NlValues[j - 1] +
                                 kGgmlIq4NlValues[j])) {
      index = j;
    }
  }
  return index;
}

// ggml: quantize_row_q4_0_ref.
void GgmlQuantizeQ4_0Reference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst) {
  if (importance != nullptr) {
    Q4_0Importance(src, num_blocks, importance, dst);
    return;
  }
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
                               const float* importance, uint8_t* dst) {
  if (importance != nullptr) {
    Q4_1Importance(src, num_blocks, importance, dst);
    return;
  }
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
                               const float* importance, uint8_t* dst) {
  if (importance != nullptr) {
    Q5_0Importance(src, num_blocks, importance, dst);
    return;
  }
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
                               const float* importance, uint8_t* dst) {
  if (importance != nullptr) {
    Q5_1Importance(src, num_blocks, importance, dst);
    return;
  }
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

// quantize_row_iq4_nl_impl's search for one 32-element sub-block (ntry 7,
// the path of quantize_iq4_nl and quantize_iq4_xs).
float GgmlIq4SubBlockScale(const float* x, const float* weight) {
  constexpr int kNtry = 7;
  const int8_t* values = kGgmlIq4NlValues;
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      max = x[j];
    }
  }
  if (amax < kGgmlGroupMaxEps) return 0.0f;
  float d = -max / static_cast<float>(values[0]);
  float id = 1.0f / d;
  float sumqx = 0.0f;
  float sumq2 = 0.0f;
  for (int j = 0; j < 32; ++j) {
    const float q = values[GgmlIq4NlIndex(id * x[j])];
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
      const float q = values[GgmlIq4NlIndex(id * x[j])];
      sumqx += weight[j] * q * x[j];
      sumq2 += weight[j] * q * q;
    }
    if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

void GgmlIq4Weights(const float* x, int n, const float* qw, float sigma2,
                    float* weight) {
  for (int j = 0; j < n; ++j) {
    weight[j] = qw != nullptr ? qw[j] * std::sqrt(sigma2 + x[j] * x[j])
                              : x[j] * x[j];
  }
}

float GgmlIq4Sigma2(const float* x, int n) {
  float sigma2 = 0.0f;
  for (int j = 0; j < n; ++j) sigma2 += x[j] * x[j];
  return sigma2 * (2.0f / static_cast<float>(n));
}

void GgmlFinishIq4Xs(const float* x, const float* scales, float max_scale,
                     uint8_t* dst) {
  const float d = -max_scale / 32.0f;
  StoreHalf(FloatToHalf(d), dst);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  uint16_t scales_h = 0;
  uint8_t* scales_l = dst + 4;
  uint8_t* qs = dst + 8;
  for (int ib = 0; ib < 8; ++ib) {
    int l = GgmlNearestInt(id * scales[ib]);
    l = std::max(-32, std::min(31, l));
    const float dl = d * static_cast<float>(l);
    const float idl = dl != 0.0f ? 1.0f / dl : 0.0f;
    const float* xb = x + 32 * ib;
    for (int j = 0; j < 16; ++j) {
      const int l0 = GgmlIq4NlIndex(idl * xb[j]);
      const int l1 = GgmlIq4NlIndex(idl * xb[16 + j]);
      qs[16 * ib + j] = static_cast<uint8_t>(l0 | (l1 << 4));
    }
    l += 32;
    const auto l_l = static_cast<uint8_t>(l & 0xF);
    const auto l_h = static_cast<uint16_t>(l >> 4);
    if (ib % 2 == 0) {
      scales_l[ib / 2] = l_l;
    } else {
      scales_l[ib / 2] = static_cast<uint8_t>(scales_l[ib / 2] | (l_l << 4));
    }
    scales_h = static_cast<uint16_t>(scales_h | (l_h << (2 * ib)));
  }
  std::memcpy(dst + 2, &scales_h, 2);
}

// ggml: quantize_iq4_nl -> quantize_row_iq4_nl_impl(32, 32, 16, ..., ntry 7),
// the path llama-quantize takes (not quantize_row_iq4_nl_ref, ntry -1).
// Without importance the weights are x^2; with it, w * sqrt(sigma2 + x^2),
// sigma2 = 2 * mean(x^2) of the block.
void GgmlQuantizeIq4NlReference(const float* src, int64_t num_blocks,
                                const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    const float* qw = importance != nullptr ? importance + b * 32 : nullptr;
    uint8_t* y = dst + b * sizeof(GgmlBlockIq4Nl);
    std::array<float, 32> weight;
    GgmlIq4Weights(x, 32, qw, qw != nullptr ? GgmlIq4Sigma2(x, 32) : 0.0f,
                   weight.data());
    const float scale = GgmlIq4SubBlockScale(x, weight.data());
    StoreHalf(FloatToHalf(scale), y);
    // The codes come from the f32 scale, not the stored f16 one.
    const float id = scale != 0.0f ? 1.0f / scale : 0.0f;
    for (int j = 0; j < 16; ++j) {
      const int l0 = GgmlIq4NlIndex(id * x[j]);
      const int l1 = GgmlIq4NlIndex(id * x[16 + j]);
      y[2 + j] = static_cast<uint8_t>(l0 | (l1 << 4));
    }
  }
}

// ggml: quantize_iq4_xs -> quantize_row_iq4_nl_impl(256, 32, 16, ...,
// ntry 7): the IQ4_NL search per sub-block (weights from the super-block's
// sigma2), then the sub-block scales as 6-bit multiples of
// d = -(the signed largest-magnitude scale) / 32 and the codes recomputed
// from d * l, all in f32.
void GgmlQuantizeIq4XsReference(const float* src, int64_t num_blocks,
                                const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 256;
    const float* qw = importance != nullptr ? importance + b * 256 : nullptr;
    const float sigma2 = qw != nullptr ? GgmlIq4Sigma2(x, 256) : 0.0f;
    std::array<float, 8> scales;
    float max_scale = 0.0f;
    float amax_scale = 0.0f;
    for (int ib = 0; ib < 8; ++ib) {
      std::array<float, 32> weight;
      GgmlIq4Weights(x + 32 * ib, 32, qw != nullptr ? qw + 32 * ib : nullptr,
                     sigma2, weight.data());
      scales[ib] = GgmlIq4SubBlockScale(x + 32 * ib, weight.data());
      if (std::fabs(scales[ib]) > amax_scale) {
        amax_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    GgmlFinishIq4Xs(x, scales.data(), max_scale,
                    dst + b * sizeof(GgmlBlockIq4Xs));
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

void DequantizeIq4Xs(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 136) {
    const float d = LoadHalf(src);
    const auto scales_h = static_cast<uint16_t>(src[2] | (src[3] << 8));
    for (int ib = 0; ib < 8; ++ib, dst += 32) {
      const int ls = ((src[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F) |
                     (((scales_h >> (2 * ib)) & 3) << 4);
      const float dl = d * static_cast<float>(ls - 32);
      const uint8_t* qs = src + 8 + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        dst[j] = dl * static_cast<float>(kGgmlIq4NlValues[qs[j] & 0x0F]);
        dst[16 + j] = dl * static_cast<float>(kGgmlIq4NlValues[qs[j] >> 4]);
      }
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
  static const auto table = [] {
    const absl::Span<const GgmlFormatTraits> k = GgmlKQuantFormats();
    return std::to_array<GgmlFormatTraits>({
        {GgmlType::kQ4_0, "Q4_0", 32, 18, GgmlQuantizeQ4_0Reference,
         Pick(GgmlQuantizeQ4_0Reference, GgmlQuantizeQ4_0Avx2,
              GgmlQuantizeQ4_0Avx512),
         DequantizeQ4_0, true, "4-bit symmetric, f16 scale, 4.5 bpw"},
        {GgmlType::kQ4_1, "Q4_1", 32, 20, GgmlQuantizeQ4_1Reference,
         Pick(GgmlQuantizeQ4_1Reference, GgmlQuantizeQ4_1Avx2,
              GgmlQuantizeQ4_1Avx512),
         DequantizeQ4_1, true, "4-bit with f16 scale and minimum, 5 bpw"},
        {GgmlType::kQ5_0, "Q5_0", 32, 22, GgmlQuantizeQ5_0Reference,
         Pick(GgmlQuantizeQ5_0Reference, GgmlQuantizeQ5_0Avx2,
              GgmlQuantizeQ5_0Avx512),
         DequantizeQ5_0, true, "5-bit symmetric, f16 scale, 5.5 bpw"},
        {GgmlType::kQ5_1, "Q5_1", 32, 24, GgmlQuantizeQ5_1Reference,
         Pick(GgmlQuantizeQ5_1Reference, GgmlQuantizeQ5_1Avx2,
              GgmlQuantizeQ5_1Avx512),
         DequantizeQ5_1, true, "5-bit with f16 scale and minimum, 6 bpw"},
        {GgmlType::kQ8_0, "Q8_0", 32, 34, GgmlQuantizeQ8_0Reference,
         Pick(GgmlQuantizeQ8_0Reference, GgmlQuantizeQ8_0Avx2,
              GgmlQuantizeQ8_0Avx512),
         DequantizeQ8_0, false, "8-bit symmetric, f16 scale, 8.5 bpw"},
        k[0],  // Q2_K
        k[1],  // Q3_K
        k[2],  // Q4_K
        k[3],  // Q5_K
        k[4],  // Q6_K
        {GgmlType::kIq4Nl, "IQ4_NL", 32, 18, GgmlQuantizeIq4NlReference,
         Pick(GgmlQuantizeIq4NlReference, GgmlQuantizeIq4NlAvx2,
              GgmlQuantizeIq4NlAvx512),
         DequantizeIq4Nl, true,
         "4-bit non-linear table, searched f16 scale, 4.5 bpw"},
        {GgmlType::kIq4Xs, "IQ4_XS", 256, 136, GgmlQuantizeIq4XsReference,
         Pick(GgmlQuantizeIq4XsReference, GgmlQuantizeIq4XsAvx2,
              GgmlQuantizeIq4XsAvx512),
         DequantizeIq4Xs, true,
         "4-bit non-linear table, 6-bit sub-block scales, 4.25 bpw"},
        {GgmlType::kMxfp4, "MXFP4", 32, 17, GgmlQuantizeMxfp4Reference,
         Pick(GgmlQuantizeMxfp4Reference, GgmlQuantizeMxfp4Avx2,
              GgmlQuantizeMxfp4Avx512),
         DequantizeMxfp4, false,
         "OCP MX FP4 (E2M1) with an E8M0 block exponent, 4.25 bpw"},
    });
  }();
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

using AllFiniteFn = bool (*)(const float* x, int64_t n);

bool AllFiniteScalar(const float* x, int64_t n) {
  return internal::FirstNonFinite(x, n) < 0;
}

AllFiniteFn PickAllFinite() {
  switch (DetectedIsa()) {
    case Isa::kAvx512:
      return internal::GgmlAllFiniteAvx512;
    case Isa::kAvx2:
      return internal::GgmlAllFiniteAvx2;
    case Isa::kScalar:
      break;
  }
  return AllFiniteScalar;
}

// Checks and quantizes the tensor a chunk at a time (about 64 KiB of input,
// whole blocks; one row at a time with importance), so the quantizer reads
// what the check has just brought into cache.
absl::Status QuantizeWith(const GgmlFormatTraits& format, GgmlQuantizeFn fn,
                          AllFiniteFn all_finite, const float* src,
                          int64_t rows, int64_t row_length,
                          const float* importance, uint8_t* dst) {
  absl::StatusOr<int64_t> row_bytes = GgmlRowBytes(format, row_length);
  if (!row_bytes.ok()) return row_bytes.status();
  if (rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(format.name, ": rows ", rows, " is negative"));
  }
  auto check = [&](int64_t first, int64_t count) -> absl::Status {
    if (all_finite(src + first, count)) return absl::OkStatus();
    const int64_t bad = first + internal::FirstNonFinite(src + first, count);
    return internal::NonFiniteError(bad, src[bad]);
  };
  const int64_t blocks_per_row = row_length / format.block_size;
  if (importance == nullptr || !format.uses_importance) {
    const int64_t total = rows * blocks_per_row;
    const int64_t chunk = std::max<int64_t>(1, 16384 / format.block_size);
    for (int64_t b = 0; b < total; b += chunk) {
      const int64_t count = std::min(chunk, total - b);
      absl::Status s = check(b * format.block_size, count * format.block_size);
      if (!s.ok()) return s;
      fn(src + b * format.block_size, count, nullptr,
         dst + b * format.block_bytes);
    }
    return absl::OkStatus();
  }
  for (int64_t r = 0; r < rows; ++r) {
    absl::Status s = check(r * row_length, row_length);
    if (!s.ok()) return s;
    fn(src + r * row_length, blocks_per_row, importance, dst + r * *row_bytes);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status GgmlQuantize(const GgmlFormatTraits& format, const float* src,
                          int64_t rows, int64_t row_length,
                          const float* importance, uint8_t* dst) {
  static const AllFiniteFn all_finite = PickAllFinite();
  return QuantizeWith(format, format.fast, all_finite, src, rows, row_length,
                      importance, dst);
}

absl::Status GgmlQuantizeReference(const GgmlFormatTraits& format,
                                   const float* src, int64_t rows,
                                   int64_t row_length, const float* importance,
                                   uint8_t* dst) {
  return QuantizeWith(format, format.reference, AllFiniteScalar, src, rows,
                      row_length, importance, dst);
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

absl::StatusOr<ErrorMetrics> GgmlDequantizeAndMeasure(
    const GgmlFormatTraits& format, const uint8_t* src, int64_t rows,
    int64_t row_length, const float* w, float* w_hat) {
  absl::StatusOr<int64_t> row_bytes = GgmlRowBytes(format, row_length);
  if (!row_bytes.ok()) return row_bytes.status();
  if (rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(format.name, ": rows ", rows, " is negative"));
  }
  // Blocks never straddle rows, so the tensor is one run of blocks; a chunk
  // is a whole number of blocks of at most kMetricsBlock elements (at least
  // one block), accumulated in kMetricsBlock pieces as ComputeErrorMetrics
  // sums.
  constexpr auto kBlock = static_cast<int64_t>(internal::kMetricsBlock);
  const int64_t bs = format.block_size;
  const int64_t chunk_blocks = std::max<int64_t>(1, kBlock / bs);
  const int64_t total_blocks = rows * (row_length / bs);
  const internal::AccumulateMetricsFn accumulate =
      internal::SelectedAccumulateMetrics();
  std::vector<float> buffer;
  if (w_hat == nullptr) buffer.resize(static_cast<size_t>(chunk_blocks * bs));
  internal::MetricSums sums;
  for (int64_t b0 = 0; b0 < total_blocks; b0 += chunk_blocks) {
    const int64_t blocks = std::min(chunk_blocks, total_blocks - b0);
    const int64_t e0 = b0 * bs;
    float* out = w_hat != nullptr ? w_hat + e0 : buffer.data();
    format.dequantize(src + b0 * format.block_bytes, blocks, out);
    for (int64_t i = 0; i < blocks * bs; i += kBlock) {
      accumulate(w + e0 + i, out + i, std::min(kBlock, blocks * bs - i), sums);
    }
  }
  ErrorMetrics metrics = internal::FinishMetrics(
      sums, static_cast<size_t>(total_blocks * bs));
  metrics.bits_per_weight =
      total_blocks == 0 ? 0.0
                        : static_cast<double>(format.block_bytes) * 8.0 /
                              static_cast<double>(format.block_size);
  return metrics;
}

int64_t GgmlWorkingSetBytes(const Layout& layout) {
  return 4 * layout.row_length;  // importance
}

}  // namespace quantd
