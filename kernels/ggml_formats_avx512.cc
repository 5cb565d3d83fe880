// AVX-512 paths of the ggml block quantizers (compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512dq; contract in internal/ggml_kernels.h).
//
// The 32-element formats run 16 blocks per iteration: each block's maximum
// (and minimum) is reduced into one lane of a vector, so the scales of the
// 16 blocks are computed at once, with the reference's f32 operations; the
// codes are then made block by block from the block's broadcast 1/scale.
// IQ4_NL and IQ4_XS run their scale search with one 32-element (sub-)block
// per lane: each lane adds its block's products in ggml's element order, so
// the sums, and the chosen scale, are the same bits as the reference's. A
// block where the reference relies on a special case (1/scale not finite;
// Q4_1/Q5_1's extremes being a signed zero; a maximum magnitude present
// with both signs) is patched or handed to the reference. Partial batches at
// the end go to the single-block code below or the reference.
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own
// _mm512_undefined_* operands (GCC bug 105593); silenced for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <array>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kernels.h"
#include "kernels/internal/ggml_search.h"

namespace quantd::internal {
namespace {

constexpr int kBatch = 16;  // blocks per iteration of the batched loops

inline __m512 Abs(__m512 v) { return _mm512_abs_ps(v); }

// F16C's conversion rounds to nearest even like FloatToHalf (the tests
// check it on scales at the f16 limits and in its subnormal range).
inline void StoreHalf(float f, uint8_t* dst) {
  const uint16_t h = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(dst, &h, 2);
}

inline void StoreHalves(__m512 v, uint16_t* dst) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst),
                      _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// Lanes that are +-Inf or NaN.
inline __mmask16 NotFinite(__m512 v) {
  return _mm512_cmp_ps_mask(Abs(v), _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ);
}

// C's `d ? 1.0f / d : 0.0f` on each lane.
inline __m512 InverseOrZero(__m512 d) {
  return _mm512_maskz_div_ps(
      _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ),
      _mm512_set1_ps(1.0f), d);
}

struct MaxOp {
  __m512 operator()(__m512 a, __m512 b) const { return _mm512_max_ps(a, b); }
};
struct MinOp {
  __m512 operator()(__m512 a, __m512 b) const { return _mm512_min_ps(a, b); }
};

// Lane k of the result is `op` over the 16 lanes of v[k] (a transposing
// reduction: four rounds of pairwise shuffles, then one permute). Only used
// where the order of the reduction cannot matter (max/min of values whose
// signed zeros are handled by the caller).
template <typename Op>
inline __m512 ReduceEach(const __m512* v, Op op) {
  __m512 w[8];
  for (int i = 0; i < 8; ++i) {
    w[i] = op(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
              _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  }
  __m512 u[4];
  for (int i = 0; i < 4; ++i) {
    u[i] = op(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
              _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xDD));
  }
  __m512 z[2];
  for (int i = 0; i < 2; ++i) {
    z[i] = op(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44),
              _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0xEE));
  }
  const __m512 r = op(_mm512_shuffle_ps(z[0], z[1], 0x88),
                      _mm512_shuffle_ps(z[0], z[1], 0xDD));
  // Lane 4k + m of r holds block 4m + k.
  return _mm512_permutexvar_ps(
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

// Per block of a 16-block batch at x: the largest and the smallest element.
inline void BatchMinMax(const float* x, __m512& maxv, __m512& minv) {
  __m512 mx[kBatch];
  __m512 mn[kBatch];
  for (int k = 0; k < kBatch; ++k) {
    const __m512 v0 = _mm512_loadu_ps(x + 32 * k);
    const __m512 v1 = _mm512_loadu_ps(x + 32 * k + 16);
    mx[k] = _mm512_max_ps(v0, v1);
    mn[k] = _mm512_min_ps(v0, v1);
  }
  maxv = ReduceEach(mx, MaxOp());
  minv = ReduceEach(mn, MinOp());
}

// Per block: the reference's signed element of largest magnitude (first on
// ties, +0 for a block of zeros). From max and min, except where both +m and
// -m occur, which the block's own scan decides.
inline __m512 BatchSignedAbsMax(const float* x, __m512 maxv, __m512 minv) {
  const __m512 neg_min = _mm512_sub_ps(_mm512_setzero_ps(), minv);
  const __m512 amax = _mm512_max_ps(maxv, neg_min);
  __m512 s = _mm512_mask_blend_ps(
      _mm512_cmp_ps_mask(maxv, neg_min, _CMP_GT_OQ), minv, maxv);
  const __mmask16 zero = _mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_EQ_OQ);
  s = _mm512_mask_mov_ps(s, zero, _mm512_setzero_ps());
  const __mmask16 both = _mm512_cmp_ps_mask(maxv, neg_min, _CMP_EQ_OQ) & ~zero;
  if (both != 0) {
    alignas(64) float tmp[kBatch];
    _mm512_store_ps(tmp, s);
    for (uint32_t m = both; m != 0; m &= m - 1) {
      const int k = std::countr_zero(m);
      const float* b = x + 32 * k;
      float best = 0.0f;
      float value = 0.0f;
      for (int j = 0; j < 32; ++j) {
        if (best < std::fabs(b[j])) {
          best = std::fabs(b[j]);
          value = b[j];
        }
      }
      tmp[k] = value;
    }
    s = _mm512_load_ps(tmp);
  }
  return s;
}

