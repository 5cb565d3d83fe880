#include "kernels/range_estimators.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/internal/calibration_internal.h"

namespace quantd {
namespace {

constexpr int kLevelsKl = 128;

}  // namespace

absl::string_view RangeMethodName(RangeMethod method) {
  switch (method) {
    case RangeMethod::kMinMax:
      return "minmax";
    case RangeMethod::kPercentile:
      return "percentile";
    case RangeMethod::kMse:
      return "mse";
    case RangeMethod::kKl:
      return "kl";
  }
  return "unknown";
}

ActivationRange Int8Range(float lo, float hi, bool symmetric) {
  ActivationRange r;
  if (symmetric) {
    const float t = std::max(-lo, hi);
    r.lo = -t;
    r.hi = t;
    r.scale = std::max(t / 127.0f, FLT_MIN);
    r.zero_point = 0;
    return r;
  }
  r.lo = lo;
  r.hi = hi;
  const float lo0 = std::min(lo, 0.0f);
  const float hi0 = std::max(hi, 0.0f);
  r.scale = std::max((hi0 - lo0) / 255.0f, FLT_MIN);
  const float inv = 1.0f / r.scale;
  r.zero_point = static_cast<int32_t>(
      std::clamp(std::nearbyint(-lo0 * inv), 0.0f, 255.0f));
  return r;
}

namespace {

// |x| histogram: bin k = [k·w, (k+1)·w).
std::vector<double> Fold(const Histogram& h) {
  const int64_t half = h.bins / 2;
  std::vector<double> folded(static_cast<size_t>(half));
  for (int64_t k = 0; k < half; ++k) {
    folded[static_cast<size_t>(k)] =
        static_cast<double>(h.counts[static_cast<size_t>(half + k)]) +
        static_cast<double>(h.counts[static_cast<size_t>(half - 1 - k)]);
  }
  return folded;
}

ClipRange Symmetric(double t) { return {-t, t}; }

ClipRange PercentileRange(const Histogram& h, double amin, double amax,
                          const RangeOptions& o) {
  const double n = static_cast<double>(h.Total());
  const double w = h.BinWidth();
  const double target = o.percentile / 100.0 * n;
  if (o.symmetric) {
    const double absmax = std::max(-amin, amax);
    const std::vector<double> a = Fold(h);
    double cum = 0;
    for (size_t k = 0; k < a.size(); ++k) {
      cum += a[k];
      if (cum >= target) {
        return Symmetric(std::min(static_cast<double>(k + 1) * w, absmax));
      }
    }
    return Symmetric(absmax);
  }
  ClipRange r{amin, amax};
  const double low_target = (1.0 - o.percentile / 100.0) * n;
  double cum = 0;
  bool have_lo = false;
  for (int64_t i = 0; i < h.bins; ++i) {
    cum += static_cast<double>(h.counts[static_cast<size_t>(i)]);
    if (!have_lo && cum > low_target) {
      r.lo = std::max(h.LowerEdge(i), amin);
      have_lo = true;
    }
    if (cum >= target) {
      r.hi = std::min(h.LowerEdge(i + 1), amax);
      break;
    }
  }
  if (r.hi < r.lo) r.hi = r.lo;
  return r;
}

ClipRange MseSymmetric(const Histogram& h, double amax) {
  const std::vector<double> a = Fold(h);
  const double w = h.BinWidth();
  const size_t half = a.size();
  // Suffix sums of n, n·c, n·c² over folded bins k' >= k.
  std::vector<double> s0(half + 1, 0), s1(half + 1, 0), s2(half + 1, 0);
  for (size_t k = half; k-- > 0;) {
    const double c = std::min((static_cast<double>(k) + 0.5) * w, amax);
    s0[k] = s0[k + 1] + a[k];
    s1[k] = s1[k + 1] + a[k] * c;
    s2[k] = s2[k + 1] + a[k] * c * c;
  }
  const double n = s0[0];
  double best_t = amax;
  double best_err = std::numeric_limits<double>::infinity();
  auto consider = [&](double t, size_t above) {
    const double s = t / 127.0;
    const double clip = s2[above] - 2.0 * t * s1[above] + t * t * s0[above];
    const double err = std::max(clip, 0.0) + (n - s0[above]) * s * s / 12.0;
    if (err <= best_err) {
      best_err = err;
      best_t = t;
    }
  };
  for (size_t k = 1; k < half && static_cast<double>(k) * w < amax; ++k) {
    consider(static_cast<double>(k) * w, k);
  }
  consider(amax, half);
  return Symmetric(best_t);
}

struct Candidate {
  double value;
  int64_t bin;  // first bin above (hi) / first bin not below (lo)
};

std::vector<Candidate> Thin(const std::vector<Candidate>& all, int64_t keep) {
  const int64_t n = static_cast<int64_t>(all.size());
  const int64_t step = (n + keep - 1) / keep;
  std::vector<Candidate> out;
  for (int64_t i = 0; i < n; i += step) out.push_back(all[static_cast<size_t>(i)]);
  return out;
}

ClipRange MseAsymmetric(const Histogram& h, double amin, double amax,
                        int64_t keep) {
  const int64_t bins = h.bins;
  const int64_t half = bins / 2;
  const double w = h.BinWidth();
  std::vector<double> p0(static_cast<size_t>(bins + 1), 0);
  std::vector<double> p1(p0.size(), 0), p2(p0.size(), 0);
  for (int64_t i = 0; i < bins; ++i) {
    const double n = static_cast<double>(h.counts[static_cast<size_t>(i)]);
    const double c =
        std::clamp((static_cast<double>(i - half) + 0.5) * w, amin, amax);
    const size_t u = static_cast<size_t>(i);
    p0[u + 1] = p0[u] + n;
    p1[u + 1] = p1[u] + n * c;
    p2[u + 1] = p2[u] + n * c * c;
  }
  const size_t end = static_cast<size_t>(bins);
  // From the extreme inwards.
  std::vector<Candidate> his{{amax, bins}};
  for (int64_t i = bins - 1; i > 0; --i) {
    const double edge = h.LowerEdge(i);
    if (edge < amax && edge > std::max(amin, 0.0)) his.push_back({edge, i});
  }
  std::vector<Candidate> los{{amin, 0}};
  for (int64_t i = 1; i < bins; ++i) {
    const double edge = h.LowerEdge(i);
    if (edge > amin && edge < std::min(amax, 0.0)) los.push_back({edge, i});
  }
  his = Thin(his, keep);
  los = Thin(los, keep);
  const double total = p0[end];
  ClipRange best{amin, amax};
  double best_err = std::numeric_limits<double>::infinity();
  for (const Candidate& hi : his) {
    const size_t ih = static_cast<size_t>(hi.bin);
    const double a0 = total - p0[ih];
    const double a1 = p1[end] - p1[ih];
    const double a2 = p2[end] - p2[ih];
    const double clip_hi =
        std::max(a2 - 2.0 * hi.value * a1 + hi.value * hi.value * a0, 0.0);
    for (const Candidate& lo : los) {
      const size_t il = static_cast<size_t>(lo.bin);
      const double clip_lo = std::max(
          p2[il] - 2.0 * lo.value * p1[il] + lo.value * lo.value * p0[il], 0.0);
      const double s =
          (std::max(hi.value, 0.0) - std::min(lo.value, 0.0)) / 255.0;
      const double inside = total - a0 - p0[il];
      const double err = clip_hi + clip_lo + inside * s * s / 12.0;
      if (err < best_err) {
        best_err = err;
        best = {lo.value, hi.value};
      }
    }
  }
  return best;
}

double KlThreshold(const Histogram& h, double amax) {
  const std::vector<double> a = Fold(h);
  const double w = h.BinWidth();
  if (!(amax > 0.0)) return 0.0;
  const int64_t nb = std::min(static_cast<int64_t>(std::ceil(amax / w)),
                              static_cast<int64_t>(a.size()));
  if (nb <= kLevelsKl) return amax;
  std::vector<double> suffix(a.size() + 1, 0);
  for (size_t k = a.size(); k-- > 0;) suffix[k] = suffix[k + 1] + a[k];
  std::vector<double> p(static_cast<size_t>(nb)), q(p.size());
  double best_kl = std::numeric_limits<double>::infinity();
  int64_t best_i = nb;
  for (int64_t i = kLevelsKl; i <= nb; ++i) {
    const size_t n = static_cast<size_t>(i);
    std::copy(a.begin(), a.begin() + i, p.begin());
    p[n - 1] += suffix[n];
    const int64_t g = i / kLevelsKl;
    for (int64_t j = 0; j < kLevelsKl; ++j) {
      const size_t start = static_cast<size_t>(j * g);
      const size_t stop =
          j == kLevelsKl - 1 ? n : static_cast<size_t>((j + 1) * g);
      double sum = 0;
      double nonzero = 0;
      for (size_t k = start; k < stop; ++k) {
        sum += a[k];
        nonzero += p[k] > 0 ? 1.0 : 0.0;
      }
      for (size_t k = start; k < stop; ++k) {
        q[k] = p[k] > 0 ? sum / nonzero : 0.0;
      }
    }
    double psum = 0, qsum = 0;
    for (size_t k = 0; k < n; ++k) {
      psum += p[k];
      qsum += q[k];
    }
    if (!(qsum > 0.0)) continue;
    constexpr double kEps = 1e-4;
    const double uniform = kEps / static_cast<double>(i);
    double kl = 0;
    for (size_t k = 0; k < n; ++k) {
      if (p[k] > 0) {
        const double pk = p[k] / psum;
        const double qk = (q[k] / qsum + uniform) / (1.0 + kEps);
        kl += pk * std::log(pk / qk);
      }
    }
    if (kl < best_kl) {
      best_kl = kl;
      best_i = i;
    }
  }
  return std::min(static_cast<double>(best_i) * w, amax);
}

}  // namespace

absl::StatusOr<ClipRange> EstimateClipRange(const Histogram& histogram,
                                            float min, float max,
                                            const RangeOptions& options) {
  if (!(min <= max) || !std::isfinite(min) || !std::isfinite(max)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad data range [", min, ", ", max, "]"));
  }
  const double amin = min, amax = max;
  const double absmax = std::max(-amin, amax);
  if (options.method == RangeMethod::kMinMax) {
    return options.symmetric ? Symmetric(absmax) : ClipRange{amin, amax};
  }
  if (options.method == RangeMethod::kPercentile &&
      !(options.percentile >= 50.0 && options.percentile <= 100.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "percentile ", options.percentile, " out of range [50, 100]"));
  }
  if (options.method == RangeMethod::kMse && options.mse_candidates < 2) {
    return absl::InvalidArgumentError("mse_candidates must be >= 2");
  }
  if (!internal::IsPowerOfTwo(histogram.bins) || histogram.bins < 16 ||
      histogram.counts.size() != static_cast<size_t>(histogram.bins)) {
    return absl::InvalidArgumentError("histogram bins must be a power of two "
                                      ">= 16 with one count each");
  }
  if (histogram.Total() == 0) {
    return absl::FailedPreconditionError("empty histogram");
  }
  switch (options.method) {
    case RangeMethod::kPercentile:
      return PercentileRange(histogram, amin, amax, options);
    case RangeMethod::kMse:
      return options.symmetric
                 ? MseSymmetric(histogram, absmax)
                 : MseAsymmetric(histogram, amin, amax, options.mse_candidates);
    case RangeMethod::kKl: {
      const double t = KlThreshold(histogram, absmax);
      return options.symmetric ? Symmetric(t)
                               : ClipRange{std::max(amin, -t), std::min(amax, t)};
    }
    case RangeMethod::kMinMax:
      break;
  }
  return Symmetric(absmax);
}

