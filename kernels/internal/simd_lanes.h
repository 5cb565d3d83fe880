// Internal: the vector lane types that the int, float-format and codebook
// kernels are written over (internal/quantize_lanes.h, float_lanes.h,
// nonuniform_lanes.h). simd::Avx2 has eight f32 / i32 lanes, simd::Avx512
// sixteen; a kernel template instantiated with one of them in its ISA file
// (quantize_avx2.cc, quantize_avx512.cc, ...) is the same code on either
// width:
//
//   template <typename V>
//   void Scale(const float* x, int64_t n, float s, float* y) {
//     int64_t i = 0;
//     for (; i + V::kLanes <= n; i += V::kLanes) {
//       V::StoreF(y + i, V::MulF(V::LoadF(x + i), V::SetF(s)));
//     }
//     if (i < n) V::StoreTailF(y + i, V::MulF(V::LoadTailF(x + i, n - i), V::SetF(s)), n - i);
//   }
//
// Each operation is the instruction sequence the hand-written per-ISA files
// used, so an instantiation compiles to what they did. Where the best
// sequence differs between the ISAs (narrowing to bytes, tails, table
// lookups) the operation is that whole step. A *Tail operation touches
// lanes [0, r) only, 0 < r < kLanes; loads fill the other lanes with 0.
//
// Everything has internal linkage so that code compiled with -mavx512f
// never leaks into a caller built without it (an inline function with
// external linkage would be merged by the linker). Include only from files
// compiled with at least -mavx2 -mfma -mf16c; simd::Avx512 exists only
// where __AVX512F__ (and BW, VL, DQ) are enabled. The lane types of the
// K-quants are separate (internal/ggml_kquants_lanes.h).
#ifndef QUANTD_KERNELS_INTERNAL_SIMD_LANES_H_
#define QUANTD_KERNELS_INTERNAL_SIMD_LANES_H_

// GCC 12's avx512fintrin.h trips -Wuninitialized on its own
// _mm512_undefined_* pass-through operands (GCC bug 105593). The warning is
// reported at header lines, so silencing it around the include keeps it on
// for our code. (This must be the translation unit's first immintrin.h.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <cstring>

namespace quantd::internal::simd {
namespace {  // NOLINT: per-ISA copies on purpose, see above.

// Eight lanes: f32 / i32 in __m256 / __m256i, f64 in two __m256d (low and
// high half of an f32 vector).
struct Avx2 {
  using F = __m256;
  using I = __m256i;
  using D = __m256d;
  static constexpr int kLanes = 8;
  static constexpr int kBytes = 32;  // bytes in an I

