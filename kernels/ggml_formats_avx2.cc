// AVX2 paths of the ggml block quantizers (compiled with -mavx2 -mfma
// -mf16c; contract in internal/ggml_kernels.h).
//
// The 32-element formats run 8 blocks per iteration, as the AVX-512 paths
// run 16: each block's maximum (and minimum) is reduced into one lane of a
// vector, so the scales of the 8 blocks come out of one set of the
// reference's f32 operations; the codes are then made block by block from
// the block's broadcast 1/scale. IQ4_NL and IQ4_XS run their scale search
// with one 32-element (sub-)block per lane (8 lanes: 8 IQ4_NL blocks or the
// 8 sub-blocks of one IQ4_XS super-block), each lane adding its block's
// products in ggml's element order, so the sums and the chosen scale are the
// reference's bits. A block where the reference relies on a special case
// (1/scale not finite; Q4_1/Q5_1's extremes being a signed zero; a maximum
// magnitude present with both signs) is patched or handed to the reference.
// The last partial batch runs zero-padded into a scratch batch.
#include <immintrin.h>

#include <algorithm>
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

constexpr int kBatch = 8;  // blocks per iteration of the batched loops

using ReferenceFn = void (*)(const float*, int64_t, const float*, uint8_t*);

inline __m256 Abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// F16C's conversion rounds to nearest even like FloatToHalf (the tests
// check it on scales at the f16 limits and in its subnormal range).
inline void StoreHalf(float f, uint8_t* dst) {
  const uint16_t h = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(dst, &h, 2);
}

inline void StoreHalves(__m256 v, uint16_t* dst) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// Lanes that are +-Inf or NaN, as a bit mask.
inline uint32_t NotFinite(__m256 v) {
  return static_cast<uint32_t>(_mm256_movemask_ps(
      _mm256_cmp_ps(Abs(v), _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ)));
}

// C's `d ? 1.0f / d : 0.0f` on each lane.
inline __m256 InverseOrZero(__m256 d) {
  return _mm256_and_ps(_mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_UQ),
                       _mm256_div_ps(_mm256_set1_ps(1.0f), d));
}

struct MaxOp {
  __m256 operator()(__m256 a, __m256 b) const { return _mm256_max_ps(a, b); }
};
struct MinOp {
  __m256 operator()(__m256 a, __m256 b) const { return _mm256_min_ps(a, b); }
};

// Lane k of the result is `op` over the 8 lanes of v[k] (a transposing
// reduction). Only used where the order of the reduction cannot matter
// (max/min of values whose signed zeros are handled by the caller).
template <typename Op>
inline __m256 ReduceEach(const __m256* v, Op op) {
  __m256 w[4];
  for (int i = 0; i < 4; ++i) {
    // Half h of w[i] reduces v[2i + h] to 4 lanes.
    w[i] = op(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
              _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
  }
  __m256 u[2];
  for (int i = 0; i < 2; ++i) {
    u[i] = op(_mm256_shuffle_ps(w[2 * i], w[2 * i + 1], 0x44),
              _mm256_shuffle_ps(w[2 * i], w[2 * i + 1], 0xEE));
  }
  const __m256 r = op(_mm256_shuffle_ps(u[0], u[1], 0x88),
                      _mm256_shuffle_ps(u[0], u[1], 0xDD));
  // Half h of r holds blocks h, 2 + h, 4 + h, 6 + h.
  return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline void LoadBlock(const float* x, __m256* v) {
  for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + 8 * i);
}

// Per block of an 8-block batch at x: the largest and the smallest element.
inline void BatchMinMax(const float* x, __m256& maxv, __m256& minv) {
  __m256 mx[kBatch];
  __m256 mn[kBatch];
  for (int k = 0; k < kBatch; ++k) {
    __m256 v[4];
    LoadBlock(x + 32 * k, v);
    mx[k] = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
    mn[k] = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
  }
  maxv = ReduceEach(mx, MaxOp());
  minv = ReduceEach(mn, MinOp());
}

// The reference's signed max-magnitude element of the block at x (first on
// ties, +0 if the block is all zeros) by a scan.
inline float ScanSignedAbsMax(const float* x) {
  float best = 0.0f;
  float value = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (best < std::fabs(x[j])) {
      best = std::fabs(x[j]);
      value = x[j];
    }
  }
  return value;
}

