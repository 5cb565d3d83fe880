// AVX2 paths of ggml's K-quants (compiled with -mavx2 -mfma -mf16c;
// contract in internal/ggml_kquants.h).
//
// The expensive part of a K-quant is stage 1, the search per sub-block
// (make_qkx2_quants & co: a few dozen candidate scales, each a pass of sums
// over the sub-block). Vectorizing a pass over its elements would change
// the order of the f32 sums and so the bits. Here each of the eight lanes
// holds one sub-block instead: the sub-blocks of a super-block are
// transposed so that step i of the loop reads element i of eight sub-blocks,
// and every lane performs exactly the scalar reference's sequence of
// operations on its own sub-block, comparisons and tie breaks included
// (ggml's `if (a < b) b = a` is _mm256_min_ps(a, b); conditional updates are
// blends under the same comparison). Stage 2 takes the scale fields from
// the shared scalar GgmlScales* (a few dozen operations per block) and
// requantizes the 256 codes eight at a time (the same f32 division and
// nearest_int per element as the scalar loop) and packs them with byte
// vectors.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/ggml_search.h"

namespace quantd::internal {
namespace {

constexpr int kQK = kGgmlBlock256;

inline __m256 Abs(__m256 v) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

// ggml's nearest_int on each lane, the same bit manipulation.
inline __m256i NearestInt(__m256 v) {
  const __m256 biased = _mm256_add_ps(v, _mm256_set1_ps(12582912.0f));
  return _mm256_sub_epi32(
      _mm256_and_si256(_mm256_castps_si256(biased),
                       _mm256_set1_epi32(0x007fffff)),
      _mm256_set1_epi32(0x00400000));
}

inline __m256i Clamp(__m256i v, int lo, int hi) {
  return _mm256_max_epi32(_mm256_set1_epi32(lo),
                          _mm256_min_epi32(_mm256_set1_epi32(hi), v));
}

inline __m256 Blend(__m256 a, __m256 b, __m256 mask) {
  return _mm256_blendv_ps(a, b, mask);
}

inline __m256i BlendI(__m256i a, __m256i b, __m256 mask) {
  return _mm256_castps_si256(_mm256_blendv_ps(
      _mm256_castsi256_ps(a), _mm256_castsi256_ps(b), mask));
}

inline bool Any(__m256 mask) { return _mm256_movemask_ps(mask) != 0; }

// Eight sub-blocks of n elements, transposed: lane k of row i is element i
// of sub-block k. Codes are kept as int32 lanes.
struct Lanes {
  __m256 x[32];
  __m256 w[32];
  __m256i L[32];
};

void Transpose(const float* src, int n, __m256* dst) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32(n));
  for (int i = 0; i < n; ++i) dst[i] = _mm256_i32gather_ps(src + i, idx, 4);
}

// Writes the lanes' codes back in element order (as the low byte, like
// ggml's uint8_t / int8_t code arrays).
template <typename Code>
void StoreCodes(const __m256i* L, int n, Code* dst) {
  alignas(32) int32_t tmp[8];
  for (int i = 0; i < n; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), L[i]);
    for (int k = 0; k < 8; ++k) dst[k * n + i] = static_cast<Code>(tmp[k]);
  }
}

