#include "kernels/calibration_stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/convert.h"
#include "kernels/internal/calibration_internal.h"
#include "kernels/internal/linalg.h"

namespace quantd {
namespace {

constexpr int kMinExponent = -149;  // 2^-149: the smallest positive float
// Column panel of one G block: panel j computes G[0:j+P, j:j+P] only (the
// upper triangle and the diagonal block), so a block costs about half of the
// full GEMM.
constexpr int64_t kGramPanel = 512;

// Adds the upper triangle (and diagonal panels) of XᵀX of `rows` rows of
// `features` floats into `gram` (f64, features²). `scratch` holds
// features x kGramPanel floats.
absl::Status AccumulateGramBlock(const float* x, int64_t rows,
                                 int64_t features, int threads, double* gram,
                                 float* scratch) {
  internal::ScopedOmpThreads omp_threads(threads);
  for (int64_t j = 0; j < features; j += kGramPanel) {
    const int64_t width = std::min(kGramPanel, features - j);
    const int64_t height = j + width;
    absl::Status s = internal::Sgemm(true, false, height, width, rows, 1.0f, x,
                                     features, x + j, features, 0.0f, scratch,
                                     width);
    if (!s.ok()) return s;
    for (int64_t r = 0; r < height; ++r) {
      double* dst = gram + r * features + j;
      const float* src = scratch + r * width;
      for (int64_t c = 0; c < width; ++c) dst[c] += static_cast<double>(src[c]);
    }
  }
  return absl::OkStatus();
}

// The exponent e of the smallest power of two > amax, at least kMinExponent.
int RangeExponent(float amax) {
  if (!(amax > 0.0f)) return kMinExponent;
  int e = 0;
  std::frexp(amax, &e);  // amax = f·2^e, f in [0.5, 1)
  return std::max(e, kMinExponent);
}

// Moves counts from range 2^old_e to 2^new_e (new_e >= old_e).
template <typename Count>
void Rebin(Count* counts, int64_t bins, int old_e, int new_e) {
  if (new_e <= old_e) return;
  const int shift = std::min(new_e - old_e, 62);
  const int64_t half = bins / 2;
  std::vector<Count> moved(static_cast<size_t>(bins), 0);
  for (int64_t j = 0; j < bins; ++j) {
    if (counts[j] == 0) continue;
    moved[static_cast<size_t>(half + ((j - half) >> shift))] += counts[j];
  }
  std::copy(moved.begin(), moved.end(), counts);
}

// Factor (B/2) / 2^e: x times it, floored, plus B/2 is x's bin.
double BinFactor(int64_t bins, int exponent) {
  return std::ldexp(static_cast<double>(bins / 2), -exponent);
}

int64_t BinOf(float x, double factor, int64_t half) {
  return static_cast<int64_t>(std::floor(static_cast<double>(x) * factor)) +
         half;
}

template <typename Count>
void MergeHistogram(Count* dst, int& dst_e, const Count* src, int src_e,
                    int64_t bins) {
  std::vector<Count> aligned(src, src + bins);
  const int e = std::max(dst_e, src_e);
  Rebin(dst, bins, dst_e, e);
  Rebin(aligned.data(), bins, src_e, e);
  for (int64_t i = 0; i < bins; ++i) dst[i] += aligned[static_cast<size_t>(i)];
  dst_e = e;
}

template <typename T>
size_t Bytes(const std::vector<T>& v) {
  return v.capacity() * sizeof(T);
}

}  // namespace

// ---------------------------------------------------------------------------
// Histogram

double Histogram::BinWidth() const {
  return std::ldexp(1.0, exponent + 1) / static_cast<double>(bins);
}

double Histogram::LowerEdge(int64_t bin) const {
  return static_cast<double>(bin - bins / 2) * BinWidth();
}

uint64_t Histogram::Total() const {
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return total;
}

// ---------------------------------------------------------------------------
// CalibrationAccumulator

absl::Status CalibrationAccumulator::Error(absl::StatusCode code,
                                           std::string message) const {
  return absl::Status(code,
                      absl::StrCat("calibration set '", name_, "': ", message));
}

absl::StatusOr<CalibrationAccumulator> CalibrationAccumulator::Create(
    std::string name, int64_t features, const CalibrationOptions& options) {
  CalibrationAccumulator acc;
  acc.name_ = std::move(name);
  if (features < 1 || features > (int64_t{1} << 24)) {
    return acc.Error(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("feature count ", features,
                                  " out of range [1, 2^24]"));
  }
  if (options.gram_block_rows < 1 || options.gram_block_rows > (1 << 20)) {
    return acc.Error(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("gram_block_rows ", options.gram_block_rows,
                                  " out of range [1, 2^20]"));
  }
  if (!internal::IsPowerOfTwo(options.tensor_histogram_bins) ||
      options.tensor_histogram_bins < 16 ||
      options.tensor_histogram_bins > (1 << 20)) {
    return acc.Error(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("tensor_histogram_bins ", options.tensor_histogram_bins,
                     " is not a power of two in [16, 2^20]"));
  }
  if (options.channel_histogram_bins != 0 &&
      (!internal::IsPowerOfTwo(options.channel_histogram_bins) ||
       options.channel_histogram_bins < 16 ||
       options.channel_histogram_bins > (1 << 16))) {
    return acc.Error(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("channel_histogram_bins ", options.channel_histogram_bins,
                     " is neither 0 nor a power of two in [16, 2^16]"));
  }
  if (options.gemm_threads < 0) {
    return acc.Error(absl::StatusCode::kInvalidArgument,
                     "gemm_threads must be >= 0");
  }
  acc.features_ = features;
  acc.options_ = options;
  acc.has_stats_ = true;
  const size_t f = static_cast<size_t>(features);
  if (options.gram) {
    acc.has_gram_ = true;
    acc.gram_.assign(f * f, 0.0);
    acc.pending_.resize(f * static_cast<size_t>(options.gram_block_rows));
  }
  acc.min_.assign(f, std::numeric_limits<float>::infinity());
  acc.max_.assign(f, -std::numeric_limits<float>::infinity());
  acc.sum_abs_.assign(f, 0.0);
  acc.sum_sq_.assign(f, 0.0);
  acc.tensor_counts_.assign(static_cast<size_t>(options.tensor_histogram_bins),
                            0);
  if (options.channel_histogram_bins > 0) {
    acc.channel_exponent_.assign(f, kMinExponent);
    acc.channel_counts_.assign(
        f * static_cast<size_t>(options.channel_histogram_bins), 0);
  }
  return acc;
}

absl::StatusOr<CalibrationAccumulator> CalibrationAccumulator::FromGram(
    std::string name, int64_t features, absl::Span<const double> gram,
    int64_t tokens) {
  CalibrationAccumulator acc;
  acc.name_ = std::move(name);
  if (features < 1 || features > (int64_t{1} << 24) ||
      gram.size() != static_cast<size_t>(features * features)) {
    return acc.Error(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("G must hold features² values for ",
                                  features, " features, got ", gram.size()));
  }
  if (tokens < 1) {
    return acc.Error(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("token count ", tokens, " must be >= 1"));
  }
  for (size_t i = 0; i < gram.size(); ++i) {
    if (!std::isfinite(gram[i])) {
      return acc.Error(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("G element ", i, " is not finite"));
    }
  }
  acc.features_ = features;
  acc.options_.gram = true;
  acc.options_.channel_histogram_bins = 0;
  acc.has_gram_ = true;
  acc.tokens_ = tokens;
  acc.gram_.assign(gram.begin(), gram.end());
  acc.pending_.resize(static_cast<size_t>(features) *
                      static_cast<size_t>(acc.options_.gram_block_rows));
  return acc;
}

absl::StatusOr<CalibrationAccumulator> CalibrationAccumulator::FromImportance(
    std::string name, absl::Span<const float> importance, int64_t tokens) {
  CalibrationAccumulator acc;
  acc.name_ = std::move(name);
  if (importance.empty() || importance.size() > (size_t{1} << 24)) {
    return acc.Error(absl::StatusCode::kInvalidArgument,
                     "importance must hold 1 to 2^24 values");
  }
  if (tokens < 1) {
    return acc.Error(absl::StatusCode::kInvalidArgument,
                     absl::StrCat("token count ", tokens, " must be >= 1"));
  }
  for (size_t i = 0; i < importance.size(); ++i) {
    if (!std::isfinite(importance[i]) || importance[i] < 0.0f) {
      return acc.Error(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("importance of column ", i, " is ",
                                    importance[i], ", not finite and >= 0"));
    }
  }
  acc.features_ = static_cast<int64_t>(importance.size());
  acc.options_.gram = false;
  acc.options_.channel_histogram_bins = 0;
  acc.importance_only_ = true;
  acc.tokens_ = tokens;
  acc.importance_.assign(importance.begin(), importance.end());
  return acc;
}

absl::Status CalibrationAccumulator::Add(const float* x, int64_t rows,
                                         int64_t columns) {
  if (!has_stats_) {
    return Error(absl::StatusCode::kInvalidArgument,
                 "rows cannot be added to precomputed statistics");
  }
  if (rows < 1) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("a chunk needs at least one row, got ", rows));
  }
  if (columns != features_) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("chunk has ", columns, " columns, the set has ",
                              features_, " features"));
  }
  if (options_.channel_histogram_bins > 0 &&
      rows > int64_t{std::numeric_limits<uint32_t>::max()} - tokens_) {
    return Error(absl::StatusCode::kResourceExhausted,
                 "over 2^32 - 1 tokens, the limit with per-channel histograms");
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * features_;
    bool finite = true;
    for (int64_t c = 0; c < features_; ++c) finite &= std::isfinite(row[c]);
    if (!finite) {
      for (int64_t c = 0; c < features_; ++c) {
        if (!std::isfinite(row[c])) {
          return Error(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("row ", r, " of the chunk (token ",
                                    tokens_ + r, "), column ", c, " is ",
                                    std::isnan(row[c])  ? "NaN"
                                    : row[c] > 0.0f     ? "+Inf"
                                                        : "-Inf"));
        }
      }
    }
  }
  return AddValidated(x, rows);
}