  // Lanes [0, r) set (all ones), for maskload / maskstore.
  static I TailMask(int64_t r) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  // ---- f32
  static F ZeroF() { return _mm256_setzero_ps(); }
  static F SetF(float v) { return _mm256_set1_ps(v); }
  static F LoadF(const float* p) { return _mm256_loadu_ps(p); }
  static F LoadTailF(const float* p, int64_t r) {
    return _mm256_maskload_ps(p, TailMask(r));
  }
  static void StoreF(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void StoreTailF(float* p, F v, int64_t r) {
    _mm256_maskstore_ps(p, TailMask(r), v);
  }
  static F MinF(F a, F b) { return _mm256_min_ps(a, b); }
  static F MaxF(F a, F b) { return _mm256_max_ps(a, b); }
  static F MulF(F a, F b) { return _mm256_mul_ps(a, b); }
  static F DivF(F a, F b) { return _mm256_div_ps(a, b); }
  static I CastI(F v) { return _mm256_castps_si256(v); }
  static F CastF(I v) { return _mm256_castsi256_ps(v); }
  static F ToF(I v) { return _mm256_cvtepi32_ps(v); }
  // Rounded with MXCSR (default: nearest even, like nearbyint).
  static I RoundToI(F v) { return _mm256_cvtps_epi32(v); }
  static I TruncToI(F v) { return _mm256_cvttps_epi32(v); }
  // Nearest integer, ties to even (as nearbyint), as a float.
  static F RoundF(F v) {
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static F AbsF(F v) {
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MAX)));
  }
  // count + (a < b ? 1 : 0) per lane (ordered: false for NaN).
  static I CountLt(I count, F a, F b) {
    return _mm256_sub_epi32(count, _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LT_OQ)));
  }
  // acc + (a < b ? inc : 0) per lane.
  static I AddIfLt(I acc, F a, F b, I inc) {
    return _mm256_add_epi32(
        acc, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LT_OQ)), inc));
  }

  // ---- Table lookups: table[index] per lane.
  // A table of kLanes entries in one register.
  static F Lookup1(F table, I index) { return _mm256_permutevar8x32_ps(table, index); }
  // 2 * kLanes entries in two: bit 3 of the index moved to the sign bit
  // selects the upper half.
  static F Lookup2(F lo, F hi, I index) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, index),
                            _mm256_permutevar8x32_ps(hi, index),
                            _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
  }
  static F Gather(const float* table, I index) {
    return _mm256_i32gather_ps(table, index, 4);
  }

  static float ReduceMinF(F v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0x4E));
    m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0xB1));
    return _mm_cvtss_f32(m);
  }
  static float ReduceMaxF(F v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0x4E));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0xB1));
    return _mm_cvtss_f32(m);
  }

  // ---- i32 (and the same register as bytes or u16)
  static I ZeroI() { return _mm256_setzero_si256(); }
  static I SetI(int v) { return _mm256_set1_epi32(v); }
  static I Set16(int16_t v) { return _mm256_set1_epi16(v); }
  static I LoadI(const void* p) {
    return _mm256_loadu_si256(static_cast<const __m256i*>(p));
  }
  static I LoadTailI(const void* p, int64_t r) {
    return _mm256_maskload_epi32(static_cast<const int*>(p), TailMask(r));
  }
  static void StoreI(void* p, I v) {
    _mm256_storeu_si256(static_cast<__m256i*>(p), v);
  }
  static void StoreTailI(void* p, I v, int64_t r) {
    _mm256_maskstore_epi32(static_cast<int*>(p), TailMask(r), v);
  }
  static I AndI(I a, I b) { return _mm256_and_si256(a, b); }
  static I OrI(I a, I b) { return _mm256_or_si256(a, b); }
  static I AddI(I a, I b) { return _mm256_add_epi32(a, b); }
  static I SubI(I a, I b) { return _mm256_sub_epi32(a, b); }
  static I MinI(I a, I b) { return _mm256_min_epi32(a, b); }
  static I MaxI(I a, I b) { return _mm256_max_epi32(a, b); }
  static I Slli32(I v, int n) { return _mm256_slli_epi32(v, n); }
  static I Srli32(I v, int n) { return _mm256_srli_epi32(v, n); }
  static I Slli16(I v, int n) { return _mm256_slli_epi16(v, n); }
  static I Srli16(I v, int n) { return _mm256_srli_epi16(v, n); }
  // Shifts by the count in the low 64 bits of `n` (one count for a loop).
  static I Sll32(I v, __m128i n) { return _mm256_sll_epi32(v, n); }
  static I Sra32(I v, __m128i n) { return _mm256_sra_epi32(v, n); }

  static int ReduceMaxI(I v) {
    __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v),
                              _mm256_extracti128_si256(v, 1));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xB1));
    return _mm_cvtsi128_si32(m);
  }

  // ---- Bytes. Narrowing stores take i32 lanes in [0, 255] and write their
  // low bytes in lane order.
  // kLanes bytes in the low half of an xmm.
  static __m128i NarrowBytes(I v) {
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v),
                                       _mm256_extracti128_si256(v, 1));
    return _mm_packus_epi16(w, w);
  }
  static void StoreBytes(uint8_t* p, I v) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), NarrowBytes(v));
  }
  static void StoreTailBytes(uint8_t* p, I v, int64_t r) {
    const auto word = static_cast<uint64_t>(_mm_cvtsi128_si64(NarrowBytes(v)));
    std::memcpy(p, &word, static_cast<size_t>(r));
  }
  // 4 * kLanes bytes of four vectors (packs interleave 128-bit lanes; the
  // permute undoes it).
  static void StoreBytes4(uint8_t* p, I v0, I v1, I v2, I v3) {
    const __m256i a = _mm256_packs_epi32(v0, v1);
    const __m256i b = _mm256_packs_epi32(v2, v3);
    StoreI(p, _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b),
                                          _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  // u16 lanes (each <= 0xFF) of two vectors as one vector of bytes, in order.
  static I NarrowU16Pair(I a, I b) {
    return _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xD8);
  }
  // u16 lanes (each <= 0xFF) of one vector as kBytes / 2 bytes.
  static void StoreNarrowU16(uint8_t* p, I v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm_packus_epi16(_mm256_castsi256_si128(v),
                                      _mm256_extracti128_si256(v, 1)));
  }
  // kBytes / 2 bytes zero-extended to u16 lanes.
  static I LoadWidenU8ToU16(const uint8_t* p) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  // kLanes bytes in an xmm (the rest of it unspecified / zero).
  static __m128i LoadBytes(const uint8_t* p) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  }
  static __m128i LoadTailBytes(const uint8_t* p, int64_t r) {
    uint64_t word = 0;
    std::memcpy(&word, p, static_cast<size_t>(r));
    return _mm_cvtsi64_si128(static_cast<long long>(word));
  }
  // The low kLanes bytes zero-extended to i32 lanes.
  static I WidenBytes(__m128i b) { return _mm256_cvtepu8_epi32(b); }
  // kLanes / 2 bytes (kLanes 4-bit codes) to and from the low end of an xmm.
  static __m128i LoadNibbleBytes(const uint8_t* p) {
    int32_t four = 0;
    std::memcpy(&four, p, 4);
    return _mm_cvtsi32_si128(four);
  }
  static void StoreNibbleBytes(uint8_t* p, __m128i v) {
    const int32_t four = _mm_cvtsi128_si32(v);
    std::memcpy(p, &four, 4);
  }

  // ---- 16-bit inputs (f16 / bf16 bit patterns), kLanes of them.
  static F LoadHalves(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static F LoadTailHalves(const uint16_t* p, int64_t r) {
    return _mm256_cvtph_ps(LoadTail16(p, r));
  }
  static I LoadWidenU16(const uint16_t* p) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static I LoadTailWidenU16(const uint16_t* p, int64_t r) {
    return _mm256_cvtepu16_epi32(LoadTail16(p, r));
  }
  static __m128i LoadTail16(const uint16_t* p, int64_t r) {
    alignas(16) uint16_t padded[8] = {};
    std::memcpy(padded, p, static_cast<size_t>(r) * sizeof(uint16_t));
    return _mm_load_si128(reinterpret_cast<const __m128i*>(padded));
  }

  // ---- f64: the low and high kLanes / 2 f32 lanes widened.
  static D ZeroD() { return _mm256_setzero_pd(); }
  static D ToDLow(F v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
  static D ToDHigh(F v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
  static D AddD(D a, D b) { return _mm256_add_pd(a, b); }
  static D SubD(D a, D b) { return _mm256_sub_pd(a, b); }
  static D MulD(D a, D b) { return _mm256_mul_pd(a, b); }
  static D FmaddD(D a, D b, D c) { return _mm256_fmadd_pd(a, b, c); }  // a*b+c
  static D MaxD(D a, D b) { return _mm256_max_pd(a, b); }
  static D AbsD(D v) {
    return _mm256_and_pd(v, _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFF)));
  }
  static double ReduceAddD(D v) {
    const __m128d m = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(m, _mm_unpackhi_pd(m, m)));
  }
  static double ReduceMaxD(D v) {
    const __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
  }
};

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__)
// Sixteen lanes: the operations of Avx2 on zmm registers; tails are masked
// loads and stores.
struct Avx512 {
  using F = __m512;
  using I = __m512i;
  using D = __m512d;
  static constexpr int kLanes = 16;
  static constexpr int kBytes = 64;