// Per block: the reference's signed element of largest magnitude. From max
// and min, except where both +m and -m occur, which the block's own scan
// decides.
inline __m256 BatchSignedAbsMax(const float* x, __m256 maxv, __m256 minv) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 neg_min = _mm256_sub_ps(zero, minv);
  const __m256 amax = _mm256_max_ps(maxv, neg_min);
  __m256 s = _mm256_blendv_ps(minv, maxv, _mm256_cmp_ps(maxv, neg_min, _CMP_GT_OQ));
  const __m256 is_zero = _mm256_cmp_ps(amax, zero, _CMP_EQ_OQ);
  s = _mm256_andnot_ps(is_zero, s);
  const uint32_t both =
      static_cast<uint32_t>(_mm256_movemask_ps(_mm256_andnot_ps(
          is_zero, _mm256_cmp_ps(maxv, neg_min, _CMP_EQ_OQ))));
  if (both != 0) {
    alignas(32) float tmp[kBatch];
    _mm256_store_ps(tmp, s);
    for (uint32_t m = both; m != 0; m &= m - 1) {
      const int k = std::countr_zero(m);
      tmp[k] = ScanSignedAbsMax(x + 32 * k);
    }
    s = _mm256_load_ps(tmp);
  }
  return s;
}

// roundf of each lane as an int32 (INT32_MIN out of range, like cvtt):
// truncating x + copysign(0.49999997f, x) rounds half away from zero for
// every float (the AVX-512 path's identity).
inline __m256i RoundHalfAway(__m256 x) {
  const __m256 half = _mm256_or_ps(_mm256_and_ps(x, _mm256_set1_ps(-0.0f)),
                                   _mm256_set1_ps(0.49999997f));
  return _mm256_cvttps_epi32(_mm256_add_ps(x, half));
}

// Bytes lo[j] | hi[j] << 4 for the 16 codes (each 0..15) in lo0/lo1 and
// hi0/hi1 (eight int32 each).
inline void StoreNibbles(__m256i lo0, __m256i lo1, __m256i hi0, __m256i hi1,
                         uint8_t* dst) {
  const __m256i b0 = _mm256_or_si256(lo0, _mm256_slli_epi32(hi0, 4));
  const __m256i b1 = _mm256_or_si256(lo1, _mm256_slli_epi32(hi1, 4));
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(b0, b1), 0xD8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm_packus_epi16(_mm256_castsi256_si128(w),
                                    _mm256_extracti128_si256(w, 1)));
}

// Q5 codes (5 bits each, as int32; bits above 4 ignored like the low byte
// of a C cast) of one block: qh from bit 4, nibbles from bits 0-3.
inline void StoreQ5Codes(__m256i* q, uint8_t* qh_dst, uint8_t* qs_dst) {
  uint32_t qh = 0;
  const __m256i low4 = _mm256_set1_epi32(0x0F);
  for (int k = 0; k < 4; ++k) {
    qh |= static_cast<uint32_t>(_mm256_movemask_ps(
              _mm256_castsi256_ps(_mm256_slli_epi32(q[k], 27))))
          << (8 * k);
    q[k] = _mm256_and_si256(q[k], low4);
  }
  std::memcpy(qh_dst, &qh, 4);
  StoreNibbles(q[0], q[1], q[2], q[3], qs_dst);
}

// Runs `batch` (8 blocks of 32 at x -> 8 blocks at y) on the num_blocks
// blocks, the last partial batch zero-padded in scratch.
template <typename Batch>
inline void Batched(const float* src, int64_t num_blocks, int block_bytes,
                    uint8_t* dst, Batch batch) {
  int64_t b = 0;
  for (; b + kBatch <= num_blocks; b += kBatch) {
    batch(src + b * 32, dst + b * block_bytes);
  }
  if (b < num_blocks) {
    const auto n = static_cast<size_t>(num_blocks - b);
    alignas(32) float x[32 * kBatch] = {};
    uint8_t y[136 * kBatch];
    std::memcpy(x, src + b * 32, n * 32 * sizeof(float));
    batch(x, y);
    std::memcpy(dst + b * block_bytes, y, n * static_cast<size_t>(block_bytes));
  }
}