absl::Status CalibrationAccumulator::Add(DType dtype, const void* x,
                                         size_t bytes, int64_t columns) {
  if (columns != features_) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("chunk has ", columns, " columns, the set has ",
                              features_, " features"));
  }
  const size_t row_bytes =
      static_cast<size_t>(features_) * static_cast<size_t>(DTypeSize(dtype));
  if (bytes == 0 || bytes % row_bytes != 0) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat(bytes, " bytes of ", DTypeName(dtype),
                              " are not a positive whole number of rows of ",
                              features_));
  }
  const int64_t rows = static_cast<int64_t>(bytes / row_bytes);
  if (dtype == DType::kF32) {
    std::vector<float> aligned(static_cast<size_t>(rows * features_));
    std::memcpy(aligned.data(), x, bytes);
    return Add(aligned.data(), rows, columns);
  }
  std::vector<float> converted(static_cast<size_t>(rows * features_));
  // Non-finite values are reported by Add with their row and column.
  if (ConvertToF32(dtype, x, converted.size(), converted.data()).ok()) {
    return Add(converted.data(), rows, columns);
  }
  // ConvertToF32 stops at the first bad element: convert with the scalar
  // functions so Add sees (and names) it.
  const auto* half = static_cast<const uint8_t*>(x);
  for (size_t i = 0; i < converted.size(); ++i) {
    uint16_t v = 0;
    std::memcpy(&v, half + 2 * i, sizeof(v));
    converted[i] =
        dtype == DType::kF16 ? HalfToFloat(v) : BFloat16ToFloat(v);
  }
  return Add(converted.data(), rows, columns);
}

