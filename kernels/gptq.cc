#include "kernels/gptq.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/internal/linalg.h"
#include "kernels/internal/linalg_gptq.h"
#include "kernels/internal/linalg_gram.h"

namespace quantd {
namespace {

size_t Sz(int64_t n) { return static_cast<size_t>(n); }

// One group's grid, with exactly the int<b> reference's arithmetic
// (quantize.cc, QuantizeIntReference).
struct GridParams {
  float scale = 1.0f;
  float inv = 1.0f;
  int zero_point = 0;
};

struct Grid {
  int bits = 8;
  bool symmetric = true;
  int qmin = 0;
  int qmax = 0;
  unsigned mask = 0;

  GridParams Params(const float* x, int64_t n) const {
    GridParams p;
    if (symmetric) {
      float amax = 0.0f;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
      p.scale = amax / static_cast<float>(qmax);
    } else {
      float lo = 0.0f;
      float hi = 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
      p.scale = (hi - lo) / static_cast<float>(qmax);
      if (p.scale < FLT_MIN) p.scale = FLT_MIN;
      p.inv = 1.0f / p.scale;
      p.zero_point = std::clamp(
          static_cast<int>(std::nearbyint(-lo * p.inv)), 0, qmax);
      return p;
    }
    if (p.scale < FLT_MIN) p.scale = FLT_MIN;
    p.inv = 1.0f / p.scale;
    return p;
  }

  // The code (q + zero point, clamped) of x.
  int Code(float x, const GridParams& p) const {
    return std::clamp(static_cast<int>(std::nearbyint(x * p.inv)) +
                          p.zero_point,
                      qmin, qmax);
  }
  float Value(int code, const GridParams& p) const {
    return p.scale * static_cast<float>(code - p.zero_point);
  }
  uint8_t Field(int code) const {
    return static_cast<uint8_t>(static_cast<unsigned>(code) & mask);
  }
};

absl::StatusOr<Grid> GridOf(const Layout& layout) {
  if (layout.IsBlockFormat() || FindFormat(layout.scheme.format) == nullptr ||
      layout.bits < 2 || layout.bits > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "calibrated methods need an int2..int8 layout, got ",
        SchemeToString(layout.scheme)));
  }
  if (layout.rows < 1 || layout.row_length < 1 || layout.group_size < 1 ||
      layout.num_groups < 1 ||
      layout.num_groups * layout.group_size != layout.num_elements) {
    return absl::InvalidArgumentError(
        "inconsistent layout (build it with MakeLayout)");
  }
  Grid grid;
  grid.bits = layout.bits;
  grid.symmetric = layout.scheme.symmetric;
  grid.mask = (1u << layout.bits) - 1;
  if (grid.symmetric) {
    grid.qmax = (1 << (layout.bits - 1)) - 1;
    grid.qmin = -(grid.qmax + 1);
  } else {
    grid.qmax = (1 << layout.bits) - 1;
    grid.qmin = 0;
  }
  return grid;
}

}  // namespace

