"""Calibration statistics (kernels/calibration.h) against numpy float64.

The C++ side runs through tests/kernels/calibration_tool, which accumulates
raw activations in chunks and prints G, the per-channel statistics, every
histogram and the int8 ranges of every estimator as JSON. Here numpy
recomputes each from the activations directly (G, min/max, means) or from
the same histogram by the rules written in calibration.h (histogram
binning, percentile, MSE-optimal clipping, KL divergence), and the output
error from X itself.
"""
import json
import subprocess

import numpy as np
import pytest

from conftest import BIN_DIR

TOOL = BIN_DIR / "tests" / "kernels" / "calibration_tool"
SEED = 20240611


def run_tool(args, data: bytes, check=True):
    assert TOOL.exists(), f"{TOOL} not built"
    r = subprocess.run([str(TOOL), *args], input=data, capture_output=True,
                       check=False)
    if check:
        assert r.returncode == 0, r.stderr.decode()
    return r


def stats(x: np.ndarray, dtype="F32", **keys) -> dict:
    keys.setdefault("features", x.shape[1])
    args = ["stats", f"dtype={dtype}"] + [f"{k}={v}" for k, v in keys.items()]
    raw = x.astype({"F32": "<f4", "F16": "<f2"}.get(dtype, "<f4"))
    return json.loads(run_tool(args, raw.tobytes()).stdout)