absl::Status CalibrationAccumulator::FlushBlock(const float* x, int64_t rows) {
  std::vector<float> scratch(static_cast<size_t>(
      features_ * std::min(kGramPanel, features_)));
  return AccumulateGramBlock(x, rows, features_, options_.gemm_threads,
                             gram_.data(), scratch.data());
}

absl::Status CalibrationAccumulator::AddValidated(const float* x,
                                                  int64_t rows) {
  const size_t f = static_cast<size_t>(features_);
  // Per-channel extremes of the chunk: ranges grow before binning.
  std::vector<float> chunk_min(f, std::numeric_limits<float>::infinity());
  std::vector<float> chunk_max(f, -std::numeric_limits<float>::infinity());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * features_;
    for (size_t c = 0; c < f; ++c) {
      chunk_min[c] = std::min(chunk_min[c], row[c]);
      chunk_max[c] = std::max(chunk_max[c], row[c]);
    }
  }
  // G first: the only step that can fail (oneDNN).
  if (has_gram_) {
    const int64_t block = options_.gram_block_rows;
    int64_t done = 0;
    while (done < rows) {
      const int64_t take = std::min(block - pending_rows_, rows - done);
      std::memcpy(pending_.data() + pending_rows_ * features_,
                  x + done * features_,
                  static_cast<size_t>(take * features_) * sizeof(float));
      pending_rows_ += take;
      done += take;
      if (pending_rows_ == block) {
        absl::Status s = FlushBlock(pending_.data(), block);
        if (!s.ok()) return Error(s.code(), std::string(s.message()));
        pending_rows_ = 0;
      }
    }
  }
  std::vector<float> chunk_amax(f);
  for (size_t c = 0; c < f; ++c) {
    // min(min_[c], chunk_min[c]) keeps the first of equal values (±0): the
    // same as a row by row scan.
    if (chunk_min[c] < min_[c]) min_[c] = chunk_min[c];
    if (chunk_max[c] > max_[c]) max_[c] = chunk_max[c];
    chunk_amax[c] = std::max(std::fabs(chunk_min[c]), std::fabs(chunk_max[c]));
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * features_;
    for (size_t c = 0; c < f; ++c) {
      const double v = static_cast<double>(row[c]);
      sum_abs_[c] += std::fabs(v);
      sum_sq_[c] += v * v;
    }
  }
  AddHistograms(x, rows, chunk_amax);
  tokens_ += rows;
  return absl::OkStatus();
}

