// Scalar references of ggml's K-quants Q2_K..Q6_K (the specification; see
// ggml_formats.h for what bit-exact means) and their dequantizers.
//
// Each function follows one routine of llama.cpp's ggml/src/ggml-quants.c,
// named in its comment, operation for operation. A quantizer is split into
// the per-sub-block search (stage 1, here and in the vector paths) and the
// shared finishing step (stage 2, GgmlFinish*); internal/ggml_kquants.h
// describes the split. Quirks of ggml kept on purpose:
//   - a sub-block whose stored scale is 0 keeps the codes of its search
//     (ggml's `if (!d) continue;`), which matters for the bytes only;
//   - codes and 6-bit scales pass through C integer conversions (uint8_t /
//     int8_t stores keep the low byte) before they are clamped or packed;
//   - the stored f16 d and dmin, not the f32 search results, define the
//     final codes.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/convert.h"
#include "kernels/cpu.h"
#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/ggml_search.h"

namespace quantd::internal {
namespace {

constexpr int kQK = kGgmlBlock256;

float F16(uint16_t h) { return HalfToFloat(h); }

// Codes from a stored sub-block scale: ggml's requantization loops.
// Asymmetric (Q2_K, Q4_K, Q5_K): l = nearest((x + dm) / d) in [0, nmax].
void RequantizeAsym(const float* x, int n, float d, float dm, int nmax,
                    uint8_t* L) {
  for (int i = 0; i < n; ++i) {
    const int l = GgmlNearestInt((x[i] + dm) / d);
    L[i] = static_cast<uint8_t>(l < 0 ? 0 : l > nmax ? nmax : l);
  }
}

// Symmetric (Q3_K, Q6_K): L = nearest(x / d) in [-half, half - 1], + half.
void RequantizeSym(const float* x, int n, float d, int half, int8_t* L) {
  for (int i = 0; i < n; ++i) {
    int l = GgmlNearestInt(x[i] / d);
    l = l < -half ? -half : l > half - 1 ? half - 1 : l;
    L[i] = static_cast<int8_t>(l + half);
  }
}

// Packs 2-bit codes: byte l of each 128-element half holds elements l,
// l + 32, l + 64, l + 96 (ggml's Q2_K/Q3_K qs loop).
template <typename Code>
void Pack2Bit(const Code* L, uint8_t* qs) {
  for (int j = 0; j < kQK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int v = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                    (L[j + l + 96] << 6);
      qs[j / 4 + l] = static_cast<uint8_t>(v);
    }
  }
}

// ggml's Q4_K/Q5_K scale packing (the inverse of get_scale_min_k4). Must
// run for j = 0..7 in order: j >= 4 or-s into bytes written for j < 4.
void PackScaleMinK4(int j, uint8_t ls, uint8_t lm, uint8_t* scales) {
  if (j < 4) {
    scales[j] = ls;
    scales[j + 4] = lm;
  } else {
    scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
    scales[j - 4] = static_cast<uint8_t>(scales[j - 4] | ((ls >> 4) << 6));
    scales[j] = static_cast<uint8_t>(scales[j] | ((lm >> 4) << 6));
  }
}

// ggml: get_scale_min_k4.
void GetScaleMinK4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// ggml's Q3_K 6-bit scale packing, j = 0..15 in order.
void PackScaleQ3(int j, int l, uint8_t* scales) {
  if (j < 8) {
    scales[j] = static_cast<uint8_t>(l & 0xF);
  } else {
    scales[j - 8] = static_cast<uint8_t>(scales[j - 8] | ((l & 0xF) << 4));
  }
  l >>= 4;
  scales[j % 4 + 8] = static_cast<uint8_t>(scales[j % 4 + 8] | (l << (2 * (j / 4))));
}

// The stored 6-bit Q3_K scale of sub-block j, minus 32 (ggml's int8_t sc).
int ScaleQ3(int j, const uint8_t* scales) {
  const int lo = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
  return static_cast<int8_t>(
      (lo | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
}

// Sum of x^2 over the super-block, in order (the _impl paths' sigma2).
float SumSquares(const float* x, int n) {
  float s = 0.0f;
  for (int l = 0; l < n; ++l) s += x[l] * x[l];
  return s;
}

// The scale fields of Q4_K and Q5_K (ggml's quantize_row_q{4,5}_K_{ref,impl}
// after the sub-block loop) and each sub-block's d and dm; kQ5 selects
// Q5_K's clamp of the importance path.
template <bool kQ5>
void ScalesQ45K(const float* scales, const float* mins, const float* sw,
                uint16_t& d_half, uint16_t& dmin_half, uint8_t* sc_bytes,
                float* sub_d, float* sub_dm) {
  std::memset(sc_bytes, 0, 12);
  if (sw == nullptr) {
    float max_scale = 0.0f;
    float max_min = 0.0f;
    for (int j = 0; j < kQK / 32; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < kQK / 32; ++j) {
      auto ls = static_cast<uint8_t>(GgmlNearestInt(inv_scale * scales[j]));
      auto lm = static_cast<uint8_t>(GgmlNearestInt(inv_min * mins[j]));
      ls = ls < 63 ? ls : uint8_t{63};
      lm = lm < 63 ? lm : uint8_t{63};
      PackScaleMinK4(j, ls, lm, sc_bytes);
    }
    d_half = FloatToHalf(max_scale / 63.0f);
    dmin_half = FloatToHalf(max_min / 63.0f);
  } else {
    uint8_t Ls[kQK / 32];
    uint8_t Lm[kQK / 32];
    const float d_block = GgmlMakeQpQuants(kQK / 32, 63, scales, Ls, sw);
    const float m_block = GgmlMakeQpQuants(kQK / 32, 63, mins, Lm, sw);
    for (int j = 0; j < kQK / 32; ++j) {
      uint8_t ls = Ls[j];
      uint8_t lm = Lm[j];
      if (kQ5) {  // quantize_row_q5_K_impl clamps, q4_K_impl does not.
        ls = ls < 63 ? ls : uint8_t{63};
        lm = lm < 63 ? lm : uint8_t{63};
      }
      PackScaleMinK4(j, ls, lm, sc_bytes);
    }
    d_half = FloatToHalf(d_block);
    dmin_half = FloatToHalf(m_block);
  }
  for (int j = 0; j < kQK / 32; ++j) {
    uint8_t sc, m;
    GetScaleMinK4(j, sc_bytes, sc, m);
    sub_d[j] = F16(d_half) * static_cast<float>(sc);
    sub_dm[j] = F16(dmin_half) * static_cast<float>(m);
  }
}

// Stage 2 of Q4_K and Q5_K; kQ5 selects Q5_K's code range and packing.
template <bool kQ5>
void FinishQ45K(const float* x, const float* scales, const float* mins,
                const float* sw, uint8_t* L, uint8_t* dst) {
  constexpr int kNmax = kQ5 ? 31 : 15;
  uint8_t sc_bytes[12];
  uint16_t d_half;
  uint16_t dmin_half;
  float sub_d[kQK / 32];
  float sub_dm[kQK / 32];
  ScalesQ45K<kQ5>(scales, mins, sw, d_half, dmin_half, sc_bytes, sub_d, sub_dm);
  for (int j = 0; j < kQK / 32; ++j) {
    if (sub_d[j] == 0.0f) continue;
    RequantizeAsym(x + 32 * j, 32, sub_d[j], sub_dm[j], kNmax, L + 32 * j);
  }
  if constexpr (kQ5) {
    GgmlBlockQ5_K y;
    y.d = d_half;
    y.dmin = dmin_half;
    std::memcpy(y.scales, sc_bytes, 12);
    std::memset(y.qh, 0, sizeof(y.qh));
    uint8_t* ql = y.qs;
    int m1 = 1;
    int m2 = 2;
    for (int n = 0; n < kQK; n += 64) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j];
        if (l1 > 15) {
          l1 -= 16;
          y.qh[j] = static_cast<uint8_t>(y.qh[j] | m1);
        }
        int l2 = L[n + j + 32];
        if (l2 > 15) {
          l2 -= 16;
          y.qh[j] = static_cast<uint8_t>(y.qh[j] | m2);
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 <<= 2;
      m2 <<= 2;
      ql += 32;
    }
    std::memcpy(dst, &y, sizeof(y));
  } else {
    GgmlBlockQ4_K y;
    y.d = d_half;
    y.dmin = dmin_half;
    std::memcpy(y.scales, sc_bytes, 12);
    uint8_t* q = y.qs;
    for (int j = 0; j < kQK; j += 64) {
      for (int l = 0; l < 32; ++l) {
        q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
      }
      q += 32;
    }
    std::memcpy(dst, &y, sizeof(y));
  }
}

// Stage 1 of Q4_K/Q5_K for one super-block, scalar.
template <bool kQ5>
void SearchQ45K(const float* x, const float* qw, float* scales, float* mins,
                float* sw, uint8_t* L) {
  constexpr int kNmax = kQ5 ? 31 : 15;
  float weights[32];
  uint8_t Laux[32];
  if (qw == nullptr) {
    // quantize_row_q{4,5}_K_ref.
    for (int j = 0; j < kQK / 32; ++j) {
      const float* xs = x + 32 * j;
      const float av_x = std::sqrt(SumSquares(xs, 32) / 32.0f);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
      scales[j] = GgmlMakeQkx2Quants(32, kNmax, xs, weights, L + 32 * j,
                                     &mins[j], Laux, kQ5 ? -0.5f : -1.0f, 0.1f,
                                     kQ5 ? 15 : 20, false);
    }
    return;
  }
  // quantize_row_q{4,5}_K_impl.
  const float sigma2 = 2.0f * SumSquares(x, kQK) / static_cast<float>(kQK);
  for (int j = 0; j < kQK / 32; ++j) {
    const float* xs = x + 32 * j;
    for (int l = 0; l < 32; ++l) {
      weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + xs[l] * xs[l]);
    }
    float sumw = 0.0f;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    sw[j] = sumw;
    scales[j] = GgmlMakeQkx3Quants(32, kNmax, xs, weights, L + 32 * j,
                                   &mins[j], Laux, -0.9f, 0.05f, 36, false);
  }
}

template <bool kQ5>
void QuantizeQ45K(const float* src, int64_t num_blocks, const float* importance,
                  uint8_t* dst) {
  constexpr size_t kBytes = kQ5 ? sizeof(GgmlBlockQ5_K) : sizeof(GgmlBlockQ4_K);
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kQK;
    const float* qw = importance != nullptr ? importance + b * kQK : nullptr;
    float scales[kQK / 32];
    float mins[kQK / 32];
    float sw[kQK / 32];
    uint8_t L[kQK];
    SearchQ45K<kQ5>(x, qw, scales, mins, sw, L);
    FinishQ45K<kQ5>(x, scales, mins, qw != nullptr ? sw : nullptr, L,
                    dst + b * static_cast<int64_t>(kBytes));
  }
}

}  // namespace

