// CRC-32C (Castagnoli, as in iSCSI and gRPC's checksums): reflected
// polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF.
//
//   uint32_t crc = Crc32c(data, size);
//   crc = Crc32cExtend(crc, more, more_size);  // == Crc32c of the concatenation
//   crc = Crc32cCombine(crc, Crc32c(more, more_size), more_size);  // the same
#ifndef QUANTD_BASE_CRC32C_H_
#define QUANTD_BASE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace quantd {

// Uses SSE4.2's crc32 instruction when present, a table otherwise.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);
inline uint32_t Crc32c(const void* data, size_t size) {
  return Crc32cExtend(0, data, size);
}
// Bitwise reference the fast path is tested against.
uint32_t Crc32cReference(uint32_t crc, const void* data, size_t size);

// The CRC-32C of A followed by B, from crc_a = Crc32c(A), crc_b = Crc32c(B)
// and size_b = |B|, without reading the data: O(log size_b) work. Lets a
// stream check a whole tensor from its chunks' checksums.
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t size_b);

}  // namespace quantd

#endif  // QUANTD_BASE_CRC32C_H_
