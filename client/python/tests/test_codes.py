"""Code packing (proto/README.md): the SDK's word-wise unpack/pack against
the bit-at-a-time packer of the reference, for every width and odd counts."""
import numpy as np
import pytest

from quantd import pack_codes, unpack_codes

import reference


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [1, 7, 8, 9, 1001])
def test_round_trip_against_bitwise_packing(bits, count):
    seed = bits * 10000 + count
    rng = np.random.default_rng(seed)
    unsigned = rng.integers(0, 1 << bits, count)
    packed = reference.pack(unsigned, bits)
    assert packed.size == (count * bits + 7) // 8
    np.testing.assert_array_equal(pack_codes(unsigned, bits), packed, err_msg=f"seed {seed}")
    got = unpack_codes(packed, bits, count, signed=False)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, unsigned, err_msg=f"seed {seed}")
    if bits >= 2:
        signed = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), count)
        packed = reference.pack(signed & ((1 << bits) - 1), bits)
        np.testing.assert_array_equal(pack_codes(signed, bits), packed)
        got = unpack_codes(packed, bits, count, signed=True)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, signed, err_msg=f"seed {seed}")


def test_readme_example_bytes():
    # int4: element 0 in the low nibble of byte 0, element 1 in its high one.
    np.testing.assert_array_equal(pack_codes([1, 2, 3], 4), [0x21, 0x03])
    # int3: 8 elements fill exactly 3 bytes.
    assert pack_codes(np.arange(8), 3).tolist() == [0x88, 0xC6, 0xFA]
    np.testing.assert_array_equal(unpack_codes(np.array([0xFF], np.uint8), 2, 4, True),
                                  [-1, -1, -1, -1])


def test_bad_widths():
    with pytest.raises(ValueError):
        unpack_codes(np.zeros(1, np.uint8), 9, 1, False)
    with pytest.raises(ValueError):
        pack_codes([0], 0)
