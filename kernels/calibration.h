// Calibration statistics for data-aware quantization, accumulated chunk by
// chunk so that memory depends on the feature count, never on the token
// count: the Gram matrix G = XᵀX, per-channel min / max / mean|x| / mean x²
// (llama.cpp's imatrix), and signed histograms per tensor and per channel.
// From them: static int8 activation ranges (min-max, percentile, MSE-optimal
// clipping, KL divergence) and the output-space error of a quantized weight,
// ‖XWᵀ − XŴᵀ‖²_F = tr(ΔW G ΔWᵀ), without X.
//
//   QUANTD_ASSIGN_OR_RETURN(CalibrationAccumulator acc,
//                           CalibrationAccumulator::Create("layers.0.attn",
//                                                          4096));
//   for (const Chunk& c : chunks) {           // rows x 4096, any chunking
//     QUANTD_RETURN_IF_ERROR(acc.Add(c.data, c.rows, c.columns));
//   }
//   QUANTD_ASSIGN_OR_RETURN(ActivationRange r,
//       EstimateTensorRange(acc, {.method = RangeMethod::kKl}));
//   QUANTD_ASSIGN_OR_RETURN(std::vector<double> g, acc.Gram());
//   QUANTD_ASSIGN_OR_RETURN(OutputError e,
//       ComputeOutputError(w, w_hat, out_features, in_features, g));
//
// Chunking does not matter. Every statistic except G is bit-identical
// however the rows are split into Add calls (and in what order the calls
// come, as long as the rows keep their order): sums are added row by row in
// f64, and histograms follow the rule below, which is exact. G is computed
// on blocks of `gram_block_rows` consecutive rows (counted from the first
// row ever added, whatever the chunks), each block's XᵀX by oneDNN's f32
// sgemm and added into an f64 total, so for a fixed oneDNN build it does
// not depend on the chunking either; Merge adds two such totals (different
// rounding from one accumulator seeing all rows, within float tolerance).
//
// Accuracy of G: each block of b rows is summed in f32 (error about
// sqrt(b)·2^-24 relative to Σ|x_i x_j| for the block), the blocks in f64, so
// the error does not grow with the number of blocks beyond f64's 2^-53 per
// addition. tests/e2e/python/test_calibration_stats.py checks 100k tokens
// against numpy float64 (max |ΔG| / max |G| below 1e-6).
//
// Histogram rule (the specification; reproduced in numpy by the tests).
// A histogram has B bins (a power of two, >= 16) over [-R, R), R = 2^e, bin
// i covering [(i − B/2)·w, (i − B/2 + 1)·w) with w = 2R/B. e is the smallest
// integer with 2^e > max|x| over everything added so far, and at least
// -149. A value goes to bin floor(x · (B/2) / 2^e) + B/2, computed in f64
// (exact: x is f32, the factor a power of two). When e grows by k, bin j
// moves to B/2 + floor((j − B/2) / 2^k) — the bin every value of j would
// have reached had it been added at the new range — so the counts equal
// those of binning all values at the final range at once.
//
// Thread-safety: an accumulator is thread-compatible (const methods may be
// called concurrently; Add/Merge need exclusive access). The free functions
// are reentrant. oneDNN runs on the caller's thread by default
// (`gemm_threads` = 1): the server's worker pool provides the parallelism.
#ifndef QUANTD_KERNELS_CALIBRATION_H_
#define QUANTD_KERNELS_CALIBRATION_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/scheme.h"

namespace quantd {

struct CalibrationOptions {
  // Accumulate G = XᵀX (O(features²) memory). Default: true.
  bool gram = true;
  // Rows per f32 GEMM block of G (a multiple of nothing in particular; the
  // pending rows of an unfinished block are buffered: features x
  // gram_block_rows floats). Default: 512.
  int64_t gram_block_rows = 512;
  // Bins of the per-tensor histogram, a power of two in [16, 2^20].
  // Default: 2048.
  int64_t tensor_histogram_bins = 2048;
  // Bins of each per-channel histogram (0 = no per-channel histograms),
  // a power of two in [16, 2^16]. Counts are 32-bit, so an accumulator with
  // per-channel histograms takes at most 2^32 − 1 tokens. Default: 2048.
  int64_t channel_histogram_bins = 2048;
  // oneDNN threads per GEMM (0 = oneDNN's default, the OpenMP team size).
  // Default: 1.
  int gemm_threads = 1;
};

// A signed histogram as described in the header comment.
struct Histogram {
  int64_t bins = 0;
  int exponent = -149;            // range [-2^exponent, 2^exponent)
  std::vector<uint64_t> counts;   // `bins` entries

