#include "base/crc32c.h"

#include "base/internal/crc32c_internal.h"

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

__attribute__((target("sse4.2"))) uint32_t UpdateSse42Serial(
    uint32_t c, const uint8_t* p, size_t size) {
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

// Defined with the combine arithmetic below.
uint32_t ShiftRaw(uint32_t crc, uint64_t bytes);

// The crc32 instruction has a latency of 3 cycles and a throughput of one
// per cycle, so one dependency chain runs at a third of its speed. Large
// buffers are cut into three equal stripes checksummed in one interleaved
// loop; the stripes' registers are then joined by shifting over the
// following stripes' lengths (ShiftRaw, O(log n) with no data access).
__attribute__((target("sse4.2"))) uint32_t UpdateSse42(uint32_t c,
                                                      const uint8_t* p,
                                                      size_t size) {
  constexpr size_t kMinInterleaved = 3 * 1024;
  if (size < kMinInterleaved) return UpdateSse42Serial(c, p, size);
  const size_t stripe = size / 24 * 8;  // bytes per stripe, whole words
  const uint8_t* p1 = p + stripe;
  const uint8_t* p2 = p1 + stripe;
  uint64_t c0 = c, c1 = 0, c2 = 0;
  for (size_t i = 0; i < stripe; i += 8) {
    uint64_t w0, w1, w2;
    std::memcpy(&w0, p + i, 8);
    std::memcpy(&w1, p1 + i, 8);
    std::memcpy(&w2, p2 + i, 8);
    c0 = _mm_crc32_u64(c0, w0);
    c1 = _mm_crc32_u64(c1, w1);
    c2 = _mm_crc32_u64(c2, w2);
  }
  // Raw registers are linear in (state, data): stripe 0's state shifted over
  // two stripes, plus stripe 1's (started from 0) shifted over one, plus
  // stripe 2's, is the register after all three.
  uint32_t r = ShiftRaw(static_cast<uint32_t>(c0), stripe) ^
               static_cast<uint32_t>(c1);
  r = ShiftRaw(r, stripe) ^ static_cast<uint32_t>(c2);
  return UpdateSse42Serial(r, p + 3 * stripe, size - 3 * stripe);
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

// CRC arithmetic over GF(2) in the reflected representation: bit 31 is the
// coefficient of x^0. Appending a zero bit to the message multiplies the
// raw register by x modulo the polynomial, so appending n zero bytes
// multiplies it by x^(8n) mod P; that power is a product of the powers
// x^(2^k) mod P for the bits k of 8n, precomputed below.

// a(x) * b(x) mod P.
constexpr uint32_t MultiplyModP(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1u) ? (b >> 1) ^ kPolynomial : b >> 1;
  }
  return product;
}

// kPowers[k] = x^(2^k) mod P.
struct Powers {
  uint32_t p[67];
};

constexpr Powers MakePowers() {
  Powers powers{};
  uint32_t x = 1u << 30;  // x^1
  for (uint32_t& p : powers.p) {
    p = x;
    x = MultiplyModP(x, x);
  }
  return powers;
}

constexpr Powers kPowers = MakePowers();

// The raw register `crc` after `bytes` more zero bytes.
uint32_t ShiftRaw(uint32_t crc, uint64_t bytes) {
  // x^(8 * bytes): bit k of `bytes` contributes x^(2^(k+3)).
  for (size_t k = 3; bytes != 0; ++k, bytes >>= 1) {
    if (bytes & 1u) crc = MultiplyModP(kPowers.p[k], crc);
  }
  return crc;
}

}  // namespace

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t size_b) {
  // The pre- and post-conditioning (xor 0xFFFFFFFF) cancel out: shifting
  // crc_a over |B| zero bytes and adding crc_b gives the concatenation's CRC.
  return ShiftRaw(crc_a, size_b) ^ crc_b;
}

}  // namespace quantd
