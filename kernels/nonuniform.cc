// Codebook formats: k-means and power-of-two quantizers, and the shared
// table-lookup dequantizer. The rules are stated in nonuniform.h; the code
// below follows them line by line. Vector inner loops live in
// nonuniform_avx2.cc / nonuniform_avx512.cc.
#include "kernels/nonuniform.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu.h"
#include "kernels/internal/isa_kernels.h"
#include "kernels/internal/nonuniform_kernels.h"
#include "kernels/quantize.h"

namespace quantd {
namespace {

// splitmix64, as documented in nonuniform.h.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t Next() {
    state_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// Elements per table for the options, or InvalidArgument.
absl::StatusOr<int64_t> GroupSizeOf(int64_t rows, int64_t row_length,
                                    const CodebookOptions& options,
                                    int min_bits) {
  if (rows < 1 || row_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows (", rows, ") and row_length (", row_length,
                     ") must be >= 1"));
  }
  if (options.bits < min_bits || options.bits > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bits must be in ", min_bits, "..8, got ", options.bits));
  }
  switch (options.granularity) {
    case Granularity::kPerTensor:
      if (rows > INT64_MAX / row_length) {
        return absl::InvalidArgumentError("element count overflows int64");
      }
      return rows * row_length;
    case Granularity::kPerChannel:
      return row_length;
    case Granularity::kPerGroup:
      if (options.group_size < 1 || row_length % options.group_size != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "group_size ", options.group_size,
            " must be >= 1 and divide the row length ", row_length));
      }
      return options.group_size;
  }
  return absl::InvalidArgumentError("unknown granularity");
}

absl::Status CheckFinite(const float* src, int64_t n) {
  const int64_t bad = internal::FirstNonFinite(src, n);
  if (bad >= 0) return internal::NonFiniteError(bad, src[bad]);
  return absl::OkStatus();
}

CodebookTensor MakeTensor(int64_t rows, int64_t row_length, int bits,
                          int64_t group_size) {
  CodebookTensor t;
  t.rows = rows;
  t.row_length = row_length;
  t.bits = bits;
  t.group_size = group_size;
  t.num_groups = rows * row_length / group_size;
  t.codes.assign(
      static_cast<size_t>((t.num_elements() * bits + 7) / 8), 0);
  t.codebooks.assign(static_cast<size_t>(t.num_groups << bits), 0.0f);
  return t;
}

void Midpoints(const float* centroids, int k, float* midpoints) {
  for (int j = 0; j + 1 < k; ++j) {
    midpoints[j] = centroids[j] * 0.5f + centroids[j + 1] * 0.5f;
  }
  for (int j = std::max(k - 1, 0); j < internal::kMaxMidpoints; ++j) {
    midpoints[j] = INFINITY;
  }
}

double Square(double v) { return v * v; }

// Scratch reused across groups.
struct KMeansScratch {
  std::vector<double> distance;  // n
  std::vector<uint8_t> previous;  // n
  std::vector<double> sums;       // k
  std::vector<int64_t> counts;    // k
  std::vector<float> next;        // k
};

// k-means++ seeding (nonuniform.h), sorted ascending into c[0, k).
void SeedKMeans(const float* x, int64_t n, int k, SplitMix64& rng,
                KMeansScratch& s, float* c) {
  std::vector<double>& d = s.distance;
  c[0] = x[rng.Next() % static_cast<uint64_t>(n)];
  for (int64_t i = 0; i < n; ++i) d[i] = Square(double{x[i]} - c[0]);
  float largest = c[0];
  for (int j = 1; j < k; ++j) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += d[i];
    if (total == 0) {
      for (int r = j; r < k; ++r) c[r] = largest;
      break;
    }
    const double target = rng.Uniform() * total;
    double running = 0;
    int64_t pick = -1;
    for (int64_t i = 0; i < n; ++i) {
      running += d[i];
      if (running > target) {
        pick = i;
        break;
      }
    }
    if (pick < 0) {
      for (int64_t i = n - 1; i >= 0; --i) {
        if (d[i] > 0) {
          pick = i;
          break;
        }
      }
    }
    c[j] = x[pick];
    largest = std::max(largest, c[j]);
    for (int64_t i = 0; i < n; ++i) {
      d[i] = std::min(d[i], Square(double{x[i]} - c[j]));
    }
  }
  std::sort(c, c + k);
}

