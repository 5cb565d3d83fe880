#include "client/mixed_precision.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace quantd {

absl::StatusOr<std::vector<Scheme>> ParseCandidates(absl::string_view list) {
  std::vector<Scheme> schemes;
  absl::flat_hash_set<std::string> seen;
  for (absl::string_view text : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    text = absl::StripAsciiWhitespace(text);
    if (text.empty()) continue;
    absl::StatusOr<Scheme> scheme = ParseScheme(text);
    if (!scheme.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "candidate \"", text, "\": ", scheme.status().message()));
    }
    if (seen.insert(SchemeToString(*scheme)).second) {
      schemes.push_back(*std::move(scheme));
    }
  }
  if (schemes.empty()) {
    return absl::InvalidArgumentError("no candidate scheme given");
  }
  return schemes;
}

double PointError(const CurvePoint& point, ErrorMeasure measure) {
  return measure == ErrorMeasure::kWeight ? point.weight_error
                                          : point.output_error;
}

namespace {

// (b - o) x (a - o) in the (bits, error) plane: > 0 when o -> a -> b turns
// counter-clockwise, i.e. a lies strictly below the chord o -> b.
double Cross(double ox, double oy, double ax, double ay, double bx,
             double by) {
  return (ax - ox) * (by - oy) - (ay - oy) * (bx - ox);
}

}  // namespace