// roundf of each lane as an int32 (INT32_MIN out of range, like cvtt):
// truncating x + copysign(0.49999997f, x) rounds half away from zero for
// every float (checked exhaustively over all 2^32 inputs).
inline __m512i RoundHalfAway(__m512 x) {
  const __m512 half = _mm512_or_ps(_mm512_and_ps(x, _mm512_set1_ps(-0.0f)),
                                   _mm512_set1_ps(0.49999997f));
  return _mm512_cvttps_epi32(_mm512_add_ps(x, half));
}

inline __m512i TruncCodes(__m512 v, __m512 scale, __m512 offset, int max) {
  return _mm512_min_epi32(
      _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(v, scale), offset)),
      _mm512_set1_epi32(max));
}

inline void StoreNibbles(__m512i lo, __m512i hi, uint8_t* dst) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm512_cvtepi32_epi8(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4))));
}

// Q5 codes (5 bits each) of one block: qh from bit 4, nibbles from the rest.
inline void StoreQ5Codes(__m512i q0, __m512i q1, uint8_t* qh_dst, uint8_t* qs_dst) {
  const __m512i bit4 = _mm512_set1_epi32(0x10);
  const uint32_t qh = static_cast<uint32_t>(_mm512_test_epi32_mask(q0, bit4)) |
                      static_cast<uint32_t>(_mm512_test_epi32_mask(q1, bit4)) << 16;
  std::memcpy(qh_dst, &qh, 4);
  const __m512i low4 = _mm512_set1_epi32(0x0F);
  StoreNibbles(_mm512_and_si512(q0, low4), _mm512_and_si512(q1, low4), qs_dst);
}

// ---- Single blocks (the tails of the batched loops).

void Q8_0Blocks(const float* src, int64_t num_blocks, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ8_0);
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(Abs(v0), Abs(v1)));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) {
      GgmlQuantizeQ8_0Reference(x, 1, nullptr, y);
      continue;
    }
    StoreHalf(d, y);
    const __m512 idv = _mm512_set1_ps(id);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 2),
                     _mm512_cvtepi32_epi8(RoundHalfAway(_mm512_mul_ps(v0, idv))));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 18),
                     _mm512_cvtepi32_epi8(RoundHalfAway(_mm512_mul_ps(v1, idv))));
  }
}

// ---- IQ4_NL / IQ4_XS: the scale search with one sub-block per lane.