// One Lloyd update of c[0, k) from `codes` (nonuniform.h), sorted after.
void UpdateKMeans(const float* x, int64_t n, int k, const uint8_t* codes,
                  KMeansScratch& s, float* c) {
  std::fill(s.sums.begin(), s.sums.end(), 0.0);
  std::fill(s.counts.begin(), s.counts.end(), 0);
  for (int64_t i = 0; i < n; ++i) {
    s.sums[codes[i]] += x[i];
    ++s.counts[codes[i]];
  }
  bool any_empty = false;
  for (int j = 0; j < k; ++j) {
    if (s.counts[j] > 0) {
      c[j] = static_cast<float>(s.sums[j] / static_cast<double>(s.counts[j]));
    } else {
      any_empty = true;
    }
  }
  if (any_empty) {
    std::vector<double>& d = s.distance;
    for (int64_t i = 0; i < n; ++i) d[i] = Square(double{x[i]} - c[codes[i]]);
    for (int j = 0; j < k; ++j) {
      if (s.counts[j] > 0) continue;
      int64_t far = 0;
      for (int64_t i = 1; i < n; ++i) {
        if (d[i] > d[far]) far = i;
      }
      if (d[far] > 0) {
        c[j] = x[far];
        d[far] = 0;
      }
    }
  }
  std::sort(c, c + k);
}

void KMeansGroup(const float* x, int64_t n, int bits, int max_iterations,
                 SplitMix64 rng, internal::AssignCodesFn assign,
                 KMeansScratch& s, float* c, uint8_t* codes) {
  const int k = 1 << bits;
  SeedKMeans(x, n, k, rng, s, c);
  float midpoints[internal::kMaxMidpoints];
  for (int iteration = 0;; ++iteration) {
    Midpoints(c, k, midpoints);
    assign(x, n, midpoints, bits, codes);
    if (iteration > 0 &&
        std::memcmp(codes, s.previous.data(), static_cast<size_t>(n)) == 0) {
      break;
    }
    if (iteration == max_iterations) break;
    UpdateKMeans(x, n, k, codes, s, c);
    std::memcpy(s.previous.data(), codes, static_cast<size_t>(n));
  }
}

// The power-of-two code of x (nonuniform.h).
uint8_t PowerOfTwoCode(float x, float scale, int bits) {
  const int levels = (1 << (bits - 1)) - 1;  // K
  const double t = std::fabs(double{x});
  const double s = scale;
  if (t == 0 || s == 0) return 0;
  // j: the largest level index in [0, K] with v_j >= t, v_j = s * 2^-j for
  // j < K and v_K = 0. t <= s, so ilogb(s) >= ilogb(t) and v_{k0} >= t.
  int j = std::max(0, std::ilogb(s) - std::ilogb(t) - 1);
  j = std::min(j, levels - 1);
  while (j + 1 < levels && std::ldexp(s, -(j + 1)) >= t) ++j;
  const double upper = std::ldexp(s, -j);
  const double lower = j + 1 < levels ? std::ldexp(s, -(j + 1)) : 0.0;
  const double mid = (upper + lower) * 0.5;  // exact
  int m;
  if (t > mid) {
    m = j + 1;
  } else {
    m = j + 1 < levels ? j + 2 : 0;
  }
  if (m == 0) return 0;
  const int sign = x < 0 ? 1 : 0;
  return static_cast<uint8_t>((sign << (bits - 1)) | m);
}

absl::Status CheckTensor(const CodebookTensor& t) {
  if (t.bits < 1 || t.bits > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("bits must be in 1..8, got ", t.bits));
  }
  if (t.rows < 1 || t.row_length < 1 || t.group_size < 1 ||
      t.rows > INT64_MAX / t.row_length ||
      t.num_elements() % t.group_size != 0 ||
      t.num_groups != t.num_elements() / t.group_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inconsistent sizes: rows ", t.rows, ", row_length ", t.row_length,
        ", group_size ", t.group_size, ", num_groups ", t.num_groups));
  }
  const int64_t code_bytes = (t.num_elements() * t.bits + 7) / 8;
  if (static_cast<int64_t>(t.codes.size()) != code_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "codes hold ", t.codes.size(), " bytes, expected ", code_bytes));
  }
  if (static_cast<int64_t>(t.codebooks.size()) != (t.num_groups << t.bits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("codebooks hold ", t.codebooks.size(),
                     " floats, expected ", t.num_groups << t.bits));
  }
  return absl::OkStatus();
}