// make_qkx2_quants (kQkx3 = false) / make_qkx3_quants (true) on eight
// sub-blocks at once, weights in s.w. Writes scale and -min per lane and
// the codes to s.L.
template <bool kQkx3>
void QkxQuants(Lanes& s, int n, int nmax, float rmin, float rdelta, int nstep,
               bool use_mad, __m256& scale_out, __m256& the_min_out) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 fnmax = _mm256_set1_ps(static_cast<float>(nmax));
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  auto error_term = [&](__m256 diff) {
    return use_mad ? _mm256_and_ps(diff, abs_mask) : _mm256_mul_ps(diff, diff);
  };
  __m256 min = s.x[0];
  __m256 max = s.x[0];
  __m256 sum_w = s.w[0];
  __m256 sum_x = _mm256_mul_ps(sum_w, s.x[0]);
  for (int i = 1; i < n; ++i) {
    min = _mm256_min_ps(s.x[i], min);  // if (x < min) min = x
    max = _mm256_max_ps(s.x[i], max);  // if (x > max) max = x
    sum_w = _mm256_add_ps(sum_w, s.w[i]);
    sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(s.w[i], s.x[i]));
  }
  min = Blend(min, zero, _mm256_cmp_ps(min, zero, _CMP_GT_OQ));
  // Lanes where ggml returns early (all codes 0, scale 0).
  const __m256 flat = kQkx3 ? _mm256_cmp_ps(max, min, _CMP_LE_OQ)
                            : _mm256_cmp_ps(max, min, _CMP_EQ_OQ);
  const __m256 active = _mm256_xor_ps(flat, _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
  __m256 iscale = _mm256_div_ps(fnmax, _mm256_sub_ps(max, min));
  __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
  __m256 best_error = zero;
  for (int i = 0; i < n; ++i) {
    s.L[i] = Clamp(NearestInt(_mm256_mul_ps(iscale, _mm256_sub_ps(s.x[i], min))),
                   0, nmax);
    const __m256 diff = _mm256_sub_ps(
        _mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(s.L[i])), min),
        s.x[i]);
    best_error = _mm256_add_ps(best_error, _mm256_mul_ps(s.w[i], error_term(diff)));
  }
  __m256i Laux[32];
  for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
    const float numerator =
        rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax);
    iscale = _mm256_div_ps(_mm256_set1_ps(numerator), _mm256_sub_ps(max, min));
    __m256 sum_l = zero;
    __m256 sum_l2 = zero;
    __m256 sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      const __m256 v = _mm256_mul_ps(iscale, _mm256_sub_ps(s.x[i], min));
      __m256i l;
      if constexpr (kQkx3) {
        const __m256 capped = Blend(fnmax, v, _mm256_cmp_ps(v, fnmax, _CMP_LT_OQ));
        l = _mm256_and_si256(NearestInt(capped), _mm256_castps_si256(
                                                     _mm256_cmp_ps(v, zero, _CMP_GT_OQ)));
      } else {
        l = Clamp(NearestInt(v), 0, nmax);
      }
      Laux[i] = l;
      const __m256 fl = _mm256_cvtepi32_ps(l);
      const __m256 wl = _mm256_mul_ps(s.w[i], fl);
      sum_l = _mm256_add_ps(sum_l, wl);
      sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, fl));
      sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, s.x[i]));
    }
    const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2),
                                   _mm256_mul_ps(sum_l, sum_l));
    const __m256 fit = _mm256_and_ps(active, _mm256_cmp_ps(D, zero, _CMP_GT_OQ));
    if (!Any(fit)) continue;
    __m256 this_scale = _mm256_div_ps(
        _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), D);
    __m256 this_min = _mm256_div_ps(
        _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
    const __m256 positive = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
    this_min = Blend(this_min, zero, positive);
    this_scale = Blend(this_scale, _mm256_div_ps(sum_xl, sum_l2), positive);
    __m256 cur_error = zero;
    for (int i = 0; i < n; ++i) {
      const __m256 diff = _mm256_sub_ps(
          _mm256_add_ps(_mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(Laux[i])),
                        this_min),
          s.x[i]);
      cur_error = _mm256_add_ps(cur_error, _mm256_mul_ps(s.w[i], error_term(diff)));
    }
    const __m256 better =
        _mm256_and_ps(fit, _mm256_cmp_ps(cur_error, best_error, _CMP_LT_OQ));
    if (!Any(better)) continue;
    for (int i = 0; i < n; ++i) s.L[i] = BlendI(s.L[i], Laux[i], better);
    best_error = Blend(best_error, cur_error, better);
    scale = Blend(scale, this_scale, better);
    min = Blend(min, this_min, better);
  }
  for (int i = 0; i < n; ++i) {
    s.L[i] = _mm256_andnot_si256(_mm256_castps_si256(flat), s.L[i]);
  }
  scale_out = Blend(scale, zero, flat);
  the_min_out = _mm256_xor_ps(min, _mm256_set1_ps(-0.0f));  // -min
}