void CalibrationAccumulator::AddHistograms(
    const float* x, int64_t rows, const std::vector<float>& chunk_amax) {
  const size_t f = static_cast<size_t>(features_);
  float amax = 0.0f;
  for (float a : chunk_amax) amax = std::max(amax, a);
  const int64_t tbins = options_.tensor_histogram_bins;
  const int te = std::max(tensor_exponent_, RangeExponent(amax));
  Rebin(tensor_counts_.data(), tbins, tensor_exponent_, te);
  tensor_exponent_ = te;
  const double tfactor = BinFactor(tbins, te);
  const int64_t thalf = tbins / 2;

  const int64_t cbins = options_.channel_histogram_bins;
  std::vector<double> cfactor;
  if (cbins > 0) {
    cfactor.resize(f);
    for (size_t c = 0; c < f; ++c) {
      const int ce = std::max(channel_exponent_[c], RangeExponent(chunk_amax[c]));
      Rebin(channel_counts_.data() + c * static_cast<size_t>(cbins), cbins,
            channel_exponent_[c], ce);
      channel_exponent_[c] = ce;
      cfactor[c] = BinFactor(cbins, ce);
    }
  }
  const int64_t chalf = cbins / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * features_;
    for (size_t c = 0; c < f; ++c) {
      ++tensor_counts_[static_cast<size_t>(BinOf(row[c], tfactor, thalf))];
    }
    if (cbins > 0) {
      uint32_t* counts = channel_counts_.data();
      for (size_t c = 0; c < f; ++c) {
        const int64_t bin = BinOf(row[c], cfactor[c], chalf);
        ++counts[c * static_cast<size_t>(cbins) + static_cast<size_t>(bin)];
      }
    }
  }
}

