// Internal: the K-quants' vector paths, written once over a vector width.
// ggml_kquants_avx2.cc instantiates them with 8 lanes (Avx2Lanes of
// internal/ggml_lanes.h), ggml_kquants_avx512.cc with 16 (Avx512Lanes).
// Everything here has internal linkage so
// that code compiled with -mavx512f never leaks into a caller built without
// it (an inline function with external linkage would be merged by the
// linker). Include only from files compiled with at least -mavx2 -mfma.
//
// Stage 1 (the search per sub-block: make_qkx2_quants & co, a few dozen
// candidate scales, each a pass of sums over the sub-block) runs one
// sub-block per lane: the sub-blocks are transposed so that step i of the
// loop reads element i of every lane's sub-block, and every lane performs
// exactly the scalar reference's sequence of operations on its own
// sub-block, comparisons and tie breaks included (ggml's
// `if (a < b) b = a` is min(a, b); conditional updates are blends under the
// same comparison). Vectorizing a pass over its elements instead would
// change the order of the f32 sums and so the bits.
//
// Stage 2 takes the scale fields from the shared scalar GgmlScales* (a few
// dozen operations per block), requantizes the 256 codes eight at a time
// (the same f32 division and nearest_int per element as the scalar loop)
// and packs them with byte vectors.
//
// A lane type V is one of internal/ggml_lanes.h (Avx2Lanes, Avx512Lanes).
#ifndef QUANTD_KERNELS_INTERNAL_GGML_KQUANTS_LANES_H_
#define QUANTD_KERNELS_INTERNAL_GGML_KQUANTS_LANES_H_

#include <cstdint>
#include <cstring>

#include "kernels/ggml_formats.h"
#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/ggml_lanes.h"
#include "kernels/internal/ggml_search.h"

