// AVX-512 paths of ggml's K-quants (compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512dq and AVX2; contract in internal/ggml_kquants.h): the
// lane-generic code of internal/ggml_kquants_lanes.h with sixteen lanes,
// one sub-block per lane: the 16 sub-blocks of a Q2_K/Q3_K/Q6_K
// super-block, or the 8 + 8 of two Q4_K/Q5_K super-blocks (an odd last one
// takes the eight-lane pass). Lane masks are AVX-512 mask registers
// (Avx512Lanes of internal/ggml_lanes.h).
#include <cstdint>

#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/ggml_kquants_lanes.h"

namespace quantd::internal {
namespace {

// Q4_K/Q5_K: pairs of super-blocks, an odd last one on eight lanes.
template <bool kQ5>
void QuantizeQ45KPairs(const float* src, int64_t num_blocks,
                       const float* importance, uint8_t* dst) {
  constexpr int64_t kBytes =
      kQ5 ? sizeof(GgmlBlockQ5_K) : sizeof(GgmlBlockQ4_K);
  const int64_t pairs = num_blocks / 2 * 2;
  QuantizeQ45K<Avx512Lanes, kQ5>(src, pairs, importance, dst);
  if (pairs < num_blocks) {
    QuantizeQ45K<Avx2Lanes, kQ5>(
        src + pairs * kGgmlBlock256, 1,
        importance != nullptr ? importance + pairs * kGgmlBlock256 : nullptr,
        dst + pairs * kBytes);
  }
}

}  // namespace

void GgmlQuantizeQ2_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ2K<Avx512Lanes>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ3_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ3K<Avx512Lanes>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ4_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ45KPairs<false>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ5_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ45KPairs<true>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ6_KAvx512(const float* src, int64_t num_blocks,
                            const float* importance, uint8_t* dst) {
  QuantizeQ6K<Avx512Lanes>(src, num_blocks, importance, dst);
}

}  // namespace quantd::internal