absl::Status CalibrationAccumulator::Merge(const CalibrationAccumulator& other) {
  if (&other == this) {
    return Error(absl::StatusCode::kInvalidArgument,
                 "cannot merge an accumulator into itself");
  }
  if (other.name_ != name_) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("cannot merge the set '", other.name_, "'"));
  }
  if (other.features_ != features_) {
    return Error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("cannot merge ", other.features_,
                              " features into ", features_));
  }
  if (other.has_gram_ != has_gram_ || other.has_stats_ != has_stats_ ||
      other.importance_only_ != importance_only_ ||
      other.options_.gram_block_rows != options_.gram_block_rows ||
      other.options_.tensor_histogram_bins != options_.tensor_histogram_bins ||
      other.options_.channel_histogram_bins !=
          options_.channel_histogram_bins) {
    return Error(absl::StatusCode::kInvalidArgument,
                 "cannot merge accumulators with different options or kinds "
                 "of statistics");
  }
  if (options_.channel_histogram_bins > 0 &&
      other.tokens_ > int64_t{std::numeric_limits<uint32_t>::max()} - tokens_) {
    return Error(absl::StatusCode::kResourceExhausted,
                 "over 2^32 - 1 tokens, the limit with per-channel histograms");
  }
  if (importance_only_) {
    const double total = static_cast<double>(tokens_ + other.tokens_);
    for (size_t c = 0; c < importance_.size(); ++c) {
      importance_[c] = (importance_[c] * static_cast<double>(tokens_) +
                        other.importance_[c] * static_cast<double>(other.tokens_)) /
                       total;
    }
    tokens_ += other.tokens_;
    return absl::OkStatus();
  }
  if (has_gram_) {
    // Other's unfinished block joins ours; only full blocks are multiplied.
    std::vector<double> saved = gram_;
    const int64_t saved_pending = pending_rows_;
    const std::vector<float> saved_rows(
        pending_.begin(), pending_.begin() + pending_rows_ * features_);
    for (size_t i = 0; i < gram_.size(); ++i) gram_[i] += other.gram_[i];
    int64_t done = 0;
    const int64_t block = options_.gram_block_rows;
    while (done < other.pending_rows_) {
      const int64_t take =
          std::min(block - pending_rows_, other.pending_rows_ - done);
      std::memcpy(pending_.data() + pending_rows_ * features_,
                  other.pending_.data() + done * features_,
                  static_cast<size_t>(take * features_) * sizeof(float));
      pending_rows_ += take;
      done += take;
      if (pending_rows_ == block) {
        absl::Status s = FlushBlock(pending_.data(), block);
        if (!s.ok()) {
          gram_ = std::move(saved);
          pending_rows_ = saved_pending;
          std::copy(saved_rows.begin(), saved_rows.end(), pending_.begin());
          return Error(s.code(), std::string(s.message()));
        }
        pending_rows_ = 0;
      }
    }
  }
  if (has_stats_) {
    for (size_t c = 0; c < min_.size(); ++c) {
      if (other.min_[c] < min_[c]) min_[c] = other.min_[c];
      if (other.max_[c] > max_[c]) max_[c] = other.max_[c];
      sum_abs_[c] += other.sum_abs_[c];
      sum_sq_[c] += other.sum_sq_[c];
    }
    MergeHistogram(tensor_counts_.data(), tensor_exponent_,
                   other.tensor_counts_.data(), other.tensor_exponent_,
                   options_.tensor_histogram_bins);
    const int64_t cbins = options_.channel_histogram_bins;
    for (size_t c = 0; c < channel_exponent_.size(); ++c) {
      MergeHistogram(channel_counts_.data() + c * static_cast<size_t>(cbins),
                     channel_exponent_[c],
                     other.channel_counts_.data() + c * static_cast<size_t>(cbins),
                     other.channel_exponent_[c], cbins);
    }
  }
  tokens_ += other.tokens_;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> CalibrationAccumulator::Gram() const {
  if (!has_gram_) {
    return Error(absl::StatusCode::kFailedPrecondition, "G was not accumulated");
  }
  std::vector<double> g = gram_;
  if (pending_rows_ > 0) {
    std::vector<float> scratch(static_cast<size_t>(
        features_ * std::min(kGramPanel, features_)));
    absl::Status s = AccumulateGramBlock(pending_.data(), pending_rows_,
                                         features_, options_.gemm_threads,
                                         g.data(), scratch.data());
    if (!s.ok()) return Error(s.code(), std::string(s.message()));
  }
  // Lower triangle from the upper one, in tiles (a plain loop's column
  // reads miss the cache on every element).
  const int64_t f = features_;
  constexpr int64_t kTile = 64;
  for (int64_t r0 = 0; r0 < f; r0 += kTile) {
    for (int64_t c0 = 0; c0 <= r0; c0 += kTile) {
      for (int64_t r = r0; r < std::min(r0 + kTile, f); ++r) {
        for (int64_t c = c0; c < std::min({c0 + kTile, r, f}); ++c) {
          g[r * f + c] = g[c * f + r];
        }
      }
    }
  }
  return g;
}