namespace quantd::internal {
namespace {  // NOLINT: per-ISA copies on purpose, see above.

constexpr int kKQuantBlock = kGgmlBlock256;

// Sub-blocks of n <= 32 elements, transposed: lane k of row i is element i
// of sub-block k. Codes are kept as int32 lanes.
template <typename V>
struct Lanes {
  typename V::F x[32];
  typename V::F w[32];
  typename V::I L[32];
};

// Writes the lanes' codes back in element order (as the low byte, like
// ggml's uint8_t / int8_t code arrays).
template <typename V, typename Code>
void StoreCodes(const typename V::I* L, int n, Code* dst) {
  alignas(64) int32_t tmp[V::kLanes];
  for (int i = 0; i < n; ++i) {
    V::StoreI(tmp, L[i]);
    for (int k = 0; k < V::kLanes; ++k) dst[k * n + i] = static_cast<Code>(tmp[k]);
  }
}

// make_qkx2_quants (kQkx3 = false) / make_qkx3_quants (true) with one
// sub-block per lane, weights in s.w. Writes scale and -min per lane and
// the codes to s.L.
template <typename V, bool kQkx3>
void QkxQuants(Lanes<V>& s, int n, int nmax, float rmin, float rdelta,
               int nstep, bool use_mad, typename V::F& scale_out,
               typename V::F& the_min_out) {
  using F = typename V::F;
  using I = typename V::I;
  using M = typename V::M;
  const F zero = V::Zero();
  const F fnmax = V::Set(static_cast<float>(nmax));
  auto error_term = [&](F diff) { return use_mad ? V::Abs(diff) : V::Mul(diff, diff); };
  F min = s.x[0];
  F max = s.x[0];
  F sum_w = s.w[0];
  F sum_x = V::Mul(sum_w, s.x[0]);
  for (int i = 1; i < n; ++i) {
    min = V::Min(s.x[i], min);  // if (x < min) min = x
    max = V::Max(s.x[i], max);  // if (x > max) max = x
    sum_w = V::Add(sum_w, s.w[i]);
    sum_x = V::Add(sum_x, V::Mul(s.w[i], s.x[i]));
  }
  min = V::Blend(min, zero, V::Gt(min, zero));
  // Lanes where ggml returns early (all codes 0, scale 0).
  const M flat = kQkx3 ? V::Le(max, min) : V::Eq(max, min);
  const M active = V::Not(flat);
  F iscale = V::Div(fnmax, V::Sub(max, min));
  F scale = V::Div(V::Set(1.0f), iscale);
  F best_error = zero;
  for (int i = 0; i < n; ++i) {
    s.L[i] = V::Clamp(V::NearestInt(V::Mul(iscale, V::Sub(s.x[i], min))), 0, nmax);
    const F diff = V::Sub(V::Add(V::Mul(scale, V::ToF(s.L[i])), min), s.x[i]);
    best_error = V::Add(best_error, V::Mul(s.w[i], error_term(diff)));
  }
  I Laux[32];
  for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
    const float numerator =
        rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax);
    iscale = V::Div(V::Set(numerator), V::Sub(max, min));
    F sum_l = zero;
    F sum_l2 = zero;
    F sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      const F v = V::Mul(iscale, V::Sub(s.x[i], min));
      I l;
      if constexpr (kQkx3) {
        const F capped = V::Blend(fnmax, v, V::Lt(v, fnmax));
        l = V::MaskI(V::NearestInt(capped), V::Gt(v, zero));
      } else {
        l = V::Clamp(V::NearestInt(v), 0, nmax);
      }
      Laux[i] = l;
      const F fl = V::ToF(l);
      const F wl = V::Mul(s.w[i], fl);
      sum_l = V::Add(sum_l, wl);
      sum_l2 = V::Add(sum_l2, V::Mul(wl, fl));
      sum_xl = V::Add(sum_xl, V::Mul(wl, s.x[i]));
    }
    const F D = V::Sub(V::Mul(sum_w, sum_l2), V::Mul(sum_l, sum_l));
    const M fit = V::And(active, V::Gt(D, zero));
    if (!V::Any(fit)) continue;
    F this_scale = V::Div(V::Sub(V::Mul(sum_w, sum_xl), V::Mul(sum_x, sum_l)), D);
    F this_min = V::Div(V::Sub(V::Mul(sum_l2, sum_x), V::Mul(sum_l, sum_xl)), D);
    const M positive = V::Gt(this_min, zero);
    this_min = V::Blend(this_min, zero, positive);
    this_scale = V::Blend(this_scale, V::Div(sum_xl, sum_l2), positive);
    F cur_error = zero;
    for (int i = 0; i < n; ++i) {
      const F diff =
          V::Sub(V::Add(V::Mul(this_scale, V::ToF(Laux[i])), this_min), s.x[i]);
      cur_error = V::Add(cur_error, V::Mul(s.w[i], error_term(diff)));
    }
    const M better = V::And(fit, V::Lt(cur_error, best_error));
    if (!V::Any(better)) continue;
    for (int i = 0; i < n; ++i) s.L[i] = V::BlendI(s.L[i], Laux[i], better);
    best_error = V::Blend(best_error, cur_error, better);
    scale = V::Blend(scale, this_scale, better);
    min = V::Blend(min, this_min, better);
  }
  for (int i = 0; i < n; ++i) s.L[i] = V::ZeroI(flat, s.L[i]);
  scale_out = V::Blend(scale, zero, flat);
  the_min_out = V::Neg(min);  // -min
}