// Thresholds of best_index_int8: t[j] = values[j - 1] + values[j].
inline __m512 Iq4Thresholds() {
  alignas(64) float t[16] = {0.0f};
  for (int j = 1; j < 16; ++j) {
    t[j] = static_cast<float>(kGgmlIq4NlValues[j - 1] + kGgmlIq4NlValues[j]);
  }
  return _mm512_load_ps(t);
}

inline __m512 Iq4Values() {
  alignas(64) float v[16];
  for (int j = 0; j < 16; ++j) v[j] = static_cast<float>(kGgmlIq4NlValues[j]);
  return _mm512_load_ps(v);
}

// GgmlIq4NlIndex on each lane: the same branch-free binary search.
inline __m512i Iq4Index(__m512 x, __m512 thresholds) {
  const __m512 x2 = _mm512_add_ps(x, x);
  __m512i index = _mm512_setzero_si512();
  for (int step = 8; step > 0; step >>= 1) {
    const __m512i j = _mm512_add_epi32(index, _mm512_set1_epi32(step));
    const __mmask16 ge =
        _mm512_cmp_ps_mask(x2, _mm512_permutexvar_ps(j, thresholds), _CMP_GE_OQ);
    index = _mm512_mask_mov_epi32(index, ge, j);
  }
  return index;
}

// The 16 sub-blocks of 32 at x, transposed: xt[32 * j + k] is element j of
// sub-block k; wt likewise for the weights.
struct Iq4Tile {
  alignas(64) float xt[32 * kBatch];
  alignas(64) float wt[32 * kBatch];
};

// Fills a tile from 16 consecutive sub-blocks. Weights: x^2 without
// importance, else qw * sqrt(sigma2 + x^2) with sigma2 per lane.
inline void LoadIq4Tile(const float* x, const float* qw, __m512 sigma2,
                        Iq4Tile& tile) {
  const __m512i rows = _mm512_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224, 256,
                                         288, 320, 352, 384, 416, 448, 480);
  for (int j = 0; j < 32; ++j) {
    const __m512 xj = _mm512_i32gather_ps(rows, x + j, 4);
    const __m512 x2 = _mm512_mul_ps(xj, xj);
    __m512 w = x2;
    if (qw != nullptr) {
      w = _mm512_mul_ps(_mm512_i32gather_ps(rows, qw + j, 4),
                        _mm512_sqrt_ps(_mm512_add_ps(sigma2, x2)));
    }
    _mm512_store_ps(tile.xt + 16 * j, xj);
    _mm512_store_ps(tile.wt + 16 * j, w);
  }
}

// sum over j of w q x and of w q q, in ggml's order, for the codes that
// 1/scale `id` gives.
inline void Iq4Sums(const Iq4Tile& tile, __m512 id, __m512 thresholds,
                    __m512 values, __m512& sumqx, __m512& sumq2) {
  sumqx = _mm512_setzero_ps();
  sumq2 = _mm512_setzero_ps();
  for (int j = 0; j < 32; ++j) {
    const __m512 xj = _mm512_load_ps(tile.xt + 16 * j);
    const __m512 q = _mm512_permutexvar_ps(
        Iq4Index(_mm512_mul_ps(id, xj), thresholds), values);
    const __m512 wq = _mm512_mul_ps(_mm512_load_ps(tile.wt + 16 * j), q);
    sumqx = _mm512_add_ps(sumqx, _mm512_mul_ps(wq, xj));
    sumq2 = _mm512_add_ps(sumq2, _mm512_mul_ps(wq, q));
  }
}

