"""GPTQ, AWQ and SmoothQuant of the kernels against small independent numpy
implementations of the published algorithms.

quantd's side runs through tests/kernels/calibrated_quantize_tool, which
gets the weight, G = XᵀX (f64) and per-channel activation statistics. The
numpy side works from the calibration activations X themselves, as the
papers' reference code does, and measures every output error as
‖XWᵀ − XŴᵀ‖ / ‖XWᵀ‖ in float64.

- GPTQ: the unbatched column loop of Frantar et al. (Algorithm 1 without
  lazy batches) in float64, H⁻¹'s upper Cholesky factor from numpy.linalg,
  dead columns, damping, act_order, static groups; the grid is quantd's
  int<b> format (quantize.h), re-implemented here in f32.
- AWQ: llm-awq's ratio grid (mean|x|^α, normalized) and per-group clipping
  search, with losses computed by running X through the layer.
- SmoothQuant: the smoothing factors of the paper, and the W8A8 error
  estimate that drives quantd's α search beside a W8A8 simulation on X.

Float32 versus float64 arithmetic may flip a few rounding decisions, which
GPTQ's error feedback then propagates, so codes are compared by share and
errors within a small tolerance or "quantd no worse".
"""
import subprocess

import numpy as np
import pytest

from conftest import BIN_DIR

TOOL = BIN_DIR / "tests" / "kernels" / "calibrated_quantize_tool"
F32 = np.float32
FLT_MIN = np.finfo(F32).tiny


# ---------------------------------------------------------------------------
# Inputs.

