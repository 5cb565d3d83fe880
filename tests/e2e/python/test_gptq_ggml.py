"""GPTQ onto ggml's block formats (kernels/gptq_ggml.h) against an
independent numpy implementation, for Q8_0 and Q4_0.

quantd's side runs through tests/kernels/gptq_ggml_w8a8_tool. The numpy
side:
- checks the static pass (quantd's rtn bytes) against the gguf package's
  own Q8_0 / Q4_0 quantizer (no importance, as ggml's reference);
- reads each block's f16 scale from those bytes and builds its grid in f32
  (Q8_0: d * q, q in [-127, 127]; Q4_0: (q - 8) * d, q in [0, 15]);
- runs GPTQ's column loop unbatched in float64 (Frantar et al. 2022,
  Algorithm 1 without lazy batches; H^-1's upper Cholesky factor from
  numpy.linalg; dead columns, damping, act_order), rounding each element to
  the nearest value of its block's grid;
- decodes quantd's GPTQ bytes with gguf's dequantizer.
Float32 versus float64 arithmetic may flip a few rounding decisions, which
the error feedback then propagates, so values are compared by share and
errors within a tolerance.
"""
import subprocess

import numpy as np
import pytest

from conftest import BIN_DIR

gguf_quants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType  # noqa: E402

TOOL = BIN_DIR / "tests" / "kernels" / "gptq_ggml_w8a8_tool"
F32 = np.float32

FORMATS = {
    # name: (ggml type, block bytes, levels(q) for the allowed q)
    "Q8_0": (GGMLQuantizationType.Q8_0, 34, np.arange(-127, 128)),
    "Q4_0": (GGMLQuantizationType.Q4_0, 18, np.arange(16) - 8),
}


def make_problem(rows, cols, tokens, seed, dead=()):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(tokens, 8))
    x = z @ rng.normal(size=(8, cols)) + 0.3 * rng.normal(size=(tokens, cols))
    x[:, ::17] *= 20.0
    x[:, list(dead)] = 0.0
    x = x.astype(F32)
    w = (0.02 * rng.normal(size=(rows, cols))).astype(F32)
    w.flat[::97] *= 8
    x64 = x.astype(np.float64)
    return x, w, x64.T @ x64


