// The two halves of GPTQ that do not depend on the target grid, shared by
// gptq.cc (int<b> layouts) and gptq_ggml.cc (ggml block formats): the
// inverse-Hessian factor (H = 2 G / n, dead columns, act_order permutation,
// damping, upper Cholesky factor of H^-1) and the column loop with lazy
// batches, which calls back for each element's rounding.
//
//   QUANTD_ASSIGN_OR_RETURN(internal::GptqHessian hess,
//       internal::GptqInverseHessianFactor(gram, 0.01, /*act_order=*/true));
//   // work: W with dead columns zeroed, columns in hess.perm order.
//   double loss = 0.0;
//   QUANTD_RETURN_IF_ERROR(internal::GptqColumnLoop(
//       work.data(), rows, cols, hess.hinv.data(), 128,
//       [](int64_t i1, int64_t i2) { return i2; },
//       [&](int64_t r, int64_t i, float* row) { return Round(r, i, row[i]); },
//       &loss));
//
// Thread-safety: reentrant.
#ifndef QUANTD_KERNELS_INTERNAL_LINALG_GPTQ_H_
#define QUANTD_KERNELS_INTERNAL_LINALG_GPTQ_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/gptq.h"
#include "kernels/internal/linalg.h"

namespace quantd {
namespace internal {

struct GptqHessian {
  // The upper Cholesky factor U of the damped H^-1 = U^T U (cols x cols,
  // row-major, strict lower triangle zero), in quantization order.
  std::vector<float> hinv;
  // Quantization order: perm[j] = the original column quantized j-th
  // (the identity without act_order).
  std::vector<int32_t> perm;
  // Per original column: 1 when diag(G) == 0 (the caller zeroes its weight).
  std::vector<uint8_t> dead;
  int64_t dead_columns = 0;
};

// The checks both GPTQ entry points make on their inputs: `w` (rows x cols)
// finite, `gram` valid for cols features (ValidateGram), damp_percent finite
// and >= 0, block_size >= 1, cols within int32. InvalidArgument naming the
// problem.
absl::Status CheckGptqInputs(const float* w, int64_t rows, int64_t cols,
                             const GramView& gram, double damp_percent,
                             int64_t block_size);

// The reference's preparation (GPTQ.fasterquant): H = 2 G / tokens in f32;
// dead columns (diag(G) == 0) get H diagonal 1; with act_order the columns
// are ordered by descending diag(H) (stable for ties) and H is permuted;
// damp_percent * mean(diag(H)) is added to the diagonal; then the upper
// Cholesky factor of H^-1. REQUIRES: ValidateGram(gram, ...) passed,
// damp_percent finite and >= 0. FailedPrecondition when the damped H is not
// positive definite; Internal when oneDNN fails.
absl::StatusOr<GptqHessian> GptqInverseHessianFactor(const GramView& gram,
                                                     double damp_percent,
                                                     bool act_order);

// GPTQ's column loop over `work` (rows x cols, row-major, columns already in
// quantization order) with `hinv` from GptqInverseHessianFactor. For each
// column i in order and each row r, `round(r, i, row)` (row = work + r *
// cols, whose entries i.. carry every earlier column's update) returns the
// quantized value q of row[i]; then err = (row[i] - q) / hinv[i][i], the
// later columns of the lazy batch get row[j] -= err * hinv[i][j] at once and
// those after the batch by one GEMM per batch. `cut(i1, i2)` may shorten the
// batch [i1, i2) (returns an end in (i1, i2]). Adds the reference's loss,
// sum err^2 / 2, to *loss. Internal when oneDNN fails.
template <typename CutFn, typename RoundFn>
absl::Status GptqColumnLoop(float* work, int64_t rows, int64_t cols,
                            const float* hinv, int64_t block_size, CutFn cut,
                            RoundFn round, double* loss) {
  std::vector<float> err;
  double sum = 0.0;
  for (int64_t i1 = 0; i1 < cols;) {
    const int64_t i2 = cut(i1, std::min(i1 + block_size, cols));
    const int64_t width = i2 - i1;
    err.assign(static_cast<size_t>(rows * width), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = work + r * cols;
      float* err_row = err.data() + r * width;
      for (int64_t i = i1; i < i2; ++i) {
        const float x = row[i];
        const float q = round(r, i, row);
        const float d = hinv[i * cols + i];
        const float e = (x - q) / d;
        sum += 0.5 * static_cast<double>(e) * e;
        err_row[i - i1] = e;
        const float* hrow = hinv + i * cols;
        for (int64_t j = i + 1; j < i2; ++j) row[j] -= e * hrow[j];
      }
    }
    // Lazy batch update of the later columns: W[:, i2:] -= E Hinv[i1:i2, i2:].
    absl::Status status =
        Sgemm(false, false, rows, cols - i2, width, -1.0f, err.data(), width,
              hinv + i1 * cols + i2, cols, 1.0f, work + i2, cols);
    if (!status.ok()) return status;
    i1 = i2;
  }
  *loss += sum;
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace quantd

#endif  // QUANTD_KERNELS_INTERNAL_LINALG_GPTQ_H_
