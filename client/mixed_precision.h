// Mixed precision to a budget (hybrid / adaptive quantization): quantize
// each tensor with every candidate scheme, keep its error-vs-bits curve, and
// choose one candidate per tensor so that the total size meets a bit budget
// with the least total error.
//
//   std::vector<CandidateTensor> tensors = ...;  // spans into the model mmap
//   std::vector<Scheme> candidates = *ParseCandidates(kDefaultCandidates);
//   std::vector<TensorCurve> curves =
//       MeasureCandidates(dispatch, servers, tensors, candidates);
//   QUANTD_ASSIGN_OR_RETURN(
//       MixedChoice choice,
//       ChooseMixedPrecision(curves, /*budget_bits=*/4.5 * params));
//   // curves[i].points[choice.point[i]].scheme is tensor i's scheme;
//   // choice.bits <= 4.5 * params, choice.error is the least total error
//   // (exactly, or within the stated discretisation; see below).
//
// Curves. A point is one (tensor, scheme): its size in bits, bits_per_weight
// x elements as the server reports it (codes, scales and zero points, or a
// ggml block's bytes), and its weight-space error, the total squared error
// sum (w - w_hat)^2 = mse x elements. A point also has a column for the
// output-space error ||X W^T - X W_hat^T||^2 = tr(dW G dW^T) of the tensor's
// layer on calibration data X: MeasureCandidates fills it from the reply's
// output metrics when the tensor names a calibration set of the job, else it
// stays NaN; choosing on it (ErrorMeasure::kOutput) is FailedPrecondition
// while any point lacks it. (quantctl has no calibration input yet, so its
// runs choose on the weight error.)
//
// The optimisation. Choosing one point per tensor under a total-bits budget
// is the multiple-choice knapsack problem:
//   minimise sum_i e_i(k_i)  subject to  sum_i b_i(k_i) <= B.
// ChooseMixedPrecision solves it in four steps:
//   1. Per tensor, drop dominated points: keep the Pareto front (a point is
//      dropped when another has no more bits and no more error). This never
//      changes the optimum. (Points off the lower convex hull are NOT
//      dropped: they can be in an integer optimum; the hull is only used
//      for the bound in step 4, and is reported.)
//   2. Dynamic programming over a discretised budget. Each tensor's extra
//      bits over its smallest point are rounded UP to units of u bits,
//      u = g * max(1, ceil(slack / g / U)), where g is the greatest
//      common divisor of all extra bits (1 if a size is not whole) and
//      slack = B - sum_i min_k b_i(k), and U the unit limit of
//      MixedChoiceOptions; dp[c] = least error with at most c units. Rounding up keeps every answer feasible in exact bits. When
//      u = g and the sizes are whole bits (they are: sizes are whole bytes)
//      no extra is rounded and the answer is EXACT. Otherwise it is at
//      least as good as the exact optimum for the budget B - T u (T tensors
//      with a choice): each tensor loses less than one unit.
//      Time O(u-budget x sum_i K_i), memory T x (units + 1) bytes.
//   3. A greedy fill in exact bits: while some single tensor can move to a
//      point with less error within the bits left, make the move that
//      lowers the error most.
//   4. A lower bound: the LP relaxation, solved exactly on the lower convex
//      hulls (take hull segments in order of error saved per bit, the last
//      one fractionally; its slope is the Lagrange multiplier lambda of
//      min sum e + lambda b). No assignment within the budget has less
//      error, so error - lower_bound bounds the gap to the optimum.
// tests/client/mixed_precision_test.cc checks steps 1-3 against brute
// force on small instances (equal when exact; within the stated bound when
// discretised) and step 4 below the brute-force optimum.
//
// Thread-safety: free functions over values, except MeasureCandidates,
// which runs Dispatch (threads of its own) and blocks until it is done.
#ifndef QUANTD_CLIENT_MIXED_PRECISION_H_
#define QUANTD_CLIENT_MIXED_PRECISION_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/dispatcher.h"
#include "client/json.h"
#include "kernels/dtype.h"
#include "kernels/layout.h"
#include "kernels/scheme.h"
#include "quantd/v1/quantizer.pb.h"