// ---- IQ4_NL / IQ4_XS: the scale search with one sub-block per lane.

// best_index_int8's thresholds t[j] = values[j - 1] + values[j] (j >= 1)
// arranged for an 8-lane binary search: t[8], t[2k] and t[2k + 1] by k, and
// the values in two halves.
struct Iq4Tables {
  __m256 t8;
  __m256 t_even;
  __m256 t_odd;
  __m256 values_lo;
  __m256 values_hi;
};

inline Iq4Tables MakeIq4Tables() {
  auto t = [](int j) {
    return j == 0 ? 0.0f
                  : static_cast<float>(kGgmlIq4NlValues[j - 1] + kGgmlIq4NlValues[j]);
  };
  alignas(32) float even[8], odd[8], lo[8], hi[8];
  for (int k = 0; k < 8; ++k) {
    even[k] = t(2 * k);
    odd[k] = t(2 * k + 1);
    lo[k] = static_cast<float>(kGgmlIq4NlValues[k]);
    hi[k] = static_cast<float>(kGgmlIq4NlValues[8 + k]);
  }
  return {_mm256_set1_ps(t(8)), _mm256_load_ps(even), _mm256_load_ps(odd),
          _mm256_load_ps(lo), _mm256_load_ps(hi)};
}

// GgmlIq4NlIndex on each lane: the same binary search (index + step is
// taken where 2x >= t[index + step]); NaN gives 0.
inline __m256i Iq4Index(__m256 x, const Iq4Tables& t) {
  const __m256 x2 = _mm256_add_ps(x, x);
  __m256i index = _mm256_and_si256(
      _mm256_castps_si256(_mm256_cmp_ps(x2, t.t8, _CMP_GE_OQ)), _mm256_set1_epi32(8));
  for (int step = 4; step > 0; step >>= 1) {
    const __m256i j = _mm256_add_epi32(index, _mm256_set1_epi32(step));
    const __m256 threshold = _mm256_permutevar8x32_ps(
        step == 1 ? t.t_odd : t.t_even, _mm256_srli_epi32(j, 1));
    const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(x2, threshold, _CMP_GE_OQ));
    index = _mm256_add_epi32(index, _mm256_and_si256(ge, _mm256_set1_epi32(step)));
  }
  return index;
}

// values[index] as f32.
inline __m256 Iq4Value(__m256i index, const Iq4Tables& t) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.values_lo, index),
                          _mm256_permutevar8x32_ps(t.values_hi, index),
                          _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
}

