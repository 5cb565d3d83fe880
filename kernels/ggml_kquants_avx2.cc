// AVX2 paths of ggml's K-quants (compiled with -mavx2 -mfma -mf16c;
// contract in internal/ggml_kquants.h): the lane-generic code of
// internal/ggml_kquants_lanes.h with eight lanes, one sub-block per lane.
#include <cstdint>

#include "kernels/internal/ggml_kquants.h"
#include "kernels/internal/ggml_kquants_lanes.h"

namespace quantd::internal {

void GgmlQuantizeQ2_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  QuantizeQ2K<Avx2Lanes>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ3_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  QuantizeQ3K<Avx2Lanes>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ4_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  QuantizeQ45K<Avx2Lanes, false>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ5_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  QuantizeQ45K<Avx2Lanes, true>(src, num_blocks, importance, dst);
}

void GgmlQuantizeQ6_KAvx2(const float* src, int64_t num_blocks,
                          const float* importance, uint8_t* dst) {
  QuantizeQ6K<Avx2Lanes>(src, num_blocks, importance, dst);
}

}  // namespace quantd::internal
