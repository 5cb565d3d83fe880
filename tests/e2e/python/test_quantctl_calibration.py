"""quantctl with calibration activations (--calibration, --calibrate,
--holdout-rows, --activation-range) against the real quantd: each weight's
output error in the report equals ‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖ computed here from X
and the decoded output; +gptq beats RTN on correlated inputs; +awq stores
its channel scales so that Ŵ = dequantized codes / s; the W8A8 check and
per-channel ranges reach the report; mixed precision chooses on the output
error; bad calibration input fails before anything is sent."""
import json
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import BIN_DIR


def _quantctl(*args):
    return subprocess.run([str(BIN_DIR / "client" / "quantctl"), *args],
                          capture_output=True, text=True, timeout=300)


def _unpack(packed, n, bits, signed):
    bitstream = np.unpackbits(packed, bitorder="little")[: n * bits]
    values = (bitstream.reshape(n, bits).astype(np.int64)
              << np.arange(bits)).sum(axis=1)
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return values


def _dequantize(out, meta, name):
    layout = json.loads(meta[f"quantd.{name}"])
    shape = layout["shape"]
    n = int(np.prod(shape))
    codes = _unpack(out[f"{name}.qweight"], n, layout["bits"], layout["symmetric"])
    scales = out[f"{name}.scales"].reshape(-1).astype(np.float32)
    zps = (out[f"{name}.zero_points"].reshape(-1).astype(np.int64)
           if not layout["symmetric"] else np.zeros_like(scales, dtype=np.int64))
    g = np.arange(n) // layout["group_size"]
    if layout.get("group_index"):
        # GPTQ act_order groups: column c of row r uses group
        # r * groups_per_row + g_idx[c].
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        g_idx = out[f"{name}.g_idx"].astype(np.int64)
        g = (np.arange(rows)[:, None] * (cols // layout["group_size"])
             + g_idx[None, :]).reshape(-1)
    return (scales[g] * (codes - zps[g]).astype(np.float32)).reshape(shape)


def _correlated(rng, tokens, features):
    z = rng.standard_normal((tokens, 16)).astype(np.float32)
    m = rng.standard_normal((16, features)).astype(np.float32)
    x = z @ m + 0.3 * rng.standard_normal((tokens, features)).astype(np.float32)
    x[:, ::29] *= 10.0
    return x.astype(np.float32)


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(11)
    w = {
        "blk.0.attn.q.weight": (rng.standard_normal((64, 128)) * 0.05).astype(np.float32),
        "blk.0.attn.k.weight": (rng.standard_normal((32, 128)) * 0.05).astype(np.float32),
        "blk.0.ffn.up.weight": (rng.standard_normal((96, 128)) * 0.05).astype(np.float32),
        "blk.0.ffn.down.weight": (rng.standard_normal((128, 96)) * 0.05).astype(np.float32),
        "blk.0.norm.weight": np.ones(128, dtype=np.float32),
    }
    save_file(w, tmp_path / "model.safetensors")
    acts = {
        "blk.0.attn_in": _correlated(rng, 600, 128),
        "blk.0.ffn.up": _correlated(rng, 600, 128),
        "blk.0.ffn.down": _correlated(rng, 600, 96),
    }
    save_file(acts, tmp_path / "acts.safetensors")
    return tmp_path, w, acts


def _run(tmp_path, server, *extra, out="out.safetensors"):
    out_path = tmp_path / out
    r = _quantctl("quantize", str(tmp_path / "model.safetensors"),
                  "--out", str(out_path), "--server", server.target,
                  "--calibration", str(tmp_path / "acts.safetensors"),
                  "--calibrate", r"attn\.[qk]\.=blk.0.attn_in",
                  "--progress", "none", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / (out + ".report.json")).read_text())
    return out_path, {t["name"]: t for t in report["tensors"]}, r.stdout


SETS = {"blk.0.attn.q.weight": "blk.0.attn_in", "blk.0.attn.k.weight": "blk.0.attn_in",
        "blk.0.ffn.up.weight": "blk.0.ffn.up", "blk.0.ffn.down.weight": "blk.0.ffn.down"}


