"""CRC-32C: the standard check value, and the numpy implementation against a
bit-at-a-time one on every path (short buffers, lanes, tails, continuation,
combination)."""
import numpy as np
import pytest

from quantd import checksum as crc_module
from quantd.checksum import crc32c, crc32c_combine


def bitwise_crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc_module._crc32c_numpy(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@pytest.mark.parametrize("size", [1, 7, 511, 512, 513, 4096, 4099, 70001])
def test_numpy_equals_bitwise(size):
    seed = size
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    want = bitwise_crc32c(data)
    assert crc_module._crc32c_numpy(data) == want, f"seed {seed}"
    assert crc32c(data) == want, f"seed {seed}"
    assert crc32c(memoryview(data)) == want
    assert crc32c(np.frombuffer(data, np.uint8)) == want


def test_large_buffers_continuation_and_combination():
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, (1 << 20) * 3 + 5, dtype=np.uint8).tobytes()
    whole = crc_module._crc32c_numpy(data)
    # The same value by continuing over 1 MiB chunks, and by folding them.
    running, folded = 0, 0
    for off in range(0, len(data), 1 << 20):
        piece = data[off:off + (1 << 20)]
        running = crc_module._crc32c_numpy(piece, running)
        folded = crc32c_combine(folded, crc32c(piece), len(piece))
    assert running == whole
    assert folded == whole
    # Spot-check against the bitwise definition on a prefix through both paths.
    assert crc_module._crc32c_numpy(data[:100000]) == bitwise_crc32c(data[:100000])


def test_combine_edge_cases():
    a, b = b"quantd", b"-chunk"
    assert crc32c_combine(crc32c(a), crc32c(b), len(b)) == crc32c(a + b)
    assert crc32c_combine(crc32c(a), crc32c(b""), 0) == crc32c(a)
    assert crc32c_combine(0, crc32c(b), len(b)) == crc32c(b)
