"""The real quantctl binary against the real quantd: a sharded safetensors
model in, a quantized safetensors file and a JSON report out, read back with
the `safetensors` package and decoded with numpy from the documented
layout."""
import json
import os
import pathlib
import subprocess
import time

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import BIN_DIR, Server


def _unpack(packed: np.ndarray, n: int, bits: int, signed: bool) -> np.ndarray:
    """Element i in bits [i*bits, (i+1)*bits) of the little-endian stream."""
    bitstream = np.unpackbits(packed, bitorder="little")[: n * bits]
    fields = bitstream.reshape(n, bits).astype(np.int64)
    values = (fields << np.arange(bits)).sum(axis=1)
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
    group = layout["group_size"]
    g = np.arange(n) // group
    return (scales[g] * (codes - zps[g]).astype(np.float32)).reshape(shape), layout


def _model(tmp_path: pathlib.Path):
    rng = np.random.default_rng(7)
    tensors = {
        "layers.0.attn.q.weight": rng.standard_normal((64, 128)).astype(np.float32) * 0.02,
        "layers.0.attn.q.bias": rng.standard_normal(64).astype(np.float32),
        "layers.0.mlp.up.weight": (rng.standard_normal((256, 128)) * 0.02).astype(np.float16),
        "layers.1.mlp.down.weight": (rng.standard_normal((128, 256)) * 0.02).astype(ml_dtypes.bfloat16),
        "layers.1.norm.weight": np.ones(128, dtype=np.float32),
        "lm_head.weight": rng.standard_normal((96, 128)).astype(np.float32),
        "position_ids": np.arange(16, dtype=np.int64).reshape(1, 16),
    }
    names = sorted(tensors)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in shard}, tmp_path / fname,
                  metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index, tensors


def _quantctl(*args):
    return subprocess.run([str(BIN_DIR / "client" / "quantctl"), *args],
                          capture_output=True, text=True, timeout=300)


def test_sharded_model_round_trip_through_two_servers(tmp_path, server):
    second = Server()
    try:
        index, tensors = _model(tmp_path)
        out_path = tmp_path / "out.safetensors"
        r = _quantctl("quantize", str(index), "--scheme", "int4_asym_g32",
                      "--override", "^lm_head=int8", "--out", str(out_path),
                      "--server", f"{server.target},{second.target}",
                      "--streams", "2", "--progress", "none")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        assert second.stop() == 0
    # The per-tensor table names every tensor.
    for name in tensors:
        assert name in r.stdout

    out = load_file(out_path)  # the reference safetensors reader
    with open(out_path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(header_len))["__metadata__"]
    assert meta["quantd.format_version"] == "2"
    assert meta["format"] == "pt"  # input metadata kept

    report = json.loads(pathlib.Path(str(out_path) + ".report.json").read_text())
    by_name = {t["name"]: t for t in report["tensors"]}
    assert report["totals"]["failed"] == 0

    # Copied tensors are byte-identical.
    np.testing.assert_array_equal(out["layers.0.attn.q.bias"], tensors["layers.0.attn.q.bias"])
    np.testing.assert_array_equal(out["layers.1.norm.weight"], tensors["layers.1.norm.weight"])
    np.testing.assert_array_equal(out["position_ids"], tensors["position_ids"])

    for name in ["layers.0.attn.q.weight", "layers.0.mlp.up.weight",
                 "layers.1.mlp.down.weight", "lm_head.weight"]:
        w = tensors[name].astype(np.float32)
        w_hat, layout = _dequantize(out, meta, name)
        expected_scheme = "int8_sym_channel" if name == "lm_head.weight" else "int4_asym_g32"
        assert layout["scheme"] == expected_scheme
        err = w.astype(np.float64) - w_hat.astype(np.float64)
        # Round to nearest: within half a step of the group's scale.
        scales = out[f"{name}.scales"].reshape(-1)
        step = np.repeat(scales, layout["group_size"]).reshape(w.shape)
        assert np.all(np.abs(err) <= step / 2 * (1 + 1e-5) + 1e-12), name
        # The report's metrics are those of the decoded file.
        m = by_name[name]["metrics"]
        assert m["mse"] == pytest.approx(np.mean(err ** 2), rel=1e-9)
        sqnr = 20 * np.log10(np.linalg.norm(w.astype(np.float64)) / np.linalg.norm(err))
        assert m["sqnr_db"] == pytest.approx(sqnr, rel=1e-9)
        assert by_name[name]["action"] == "quantized"