  double BinWidth() const;                 // 2^(exponent+1) / bins
  double LowerEdge(int64_t bin) const;     // (bin - bins/2) * BinWidth()
  uint64_t Total() const;
};

// Per-channel moments. mean_abs and mean_sq are 0 for an empty accumulator.
struct ChannelStats {
  std::vector<float> min;        // +inf / -inf before any row
  std::vector<float> max;
  std::vector<double> mean_abs;  // Σ|x| / tokens
  std::vector<double> mean_sq;   // Σx² / tokens (llama.cpp's imatrix)
};

class CalibrationAccumulator {
 public:
  // An empty accumulator for the calibration set `name` (used in every error
  // message) with `features` columns. InvalidArgument for features < 1,
  // options out of range, or features² too large to address.
  static absl::StatusOr<CalibrationAccumulator> Create(
      std::string name, int64_t features, const CalibrationOptions& options = {});

  // An accumulator that holds only G (features x features, row-major,
  // finite; its upper triangle is used) and its token count (>= 1), e.g. a Hessian saved elsewhere
  // (pass H/2 for GPTQ's H = 2XᵀX). Gram() and Importance() (diag(G)/tokens)
  // work; stats and histograms are absent (FailedPrecondition).
  static absl::StatusOr<CalibrationAccumulator> FromGram(
      std::string name, int64_t features, absl::Span<const double> gram,
      int64_t tokens);

  // An accumulator that holds only llama.cpp's imatrix: per-column Σx²/tokens
  // (finite, >= 0) over `tokens` tokens. Only Importance() works.
  static absl::StatusOr<CalibrationAccumulator> FromImportance(
      std::string name, absl::Span<const float> importance, int64_t tokens);

  CalibrationAccumulator(CalibrationAccumulator&&) = default;
  CalibrationAccumulator& operator=(CalibrationAccumulator&&) = default;
  CalibrationAccumulator(const CalibrationAccumulator&) = default;
  CalibrationAccumulator& operator=(const CalibrationAccumulator&) = default;

  // Folds `rows` rows of `columns` f32 values (row-major) into the
  // statistics. The chunk is checked whole before anything changes, so a
  // failed call leaves the accumulator as it was. InvalidArgument (message
  // names the set) for rows < 1, columns != features(), a NaN or infinite
  // value (row and column named), or an accumulator built by FromGram /
  // FromImportance; ResourceExhausted past 2^32 − 1 tokens with per-channel
  // histograms; Internal if oneDNN fails.
  absl::Status Add(const float* x, int64_t rows, int64_t columns);
  // Same for `bytes` bytes of `dtype` (F32/F16/BF16, little-endian, any
  // alignment): InvalidArgument also when `bytes` is not whole rows. Values
  // are converted exactly (convert.h), so F16/BF16 data gives the same
  // statistics as its f32 conversion.
  absl::Status Add(DType dtype, const void* x, size_t bytes, int64_t columns);

  // Adds `other`'s statistics: the result is that of one accumulator that
  // saw both sets of rows, exactly for counts, min/max and histograms, within
  // f64 rounding for the sums and f32 tolerance for G. InvalidArgument if
  // the names, feature counts, options or kinds of statistics differ.
  absl::Status Merge(const CalibrationAccumulator& other);

  const std::string& name() const { return name_; }
  int64_t features() const { return features_; }
  int64_t tokens() const { return tokens_; }
  const CalibrationOptions& options() const { return options_; }

  bool has_gram() const { return has_gram_; }
  bool has_stats() const { return has_stats_; }  // min/max/means/histograms
  bool has_channel_histograms() const {
    return has_stats_ && options_.channel_histogram_bins > 0;
  }

