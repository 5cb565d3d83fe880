#include "kernels/calibration.h"

#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "dnnl.h"
#include "kernels/convert.h"
#include "kernels/internal/isa_kernels.h"

namespace quantd {
namespace {

constexpr int kMinExponent = -149;  // 2^-149: the smallest positive float
// Column panel of one G block: panel j computes G[0:j+P, j:j+P] only (the
// upper triangle and the diagonal block), so a block costs about half of the
// full GEMM.
constexpr int64_t kGramPanel = 512;
// Output rows per GEMM in ComputeOutputError (bounds its scratch).
constexpr int64_t kOutputPanel = 256;
constexpr int kLevelsKl = 128;

bool IsPowerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

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

// Row-major C[M x N] = op(A) op(B) with beta = 0. The one place a oneDNN
// status becomes an absl::Status in this file.
absl::Status Sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k,
                   const float* a, int64_t lda, const float* b, int64_t ldb,
                   float* c, int64_t ldc) {
  const dnnl_status_t s = dnnl_sgemm(transa, transb, m, n, k, 1.0f, a, lda, b,
                                     ldb, 0.0f, c, ldc);
  if (s != dnnl_success) {
    return absl::InternalError(absl::StrCat("oneDNN sgemm ", m, "x", n, "x", k,
                                            " failed (status ",
                                            static_cast<int>(s), ")"));
  }
  return absl::OkStatus();
}

// Adds the upper triangle (and diagonal panels) of XᵀX of `rows` rows of
// `features` floats into `gram` (f64, features²). `scratch` holds
// features x kGramPanel floats.
absl::Status AccumulateGramBlock(const float* x, int64_t rows,
                                 int64_t features, int threads, double* gram,
                                 float* scratch) {
  ScopedOmpThreads omp_threads(threads);
  for (int64_t j = 0; j < features; j += kGramPanel) {
    const int64_t width = std::min(kGramPanel, features - j);
    const int64_t height = j + width;
    absl::Status s = Sgemm('T', 'N', height, width, rows, x, features, x + j,
                           features, scratch, width);
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
  if (!IsPowerOfTwo(options.tensor_histogram_bins) ||
      options.tensor_histogram_bins < 16 ||
      options.tensor_histogram_bins > (1 << 20)) {
    return acc.Error(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("tensor_histogram_bins ", options.tensor_histogram_bins,
                     " is not a power of two in [16, 2^20]"));
  }
  if (options.channel_histogram_bins != 0 &&
      (!IsPowerOfTwo(options.channel_histogram_bins) ||
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

// ---------------------------------------------------------------------------
// Range estimators

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
  if (!IsPowerOfTwo(histogram.bins) || histogram.bins < 16 ||
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

// ---------------------------------------------------------------------------
// Output-space error

absl::StatusOr<OutputError> ComputeOutputError(
    const float* w, const float* w_hat, int64_t out_features,
    int64_t in_features, absl::Span<const double> gram, int gemm_threads) {
  if (out_features < 1 || in_features < 1 ||
      in_features > (int64_t{1} << 24) ||
      gram.size() != static_cast<size_t>(in_features * in_features)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output error needs W of ", out_features, "x", in_features,
        " (both >= 1) and G of in_features² values, got ", gram.size()));
  }
  const int64_t n = out_features * in_features;
  if (const int64_t bad = internal::FirstNonFinite(w, n); bad >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("W element ", bad, " is not finite"));
  }
  if (const int64_t bad = internal::FirstNonFinite(w_hat, n); bad >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantized W element ", bad, " is not finite"));
  }
  const size_t in = static_cast<size_t>(in_features);
  std::vector<float> g(gram.size());
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(gram[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("G element ", i, " is not finite"));
    }
    g[i] = static_cast<float>(gram[i]);
  }
  const int64_t panel = std::min(kOutputPanel, out_features);
  std::vector<float> d(static_cast<size_t>(panel) * in);
  std::vector<float> y(d.size());
  OutputError e;
  ScopedOmpThreads omp_threads(gemm_threads);
  // Σ_r max(0, a_r G a_rᵀ) over the rows a_r of `a`.
  auto quadratic = [&](const float* a, int64_t rows) -> absl::StatusOr<double> {
    absl::Status s = Sgemm('N', 'N', rows, in_features, in_features, a,
                           in_features, g.data(), in_features, y.data(),
                           in_features);
    if (!s.ok()) return s;
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* ar = a + r * in_features;
      const float* yr = y.data() + r * in_features;
      double dot = 0;
      for (size_t c = 0; c < in; ++c) {
        dot += static_cast<double>(ar[c]) * static_cast<double>(yr[c]);
      }
      total += std::max(dot, 0.0);
    }
    return total;
  };
  for (int64_t r0 = 0; r0 < out_features; r0 += panel) {
    const int64_t rows = std::min(panel, out_features - r0);
    const size_t offset = static_cast<size_t>(r0) * in;
    const size_t count = static_cast<size_t>(rows) * in;
    for (size_t i = 0; i < count; ++i) {
      d[i] = w[offset + i] - w_hat[offset + i];
    }
    absl::StatusOr<double> err = quadratic(d.data(), rows);
    if (!err.ok()) return err.status();
    absl::StatusOr<double> sig = quadratic(w + offset, rows);
    if (!sig.ok()) return sig.status();
    e.error_sq += *err;
    e.signal_sq += *sig;
  }
  if (e.error_sq == 0.0) {
    e.relative_error = 0.0;
    e.sqnr_db = std::numeric_limits<double>::infinity();
  } else {
    e.relative_error = e.signal_sq > 0.0
                           ? std::sqrt(e.error_sq / e.signal_sq)
                           : std::numeric_limits<double>::infinity();
    e.sqnr_db = 10.0 * std::log10(e.signal_sq / e.error_sq);
  }
  return e;
}

int64_t CalibrationWorkingSetBytes(const Layout& layout) {
  // ComputeOutputError: G in f32, two panels of up to 256 rows; the
  // range estimator's copies of the per-channel stats.
  const int64_t in = layout.row_length;
  return 4 * in * in + 2 * 4 * std::min<int64_t>(256, layout.rows) * in +
         32 * in;
}

}  // namespace quantd