absl::StatusOr<MixedChoice> ChooseMixedPrecision(
    std::vector<TensorCurve>& curves, double budget_bits,
    const MixedChoiceOptions& options) {
  if (options.max_units < 1 || options.max_cells < 1) {
    return absl::InvalidArgumentError("max_units and max_cells must be >= 1");
  }
  if (!std::isfinite(budget_bits)) {
    return absl::InvalidArgumentError("the bit budget is not finite");
  }
  const size_t n = curves.size();
  auto error_of = [&](const CurvePoint& p) {
    return PointError(p, options.measure);
  };

  // 1. Pareto fronts: point indices by increasing bits, strictly
  // decreasing error.
  std::vector<std::vector<int>> front(n);
  double min_bits = 0;
  for (size_t i = 0; i < n; ++i) {
    std::vector<CurvePoint>& points = curves[i].points;
    if (points.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", curves[i].name, "\" has no candidate"));
    }
    for (CurvePoint& p : points) {
      p.pareto = p.hull = false;
      if (options.measure == ErrorMeasure::kOutput &&
          std::isnan(p.output_error)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "tensor \"", curves[i].name, "\" with ", p.scheme,
            " has no output-space error (it needs calibration data)"));
      }
      if (!std::isfinite(p.bits) || p.bits < 0 || !std::isfinite(error_of(p)) ||
          error_of(p) < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", curves[i].name, "\" with ", p.scheme,
                         ": size and error must be finite and >= 0"));
      }
    }
    std::vector<int> order(points.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      const CurvePoint& pa = points[static_cast<size_t>(a)];
      const CurvePoint& pb = points[static_cast<size_t>(b)];
      if (pa.bits != pb.bits) return pa.bits < pb.bits;
      if (error_of(pa) != error_of(pb)) return error_of(pa) < error_of(pb);
      return a < b;
    });
    double best = std::numeric_limits<double>::infinity();
    for (int k : order) {
      CurvePoint& p = points[static_cast<size_t>(k)];
      if (error_of(p) < best) {
        best = error_of(p);
        p.pareto = true;
        front[i].push_back(k);
      }
    }
    if (front[i].size() > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", curves[i].name,
                       "\" has more than 255 undominated candidates"));
    }
    min_bits += points[static_cast<size_t>(front[i][0])].bits;
  }
  if (min_bits > budget_bits) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the budget of %.0f bits is below the smallest size the candidates "
        "allow, %.0f bits",
        budget_bits, min_bits));
  }
  const double slack = budget_bits - min_bits;
  auto bits_at = [&](size_t i, size_t j) {
    return curves[i].points[static_cast<size_t>(front[i][j])].bits;
  };
  auto error_at = [&](size_t i, size_t j) {
    return error_of(curves[i].points[static_cast<size_t>(front[i][j])]);
  };

  MixedChoice choice;

  // 4 (first, independent of the rest). The LP bound on the lower convex
  // hulls: the hull segments taken by decreasing error saved per bit.
  struct Segment {
    double bits, saved, efficiency;
  };
  std::vector<Segment> segments;
  double bound = 0;
  for (size_t i = 0; i < n; ++i) {
    std::vector<size_t> hull;  // positions in front[i]
    for (size_t j = 0; j < front[i].size(); ++j) {
      while (hull.size() >= 2 &&
             Cross(bits_at(i, hull[hull.size() - 2]),
                   error_at(i, hull[hull.size() - 2]),
                   bits_at(i, hull.back()), error_at(i, hull.back()),
                   bits_at(i, j), error_at(i, j)) <= 0) {
        hull.pop_back();
      }
      hull.push_back(j);
    }
    bound += error_at(i, 0);
    for (size_t h = 0; h < hull.size(); ++h) {
      curves[i].points[static_cast<size_t>(front[i][hull[h]])].hull = true;
      if (h == 0) continue;
      const double bits = bits_at(i, hull[h]) - bits_at(i, hull[h - 1]);
      const double saved = error_at(i, hull[h - 1]) - error_at(i, hull[h]);
      segments.push_back({bits, saved, saved / bits});
    }
  }
  std::sort(segments.begin(), segments.end(),
            [](const Segment& a, const Segment& b) {
              return a.efficiency > b.efficiency;
            });
  double left = slack;
  for (const Segment& s : segments) {
    if (s.bits <= left) {
      left -= s.bits;
      bound -= s.saved;
    } else {
      bound -= s.saved * left / s.bits;
      choice.lambda = s.efficiency;
      break;
    }
  }
  choice.lower_bound = std::max(bound, 0.0);

  // 2. Dynamic program over units of `unit` bits (extra bits rounded up).
  std::vector<size_t> free;  // tensors with more than one front point
  for (size_t i = 0; i < n; ++i) {
    if (front[i].size() > 1) free.push_back(i);
  }
  // g: the gcd of every extra size, when all are whole bits (< 2^53).
  uint64_t gcd = 0;
  bool whole = true;
  for (size_t i : free) {
    for (size_t j = 1; j < front[i].size(); ++j) {
      const double extra = bits_at(i, j) - bits_at(i, 0);
      if (extra != std::floor(extra) || extra >= 9007199254740992.0) {
        whole = false;
      } else {
        gcd = std::gcd(gcd, static_cast<uint64_t>(extra));
      }
    }
  }
  const double g = whole && gcd > 0 ? static_cast<double>(gcd) : 1.0;
  const int64_t max_units = std::max<int64_t>(
      1, std::min<int64_t>(options.max_units,
                           options.max_cells /
                               std::max<int64_t>(
                                   static_cast<int64_t>(free.size()), 1)));
  const double factor = std::max(
      1.0, std::ceil(slack / g / static_cast<double>(max_units)));
  const double unit = g * factor;
  const auto capacity = static_cast<size_t>(std::floor(slack / unit));
  choice.unit_bits = unit;
  choice.exact = whole && factor == 1.0;
  std::vector<size_t> position(n, 0);  // chosen index into front[i]
  {
    std::vector<std::vector<size_t>> cost(free.size());
    for (size_t f = 0; f < free.size(); ++f) {
      const size_t i = free[f];
      for (size_t j = 0; j < front[i].size(); ++j) {
        const double extra = (bits_at(i, j) - bits_at(i, 0)) / unit;
        cost[f].push_back(extra > static_cast<double>(capacity)
                              ? capacity + 1
                              : static_cast<size_t>(std::ceil(extra)));
      }
    }
    std::vector<double> dp(capacity + 1, 0.0), next(capacity + 1);
    std::vector<std::vector<uint8_t>> picked(
        free.size(), std::vector<uint8_t>(capacity + 1, 0));
    for (size_t f = 0; f < free.size(); ++f) {
      const size_t i = free[f];
      for (size_t c = 0; c <= capacity; ++c) {
        double best = dp[c] + error_at(i, 0);
        size_t best_j = 0;
        for (size_t j = 1; j < front[i].size(); ++j) {
          if (cost[f][j] > c) break;  // costs increase along the front
          const double e = dp[c - cost[f][j]] + error_at(i, j);
          if (e < best) {
            best = e;
            best_j = j;
          }
        }
        next[c] = best;
        picked[f][c] = static_cast<uint8_t>(best_j);
      }
      std::swap(dp, next);
    }
    size_t c = capacity;
    for (size_t f = free.size(); f-- > 0;) {
      const size_t j = picked[f][c];
      position[free[f]] = j;
      c -= cost[f][j];
    }
  }

  // 3. Greedy fill of the bits the rounding left, in exact bits.
  double used = 0;
  for (size_t i = 0; i < n; ++i) used += bits_at(i, position[i]);
  while (true) {
    double best_saved = 0;
    size_t best_i = n, best_j = 0;
    for (size_t i : free) {
      const size_t at = position[i];
      for (size_t j = at + 1; j < front[i].size(); ++j) {
        const double extra = bits_at(i, j) - bits_at(i, at);
        const double saved = error_at(i, at) - error_at(i, j);
        if (used + extra <= budget_bits && saved > best_saved) {
          best_saved = saved;
          best_i = i;
          best_j = j;
        }
      }
    }
    if (best_i == n) break;
    used += bits_at(best_i, best_j) - bits_at(best_i, position[best_i]);
    position[best_i] = best_j;
  }

  choice.point.resize(n);
  for (size_t i = 0; i < n; ++i) {
    choice.point[i] = front[i][position[i]];
    choice.bits += bits_at(i, position[i]);
    choice.error += error_at(i, position[i]);
  }
  return choice;
}