  // G = XᵀX, features x features row-major (both triangles), including the
  // rows of an unfinished block. FailedPrecondition without G; Internal if
  // oneDNN fails.
  absl::StatusOr<std::vector<double>> Gram() const;
  // Σx²/tokens per column (llama.cpp's imatrix). FailedPrecondition with no
  // source (no stats, no G) or no tokens.
  absl::StatusOr<std::vector<float>> Importance() const;
  // FailedPrecondition without stats.
  absl::StatusOr<ChannelStats> Stats() const;
  absl::StatusOr<Histogram> TensorHistogram() const;
  // FailedPrecondition without per-channel histograms; OutOfRange for a bad
  // channel.
  absl::StatusOr<Histogram> ChannelHistogram(int64_t channel) const;

  // Bytes this accumulator holds (its buffers' capacities): O(features² +
  // features · bins + features · gram_block_rows), independent of tokens.
  size_t MemoryBytes() const;

 private:
  CalibrationAccumulator() = default;
  absl::Status Error(absl::StatusCode code, std::string message) const;
  absl::Status AddValidated(const float* x, int64_t rows);
  absl::Status FlushBlock(const float* x, int64_t rows);
  void AddHistograms(const float* x, int64_t rows,
                     const std::vector<float>& chunk_amax);

  std::string name_;
  int64_t features_ = 0;
  CalibrationOptions options_;
  int64_t tokens_ = 0;
  bool has_gram_ = false;
  bool has_stats_ = false;
  bool importance_only_ = false;

  // G: upper triangle (and diagonal) accumulated in f64; the lower triangle
  // is filled in by Gram().
  std::vector<double> gram_;
  std::vector<float> pending_;  // rows of the unfinished block
  int64_t pending_rows_ = 0;

  std::vector<float> min_, max_;
  std::vector<double> sum_abs_, sum_sq_;
  std::vector<double> importance_;  // FromImportance: Σx²/tokens

  int tensor_exponent_ = -149;
  std::vector<uint64_t> tensor_counts_;
  std::vector<int> channel_exponent_;        // per channel
  std::vector<uint32_t> channel_counts_;     // features x channel bins
};

// ---------------------------------------------------------------------------
// Static int8 activation ranges (W8A8).

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

// ---------------------------------------------------------------------------
// Output-space error from G.

struct OutputError {
  double error_sq = 0;        // tr(ΔW G ΔWᵀ) = ‖XWᵀ − XŴᵀ‖²_F
  double signal_sq = 0;       // tr(W G Wᵀ) = ‖XWᵀ‖²_F
  double relative_error = 0;  // sqrt(error_sq / signal_sq); 0 if both are 0
  // 10·log10(signal_sq / error_sq); +inf when error_sq is 0.
  double sqnr_db = 0;
};

// W and Ŵ are out_features x in_features f32 row-major; `gram` is G
// (in_features², row-major, symmetric). ΔW·G and W·G are f32 oneDNN GEMMs
// (G rounded to f32) and the row dots are summed in f64, so each trace has
// a relative error of about in_features·2^-24·(|w|ᵀ|G||w|)/(wᵀGw) per row;
// each row's quadratic form is clamped at 0 (G is positive semi-definite).
// InvalidArgument for bad sizes or non-finite values; Internal if oneDNN
// fails. `gemm_threads` as in CalibrationOptions.
absl::StatusOr<OutputError> ComputeOutputError(
    const float* w, const float* w_hat, int64_t out_features,
    int64_t in_features, absl::Span<const double> gram, int gemm_threads = 1);

// Bytes measuring a tensor of `layout` against a calibration set takes
// beside its dequantized values: ComputeOutputError's G in f32 and two
// panels of up to 256 rows, and the range estimator's copies of the
// per-channel statistics. Part of WorkingSetBytes (quantize_tensor.h).
int64_t CalibrationWorkingSetBytes(const Layout& layout);

}  // namespace quantd

#endif  // QUANTD_KERNELS_CALIBRATION_H_