// make_qx_quants with rmse_type 1 (weights s.w: qw or x^2), one sub-block
// per lane. Codes in s.L are l + nmax.
template <typename V>
typename V::F QxQuants(Lanes<V>& s, int n, int nmax) {
  using F = typename V::F;
  using I = typename V::I;
  using M = typename V::M;
  const F zero = V::Zero();
  F max = zero;
  F amax = zero;
  for (int i = 0; i < n; ++i) {
    const F ax = V::Abs(s.x[i]);
    const M bigger = V::Gt(ax, amax);
    amax = V::Blend(amax, ax, bigger);
    max = V::Blend(max, s.x[i], bigger);
  }
  const M flat = V::Lt(amax, V::Set(kGgmlGroupMaxEps));
  F iscale = V::Div(V::Set(static_cast<float>(-nmax)), max);
  F sumlx = zero;
  F suml2 = zero;
  for (int i = 0; i < n; ++i) {
    const I l = V::Clamp(V::NearestInt(V::Mul(iscale, s.x[i])), -nmax, nmax - 1);
    s.L[i] = V::AddI(l, V::SetI(nmax));
    const F fl = V::ToF(l);
    sumlx = V::Add(sumlx, V::Mul(V::Mul(s.w[i], s.x[i]), fl));
    suml2 = V::Add(suml2, V::Mul(V::Mul(s.w[i], fl), fl));
  }
  // `suml2 ? sumlx / suml2 : 0` (NaN counts as true, hence unordered).
  F scale = V::Keep(V::Neq(suml2, zero), V::Div(sumlx, suml2));
  F best = V::Mul(scale, sumlx);
  I lcand[32];
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float numerator = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is));
    iscale = V::Div(V::Set(numerator), max);
    sumlx = zero;
    suml2 = zero;
    for (int i = 0; i < n; ++i) {
      const I l = V::Clamp(V::NearestInt(V::Mul(iscale, s.x[i])), -nmax, nmax - 1);
      lcand[i] = l;
      const F fl = V::ToF(l);
      sumlx = V::Add(sumlx, V::Mul(V::Mul(s.w[i], s.x[i]), fl));
      suml2 = V::Add(suml2, V::Mul(V::Mul(s.w[i], fl), fl));
    }
    const M better = V::And(V::Gt(suml2, zero),
                            V::Gt(V::Mul(sumlx, sumlx), V::Mul(best, suml2)));
    if (!V::Any(better)) continue;
    for (int i = 0; i < n; ++i) {
      s.L[i] = V::BlendI(s.L[i], V::AddI(lcand[i], V::SetI(nmax)), better);
    }
    scale = V::Blend(scale, V::Div(sumlx, suml2), better);
    best = V::Blend(best, V::Mul(scale, sumlx), better);
  }
  for (int i = 0; i < n; ++i) s.L[i] = V::ZeroI(flat, s.L[i]);
  return V::Blend(scale, zero, flat);
}

// make_q3_quants with do_rmse, one sub-block per lane (x^2 weights). Each
// lane stops refining after its own first pass without a change, as the
// scalar loop's `break` does.
template <typename V>
typename V::F Q3Quants(Lanes<V>& s, int n, int nmax) {
  using F = typename V::F;
  using I = typename V::I;
  using M = typename V::M;
  const F zero = V::Zero();
  F max = zero;
  F amax = zero;
  for (int i = 0; i < n; ++i) {
    const F ax = V::Abs(s.x[i]);
    const M bigger = V::Gt(ax, amax);
    amax = V::Blend(amax, ax, bigger);
    max = V::Blend(max, s.x[i], bigger);
  }
  const M flat = V::Lt(amax, V::Set(kGgmlGroupMaxEps));
  const F iscale = V::Div(V::Set(static_cast<float>(-nmax)), max);
  F sumlx = zero;
  F suml2 = zero;
  for (int i = 0; i < n; ++i) {
    s.L[i] = V::Clamp(V::NearestInt(V::Mul(iscale, s.x[i])), -nmax, nmax - 1);
    s.w[i] = V::Mul(s.x[i], s.x[i]);
    const F fl = V::ToF(s.L[i]);
    sumlx = V::Add(sumlx, V::Mul(V::Mul(s.w[i], s.x[i]), fl));
    suml2 = V::Add(suml2, V::Mul(V::Mul(s.w[i], fl), fl));
  }
  M running = V::Not(flat);
  for (int itry = 0; itry < 5 && V::Any(running); ++itry) {
    M changed = V::NoLanes();
    for (int i = 0; i < n; ++i) {
      const F w = s.w[i];
      const F wx = V::Mul(w, s.x[i]);
      const F li = V::ToF(s.L[i]);
      F slx = V::Sub(sumlx, V::Mul(wx, li));
      const M positive = V::Gt(slx, zero);
      F sl2 = V::Sub(suml2, V::Mul(V::Mul(w, li), li));
      const I new_l =
          V::Clamp(V::NearestInt(V::Div(V::Mul(s.x[i], sl2), slx)), -nmax, nmax - 1);
      const M differs = V::NeI(new_l, s.L[i]);
      const F fl = V::ToF(new_l);
      slx = V::Add(slx, V::Mul(wx, fl));
      sl2 = V::Add(sl2, V::Mul(V::Mul(w, fl), fl));
      const M better =
          V::And(V::Gt(sl2, zero), V::Gt(V::Mul(V::Mul(slx, slx), suml2),
                                         V::Mul(V::Mul(sumlx, sumlx), sl2)));
      const M take = V::And(V::And(running, positive), V::And(differs, better));
      s.L[i] = V::BlendI(s.L[i], new_l, take);
      sumlx = V::Blend(sumlx, slx, take);
      suml2 = V::Blend(suml2, sl2, take);
      changed = V::Or(changed, take);
    }
    running = V::And(running, changed);
  }
  for (int i = 0; i < n; ++i) {
    s.L[i] = V::ZeroI(flat, V::AddI(s.L[i], V::SetI(nmax)));
  }
  const F scale = V::Keep(V::Gt(suml2, zero), V::Div(sumlx, suml2));
  return V::Blend(scale, zero, flat);
}