// GgmlIq4SubBlockScale for the 16 sub-blocks of the tile.
__m512 Iq4Scales(const Iq4Tile& tile) {
  constexpr int kNtry = 7;
  const __m512 thresholds = Iq4Thresholds();
  const __m512 values = Iq4Values();
  __m512 amax = _mm512_setzero_ps();
  __m512 max = _mm512_setzero_ps();
  for (int j = 0; j < 32; ++j) {
    const __m512 xj = _mm512_load_ps(tile.xt + 16 * j);
    const __mmask16 gt = _mm512_cmp_ps_mask(Abs(xj), amax, _CMP_GT_OQ);
    amax = _mm512_mask_mov_ps(amax, gt, Abs(xj));
    max = _mm512_mask_mov_ps(max, gt, xj);
  }
  const __mmask16 live =
      _mm512_cmp_ps_mask(amax, _mm512_set1_ps(kGgmlGroupMaxEps), _CMP_NLT_UQ);
  const __m512 zero = _mm512_setzero_ps();
  __m512 d = _mm512_div_ps(_mm512_sub_ps(zero, max),
                           _mm512_set1_ps(static_cast<float>(kGgmlIq4NlValues[0])));
  __m512 sumqx, sumq2;
  Iq4Sums(tile, _mm512_div_ps(_mm512_set1_ps(1.0f), d), thresholds, values,
          sumqx, sumq2);
  d = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(sumq2, zero, _CMP_GT_OQ), sumqx, sumq2);
  __m512 best = _mm512_mul_ps(d, sumqx);
  for (int itry = -kNtry; itry <= kNtry; ++itry) {
    const __m512 id = _mm512_div_ps(
        _mm512_set1_ps(static_cast<float>(itry + kGgmlIq4NlValues[0])), max);
    Iq4Sums(tile, id, thresholds, values, sumqx, sumq2);
    const __mmask16 better =
        _mm512_cmp_ps_mask(sumq2, zero, _CMP_GT_OQ) &
        _mm512_cmp_ps_mask(_mm512_mul_ps(sumqx, sumqx), _mm512_mul_ps(best, sumq2),
                           _CMP_GT_OQ);
    if (better != 0) {
      const __m512 dn = _mm512_div_ps(sumqx, sumq2);
      d = _mm512_mask_mov_ps(d, better, dn);
      best = _mm512_mask_mov_ps(best, better, _mm512_mul_ps(dn, sumqx));
    }
  }
  return _mm512_maskz_mov_ps(live, d);
}

// IQ4 codes of 32 elements at x for 1/scale id, packed as 16 bytes.
inline void StoreIq4Codes(const float* x, float id, __m512 thresholds,
                          uint8_t* dst) {
  const __m512 idv = _mm512_set1_ps(id);
  StoreNibbles(Iq4Index(_mm512_mul_ps(idv, _mm512_loadu_ps(x)), thresholds),
               Iq4Index(_mm512_mul_ps(idv, _mm512_loadu_ps(x + 16)), thresholds),
               dst);
}

// GgmlFinishIq4Xs with vector codes.
void FinishIq4Xs(const float* x, const float* scales, float max_scale,
                 __m512 thresholds, uint8_t* dst) {
  const float d = -max_scale / 32.0f;
  StoreHalf(d, dst);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  uint16_t scales_h = 0;
  uint8_t scales_l[4] = {0, 0, 0, 0};
  for (int ib = 0; ib < 8; ++ib) {
    int l = GgmlNearestInt(id * scales[ib]);
    l = l < -32 ? -32 : l > 31 ? 31 : l;
    const float dl = d * static_cast<float>(l);
    StoreIq4Codes(x + 32 * ib, dl != 0.0f ? 1.0f / dl : 0.0f, thresholds,
                  dst + 8 + 16 * ib);
    l += 32;
    scales_l[ib / 2] = static_cast<uint8_t>(scales_l[ib / 2] | (l & 0xF) << (4 * (ib % 2)));
    scales_h = static_cast<uint16_t>(scales_h | (l >> 4) << (2 * ib));
  }
  std::memcpy(dst + 2, &scales_h, 2);
  std::memcpy(dst + 4, scales_l, 4);
}

// ---- MXFP4.