// out[i] lane k = rows[k][i] for the 8 rows of 8 floats at src + stride * k.
inline void Transpose8x8(const float* src, int64_t stride, __m256* out) {
  __m256 r[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + stride * k);
  __m256 t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m256 s[8];
  for (int h = 0; h < 2; ++h) {  // rows 0-3, rows 4-7
    s[4 * h + 0] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    s[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    s[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    s[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    out[i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x20);
    out[4 + i] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x31);
  }
}

// The 8 sub-blocks of 32 at x, transposed: xt[8 * j + k] is element j of
// sub-block k; wt likewise for the weights.
struct Iq4Tile {
  alignas(32) float xt[32 * kBatch];
  alignas(32) float wt[32 * kBatch];
};

inline void TransposeTile(const float* x, float* xt) {
  for (int c = 0; c < 4; ++c) {
    __m256 out[8];
    Transpose8x8(x + 8 * c, 32, out);
    for (int i = 0; i < 8; ++i) _mm256_store_ps(xt + 8 * (8 * c + i), out[i]);
  }
}

// Fills a tile. Weights: x^2 without importance, else
// qw * sqrt(sigma2 + x^2) with sigma2 per lane; `per_block_sigma2` computes
// it per lane as the reference's 2 * mean(x^2) of the block (IQ4_NL),
// otherwise `sigma2` is used (IQ4_XS: the super-block's).
inline void LoadIq4Tile(const float* x, const float* qw, bool per_block_sigma2,
                        __m256 sigma2, Iq4Tile& tile) {
  TransposeTile(x, tile.xt);
  if (qw == nullptr) {
    for (int j = 0; j < 32; ++j) {
      const __m256 xj = _mm256_load_ps(tile.xt + 8 * j);
      _mm256_store_ps(tile.wt + 8 * j, _mm256_mul_ps(xj, xj));
    }
    return;
  }
  if (per_block_sigma2) {
    sigma2 = _mm256_setzero_ps();
    for (int j = 0; j < 32; ++j) {
      const __m256 xj = _mm256_load_ps(tile.xt + 8 * j);
      sigma2 = _mm256_add_ps(sigma2, _mm256_mul_ps(xj, xj));
    }
    sigma2 = _mm256_mul_ps(sigma2, _mm256_set1_ps(2.0f / 32.0f));
  }
  TransposeTile(qw, tile.wt);
  for (int j = 0; j < 32; ++j) {
    const __m256 xj = _mm256_load_ps(tile.xt + 8 * j);
    const __m256 w = _mm256_mul_ps(
        _mm256_load_ps(tile.wt + 8 * j),
        _mm256_sqrt_ps(_mm256_add_ps(sigma2, _mm256_mul_ps(xj, xj))));
    _mm256_store_ps(tile.wt + 8 * j, w);
  }
}

// sum over j of w q x and of w q q, in ggml's order, for the codes that
// 1/scale `id` gives.
inline void Iq4Sums(const Iq4Tile& tile, __m256 id, const Iq4Tables& t,
                    __m256& sumqx, __m256& sumq2) {
  sumqx = _mm256_setzero_ps();
  sumq2 = _mm256_setzero_ps();
  for (int j = 0; j < 32; ++j) {
    const __m256 xj = _mm256_load_ps(tile.xt + 8 * j);
    const __m256 q = Iq4Value(Iq4Index(_mm256_mul_ps(id, xj), t), t);
    const __m256 wq = _mm256_mul_ps(_mm256_load_ps(tile.wt + 8 * j), q);
    sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, xj));
    sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
  }
}

// GgmlIq4SubBlockScale for the 8 sub-blocks of the tile.
__m256 Iq4Scales(const Iq4Tile& tile, const Iq4Tables& t) {
  constexpr int kNtry = 7;
  __m256 amax = _mm256_setzero_ps();
  __m256 max = _mm256_setzero_ps();
  for (int j = 0; j < 32; ++j) {
    const __m256 xj = _mm256_load_ps(tile.xt + 8 * j);
    const __m256 gt = _mm256_cmp_ps(Abs(xj), amax, _CMP_GT_OQ);
    amax = _mm256_blendv_ps(amax, Abs(xj), gt);
    max = _mm256_blendv_ps(max, xj, gt);
  }
  const __m256 live =
      _mm256_cmp_ps(amax, _mm256_set1_ps(kGgmlGroupMaxEps), _CMP_NLT_UQ);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 values0 = _mm256_set1_ps(static_cast<float>(kGgmlIq4NlValues[0]));
  __m256 d = _mm256_div_ps(_mm256_xor_ps(max, _mm256_set1_ps(-0.0f)), values0);
  __m256 sumqx, sumq2;
  Iq4Sums(tile, _mm256_div_ps(_mm256_set1_ps(1.0f), d), t, sumqx, sumq2);
  d = _mm256_and_ps(_mm256_cmp_ps(sumq2, zero, _CMP_GT_OQ),
                    _mm256_div_ps(sumqx, sumq2));
  __m256 best = _mm256_mul_ps(d, sumqx);
  for (int itry = -kNtry; itry <= kNtry; ++itry) {
    const __m256 id = _mm256_div_ps(
        _mm256_set1_ps(static_cast<float>(itry + kGgmlIq4NlValues[0])), max);
    Iq4Sums(tile, id, t, sumqx, sumq2);
    const __m256 better = _mm256_and_ps(
        _mm256_cmp_ps(sumq2, zero, _CMP_GT_OQ),
        _mm256_cmp_ps(_mm256_mul_ps(sumqx, sumqx), _mm256_mul_ps(best, sumq2),
                      _CMP_GT_OQ));
    if (_mm256_movemask_ps(better) != 0) {
      const __m256 dn = _mm256_div_ps(sumqx, sumq2);
      d = _mm256_blendv_ps(d, dn, better);
      best = _mm256_blendv_ps(best, _mm256_mul_ps(dn, sumqx), better);
    }
  }
  return _mm256_and_ps(live, d);
}