std::vector<TensorCurve> MeasureCandidates(
    const DispatchOptions& options, absl::Span<const DispatchServer> servers,
    absl::Span<const CandidateTensor> tensors,
    absl::Span<const Scheme> candidates) {
  std::vector<TensorCurve> curves(tensors.size());
  std::vector<TensorRequest> requests;
  struct Slot {
    size_t tensor, candidate;
  };
  std::vector<Slot> slots;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const CandidateTensor& tensor = tensors[t];
    curves[t].name = tensor.name;
    int64_t elements = 1;
    for (int64_t d : tensor.shape) elements *= d;
    curves[t].num_elements = elements;
    for (size_t k = 0; k < candidates.size(); ++k) {
      const std::string text = SchemeToString(candidates[k]);
      absl::StatusOr<Layout> layout = MakeLayout(candidates[k], tensor.shape);
      if (!layout.ok()) {
        const absl::string_view why = layout.status().message();
        curves[t].skipped.push_back(
            absl::StartsWith(why, absl::StrCat(text, ":"))
                ? std::string(why)
                : absl::StrCat(text, ": ", why));
        continue;
      }
      TensorRequest request;
      // Unique per stream, and no name is a substring of another's, so an
      // error naming one is pinned on it alone.
      request.name = absl::StrCat(tensor.name, "[", text, "]");
      request.dtype = tensor.dtype;
      request.shape = tensor.shape;
      request.scheme = candidates[k];
      request.data = tensor.data;
      request.calibration = tensor.calibration;
      requests.push_back(std::move(request));
      slots.push_back({t, k});
    }
  }
  // Results by slot, filled concurrently by the stream threads.
  absl::Mutex mu;
  std::vector<std::optional<v1::Metrics>> metrics(slots.size());
  std::vector<std::optional<v1::OutputMetrics>> output_metrics(slots.size());
  std::vector<std::string> errors(slots.size());
  DispatchOptions dispatch = options;
  dispatch.job.output = v1::OUTPUT_KIND_PACKED;
  Dispatch(
      dispatch, servers, requests,
      [&](size_t i, TensorReply reply, const DispatchInfo&) {
        absl::MutexLock lock(&mu);
        metrics[i] = reply.metrics;
        output_metrics[i] = reply.output_metrics;
        return absl::OkStatus();
      },
      [&](size_t i, const absl::Status& status, const DispatchInfo&) {
        absl::MutexLock lock(&mu);
        errors[i] = status.ToString();
      });
  for (size_t s = 0; s < slots.size(); ++s) {
    TensorCurve& curve = curves[slots[s].tensor];
    const std::string text = SchemeToString(candidates[slots[s].candidate]);
    if (!metrics[s].has_value()) {
      curve.skipped.push_back(absl::StrCat(text, ": ", errors[s]));
      continue;
    }
    CurvePoint point;
    point.scheme = text;
    point.metrics = *metrics[s];
    const auto elements = static_cast<double>(curve.num_elements);
    point.bits = std::round(point.metrics.bits_per_weight() * elements);
    point.weight_error = point.metrics.mse() * elements;
    if (output_metrics[s].has_value()) {
      point.output_error = output_metrics[s]->error_sq();
    }
    curve.points.push_back(std::move(point));
  }
  return curves;
}