// make_qx_quants with rmse_type 1 (weights s.w: qw or x^2) on eight
// sub-blocks. Codes in s.L are l + nmax.
__m256 QxQuants(Lanes& s, int n, int nmax) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 max = zero;
  __m256 amax = zero;
  for (int i = 0; i < n; ++i) {
    const __m256 ax = Abs(s.x[i]);
    const __m256 bigger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
    amax = Blend(amax, ax, bigger);
    max = Blend(max, s.x[i], bigger);
  }
  const __m256 flat =
      _mm256_cmp_ps(amax, _mm256_set1_ps(kGgmlGroupMaxEps), _CMP_LT_OQ);
  __m256 iscale = _mm256_div_ps(_mm256_set1_ps(static_cast<float>(-nmax)), max);
  __m256 sumlx = zero;
  __m256 suml2 = zero;
  for (int i = 0; i < n; ++i) {
    const __m256i l = Clamp(NearestInt(_mm256_mul_ps(iscale, s.x[i])), -nmax, nmax - 1);
    s.L[i] = _mm256_add_epi32(l, _mm256_set1_epi32(nmax));
    const __m256 fl = _mm256_cvtepi32_ps(l);
    sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(s.w[i], s.x[i]), fl));
    suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(s.w[i], fl), fl));
  }
  // `suml2 ? sumlx / suml2 : 0` (NaN counts as true, hence UNORDERED).
  __m256 scale = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ),
                               _mm256_div_ps(sumlx, suml2));
  __m256 best = _mm256_mul_ps(scale, sumlx);
  __m256i lcand[32];
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float numerator = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is));
    iscale = _mm256_div_ps(_mm256_set1_ps(numerator), max);
    sumlx = zero;
    suml2 = zero;
    for (int i = 0; i < n; ++i) {
      const __m256i l = Clamp(NearestInt(_mm256_mul_ps(iscale, s.x[i])), -nmax, nmax - 1);
      lcand[i] = l;
      const __m256 fl = _mm256_cvtepi32_ps(l);
      sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(s.w[i], s.x[i]), fl));
      suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(s.w[i], fl), fl));
    }
    const __m256 better = _mm256_and_ps(
        _mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
        _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2),
                      _CMP_GT_OQ));
    if (!Any(better)) continue;
    for (int i = 0; i < n; ++i) {
      s.L[i] = BlendI(s.L[i], _mm256_add_epi32(lcand[i], _mm256_set1_epi32(nmax)),
                      better);
    }
    scale = Blend(scale, _mm256_div_ps(sumlx, suml2), better);
    best = Blend(best, _mm256_mul_ps(scale, sumlx), better);
  }
  for (int i = 0; i < n; ++i) {
    s.L[i] = _mm256_andnot_si256(_mm256_castps_si256(flat), s.L[i]);
  }
  return Blend(scale, zero, flat);
}