// IQ4 codes of the 32 elements at x for 1/scale id, packed as 16 bytes.
inline void StoreIq4Codes(const float* x, float id, const Iq4Tables& t,
                          uint8_t* dst) {
  const __m256 idv = _mm256_set1_ps(id);
  __m256i q[4];
  for (int i = 0; i < 4; ++i) {
    q[i] = Iq4Index(_mm256_mul_ps(idv, _mm256_loadu_ps(x + 8 * i)), t);
  }
  StoreNibbles(q[0], q[1], q[2], q[3], dst);
}

// ---- MXFP4.

// best_index_mxfp4 for the 8 lanes of x with the block's entries
// c[i] = kGgmlMxfp4Values[i] * d, i < 8 (the argument of the AVX-512 path:
// the negative half mirrors the positive one, and an entry of the other
// sign than x is never strictly nearer than entry 0).
inline __m256i Mxfp4Index(__m256 x, const __m256* c) {
  const __m256 ax = Abs(x);
  __m256 best = Abs(_mm256_sub_ps(c[0], ax));
  __m256i index = _mm256_setzero_si256();
  for (int i = 1; i < 8; ++i) {
    const __m256 err = Abs(_mm256_sub_ps(c[i], ax));
    const __m256i lt = _mm256_castps_si256(_mm256_cmp_ps(err, best, _CMP_LT_OQ));
    best = _mm256_min_ps(err, best);
    index = _mm256_blendv_epi8(index, _mm256_set1_epi32(i), lt);
  }
  const __m256i negative = _mm256_andnot_si256(
      _mm256_cmpeq_epi32(index, _mm256_setzero_si256()),
      _mm256_castps_si256(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ)));
  return _mm256_add_epi32(index, _mm256_and_si256(negative, _mm256_set1_epi32(8)));
}

}  // namespace

bool GgmlAllFiniteAvx2(const float* x, int64_t n) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i m = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    m = _mm256_max_epi32(
        m, _mm256_and_si256(
               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)),
               abs_mask));
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), m);
  int32_t max = 0;
  for (int32_t v : lanes) max = v > max ? v : max;
  for (; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return max < 0x7F800000;
}

void GgmlQuantizeQ8_0Avx2(const float* src, int64_t num_blocks,
                          const float* /*importance*/, uint8_t* dst) {
  Batched(src, num_blocks, sizeof(GgmlBlockQ8_0), dst, [](const float* x, uint8_t* y) {
    __m256 m[kBatch];
    for (int k = 0; k < kBatch; ++k) {
      __m256 v[4];
      LoadBlock(x + 32 * k, v);
      m[k] = _mm256_max_ps(_mm256_max_ps(Abs(v[0]), Abs(v[1])),
                           _mm256_max_ps(Abs(v[2]), Abs(v[3])));
    }
    const __m256 d = _mm256_div_ps(ReduceEach(m, MaxOp()), _mm256_set1_ps(127.0f));
    const __m256 id = InverseOrZero(d);
    alignas(32) float ids[kBatch];
    alignas(16) uint16_t halves[kBatch];
    _mm256_store_ps(ids, id);
    StoreHalves(d, halves);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * sizeof(GgmlBlockQ8_0);
      std::memcpy(yk, &halves[k], 2);
      const __m256 idv = _mm256_set1_ps(ids[k]);
      __m256i q[4];
      for (int i = 0; i < 4; ++i) {
        q[i] = RoundHalfAway(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * k + 8 * i), idv));
      }
      const __m256i bytes = _mm256_permutevar8x32_epi32(
          _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]),
                             _mm256_packs_epi32(q[2], q[3])),
          order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(yk + 2), bytes);
    }
    for (uint32_t bad = NotFinite(id); bad != 0; bad &= bad - 1) {
      const int k = std::countr_zero(bad);
      GgmlQuantizeQ8_0Reference(x + 32 * k, 1, nullptr, y + k * sizeof(GgmlBlockQ8_0));
    }
  });
}