def make_problem(rows, cols, tokens, seed, correlated=True, outlier_every=13,
                 outlier_scale=30.0):
    """Calibration activations with outlier channels, and a weight with a
    few large entries."""
    rng = np.random.default_rng(seed)
    if correlated:
        z = rng.normal(size=(tokens, 8))
        mix = rng.normal(size=(8, cols))
        x = z @ mix + 0.4 * rng.normal(size=(tokens, cols))
    else:
        x = rng.normal(size=(tokens, cols))
    x[:, outlier_every // 2::outlier_every] *= outlier_scale
    x = x.astype(F32)
    w = (0.05 * rng.normal(size=(rows, cols))).astype(F32)
    w.flat[::61] *= 6
    return x, w


def gram(x):
    x64 = x.astype(np.float64)
    return x64.T @ x64


def output_error(x, w, w_hat):
    x64 = x.astype(np.float64)
    ref = x64 @ w.astype(np.float64).T
    return np.linalg.norm(ref - x64 @ w_hat.astype(np.float64).T) / \
        np.linalg.norm(ref)


def run_tool(method, tmp_path, w, g=None, tokens=0, act=None, **options):
    assert TOOL.exists(), f"{TOOL} not built"
    rows, cols = w.shape
    args = [str(TOOL), method, f"rows={rows}", f"cols={cols}",
            f"tokens={tokens}", f"out={tmp_path}"]
    w.astype("<f4").tofile(tmp_path / "w.in")
    args.append(f"w={tmp_path / 'w.in'}")
    if g is not None:
        g.astype("<f8").tofile(tmp_path / "g.in")
        args.append(f"g={tmp_path / 'g.in'}")
    if act is not None:
        act.astype("<f4").tofile(tmp_path / "act.in")
        args.append(f"act={tmp_path / 'act.in'}")
    args += [f"{k}={int(v) if isinstance(v, bool) else v}"
             for k, v in options.items()]
    r = subprocess.run(args, capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    values = {}
    for line in r.stdout.decode().splitlines():
        key, value = line.split("=", 1)
        values[key] = float(value)

    def read(name, dtype):
        path = tmp_path / name
        return np.fromfile(path, dtype) if path.exists() else None
    values["w_hat"] = read("w_hat.f32", "<f4").reshape(rows, cols)
    values["smooth"] = read("smooth.f32", "<f4")
    values["perm"] = read("perm.i32", "<i4")
    values["scales"] = read("scales.f32", "<f4")
    return values


# ---------------------------------------------------------------------------
# quantd's int<b> grid (quantize.h's reference), in f32, vectorized over the
# rows of a (rows, group) block.

class Grid:
    def __init__(self, bits, symmetric):
        self.bits, self.symmetric = bits, symmetric

    def params(self, block):
        block = block.astype(F32)
        if self.symmetric:
            qmax = 2 ** (self.bits - 1) - 1
            amax = np.abs(block).max(axis=1)
            scale = (amax / F32(qmax)).astype(F32)
            scale = np.where(scale < FLT_MIN, FLT_MIN, scale).astype(F32)
            inv = (F32(1) / scale).astype(F32)
            return scale, inv, np.zeros_like(scale), -(qmax + 1), qmax
        qmax = 2 ** self.bits - 1
        lo = np.minimum(block.min(axis=1), F32(0))
        hi = np.maximum(block.max(axis=1), F32(0))
        scale = ((hi - lo) / F32(qmax)).astype(F32)
        scale = np.where(scale < FLT_MIN, FLT_MIN, scale).astype(F32)
        inv = (F32(1) / scale).astype(F32)
        zp = np.clip(np.rint(-lo * inv), 0, qmax).astype(F32)
        return scale, inv, zp, 0, qmax

    @staticmethod
    def qdq(values, params):
        """values: (rows,) or (rows, n) with per-row params."""
        scale, inv, zp, qlo, qhi = params
        shape = (-1,) + (1,) * (values.ndim - 1)
        v = values.astype(F32)
        q = np.clip(np.rint(v * inv.reshape(shape)) + zp.reshape(shape), qlo,
                    qhi).astype(F32)
        return (scale.reshape(shape) * (q - zp.reshape(shape))).astype(F32)

    def rtn(self, w, group):
        group = group or w.shape[1]
        out = np.empty_like(w)
        for c in range(0, w.shape[1], group):
            block = w[:, c:c + group]
            out[:, c:c + group] = self.qdq(block, self.params(block))
        return out


SCHEMES = {  # name -> (bits, symmetric, group; 0 = per channel)
    "int4_asym_g32": (4, False, 32),
    "int3_asym_g32": (3, False, 32),
    "int4_sym_channel": (4, True, 0),
    "int3_sym_channel": (3, True, 0),
    "int4_asym_g64": (4, False, 64),
    "int3_sym_g64": (3, True, 64),
}


# ---------------------------------------------------------------------------
# GPTQ (Frantar et al. 2022), unbatched, float64.

def gptq_numpy(w, g, tokens, scheme, act_order=False, static_groups=False,
               damp=0.01):
    bits, symmetric, group = SCHEMES[scheme]
    grid = Grid(bits, symmetric)
    rows, cols = w.shape
    h = 2.0 * g / tokens
    channel_params = grid.params(w) if group == 0 else None
    work = w.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    work[:, dead] = 0.0
    static = None
    if group and static_groups:
        static = [grid.params(work[:, c:c + group].astype(F32))
                  for c in range(0, cols, group)]
    perm = np.argsort(-np.diag(h), kind="stable") if act_order \
        else np.arange(cols)
    work = work[:, perm]
    h = h[perm][:, perm]
    h[np.diag_indices(cols)] += damp * np.mean(np.diag(h))
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper, H⁻¹ = UᵀU
    q_out = np.zeros((rows, cols), F32)
    params = channel_params
    for i in range(cols):
        if group and static is None and i % group == 0:
            params = grid.params(work[:, i:i + group].astype(F32))
        elif static is not None:
            params = static[perm[i] // group]
        q = grid.qdq(work[:, i].astype(F32), params)
        err = (work[:, i] - q) / hinv[i, i]
        work[:, i:] -= np.outer(err, hinv[i, i:])
        q_out[:, i] = q
    w_hat = np.empty_like(q_out)
    w_hat[:, perm] = q_out
    return w_hat


GPTQ_CASES = [
    # scheme, act_order, static_groups, correlated, dead columns
    ("int4_asym_g32", False, False, True, []),
    ("int3_asym_g32", False, False, True, []),
    ("int4_sym_channel", False, False, True, []),
    ("int3_sym_channel", True, False, True, []),
    ("int4_asym_g32", True, False, True, []),
    ("int4_asym_g32", True, True, True, []),
    ("int3_sym_g64", True, True, False, []),
    ("int4_asym_g64", False, False, True, [5, 70]),
    ("int4_asym_g32", True, False, True, [0, 33]),
]


@pytest.mark.parametrize("scheme,act_order,static_groups,correlated,dead",
                         GPTQ_CASES)
def test_gptq_matches_numpy(tmp_path, scheme, act_order, static_groups,
                            correlated, dead):
    x, w = make_problem(48, 128, 768, seed=len(scheme) + 7 * act_order +
                        3 * static_groups + len(dead), correlated=correlated)
    x[:, dead] = 0
    g = gram(x)
    ours = run_tool("gptq", tmp_path, w, g, len(x), scheme=scheme,
                    act_order=act_order, static_groups=static_groups)
    theirs = gptq_numpy(w, g, len(x), scheme, act_order, static_groups)
    assert ours["dead_columns"] == len(dead)
    assert ours["group_index"] == (act_order and not static_groups
                                   and 0 < SCHEMES[scheme][2] < w.shape[1])
    if act_order:
        expected = np.argsort(-np.where(np.diag(g) == 0, 1.0,
                                        2 * np.diag(g) / len(x)),
                              kind="stable")
        np.testing.assert_array_equal(ours["perm"], expected)
    for c in dead:
        assert not ours["w_hat"][:, c].any()
    err_ours = output_error(x, w, ours["w_hat"])
    err_theirs = output_error(x, w, theirs)
    bits, symmetric, group = SCHEMES[scheme]
    err_rtn = output_error(x, w, Grid(bits, symmetric).rtn(w, group))
    # The reported error is the measured one (G in f32 against X in f64).
    assert ours["output_error"] == pytest.approx(err_ours, rel=2e-2)
    assert ours["rtn_output_error"] == pytest.approx(err_rtn, rel=1e-3)
    # Same algorithm: most values equal (a group's scale may differ in the
    # last bit: its weights come from f32 against f64 updates), and no worse
    # than numpy's.
    same = np.mean(np.isclose(ours["w_hat"], theirs, rtol=1e-5, atol=0))
    assert same > 0.9, same
    assert err_ours <= 1.03 * err_theirs, (err_ours, err_theirs)
    # Clearly below round to nearest on correlated inputs (on independent
    # channels H is nearly diagonal and there is little to feed back).
    assert err_ours < (0.8 if correlated else 1.0) * err_rtn, \
        (err_ours, err_rtn)


# ---------------------------------------------------------------------------
# AWQ (Lin et al. 2023): llm-awq's auto_scale + auto_clip with X.

def awq_numpy(w, x, scheme, n_grid=20, clip_grid=20, max_shrink=0.5):
    bits, symmetric, group = SCHEMES[scheme]
    grid = Grid(bits, symmetric)
    group = group or w.shape[1]
    act = np.abs(x).mean(axis=0).astype(F32)
    x64 = x.astype(np.float64)
    ref = x64 @ w.astype(np.float64).T
    best = (np.inf, None, None)
    for i in range(n_grid):
        ratio = F32(i / n_grid)
        s = np.maximum(act ** ratio, F32(1e-4)).astype(F32)
        s = (s / np.sqrt(s.max() * s.min())).astype(F32)
        w_hat = (grid.rtn((w * s).astype(F32), group) / s).astype(F32)
        loss = np.mean((ref - x64 @ w_hat.astype(np.float64).T) ** 2)
        if loss < best[0]:
            best = (loss, float(ratio), s)
    _, alpha, s = best
    ws = (w * s).astype(F32)
    xs = x64 / s.astype(np.float64)
    clipped = ws.copy()
    for c in range(0, w.shape[1], group):
        block = ws[:, c:c + group]
        xg = xs[:, c:c + group]
        org_out = xg @ block.astype(np.float64).T
        org_max = np.abs(block).max(axis=1)
        min_err = np.full(w.shape[0], np.inf)
        best_max = org_max.copy()
        for i_s in range(int(max_shrink * clip_grid)):
            max_val = (org_max * F32(1 - i_s / clip_grid)).astype(F32)
            cur = np.clip(block, -max_val[:, None], max_val[:, None])
            q = grid.qdq(cur, grid.params(cur))
            err = np.mean((xg @ q.astype(np.float64).T - org_out) ** 2, axis=0)
            better = err < min_err
            min_err[better] = err[better]
            best_max[better] = max_val[better]
        clipped[:, c:c + group] = np.clip(block, -best_max[:, None],
                                          best_max[:, None])
    w_hat = (grid.rtn(clipped, group) / s).astype(F32)
    return alpha, s, w_hat


@pytest.mark.parametrize("scheme,correlated", [
    ("int4_asym_g32", True), ("int3_asym_g32", True),
    ("int4_sym_channel", True), ("int3_sym_g64", False),
])
def test_awq_matches_numpy(tmp_path, scheme, correlated):
    x, w = make_problem(48, 128, 512, seed=len(scheme), correlated=correlated)
    act = np.abs(x).mean(axis=0).astype(F32)
    ours = run_tool("awq", tmp_path, w, gram(x), len(x), act=act,
                    scheme=scheme)
    alpha, s, theirs = awq_numpy(w, x, scheme)
    err_ours = output_error(x, w, ours["w_hat"])
    err_theirs = output_error(x, w, theirs)
    bits, symmetric, group = SCHEMES[scheme]
    err_rtn = output_error(x, w, Grid(bits, symmetric).rtn(w, group))
    assert ours["output_error"] == pytest.approx(err_ours, rel=1e-3)
    if ours["alpha"] == pytest.approx(alpha):
        np.testing.assert_allclose(ours["smooth"], s, rtol=2e-6)
        assert np.mean(np.isclose(ours["w_hat"], theirs, rtol=1e-5,
                                  atol=0)) > 0.98
    assert err_ours <= 1.01 * err_theirs, (err_ours, err_theirs)
    assert err_ours < 0.85 * err_rtn, (err_ours, err_rtn)


# ---------------------------------------------------------------------------
# SmoothQuant (Xiao et al. 2022).

def smoothquant_scales(w, act_max, alpha):
    w_max = np.maximum(np.abs(w).max(axis=0), F32(1e-5))
    return np.maximum(act_max ** F32(alpha) / w_max ** F32(1 - alpha),
                      F32(1e-5)).astype(F32)


def w8a8_simulated(x, w, s):
    """Per-channel int8 weights, per-tensor static int8 activations."""
    xs = x.astype(np.float64) / s
    step = np.abs(xs).max() / 127
    xq = np.clip(np.rint(xs / step), -128, 127) * step
    wq = Grid(8, True).rtn((w * s).astype(F32), 0).astype(np.float64)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    return np.linalg.norm(xq @ wq.T - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.85, 1.0])
def test_smoothquant_scales_match_numpy(tmp_path, alpha):
    x, w = make_problem(32, 96, 256, seed=3)
    act_max = np.abs(x).max(axis=0)
    act_max[10] = 0
    ours = run_tool("smoothquant", tmp_path, w, act=act_max, alpha=alpha)
    s = smoothquant_scales(w, act_max, alpha)
    np.testing.assert_allclose(ours["smooth"], s, rtol=2e-6)
    np.testing.assert_allclose(ours["w_hat"], w * s, rtol=2e-6)


@pytest.mark.parametrize("seed", [1, 2])
def test_smoothquant_error_estimate_tracks_w8a8_simulation(tmp_path, seed):
    x, w = make_problem(64, 128, 1024, seed=seed, outlier_every=9,
                        outlier_scale=50.0)
    act_max = np.abs(x).max(axis=0)
    ours = run_tool("smoothquant", tmp_path, w, gram(x), len(x), act=act_max,
                    search=1, n_grid=20)
    simulated = [w8a8_simulated(x, w, smoothquant_scales(w, act_max, i / 20))
                 for i in range(21)]
    estimated = [ours[f"alpha_error_{i}"] for i in range(21)]
    ratios = np.array(estimated) / np.array(simulated)
    assert np.all((ratios > 0.6) & (ratios < 1.6)), ratios
    chosen = int(round(ours["alpha"] * 20))
    assert estimated[chosen] == min(estimated)
    np.testing.assert_allclose(ours["smooth"],
                               smoothquant_scales(w, act_max, chosen / 20),
                               rtol=2e-6)
    # The searched alpha is near the simulation's best and far better than
    # no smoothing (alpha = 0 still rescales; s = 1 is the plain case).
    assert simulated[chosen] <= 1.25 * min(simulated)
    plain = w8a8_simulated(x, w, np.ones(w.shape[1], F32))
    assert simulated[chosen] < 0.5 * plain


def test_non_finite_gram_is_invalid_argument(tmp_path):
    x, w = make_problem(8, 32, 64, seed=4)
    g = gram(x)
    g[3, 1] = np.nan
    w.astype("<f4").tofile(tmp_path / "w.in")
    g.astype("<f8").tofile(tmp_path / "g.in")
    r = subprocess.run([str(TOOL), "gptq", "rows=8", "cols=32", "tokens=64",
                        f"out={tmp_path}", f"w={tmp_path / 'w.in'}",
                        f"g={tmp_path / 'g.in'}", "scheme=int4"],
                       capture_output=True, check=False)
    assert r.returncode == 2
    assert b"INVALID_ARGUMENT" in r.stderr
    assert b"G has a non-finite value nan at row 3, column 1" in r.stderr