absl::StatusOr<std::vector<float>> CalibrationAccumulator::Importance() const {
  if (tokens_ < 1) {
    return Error(absl::StatusCode::kFailedPrecondition, "no tokens added");
  }
  std::vector<float> out(static_cast<size_t>(features_));
  const double n = static_cast<double>(tokens_);
  if (importance_only_) {
    for (size_t c = 0; c < out.size(); ++c) {
      out[c] = static_cast<float>(importance_[c]);
    }
  } else if (has_stats_) {
    for (size_t c = 0; c < out.size(); ++c) {
      out[c] = static_cast<float>(sum_sq_[c] / n);
    }
  } else {
    absl::StatusOr<std::vector<double>> g = Gram();
    if (!g.ok()) return g.status();
    for (size_t c = 0; c < out.size(); ++c) {
      out[c] = static_cast<float>((*g)[c * out.size() + c] / n);
    }
  }
  return out;
}

absl::StatusOr<ChannelStats> CalibrationAccumulator::Stats() const {
  if (!has_stats_) {
    return Error(absl::StatusCode::kFailedPrecondition,
                 "per-channel statistics are not available");
  }
  ChannelStats stats;
  stats.min = min_;
  stats.max = max_;
  stats.mean_abs.assign(sum_abs_.size(), 0.0);
  stats.mean_sq.assign(sum_sq_.size(), 0.0);
  if (tokens_ > 0) {
    const double n = static_cast<double>(tokens_);
    for (size_t c = 0; c < sum_abs_.size(); ++c) {
      stats.mean_abs[c] = sum_abs_[c] / n;
      stats.mean_sq[c] = sum_sq_[c] / n;
    }
  }
  return stats;
}

absl::StatusOr<Histogram> CalibrationAccumulator::TensorHistogram() const {
  if (!has_stats_) {
    return Error(absl::StatusCode::kFailedPrecondition,
                 "histograms are not available");
  }
  Histogram h;
  h.bins = options_.tensor_histogram_bins;
  h.exponent = tensor_exponent_;
  h.counts = tensor_counts_;
  return h;
}

absl::StatusOr<Histogram> CalibrationAccumulator::ChannelHistogram(
    int64_t channel) const {
  if (!has_channel_histograms()) {
    return Error(absl::StatusCode::kFailedPrecondition,
                 "per-channel histograms are not available");
  }
  if (channel < 0 || channel >= features_) {
    return Error(absl::StatusCode::kOutOfRange,
                 absl::StrCat("channel ", channel, " out of range [0, ",
                              features_, ")"));
  }
  Histogram h;
  h.bins = options_.channel_histogram_bins;
  h.exponent = channel_exponent_[static_cast<size_t>(channel)];
  const uint32_t* counts =
      channel_counts_.data() + static_cast<size_t>(channel * h.bins);
  h.counts.assign(counts, counts + h.bins);
  return h;
}

size_t CalibrationAccumulator::MemoryBytes() const {
  return sizeof(*this) + name_.capacity() + Bytes(gram_) + Bytes(pending_) +
         Bytes(min_) + Bytes(max_) + Bytes(sum_abs_) + Bytes(sum_sq_) +
         Bytes(importance_) + Bytes(tensor_counts_) +
         Bytes(channel_exponent_) + Bytes(channel_counts_);
}

}  // namespace quantd