def test_output_error_in_the_report_equals_numpy(tmp_path, server, model):
    tmp_path, w, acts = model
    out_path, report, stdout = _run(tmp_path, server, "--scheme", "int4_asym_g32")
    assert "out err" in stdout
    out = load_file(out_path)
    from safetensors import safe_open
    with safe_open(out_path, "np") as f:
        meta = f.metadata()
    for name, set_name in SETS.items():
        t = report[name]
        assert t["calibration"] == set_name
        x = acts[set_name].astype(np.float64)
        w_hat = _dequantize(out, meta, name).astype(np.float64)
        y = x @ w[name].astype(np.float64).T
        e = x @ (w[name].astype(np.float64) - w_hat).T
        rel = np.linalg.norm(e) / np.linalg.norm(y)
        assert t["output_metrics"]["relative_error"] == pytest.approx(rel, rel=1e-4)
        assert t["output_metrics"]["tokens"] == 600
        assert t["activation_range"]["scale"] == pytest.approx(
            np.abs(acts[set_name]).max() / 127, rel=1e-6)
    assert "calibration" not in report["blk.0.norm.weight"]


def test_gptq_beats_rtn_and_awq_stores_its_scales(tmp_path, server, model):
    tmp_path, w, acts = model
    _, rtn, _ = _run(tmp_path, server, "--scheme", "int3_asym_g32", out="rtn.safetensors")
    _, gptq, _ = _run(tmp_path, server, "--scheme", "int3_asym_g32+gptq",
                      out="gptq.safetensors")
    awq_path, awq, _ = _run(tmp_path, server, "--scheme", "int3_asym_g32+awq",
                            out="awq.safetensors")
    for name in SETS:
        e_rtn = rtn[name]["output_metrics"]["relative_error"]
        assert gptq[name]["output_metrics"]["relative_error"] < 0.8 * e_rtn, name
        assert awq[name]["output_metrics"]["relative_error"] < e_rtn, name
    out = load_file(awq_path)
    from safetensors import safe_open
    with safe_open(awq_path, "np") as f:
        meta = f.metadata()
    name = "blk.0.ffn.up.weight"
    s = out[f"{name}.channel_scales"]
    assert s.shape == (128,) and np.all(s > 0)
    # The codes quantize W diag(s): Ŵ = dequantized / s, whose output error
    # is the one reported.
    w_hat = _dequantize(out, meta, name) / s[None, :]
    x = acts[SETS[name]].astype(np.float64)
    y = x @ w[name].astype(np.float64).T
    rel = np.linalg.norm(x @ (w[name] - w_hat).astype(np.float64).T) / np.linalg.norm(y)
    assert awq[name]["output_metrics"]["relative_error"] == pytest.approx(rel, rel=1e-3)


