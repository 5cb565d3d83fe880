#include "kernels/internal/linalg.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "dnnl.h"

namespace quantd {
namespace internal {
namespace {

// Columns per panel of the blocked factorizations: the diagonal blocks are
// factored in scalar code, everything else is GEMM.
constexpr int64_t kBlock = 128;

size_t Idx(int64_t i, int64_t j, int64_t ld) {
  return static_cast<size_t>(i * ld + j);
}

void ZeroStrictUpper(float* a, int64_t n, int64_t lda) {
  for (int64_t i = 0; i < n; ++i) {
    std::fill(a + Idx(i, i + 1, lda), a + Idx(i, n, lda), 0.0f);
  }
}

// Unblocked lower Cholesky of the n x n block at `a`; `offset` is the
// block's first index in the whole matrix (for the error message).
absl::Status CholeskyUnblocked(float* a, int64_t n, int64_t lda,
                               int64_t offset) {
  for (int64_t j = 0; j < n; ++j) {
    const float* row_j = a + Idx(j, 0, lda);
    double d = a[Idx(j, j, lda)];
    for (int64_t p = 0; p < j; ++p) {
      d -= static_cast<double>(row_j[p]) * row_j[p];
    }
    if (!(d > 0.0) || !std::isfinite(d)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "matrix is not positive definite: Cholesky pivot ", offset + j,
          " is ", d));
    }
    const double ljj = std::sqrt(d);
    a[Idx(j, j, lda)] = static_cast<float>(ljj);
    for (int64_t i = j + 1; i < n; ++i) {
      const float* row_i = a + Idx(i, 0, lda);
      double s = row_i[j];
      for (int64_t p = 0; p < j; ++p) {
        s -= static_cast<double>(row_i[p]) * row_j[p];
      }
      a[Idx(i, j, lda)] = static_cast<float>(s / ljj);
    }
  }
  return absl::OkStatus();
}

// Unblocked in-place inverse of the lower-triangular n x n block at `l`,
// row by row: row i of X = L^-1 needs the rows above (already inverted) and
// the original row i, whose entries are replaced left to right after their
// last use.
absl::Status InvertLowerUnblocked(float* l, int64_t n, int64_t lda,
                                  int64_t offset) {
  for (int64_t i = 0; i < n; ++i) {
    float* row_i = l + Idx(i, 0, lda);
    const double lii = row_i[i];
    if (!(std::fabs(lii) > 0.0) || !std::isfinite(lii)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "triangular matrix is singular at diagonal ", offset + i));
    }
    for (int64_t j = 0; j < i; ++j) {
      double s = 0.0;
      for (int64_t k = j; k < i; ++k) {
        s += static_cast<double>(row_i[k]) * l[Idx(k, j, lda)];
      }
      row_i[j] = static_cast<float>(-s / lii);
    }
    row_i[i] = static_cast<float>(1.0 / lii);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return absl::OkStatus();
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) c[Idx(i, j, ldc)] *= beta;
    }
    return absl::OkStatus();
  }
  const dnnl_status_t status =
      dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a,
                 lda, b, ldb, beta, c, ldc);
  if (status != dnnl_success) {
    return absl::InternalError(absl::StrCat("oneDNN sgemm ", m, "x", n, "x", k,
                                            " failed (status ",
                                            static_cast<int>(status), ")"));
  }
  return absl::OkStatus();
}