// The scale fields of Q2_K: quantize_row_q2_K_ref (sw == nullptr) or _impl.
void GgmlScalesQ2_K(const float* scales, const float* mins, const float* sw,
                    GgmlBlockQ2_K& y, float* sub_d, float* sub_dm) {
  constexpr float kQ4Scale = 15.0f;
  if (sw == nullptr) {
    float max_scale = 0.0f;
    float max_min = 0.0f;
    for (int j = 0; j < kQK / 16; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0.0f) {
      const float iscale = kQ4Scale / max_scale;
      for (int j = 0; j < kQK / 16; ++j) {
        y.scales[j] = static_cast<uint8_t>(GgmlNearestInt(iscale * scales[j]));
      }
      y.d = FloatToHalf(max_scale / kQ4Scale);
    } else {
      std::memset(y.scales, 0, sizeof(y.scales));
      y.d = FloatToHalf(0.0f);
    }
    if (max_min > 0.0f) {
      const float iscale = kQ4Scale / max_min;
      for (int j = 0; j < kQK / 16; ++j) {
        const int l = GgmlNearestInt(iscale * mins[j]);
        y.scales[j] = static_cast<uint8_t>(y.scales[j] | (l << 4));
      }
      y.dmin = FloatToHalf(max_min / kQ4Scale);
    } else {
      y.dmin = FloatToHalf(0.0f);
    }
  } else {
    uint8_t Ls[kQK / 16];
    uint8_t Lm[kQK / 16];
    const float dm = GgmlMakeQpQuants(kQK / 16, 15, scales, Ls, sw);
    const float mm = GgmlMakeQpQuants(kQK / 16, 15, mins, Lm, sw);
    y.d = FloatToHalf(dm);
    y.dmin = FloatToHalf(mm);
    for (int j = 0; j < kQK / 16; ++j) {
      y.scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    }
  }
  for (int j = 0; j < kQK / 16; ++j) {
    sub_d[j] = F16(y.d) * static_cast<float>(y.scales[j] & 0xF);
    sub_dm[j] = F16(y.dmin) * static_cast<float>(y.scales[j] >> 4);
  }
}

