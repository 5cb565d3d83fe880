"""Conformance of quantd's ggml K-quants (Q2_K..Q6_K) with references nobody
here wrote.

- The `gguf` package dequantizes every K-quant in numpy (it has no K-quant
  quantizer): our dequantizer must give the same floats bit for bit, on our
  own blocks and on arbitrary bytes (every code, every 6-bit scale, any f16
  d and dmin short of Inf/NaN).
- llama.cpp's ggml itself, when llama-cpp-python is installed: its
  libggml-base exports quantize_q2_K..quantize_q6_K (what llama-quantize
  calls through ggml_quantize_chunk), and our bytes must equal its bytes,
  with and without an importance matrix. Skipped without the package.

Our bytes come from build/tests/kernels/ggml_quantize_tool (`reference`: the
scalar reference; `quantize`: the path dispatched on this CPU, which
QUANTD_ISA caps).
"""
import ctypes
import os
import pathlib
import subprocess
import warnings

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from conftest import BIN_DIR

TOOL = BIN_DIR / "tests" / "kernels" / "ggml_quantize_tool"
BLOCK_BYTES = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
TYPES = list(BLOCK_BYTES)
F32 = np.float32
QK = 256


def run_tool(mode, qtype, row_length, data: bytes, imatrix=None, tmp=None,
             isa=None):
    assert TOOL.exists(), f"{TOOL} not built"
    args = [str(TOOL), mode, qtype, str(row_length)]
    if imatrix is not None:
        path = tmp / "imatrix.f32"
        imatrix.astype("<f4").tofile(path)
        args.append(str(path))
    env = dict(os.environ)
    if isa is not None:
        env["QUANTD_ISA"] = isa
    r = subprocess.run(args, input=data, capture_output=True, check=False,
                       env=env)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def ours(x, qtype, mode="reference", imatrix=None, tmp=None,
         isa=None) -> bytes:
    return run_tool(mode, qtype, x.shape[-1], x.astype("<f4").tobytes(),
                    imatrix, tmp, isa)


def our_dequant(blocks: bytes, qtype: str, row_length: int) -> np.ndarray:
    out = run_tool("dequantize", qtype, row_length, blocks)
    return np.frombuffer(out, "<f4")


def their_dequant(blocks: bytes, qtype: str) -> np.ndarray:
    raw = np.frombuffer(blocks, np.uint8).reshape(-1, BLOCK_BYTES[qtype])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return quants.dequantize(raw, T[qtype]).reshape(-1).astype(F32)


def weights(rows, cols, seed, spread):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, spread, (rows, cols)).astype(F32)
    x[rng.random((rows, cols)) < 0.01] *= 40
    x[:, 5::37] *= 20  # outlier columns
    return x


def super_block(fill):
    return np.array([fill(j) for j in range(QK)], dtype=F32)


HARD = np.stack([
    super_block(lambda j: 0.0),
    super_block(lambda j: -0.0),
    super_block(lambda j: 1.0),
    super_block(lambda j: -3.0),
    super_block(lambda j: (j % 16) - 7.5),
    super_block(lambda j: (j % 8) + 0.5),
    super_block(lambda j: (j - 128) * 1e-39),
    super_block(lambda j: (j - 128) * 1e-45),
    super_block(lambda j: (j - 128) / 128 * 65504.0),
    super_block(lambda j: 65504.0 if j % 2 else -65504.0),
    super_block(lambda j: 3.0e38 if j % 2 else -3.0e38),
    super_block(lambda j: (j % 16) if j < 32 else 2000.0),
    super_block(lambda j: -100.0 - (j % 16)),
    super_block(lambda j: 2.0 ** (j % 40 - 20)),
])


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=F32).view(np.uint32)


