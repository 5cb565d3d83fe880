// Static int8 activation ranges (W8A8) from calibration statistics
// (calibration_stats.h): min-max, percentile, MSE-optimal clipping and KL
// divergence; the rules are stated below.
//
//   QUANTD_ASSIGN_OR_RETURN(ActivationRange r,
//       EstimateTensorRange(acc, {.method = RangeMethod::kKl}));
//
// Thread-safety: the functions are reentrant.
#ifndef QUANTD_KERNELS_RANGE_ESTIMATORS_H_
#define QUANTD_KERNELS_RANGE_ESTIMATORS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/calibration_stats.h"

namespace quantd {

enum class RangeMethod {
  kMinMax,      // the exact min / max (or max|x|)
  kPercentile,  // a percentile of the histogram
  kMse,         // clipping threshold minimizing the modelled int8 MSE
  kKl,          // TensorRT's entropy calibration (128 levels)
};

// "minmax", "percentile", "mse", "kl".
absl::string_view RangeMethodName(RangeMethod method);

struct RangeOptions {
  RangeMethod method = RangeMethod::kMinMax;
  // Symmetric: codes in [-128, 127], zero point 0. Asymmetric: codes in
  // [0, 255] with a zero point, as quantize.h's asymmetric int8.
  bool symmetric = true;
  // kPercentile: in [50, 100]. Default: 99.99.
  double percentile = 99.99;
  // kMse asymmetric: at most this many candidates per side (>= 2).
  int64_t mse_candidates = 128;
  // Whether the caller also wants one range per channel
  // (EstimateChannelRanges); the estimators themselves ignore it.
  bool per_channel = false;
};

// The clipping range and the int8 parameters derived from it:
//   symmetric:  t = max(-lo, hi), scale = t / 127 (f32, at least FLT_MIN),
//               zero_point = 0;
//   asymmetric: lo' = min(lo, 0), hi' = max(hi, 0),
//               scale = (hi' − lo') / 255 (f32, at least FLT_MIN),
//               zero_point = clamp(round_half_even(−lo' · (1/scale)), 0, 255).
struct ActivationRange {
  float lo = 0;
  float hi = 0;
  float scale = 0;
  int32_t zero_point = 0;
};

ActivationRange Int8Range(float lo, float hi, bool symmetric);

// The estimators on one histogram and the exact min / max of its values
// (the building block of the two functions below; exposed for tests).
// Returns the clipping range [lo, hi] with min <= lo <= hi <= max (for
// symmetric methods lo = -t, hi = t with t <= max(|min|, |max|)).
//
// Rules (each bin's values are represented by c_i, its centre clamped into
// [min, max]; N is the histogram's total; for symmetric methods the
// histogram is folded into B/2 bins of |x|, bin k = [k·w, (k+1)·w) holding
// bins B/2 + k and B/2 − 1 − k, c_k its centre clamped to amax = max(|min|,
// |max|)):
//  - kMinMax: [min, max] (symmetric: t = amax). The histogram is unused.
//  - kPercentile p: symmetric: the first folded bin k whose cumulative count
//    is >= p/100·N gives t = min((k+1)·w, amax). Asymmetric: hi = min(upper
//    edge of the first bin with cumulative count >= p/100·N, max); lo =
//    max(lower edge of the first bin with cumulative count > (1 − p/100)·N,
//    min).
//  - kMse: symmetric: candidates t = k·w (k >= 1, t < amax) and amax; the
//    modelled error of t is Σ_{folded bins k' >= k} n_k'·(c_k' − t)² (values
//    clipped to t) + N_in·s²/12 (rounding of the N_in values inside, s =
//    t/127); the smallest error wins, ties to the larger t. Asymmetric:
//    hi from bin edges in (max(min, 0), max) and max itself, lo from bin
//    edges in (min, min(max, 0)) and min itself; each list, ordered from the
//    extreme inwards, is thinned to every ceil(n/mse_candidates)-th entry
//    (the extreme is always kept); error = clip error on both sides +
//    N_in·s²/12 with s = (max(hi, 0) − min(lo, 0))/255, the clip errors
//    Σ_{bins >= hi's} n(c − hi)² and Σ_{bins < lo's} n(lo − c)² (none for
//    hi = max, lo = min); every pair is tried, ties to the
//    first pair in (hi, lo) order.
//  - kKl (symmetric; asymmetric clips [min, max] to [−t, t]): nb = the folded
//    bins below amax (ceil(amax/w)). If nb <= 128, t = amax. Otherwise for
//    each i in [128, nb]: P = folded bins [0, i) with the count of bins >= i
//    added to bin i−1; Q = bins [0, i) merged into 128 groups of g = i/128
//    bins (the last group also takes the i − 128·g remaining bins), each
//    group's count spread evenly over its bins where P > 0; P and Q are
//    normalized to sum 1 (an i whose Q is all zero is skipped), Q is
//    smoothed by mixing in the uniform distribution, Q' = (Q + 1e-4/i) /
//    (1 + 1e-4), and KL(P‖Q') = Σ_{P>0} P ln(P/Q'). The i with the smallest
//    KL (first on ties) gives t = min(i·w, amax). O(nb²) per histogram.
// InvalidArgument for options out of range; FailedPrecondition for an empty
// histogram with a method that needs one.
struct ClipRange {
  double lo = 0;
  double hi = 0;
};
absl::StatusOr<ClipRange> EstimateClipRange(const Histogram& histogram,
                                            float min, float max,
                                            const RangeOptions& options);

// The range of the whole tensor (the per-tensor histogram and min / max over
// all channels). FailedPrecondition if the accumulator has no stats or no
// tokens.
absl::StatusOr<ActivationRange> EstimateTensorRange(
    const CalibrationAccumulator& acc, const RangeOptions& options);
// One range per channel (input feature). Methods other than kMinMax need
// per-channel histograms (FailedPrecondition otherwise).
absl::StatusOr<std::vector<ActivationRange>> EstimateChannelRanges(
    const CalibrationAccumulator& acc, const RangeOptions& options);

}  // namespace quantd

#endif  // QUANTD_KERNELS_RANGE_ESTIMATORS_H_
