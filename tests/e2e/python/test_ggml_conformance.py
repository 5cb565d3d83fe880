"""Conformance of quantd's ggml block formats with a reference nobody here
wrote: the `gguf` package's numpy quantizers and dequantizers (gguf.quants).

Our bytes come from build/tests/kernels/ggml_quantize_tool (the kernels
library's dispatched fast path and its scalar reference). For every type
gguf.quants can quantize, the bytes must be identical; for every type it can
dequantize, the floats must be identical bit for bit.

gguf's numpy code and ggml's C reference (which our kernels follow) disagree
on one family of inputs, recorded in KNOWN_DIFFERENCES: which signed zero a
block's scale or minimum gets when the deciding element is a zero. There
ggml's C wins; the test asserts our bytes carry the C value and that the
two outputs differ in nothing else (the C value itself is pinned by
tests/kernels/ggml_formats_test.cc).
"""
import subprocess
import warnings

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from conftest import BIN_DIR

TOOL = BIN_DIR / "tests" / "kernels" / "ggml_quantize_tool"

# Our types that gguf.quants can quantize, and the ones it only dequantizes.
QUANTIZED = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "MXFP4"]
DEQUANT_ONLY = ["IQ4_NL", "IQ4_XS"]
BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24,
               "MXFP4": 17, "IQ4_NL": 18, "IQ4_XS": 136}
BLOCK_SIZE = {"IQ4_XS": 256}
F32 = np.float32
DENORM_MIN = np.float32(1e-45)
F32_MAX = np.finfo(F32).max


def run_tool(mode, qtype, row_length, data: bytes) -> bytes:
    assert TOOL.exists(), f"{TOOL} not built"
    r = subprocess.run([str(TOOL), mode, qtype, str(row_length)], input=data,
                       capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def ours(x: np.ndarray, qtype: str, mode="quantize") -> np.ndarray:
    out = run_tool(mode, qtype, x.shape[-1], x.astype("<f4").tobytes())
    return np.frombuffer(out, np.uint8).reshape(x.shape[0], -1)


def theirs(x: np.ndarray, qtype: str) -> np.ndarray:
    with warnings.catch_warnings():
        # numpy warns on the casts of Inf/NaN codes ggml also makes (blocks
        # whose 1/scale overflows) and on f16 scale overflow.
        warnings.simplefilter("ignore", RuntimeWarning)
        return quants.quantize(x, T[qtype]).reshape(x.shape[0], -1)


def weights(rows, cols, seed, spread):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, spread, (rows, cols)).astype(F32)
    outliers = rng.random((rows, cols)) < 0.01
    x[outliers] *= 40
    return x


def block(fill):
    return np.array([fill(j) for j in range(32)], dtype=F32)


HARD_BLOCKS = {
    "all_zero": block(lambda j: 0.0),
    "all_negative_zero": block(lambda j: -0.0),
    "negative_zero_first": block(lambda j: -0.0 if j == 0 else 0.0),
    "negative_zero_inside": block(lambda j: -0.0 if j == 3 else 1.0),
    "zero_max_of_negatives": block(lambda j: -0.0 if j % 2 else -2.0),
    "constant": block(lambda j: 0.7),
    "constant_negative": block(lambda j: -3.0),
    "q8_0_ties": block(lambda j: 127.0 if j == 0 else (j - 15) + 0.5),
    "q4_0_ties": block(lambda j: -8.0 if j == 0 else (j - 16) * 0.5),
    "q4_1_ties": block(lambda j: 15.0 if j == 0 else j * 0.5),
    "q5_0_ties": block(lambda j: -16.0 if j == 0 else (j - 16) * 0.5),
    "subnormal_tiny": block(lambda j: (j - 16) * DENORM_MIN),
    "subnormal_inverse_overflows": block(lambda j: (j - 16) * 1e-39),
    "small_normal": block(lambda j: (j - 16) * 1e-37),
    "single_denorm_min": block(lambda j: DENORM_MIN if j == 5 else 0.0),
    "fp16_limit": block(lambda j: (j - 16) / 16 * 65504.0),
    "fp16_limit_single": block(lambda j: -65504.0 if j == 9 else 1.0),
    "scale_beyond_fp16": block(lambda j: (j - 16) * 1e6),
    "near_f32_max": block(lambda j: (j - 16) * 2e37),
    "f32_max_alternating": block(lambda j: F32_MAX if j % 2 else -F32_MAX),
    "powers_of_two": block(lambda j: 2.0 ** (j - 10)),
    "below_powers_of_two": block(
        lambda j: np.nextafter(F32(2.0 ** (j - 10)), F32(0))),
    "one_positive_max_last": block(lambda j: 5.0 if j == 31 else -5.0),
}