// make_q3_quants with do_rmse on eight sub-blocks (x^2 weights). Each
// lane stops refining after its own first pass without a change, as the
// scalar loop's `break` does.
__m256 Q3Quants(Lanes& s, int n, int nmax) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 max = zero;
  __m256 amax = zero;
  for (int i = 0; i < n; ++i) {
    const __m256 ax = Abs(s.x[i]);
    const __m256 bigger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
    amax = Blend(amax, ax, bigger);
    max = Blend(max, s.x[i], bigger);
  }
  const __m256 flat =
      _mm256_cmp_ps(amax, _mm256_set1_ps(kGgmlGroupMaxEps), _CMP_LT_OQ);
  const __m256 iscale = _mm256_div_ps(_mm256_set1_ps(static_cast<float>(-nmax)), max);
  __m256 sumlx = zero;
  __m256 suml2 = zero;
  for (int i = 0; i < n; ++i) {
    s.L[i] = Clamp(NearestInt(_mm256_mul_ps(iscale, s.x[i])), -nmax, nmax - 1);
    s.w[i] = _mm256_mul_ps(s.x[i], s.x[i]);
    const __m256 fl = _mm256_cvtepi32_ps(s.L[i]);
    sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(s.w[i], s.x[i]), fl));
    suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(s.w[i], fl), fl));
  }
  __m256 running = _mm256_xor_ps(flat, _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
  for (int itry = 0; itry < 5 && Any(running); ++itry) {
    __m256 changed = zero;
    for (int i = 0; i < n; ++i) {
      const __m256 w = s.w[i];
      const __m256 wx = _mm256_mul_ps(w, s.x[i]);
      const __m256 li = _mm256_cvtepi32_ps(s.L[i]);
      __m256 slx = _mm256_sub_ps(sumlx, _mm256_mul_ps(wx, li));
      const __m256 positive = _mm256_cmp_ps(slx, zero, _CMP_GT_OQ);
      __m256 sl2 = _mm256_sub_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w, li), li));
      const __m256i new_l = Clamp(
          NearestInt(_mm256_div_ps(_mm256_mul_ps(s.x[i], sl2), slx)), -nmax, nmax - 1);
      const __m256 differs = _mm256_castsi256_ps(_mm256_xor_si256(
          _mm256_cmpeq_epi32(new_l, s.L[i]), _mm256_set1_epi32(-1)));
      const __m256 fl = _mm256_cvtepi32_ps(new_l);
      slx = _mm256_add_ps(slx, _mm256_mul_ps(wx, fl));
      sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, fl), fl));
      const __m256 better = _mm256_and_ps(
          _mm256_cmp_ps(sl2, zero, _CMP_GT_OQ),
          _mm256_cmp_ps(_mm256_mul_ps(_mm256_mul_ps(slx, slx), suml2),
                        _mm256_mul_ps(_mm256_mul_ps(sumlx, sumlx), sl2), _CMP_GT_OQ));
      const __m256 take =
          _mm256_and_ps(_mm256_and_ps(running, positive), _mm256_and_ps(differs, better));
      s.L[i] = BlendI(s.L[i], new_l, take);
      sumlx = Blend(sumlx, slx, take);
      suml2 = Blend(suml2, sl2, take);
      changed = _mm256_or_ps(changed, take);
    }
    running = _mm256_and_ps(running, changed);
  }
  for (int i = 0; i < n; ++i) {
    s.L[i] = _mm256_andnot_si256(_mm256_castps_si256(flat),
                                 _mm256_add_epi32(s.L[i], _mm256_set1_epi32(nmax)));
  }
  const __m256 scale = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
                                     _mm256_div_ps(sumlx, suml2));
  return Blend(scale, zero, flat);
}

// ---- Stage 2: the scale fields from the shared scalar GgmlScales*, then
// the 256 codes requantized and packed here.

// 32 int32 codes (each 0..255) in element order as 32 bytes.
inline __m256i PackBytes(const __m256i* q) {
  const __m256i w01 = _mm256_packs_epi32(q[0], q[1]);
  const __m256i w23 = _mm256_packs_epi32(q[2], q[3]);
  return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23),
                                     _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

inline __m256i LoadBytes(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
inline void StoreBytes(void* p, __m256i v) {
  _mm256_storeu_si256(static_cast<__m256i*>(p), v);
}

// The requantization of stage 2 over the 256 codes L (bytes), sub-blocks of
// `sub_size` elements: asymmetric (kAsym) l = clamp(nearest_int((x + dm) /
// d), 0, limit), or symmetric l = clamp(nearest_int(x / d), -limit,
// limit - 1) + limit; a sub-block with d == 0 keeps its codes. The same
// f32 division and nearest_int per element as the scalar loops.
template <bool kAsym>
void Requantize(const float* x, const float* sub_d, const float* sub_dm,
                int sub_size, int limit, void* codes) {
  auto* L = static_cast<uint8_t*>(codes);
  for (int c = 0; c < kQK / 32; ++c) {
    __m256i q[4];
    int64_t keep[4] = {0, 0, 0, 0};
    bool any_keep = false;
    for (int i = 0; i < 4; ++i) {
      const int e = 32 * c + 8 * i;
      const int j = e / sub_size;
      if (sub_d[j] == 0.0f) {
        keep[i] = -1;
        any_keep = true;
        q[i] = _mm256_setzero_si256();
        continue;
      }
      const __m256 d = _mm256_set1_ps(sub_d[j]);
      const __m256 v = _mm256_loadu_ps(x + e);
      if constexpr (kAsym) {
        q[i] = Clamp(NearestInt(_mm256_div_ps(
                         _mm256_add_ps(v, _mm256_set1_ps(sub_dm[j])), d)),
                     0, limit);
      } else {
        q[i] = _mm256_add_epi32(
            Clamp(NearestInt(_mm256_div_ps(v, d)), -limit, limit - 1),
            _mm256_set1_epi32(limit));
      }
    }
    __m256i bytes = PackBytes(q);
    if (any_keep) {
      bytes = _mm256_blendv_epi8(
          bytes, LoadBytes(L + 32 * c),
          _mm256_setr_epi64x(keep[0], keep[1], keep[2], keep[3]));
    }
    StoreBytes(L + 32 * c, bytes);
  }
}

// ggml's 2-bit packing of codes 0..3: byte l of each 128-element half holds
// elements l, l + 32, l + 64, l + 96.
inline void Pack2Bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK; j += 128) {
    const __m256i v = _mm256_or_si256(
        _mm256_or_si256(LoadBytes(L + j), _mm256_slli_epi16(LoadBytes(L + j + 32), 2)),
        _mm256_or_si256(_mm256_slli_epi16(LoadBytes(L + j + 64), 4),
                        _mm256_slli_epi16(LoadBytes(L + j + 96), 6)));
    StoreBytes(qs + j / 4, v);
  }
}