namespace {

const char* MeasureName(ErrorMeasure measure) {
  return measure == ErrorMeasure::kWeight ? "weight" : "output";
}

}  // namespace

OrderedJson MixedPrecisionToJson(const MixedPrecisionPlan& plan) {
  OrderedJson j;
  if (plan.target_bpw > 0) j["target_bpw"] = plan.target_bpw;
  if (plan.target_bytes > 0) j["target_bytes"] = plan.target_bytes;
  j["error_measure"] = MeasureName(plan.measure);
  j["candidates"] = plan.candidates;
  j["quantized_params"] = plan.quantized_params;
  j["fixed_bits"] = plan.fixed_bits;
  j["copied_bits"] = plan.copied_bits;
  j["budget_bits"] = plan.budget_bits;
  j["method"] =
      "multiple-choice knapsack: Pareto fronts, dynamic program over the "
      "budget in units of unit_bits (an exact optimum when exact), greedy "
      "fill, LP-relaxation lower bound on the convex hulls";
  j["unit_bits"] = plan.choice.unit_bits;
  j["exact"] = plan.choice.exact;
  j["chosen_bits"] = plan.choice.bits;
  j["chosen_error"] = plan.choice.error;
  j["lower_bound"] = plan.choice.lower_bound;
  j["lambda"] = plan.choice.lambda;
  j["planned_bpw"] = plan.planned_bpw;
  int64_t free_params = 0;
  OrderedJson tensors = OrderedJson::array();
  for (size_t i = 0; i < plan.curves.size(); ++i) {
    const TensorCurve& curve = plan.curves[i];
    free_params += curve.num_elements;
    OrderedJson t;
    t["name"] = curve.name;
    t["num_elements"] = curve.num_elements;
    if (i < plan.choice.point.size()) {
      t["chosen"] =
          curve.points[static_cast<size_t>(plan.choice.point[i])].scheme;
    }
    OrderedJson points = OrderedJson::array();
    for (const CurvePoint& p : curve.points) {
      OrderedJson e;
      e["scheme"] = p.scheme;
      e["bits"] = p.bits;
      e["bits_per_weight"] = p.metrics.bits_per_weight();
      e["weight_error"] = p.weight_error;
      e["output_error"] = p.output_error;  // null until measured
      e["sqnr_db"] = p.metrics.sqnr_db();
      e["pareto"] = p.pareto;
      e["hull"] = p.hull;
      points.push_back(std::move(e));
    }
    t["points"] = std::move(points);
    if (!curve.skipped.empty()) t["skipped"] = curve.skipped;
    tensors.push_back(std::move(t));
  }
  j["tensors"] = std::move(tensors);
  // Uniform baselines over the free tensors.
  OrderedJson uniform = OrderedJson::array();
  for (const std::string& scheme : plan.candidates) {
    double bits = 0, error = 0;
    bool everywhere = !plan.curves.empty();
    for (const TensorCurve& curve : plan.curves) {
      auto it = std::find_if(
          curve.points.begin(), curve.points.end(),
          [&](const CurvePoint& p) { return p.scheme == scheme; });
      if (it == curve.points.end()) {
        everywhere = false;
        break;
      }
      bits += it->bits;
      error += PointError(*it, plan.measure);
    }
    if (!everywhere) continue;
    OrderedJson u;
    u["scheme"] = scheme;
    u["bits"] = bits;
    u["bits_per_weight"] = bits / static_cast<double>(std::max<int64_t>(
                                      free_params, 1));
    u["error"] = error;
    uniform.push_back(std::move(u));
  }
  j["uniform_over_free_tensors"] = std::move(uniform);
  return j;
}

}  // namespace quantd
