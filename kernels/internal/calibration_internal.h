// Internal: helpers shared by the calibration units (calibration_stats.cc,
// range_estimators.cc, output_error.cc).
#ifndef QUANTD_KERNELS_INTERNAL_CALIBRATION_INTERNAL_H_
#define QUANTD_KERNELS_INTERNAL_CALIBRATION_INTERNAL_H_

#include <omp.h>

#include <cstdint>

namespace quantd {
namespace internal {

inline bool IsPowerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// oneDNN with the OpenMP runtime sizes its team from the calling thread's
// omp_get_max_threads(); this caps it for one call and restores it.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int threads)
      : saved_(threads > 0 ? omp_get_max_threads() : 0) {
    if (threads > 0) omp_set_num_threads(threads);
  }
  ~ScopedOmpThreads() {
    if (saved_ > 0) omp_set_num_threads(saved_);
  }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  const int saved_;
};

}  // namespace internal
}  // namespace quantd

#endif  // QUANTD_KERNELS_INTERNAL_CALIBRATION_INTERNAL_H_
