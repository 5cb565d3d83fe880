#include "kernels/onednn_int8.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/layout.h"
#include "kernels/quantize.h"
#include "kernels/scheme.h"

namespace quantd {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(OneDnnInt8Test, BitExactWithReference) {
  const uint32_t seed = 31337;
  const std::vector<std::vector<int64_t>> shapes = {
      {1}, {7}, {1, 1}, {3, 5}, {7, 33}, {16, 127}, {64, 4096}, {2, 3, 64}};
  int trial = 0;
  for (const auto& shape : shapes) {
    for (int repeat = 0; repeat < 2; ++repeat) {  // second run hits the cache
      SCOPED_TRACE(testing::Message() << "shape rank " << shape.size()
                                      << " last " << shape.back() << " seed "
                                      << seed + trial);
      auto layout = MakeLayout(*ParseScheme("int8"), shape);
      ASSERT_TRUE(layout.ok());
      std::vector<float> x = Random(static_cast<size_t>(layout->num_elements),
                                    seed + static_cast<uint32_t>(trial++));
      // Exact ties after scaling: amax 127 makes scale 1, so k + 0.5 ties.
      x[0] = 127.0f;
      if (x.size() > 2) {
        x[1] = 2.5f;
        x[2] = -3.5f;
      }
      QuantizedTensor want = AllocateQuantized(*layout);
      QuantizedTensor got = AllocateQuantized(*layout);
      ASSERT_TRUE(QuantizeReference(x.data(), want).ok());
      absl::Status s = QuantizeInt8PerChannelOneDnn(x.data(), got);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_EQ(want.scales, got.scales);
      size_t mismatches = 0;
      size_t first = 0;
      for (size_t i = 0; i < want.codes.size(); ++i) {
        if (want.codes[i] != got.codes[i] && mismatches++ == 0) first = i;
      }
      EXPECT_EQ(mismatches, 0u)
          << "first at " << first << ": x=" << x[first] << " ref="
          << static_cast<int>(static_cast<int8_t>(want.codes[first]))
          << " onednn="
          << static_cast<int>(static_cast<int8_t>(got.codes[first]));
    }
  }
}

TEST(OneDnnInt8Test, RejectsWrongLayoutAndNonFinite) {
  auto layout = MakeLayout(*ParseScheme("int4"), {2, 8});
  QuantizedTensor q = AllocateQuantized(*layout);
  std::vector<float> x(16, 1.0f);
  EXPECT_EQ(QuantizeInt8PerChannelOneDnn(x.data(), q).code(),
            absl::StatusCode::kInvalidArgument);
  layout = MakeLayout(*ParseScheme("int8"), {2, 8});
  q = AllocateQuantized(*layout);
  x[11] = std::numeric_limits<float>::infinity();
  absl::Status s = QuantizeInt8PerChannelOneDnn(x.data(), q);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "element 11 is +Inf");
}

}  // namespace
}  // namespace quantd