void FinishQ2_K(const float* x, const float* scales, const float* mins,
                const float* sw, uint8_t* L, uint8_t* dst) {
  GgmlBlockQ2_K y;
  float sub_d[kQK / 16];
  float sub_dm[kQK / 16];
  GgmlScalesQ2_K(scales, mins, sw, y, sub_d, sub_dm);
  Requantize<true>(x, sub_d, sub_dm, 16, 3, L);
  Pack2Bit(L, y.qs);
  std::memcpy(dst, &y, sizeof(y));
}

void FinishQ3_K(const float* x, const float* scales, const float* sw,
                int8_t* L, uint8_t* dst) {
  GgmlBlockQ3_K y;
  float sub_d[kQK / 16];
  GgmlScalesQ3_K(scales, sw, y, sub_d);
  Requantize<false>(x, sub_d, nullptr, 16, 4, L);
  // Bit 2 of element j goes to bit j / 32 of hmask[j % 32].
  auto* codes = reinterpret_cast<uint8_t*>(L);
  __m256i hmask = _mm256_setzero_si256();
  for (int c = 0; c < kQK / 32; ++c) {
    const __m256i v = LoadBytes(codes + 32 * c);
    const __m256i high = _mm256_cmpgt_epi8(v, _mm256_set1_epi8(3));
    hmask = _mm256_or_si256(
        hmask, _mm256_and_si256(high, _mm256_set1_epi8(static_cast<char>(1 << c))));
    StoreBytes(codes + 32 * c,
               _mm256_sub_epi8(v, _mm256_and_si256(high, _mm256_set1_epi8(4))));
  }
  StoreBytes(y.hmask, hmask);
  Pack2Bit(codes, y.qs);
  std::memcpy(dst, &y, sizeof(y));
}

template <bool kQ5>
void FinishQ45K(const float* x, const float* scales, const float* mins,
                const float* sw, uint8_t* L, uint8_t* dst) {
  float sub_d[kQK / 32];
  float sub_dm[kQK / 32];
  if constexpr (kQ5) {
    GgmlBlockQ5_K y;
    GgmlScalesQ5_K(scales, mins, sw, y, sub_d, sub_dm);
    Requantize<true>(x, sub_d, sub_dm, 32, 31, L);
    // Bit 4 of elements n + l and n + 32 + l (n = 64 i) go to bits 2i and
    // 2i + 1 of qh[l]; the low nibbles pair up as in Q4_K.
    __m256i qh = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) {
      __m256i lo = LoadBytes(L + 64 * i);
      __m256i hi = LoadBytes(L + 64 * i + 32);
      const __m256i lo_high = _mm256_cmpgt_epi8(lo, _mm256_set1_epi8(15));
      const __m256i hi_high = _mm256_cmpgt_epi8(hi, _mm256_set1_epi8(15));
      qh = _mm256_or_si256(
          qh, _mm256_or_si256(
                  _mm256_and_si256(lo_high, _mm256_set1_epi8(static_cast<char>(1 << (2 * i)))),
                  _mm256_and_si256(hi_high,
                                   _mm256_set1_epi8(static_cast<char>(2 << (2 * i))))));
      lo = _mm256_sub_epi8(lo, _mm256_and_si256(lo_high, _mm256_set1_epi8(16)));
      hi = _mm256_sub_epi8(hi, _mm256_and_si256(hi_high, _mm256_set1_epi8(16)));
      StoreBytes(y.qs + 32 * i, _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
    }
    StoreBytes(y.qh, qh);
    std::memcpy(dst, &y, sizeof(y));
  } else {
    GgmlBlockQ4_K y;
    GgmlScalesQ4_K(scales, mins, sw, y, sub_d, sub_dm);
    Requantize<true>(x, sub_d, sub_dm, 32, 15, L);
    for (int i = 0; i < 4; ++i) {
      StoreBytes(y.qs + 32 * i,
                 _mm256_or_si256(LoadBytes(L + 64 * i),
                                 _mm256_slli_epi16(LoadBytes(L + 64 * i + 32), 4)));
    }
    std::memcpy(dst, &y, sizeof(y));
  }
}