def run_tool(tmp_path, fmt, w, g, tokens, **options):
    assert TOOL.exists(), f"{TOOL} not built"
    rows, cols = w.shape
    w.astype("<f4").tofile(tmp_path / "w.in")
    g.astype("<f8").tofile(tmp_path / "g.in")
    args = [str(TOOL), "gptq_ggml", f"format={fmt}", f"rows={rows}",
            f"cols={cols}", f"tokens={tokens}", f"w={tmp_path / 'w.in'}",
            f"g={tmp_path / 'g.in'}", f"out={tmp_path}"]
    args += [f"{k}={int(v) if isinstance(v, bool) else v}"
             for k, v in options.items()]
    r = subprocess.run(args, capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    out = {k: float(v) for k, v in
           (line.split("=", 1) for line in r.stdout.decode().splitlines())}
    out["bytes"] = np.fromfile(tmp_path / "bytes.u8", np.uint8)
    out["rtn"] = np.fromfile(tmp_path / "rtn.u8", np.uint8)
    out["w_hat"] = np.fromfile(tmp_path / "w_hat.f32", "<f4").reshape(rows,
                                                                      cols)
    return out


def block_grids(fmt, rtn_bytes, rows, cols):
    """(rows, cols // 32, levels) f32 values of each block's grid."""
    _, block_bytes, levels = FORMATS[fmt]
    blocks = rtn_bytes.reshape(rows, cols // 32, block_bytes)
    d = blocks[:, :, :2].copy().view("<f2")[..., 0].astype(F32)
    return (d[..., None] * levels.astype(F32)).astype(F32)


def gptq_ggml_numpy(w, g, tokens, grids, act_order=False, damp=0.01):
    rows, cols = w.shape
    h = 2.0 * g / tokens
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    work = w.astype(np.float64)
    work[:, dead] = 0.0
    perm = (np.argsort(-np.diag(h), kind="stable") if act_order
            else np.arange(cols))
    work = work[:, perm]
    h = h[perm][:, perm]
    h[np.diag_indices(cols)] += damp * np.mean(np.diag(h))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper, H^-1 = U^T U
    w_hat = np.zeros((rows, cols), F32)
    rr = np.arange(rows)
    for i in range(cols):
        c = perm[i]
        vals = grids[:, c // 32, :]
        x = work[:, i].astype(F32)
        # First least |v - x| (in f32): the smaller code on ties.
        q = vals[rr, np.argmin(np.abs(vals - x[:, None]), axis=1)]
        err = (work[:, i] - q) / hinv[i, i]
        work[:, i:] -= np.outer(err, hinv[i, i:])
        w_hat[:, c] = q
    return w_hat


def output_error(x, w, w_hat):
    x64 = x.astype(np.float64)
    ref = x64 @ w.astype(np.float64).T
    return (np.linalg.norm(ref - x64 @ w_hat.astype(np.float64).T)
            / np.linalg.norm(ref))


CASES = [
    # format, act_order, importance, dead columns
    ("Q8_0", False, False, ()),
    ("Q8_0", True, True, (5, 40)),
    ("Q4_0", False, False, ()),
    ("Q4_0", True, False, ()),
    ("Q4_0", False, True, (3, 100, 101)),
]


@pytest.mark.parametrize("fmt,act_order,importance,dead", CASES)
def test_gptq_ggml_matches_numpy(tmp_path, fmt, act_order, importance, dead):
    rows, cols, tokens = 16, 256, 512
    x, w, g = make_problem(rows, cols, tokens, seed=len(dead) + 3, dead=dead)
    r = run_tool(tmp_path, fmt, w, g, tokens, act_order=act_order,
                 importance=importance)
    gtype, block_bytes, _ = FORMATS[fmt]
    assert r["dead_columns"] == len(dead)

    # The static pass is ggml's quantizer (gguf's numpy port) without
    # importance; with importance Q4_0 searches its scales, Q8_0 ignores it.
    if not importance or fmt == "Q8_0":
        expected = np.asarray(gguf_quants.quantize(w, gtype)).reshape(-1)
        np.testing.assert_array_equal(r["rtn"], expected)
    # GPTQ's bytes: same scales as the static pass, decoded by gguf to
    # exactly quantd's w_hat.
    gb = r["bytes"].reshape(-1, block_bytes)
    rb = r["rtn"].reshape(-1, block_bytes)
    np.testing.assert_array_equal(gb[:, :2], rb[:, :2])
    decoded = np.asarray(gguf_quants.dequantize(
        r["bytes"].reshape(rows, -1), gtype)).reshape(rows, cols)
    np.testing.assert_array_equal(decoded.view(np.uint32),
                                  r["w_hat"].view(np.uint32))

    grids = block_grids(fmt, r["rtn"], rows, cols)
    w_np = gptq_ggml_numpy(w, g, tokens, grids, act_order=act_order)
    same = np.mean(w_np == r["w_hat"])
    err_q = output_error(x, w, r["w_hat"])
    err_np = output_error(x, w, w_np)
    err_rtn = output_error(
        x, w, np.asarray(gguf_quants.dequantize(
            r["rtn"].reshape(rows, -1), gtype)).reshape(rows, cols))
    print(f"{fmt} act_order={act_order} importance={importance}: "
          f"same values {same:.3f}, output error quantd {err_q:.5f} "
          f"numpy {err_np:.5f} RTN {err_rtn:.5f}")
    assert same > 0.98
    assert err_q == pytest.approx(r["output_error"], rel=1e-3)
    assert err_rtn == pytest.approx(r["rtn_output_error"], rel=1e-3)
    assert abs(err_q - err_np) <= 0.01 * err_np
    assert err_q < 0.6 * err_rtn