// Stage 2 of Q2_K.
void GgmlFinishQ2_K(const float* x, const float* scales, const float* mins,
                    const float* sw, uint8_t* L, uint8_t* dst) {
  GgmlBlockQ2_K y;
  float sub_d[kQK / 16];
  float sub_dm[kQK / 16];
  GgmlScalesQ2_K(scales, mins, sw, y, sub_d, sub_dm);
  for (int j = 0; j < kQK / 16; ++j) {
    if (sub_d[j] == 0.0f) continue;
    RequantizeAsym(x + 16 * j, 16, sub_d[j], sub_dm[j], 3, L + 16 * j);
  }
  Pack2Bit(L, y.qs);
  std::memcpy(dst, &y, sizeof(y));
}

// The scale fields of Q3_K: quantize_row_q3_K_ref (sw == nullptr) or _impl.
void GgmlScalesQ3_K(const float* scales, const float* sw, GgmlBlockQ3_K& y,
                    float* sub_d) {
  std::memset(y.scales, 0, sizeof(y.scales));
  if (sw == nullptr) {
    float max_scale = 0.0f;
    float amax = 0.0f;
    for (int j = 0; j < kQK / 16; ++j) {
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    if (max_scale != 0.0f) {
      const float iscale = -32.0f / max_scale;
      for (int j = 0; j < kQK / 16; ++j) {
        int l = static_cast<int8_t>(GgmlNearestInt(iscale * scales[j]));
        l = (l < -32 ? -32 : l > 31 ? 31 : l) + 32;
        PackScaleQ3(j, l, y.scales);
      }
      y.d = FloatToHalf(1.0f / iscale);
    } else {
      y.d = FloatToHalf(0.0f);
    }
  } else {
    int8_t Ls[kQK / 16];
    const float d_block = GgmlMakeQxQuants(kQK / 16, 32, scales, Ls, 1, sw);
    for (int j = 0; j < kQK / 16; ++j) PackScaleQ3(j, Ls[j], y.scales);
    y.d = FloatToHalf(d_block);
  }
  for (int j = 0; j < kQK / 16; ++j) {
    sub_d[j] = F16(y.d) * static_cast<float>(ScaleQ3(j, y.scales));
  }
}

// Stage 2 of Q3_K.
void GgmlFinishQ3_K(const float* x, const float* scales, const float* sw,
                    int8_t* L, uint8_t* dst) {
  GgmlBlockQ3_K y;
  float sub_d[kQK / 16];
  GgmlScalesQ3_K(scales, sw, y, sub_d);
  for (int j = 0; j < kQK / 16; ++j) {
    if (sub_d[j] == 0.0f) continue;
    RequantizeSym(x + 16 * j, 16, sub_d[j], 4, L + 16 * j);
  }
  std::memset(y.hmask, 0, sizeof(y.hmask));
  int m = 0;
  int hm = 1;
  for (int j = 0; j < kQK; ++j) {
    if (L[j] > 3) {
      y.hmask[m] = static_cast<uint8_t>(y.hmask[m] | hm);
      L[j] = static_cast<int8_t>(L[j] - 4);
    }
    if (++m == kQK / 8) {
      m = 0;
      hm <<= 1;
    }
  }
  Pack2Bit(L, y.qs);
  std::memcpy(dst, &y, sizeof(y));
}

void GgmlScalesQ4_K(const float* scales, const float* mins, const float* sw,
                    GgmlBlockQ4_K& y, float* sub_d, float* sub_dm) {
  ScalesQ45K<false>(scales, mins, sw, y.d, y.dmin, y.scales, sub_d, sub_dm);
}

void GgmlScalesQ5_K(const float* scales, const float* mins, const float* sw,
                    GgmlBlockQ5_K& y, float* sub_d, float* sub_dm) {
  ScalesQ45K<true>(scales, mins, sw, y.d, y.dmin, y.scales, sub_d, sub_dm);
}

void GgmlFinishQ4_K(const float* x, const float* scales, const float* mins,
                    const float* sw, uint8_t* L, uint8_t* dst) {
  FinishQ45K<false>(x, scales, mins, sw, L, dst);
}

void GgmlFinishQ5_K(const float* x, const float* scales, const float* mins,
                    const float* sw, uint8_t* L, uint8_t* dst) {
  FinishQ45K<true>(x, scales, mins, sw, L, dst);
}

// The scale fields of Q6_K: the same in quantize_row_q6_K_ref and _impl.
bool GgmlScalesQ6_K(const float* scales, GgmlBlockQ6_K& y, float* sub_d) {
  float max_scale = 0.0f;
  float max_abs_scale = 0.0f;
  for (int ib = 0; ib < kQK / 16; ++ib) {
    const float abs_scale = std::fabs(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < kGgmlGroupMaxEps) {
    std::memset(&y, 0, sizeof(y));
    y.d = FloatToHalf(0.0f);
    return false;
  }
  const float iscale = -128.0f / max_scale;
  y.d = FloatToHalf(1.0f / iscale);
  for (int ib = 0; ib < kQK / 16; ++ib) {
    const int l = GgmlNearestInt(iscale * scales[ib]);
    y.scales[ib] = static_cast<int8_t>(l < 127 ? l : 127);
  }
  for (int j = 0; j < kQK / 16; ++j) {
    sub_d[j] = F16(y.d) * static_cast<float>(y.scales[j]);
  }
  return true;
}

// Stage 2 of Q6_K.
void GgmlFinishQ6_K(const float* x, const float* scales, int8_t* L,
                    uint8_t* dst) {
  GgmlBlockQ6_K y;
  float sub_d[kQK / 16];
  if (!GgmlScalesQ6_K(scales, y, sub_d)) {
    std::memcpy(dst, &y, sizeof(y));
    return;
  }
  for (int j = 0; j < kQK / 16; ++j) {
    if (sub_d[j] == 0.0f) continue;
    RequantizeSym(x + 16 * j, 16, sub_d[j], 32, L + 16 * j);
  }
  uint8_t* ql = y.ql;
  uint8_t* qh = y.qh;
  for (int j = 0; j < kQK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l] & 0xF;
      const int q2 = L[j + l + 32] & 0xF;
      const int q3 = L[j + l + 64] & 0xF;
      const int q4 = L[j + l + 96] & 0xF;
      ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                   ((L[j + l + 64] >> 4) << 4) |
                                   ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
  std::memcpy(dst, &y, sizeof(y));
}

// ggml: quantize_row_q2_K_ref / quantize_row_q2_K_impl.
void GgmlQuantizeQ2_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kQK;
    float scales[kQK / 16];
    float mins[kQK / 16];
    float sw[kQK / 16];
    float weights[16];
    uint8_t L[kQK];
    uint8_t Laux[16];
    if (importance == nullptr) {
      for (int j = 0; j < kQK / 16; ++j) {
        for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
        scales[j] = GgmlMakeQkx2Quants(16, 3, x + 16 * j, weights, L + 16 * j,
                                       &mins[j], Laux, -0.5f, 0.1f, 15, true);
      }
    } else {
      const float* qw = importance + b * kQK;
      const float sigma2 = SumSquares(x, kQK) / static_cast<float>(kQK);
      for (int j = 0; j < kQK / 16; ++j) {
        const float* xs = x + 16 * j;
        for (int l = 0; l < 16; ++l) {
          weights[l] = qw[16 * j + l] * std::sqrt(sigma2 + xs[l] * xs[l]);
        }
        sw[j] = 0.0f;
        for (int l = 0; l < 16; ++l) sw[j] += weights[l];
        scales[j] = GgmlMakeQkx3Quants(16, 3, xs, weights, L + 16 * j,
                                       &mins[j], Laux, -0.9f, 0.05f, 36, false);
      }
    }
    GgmlFinishQ2_K(x, scales, mins, importance != nullptr ? sw : nullptr, L,
                   dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ2_K)));
  }
}