absl::Status CholeskyLower(float* a, int64_t n, int64_t lda) {
  std::vector<float> inv(static_cast<size_t>(kBlock * kBlock));
  std::vector<float> panel;
  for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
    const int64_t kb = std::min(kBlock, n - k0);
    float* akk = a + Idx(k0, k0, lda);
    QUANTD_RETURN_IF_ERROR(CholeskyUnblocked(akk, kb, lda, k0));
    const int64_t r0 = k0 + kb;
    const int64_t rest = n - r0;
    if (rest == 0) break;
    // L21 = A21 L11^-T through the small inverse of L11.
    std::fill(inv.begin(), inv.end(), 0.0f);
    for (int64_t i = 0; i < kb; ++i) {
      std::copy(akk + Idx(i, 0, lda), akk + Idx(i, i + 1, lda),
                inv.data() + Idx(i, 0, kb));
    }
    QUANTD_RETURN_IF_ERROR(InvertLowerUnblocked(inv.data(), kb, kb, k0));
    panel.resize(static_cast<size_t>(rest * kb));
    float* a21 = a + Idx(r0, k0, lda);
    QUANTD_RETURN_IF_ERROR(Sgemm(false, true, rest, kb, kb, 1.0f, a21, lda,
                                 inv.data(), kb, 0.0f, panel.data(), kb));
    for (int64_t i = 0; i < rest; ++i) {
      std::copy(panel.data() + Idx(i, 0, kb), panel.data() + Idx(i, kb, kb),
                a21 + Idx(i, 0, lda));
    }
    // A22 -= L21 L21^T, lower block triangle only (block rows i0.., columns
    // r0..i0+ib).
    for (int64_t i0 = r0; i0 < n; i0 += kBlock) {
      const int64_t ib = std::min(kBlock, n - i0);
      QUANTD_RETURN_IF_ERROR(Sgemm(false, true, ib, i0 + ib - r0, kb, -1.0f,
                                   a + Idx(i0, k0, lda), lda, a21, lda, 1.0f,
                                   a + Idx(i0, r0, lda), lda));
    }
  }
  ZeroStrictUpper(a, n, lda);
  return absl::OkStatus();
}

absl::Status InvertLowerTriangular(float* l, int64_t n, int64_t lda) {
  ZeroStrictUpper(l, n, lda);
  std::vector<float> t;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t ib = std::min(kBlock, n - i0);
    float* row_block = l + Idx(i0, 0, lda);
    if (i0 > 0) {
      // T = L[i0:i0+ib, 0:i0] X[0:i0, 0:i0] (X lower, already in place).
      t.resize(static_cast<size_t>(ib * i0));
      QUANTD_RETURN_IF_ERROR(Sgemm(false, false, ib, i0, i0, 1.0f, row_block,
                                   lda, l, lda, 0.0f, t.data(), i0));
    }
    float* lii = l + Idx(i0, i0, lda);
    QUANTD_RETURN_IF_ERROR(InvertLowerUnblocked(lii, ib, lda, i0));
    if (i0 > 0) {
      // X[i0:i0+ib, 0:i0] = -X_ii T.
      QUANTD_RETURN_IF_ERROR(Sgemm(false, false, ib, i0, ib, -1.0f, lii, lda,
                                   t.data(), i0, 0.0f, row_block, lda));
    }
  }
  return absl::OkStatus();
}

absl::Status UpperCholeskyOfInverse(float* h, int64_t n) {
  // Element (i, j) <-> (n-1-i, n-1-j) is the reversal of the n*n array.
  std::reverse(h, h + n * n);
  QUANTD_RETURN_IF_ERROR(CholeskyLower(h, n, n));
  QUANTD_RETURN_IF_ERROR(InvertLowerTriangular(h, n, n));
  std::reverse(h, h + n * n);
  return absl::OkStatus();
}

absl::Status QuadraticFormPerRow(const float* d, int64_t ldd, int64_t rows,
                                 int64_t n, const float* g, int64_t ldg,
                                 float* scratch, double* out) {
  QUANTD_RETURN_IF_ERROR(Sgemm(false, false, rows, n, n, 1.0f, d, ldd, g, ldg,
                               0.0f, scratch, n));
  for (int64_t r = 0; r < rows; ++r) {
    const float* dr = d + Idx(r, 0, ldd);
    const float* sr = scratch + Idx(r, 0, n);
    double s = 0.0;
    for (int64_t j = 0; j < n; ++j) s += static_cast<double>(dr[j]) * sr[j];
    out[r] = s;
  }
  return absl::OkStatus();
}

absl::StatusOr<double> TraceQuadraticForm(const float* d, int64_t rows,
                                          int64_t n, const float* g) {
  std::vector<float> scratch(static_cast<size_t>(rows * n));
  std::vector<double> per_row(static_cast<size_t>(rows));
  QUANTD_RETURN_IF_ERROR(QuadraticFormPerRow(d, n, rows, n, g, n,
                                             scratch.data(), per_row.data()));
  double s = 0.0;
  for (double v : per_row) s += v;
  return s;
}

}  // namespace internal
}  // namespace quantd