// UnpackCodes with BMI2 pdep where the CPU has it (widths 2..7; the
// foundation's int formats start at 2 bits).
void UnpackSelected(const uint8_t* src, int64_t n, int bits, uint8_t* codes) {
  static const bool bmi2 = DetectedIsa() != Isa::kScalar;
  int64_t done = 0;
  if (bmi2 && bits >= 2 && bits <= 7) {
    done = n / 8 * 8;
    if (done > 0) internal::UnpackCodesBmi2(src, done, bits, codes);
  }
  UnpackCodes(src + done / 8 * bits, n - done, bits, codes + done);
}

}  // namespace

double CodebookTensor::BitsPerWeight() const {
  const int64_t n = num_elements();
  if (n == 0) return 0;
  const double side = !scales.empty()
                          ? 32.0 * static_cast<double>(scales.size())
                          : 32.0 * static_cast<double>(codebooks.size());
  return bits + side / static_cast<double>(n);
}

namespace internal {

absl::StatusOr<CodebookTensor> KMeansQuantizeWith(
    const float* src, int64_t rows, int64_t row_length,
    const CodebookOptions& options, AssignCodesFn assign) {
  QUANTD_ASSIGN_OR_RETURN(const int64_t group_size,
                          GroupSizeOf(rows, row_length, options, 1));
  if (options.max_iterations < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_iterations must be >= 0, got ", options.max_iterations));
  }
  QUANTD_RETURN_IF_ERROR(CheckFinite(src, rows * row_length));
  CodebookTensor t = MakeTensor(rows, row_length, options.bits, group_size);
  const int k = 1 << options.bits;
  KMeansScratch scratch;
  scratch.distance.resize(static_cast<size_t>(group_size));
  scratch.previous.resize(static_cast<size_t>(group_size));
  scratch.sums.resize(static_cast<size_t>(k));
  scratch.counts.resize(static_cast<size_t>(k));
  std::vector<uint8_t> codes(static_cast<size_t>(t.num_elements()));
  for (int64_t g = 0; g < t.num_groups; ++g) {
    const SplitMix64 rng(options.seed ^
                         (static_cast<uint64_t>(g) * 0xD1B54A32D192ED03ull));
    KMeansGroup(src + g * group_size, group_size, options.bits,
                options.max_iterations, rng, assign, scratch,
                t.codebooks.data() + (g << options.bits),
                codes.data() + g * group_size);
  }
  PackCodes(codes.data(), t.num_elements(), t.bits, t.codes.data());
  return t;
}

absl::Status CodebookDequantizeWith(const CodebookTensor& src, LookupFn lookup,
                                    float* dst) {
  QUANTD_RETURN_IF_ERROR(CheckTensor(src));
  constexpr int64_t kChunk = 4096;  // a multiple of 8: chunks start on bytes
  uint8_t fields[kChunk];
  const int64_t n = src.num_elements();
  const int64_t group_size = src.group_size;
  for (int64_t e0 = 0; e0 < n; e0 += kChunk) {
    const int64_t m = std::min(kChunk, n - e0);
    if (lookup == &LookupScalar) {
      UnpackCodes(src.codes.data() + e0 / 8 * src.bits, m, src.bits, fields);
    } else {
      UnpackSelected(src.codes.data() + e0 / 8 * src.bits, m, src.bits,
                     fields);
    }
    for (int64_t i = 0; i < m;) {
      const int64_t g = (e0 + i) / group_size;
      const int64_t end = std::min(m, (g + 1) * group_size - e0);
      lookup(fields + i, end - i, src.codebooks.data() + (g << src.bits),
             src.bits, dst + e0 + i);
      i = end;
    }
  }
  return absl::OkStatus();
}

void AssignCodesReference(const float* x, int64_t n, const float* midpoints,
                          int bits, uint8_t* codes) {
  const int k = 1 << bits;
  for (int64_t i = 0; i < n; ++i) {
    int count = 0;
    for (int j = 0; j + 1 < k; ++j) count += midpoints[j] < x[i] ? 1 : 0;
    codes[i] = static_cast<uint8_t>(count);
  }
}

void AssignCodesScalar(const float* x, int64_t n, const float* midpoints,
                       int bits, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) {
    int index = 0;
    for (int step = 1 << (bits - 1); step > 0; step >>= 1) {
      if (midpoints[index + step - 1] < x[i]) index += step;
    }
    codes[i] = static_cast<uint8_t>(index);
  }
}