// best_index_mxfp4 for the 16 lanes of x with the block's half scale d. The
// negative half of the table mirrors the positive one (kv[8 + i] = -kv[i],
// and |(-c) - x| is |c - |x|| bit for bit), and an entry of the other sign
// than x is never strictly nearer than entry 0 (value 0): so the first
// nearest entry is the first nearest positive one for |x|, moved to the
// negative half when x < 0 and it is not entry 0.
inline __m512i Mxfp4Index(__m512 x, const __m512* c) {
  const __m512 ax = Abs(x);
  __m512 best = Abs(_mm512_sub_ps(c[0], ax));
  __m512i index = _mm512_setzero_si512();
  for (int i = 1; i < 8; ++i) {
    const __m512 err = Abs(_mm512_sub_ps(c[i], ax));
    const __mmask16 lt = _mm512_cmp_ps_mask(err, best, _CMP_LT_OQ);
    best = _mm512_mask_mov_ps(best, lt, err);
    index = _mm512_mask_mov_epi32(index, lt, _mm512_set1_epi32(i));
  }
  const __mmask16 negative =
      _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ) &
      _mm512_test_epi32_mask(index, index);
  return _mm512_mask_add_epi32(index, negative, index, _mm512_set1_epi32(8));
}

}  // namespace

bool GgmlAllFiniteAvx512(const float* x, int64_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i m = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m = _mm512_max_epi32(m, _mm512_and_si512(_mm512_loadu_si512(x + i), abs_mask));
  }
  if (i < n) {
    const auto tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    m = _mm512_max_epi32(
        m, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail, x + i), abs_mask));
  }
  return _mm512_reduce_max_epi32(m) < 0x7F800000;
}

void GgmlQuantizeQ8_0Avx512(const float* src, int64_t num_blocks,
                            const float* /*importance*/, uint8_t* dst) {
  int64_t b = 0;
  for (; b + kBatch <= num_blocks; b += kBatch) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockQ8_0);
    __m512 m[kBatch];
    for (int k = 0; k < kBatch; ++k) {
      m[k] = _mm512_max_ps(Abs(_mm512_loadu_ps(x + 32 * k)),
                           Abs(_mm512_loadu_ps(x + 32 * k + 16)));
    }
    const __m512 d = _mm512_div_ps(ReduceEach(m, MaxOp()), _mm512_set1_ps(127.0f));
    const __m512 id = InverseOrZero(d);
    alignas(64) float ids[kBatch];
    alignas(64) uint16_t halves[kBatch];
    _mm512_store_ps(ids, id);
    StoreHalves(d, halves);
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * sizeof(GgmlBlockQ8_0);
      std::memcpy(yk, &halves[k], 2);
      const __m512 idv = _mm512_set1_ps(ids[k]);
      const __m128i q0 = _mm512_cvtepi32_epi8(
          RoundHalfAway(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * k), idv)));
      const __m128i q1 = _mm512_cvtepi32_epi8(
          RoundHalfAway(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * k + 16), idv)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(yk + 2),
                          _mm256_set_m128i(q1, q0));
    }
    for (uint32_t bad = NotFinite(id); bad != 0; bad &= bad - 1) {
      const int k = std::countr_zero(bad);
      GgmlQuantizeQ8_0Reference(x + 32 * k, 1, nullptr, y + k * sizeof(GgmlBlockQ8_0));
    }
  }
  Q8_0Blocks(src + b * 32, num_blocks - b, dst + b * sizeof(GgmlBlockQ8_0));
}