@pytest.mark.parametrize("qtype", TYPES)
def test_kquant_dequantize_matches_gguf_bit_for_bit(qtype):
    x = np.concatenate([weights(8, 1024, 7, 0.02).reshape(-1, QK),
                        weights(4, 1024, 8, 30.0).reshape(-1, QK), HARD])
    blocks = ours(x, qtype)
    np.testing.assert_array_equal(bits(our_dequant(blocks, qtype, QK)),
                                  bits(their_dequant(blocks, qtype)))


@pytest.mark.parametrize("qtype", TYPES)
def test_kquant_dequantize_arbitrary_bytes_matches_gguf(qtype):
    # Random block bytes: every code and scale pattern, with the f16 d and
    # dmin replaced by finite values (Inf * 0 would be NaN in both, and NaN
    # payloads are not compared here).
    rng = np.random.default_rng(11)
    n = 64
    raw = rng.integers(0, 256, (n, BLOCK_BYTES[qtype]), dtype=np.uint8)
    halves = rng.normal(0, 1, (n, 2)).astype(np.float16).view(np.uint8)
    offsets = {"Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2],
               "Q5_K": [0, 2], "Q6_K": [208]}[qtype]
    for i, off in enumerate(offsets):
        raw[:, off:off + 2] = halves[:, 2 * i:2 * i + 2]
    blocks = raw.tobytes()
    np.testing.assert_array_equal(bits(our_dequant(blocks, qtype, QK)),
                                  bits(their_dequant(blocks, qtype)))


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
@pytest.mark.parametrize("qtype", TYPES)
def test_kquant_fast_bytes_equal_reference(qtype, isa, tmp_path):
    # The dispatched path with the ISA capped (a cap above the CPU's ISA
    # runs the best path the CPU has).
    x = np.concatenate([weights(4, 2048, 21, 1.0).reshape(-1, QK), HARD])
    imatrix = np.random.default_rng(3).lognormal(0, 2, QK).astype(F32)
    assert ours(x, qtype, "quantize", isa=isa) == ours(x, qtype, "reference")
    assert (ours(x, qtype, "quantize", imatrix, tmp_path, isa)
            == ours(x, qtype, "reference", imatrix, tmp_path))


def ggml_base():
    """libggml-base from llama-cpp-python, or None."""
    try:
        import llama_cpp  # noqa: F401  (only its shared libraries are used)
    except ImportError:
        return None
    root = pathlib.Path(llama_cpp.__file__).parent
    for lib in sorted(root.rglob("libggml-base.so*")):
        return ctypes.CDLL(str(lib))
    return None


def ggml_quantize(lib, qtype, x, imatrix):
    fn = getattr(lib, "quantize_" + qtype.lower().replace("_k", "_K"))
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_void_p]
    x = np.ascontiguousarray(x, dtype=F32)
    rows, cols = x.shape
    out = np.zeros(rows * cols // QK * BLOCK_BYTES[qtype], np.uint8)
    imp = None if imatrix is None else np.ascontiguousarray(imatrix, F32)
    fn(x.ctypes.data, out.ctypes.data, rows, cols,
       None if imp is None else imp.ctypes.data)
    return out.tobytes()


@pytest.mark.parametrize("qtype", TYPES)
def test_kquant_bytes_equal_llama_cpp(qtype, tmp_path):
    lib = ggml_base()
    if lib is None:
        pytest.skip("llama-cpp-python (libggml-base) is not installed")
    rng = np.random.default_rng(5)
    cases = [weights(8, 1024, 1, s) for s in (1e-4, 0.02, 1.0, 300.0)]
    cases.append(HARD)
    cases.append((rng.integers(-4, 5, (8, 1024)) * F32(0.25)).astype(F32))
    for x in cases:
        imatrix = rng.lognormal(0, 2, x.shape[1]).astype(F32)
        for imp in (None, imatrix):
            want = ggml_quantize(lib, qtype, x, imp)
            got = ours(x, qtype, "reference", imp, tmp_path)
            assert got == want, f"{qtype} rows {x.shape} imatrix {imp is not None}"