# (hard block, type) -> the bytes (offset in the block) of the f16 field
# where gguf's numpy quantizer stores a different signed zero than ggml's C:
#  - Q4_0/Q5_0 on an all-zero block: C keeps its initial max = +0, so
#    d = +0 / -8 = -0 (0x8000); numpy takes the block's own first element,
#    and when that is -0 stores d = -0 / -8 = +0.
#  - Q4_1/Q5_1 when the minimum is a zero: C keeps the first minimum in
#    element order (`if (v < min)`), numpy's min() may return either zero.
KNOWN_DIFFERENCES = {
    ("all_negative_zero", "Q4_0"): 0,
    ("all_negative_zero", "Q5_0"): 0,
    ("negative_zero_first", "Q4_0"): 0,
    ("negative_zero_first", "Q5_0"): 0,
    ("negative_zero_first", "Q4_1"): 2,
    ("negative_zero_first", "Q5_1"): 2,
    ("all_negative_zero", "Q4_1"): 2,
    ("all_negative_zero", "Q5_1"): 2,
    ("negative_zero_inside", "Q4_1"): 2,
    ("negative_zero_inside", "Q5_1"): 2,
}


@pytest.mark.parametrize("qtype", QUANTIZED)
@pytest.mark.parametrize("mode", ["quantize", "reference"])
def test_random_weights_bytes_identical(qtype, mode):
    for seed, (rows, cols, spread) in enumerate(
            [(1, 32, 1.0), (3, 96, 0.02), (16, 512, 1.0), (64, 4096, 0.02),
             (7, 2048, 300.0), (5, 256, 1e-4)]):
        x = weights(rows, cols, 1000 + seed, spread)
        got, want = ours(x, qtype, mode), theirs(x, qtype)
        bad = np.argwhere(got != want)
        assert bad.size == 0, (
            f"{qtype} {mode} seed {1000 + seed} shape {x.shape}: first "
            f"difference at row/byte {bad[0].tolist()}")


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_hard_blocks_bytes_identical_or_documented(qtype):
    for name, x in HARD_BLOCKS.items():
        got = ours(x.reshape(1, 32), qtype)[0]
        ref = ours(x.reshape(1, 32), qtype, "reference")[0]
        assert np.array_equal(got, ref), f"{name}: fast path != reference"
        want = theirs(x.reshape(1, 32), qtype)[0]
        field = KNOWN_DIFFERENCES.get((name, qtype))
        if field is None:
            assert np.array_equal(got, want), (
                f"{qtype} {name}: ours {got.tolist()} gguf {want.tolist()}")
            continue
        # Documented difference: only that f16 field may differ, and only
        # between the two zeros.
        ours_h = int(got[field]) | int(got[field + 1]) << 8
        theirs_h = int(want[field]) | int(want[field + 1]) << 8
        assert ours_h in (0x0000, 0x8000) and theirs_h in (0x0000, 0x8000), (
            qtype, name, hex(ours_h), hex(theirs_h))
        rest = np.ones(got.size, bool)
        rest[field:field + 2] = False
        assert np.array_equal(got[rest], want[rest]), (qtype, name)


def test_documented_differences_do_occur():
    """The recorded differences are real on this numpy, not stale entries."""
    seen = 0
    for (name, qtype), field in KNOWN_DIFFERENCES.items():
        x = HARD_BLOCKS[name].reshape(1, 32)
        seen += not np.array_equal(ours(x, qtype)[0][field:field + 2],
                                   theirs(x, qtype)[0][field:field + 2])
    assert seen >= 2


def test_gguf_still_lacks_the_dequant_only_quantizers():
    """If gguf gains a quantizer for these, compare bytes for them too."""
    x = weights(1, 256, 1, 1.0)
    for qtype in DEQUANT_ONLY:
        with pytest.raises(NotImplementedError):
            quants.quantize(x, T[qtype])


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | both_nan))


@pytest.mark.parametrize("qtype", QUANTIZED + DEQUANT_ONLY)
def test_dequantize_identical_to_gguf(qtype):
    x = np.concatenate([weights(4, 256, 7, 1.0).reshape(-1, 32),
                        np.stack(list(HARD_BLOCKS.values()))]).reshape(-1)
    # Whole blocks of the format (256 for IQ4_XS): pad with more weights.
    block = BLOCK_SIZE.get(qtype, 32)
    pad = -x.size % block
    x = np.concatenate([x, weights(1, pad, 8, 1.0).reshape(-1)]).reshape(1, -1)
    blocks = ours(x, qtype)
    # Plus random block bytes (any code, any scale bits but NaN/Inf).
    rng = np.random.default_rng(17)
    random = rng.integers(0, 256, (64, BLOCK_BYTES[qtype]), dtype=np.uint8)
    if qtype != "MXFP4":
        nf = 4 if qtype in ("Q4_1", "Q5_1") else 2
        halves = rng.normal(0, 1, (64, nf // 2)).astype(np.float16)
        random[:, :nf] = halves.view(np.uint8).reshape(64, nf)
    for data in (blocks.reshape(-1), random.reshape(-1)):
        n = data.size // BLOCK_BYTES[qtype] * block
        got = np.frombuffer(run_tool("dequantize", qtype, n, data.tobytes()),
                            dtype="<f4")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = quants.dequantize(data.reshape(1, -1), T[qtype]).reshape(-1)
        assert same_floats(got, want.astype(F32)), qtype


def test_row_length_not_a_multiple_of_the_block_is_rejected():
    r = subprocess.run([str(TOOL), "quantize", "Q4_0", "40"],
                       input=np.zeros(40, "<f4").tobytes(),
                       capture_output=True, check=False)
    assert r.returncode == 2
    assert b"row length 40" in r.stderr and b"block size 32" in r.stderr