void FinishQ6_K(const float* x, const float* scales, int8_t* L, uint8_t* dst) {
  GgmlBlockQ6_K y;
  float sub_d[kQK / 16];
  if (GgmlScalesQ6_K(scales, y, sub_d)) {
    Requantize<false>(x, sub_d, nullptr, 16, 32, L);
    const auto* codes = reinterpret_cast<const uint8_t*>(L);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i two = _mm256_set1_epi8(0x03);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* c = codes + 128 * h;
      const __m256i a = LoadBytes(c);
      const __m256i b = LoadBytes(c + 32);
      const __m256i e = LoadBytes(c + 64);
      const __m256i f = LoadBytes(c + 96);
      auto nibble = [&](__m256i v) { return _mm256_and_si256(v, low4); };
      auto top = [&](__m256i v) {
        return _mm256_and_si256(_mm256_srli_epi16(v, 4), two);
      };
      StoreBytes(y.ql + 64 * h,
                 _mm256_or_si256(nibble(a), _mm256_slli_epi16(nibble(e), 4)));
      StoreBytes(y.ql + 64 * h + 32,
                 _mm256_or_si256(nibble(b), _mm256_slli_epi16(nibble(f), 4)));
      StoreBytes(y.qh + 32 * h,
                 _mm256_or_si256(
                     _mm256_or_si256(top(a), _mm256_slli_epi16(top(b), 2)),
                     _mm256_or_si256(_mm256_slli_epi16(top(e), 4),
                                     _mm256_slli_epi16(top(f), 6))));
    }
  }
  std::memcpy(dst, &y, sizeof(y));
}

float SumSquares(const float* x, int n) {
  float s = 0.0f;
  for (int l = 0; l < n; ++l) s += x[l] * x[l];
  return s;
}

// weights = qw * sqrt(sigma2 + x^2) per element, and their sums per lane.
__m256 ImportanceWeights(Lanes& s, const float* qw, int n, float sigma2) {
  Transpose(qw, n, s.w);
  const __m256 sig = _mm256_set1_ps(sigma2);
  __m256 sum = _mm256_setzero_ps();
  for (int i = 0; i < n; ++i) {
    s.w[i] = _mm256_mul_ps(
        s.w[i], _mm256_sqrt_ps(_mm256_add_ps(sig, _mm256_mul_ps(s.x[i], s.x[i]))));
    sum = _mm256_add_ps(sum, s.w[i]);
  }
  return sum;
}

