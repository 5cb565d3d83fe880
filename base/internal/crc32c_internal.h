// Internal: the table-driven CRC-32C fallback, exposed so tests can check it
// against Crc32cReference on CPUs that have SSE4.2.
#ifndef QUANTD_BASE_INTERNAL_CRC32C_INTERNAL_H_
#define QUANTD_BASE_INTERNAL_CRC32C_INTERNAL_H_

#include <cstddef>
#include <cstdint>

namespace quantd::internal {

uint32_t Crc32cTable(uint32_t crc, const void* data, size_t size);

}  // namespace quantd::internal

#endif  // QUANTD_BASE_INTERNAL_CRC32C_INTERNAL_H_