namespace {

// Q4_0 and Q5_0: d = (signed max) / divisor, codes min(max_code,
// trunc(x / d + offset)).
template <int kBlockBytes, int kMaxCode>
void SymmetricBatches(const float* src, int64_t num_blocks, float divisor,
                      float offset, uint8_t* dst,
                      void (*reference)(const float*, int64_t, const float*, uint8_t*)) {
  int64_t b = 0;
  for (; b + kBatch <= num_blocks; b += kBatch) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * kBlockBytes;
    __m512 maxv, minv;
    BatchMinMax(x, maxv, minv);
    const __m512 d = _mm512_div_ps(BatchSignedAbsMax(x, maxv, minv),
                                   _mm512_set1_ps(divisor));
    const __m512 id = InverseOrZero(d);
    alignas(64) float ids[kBatch];
    alignas(64) uint16_t halves[kBatch];
    _mm512_store_ps(ids, id);
    StoreHalves(d, halves);
    const __m512 off = _mm512_set1_ps(offset);
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * kBlockBytes;
      std::memcpy(yk, &halves[k], 2);
      const __m512 idv = _mm512_set1_ps(ids[k]);
      const __m512i q0 = TruncCodes(_mm512_loadu_ps(x + 32 * k), idv, off, kMaxCode);
      const __m512i q1 = TruncCodes(_mm512_loadu_ps(x + 32 * k + 16), idv, off, kMaxCode);
      if constexpr (kMaxCode == 15) {
        StoreNibbles(q0, q1, yk + 2);
      } else {
        StoreQ5Codes(q0, q1, yk + 2, yk + 6);
      }
    }
    for (uint32_t bad = NotFinite(id); bad != 0; bad &= bad - 1) {
      const int k = std::countr_zero(bad);
      reference(x + 32 * k, 1, nullptr, y + k * kBlockBytes);
    }
  }
  for (; b < num_blocks; ++b) {
    // Tail: one block at a time, as the batch would do it.
    const float* x = src + b * 32;
    uint8_t* y = dst + b * kBlockBytes;
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    float s = 0.0f;
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(Abs(v0), Abs(v1)));
    if (amax != 0.0f) {
      for (int j = 0; j < 32; ++j) {
        if (std::fabs(x[j]) == amax) {
          s = x[j];
          break;
        }
      }
    }
    const float d = s / divisor;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!std::isfinite(id)) {
      reference(x, 1, nullptr, y);
      continue;
    }
    StoreHalf(d, y);
    const __m512 idv = _mm512_set1_ps(id);
    const __m512 off = _mm512_set1_ps(offset);
    const __m512i q0 = TruncCodes(v0, idv, off, kMaxCode);
    const __m512i q1 = TruncCodes(v1, idv, off, kMaxCode);
    if constexpr (kMaxCode == 15) {
      StoreNibbles(q0, q1, y + 2);
    } else {
      StoreQ5Codes(q0, q1, y + 2, y + 6);
    }
  }
}

