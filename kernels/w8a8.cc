#include "kernels/w8a8.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "dnnl.hpp"
#include "kernels/internal/linalg.h"
#include "kernels/internal/linalg_gram.h"

namespace quantd {
namespace {

size_t Sz(int64_t n) { return static_cast<size_t>(n); }

// k * 255 * 128 stays below 2^31 for k up to 65793.
constexpr int64_t kMaxK = 65536;

absl::Status CheckShape(int64_t m, int64_t n, int64_t k) {
  if (m < 1 || n < 1 || k < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "W8A8 GEMM of m = ", m, ", n = ", n, ", k = ", k,
        ": every dimension must be >= 1"));
  }
  if (k > kMaxK) {
    return absl::InvalidArgumentError(
        absl::StrCat("W8A8 GEMM with k = ", k, " input features: at most ",
                     kMaxK, " keep the s32 accumulators exact"));
  }
  return absl::OkStatus();
}

OutputErrorStats Compare(const float* y, const float* ref, int64_t n) {
  double err2 = 0.0;
  double ref2 = 0.0;
  double max_abs = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(y[i]) - ref[i];
    err2 += d * d;
    ref2 += static_cast<double>(ref[i]) * ref[i];
    max_abs = std::max(max_abs, std::fabs(d));
  }
  OutputErrorStats s;
  s.relative_error = internal::RelativeFromTraces(err2, ref2);
  s.sqnr_db = err2 == 0.0 ? std::numeric_limits<double>::infinity()
                          : 10.0 * std::log10(ref2 / err2);
  s.max_abs_error = max_abs;
  return s;
}

}  // namespace

absl::StatusOr<W8A8Weights> W8A8Weights::From(const QuantizedTensor& q) {
  const Layout& l = q.layout;
  const bool per_channel = l.num_groups == l.rows && l.group_size == l.row_length;
  const bool per_tensor = l.num_groups == 1 && l.group_size == l.num_elements;
  if (l.IsBlockFormat() ||
      l.scheme.format != "int8" || l.bits != 8 || !l.scheme.symmetric ||
      !(per_channel || per_tensor) ||
      q.codes.size() != Sz(l.num_elements) ||
      q.scales.size() != Sz(l.num_groups)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "W8A8 needs int8 symmetric per-channel or per-tensor weight codes, "
        "got ",
        SchemeToString(l.scheme)));
  }
  W8A8Weights w;
  w.codes = reinterpret_cast<const int8_t*>(q.codes.data());
  w.scales = q.scales;
  return w;
}

int64_t QuantizeActivationsInt8(const float* x, int64_t m, int64_t k,
                                const W8A8Activations& act, uint8_t* dst) {
  const float lo = act.asymmetric ? 0.0f : -128.0f;
  const float hi = act.asymmetric ? 255.0f : 127.0f;
  const auto zp = static_cast<float>(act.zero_point);
  int64_t clipped = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < k; ++c) {
      float v = x[i * k + c];
      if (!act.smooth.empty()) v = v / act.smooth[Sz(c)];
      // |v / scale| may exceed int range: clamp in float (exact: integers).
      const float q = std::nearbyint(v / act.scale) + zp;
      const float s = std::clamp(q, lo, hi);
      if (s != q) ++clipped;
      const int code = static_cast<int>(s);
      dst[i * k + c] = static_cast<uint8_t>(static_cast<unsigned>(code) & 0xFFu);
    }
  }
  return clipped;
}

void Int8GemmS32Reference(const uint8_t* a, bool src_unsigned,
                          int32_t zero_point, const int8_t* b, int64_t m,
                          int64_t n, int64_t k, int32_t* acc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      int32_t s = 0;
      for (int64_t c = 0; c < k; ++c) {
        const int32_t av = src_unsigned
                               ? static_cast<int32_t>(a[i * k + c])
                               : static_cast<int32_t>(
                                     static_cast<int8_t>(a[i * k + c]));
        s += (av - zero_point) * static_cast<int32_t>(b[j * k + c]);
      }
      acc[i * n + j] = s;
    }
  }
}

struct Int8GemmS32::Impl {
  dnnl::engine engine;
  dnnl::memory::desc src_md;
  dnnl::memory::desc weights_md;
  dnnl::memory::desc dst_md;
  dnnl::matmul matmul;
  bool src_unsigned = false;
  bool split = false;
  std::string implementation;
};

Int8GemmS32::Int8GemmS32(std::shared_ptr<const Impl> impl, int64_t m,
                         int64_t n, int64_t k)
    : impl_(std::move(impl)), m_(m), n_(n), k_(k) {}

bool Int8GemmS32::split() const { return impl_->split; }
const std::string& Int8GemmS32::implementation() const {
  return impl_->implementation;
}