namespace {

// Q4_0 and Q5_0: d = (signed max) / divisor, codes min(max_code,
// trunc(x / d + offset)).
template <int kBlockBytes, int kMaxCode>
void SymmetricBatches(const float* src, int64_t num_blocks, float divisor,
                      float offset, uint8_t* dst, ReferenceFn reference) {
  Batched(src, num_blocks, kBlockBytes, dst, [&](const float* x, uint8_t* y) {
    __m256 maxv, minv;
    BatchMinMax(x, maxv, minv);
    const __m256 d = _mm256_div_ps(BatchSignedAbsMax(x, maxv, minv),
                                   _mm256_set1_ps(divisor));
    const __m256 id = InverseOrZero(d);
    alignas(32) float ids[kBatch];
    alignas(16) uint16_t halves[kBatch];
    _mm256_store_ps(ids, id);
    StoreHalves(d, halves);
    const __m256 off = _mm256_set1_ps(offset);
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * kBlockBytes;
      std::memcpy(yk, &halves[k], 2);
      const __m256 idv = _mm256_set1_ps(ids[k]);
      __m256i q[4];
      for (int i = 0; i < 4; ++i) {
        q[i] = _mm256_min_epi32(
            _mm256_cvttps_epi32(_mm256_add_ps(
                _mm256_mul_ps(_mm256_loadu_ps(x + 32 * k + 8 * i), idv), off)),
            _mm256_set1_epi32(kMaxCode));
      }
      if constexpr (kMaxCode == 15) {
        StoreNibbles(q[0], q[1], q[2], q[3], yk + 2);
      } else {
        StoreQ5Codes(q, yk + 2, yk + 6);
      }
    }
    for (uint32_t bad = NotFinite(id); bad != 0; bad &= bad - 1) {
      const int k = std::countr_zero(bad);
      reference(x + 32 * k, 1, nullptr, y + k * kBlockBytes);
    }
  });
}

// Q4_1 and Q5_1: d = (max - min) / divisor, m = min, codes
// trunc((x - min) / d + 0.5), clamped to 15 for Q4_1 and not for Q5_1.
template <int kBlockBytes, int kMaxCode>
void AffineBatches(const float* src, int64_t num_blocks, float divisor,
                   uint8_t* dst, ReferenceFn reference) {
  Batched(src, num_blocks, kBlockBytes, dst, [&](const float* x, uint8_t* y) {
    __m256 maxv, minv;
    BatchMinMax(x, maxv, minv);
    const __m256 d = _mm256_div_ps(_mm256_sub_ps(maxv, minv), _mm256_set1_ps(divisor));
    const __m256 id = InverseOrZero(d);
    // Which zero the reference keeps as min or max depends on the order of
    // the elements; an overflowing range makes codes from NaN.
    const __m256 zero = _mm256_setzero_ps();
    const uint32_t special =
        static_cast<uint32_t>(_mm256_movemask_ps(
            _mm256_or_ps(_mm256_cmp_ps(minv, zero, _CMP_EQ_OQ),
                         _mm256_cmp_ps(maxv, zero, _CMP_EQ_OQ)))) |
        NotFinite(d) | NotFinite(id);
    alignas(32) float ids[kBatch];
    alignas(32) float mins[kBatch];
    alignas(16) uint16_t d_halves[kBatch];
    alignas(16) uint16_t m_halves[kBatch];
    _mm256_store_ps(ids, id);
    _mm256_store_ps(mins, minv);
    StoreHalves(d, d_halves);
    StoreHalves(minv, m_halves);
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * kBlockBytes;
      std::memcpy(yk, &d_halves[k], 2);
      std::memcpy(yk + 2, &m_halves[k], 2);
      const __m256 idv = _mm256_set1_ps(ids[k]);
      const __m256 mk = _mm256_set1_ps(mins[k]);
      __m256i q[4];
      for (int i = 0; i < 4; ++i) {
        q[i] = _mm256_cvttps_epi32(_mm256_add_ps(
            _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + 32 * k + 8 * i), mk), idv),
            half));
        if constexpr (kMaxCode == 15) {
          q[i] = _mm256_min_epi32(q[i], _mm256_set1_epi32(15));
        }
      }
      if constexpr (kMaxCode == 15) {
        StoreNibbles(q[0], q[1], q[2], q[3], yk + 4);
      } else {
        StoreQ5Codes(q, yk + 4, yk + 8);
      }
    }
    for (uint32_t bad = special; bad != 0; bad &= bad - 1) {
      const int k = std::countr_zero(bad);
      reference(x + 32 * k, 1, nullptr, y + k * kBlockBytes);
    }
  });
}

}  // namespace