  static __mmask16 TailMask(int64_t r) {
    return static_cast<__mmask16>((1u << r) - 1);
  }

  // ---- f32
  static F ZeroF() { return _mm512_setzero_ps(); }
  static F SetF(float v) { return _mm512_set1_ps(v); }
  static F LoadF(const float* p) { return _mm512_loadu_ps(p); }
  static F LoadTailF(const float* p, int64_t r) {
    return _mm512_maskz_loadu_ps(TailMask(r), p);
  }
  static void StoreF(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void StoreTailF(float* p, F v, int64_t r) {
    _mm512_mask_storeu_ps(p, TailMask(r), v);
  }
  static F MinF(F a, F b) { return _mm512_min_ps(a, b); }
  static F MaxF(F a, F b) { return _mm512_max_ps(a, b); }
  static F MulF(F a, F b) { return _mm512_mul_ps(a, b); }
  static F DivF(F a, F b) { return _mm512_div_ps(a, b); }
  static I CastI(F v) { return _mm512_castps_si512(v); }
  static F CastF(I v) { return _mm512_castsi512_ps(v); }
  static F ToF(I v) { return _mm512_cvtepi32_ps(v); }
  static I RoundToI(F v) { return _mm512_cvtps_epi32(v); }
  static I TruncToI(F v) { return _mm512_cvttps_epi32(v); }
  static F RoundF(F v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static F AbsF(F v) { return _mm512_abs_ps(v); }
  static I CountLt(I count, F a, F b) {
    return _mm512_mask_add_epi32(count, _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), count,
                                 _mm512_set1_epi32(1));
  }
  static I AddIfLt(I acc, F a, F b, I inc) {
    return _mm512_mask_add_epi32(acc, _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), acc, inc);
  }