template <bool kQ5>
void QuantizeQ45K(const float* src, int64_t num_blocks, const float* importance,
                  uint8_t* dst) {
  constexpr int kNmax = kQ5 ? 31 : 15;
  constexpr size_t kBytes = kQ5 ? sizeof(GgmlBlockQ5_K) : sizeof(GgmlBlockQ4_K);
  Lanes s;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kQK;
    alignas(32) float scales[8];
    alignas(32) float mins[8];
    alignas(32) float sw[8];
    uint8_t L[kQK];
    Transpose(x, 32, s.x);
    __m256 scale, the_min;
    if (importance == nullptr) {
      // quantize_row_q{4,5}_K_ref: weights av_x + |x|, av_x per sub-block.
      __m256 sum_x2 = _mm256_setzero_ps();
      for (int i = 0; i < 32; ++i) {
        sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(s.x[i], s.x[i]));
      }
      const __m256 av_x =
          _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.0f)));
      for (int i = 0; i < 32; ++i) s.w[i] = _mm256_add_ps(av_x, Abs(s.x[i]));
      QkxQuants<false>(s, 32, kNmax, kQ5 ? -0.5f : -1.0f, 0.1f, kQ5 ? 15 : 20,
                       false, scale, the_min);
    } else {
      const float sigma2 = 2.0f * SumSquares(x, kQK) / static_cast<float>(kQK);
      _mm256_store_ps(sw, ImportanceWeights(s, importance + b * kQK, 32, sigma2));
      QkxQuants<true>(s, 32, kNmax, -0.9f, 0.05f, 36, false, scale, the_min);
    }
    _mm256_store_ps(scales, scale);
    _mm256_store_ps(mins, the_min);
    StoreCodes(s.L, 32, L);
    const float* sw_or_null = importance != nullptr ? sw : nullptr;
    uint8_t* y = dst + b * static_cast<int64_t>(kBytes);
    if constexpr (kQ5) {
      FinishQ45K<true>(x, scales, mins, sw_or_null, L, y);
    } else {
      FinishQ45K<false>(x, scales, mins, sw_or_null, L, y);
    }
  }
}

}  // namespace

void GgmlQuantizeQ4_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  QuantizeQ45K<false>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ5_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  QuantizeQ45K<true>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ6_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  Lanes s;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kQK;
    alignas(32) float scales[16];
    int8_t L[kQK];
    for (int g = 0; g < 2; ++g) {
      Transpose(x + 128 * g, 16, s.x);
      if (importance != nullptr) {
        Transpose(importance + b * kQK + 128 * g, 16, s.w);
      } else {
        for (int i = 0; i < 16; ++i) s.w[i] = _mm256_mul_ps(s.x[i], s.x[i]);
      }
      _mm256_store_ps(scales + 8 * g, QxQuants(s, 16, 32));
      StoreCodes(s.L, 16, L + 128 * g);
    }
    FinishQ6_K(x, scales, L, dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ6_K)));
  }
}

void GgmlQuantizeQ3_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  Lanes s;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kQK;
    alignas(32) float scales[16];
    alignas(32) float sw[16];
    int8_t L[kQK];
    const float sigma2 = importance != nullptr
                             ? 2.0f * SumSquares(x, kQK) / static_cast<float>(kQK)
                             : 0.0f;
    for (int g = 0; g < 2; ++g) {
      Transpose(x + 128 * g, 16, s.x);
      if (importance == nullptr) {
        _mm256_store_ps(scales + 8 * g, Q3Quants(s, 16, 4));
      } else {
        _mm256_store_ps(sw + 8 * g,
                        ImportanceWeights(s, importance + b * kQK + 128 * g, 16, sigma2));
        _mm256_store_ps(scales + 8 * g, QxQuants(s, 16, 4));
      }
      StoreCodes(s.L, 16, L + 128 * g);
    }
    FinishQ3_K(x, scales, importance != nullptr ? sw : nullptr, L,
                   dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ3_K)));
  }
}

void GgmlQuantizeQ2_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  Lanes s;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kQK;
    alignas(32) float scales[16];
    alignas(32) float mins[16];
    alignas(32) float sw[16];
    uint8_t L[kQK];
    const float sigma2 = importance != nullptr
                             ? SumSquares(x, kQK) / static_cast<float>(kQK)
                             : 0.0f;
    for (int g = 0; g < 2; ++g) {
      Transpose(x + 128 * g, 16, s.x);
      __m256 scale, the_min;
      if (importance == nullptr) {
        for (int i = 0; i < 16; ++i) s.w[i] = Abs(s.x[i]);
        QkxQuants<false>(s, 16, 3, -0.5f, 0.1f, 15, true, scale, the_min);
      } else {
        _mm256_store_ps(sw + 8 * g,
                        ImportanceWeights(s, importance + b * kQK + 128 * g, 16, sigma2));
        QkxQuants<true>(s, 16, 3, -0.9f, 0.05f, 36, false, scale, the_min);
      }
      _mm256_store_ps(scales + 8 * g, scale);
      _mm256_store_ps(mins + 8 * g, the_min);
      StoreCodes(s.L, 16, L + 128 * g);
    }
    FinishQ2_K(x, scales, mins, importance != nullptr ? sw : nullptr, L,
                   dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ2_K)));
  }
}

}  // namespace quantd::internal