namespace {

ActivationRange ToInt8(const ClipRange& r, bool symmetric) {
  return Int8Range(static_cast<float>(r.lo), static_cast<float>(r.hi),
                   symmetric);
}

}  // namespace

absl::StatusOr<ActivationRange> EstimateTensorRange(
    const CalibrationAccumulator& acc, const RangeOptions& options) {
  if (!acc.has_stats() || acc.tokens() < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "calibration set '", acc.name(), "': no activations to estimate from"));
  }
  absl::StatusOr<ChannelStats> stats = acc.Stats();
  if (!stats.ok()) return stats.status();
  const float min = *std::min_element(stats->min.begin(), stats->min.end());
  const float max = *std::max_element(stats->max.begin(), stats->max.end());
  absl::StatusOr<Histogram> h = acc.TensorHistogram();
  if (!h.ok()) return h.status();
  absl::StatusOr<ClipRange> r = EstimateClipRange(*h, min, max, options);
  if (!r.ok()) return r.status();
  return ToInt8(*r, options.symmetric);
}

absl::StatusOr<std::vector<ActivationRange>> EstimateChannelRanges(
    const CalibrationAccumulator& acc, const RangeOptions& options) {
  if (!acc.has_stats() || acc.tokens() < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "calibration set '", acc.name(), "': no activations to estimate from"));
  }
  if (options.method != RangeMethod::kMinMax && !acc.has_channel_histograms()) {
    return absl::FailedPreconditionError(
        absl::StrCat("calibration set '", acc.name(),
                     "': per-channel ranges need per-channel histograms"));
  }
  absl::StatusOr<ChannelStats> stats = acc.Stats();
  if (!stats.ok()) return stats.status();
  std::vector<ActivationRange> out;
  out.reserve(static_cast<size_t>(acc.features()));
  Histogram empty;
  for (int64_t c = 0; c < acc.features(); ++c) {
    const size_t u = static_cast<size_t>(c);
    absl::StatusOr<Histogram> h = options.method == RangeMethod::kMinMax
                                      ? absl::StatusOr<Histogram>(empty)
                                      : acc.ChannelHistogram(c);
    if (!h.ok()) return h.status();
    absl::StatusOr<ClipRange> r =
        EstimateClipRange(*h, stats->min[u], stats->max[u], options);
    if (!r.ok()) return r.status();
    out.push_back(ToInt8(*r, options.symmetric));
  }
  return out;
}

}  // namespace quantd