void GgmlQuantizeQ4_0NoImportanceAvx2(const float* src, int64_t num_blocks,
                                      const float* /*importance*/, uint8_t* dst) {
  SymmetricBatches<sizeof(GgmlBlockQ4_0), 15>(src, num_blocks, -8.0f, 8.5f, dst,
                                              GgmlQuantizeQ4_0Reference);
}

void GgmlQuantizeQ5_0NoImportanceAvx2(const float* src, int64_t num_blocks,
                                      const float* /*importance*/, uint8_t* dst) {
  SymmetricBatches<sizeof(GgmlBlockQ5_0), 31>(src, num_blocks, -16.0f, 16.5f, dst,
                                              GgmlQuantizeQ5_0Reference);
}

void GgmlQuantizeQ4_1NoImportanceAvx2(const float* src, int64_t num_blocks,
                                      const float* /*importance*/, uint8_t* dst) {
  AffineBatches<sizeof(GgmlBlockQ4_1), 15>(src, num_blocks, 15.0f, dst,
                                           GgmlQuantizeQ4_1Reference);
}

void GgmlQuantizeQ5_1NoImportanceAvx2(const float* src, int64_t num_blocks,
                                      const float* /*importance*/, uint8_t* dst) {
  AffineBatches<sizeof(GgmlBlockQ5_1), 31>(src, num_blocks, 31.0f, dst,
                                           GgmlQuantizeQ5_1Reference);
}

void GgmlQuantizeIq4NlAvx2(const float* src, int64_t num_blocks,
                           const float* importance, uint8_t* dst) {
  const Iq4Tables t = MakeIq4Tables();
  Iq4Tile tile;
  auto batch = [&](const float* x, const float* qw, uint8_t* y) {
    LoadIq4Tile(x, qw, /*per_block_sigma2=*/true, _mm256_setzero_ps(), tile);
    const __m256 scale = Iq4Scales(tile, t);
    alignas(32) float ids[kBatch];
    alignas(16) uint16_t halves[kBatch];
    _mm256_store_ps(ids, InverseOrZero(scale));
    StoreHalves(scale, halves);
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * sizeof(GgmlBlockIq4Nl);
      std::memcpy(yk, &halves[k], 2);
      StoreIq4Codes(x + 32 * k, ids[k], t, yk + 2);
    }
  };
  int64_t b = 0;
  for (; b + kBatch <= num_blocks; b += kBatch) {
    batch(src + b * 32, importance != nullptr ? importance + b * 32 : nullptr,
          dst + b * sizeof(GgmlBlockIq4Nl));
  }
  if (b < num_blocks) {
    // Zero-padded: a zero block is a lane of its own, scale 0.
    const auto n = static_cast<size_t>(num_blocks - b);
    alignas(32) float x[32 * kBatch] = {};
    alignas(32) float qw[32 * kBatch] = {};
    uint8_t y[sizeof(GgmlBlockIq4Nl) * kBatch];
    std::memcpy(x, src + b * 32, n * 32 * sizeof(float));
    if (importance != nullptr) {
      std::memcpy(qw, importance + b * 32, n * 32 * sizeof(float));
    }
    batch(x, importance != nullptr ? qw : nullptr, y);
    std::memcpy(dst + b * sizeof(GgmlBlockIq4Nl), y, n * sizeof(GgmlBlockIq4Nl));
  }
}