inline float SumSquares(const float* x, int n) {
  float s = 0.0f;
  for (int l = 0; l < n; ++l) s += x[l] * x[l];
  return s;
}

// weights = qw * sqrt(sigma2 + x^2) per element (sigma2 per lane), and
// their sums per lane.
template <typename V>
typename V::F ImportanceWeights(Lanes<V>& s, const float* qw, int n,
                                typename V::F sigma2) {
  V::Transpose(qw, n, s.w);
  typename V::F sum = V::Zero();
  for (int i = 0; i < n; ++i) {
    s.w[i] = V::Mul(s.w[i], V::Sqrt(V::Add(sigma2, V::Mul(s.x[i], s.x[i]))));
    sum = V::Add(sum, s.w[i]);
  }
  return sum;
}

// ---- Stage 2 (AVX2 byte vectors, for every lane width).

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
  for (int c = 0; c < kKQuantBlock / 32; ++c) {
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
        q[i] = Clamp8(NearestInt8(_mm256_div_ps(
                          _mm256_add_ps(v, _mm256_set1_ps(sub_dm[j])), d)),
                      0, limit);
      } else {
        q[i] = _mm256_add_epi32(
            Clamp8(NearestInt8(_mm256_div_ps(v, d)), -limit, limit - 1),
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
  for (int j = 0; j < kKQuantBlock; j += 128) {
    const __m256i v = _mm256_or_si256(
        _mm256_or_si256(LoadBytes(L + j), _mm256_slli_epi16(LoadBytes(L + j + 32), 2)),
        _mm256_or_si256(_mm256_slli_epi16(LoadBytes(L + j + 64), 4),
                        _mm256_slli_epi16(LoadBytes(L + j + 96), 6)));
    StoreBytes(qs + j / 4, v);
  }
}

inline void FinishQ2_K(const float* x, const float* scales, const float* mins,
                       const float* sw, uint8_t* L, uint8_t* dst) {
  GgmlBlockQ2_K y;
  float sub_d[kKQuantBlock / 16];
  float sub_dm[kKQuantBlock / 16];
  GgmlScalesQ2_K(scales, mins, sw, y, sub_d, sub_dm);
  Requantize<true>(x, sub_d, sub_dm, 16, 3, L);
  Pack2Bit(L, y.qs);
  std::memcpy(dst, &y, sizeof(y));
}

inline void FinishQ3_K(const float* x, const float* scales, const float* sw,
                       int8_t* L, uint8_t* dst) {
  GgmlBlockQ3_K y;
  float sub_d[kKQuantBlock / 16];
  GgmlScalesQ3_K(scales, sw, y, sub_d);
  Requantize<false>(x, sub_d, nullptr, 16, 4, L);
  // Bit 2 of element j goes to bit j / 32 of hmask[j % 32].
  auto* codes = reinterpret_cast<uint8_t*>(L);
  __m256i hmask = _mm256_setzero_si256();
  for (int c = 0; c < kKQuantBlock / 32; ++c) {
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
  float sub_d[kKQuantBlock / 32];
  float sub_dm[kKQuantBlock / 32];
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
                  _mm256_and_si256(lo_high,
                                   _mm256_set1_epi8(static_cast<char>(1 << (2 * i)))),
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

inline void FinishQ6_K(const float* x, const float* scales, int8_t* L,
                       uint8_t* dst) {
  GgmlBlockQ6_K y;
  float sub_d[kKQuantBlock / 16];
  if (GgmlScalesQ6_K(scales, y, sub_d)) {
    Requantize<false>(x, sub_d, nullptr, 16, 32, L);
    const auto* codes = reinterpret_cast<const uint8_t*>(L);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i two = _mm256_set1_epi8(0x03);
    auto nibble = [&](__m256i v) { return _mm256_and_si256(v, low4); };
    auto top = [&](__m256i v) {
      return _mm256_and_si256(_mm256_srli_epi16(v, 4), two);
    };
    for (int h = 0; h < 2; ++h) {
      const uint8_t* c = codes + 128 * h;
      const __m256i a = LoadBytes(c);
      const __m256i b = LoadBytes(c + 32);
      const __m256i e = LoadBytes(c + 64);
      const __m256i f = LoadBytes(c + 96);
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

// ---- The quantizers (GgmlQuantizeFn contract). Sub-blocks of 16 (Q2_K,
// Q3_K, Q6_K): kLanes of the 16 sub-blocks of a super-block per pass.
// Sub-blocks of 32 (Q4_K, Q5_K): kLanes / 8 super-blocks per pass; the
// quantizers take whole passes only (num_blocks a multiple of kLanes / 8).

template <typename V, bool kQ5>
void QuantizeQ45K(const float* src, int64_t num_blocks, const float* importance,
                  uint8_t* dst) {
  using F = typename V::F;
  constexpr int kNmax = kQ5 ? 31 : 15;
  constexpr size_t kBytes = kQ5 ? sizeof(GgmlBlockQ5_K) : sizeof(GgmlBlockQ4_K);
  constexpr int kSuper = V::kLanes / 8;  // super-blocks per pass
  Lanes<V> s;
  for (int64_t b = 0; b < num_blocks; b += kSuper) {
    const float* x = src + b * kKQuantBlock;
    alignas(64) float scales[V::kLanes];
    alignas(64) float mins[V::kLanes];
    alignas(64) float sw[V::kLanes];
    uint8_t L[kSuper * kKQuantBlock];
    V::Transpose(x, 32, s.x);
    F scale, the_min;
    if (importance == nullptr) {
      // quantize_row_q{4,5}_K_ref: weights av_x + |x|, av_x per sub-block.
      F sum_x2 = V::Zero();
      for (int i = 0; i < 32; ++i) sum_x2 = V::Add(sum_x2, V::Mul(s.x[i], s.x[i]));
      const F av_x = V::Sqrt(V::Div(sum_x2, V::Set(32.0f)));
      for (int i = 0; i < 32; ++i) s.w[i] = V::Add(av_x, V::Abs(s.x[i]));
      QkxQuants<V, false>(s, 32, kNmax, kQ5 ? -0.5f : -1.0f, 0.1f, kQ5 ? 15 : 20,
                          false, scale, the_min);
    } else {
      alignas(64) float sigma2[V::kLanes];
      for (int k = 0; k < kSuper; ++k) {
        const float s2 = 2.0f * SumSquares(x + k * kKQuantBlock, kKQuantBlock) /
                         static_cast<float>(kKQuantBlock);
        for (int l = 0; l < 8; ++l) sigma2[8 * k + l] = s2;
      }
      V::Store(sw, ImportanceWeights(s, importance + b * kKQuantBlock, 32,
                                     V::Load(sigma2)));
      QkxQuants<V, true>(s, 32, kNmax, -0.9f, 0.05f, 36, false, scale, the_min);
    }
    V::Store(scales, scale);
    V::Store(mins, the_min);
    StoreCodes<V>(s.L, 32, L);
    for (int k = 0; k < kSuper; ++k) {
      FinishQ45K<kQ5>(x + k * kKQuantBlock, scales + 8 * k, mins + 8 * k,
                      importance != nullptr ? sw + 8 * k : nullptr,
                      L + k * kKQuantBlock,
                      dst + (b + k) * static_cast<int64_t>(kBytes));
    }
  }
}

template <typename V>
void QuantizeQ6K(const float* src, int64_t num_blocks, const float* importance,
                 uint8_t* dst) {
  constexpr int kStride = 16 * V::kLanes;  // elements per pass
  Lanes<V> s;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kKQuantBlock;
    alignas(64) float scales[16];
    int8_t L[kKQuantBlock];
    for (int g = 0; g < kKQuantBlock / kStride; ++g) {
      V::Transpose(x + kStride * g, 16, s.x);
      if (importance != nullptr) {
        V::Transpose(importance + b * kKQuantBlock + kStride * g, 16, s.w);
      } else {
        for (int i = 0; i < 16; ++i) s.w[i] = V::Mul(s.x[i], s.x[i]);
      }
      V::Store(scales + V::kLanes * g, QxQuants(s, 16, 32));
      StoreCodes<V>(s.L, 16, L + kStride * g);
    }
    FinishQ6_K(x, scales, L, dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ6_K)));
  }
}

template <typename V>
void QuantizeQ3K(const float* src, int64_t num_blocks, const float* importance,
                 uint8_t* dst) {
  constexpr int kStride = 16 * V::kLanes;
  Lanes<V> s;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kKQuantBlock;
    alignas(64) float scales[16];
    alignas(64) float sw[16];
    int8_t L[kKQuantBlock];
    const float sigma2 =
        importance != nullptr
            ? 2.0f * SumSquares(x, kKQuantBlock) / static_cast<float>(kKQuantBlock)
            : 0.0f;
    for (int g = 0; g < kKQuantBlock / kStride; ++g) {
      V::Transpose(x + kStride * g, 16, s.x);
      if (importance == nullptr) {
        V::Store(scales + V::kLanes * g, Q3Quants(s, 16, 4));
      } else {
        V::Store(sw + V::kLanes * g,
                 ImportanceWeights(s, importance + b * kKQuantBlock + kStride * g, 16,
                                   V::Set(sigma2)));
        V::Store(scales + V::kLanes * g, QxQuants(s, 16, 4));
      }
      StoreCodes<V>(s.L, 16, L + kStride * g);
    }
    FinishQ3_K(x, scales, importance != nullptr ? sw : nullptr, L,
               dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ3_K)));
  }
}