absl::StatusOr<Int8GemmS32> Int8GemmS32::Create(int64_t m, int64_t n,
                                                int64_t k, bool src_unsigned,
                                                Path path) {
  QUANTD_RETURN_IF_ERROR(CheckShape(m, n, k));
  try {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    auto impl = std::make_shared<Impl>();
    impl->engine = dnnl::engine(dnnl::engine::kind::cpu, 0);
    impl->src_unsigned = src_unsigned;
    // B is n x k row-major, i.e. the k x n weights in "ba" order.
    impl->weights_md = dnnl::memory::desc({k, n}, dt::s8, tag::ba);
    impl->dst_md = dnnl::memory::desc({m, n}, dt::s32, tag::ab);
    const auto make = [&](dt src_type) {
      impl->src_md = dnnl::memory::desc({m, k}, src_type, tag::ab);
      const dnnl::matmul::desc desc(impl->src_md, impl->weights_md,
                                    impl->dst_md);
      const dnnl::matmul::primitive_desc pd(desc, impl->engine);
      impl->implementation = pd.impl_info_str();
      impl->matmul = dnnl::matmul(pd);
    };
    make(src_unsigned ? dt::u8 : dt::s8);
    const std::string& name = impl->implementation;
    const bool exact = name.find("vnni") != std::string::npos ||
                       name.find("amx") != std::string::npos;
    if (path == Path::kSevenBitSplit || !exact) {
      impl->split = true;
      make(dt::u8);
    }
    return Int8GemmS32(std::move(impl), m, n, k);
  } catch (const dnnl::error& e) {
    return absl::InternalError(
        absl::StrCat("oneDNN int8 matmul (", m, " x ", n, " x ", k,
                     ") could not be created: ", e.what(), " (status ",
                     static_cast<int>(e.status), ")"));
  }
}

