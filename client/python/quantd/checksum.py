"""CRC-32C (Castagnoli), the checksum of every quantd chunk and tensor.

    >>> from quantd.checksum import crc32c, crc32c_combine
    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    >>> a, b = b"1234", b"56789"
    >>> crc32c_combine(crc32c(a), crc32c(b), len(b)) == crc32c(a + b)
    True

The reflected polynomial 0x82F63B78 with initial value and final xor
0xFFFFFFFF (iSCSI, RFC 3720), the same as the server's base/crc32c.h.

When the ``google-crc32c`` package is installed and has its C extension
(``pip install quantd[fast-crc]``), its hardware implementation is used;
otherwise a numpy one: the buffer is cut into lanes whose CRCs advance in
lockstep, four bytes a step (two 16-bit tables), and the lane CRCs are then
folded pairwise with the linear "append n zero bytes" operator (the method of
zlib's crc32_combine), so the Python loop runs a few hundred steps per
megabyte instead of a million.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["crc32c", "crc32c_combine", "IMPLEMENTATION"]

_POLY = 0x82F63B78
_MASK = 0xFFFFFFFF


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1)
    return table.astype(np.uint32)


_T0 = _byte_table()
# Slicing-by-4: _T[k][b] is the register after byte b and k zero bytes.
_T = [_T0]
for _ in range(3):
    prev = _T[-1]
    _T.append((prev >> 8) ^ _T0[prev & 0xFF])
_T0_LIST = [int(v) for v in _T0]
# A word x advances the register by _LO[x & 0xFFFF] ^ _HI[x >> 16].
_V = np.arange(65536, dtype=np.uint32)
_LO = (_T[3][_V & 0xFF] ^ _T[2][_V >> 8]).astype(np.uint32)
_HI = (_T[1][_V & 0xFF] ^ _T[0][_V >> 8]).astype(np.uint32)
del _V


# --- linear operators on the 32-bit register ---------------------------------
# An operator is a uint32 array of 32 columns: column i is the image of bit i.

def _apply(op: np.ndarray, vec):
    """op applied to a scalar or an array of registers."""
    vec = np.asarray(vec, dtype=np.uint32)
    bits = (vec[..., None] >> np.arange(32, dtype=np.uint32)) & np.uint32(1)
    return np.bitwise_xor.reduce(np.where(bits.astype(bool), op, np.uint32(0)),
                                 axis=-1).astype(np.uint32)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The operator a∘b (b first)."""
    return _apply(a, b)


def _one_zero_bit() -> np.ndarray:
    cols = [_POLY] + [1 << (i - 1) for i in range(1, 32)]
    return np.array(cols, dtype=np.uint32)


@functools.lru_cache(maxsize=64)
def _zeros_operator(num_bytes: int) -> np.ndarray:
    """The operator that appends num_bytes zero bytes to the raw register."""
    result = np.array([1 << i for i in range(32)], dtype=np.uint32)  # identity
    power = _one_zero_bit()
    n = num_bytes * 8
    while n:
        if n & 1:
            result = _compose(power, result)
        n >>= 1
        if n:
            power = _compose(power, power)
    return result


@functools.lru_cache(maxsize=64)
def _zeros_tables(num_bytes: int) -> np.ndarray:
    """_zeros_operator as four 256-entry tables, one per register byte."""
    op = _zeros_operator(num_bytes)
    values = np.arange(256, dtype=np.uint32)
    bits = ((values[:, None] >> np.arange(8, dtype=np.uint32)) & 1).astype(bool)
    tables = np.empty((4, 256), dtype=np.uint32)
    for k in range(4):
        cols = op[8 * k:8 * k + 8]
        tables[k] = np.bitwise_xor.reduce(np.where(bits, cols, np.uint32(0)), axis=1)
    return tables


def _shift(registers: np.ndarray, num_bytes: int) -> np.ndarray:
    t = _zeros_tables(num_bytes)
    return (t[0][registers & 0xFF] ^ t[1][(registers >> 8) & 0xFF]
            ^ t[2][(registers >> 16) & 0xFF] ^ t[3][registers >> 24])


# --- the register update -------------------------------------------------------

def _update_small(register: int, data) -> int:
    table = _T0_LIST
    for byte in bytes(data):
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


_MIN_LANE_BYTES = 64
_MAX_LANES = 8192


def _update_numpy(register: int, data: memoryview) -> int:
    n = len(data)
    lanes = 1
    while lanes * 2 <= _MAX_LANES and lanes * 2 * _MIN_LANE_BYTES <= n:
        lanes *= 2
    if lanes < 8:
        return _update_small(register, data)
    lane_bytes = (n // lanes) & ~3
    body = lanes * lane_bytes
    # words[j] holds word j of every lane, contiguous for the gathers.
    words = np.frombuffer(data[:body], dtype="<u4").reshape(
        lanes, lane_bytes // 4).T.copy()
    regs = np.zeros(lanes, dtype=np.uint32)
    regs[0] = register
    x = np.empty(lanes, dtype=np.uint32)
    index = np.empty(lanes, dtype=np.uint32)
    for word in words:
        np.bitwise_xor(regs, word, out=x)
        np.bitwise_and(x, 0xFFFF, out=index)
        regs = _LO.take(index)
        np.right_shift(x, 16, out=index)
        regs ^= _HI.take(index)
    # Fold neighbours: (a, b) -> shift(a, len(b)) ^ b, lanes double in length.
    span = lane_bytes
    while len(regs) > 1:
        regs = _shift(regs[0::2], span) ^ regs[1::2]
        span *= 2
    return _update_small(int(regs[0]), data[body:])


def _crc32c_numpy(data, crc: int = 0) -> int:
    view = memoryview(data).cast("B")
    register = (crc ^ _MASK) & _MASK
    if len(view) < 8 * _MIN_LANE_BYTES:
        register = _update_small(register, view)
    else:
        register = _update_numpy(register, view)
    return register ^ _MASK


try:  # pragma: no cover - depends on the environment
    import google_crc32c as _google

    if _google.implementation != "c":
        raise ImportError("google-crc32c without its C extension")

    def crc32c(data, crc: int = 0) -> int:
        """CRC-32C of `data` (any buffer), continuing from `crc`."""
        view = memoryview(data).cast("B")
        return _google.extend(crc, view) if crc else _google.value(view)

    IMPLEMENTATION = "google-crc32c"
except ImportError:
    def crc32c(data, crc: int = 0) -> int:
        """CRC-32C of `data` (any buffer), continuing from `crc`."""
        return _crc32c_numpy(data, crc)

    IMPLEMENTATION = "numpy"


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32C of A+B from crc1 = crc32c(A), crc2 = crc32c(B), len2 = len(B)."""
    if len2 == 0:
        return crc1
    return int(_shift(np.array([crc1], dtype=np.uint32), len2)[0]) ^ crc2