def test_gptq_act_order_with_dynamic_groups_writes_g_idx(tmp_path, server, model):
    tmp_path, w, acts = model
    _, plain, _ = _run(tmp_path, server, "--scheme", "int4_asym_g32+gptq",
                       out="plain.safetensors")
    path, desc, _ = _run(tmp_path, server, "--scheme",
                         "int4_asym_g32+gptq(act_order)", out="desc.safetensors")
    out = load_file(path)
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        meta = f.metadata()
    errors = {}
    for name, set_name in SETS.items():
        layout = json.loads(meta[f"quantd.{name}"])
        assert layout["group_index"] is True
        g_idx = out[f"{name}.g_idx"]
        cols = w[name].shape[1]
        assert g_idx.dtype == np.int32 and g_idx.shape == (cols,)
        # group_size columns per group, grouped by descending diag(XᵀX).
        assert np.bincount(g_idx).tolist() == [32] * (cols // 32)
        x = acts[set_name].astype(np.float64)
        order = np.argsort(-np.einsum("ti,ti->i", x, x), kind="stable")
        np.testing.assert_array_equal(g_idx[order], np.arange(cols) // 32)
        # Decoded through g_idx, the file gives the reported output error.
        w_hat = _dequantize(out, meta, name).astype(np.float64)
        y = x @ w[name].astype(np.float64).T
        rel = np.linalg.norm(x @ (w[name] - w_hat).T) / np.linalg.norm(y)
        errors[name] = desc[name]["output_metrics"]["relative_error"]
        assert errors[name] == pytest.approx(rel, rel=1e-4)
    # Summed over the layers, act-order's groups are no worse than GPTQ's
    # consecutive ones on activations with outlier channels.
    assert sum(errors.values()) <= 1.02 * sum(
        plain[n]["output_metrics"]["relative_error"] for n in SETS)
    assert "g_idx" not in " ".join(load_file(tmp_path / "plain.safetensors"))


def test_w8a8_check_and_per_channel_ranges_reach_the_report(tmp_path, server, model):
    tmp_path, w, acts = model
    _, report, stdout = _run(tmp_path, server, "--scheme", "int8",
                             "--holdout-rows", "64",
                             "--activation-range", "percentile:99.9,per_channel")
    assert "W8A8 err" in stdout
    for name, set_name in SETS.items():
        t = report[name]
        assert t["output_metrics"]["tokens"] == 600 - 64
        assert t["w8a8"]["rows"] == 64
        assert t["w8a8"]["relative_error"] >= t["w8a8"]["weight_only_relative_error"]
        r = t["activation_range"]
        assert r["method"] == "RANGE_METHOD_PERCENTILE"
        assert len(r["channel_scales"]) == acts[set_name].shape[1]


def test_mixed_precision_chooses_on_the_output_error(tmp_path, server, model):
    tmp_path, w, acts = model
    out_path = tmp_path / "mixed.safetensors"
    r = _quantctl("quantize", str(tmp_path / "model.safetensors"),
                  "--out", str(out_path), "--server", server.target,
                  "--calibration", str(tmp_path / "acts.safetensors"),
                  "--calibrate", r"attn\.[qk]\.=blk.0.attn_in",
                  "--target-bpw", "4.5",
                  "--candidates", "int3_asym_g32,int4_asym_g32,int8",
                  "--progress", "none")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "mixed.safetensors.report.json").read_text())
    mp = report["mixed_precision"]
    assert mp["error_measure"] == "output"
    assert mp["achieved_bpw"] <= 4.5 + 1e-9
    chosen = sum(t["output_metrics"]["error_sq"] for t in report["tensors"]
                 if "output_metrics" in t)
    for u in mp["uniform_over_free_tensors"]:
        if u["bits_per_weight"] <= 4.5:
            assert chosen <= u["error"] * (1 + 1e-9), u["scheme"]


def test_bad_calibration_input_fails_before_sending(tmp_path, server, model):
    tmp_path, w, acts = model
    # A rule naming a set no file has.
    r = _quantctl("quantize", str(tmp_path / "model.safetensors"),
                  "--out", str(tmp_path / "x.safetensors"), "--server", server.target,
                  "--calibration", str(tmp_path / "acts.safetensors"),
                  "--calibrate", "attn=nosuchset", "--progress", "none")
    assert r.returncode != 0 and "nosuchset" in r.stderr
    # A set whose features differ from the weight's rows.
    r = _quantctl("quantize", str(tmp_path / "model.safetensors"),
                  "--out", str(tmp_path / "x.safetensors"), "--server", server.target,
                  "--calibration", str(tmp_path / "acts.safetensors"),
                  "--calibrate", "ffn.down=blk.0.ffn.up", "--progress", "none")
    assert r.returncode != 0 and "features" in r.stderr
    # Not [tokens, features].
    save_file({"v": np.ones(8, dtype=np.float32)}, tmp_path / "bad.safetensors")
    r = _quantctl("quantize", str(tmp_path / "model.safetensors"),
                  "--out", str(tmp_path / "x.safetensors"), "--server", server.target,
                  "--calibration", str(tmp_path / "bad.safetensors"),
                  "--progress", "none")
    assert r.returncode != 0 and "bad.safetensors" in r.stderr
    assert not (tmp_path / "x.safetensors").exists()