  // ---- Table lookups.
  static F Lookup1(F table, I index) { return _mm512_permutexvar_ps(index, table); }
  static F Lookup2(F lo, F hi, I index) { return _mm512_permutex2var_ps(lo, index, hi); }
  static F Gather(const float* table, I index) {
    return _mm512_i32gather_ps(index, table, 4);
  }

  // Horizontal reductions by hand: GCC 12's _mm512_reduce_* expand to
  // _mm512_extracti64x4_epi64 with an undefined pass-through operand, which
  // -Werror=uninitialized rejects.
  static float ReduceMinF(F v) {
    v = _mm512_min_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
    v = _mm512_min_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    __m128 m = _mm512_castps512_ps128(v);
    m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0x4E));
    m = _mm_min_ps(m, _mm_shuffle_ps(m, m, 0xB1));
    return _mm_cvtss_f32(m);
  }
  static float ReduceMaxF(F v) {
    v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
    v = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
    __m128 m = _mm512_castps512_ps128(v);
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0x4E));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, 0xB1));
    return _mm_cvtss_f32(m);
  }

  // ---- i32
  static I ZeroI() { return _mm512_setzero_si512(); }
  static I SetI(int v) { return _mm512_set1_epi32(v); }
  static I Set16(int16_t v) { return _mm512_set1_epi16(v); }
  static I LoadI(const void* p) { return _mm512_loadu_si512(p); }
  static I LoadTailI(const void* p, int64_t r) {
    return _mm512_maskz_loadu_epi32(TailMask(r), p);
  }
  static void StoreI(void* p, I v) { _mm512_storeu_si512(p, v); }
  static void StoreTailI(void* p, I v, int64_t r) {
    _mm512_mask_storeu_epi32(p, TailMask(r), v);
  }
  static I AndI(I a, I b) { return _mm512_and_si512(a, b); }
  static I OrI(I a, I b) { return _mm512_or_si512(a, b); }
  static I AddI(I a, I b) { return _mm512_add_epi32(a, b); }
  static I SubI(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I MinI(I a, I b) { return _mm512_min_epi32(a, b); }
  static I MaxI(I a, I b) { return _mm512_max_epi32(a, b); }
  static I Slli32(I v, int n) { return _mm512_slli_epi32(v, static_cast<unsigned>(n)); }
  static I Srli32(I v, int n) { return _mm512_srli_epi32(v, static_cast<unsigned>(n)); }
  static I Slli16(I v, int n) { return _mm512_slli_epi16(v, static_cast<unsigned>(n)); }
  static I Srli16(I v, int n) { return _mm512_srli_epi16(v, static_cast<unsigned>(n)); }
  static I Sll32(I v, __m128i n) { return _mm512_sll_epi32(v, n); }
  static I Sra32(I v, __m128i n) { return _mm512_sra_epi32(v, n); }

  static int ReduceMaxI(I v) {
    v = _mm512_max_epi32(v, _mm512_shuffle_i64x2(v, v, 0x4E));
    v = _mm512_max_epi32(v, _mm512_shuffle_i64x2(v, v, 0xB1));
    __m128i m = _mm512_castsi512_si128(v);
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xB1));
    return _mm_cvtsi128_si32(m);
  }

  // ---- Bytes (vpmovdb truncates, so any i32 lanes work).
  static __m128i NarrowBytes(I v) { return _mm512_cvtepi32_epi8(v); }
  static void StoreBytes(uint8_t* p, I v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), NarrowBytes(v));
  }
  static void StoreTailBytes(uint8_t* p, I v, int64_t r) {
    _mm512_mask_cvtepi32_storeu_epi8(p, TailMask(r), v);
  }
  static void StoreBytes4(uint8_t* p, I v0, I v1, I v2, I v3) {
    StoreBytes(p, v0);
    StoreBytes(p + 16, v1);
    StoreBytes(p + 32, v2);
    StoreBytes(p + 48, v3);
  }
  static I NarrowU16Pair(I a, I b) {
    return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7),
                                    _mm512_packus_epi16(a, b));
  }
  static void StoreNarrowU16(uint8_t* p, I v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi16_epi8(v));
  }
  static I LoadWidenU8ToU16(const uint8_t* p) {
    return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m128i LoadBytes(const uint8_t* p) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  static __m128i LoadTailBytes(const uint8_t* p, int64_t r) {
    return _mm_maskz_loadu_epi8(TailMask(r), p);
  }
  static I WidenBytes(__m128i b) { return _mm512_cvtepu8_epi32(b); }
  static __m128i LoadNibbleBytes(const uint8_t* p) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  }
  static void StoreNibbleBytes(uint8_t* p, __m128i v) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), v);
  }

  // ---- 16-bit inputs.
  static F LoadHalves(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F LoadTailHalves(const uint16_t* p, int64_t r) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(TailMask(r), p));
  }
  static I LoadWidenU16(const uint16_t* p) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static I LoadTailWidenU16(const uint16_t* p, int64_t r) {
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(TailMask(r), p));
  }

  // ---- f64
  static D ZeroD() { return _mm512_setzero_pd(); }
  static D ToDLow(F v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
  static D ToDHigh(F v) {
    return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xEE)));
  }
  static D AddD(D a, D b) { return _mm512_add_pd(a, b); }
  static D SubD(D a, D b) { return _mm512_sub_pd(a, b); }
  static D MulD(D a, D b) { return _mm512_mul_pd(a, b); }
  static D FmaddD(D a, D b, D c) { return _mm512_fmadd_pd(a, b, c); }
  static D MaxD(D a, D b) { return _mm512_max_pd(a, b); }
  static D AbsD(D v) { return _mm512_abs_pd(v); }
  static double ReduceAddD(D v) {
    v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0x4E));
    v = _mm512_add_pd(v, _mm512_shuffle_f64x2(v, v, 0xB1));
    const __m128d m = _mm512_castpd512_pd128(v);
    return _mm_cvtsd_f64(_mm_add_sd(m, _mm_unpackhi_pd(m, m)));
  }
  static double ReduceMaxD(D v) {
    v = _mm512_max_pd(v, _mm512_shuffle_f64x2(v, v, 0x4E));
    v = _mm512_max_pd(v, _mm512_shuffle_f64x2(v, v, 0xB1));
    const __m128d m = _mm512_castpd512_pd128(v);
    return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
  }
};
#endif  // __AVX512F__ ...

}  // namespace
}  // namespace quantd::internal::simd

#endif  // QUANTD_KERNELS_INTERNAL_SIMD_LANES_H_