namespace quantd {

// quantctl's default candidates: the asymmetric int formats from 2.6 to 8
// bits per weight (scales and zero points included). ggml block types
// (Q4_K, ...) can be given too; a candidate that does not fit a tensor's
// shape is skipped for that tensor.
inline constexpr char kDefaultCandidates[] =
    "int2_asym_g64,int3_asym_g128,int3_asym_g64,int4_asym_g128,int4_asym_g64,"
    "int5_asym_g128,int6_asym_g128,int8";

// Parses a comma-separated list of schemes (ParseScheme texts), dropping
// repeats. InvalidArgument naming the bad entry, or for an empty list.
absl::StatusOr<std::vector<Scheme>> ParseCandidates(absl::string_view list);

// Which error the choice minimises.
enum class ErrorMeasure {
  kWeight,  // total squared error of the weights, mse x elements
  kOutput,  // output-space error tr(dW G dW^T) (needs calibration data)
};

// One candidate scheme measured on one tensor.
struct CurvePoint {
  std::string scheme;  // canonical text
  // Stored size: the server's bits_per_weight x elements, rounded to whole
  // bits (sizes are whole bytes).
  double bits = 0;
  // Total squared error, mse x elements.
  double weight_error = 0;
  // Output-space error on calibration data; NaN when not measured.
  double output_error = std::numeric_limits<double>::quiet_NaN();
  v1::Metrics metrics;  // as the server reported them
  // Filled by ChooseMixedPrecision: on the Pareto front (kept), on the lower
  // convex hull (used by the bound).
  bool pareto = false;
  bool hull = false;
};

// The error of `point` in `measure`.
double PointError(const CurvePoint& point, ErrorMeasure measure);

// One tensor's error-vs-bits curve.
struct TensorCurve {
  std::string name;
  int64_t num_elements = 0;
  std::vector<CurvePoint> points;  // in candidate order
  // Candidates that did not fit the shape or failed on the server:
  // "SCHEME: reason".
  std::vector<std::string> skipped;
};

struct MixedChoiceOptions {
  ErrorMeasure measure = ErrorMeasure::kWeight;
  // Budget units of the dynamic program, at most (see the header comment):
  // the least of max_units and max_cells / (tensors with a choice). The
  // table of choices takes one byte per cell; time is cells x candidates.
  // Defaults: 2^22 units, 2^26 cells (64 MiB).
  int64_t max_units = int64_t{1} << 22;
  int64_t max_cells = int64_t{1} << 26;
};

struct MixedChoice {
  std::vector<int> point;  // per curve: index into its points
  double bits = 0;         // sum of the chosen points' bits (<= budget)
  double error = 0;        // sum of their errors in the chosen measure
  // LP-relaxation bound: no assignment within the budget has less error.
  double lower_bound = 0;
  // The Lagrange multiplier at the bound: error saved per extra bit at the
  // margin (0 when the budget affords every tensor's least-error point).
  double lambda = 0;
  // The DP's unit in bits: the greatest common divisor of the tensors'
  // extra bits (sizes are whole bytes, so at least 8 for whole sizes), times
  // the factor that keeps the budget within max_units of them.
  double unit_bits = 1;
  // Whether that factor is 1 and the sizes are whole bits: then the choice
  // is an exact optimum (else see the header comment for the bound).
  bool exact = false;
};

// Chooses one point per curve with total bits <= budget_bits and the least
// total error (see the header comment for the method and its guarantee).
// Sets every point's `pareto` and `hull` flags. InvalidArgument: a curve
// without points, a negative or non-finite size or error, max_units < 1, or
// a budget below the smallest possible total (the message gives it);
// FailedPrecondition: kOutput while a point has no output error.
absl::StatusOr<MixedChoice> ChooseMixedPrecision(
    std::vector<TensorCurve>& curves, double budget_bits,
    const MixedChoiceOptions& options = {});

// A tensor to measure.
struct CandidateTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> data;  // not owned; outlives the call
  // A calibration set of options.job.calibration_sets whose activations
  // are this tensor's input; then each point gets its output_error (the
  // reply's OutputMetrics.error_sq). Empty: none.
  std::string calibration;
};

// Sends every tensor once per candidate that fits its shape (MakeLayout)
// through Dispatch -- each as a per-tensor scheme override, named
// "NAME[SCHEME]" on the wire, packed output of which only the metrics are
// kept -- and returns one curve per tensor, in order. A candidate that
// fails on the server is listed in the curve's `skipped` with its status.
// options.job.output is ignored (packed). REQUIRES: as for Dispatch.
std::vector<TensorCurve> MeasureCandidates(
    const DispatchOptions& options, absl::Span<const DispatchServer> servers,
    absl::Span<const CandidateTensor> tensors,
    absl::Span<const Scheme> candidates);

// What a mixed-precision run planned, for the report.
struct MixedPrecisionPlan {
  // The target as given: bits per weight over the quantized tensors, or
  // bytes of the whole output (quantized tensors in their packed size plus
  // the tensors copied through). Exactly one is > 0.
  double target_bpw = 0;
  uint64_t target_bytes = 0;
  ErrorMeasure measure = ErrorMeasure::kWeight;
  std::vector<std::string> candidates;  // canonical texts
  int64_t quantized_params = 0;  // elements of every quantized tensor
  // Bits of the quantized tensors whose scheme is fixed (an override, or no
  // candidate fits), and of the tensors copied through.
  double fixed_bits = 0;
  double copied_bits = 0;
  // Bits the free tensors may take: the target less the fixed (and, for
  // target_bytes, the copied) bits.
  double budget_bits = 0;
  std::vector<TensorCurve> curves;  // the free tensors, in name order
  MixedChoice choice;
  // Planned bits per weight over the quantized tensors.
  double planned_bpw = 0;
};

// The report's "mixed_precision" object: the target, the budget, each free
// tensor's curve (every point with bits, bpw, error, output error, pareto,
// hull) and its choice, the totals, and each candidate that fits every free
// tensor as a uniform baseline (its bits and error). Non-finite numbers
// are written as null.
OrderedJson MixedPrecisionToJson(const MixedPrecisionPlan& plan);

}  // namespace quantd

#endif  // QUANTD_CLIENT_MIXED_PRECISION_H_