def activations(rows, features, seed, scale_growth=False):
    rng = np.random.default_rng(seed)
    spread = 0.1 + 0.2 * (np.arange(features) % 7)
    mean = np.where(np.arange(features) % 5 == 0, 0.5, 0.0)
    x = rng.normal(0.0, 1.0, (rows, features)) * spread + mean
    x[rng.random((rows, features)) < 0.005] *= 40
    x[:, 1] = np.abs(x[:, 1])
    if features > 2:
        x[:, 2] = 0.0
    if scale_growth:  # ranges grow from chunk to chunk
        x *= np.exp2(np.arange(rows) // max(rows // 8, 1) * 3 - 10)[:, None]
    return x.astype(np.float32)


# --- The histogram rule of calibration.h, written again in numpy ---------

def histogram(values: np.ndarray, bins: int):
    """Every value binned once at the final power-of-two range."""
    amax = float(np.max(np.abs(values))) if values.size else 0.0
    e = max(int(np.frexp(amax)[1]), -149) if amax > 0 else -149
    factor = np.ldexp(bins / 2, -e)
    idx = np.floor(values.astype(np.float64) * factor).astype(np.int64) + bins // 2
    assert idx.min() >= 0 and idx.max() < bins
    return e, np.bincount(idx, minlength=bins)


def width(h):
    return np.ldexp(2.0, h["exponent"]) / h["bins"]


def fold(counts):
    half = len(counts) // 2
    return counts[half:].astype(np.float64) + counts[:half][::-1]


def percentile_sym(counts, w, amax, p):
    a = fold(counts)
    k = int(np.argmax(np.cumsum(a) >= p / 100.0 * counts.sum()))
    return min((k + 1) * w, amax)


def percentile_asym(counts, w, lo_data, hi_data, p):
    n = counts.sum()
    cum = np.cumsum(counts.astype(np.float64))
    half = len(counts) // 2
    i_hi = int(np.argmax(cum >= p / 100.0 * n))
    i_lo = int(np.argmax(cum > (1.0 - p / 100.0) * n))
    return max((i_lo - half) * w, lo_data), min((i_hi + 1 - half) * w, hi_data)


def mse_sym_errors(counts, w, amax):
    """(candidates, modelled errors) by direct sums, as documented."""
    a = fold(counts)
    k = np.arange(len(a))
    c = np.minimum((k + 0.5) * w, amax)
    cands = [(kk * w, kk) for kk in range(1, len(a)) if kk * w < amax]
    cands.append((amax, len(a)))
    ts, errs = [], []
    for t, first_above in cands:
        above = k >= first_above
        s = t / 127.0
        clip = np.sum(a[above] * (c[above] - t) ** 2)
        errs.append(clip + a[~above].sum() * s * s / 12.0)
        ts.append(t)
    return np.array(ts), np.array(errs)


def thin(cands, keep):
    step = -(-len(cands) // keep)
    return cands[::step]


def mse_asym_error(counts, w, lo_data, hi_data, lo, hi):
    half = len(counts) // 2
    i = np.arange(len(counts))
    c = np.clip((i - half + 0.5) * w, lo_data, hi_data)
    n = counts.astype(np.float64)
    above = (i - half) * w >= hi if hi < hi_data else np.zeros_like(i, bool)
    below = (i + 1 - half) * w <= lo if lo > lo_data else np.zeros_like(i, bool)
    s = (max(hi, 0.0) - min(lo, 0.0)) / 255.0
    inside = n.sum() - n[above].sum() - n[below].sum()
    return (np.sum(n[above] * (c[above] - hi) ** 2)
            + np.sum(n[below] * (lo - c[below]) ** 2) + inside * s * s / 12.0)


def mse_asym_candidates(counts, w, lo_data, hi_data, keep):
    half = len(counts) // 2
    edges = (np.arange(len(counts)) - half) * w
    his = [hi_data] + [e for e in edges[::-1]
                       if max(lo_data, 0.0) < e < hi_data]
    los = [lo_data] + [e for e in edges if lo_data < e < min(hi_data, 0.0)]
    return thin(his, keep), thin(los, keep)


def kl_divergences(counts, w, amax):
    """{i: KL(P_i || Q_i)} of TensorRT's entropy calibration, as documented."""
    a = fold(counts)
    nb = min(int(np.ceil(amax / w)), len(a))
    out = {}
    for i in range(128, nb + 1):
        p = a[:i].copy()
        p[-1] += a[i:].sum()
        q = np.zeros(i)
        g = i // 128
        for j in range(128):
            start, stop = j * g, (i if j == 127 else (j + 1) * g)
            nz = p[start:stop] > 0
            if nz.any():
                q[start:stop][nz] = a[start:stop].sum() / nz.sum()
        if q.sum() <= 0:
            continue
        p /= p.sum()
        q = (q / q.sum() + 1e-4 / i) / (1 + 1e-4)
        m = p > 0
        out[i] = float(np.sum(p[m] * np.log(p[m] / q[m])))
    return nb, out


def int8_params(lo, hi, symmetric):
    f = np.float32
    lo, hi = f(lo), f(hi)
    if symmetric:
        t = max(-lo, hi)
        return f(-t), t, max(f(t / f(127)), f(np.finfo(f).tiny)), 0
    lo0, hi0 = min(lo, f(0)), max(hi, f(0))
    scale = max(f((hi0 - lo0) / f(255)), f(np.finfo(f).tiny))
    zp = int(np.clip(np.rint(-lo0 * (f(1) / scale)), 0, 255))
    return lo, hi, scale, zp


# --- Tests -----------------------------------------------------------------

def test_gram_and_moments_of_100k_tokens_match_float64():
    x = activations(100_000, 64, SEED)
    r = stats(x, chunk=4096, channel_bins=256)
    assert r["tokens"] == 100_000
    x64 = x.astype(np.float64)
    g_ref = x64.T @ x64
    g = np.array(r["gram"]).reshape(64, 64)
    # f32 blocks of 512 rows summed in f64: no growth with the token count.
    rel = np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref))
    assert rel < 1e-6, rel
    assert np.all(np.abs(np.diag(g) - np.diag(g_ref)) <= 1e-6 * np.diag(g_ref))
    np.testing.assert_array_equal(g, g.T)
    np.testing.assert_array_equal(np.array(r["min"], np.float32), x.min(0))
    np.testing.assert_array_equal(np.array(r["max"], np.float32), x.max(0))
    np.testing.assert_allclose(r["mean_abs"], np.abs(x64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(r["mean_sq"], (x64 ** 2).mean(0), rtol=1e-12)
    # llama.cpp's imatrix: Σx²/count per column, as f32.
    np.testing.assert_allclose(r["importance"], (x64 ** 2).mean(0), rtol=1e-7)


def test_histograms_follow_the_documented_rule():
    x = activations(4000, 12, SEED + 1, scale_growth=True)
    r = stats(x, chunk=333, tensor_bins=2048, channel_bins=512)
    e, counts = histogram(x.ravel(), 2048)
    assert r["tensor_histogram"]["exponent"] == e
    np.testing.assert_array_equal(r["tensor_histogram"]["counts"], counts)
    for c in range(12):
        e, counts = histogram(x[:, c], 512)
        h = r["channel_histograms"][c]
        assert h["exponent"] == e, c
        np.testing.assert_array_equal(h["counts"], counts, err_msg=f"ch {c}")


def test_chunking_and_merging_give_the_same_statistics():
    x = activations(1500, 10, SEED + 2, scale_growth=True)
    keys = dict(tensor_bins=1024, channel_bins=256, block_rows=64)
    whole = stats(x, **keys)
    for chunk in (1, 7, 100):
        # Every statistic, G and every estimate included, is identical.
        assert stats(x, chunk=chunk, **keys) == whole, chunk
    merged = stats(x, chunk=50, merge_at=701, **keys)
    for key in ("tokens", "min", "max", "tensor_histogram",
                "channel_histograms", "memory_bytes"):
        assert merged[key] == whole[key], key
    np.testing.assert_allclose(merged["mean_sq"], whole["mean_sq"], rtol=1e-12)
    g, gw = np.array(merged["gram"]), np.array(whole["gram"])
    assert np.max(np.abs(g - gw)) <= 1e-6 * np.max(np.abs(gw))


def test_memory_does_not_depend_on_tokens():
    small = stats(activations(100, 32, SEED + 3), channel_bins=128)
    large = stats(activations(20_000, 32, SEED + 3), chunk=999,
                  channel_bins=128)
    assert small["memory_bytes"] == large["memory_bytes"]
    # G (f64), a 512-row block, 128 per-channel and 2048 tensor bins.
    floor = 32 * 32 * 8 + 32 * 512 * 4 + 32 * 128 * 4 + 2048 * 8
    assert floor <= large["memory_bytes"] < 2 * floor


def test_half_precision_input_gives_the_statistics_of_its_values():
    x = activations(500, 16, SEED + 4)
    xh = x.astype(np.float16)
    assert stats(xh, dtype="F16", chunk=37) == stats(xh.astype(np.float32))


@pytest.fixture(scope="module")
def heavy():
    """Laplace and skewed channels, and the tool's report on them."""
    rng = np.random.default_rng(SEED + 5)
    rows, features = 60_000, 6
    x = rng.laplace(0.0, 1.0, (rows, features))
    x[:, 1] = np.abs(x[:, 1]) * 3  # post-ReLU-like
    x[:, 2] = rng.normal(0.0, 1.0, rows)
    x[:, 3] = rng.normal(0.0, 1.0, rows) - 2.0  # mostly negative
    x[rng.random((rows, features)) < 0.0005] *= 30
    x = x.astype(np.float32)
    return x, stats(x, chunk=7000, tensor_bins=2048, channel_bins=1024,
                    percentile=99.9)


def cases(x, r):
    """(label, histogram json, counts, data min, data max, ranges key, idx)."""
    out = [("tensor", r["tensor_histogram"], float(x.min()), float(x.max()),
            "tensor")]
    for c in range(x.shape[1]):
        out.append((f"channel {c}", r["channel_histograms"][c],
                    float(x[:, c].min()), float(x[:, c].max()), c))
    return out


def reported(r, method, which):
    entry = r["ranges"][method]
    return entry["tensor"] if which == "tensor" else entry["channels"][which]


def check_params(got, lo, hi, symmetric):
    lo32, hi32, scale, zp = int8_params(lo, hi, symmetric)
    assert np.float32(got["lo"]) == lo32
    assert np.float32(got["hi"]) == hi32
    assert np.float32(got["scale"]) == scale
    assert got["zero_point"] == zp


def test_minmax_and_percentile_ranges(heavy):
    x, r = heavy
    for label, h, lo_data, hi_data, which in cases(x, r):
        counts = np.array(h["counts"])
        w = width(h)
        amax = max(-lo_data, hi_data)
        check_params(reported(r, "minmax_sym", which), -amax, amax, True)
        check_params(reported(r, "minmax_asym", which), lo_data, hi_data, False)
        t = percentile_sym(counts, w, amax, 99.9)
        check_params(reported(r, "percentile_sym", which), -t, t, True)
        assert t < amax, label  # the outliers are cut
        lo, hi = percentile_asym(counts, w, lo_data, hi_data, 99.9)
        check_params(reported(r, "percentile_asym", which), lo, hi, False)


def test_mse_ranges_minimize_the_documented_model(heavy):
    x, r = heavy
    for label, h, lo_data, hi_data, which in cases(x, r):
        counts = np.array(h["counts"])
        w = width(h)
        amax = max(-lo_data, hi_data)
        ts, errs = mse_sym_errors(counts, w, amax)
        got = reported(r, "mse_sym", which)
        t = float(got["hi"])
        best = errs.min()
        # The chosen threshold is a candidate and its error the smallest.
        k = int(np.argmin(np.abs(ts - t)))
        assert abs(ts[k] - t) <= 1e-6 * t, label
        assert errs[k] <= best * (1 + 1e-9) + 1e-300, label
        check_params(got, -ts[k], ts[k], True)

        if which not in ("tensor", 1, 3):
            continue  # the 2-D search in numpy is slow; three cases suffice
        his, los = mse_asym_candidates(counts, w, lo_data, hi_data, 128)
        grid = np.array([[mse_asym_error(counts, w, lo_data, hi_data, lo, hi)
                          for lo in los] for hi in his])
        got = reported(r, "mse_asym", which)
        i, j = np.unravel_index(np.argmin(grid), grid.shape)
        mine = mse_asym_error(counts, w, lo_data, hi_data,
                              float(got["lo"]), float(got["hi"]))
        assert mine <= grid[i, j] * (1 + 1e-6), label
        check_params(got, los[j], his[i], False)


def test_kl_ranges_minimize_the_divergence(heavy):
    x, r = heavy
    for label, h, lo_data, hi_data, which in cases(x, r):
        counts = np.array(h["counts"])
        w = width(h)
        amax = max(-lo_data, hi_data)
        nb, kl = kl_divergences(counts, w, amax)
        got = reported(r, "kl_sym", which)
        t = float(got["hi"])
        if nb <= 128:
            assert np.float32(t) == np.float32(amax), label
            continue
        best_i = min(kl, key=lambda i: (kl[i], i))
        i = int(round(t / w)) if t < amax else min(
            (i for i in kl if min(i * w, amax) == amax), default=nb)
        assert i in kl, label
        assert kl[i] <= kl[best_i] + 1e-12, label
        check_params(got, -min(best_i * w, amax), min(best_i * w, amax), True)
        lo, hi = max(lo_data, -t), min(hi_data, t)
        check_params(reported(r, "kl_asym", which), lo, hi, False)


def test_output_error_equals_numpy_on_x():
    rng = np.random.default_rng(SEED + 6)
    x = activations(5000, 64, SEED + 6)
    w = rng.normal(0.0, 0.05, (300, 64)).astype(np.float32)
    w_hat = (np.round(w / 0.02) * 0.02).astype(np.float32)
    import tempfile, pathlib
    with tempfile.TemporaryDirectory() as d:
        wp, wh = pathlib.Path(d) / "w.f32", pathlib.Path(d) / "w_hat.f32"
        wp.write_bytes(w.astype("<f4").tobytes())
        wh.write_bytes(w_hat.astype("<f4").tobytes())
        out = run_tool(["output_error", "300", "64", str(wp), str(wh)],
                       x.astype("<f4").tobytes())
    e = json.loads(out.stdout)
    x64 = x.astype(np.float64)
    y, y_hat = x64 @ w.T.astype(np.float64), x64 @ w_hat.T.astype(np.float64)
    err = np.sum((y - y_hat) ** 2)
    sig = np.sum(y ** 2)
    assert e["error_sq"] == pytest.approx(err, rel=1e-4)
    assert e["signal_sq"] == pytest.approx(sig, rel=1e-5)
    assert e["relative_error"] == pytest.approx(np.sqrt(err / sig), rel=1e-4)
    assert e["sqnr_db"] == pytest.approx(10 * np.log10(sig / err), abs=1e-3)


def test_bad_activations_are_rejected_with_row_and_column():
    x = activations(20, 8, SEED + 7)
    x[13, 6] = np.nan
    r = run_tool(["stats", "features=8", "chunk=5"], x.tobytes(), check=False)
    assert r.returncode == 2
    msg = r.stderr.decode()
    assert "INVALID_ARGUMENT" in msg and "row 3" in msg
    assert "token 13" in msg and "column 6" in msg and "NaN" in msg
    r = run_tool(["stats", "features=7"], x[:, :7].tobytes()[:-4], check=False)
    assert r.returncode == 2
