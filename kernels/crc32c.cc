#include "kernels/crc32c.h"

#include "kernels/internal/crc32c_internal.h"

#include <array>
#include <cstdint>
#include <cstring>

#include <nmmintrin.h>

namespace quantd {
namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // reflected Castagnoli

// tables[k][b]: CRC of byte b followed by k zero bytes (slice-by-8).
struct Tables {
  uint32_t t[8][256];
};

constexpr Tables MakeTables() {
  Tables tables{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (kPolynomial & (0u - (c & 1u)));
    tables.t[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; ++b) {
    for (int k = 1; k < 8; ++k) {
      const uint32_t prev = tables.t[k - 1][b];
      tables.t[k][b] = (prev >> 8) ^ tables.t[0][prev & 0xFFu];
    }
  }
  return tables;
}

constexpr Tables kTables = MakeTables();

// Raw (not pre/post-inverted) slice-by-8 update.
uint32_t UpdateTable(uint32_t c, const uint8_t* p, size_t size) {
  const auto& t = kTables.t;
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);  // little-endian host (x86)
    const uint32_t lo = c ^ static_cast<uint32_t>(word);
    const uint32_t hi = static_cast<uint32_t>(word >> 32);
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^
        t[4][lo >> 24] ^ t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^
        t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size-- > 0) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFFu];
  return c;
}

__attribute__((target("sse4.2"))) uint32_t UpdateSse42(uint32_t c,
                                                      const uint8_t* p,
                                                      size_t size) {
  uint64_t c64 = c;
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c64 = _mm_crc32_u64(c64, word);
    p += 8;
    size -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c64);
  while (size-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

using UpdateFn = uint32_t (*)(uint32_t, const uint8_t*, size_t);

UpdateFn SelectUpdate() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2") ? &UpdateSse42 : &UpdateTable;
}

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size) {
  static const UpdateFn update = SelectUpdate();
  return ~update(~crc, static_cast<const uint8_t*>(data), size);
}

uint32_t Crc32cReference(uint32_t crc, const void* data, size_t size) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (size_t i = 0; i < size; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) {
      c = (c & 1u) ? (c >> 1) ^ kPolynomial : c >> 1;
    }
  }
  return ~c;
}

namespace internal {
// Table path, exposed for tests (declared in crc32c_internal.h).
uint32_t Crc32cTable(uint32_t crc, const void* data, size_t size) {
  return ~UpdateTable(~crc, static_cast<const uint8_t*>(data), size);
}
}  // namespace internal

namespace {

// CRC arithmetic over GF(2): appending a zero bit to the message multiplies
// the (reflected) register by x modulo the polynomial, a linear map that a
// 32x32 bit matrix represents (column i = image of bit i). Appending 2^k
// zero bytes is that matrix raised to 8*2^k, built by repeated squaring.
using Gf2Matrix = std::array<uint32_t, 32>;

uint32_t Apply(const Gf2Matrix& m, uint32_t v) {
  uint32_t out = 0;
  for (int i = 0; v != 0; ++i, v >>= 1) {
    if (v & 1u) out ^= m[static_cast<size_t>(i)];
  }
  return out;
}

Gf2Matrix Square(const Gf2Matrix& m) {
  Gf2Matrix out{};
  for (size_t i = 0; i < 32; ++i) out[i] = Apply(m, m[i]);
  return out;
}

}  // namespace

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t size_b) {
  if (size_b == 0) return crc_a;
  // One zero bit: shift right, folding the polynomial in when bit 0 was set.
  Gf2Matrix odd{};
  odd[0] = 0x82F63B78u;
  for (size_t i = 1; i < 32; ++i) odd[i] = 1u << (i - 1);
  Gf2Matrix even = Square(odd);  // two zero bits
  odd = Square(even);            // four zero bits
  // The pre- and post-conditioning (xor 0xFFFFFFFF) cancel out: shifting
  // crc_a over |B| zero bytes and adding crc_b gives the concatenation's CRC.
  uint32_t crc = crc_a;
  do {
    even = Square(odd);  // first pass: one zero byte
    if (size_b & 1u) crc = Apply(even, crc);
    size_b >>= 1;
    if (size_b == 0) break;
    odd = Square(even);
    if (size_b & 1u) crc = Apply(odd, crc);
    size_b >>= 1;
  } while (size_b != 0);
  return crc ^ crc_b;
}

}  // namespace quantd