// ggml: quantize_row_q3_K_ref / quantize_row_q3_K_impl.
void GgmlQuantizeQ3_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kQK;
    float scales[kQK / 16];
    float sw[kQK / 16];
    int8_t L[kQK];
    if (importance == nullptr) {
      for (int j = 0; j < kQK / 16; ++j) {
        scales[j] = GgmlMakeQ3Quants(16, 4, x + 16 * j, L + 16 * j, true);
      }
    } else {
      const float* qw = importance + b * kQK;
      const float sigma2 = 2.0f * SumSquares(x, kQK) / static_cast<float>(kQK);
      float weight[16];
      for (int j = 0; j < kQK / 16; ++j) {
        const float* xs = x + 16 * j;
        for (int l = 0; l < 16; ++l) {
          weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + xs[l] * xs[l]);
        }
        float sumw = 0.0f;
        for (int l = 0; l < 16; ++l) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = GgmlMakeQxQuants(16, 4, xs, L + 16 * j, 1, weight);
      }
    }
    GgmlFinishQ3_K(x, scales, importance != nullptr ? sw : nullptr, L,
                   dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ3_K)));
  }
}

// ggml: quantize_row_q4_K_ref / quantize_row_q4_K_impl.
void GgmlQuantizeQ4_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst) {
  QuantizeQ45K<false>(src, num_blocks, importance, dst);
}

