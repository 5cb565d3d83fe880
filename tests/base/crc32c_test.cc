#include "base/crc32c.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "base/internal/crc32c_internal.h"
#include "gtest/gtest.h"

namespace quantd {
namespace {

TEST(Crc32cTest, KnownVectors) {
  struct Case {
    std::string data;
    uint32_t crc;
  };
  const Case cases[] = {
      {"", 0x00000000u},
      {"123456789", 0xE3069283u},
      {"a", 0xC1D04330u},
      {std::string(32, '\0'), 0x8A9136AAu},  // RFC 3720 B.4
      {std::string(32, '\xff'), 0x62A8AB43u},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.data.size());
    EXPECT_EQ(Crc32c(c.data.data(), c.data.size()), c.crc);
    EXPECT_EQ(Crc32cReference(0, c.data.data(), c.data.size()), c.crc);
    EXPECT_EQ(internal::Crc32cTable(0, c.data.data(), c.data.size()), c.crc);
  }
  // RFC 3720 B.4: bytes 0..31 ascending.
  std::vector<uint8_t> ascending(32);
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(ascending.data(), 32), 0x46DD794Eu);
}

TEST(Crc32cTest, FastMatchesReferenceAtAnyLengthAndAlignment) {
  const uint32_t seed = 4242;
  std::mt19937 rng(seed);
  std::vector<uint8_t> buf(5000);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (int trial = 0; trial < 500; ++trial) {
    const size_t offset = rng() % 16;
    const size_t len = rng() % (buf.size() - 16);
    SCOPED_TRACE(testing::Message() << "seed " << seed << " trial " << trial
                                    << " offset " << offset << " len " << len);
    const uint32_t want = Crc32cReference(0, buf.data() + offset, len);
    ASSERT_EQ(Crc32c(buf.data() + offset, len), want);
    ASSERT_EQ(internal::Crc32cTable(0, buf.data() + offset, len), want);
    // Extend == CRC of the concatenation.
    const size_t split = len == 0 ? 0 : rng() % len;
    const uint32_t head = Crc32c(buf.data() + offset, split);
    ASSERT_EQ(Crc32cExtend(head, buf.data() + offset + split, len - split),
              want);
  }
}

}  // namespace
}  // namespace quantd

namespace quantd {
namespace {

TEST(Crc32cCombineTest, EqualsTheChecksumOfTheConcatenation) {
  std::mt19937 rng(20261123);
  std::vector<uint8_t> data(1 << 16);
  for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
  for (size_t split : {size_t{0}, size_t{1}, size_t{7}, size_t{4096}, size_t{65535},
                       data.size()}) {
    SCOPED_TRACE(split);
    const uint32_t a = Crc32c(data.data(), split);
    const uint32_t b = Crc32c(data.data() + split, data.size() - split);
    EXPECT_EQ(Crc32cCombine(a, b, data.size() - split),
              Crc32c(data.data(), data.size()));
  }
  // Folding many chunks, as a stream does.
  uint32_t running = 0;
  size_t offset = 0;
  for (size_t len : {1000u, 1u, 0u, 33000u, 31535u}) {
    running = Crc32cCombine(running, Crc32c(data.data() + offset, len), len);
    offset += len;
  }
  ASSERT_EQ(offset, data.size());
  EXPECT_EQ(running, Crc32c(data.data(), data.size()));
}

}  // namespace
}  // namespace quantd

namespace quantd {
namespace {

// Buffers of 3 KiB and more go through the three-stripe path; its joins and
// the serial tail must give the reference's checksum at every length around
// the stripe boundaries and at any start value.
TEST(Crc32cTest, LargeBuffersMatchTheReference) {
  const uint32_t seed = 20261124;
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::vector<uint8_t> buf((1 << 20) + 64);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  std::vector<size_t> lengths = {3071, 3072, 3073, 3079, 3095, 3096, 4096,
                                 65536, 65537, size_t{1} << 20};
  for (int i = 0; i < 40; ++i) lengths.push_back(3000 + rng() % 200000);
  for (size_t len : lengths) {
    const size_t offset = rng() % 16;
    const uint32_t start = static_cast<uint32_t>(rng());
    SCOPED_TRACE(testing::Message() << "len " << len << " offset " << offset
                                    << " start " << start);
    EXPECT_EQ(Crc32cExtend(start, buf.data() + offset, len),
              Crc32cReference(start, buf.data() + offset, len));
  }
}

TEST(Crc32cCombineTest, HugeLengthsAgreeWithRepeatedCombining) {
  // Shifting over 2^k + 2^j zero bytes at once equals doing it in two steps.
  const uint32_t a = 0x12345678u;
  const uint32_t zero4k = Crc32c(std::vector<uint8_t>(4096).data(), 4096);
  uint32_t stepwise = a;
  for (int i = 0; i < 3; ++i) stepwise = Crc32cCombine(stepwise, zero4k, 4096);
  EXPECT_EQ(Crc32cCombine(a, Crc32c(std::vector<uint8_t>(3 * 4096).data(),
                                    3 * 4096),
                          3 * 4096),
            stepwise);
  const uint64_t big = (uint64_t{1} << 40) + 12345;
  EXPECT_EQ(Crc32cCombine(Crc32cCombine(a, 0, big), 0, big),
            Crc32cCombine(a, 0, 2 * big));
}

}  // namespace
}  // namespace quantd