void GgmlQuantizeIq4XsAvx2(const float* src, int64_t num_blocks,
                           const float* importance, uint8_t* dst) {
  const Iq4Tables t = MakeIq4Tables();
  Iq4Tile tile;
  // One super-block (8 sub-blocks) per tile.
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * 256;
    const float* qw = importance != nullptr ? importance + b * 256 : nullptr;
    uint8_t* y = dst + b * sizeof(GgmlBlockIq4Xs);
    const __m256 sigma2 =
        _mm256_set1_ps(qw != nullptr ? GgmlIq4Sigma2(x, 256) : 0.0f);
    LoadIq4Tile(x, qw, /*per_block_sigma2=*/false, sigma2, tile);
    alignas(32) float scales[kBatch];
    _mm256_store_ps(scales, Iq4Scales(tile, t));
    float max_scale = 0.0f;
    float amax_scale = 0.0f;
    for (int ib = 0; ib < 8; ++ib) {
      if (std::fabs(scales[ib]) > amax_scale) {
        amax_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    // GgmlFinishIq4Xs with vector codes.
    const float d = -max_scale / 32.0f;
    StoreHalf(d, y);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t scales_h = 0;
    uint8_t scales_l[4] = {0, 0, 0, 0};
    for (int ib = 0; ib < 8; ++ib) {
      int l = GgmlNearestInt(id * scales[ib]);
      l = std::max(-32, std::min(31, l));
      const float dl = d * static_cast<float>(l);
      StoreIq4Codes(x + 32 * ib, dl != 0.0f ? 1.0f / dl : 0.0f, t, y + 8 + 16 * ib);
      l += 32;
      scales_l[ib / 2] =
          static_cast<uint8_t>(scales_l[ib / 2] | (l & 0xF) << (4 * (ib % 2)));
      scales_h = static_cast<uint16_t>(scales_h | (l >> 4) << (2 * ib));
    }
    std::memcpy(y + 2, &scales_h, 2);
    std::memcpy(y + 4, scales_l, 4);
  }
}

void GgmlQuantizeMxfp4Avx2(const float* src, int64_t num_blocks,
                           const float* /*importance*/, uint8_t* dst) {
  Batched(src, num_blocks, sizeof(GgmlBlockMxfp4), dst, [](const float* x, uint8_t* y) {
    __m256 m[kBatch];
    for (int k = 0; k < kBatch; ++k) {
      __m256 v[4];
      LoadBlock(x + 32 * k, v);
      m[k] = _mm256_max_ps(_mm256_max_ps(Abs(v[0]), Abs(v[1])),
                           _mm256_max_ps(Abs(v[2]), Abs(v[3])));
    }
    alignas(32) float amax[kBatch];
    _mm256_store_ps(amax, ReduceEach(m, MaxOp()));
    for (int k = 0; k < kBatch; ++k) {
      uint8_t* yk = y + k * sizeof(GgmlBlockMxfp4);
      const uint8_t e =
          amax[k] > 0.0f
              ? X86TruncToByte(std::floor(std::log2(amax[k])) - 2.0f + 127.0f)
              : uint8_t{0};
      const float d = GgmlE8m0ToFloatHalf(e);
      yk[0] = e;
      __m256 c[8];
      for (int i = 0; i < 8; ++i) {
        c[i] = _mm256_set1_ps(static_cast<float>(kGgmlMxfp4Values[i]) * d);
      }
      __m256i q[4];
      for (int i = 0; i < 4; ++i) q[i] = Mxfp4Index(_mm256_loadu_ps(x + 32 * k + 8 * i), c);
      StoreNibbles(q[0], q[1], q[2], q[3], yk + 1);
    }
  });
}

}  // namespace quantd::internal
