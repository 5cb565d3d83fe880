// HQQ per group, as specified step by step in hqq.h.
#include "kernels/hqq.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"

namespace quantd {
namespace {

absl::Status CheckOptions(int64_t rows, int64_t row_length,
                          const HqqOptions& o) {
  if (rows < 1 || row_length < 1 || rows > INT64_MAX / row_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows (", rows, ") and row_length (", row_length,
                     ") must be >= 1 and their product fit int64"));
  }
  if (o.bits < 1 || o.bits > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("bits must be in 1..8, got ", o.bits));
  }
  if (o.group_size < 0 ||
      (o.group_size > 0 && row_length % o.group_size != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("group_size ", o.group_size,
                     " must be 0 or divide the row length ", row_length));
  }
  if (!(o.lp_norm > 0.0f && o.lp_norm <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lp_norm must be in (0, 1], got ", o.lp_norm));
  }
  if (!(o.beta > 0.0f) || !std::isfinite(o.beta)) {
    return absl::InvalidArgumentError(
        absl::StrCat("beta must be finite and > 0, got ", o.beta));
  }
  if (!(o.kappa >= 1.0f) || !std::isfinite(o.kappa)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kappa must be finite and >= 1, got ", o.kappa));
  }
  if (o.iterations < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("iterations must be >= 0, got ", o.iterations));
  }
  return absl::OkStatus();
}

struct Scratch {
  std::vector<float> q;       // codes as floats
  std::vector<float> target;  // x - w_e
};

// q = clamp(round(x * inv + zero), 0, qmax); returns sum |x - (q - zero)/inv|.
double Quantize(const float* x, int64_t n, float inv, float zero, float qmax,
                float* q) {
  double err = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::clamp(std::nearbyint(x[i] * inv + zero), 0.0f, qmax);
    q[i] = v;
    err += std::fabs(x[i] - (v - zero) / inv);
  }
  return err;
}

// sum (x - (q - zero) * (1 / inv))^2 in double: the output's squared error.
double SquaredError(const float* x, int64_t n, float inv, float zero,
                    float qmax) {
  const float scale = 1.0f / inv;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::clamp(std::nearbyint(x[i] * inv + zero), 0.0f, qmax);
    const double d = double{x[i]} - (q - zero) * scale;
    sum += d * d;
  }
  return sum;
}

// One proximal step from the q of Quantize(inv, zero): new zero (and inv).
void Step(const float* x, int64_t n, double beta, float lp_norm,
          bool optimize_scale, Scratch& s, float& inv, float& zero) {
  const float inv_beta = static_cast<float>(1.0 / beta);
  const double exponent = double{lp_norm} - 1.0;
  for (int64_t i = 0; i < n; ++i) {
    const float r = (s.q[i] - zero) / inv;
    const float e = x[i] - r;
    const float a = std::fabs(e);
    float w_e = 0.0f;
    if (a > 0.0f) {
      const float power = static_cast<float>(std::pow(double{a}, exponent));
      const float shrunk = std::max(a - inv_beta * power, 0.0f);
      w_e = e < 0.0f ? -shrunk : shrunk;
    }
    s.target[i] = x[i] - w_e;
  }
  const double count = static_cast<double>(n);
  if (optimize_scale) {
    double sum_t = 0;
    double sum_q = 0;
    for (int64_t i = 0; i < n; ++i) {
      sum_t += s.target[i];
      sum_q += s.q[i];
    }
    const double mean_t = sum_t / count;
    const double mean_q = sum_q / count;
    double cov = 0;
    double var = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double dt = s.target[i] - mean_t;
      cov += dt * (s.q[i] - mean_q);
      var += dt * dt;
    }
    const float fitted = static_cast<float>(cov / var);
    if (var > 0 && std::isfinite(fitted) && fitted > 0.0f) {
      inv = fitted;
      zero = static_cast<float>(mean_q - double{inv} * mean_t);
      return;
    }
  }
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += s.q[i] - s.target[i] * inv;
  zero = static_cast<float>(sum / count);
}