absl::Status ValidateGram(const GramView& gram, int64_t in_features) {
  if (gram.f64.empty() == gram.f32.empty()) {
    return absl::InvalidArgumentError(
        "G must be given as exactly one of f64 or f32");
  }
  if (gram.features != in_features) {
    return absl::InvalidArgumentError(
        absl::StrCat("G is ", gram.features, "x", gram.features,
                     " but the weight has ", in_features,
                     " input features (columns)"));
  }
  const size_t size = gram.f64.empty() ? gram.f32.size() : gram.f64.size();
  if (gram.features < 1 ||
      size != static_cast<size_t>(gram.features * gram.features)) {
    return absl::InvalidArgumentError(
        absl::StrCat("G has ", size, " entries, expected features^2 = ",
                     gram.features, "^2"));
  }
  if (gram.tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("G's token count is ", gram.tokens, ", must be >= 1"));
  }
  for (int64_t i = 0; i < gram.features; ++i) {
    for (int64_t j = 0; j < gram.features; ++j) {
      const double v = gram.at(i, j);
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "G has a non-finite value ", v, " at row ", i, ", column ", j));
      }
    }
    if (gram.at(i, i) < 0.0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "G has a negative diagonal entry ", gram.at(i, i), " at ", i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> OutputRelativeError(const float* w, const float* w_hat,
                                           int64_t rows, int64_t cols,
                                           const GramView& gram) {
  QUANTD_RETURN_IF_ERROR(ValidateGram(gram, cols));
  if (rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight has ", rows, " rows"));
  }
  QUANTD_RETURN_IF_ERROR(internal::CheckFinite(w, rows * cols, "w"));
  QUANTD_RETURN_IF_ERROR(internal::CheckFinite(w_hat, rows * cols, "w_hat"));
  const std::vector<float> g = internal::DenseGramF32(gram);
  std::vector<float> diff(Sz(rows * cols));
  for (size_t i = 0; i < diff.size(); ++i) diff[i] = w[i] - w_hat[i];
  QUANTD_ASSIGN_OR_RETURN(
      const double num,
      internal::TraceQuadraticChunked(diff.data(), rows, cols, g.data()));
  QUANTD_ASSIGN_OR_RETURN(
      const double den,
      internal::TraceQuadraticChunked(w, rows, cols, g.data()));
  return internal::RelativeFromTraces(num, den);
}

absl::StatusOr<GptqResult> GptqQuantize(const float* w, const Layout& layout,
                                        const GramView& gram,
                                        const GptqOptions& options) {
  QUANTD_ASSIGN_OR_RETURN(const Grid grid, GridOf(layout));
  const int64_t rows = layout.rows;
  const int64_t cols = layout.row_length;
  QUANTD_RETURN_IF_ERROR(internal::CheckGptqInputs(
      w, rows, cols, gram, options.damp_percent, options.block_size));
  const Granularity granularity = layout.scheme.granularity;
  const bool grouped = granularity == Granularity::kPerGroup;
  const int64_t group = grouped ? layout.group_size : cols;
  const int64_t groups_per_row = grouped ? cols / group : 1;
  const bool dynamic_groups = grouped && !options.static_groups;

  GptqResult result;
  std::vector<float> work(w, w + rows * cols);
  // Parameters: per tensor or per channel from the original W (dead columns
  // included, as the reference's find_params(W) before zeroing them).
  std::vector<GridParams> params(Sz(layout.num_groups));
  if (granularity == Granularity::kPerTensor) {
    params[0] = grid.Params(work.data(), rows * cols);
  } else if (granularity == Granularity::kPerChannel) {
    for (int64_t r = 0; r < rows; ++r) {
      params[Sz(r)] = grid.Params(work.data() + r * cols, cols);
    }
  }

  // H, dead columns, act_order, damping and Hinv (the shared preparation).
  QUANTD_ASSIGN_OR_RETURN(
      internal::GptqHessian hess,
      internal::GptqInverseHessianFactor(gram, options.damp_percent,
                                         options.act_order));
  result.dead_columns = hess.dead_columns;
  for (int64_t c = 0; c < cols; ++c) {
    if (hess.dead[Sz(c)] == 0) continue;
    for (int64_t r = 0; r < rows; ++r) work[Sz(r * cols + c)] = 0.0f;
  }
  if (grouped && options.static_groups) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < groups_per_row; ++g) {
        params[Sz(r * groups_per_row + g)] =
            grid.Params(work.data() + r * cols + g * group, group);
      }
    }
  }
  const std::vector<int32_t>& perm = hess.perm;
  if (options.act_order) {
    std::vector<float> tmp(Sz(cols));
    for (int64_t r = 0; r < rows; ++r) {
      float* row = work.data() + r * cols;
      for (int64_t j = 0; j < cols; ++j) tmp[Sz(j)] = row[perm[Sz(j)]];
      std::copy(tmp.begin(), tmp.end(), row);
    }
    result.perm = perm;
  }
  // Groups formed in quantization order need the group index (GPTQ's g_idx)
  // unless a group is the whole row.
  const bool indexed = options.act_order && dynamic_groups;
  const float* hinv = hess.hinv.data();

  // Codes in the original column order.
  std::vector<uint8_t> fields(Sz(rows * cols));
  double loss = 0.0;
  // A group starting inside a batch must end inside it, so that its
  // parameters see every earlier column's update.
  const auto cut = [&](int64_t i1, int64_t i2) {
    if (!dynamic_groups) return i2;
    const int64_t last_start = (i2 - 1) / group * group;
    return last_start > i1 && last_start + group > i2 ? last_start : i2;
  };
  const auto round = [&](int64_t r, int64_t i, float* row) {
    GridParams* p;
    if (dynamic_groups) {
      p = &params[Sz(r * groups_per_row + i / group)];
      if (i % group == 0) *p = grid.Params(row + i, group);
    } else if (grouped) {
      p = &params[Sz(r * groups_per_row + perm[Sz(i)] / group)];
    } else if (granularity == Granularity::kPerChannel) {
      p = &params[Sz(r)];
    } else {
      p = &params[0];
    }
    const int code = grid.Code(row[i], *p);
    fields[Sz(r * cols + perm[Sz(i)])] = grid.Field(code);
    return grid.Value(code, *p);
  };
  QUANTD_RETURN_IF_ERROR(internal::GptqColumnLoop(
      work.data(), rows, cols, hinv, options.block_size, cut, round, &loss));
  result.loss = loss;

  QuantizedTensor& q = result.quantized;
  Layout out_layout = layout;
  out_layout.group_index = indexed && group < cols;
  q = AllocateQuantized(out_layout);
  PackCodes(fields.data(), rows * cols, grid.bits, q.codes.data());
  for (size_t g = 0; g < params.size(); ++g) {
    q.scales[g] = params[g].scale;
    if (!grid.symmetric) {
      q.zero_points[g] = static_cast<uint8_t>(params[g].zero_point);
    }
  }
  if (grouped) {
    result.g_idx.resize(Sz(cols));
    for (int64_t j = 0; j < cols; ++j) {
      result.g_idx[Sz(perm[Sz(j)])] = static_cast<int32_t>(
          (indexed ? j : perm[Sz(j)]) / group);
    }
    if (out_layout.group_index) q.group_index = result.g_idx;
  }

  result.output_error = std::numeric_limits<double>::quiet_NaN();
  result.rtn_output_error = std::numeric_limits<double>::quiet_NaN();
  if (options.measure_output_error) {
    std::vector<float> w_hat(Sz(rows * cols));
    Dequantize(q, w_hat.data());
    QUANTD_ASSIGN_OR_RETURN(result.output_error,
                            OutputRelativeError(w, w_hat.data(), rows, cols,
                                                gram));
    QuantizedTensor rtn = AllocateQuantized(layout);
    QUANTD_RETURN_IF_ERROR(Quantize(w, rtn));
    Dequantize(rtn, w_hat.data());
    QUANTD_ASSIGN_OR_RETURN(result.rtn_output_error,
                            OutputRelativeError(w, w_hat.data(), rows, cols,
                                                gram));
  }
  return result;
}

int64_t GptqWorkingSetBytes(const Layout& layout) {
  const int64_t n = layout.num_elements;
  const int64_t in = layout.row_length;
  // H and its Cholesky factor / inverse in f64, the updated f32 copy of
  // W and one batch's error panel.
  return 2 * 8 * in * in + 4 * n +
         4 * layout.rows * std::min<int64_t>(in, layout.scheme.method.block_size);
}

}  // namespace quantd