// Q4_1 and Q5_1: d = (max - min) / divisor, m = min, codes
// trunc((x - min) / d + 0.5), clamped to 15 for Q4_1 and not for Q5_1.
template <int kBlockBytes, int kMaxCode>
void AffineBatches(const float* src, int64_t num_blocks, float divisor,
                   uint8_t* dst,
                   void (*reference)(const float*, int64_t, const float*, uint8_t*)) {
  constexpr int kCodes = kMaxCode == 15 ? 4 : 8;  // offset of qs in the block
  const __m512 half = _mm512_set1_ps(0.5f);
  auto codes = [&](__m512 v, __m512 minv, __m512 idv) {
    const __m512i q =
        _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, minv), idv), half));
    if constexpr (kMaxCode == 15) {
      return _mm512_min_epi32(q, _mm512_set1_epi32(15));
    } else {
      return q;
    }
  };
  auto store = [&](__m512i q0, __m512i q1, uint8_t* y) {
    if constexpr (kMaxCode == 15) {
      StoreNibbles(q0, q1, y + kCodes);
    } else {
      StoreQ5Codes(q0, q1, y + 4, y + kCodes);
    }
  };
  int64_t b = 0;
  for (; b + kBatch <= num_blocks; b += kBatch) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * kBlockBytes;
    __m512 maxv, minv;
    BatchMinMax(x, maxv, minv);
    const __m512 d = _mm512_div_ps(_mm512_sub_ps(maxv, minv), _mm512_set1_ps(divisor));
    const __m512 id = InverseOrZero(d);
    // Which zero the reference keeps as min or max depends on the order of
    // the elements; an overflowing range makes codes from NaN.
    const __m512 zero = _mm512_setzero_ps();
    const uint32_t special = _mm512_cmp_ps_mask(minv, zero, _CMP_EQ_OQ) |
                             _mm512_cmp_ps_mask(maxv, zero, _CMP_EQ_OQ) |
                             NotFinite(d) | NotFinite(id);
    alignas(64) float ids[kBatch];
    alignas(64) float mins[kBatch];
    alignas(64) uint16_t d_halves[kBatch];
    alignas(64) uint16_t m_halves[kBatch];
    _mm512_store_ps(ids, id);
    _mm512_store_ps(mins, minv);
    StoreHalves(d, d_halves);
    StoreHalves(minv, m_halves);
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * kBlockBytes;
      std::memcpy(yk, &d_halves[k], 2);
      std::memcpy(yk + 2, &m_halves[k], 2);
      const __m512 idv = _mm512_set1_ps(ids[k]);
      const __m512 mk = _mm512_set1_ps(mins[k]);
      store(codes(_mm512_loadu_ps(x + 32 * k), mk, idv),
            codes(_mm512_loadu_ps(x + 32 * k + 16), mk, idv), yk);
    }
    for (uint32_t bad = special; bad != 0; bad &= bad - 1) {
      const int k = std::countr_zero(bad);
      reference(x + 32 * k, 1, nullptr, y + k * kBlockBytes);
    }
  }
  for (; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * kBlockBytes;
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float min = _mm512_reduce_min_ps(_mm512_min_ps(v0, v1));
    const float max = _mm512_reduce_max_ps(_mm512_max_ps(v0, v1));
    const float d = (max - min) / divisor;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (min == 0.0f || max == 0.0f || !std::isfinite(d) || !std::isfinite(id)) {
      reference(x, 1, nullptr, y);
      continue;
    }
    StoreHalf(d, y);
    StoreHalf(min, y + 2);
    const __m512 idv = _mm512_set1_ps(id);
    const __m512 mk = _mm512_set1_ps(min);
    store(codes(v0, mk, idv), codes(v1, mk, idv), y);
  }
}

}  // namespace

void GgmlQuantizeQ4_0NoImportanceAvx512(const float* src, int64_t num_blocks,
                                        const float* /*importance*/, uint8_t* dst) {
  SymmetricBatches<sizeof(GgmlBlockQ4_0), 15>(src, num_blocks, -8.0f, 8.5f, dst,
                                              GgmlQuantizeQ4_0Reference);
}

void GgmlQuantizeQ5_0NoImportanceAvx512(const float* src, int64_t num_blocks,
                                        const float* /*importance*/, uint8_t* dst) {
  SymmetricBatches<sizeof(GgmlBlockQ5_0), 31>(src, num_blocks, -16.0f, 16.5f, dst,
                                              GgmlQuantizeQ5_0Reference);
}

void GgmlQuantizeQ4_1NoImportanceAvx512(const float* src, int64_t num_blocks,
                                        const float* /*importance*/, uint8_t* dst) {
  AffineBatches<sizeof(GgmlBlockQ4_1), 15>(src, num_blocks, 15.0f, dst,
                                           GgmlQuantizeQ4_1Reference);
}

void GgmlQuantizeQ5_1NoImportanceAvx512(const float* src, int64_t num_blocks,
                                        const float* /*importance*/, uint8_t* dst) {
  AffineBatches<sizeof(GgmlBlockQ5_1), 31>(src, num_blocks, 31.0f, dst,
                                           GgmlQuantizeQ5_1Reference);
}

