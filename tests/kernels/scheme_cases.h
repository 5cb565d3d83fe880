// Test inputs shared by the quantize and dequantize tests.
#ifndef QUANTD_TESTS_KERNELS_SCHEME_CASES_H_
#define QUANTD_TESTS_KERNELS_SCHEME_CASES_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/scheme.h"

namespace quantd::testing {

// Every granularity of int<bits> (sym or asym) that fits a row of
// `row_length`: per tensor, per channel, and groups of 1, 3, 8, 32, 128
// where they divide the row.
inline std::vector<Scheme> SchemesFor(int bits, bool symmetric,
                                      int64_t row_length) {
  std::vector<Scheme> out;
  Scheme s;
  s.format = absl::StrCat("int", bits);
  s.symmetric = symmetric;
  s.granularity = Granularity::kPerTensor;
  out.push_back(s);
  s.granularity = Granularity::kPerChannel;
  out.push_back(s);
  for (int64_t g : {1, 3, 8, 32, 128}) {
    if (row_length % g != 0) continue;
    s.granularity = Granularity::kPerGroup;
    s.group_size = g;
    out.push_back(s);
  }
  return out;
}

// Gaussian values with `spread`, seeded, with exact zeros and values on a
// quarter grid sprinkled in (exact ties after scaling are likelier there).
inline std::vector<float> RandomValues(size_t n, uint32_t seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) {
    x = normal(rng);
    const float u = uniform(rng);
    if (u < 0.05f) {
      x = 0.0f;
    } else if (u < 0.1f) {
      x = std::round(x * 4.0f) / 4.0f;
    }
  }
  return v;
}

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_KERNELS_SCHEME_CASES_H_