template <typename V>
void QuantizeQ2K(const float* src, int64_t num_blocks, const float* importance,
                 uint8_t* dst) {
  using F = typename V::F;
  constexpr int kStride = 16 * V::kLanes;
  Lanes<V> s;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float* x = src + b * kKQuantBlock;
    alignas(64) float scales[16];
    alignas(64) float mins[16];
    alignas(64) float sw[16];
    uint8_t L[kKQuantBlock];
    const float sigma2 =
        importance != nullptr
            ? SumSquares(x, kKQuantBlock) / static_cast<float>(kKQuantBlock)
            : 0.0f;
    for (int g = 0; g < kKQuantBlock / kStride; ++g) {
      V::Transpose(x + kStride * g, 16, s.x);
      F scale, the_min;
      if (importance == nullptr) {
        for (int i = 0; i < 16; ++i) s.w[i] = V::Abs(s.x[i]);
        QkxQuants<V, false>(s, 16, 3, -0.5f, 0.1f, 15, true, scale, the_min);
      } else {
        V::Store(sw + V::kLanes * g,
                 ImportanceWeights(s, importance + b * kKQuantBlock + kStride * g, 16,
                                   V::Set(sigma2)));
        QkxQuants<V, true>(s, 16, 3, -0.9f, 0.05f, 36, false, scale, the_min);
      }
      V::Store(scales + V::kLanes * g, scale);
      V::Store(mins + V::kLanes * g, the_min);
      StoreCodes<V>(s.L, 16, L + kStride * g);
    }
    FinishQ2_K(x, scales, mins, importance != nullptr ? sw : nullptr, L,
               dst + b * static_cast<int64_t>(sizeof(GgmlBlockQ2_K)));
  }
}

}  // namespace
}  // namespace quantd::internal

#endif  // QUANTD_KERNELS_INTERNAL_GGML_KQUANTS_LANES_H_