void GgmlQuantizeIq4NlAvx512(const float* src, int64_t num_blocks,
                             const float* importance, uint8_t* dst) {
  const __m512 thresholds = Iq4Thresholds();
  Iq4Tile tile;
  int64_t b = 0;
  for (; b + kBatch <= num_blocks; b += kBatch) {
    const float* x = src + b * 32;
    const float* qw = importance != nullptr ? importance + b * 32 : nullptr;
    uint8_t* y = dst + b * sizeof(GgmlBlockIq4Nl);
    __m512 sigma2 = _mm512_setzero_ps();
    if (qw != nullptr) {
      // 2 * mean(x^2) per block, summed in element order in each lane.
      const __m512i rows = _mm512_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224,
                                             256, 288, 320, 352, 384, 416, 448, 480);
      for (int j = 0; j < 32; ++j) {
        const __m512 xj = _mm512_i32gather_ps(rows, x + j, 4);
        sigma2 = _mm512_add_ps(sigma2, _mm512_mul_ps(xj, xj));
      }
      sigma2 = _mm512_mul_ps(sigma2, _mm512_set1_ps(2.0f / 32.0f));
    }
    LoadIq4Tile(x, qw, sigma2, tile);
    const __m512 scale = Iq4Scales(tile);
    alignas(64) float ids[kBatch];
    alignas(64) uint16_t halves[kBatch];
    _mm512_store_ps(ids, InverseOrZero(scale));
    StoreHalves(scale, halves);
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * sizeof(GgmlBlockIq4Nl);
      std::memcpy(yk, &halves[k], 2);
      StoreIq4Codes(x + 32 * k, ids[k], thresholds, yk + 2);
    }
  }
  GgmlQuantizeIq4NlReference(src + b * 32, num_blocks - b,
                             importance != nullptr ? importance + b * 32 : nullptr,
                             dst + b * sizeof(GgmlBlockIq4Nl));
}

void GgmlQuantizeIq4XsAvx512(const float* src, int64_t num_blocks,
                             const float* importance, uint8_t* dst) {
  const __m512 thresholds = Iq4Thresholds();
  Iq4Tile tile;
  int64_t b = 0;
  // Two super-blocks (16 sub-blocks) per tile.
  for (; b + 2 <= num_blocks; b += 2) {
    const float* x = src + b * 256;
    const float* qw = importance != nullptr ? importance + b * 256 : nullptr;
    uint8_t* y = dst + b * sizeof(GgmlBlockIq4Xs);
    __m512 sigma2 = _mm512_setzero_ps();
    if (qw != nullptr) {
      sigma2 = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(GgmlIq4Sigma2(x, 256)),
                                    _mm512_set1_ps(GgmlIq4Sigma2(x + 256, 256)));
    }
    LoadIq4Tile(x, qw, sigma2, tile);
    alignas(64) float scales[kBatch];
    _mm512_store_ps(scales, Iq4Scales(tile));
    for (int s = 0; s < 2; ++s) {
      float max_scale = 0.0f;
      float amax_scale = 0.0f;
      for (int ib = 0; ib < 8; ++ib) {
        if (std::fabs(scales[8 * s + ib]) > amax_scale) {
          amax_scale = std::fabs(scales[8 * s + ib]);
          max_scale = scales[8 * s + ib];
        }
      }
      FinishIq4Xs(x + 256 * s, scales + 8 * s, max_scale, thresholds,
                  y + s * sizeof(GgmlBlockIq4Xs));
    }
  }
  GgmlQuantizeIq4XsReference(src + b * 256, num_blocks - b,
                             importance != nullptr ? importance + b * 256 : nullptr,
                             dst + b * sizeof(GgmlBlockIq4Xs));
}

void GgmlQuantizeMxfp4Avx512(const float* src, int64_t num_blocks,
                             const float* /*importance*/, uint8_t* dst) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 32;
    uint8_t* y = dst + b * sizeof(GgmlBlockMxfp4);
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(Abs(v0), Abs(v1)));
    const uint8_t e =
        amax > 0.0f
            ? X86TruncToByte(std::floor(std::log2(amax)) - 2.0f + 127.0f)
            : uint8_t{0};
    const float d = GgmlE8m0ToFloatHalf(e);
    y[0] = e;
    __m512 c[8];
    for (int i = 0; i < 8; ++i) {
      c[i] = _mm512_set1_ps(static_cast<float>(kGgmlMxfp4Values[i]) * d);
    }
    StoreNibbles(Mxfp4Index(v0, c), Mxfp4Index(v1, c), y + 1);
  }
}

}  // namespace quantd::internal
