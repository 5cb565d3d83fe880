// Dense linear algebra for the calibrated methods (gptq.h, awq.h,
// smoothquant.h): f32 GEMM through oneDNN, a blocked Cholesky factorization,
// a blocked lower-triangular inverse, and the upper Cholesky factor of an
// inverse (GPTQ's H^-1 = U^T U), all row-major and in place.
//
//   std::vector<float> h = ...;  // n x n, symmetric positive definite
//   QUANTD_RETURN_IF_ERROR(internal::UpperCholeskyOfInverse(h.data(), n));
//   // h now holds U (upper triangle; the strict lower triangle is zero).
//
// The blocked algorithms do their O(n^3) work in oneDNN's sgemm (which may
// use oneDNN's own threads); the diagonal blocks are factored in scalar code
// with double accumulators. Results are deterministic for a given oneDNN
// thread count.
//
// Thread-safety: reentrant; no shared mutable state.
#ifndef QUANTD_KERNELS_INTERNAL_LINALG_H_
#define QUANTD_KERNELS_INTERNAL_LINALG_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quantd {
namespace internal {

// C = alpha * op(A) * op(B) + beta * C with row-major A (m x k, or k x m if
// trans_a), B (k x n, or n x k if trans_b), C (m x n) and leading dimensions
// lda/ldb/ldc (elements per row). Does nothing when m, n or k is 0 (beyond
// scaling C by beta when k is 0). Internal if oneDNN fails; the one place
// dnnl errors of this file become a status.
absl::Status Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float beta, float* c, int64_t ldc);

// Lower Cholesky factor of the symmetric positive definite n x n matrix `a`
// (row-major, leading dimension lda), in place: on return the lower triangle
// holds L with A = L L^T and the strict upper triangle is zero. Only the
// lower triangle of the input is read. FailedPrecondition naming the pivot
// when A is not (numerically) positive definite.
absl::Status CholeskyLower(float* a, int64_t n, int64_t lda);

// Replaces the lower-triangular n x n `l` (non-zero diagonal; the strict
// upper triangle is ignored and left zero) by its inverse, in place.
absl::Status InvertLowerTriangular(float* l, int64_t n, int64_t lda);

// Replaces the symmetric positive definite n x n `h` (row-major, dense) by
// the upper-triangular U with positive diagonal such that H^-1 = U^T U (what
// torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)),
// upper=True) computes), strict lower triangle zero. Computed without
// forming H^-1: with P the reversal permutation, P H P = L' L'^T and
// U = P L'^-1 P. FailedPrecondition when H is not positive definite.
absl::Status UpperCholeskyOfInverse(float* h, int64_t n);

// out[r] = d_r G d_r^T for each of the `rows` rows d_r of the rows x n
// matrix d (leading dimension ldd) and the symmetric n x n block g (leading
// dimension ldg): one GEMM D G into `scratch` (rows * n floats), then each
// row's dot product with d_r accumulated in double.
absl::Status QuadraticFormPerRow(const float* d, int64_t ldd, int64_t rows,
                                 int64_t n, const float* g, int64_t ldg,
                                 float* scratch, double* out);

// tr(D G D^T) = sum_r d_r G d_r^T for a dense rows x n `d` and n x n `g`.
absl::StatusOr<double> TraceQuadraticForm(const float* d, int64_t rows,
                                          int64_t n, const float* g);

}  // namespace internal
}  // namespace quantd

#endif  // QUANTD_KERNELS_INTERNAL_LINALG_H_