def test_output_is_identical_for_one_or_many_streams(tmp_path, server):
    index, _ = _model(tmp_path)
    outputs = []
    for streams in ("1", "4"):
        out_path = tmp_path / f"out-{streams}.safetensors"
        r = _quantctl("quantize", str(index), "--scheme", "int3_g64",
                      "--out", str(out_path), "--server", server.target,
                      "--streams", streams, "--quiet")
        assert r.returncode == 0, r.stderr
        outputs.append(out_path.read_bytes())
    assert outputs[0] == outputs[1]


def test_bad_tensor_fails_the_run_and_names_it(tmp_path, server):
    w = np.ones((8, 16), dtype=np.float32)
    w[3, 3] = np.inf
    save_file({"good.weight": np.ones((8, 16), np.float32), "bad.weight": w},
              tmp_path / "m.safetensors")
    out_path = tmp_path / "o.safetensors"
    r = _quantctl("quantize", str(tmp_path / "m.safetensors"), "--scheme", "int8",
                  "--out", str(out_path), "--server", server.target, "--quiet")
    assert r.returncode == 1
    assert "bad.weight" in r.stderr and "INVALID_ARGUMENT" in r.stderr
    assert not out_path.exists()
    report = json.loads(pathlib.Path(str(out_path) + ".report.json").read_text())
    status = {t["name"]: t["action"] for t in report["tensors"]}
    assert status == {"bad.weight": "failed", "good.weight": "quantized"}


def test_info_prints_server_limits(server):
    r = _quantctl("info", "--server", server.target, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    names = [f["name"] for f in info["formats"]]
    # The int formats, then ggml's block formats (Q8_0, Q4_0, ...).
    assert names[:7] == [f"int{b}" for b in range(2, 9)]
    assert {"Q8_0", "Q4_0", "IQ4_NL"} <= set(names[7:])
    assert int(info["limits"]["maxChunkBytes" if "maxChunkBytes" in info["limits"]
                              else "max_chunk_bytes"]) == 1 << 20
    assert info["workers"] == 2


def test_killed_server_restarted_and_rerun_resumes_to_a_clean_output(tmp_path):
    """A server killed mid-run fails the rest of the run, which leaves
    OUT.partial and its manifest; the same command against a restarted
    server sends only what is missing, and the output equals a clean run's:
    no tensor lost or duplicated."""
    rng = np.random.default_rng(11)
    tensors = {f"layers.{i:02d}.mlp.weight":
               (rng.standard_normal((1024, 1024)) * 0.02).astype(np.float32)
               for i in range(40)}
    tensors["norm.weight"] = np.ones(1024, np.float32)
    model = tmp_path / "model.safetensors"
    save_file(tensors, model)
    out = tmp_path / "out.safetensors"
    manifest = pathlib.Path(str(out) + ".partial.manifest")
    args = ["quantize", str(model), "--scheme", "int4_asym_g128",
            "--out", str(out), "--streams", "1", "--max-attempts", "2",
            "--progress", "none"]

    first = Server("--workers=1")
    run = subprocess.Popen([str(BIN_DIR / "client" / "quantctl"), *args,
                            "--server", first.target],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:
            if manifest.exists() and len(manifest.read_text().splitlines()) >= 4:
                break
            time.sleep(0.005)
        first.proc.kill()  # SIGKILL: no drain
        first.proc.wait()
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, stdout + stderr
    assert "run the same command again to resume" in stderr
    assert not out.exists()
    done_before = len(manifest.read_text().splitlines())
    assert 4 <= done_before < 40

    second = Server("--workers=1")
    try:
        rerun = _quantctl(*args, "--server", second.target)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        report = json.loads(pathlib.Path(str(out) + ".report.json").read_text())
        assert report["totals"]["resumed"] == done_before
        assert report["totals"]["quantized"] == 40
        resumed = {t["name"] for t in report["tensors"] if t.get("resumed")}
        assert len(resumed) == done_before
        assert f"{done_before} resumed" in rerun.stdout
        assert not manifest.exists()

        clean = tmp_path / "clean.safetensors"
        r = _quantctl("quantize", str(model), "--scheme", "int4_asym_g128",
                      "--out", str(clean), "--server", second.target, "--quiet")
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == clean.read_bytes()
    finally:
        assert second.stop() == 0