// ggml: quantize_row_q5_K_ref / quantize_row_q5_K_impl.
void GgmlQuantizeQ5_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst) {
  QuantizeQ45K<true>(src, num_blocks, importance, dst);
}

// ggml: quantize_row_q6_K_ref / quantize_row_q6_K_impl (whose weights are
// the importance itself, without the sigma2 term of the other types).
void GgmlQuantizeQ6_KReference(const float* src, int64_t num_blocks,
                               const float* importance, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kQK;
    const float* qw = importance != nullptr ? importance + b * kQK : nullptr;
    float scales[kQK / 16];
    int8_t L[kQK];
    for (int ib = 0; ib < kQK / 16; ++ib) {
      scales[ib] = GgmlMakeQxQuants(16, 32, x + 16 * ib, L + 16 * ib, 1,
                                    qw != nullptr ? qw + 16 * ib : nullptr);
    }
    GgmlFinishQ6_K(x, scales, L,
                   dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ6_K)));
  }
}

// ggml: dequantize_row_q2_K.
void GgmlDequantizeQ2_K(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    GgmlBlockQ2_K x;
    std::memcpy(&x, src + b * static_cast<int64_t>(sizeof(x)), sizeof(x));
    const float d = F16(x.d);
    const float min = F16(x.dmin);
    float* y = dst + b * kQK;
    const uint8_t* q = x.qs;
    int is = 0;
    for (int n = 0; n < kQK; n += 128) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half) {
          const uint8_t sc = x.scales[is++];
          const float dl = d * static_cast<float>(sc & 0xF);
          const float ml = min * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) {
            *y++ = dl * static_cast<float>((q[16 * half + l] >> shift) & 3) - ml;
          }
        }
      }
      q += 32;
    }
  }
}

