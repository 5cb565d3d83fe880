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

}  // namespace quantd