AssignCodesFn SelectedAssignCodes() {
  static const AssignCodesFn fn = [] {
    switch (DetectedIsa()) {
      case Isa::kAvx512:
        return &AssignCodesAvx512;
      case Isa::kAvx2:
        return &AssignCodesAvx2;
      case Isa::kScalar:
        break;
    }
    return &AssignCodesScalar;
  }();
  return fn;
}

void LookupScalar(const uint8_t* codes, int64_t n, const float* table,
                  int /*bits*/, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = table[codes[i]];
}

LookupFn SelectedLookup() {
  static const LookupFn fn = [] {
    switch (DetectedIsa()) {
      case Isa::kAvx512:
        return &LookupAvx512;
      case Isa::kAvx2:
        return &LookupAvx2;
      case Isa::kScalar:
        break;
    }
    return &LookupScalar;
  }();
  return fn;
}

}  // namespace internal

absl::StatusOr<CodebookTensor> KMeansQuantize(const float* src, int64_t rows,
                                              int64_t row_length,
                                              const CodebookOptions& options) {
  return internal::KMeansQuantizeWith(src, rows, row_length, options,
                                      internal::SelectedAssignCodes());
}

absl::StatusOr<CodebookTensor> KMeansQuantizeReference(
    const float* src, int64_t rows, int64_t row_length,
    const CodebookOptions& options) {
  return internal::KMeansQuantizeWith(src, rows, row_length, options,
                                      &internal::AssignCodesReference);
}

void PowerOfTwoCodebook(float scale, int bits, float* table) {
  const int half = 1 << (bits - 1);
  for (int m = 0; m < half; ++m) {
    const float level = m == 0 ? 0.0f : std::ldexp(scale, -(m - 1));
    table[m] = level;
    table[half | m] = m == 0 ? 0.0f : -level;
  }
}

absl::StatusOr<CodebookTensor> PowerOfTwoQuantize(
    const float* src, int64_t rows, int64_t row_length,
    const CodebookOptions& options) {
  QUANTD_ASSIGN_OR_RETURN(const int64_t group_size,
                          GroupSizeOf(rows, row_length, options, 2));
  QUANTD_RETURN_IF_ERROR(CheckFinite(src, rows * row_length));
  const int bits = options.bits;
  CodebookTensor t = MakeTensor(rows, row_length, bits, group_size);
  t.scales.resize(static_cast<size_t>(t.num_groups));
  std::vector<uint8_t> codes(static_cast<size_t>(t.num_elements()));
  for (int64_t g = 0; g < t.num_groups; ++g) {
    const float* x = src + g * group_size;
    float scale = 0.0f;
    for (int64_t i = 0; i < group_size; ++i) {
      scale = std::max(scale, std::fabs(x[i]));
    }
    t.scales[g] = scale;
    PowerOfTwoCodebook(scale, bits, t.codebooks.data() + (g << bits));
    uint8_t* q = codes.data() + g * group_size;
    for (int64_t i = 0; i < group_size; ++i) {
      q[i] = PowerOfTwoCode(x[i], scale, bits);
    }
  }
  PackCodes(codes.data(), t.num_elements(), bits, t.codes.data());
  return t;
}

absl::Status CodebookDequantize(const CodebookTensor& src, float* dst) {
  return internal::CodebookDequantizeWith(src, internal::SelectedLookup(), dst);
}

absl::Status CodebookDequantizeReference(const CodebookTensor& src,
                                         float* dst) {
  return internal::CodebookDequantizeWith(src, &internal::LookupScalar, dst);
}

int64_t CodebookWorkingSetBytes(const Layout& layout) {
  const int64_t n = layout.num_elements;
  return layout.packed_bytes + 4 * layout.num_groups + n +
         4 * layout.num_codebooks * layout.codebook_entries;
}

}  // namespace quantd