// Optimizes one group; writes its codes (one byte each), scale and zero.
absl::Status HqqGroup(const float* x, int64_t n, const HqqOptions& o,
                      Scratch& s, uint8_t* codes, float& scale_out,
                      float& zero_out) {
  const float qmax = static_cast<float>((1 << o.bits) - 1);
  float lo = x[0];
  float hi = x[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const float denom = hi - lo;
  if (!std::isfinite(denom)) {
    return absl::InvalidArgumentError(
        absl::StrCat("range max - min of a group overflows f32 (min ", lo,
                     ", max ", hi, ")"));
  }
  float inv = std::fabs(denom) <= 1e-4f ? 1.0f : qmax / denom;
  inv = std::min(inv, 2e4f);
  float zero = -lo * inv;
  const float init_inv = inv;
  const float init_zero = zero;

  float best_inv = inv;
  float best_zero = zero;
  double best_err = INFINITY;
  double beta = o.beta;
  for (int t = 0;; ++t) {
    const double err = Quantize(x, n, inv, zero, qmax, s.q.data());
    if (o.early_stop && !(err < best_err)) {
      inv = best_inv;
      zero = best_zero;
      break;
    }
    best_err = err;
    best_inv = inv;
    best_zero = zero;
    if (t == o.iterations) break;
    Step(x, n, beta, o.lp_norm, o.optimize_scale, s, inv, zero);
    beta *= o.kappa;
  }
  if (o.mse_guard &&
      SquaredError(x, n, inv, zero, qmax) >
          SquaredError(x, n, init_inv, init_zero, qmax)) {
    inv = init_inv;
    zero = init_zero;
  }
  (void)Quantize(x, n, inv, zero, qmax, s.q.data());
  for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>(s.q[i]);
  scale_out = 1.0f / inv;
  zero_out = zero;
  return absl::OkStatus();
}

}  // namespace

double HqqTensor::BitsPerWeight() const {
  return group_size > 0 ? bits + 64.0 / static_cast<double>(group_size) : 0;
}

absl::StatusOr<HqqTensor> HqqQuantize(const float* src, int64_t rows,
                                      int64_t row_length,
                                      const HqqOptions& options) {
  QUANTD_RETURN_IF_ERROR(CheckOptions(rows, row_length, options));
  const int64_t n = rows * row_length;
  const int64_t bad = internal::FirstNonFinite(src, n);
  if (bad >= 0) return internal::NonFiniteError(bad, src[bad]);

  HqqTensor t;
  t.rows = rows;
  t.row_length = row_length;
  t.bits = options.bits;
  t.group_size = options.group_size > 0 ? options.group_size : row_length;
  t.num_groups = n / t.group_size;
  t.scales.resize(static_cast<size_t>(t.num_groups));
  t.zero_points.resize(static_cast<size_t>(t.num_groups));
  t.codes.assign(static_cast<size_t>((n * t.bits + 7) / 8), 0);
  std::vector<uint8_t> codes(static_cast<size_t>(n));
  Scratch scratch;
  scratch.q.resize(static_cast<size_t>(t.group_size));
  scratch.target.resize(static_cast<size_t>(t.group_size));
  for (int64_t g = 0; g < t.num_groups; ++g) {
    absl::Status s =
        HqqGroup(src + g * t.group_size, t.group_size, options, scratch,
                 codes.data() + g * t.group_size, t.scales[g],
                 t.zero_points[g]);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("group ", g, ": ", s.message()));
    }
  }
  PackCodes(codes.data(), n, t.bits, t.codes.data());
  return t;
}

absl::Status HqqDequantize(const HqqTensor& src, float* dst) {
  const int64_t n = src.num_elements();
  if (src.bits < 1 || src.bits > 8 || src.rows < 1 || src.row_length < 1 ||
      src.group_size < 1 || src.row_length % src.group_size != 0 ||
      src.num_groups != n / src.group_size ||
      static_cast<int64_t>(src.scales.size()) != src.num_groups ||
      static_cast<int64_t>(src.zero_points.size()) != src.num_groups ||
      static_cast<int64_t>(src.codes.size()) != (n * src.bits + 7) / 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inconsistent HQQ tensor: rows ", src.rows, ", row_length ",
        src.row_length, ", bits ", src.bits, ", group_size ", src.group_size,
        ", ", src.scales.size(), " scales, ", src.zero_points.size(),
        " zero points, ", src.codes.size(), " code bytes"));
  }
  constexpr int64_t kChunk = 4096;  // a multiple of 8: chunks start on bytes
  uint8_t fields[kChunk];
  for (int64_t e0 = 0; e0 < n; e0 += kChunk) {
    const int64_t m = std::min(kChunk, n - e0);
    UnpackCodes(src.codes.data() + e0 / 8 * src.bits, m, src.bits, fields);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t g = (e0 + i) / src.group_size;
      dst[e0 + i] =
          (static_cast<float>(fields[i]) - src.zero_points[g]) * src.scales[g];
    }
  }
  return absl::OkStatus();
}

int64_t HqqWorkingSetBytes(const Layout& layout) {
  const int64_t n = layout.num_elements;
  return layout.packed_bytes + 4 * layout.num_groups + n +
         (layout.float_zero_points ? 4 * layout.num_groups : 0);
}

}  // namespace quantd