// ggml: dequantize_row_q3_K.
void GgmlDequantizeQ3_K(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    GgmlBlockQ3_K x;
    std::memcpy(&x, src + b * static_cast<int64_t>(sizeof(x)), sizeof(x));
    const float d_all = F16(x.d);
    float* y = dst + b * kQK;
    const uint8_t* q = x.qs;
    int m = 1;
    int is = 0;
    for (int n = 0; n < kQK; n += 128) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half) {
          const float dl =
              d_all * static_cast<float>(ScaleQ3(is++, x.scales));
          for (int l = 16 * half; l < 16 * half + 16; ++l) {
            const int code =
                ((q[l] >> shift) & 3) - ((x.hmask[l] & m) != 0 ? 0 : 4);
            *y++ = dl * static_cast<float>(code);
          }
        }
        m <<= 1;
      }
      q += 32;
    }
  }
}

namespace {

template <bool kQ5>
void DequantizeQ45K(const uint8_t* src, int64_t num_blocks, float* dst) {
  using Block = std::conditional_t<kQ5, GgmlBlockQ5_K, GgmlBlockQ4_K>;
  for (int64_t b = 0; b < num_blocks; ++b) {
    Block x;
    std::memcpy(&x, src + b * static_cast<int64_t>(sizeof(x)), sizeof(x));
    const float d = F16(x.d);
    const float min = F16(x.dmin);
    float* y = dst + b * kQK;
    const uint8_t* q = x.qs;
    int u1 = 1;
    int u2 = 2;
    for (int j = 0, is = 0; j < kQK; j += 64, is += 2) {
      uint8_t sc, m;
      GetScaleMinK4(is, x.scales, sc, m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = min * static_cast<float>(m);
      GetScaleMinK4(is + 1, x.scales, sc, m);
      const float d2 = d * static_cast<float>(sc);
      const float m2 = min * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        int v = q[l] & 0xF;
        if constexpr (kQ5) v += (x.qh[l] & u1) != 0 ? 16 : 0;
        *y++ = d1 * static_cast<float>(v) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        int v = q[l] >> 4;
        if constexpr (kQ5) v += (x.qh[l] & u2) != 0 ? 16 : 0;
        *y++ = d2 * static_cast<float>(v) - m2;
      }
      q += 32;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

}  // namespace

// ggml: dequantize_row_q4_K.
void GgmlDequantizeQ4_K(const uint8_t* src, int64_t num_blocks, float* dst) {
  DequantizeQ45K<false>(src, num_blocks, dst);
}

// ggml: dequantize_row_q5_K.
void GgmlDequantizeQ5_K(const uint8_t* src, int64_t num_blocks, float* dst) {
  DequantizeQ45K<true>(src, num_blocks, dst);
}

// ggml: dequantize_row_q6_K (d * scale first, then times the code).
void GgmlDequantizeQ6_K(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    GgmlBlockQ6_K x;
    std::memcpy(&x, src + b * static_cast<int64_t>(sizeof(x)), sizeof(x));
    const float d = F16(x.d);
    float* y = dst + b * kQK;
    const uint8_t* ql = x.ql;
    const uint8_t* qh = x.qh;
    const int8_t* sc = x.scales;
    for (int n = 0; n < kQK; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

absl::Span<const GgmlFormatTraits> GgmlKQuantFormats() {
  static const std::array<GgmlFormatTraits, 5> rows = [] {
    const Isa isa = DetectedIsa();
    auto pick = [isa](GgmlQuantizeFn reference, GgmlQuantizeFn avx2,
                      GgmlQuantizeFn avx512) {
      switch (isa) {
        case Isa::kAvx512:
          return avx512;
        case Isa::kAvx2:
          return avx2;
        case Isa::kScalar:
          break;
      }
      return reference;
    };
    return std::array<GgmlFormatTraits, 5>{{
        {GgmlType::kQ2_K, "Q2_K", kQK, static_cast<int>(sizeof(GgmlBlockQ2_K)),
         GgmlQuantizeQ2_KReference,
         pick(GgmlQuantizeQ2_KReference, GgmlQuantizeQ2_KAvx2,
              GgmlQuantizeQ2_KAvx512),
         GgmlDequantizeQ2_K, true,
         "2-bit codes, 4-bit sub-block scales and minima of 16, 2.625 bpw"},
        {GgmlType::kQ3_K, "Q3_K", kQK, static_cast<int>(sizeof(GgmlBlockQ3_K)),
         GgmlQuantizeQ3_KReference,
         pick(GgmlQuantizeQ3_KReference, GgmlQuantizeQ3_KAvx2,
              GgmlQuantizeQ3_KAvx512),
         GgmlDequantizeQ3_K, true,
         "3-bit symmetric codes, 6-bit sub-block scales of 16, 3.4375 bpw"},
        {GgmlType::kQ4_K, "Q4_K", kQK, static_cast<int>(sizeof(GgmlBlockQ4_K)),
         GgmlQuantizeQ4_KReference,
         pick(GgmlQuantizeQ4_KReference, GgmlQuantizeQ4_KAvx2,
              GgmlQuantizeQ4_KAvx512),
         GgmlDequantizeQ4_K, true,
         "4-bit codes, 6-bit sub-block scales and minima of 32, 4.5 bpw"},
        {GgmlType::kQ5_K, "Q5_K", kQK, static_cast<int>(sizeof(GgmlBlockQ5_K)),
         GgmlQuantizeQ5_KReference,
         pick(GgmlQuantizeQ5_KReference, GgmlQuantizeQ5_KAvx2,
              GgmlQuantizeQ5_KAvx512),
         GgmlDequantizeQ5_K, true,
         "5-bit codes, 6-bit sub-block scales and minima of 32, 5.5 bpw"},
        {GgmlType::kQ6_K, "Q6_K", kQK, static_cast<int>(sizeof(GgmlBlockQ6_K)),
         GgmlQuantizeQ6_KReference,
         pick(GgmlQuantizeQ6_KReference, GgmlQuantizeQ6_KAvx2,
              GgmlQuantizeQ6_KAvx512),
         GgmlDequantizeQ6_K, true,
         "6-bit symmetric codes, 8-bit sub-block scales of 16, 6.5625 bpw"},
    }};
  }();
  return rows;
}

}  // namespace quantd::internal
