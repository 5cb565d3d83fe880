"""The W8A8 check (kernels/w8a8.h) against numpy.

quantd's side runs through tests/kernels/gptq_ggml_w8a8_tool, which
quantizes W (or W diag(s) with SmoothQuant factors s) with quantize.h's
int8 scheme and runs W8A8Check. numpy, from X, W and the weight codes:
- quantizes X with the static range: x' = x / s in f32, rint(x' / scale) +
  zero_point (f32 division, round half to even), saturated to s8 or u8,
  and counts the saturated elements;
- accumulates (xq - zero_point) wq^T in int64 and rescales in f32 as
  (scale * s_w[j]) * acc, which must equal quantd's output bit for bit;
- measures relative error, SQNR, max |error| and the weights-only error
  against x W^T in float64 (quantd's reference is an f32 sgemm, hence the
  small tolerance).
"""
import subprocess

import numpy as np
import pytest

from conftest import BIN_DIR

TOOL = BIN_DIR / "tests" / "kernels" / "gptq_ggml_w8a8_tool"
F32 = np.float32


def run_tool(tmp_path, x, w, scheme, act_scale, zero_point=0,
             asymmetric=False, smooth=None):
    assert TOOL.exists(), f"{TOOL} not built"
    (m, k), n = x.shape, w.shape[0]
    x.astype("<f4").tofile(tmp_path / "x.in")
    w.astype("<f4").tofile(tmp_path / "w.in")
    args = [str(TOOL), "w8a8", f"m={m}", f"n={n}", f"k={k}",
            f"x={tmp_path / 'x.in'}", f"w={tmp_path / 'w.in'}",
            f"out={tmp_path}", f"scheme={scheme}",
            f"act_scale={float(act_scale)!r}", f"act_zero_point={zero_point}",
            f"asymmetric={int(asymmetric)}"]
    if smooth is not None:
        smooth.astype("<f4").tofile(tmp_path / "smooth.in")
        args.append(f"smooth={tmp_path / 'smooth.in'}")
    r = subprocess.run(args, capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    out = {k: float(v) for k, v in
           (line.split("=", 1) for line in r.stdout.decode().splitlines())}
    out["wq"] = np.fromfile(tmp_path / "wq.i8", np.int8).reshape(n, k)
    out["w_scales"] = np.fromfile(tmp_path / "w_scales.f32", "<f4")
    out["xq"] = np.fromfile(tmp_path / "xq.u8", np.uint8).reshape(m, k)
    out["y"] = np.fromfile(tmp_path / "y.f32", "<f4").reshape(m, n)
    return out


def stats(y, ref):
    err2 = np.sum((y - ref) ** 2)
    ref2 = np.sum(ref ** 2)
    return (np.sqrt(err2 / ref2), 10 * np.log10(ref2 / err2),
            np.max(np.abs(y - ref)))


CASES = [
    # scheme, asymmetric, range fraction of max|x'|, smooth
    ("int8", False, 1.0, False),
    ("int8", False, 0.5, False),
    ("int8_tensor", False, 0.8, False),
    ("int8", True, 1.0, False),
    ("int8", True, 0.7, False),
    ("int8", False, 1.0, True),
]


@pytest.mark.parametrize("scheme,asymmetric,fraction,smooth", CASES)
def test_w8a8_matches_numpy(tmp_path, scheme, asymmetric, fraction, smooth):
    rng = np.random.default_rng(17)
    m, n, k = 48, 24, 200  # k not a multiple of 64
    x = rng.normal(size=(m, k))
    x[:, ::11] *= 25.0
    x[:, 3] += 4.0  # a shifted channel, for the asymmetric range
    x = x.astype(F32)
    w = (0.05 * rng.normal(size=(n, k))).astype(F32)
    s = None
    xs = x
    if smooth:
        s = np.sqrt(np.abs(x).max(axis=0) / np.abs(w).max(axis=0)).astype(F32)
        xs = (x / s).astype(F32)
    zero_point = 0
    if asymmetric:
        lo = F32(min(xs.min(), 0) * fraction)
        hi = F32(max(xs.max(), 0) * fraction)
        scale = F32((hi - lo) / F32(255))
        zero_point = int(np.clip(np.rint(-lo * (F32(1) / scale)), 0, 255))
    else:
        scale = F32(np.abs(xs).max() * fraction / F32(127))
    r = run_tool(tmp_path, x, w, scheme, scale, zero_point, asymmetric, s)

    # Activation codes and clipping.
    q = np.rint((xs / scale).astype(F32)) + F32(zero_point)
    lo_q, hi_q = (0, 255) if asymmetric else (-128, 127)
    clipped = int(np.sum((q < lo_q) | (q > hi_q)))
    q = np.clip(q, lo_q, hi_q).astype(np.int64)
    got_q = (r["xq"].astype(np.int64) if asymmetric
             else r["xq"].view(np.int8).astype(np.int64))
    np.testing.assert_array_equal(got_q, q)
    assert r["clipped"] == clipped
    assert r["clipped_fraction"] == clipped / (m * k)
    if fraction < 1.0:
        assert clipped > 0

    # The integer GEMM and its rescale, bit for bit.
    acc = (q - zero_point) @ r["wq"].astype(np.int64).T
    assert np.abs(acc).max() < 2 ** 31
    s_w = r["w_scales"]
    assert s_w.size == (1 if scheme == "int8_tensor" else n)
    y = ((scale * s_w).astype(F32) * acc.astype(F32)).astype(F32)
    np.testing.assert_array_equal(y.view(np.uint32), r["y"].view(np.uint32))

    # The metrics.
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    rel, sqnr, max_abs = stats(y.astype(np.float64), ref)
    assert r["relative_error"] == pytest.approx(rel, rel=1e-4)
    assert r["sqnr_db"] == pytest.approx(sqnr, abs=1e-3)
    assert r["max_abs_error"] == pytest.approx(max_abs, rel=1e-3)
    w_hat = (s_w.reshape(-1, 1) * r["wq"].astype(F32)).astype(F32)
    y_w = xs.astype(np.float64) @ w_hat.astype(np.float64).T
    w_rel, w_sqnr, w_max = stats(y_w, ref)
    assert r["weight_only_relative_error"] == pytest.approx(w_rel, rel=1e-3)
    assert r["weight_only_sqnr_db"] == pytest.approx(w_sqnr, abs=1e-2)
    assert r["weight_only_max_abs_error"] == pytest.approx(w_max, rel=1e-3)
    print(f"{scheme} asym={asymmetric} range x{fraction} smooth={smooth}: "
          f"W8A8 {rel:.5f} ({sqnr:.2f} dB), weights only {w_rel:.5f}, "
          f"clipped {clipped / (m * k):.4f}")
    assert r["relative_error"] > r["weight_only_relative_error"]