absl::Status Int8GemmS32::Run(const uint8_t* a, int32_t zero_point,
                              const int8_t* b, int32_t* acc) const {
  const Impl& impl = *impl_;
  const auto run = [&](const uint8_t* src, int32_t* dst) -> absl::Status {
    // The one place in this file where dnnl::error becomes a status.
    try {
      dnnl::memory src_mem(impl.src_md, impl.engine, const_cast<uint8_t*>(src));
      dnnl::memory weights(impl.weights_md, impl.engine,
                           const_cast<int8_t*>(b));
      dnnl::memory dst_mem(impl.dst_md, impl.engine, dst);
      dnnl::stream stream(impl.engine);
      impl.matmul.execute(stream, {{DNNL_ARG_SRC, src_mem},
                                   {DNNL_ARG_WEIGHTS, weights},
                                   {DNNL_ARG_DST, dst_mem}});
      stream.wait();
    } catch (const dnnl::error& e) {
      return absl::InternalError(
          absl::StrCat("oneDNN int8 matmul failed: ", e.what(), " (status ",
                       static_cast<int>(e.status), ")"));
    }
    return absl::OkStatus();
  };
  // What to subtract per output column: offset * sum_c b[j][c].
  const int64_t offset =
      zero_point + (impl.split && !impl.src_unsigned ? 128 : 0);
  std::vector<int64_t> row_sums;
  if (offset != 0) {
    row_sums.assign(Sz(n_), 0);
    for (int64_t j = 0; j < n_; ++j) {
      for (int64_t c = 0; c < k_; ++c) row_sums[Sz(j)] += b[j * k_ + c];
    }
  }
  if (!impl.split) {
    QUANTD_RETURN_IF_ERROR(run(a, acc));
    if (offset != 0) {
      for (int64_t i = 0; i < m_; ++i) {
        for (int64_t j = 0; j < n_; ++j) {
          acc[i * n_ + j] = static_cast<int32_t>(acc[i * n_ + j] -
                                                 offset * row_sums[Sz(j)]);
        }
      }
    }
    return absl::OkStatus();
  }
  // u8 v = a (u8) or a + 128 (s8) = 128 * hi + lo, hi in {0, 1}.
  std::vector<uint8_t> lo(Sz(m_ * k_));
  std::vector<uint8_t> hi(Sz(m_ * k_));
  const uint8_t flip = impl.src_unsigned ? 0x00 : 0x80;
  for (size_t i = 0; i < lo.size(); ++i) {
    const auto v = static_cast<uint8_t>(a[i] ^ flip);
    lo[i] = v & 0x7F;
    hi[i] = static_cast<uint8_t>(v >> 7);
  }
  std::vector<int32_t> acc_hi(Sz(m_ * n_));
  QUANTD_RETURN_IF_ERROR(run(lo.data(), acc));
  QUANTD_RETURN_IF_ERROR(run(hi.data(), acc_hi.data()));
  for (int64_t i = 0; i < m_; ++i) {
    for (int64_t j = 0; j < n_; ++j) {
      const size_t idx = Sz(i * n_ + j);
      int64_t v = acc[idx] + 128 * static_cast<int64_t>(acc_hi[idx]);
      if (offset != 0) v -= offset * row_sums[Sz(j)];
      acc[idx] = static_cast<int32_t>(v);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<W8A8Report> W8A8Check(const float* x, int64_t m, const float* w,
                                     int64_t n, int64_t k,
                                     const W8A8Weights& weights,
                                     const W8A8Activations& act,
                                     const W8A8Options& options) {
  QUANTD_RETURN_IF_ERROR(CheckShape(m, n, k));
  QUANTD_RETURN_IF_ERROR(internal::CheckFinite(x, m * k, "activations"));
  QUANTD_RETURN_IF_ERROR(internal::CheckFinite(w, n * k, "weight"));
  if (weights.codes == nullptr) {
    return absl::InvalidArgumentError("W8A8 weight codes are missing");
  }
  if (weights.scales.size() != Sz(n) && weights.scales.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "W8A8 weight has ", weights.scales.size(), " scales, expected ", n,
        " (per output channel) or 1 (per tensor)"));
  }
  for (size_t j = 0; j < weights.scales.size(); ++j) {
    if (!std::isfinite(weights.scales[j])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "W8A8 weight scale ", j, " is ", weights.scales[j]));
    }
  }
  if (!(act.scale > 0.0f) || !std::isfinite(act.scale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation scale is ", act.scale, ", must be finite and > 0"));
  }
  if (act.asymmetric ? (act.zero_point < 0 || act.zero_point > 255)
                     : act.zero_point != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation zero point ", act.zero_point,
        act.asymmetric ? " is outside u8's [0, 255]"
                       : " must be 0 for symmetric s8 activations"));
  }
  if (!act.smooth.empty()) {
    if (act.smooth.size() != Sz(k)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "smoothing has ", act.smooth.size(), " factors for ", k,
          " input features"));
    }
    for (int64_t c = 0; c < k; ++c) {
      const float s = act.smooth[Sz(c)];
      if (!(s > 0.0f) || !std::isfinite(s)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "smoothing factor ", c, " is ", s, ", must be finite and > 0"));
      }
    }
  }

  W8A8Report report;
  // Activation codes and the s32 GEMM.
  std::vector<uint8_t> xq(Sz(m * k));
  report.clipped = QuantizeActivationsInt8(x, m, k, act, xq.data());
  report.clipped_fraction =
      static_cast<double>(report.clipped) / static_cast<double>(m * k);
  QUANTD_ASSIGN_OR_RETURN(const Int8GemmS32 gemm,
                          Int8GemmS32::Create(m, n, k, act.asymmetric));
  report.gemm = gemm.implementation();
  std::vector<int32_t> acc(Sz(m * n));
  QUANTD_RETURN_IF_ERROR(
      gemm.Run(xq.data(), act.zero_point, weights.codes, acc.data()));
  const auto s_w = [&](int64_t j) {
    return weights.scales.size() == 1 ? weights.scales[0]
                                      : weights.scales[Sz(j)];
  };
  std::vector<float> y(Sz(m * n));
  for (int64_t j = 0; j < n; ++j) {
    const float scale = act.scale * s_w(j);
    for (int64_t i = 0; i < m; ++i) {
      y[Sz(i * n + j)] = scale * static_cast<float>(acc[Sz(i * n + j)]);
    }
  }

  // The f32 reference X W^T and the weights-only X' W_hat^T.
  std::vector<float> y_ref(Sz(m * n));
  QUANTD_RETURN_IF_ERROR(internal::Sgemm(false, true, m, n, k, 1.0f, x, k, w,
                                         k, 0.0f, y_ref.data(), n));
  std::vector<float> w_hat(Sz(n * k));
  for (int64_t j = 0; j < n; ++j) {
    const float s = s_w(j);
    for (int64_t c = 0; c < k; ++c) {
      w_hat[Sz(j * k + c)] = s * static_cast<float>(weights.codes[j * k + c]);
    }
  }
  std::vector<float> x_smooth;
  const float* xs = x;
  if (!act.smooth.empty()) {
    x_smooth.resize(Sz(m * k));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t c = 0; c < k; ++c) {
        x_smooth[Sz(i * k + c)] = x[i * k + c] / act.smooth[Sz(c)];
      }
    }
    xs = x_smooth.data();
  }
  std::vector<float> y_w(Sz(m * n));
  QUANTD_RETURN_IF_ERROR(internal::Sgemm(false, true, m, n, k, 1.0f, xs, k,
                                         w_hat.data(), k, 0.0f, y_w.data(), n));
  report.w8a8 = Compare(y.data(), y_ref.data(), m * n);
  report.weight_only = Compare(y_w.data(), y_ref.data(), m * n);
  if (options.return_output) report.y = std::move(y);
  return report;
}

int64_t W8A8CheckWorkingSetBytes(const Layout& layout, int64_t holdout_rows) {
  // W8A8 check: activation codes (two copies for the 7-bit split), the
  // reference, integer-only and weights-only outputs and s32 results.
  return holdout_rows * (2 * layout.row_length + 5 * 4 * layout.rows);
}

}  // namespace quantd
