"""GGUF in and out, checked against the gguf Python package.

- A file written by gguf.GGUFWriter (every metadata value kind) goes through
  `quantctl quantize --type COPY` (no server): gguf.GGUFReader reads our
  output back with the same metadata and tensor bytes -- our reader read
  theirs, their reader reads ours.
- A small llama-shaped model made with the gguf package goes through a real
  server as Q4_K_M and Q8_0: tensor types as llama.cpp's preset rules say,
  dequantized values close to the input, Q8_0 bytes equal to gguf.quants.
"""
import pathlib
import subprocess

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from conftest import BIN_DIR  # noqa: E402

QT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType


def quantctl(*args, check=True):
    binary = BIN_DIR / "client" / "quantctl"
    assert binary.exists(), f"{binary} not built"
    proc = subprocess.run([str(binary), "quantize", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def fields(reader):
    """Metadata as {key: (types, contents)}, without the GGUF header."""
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        out[name] = (list(field.types), field.contents())
    return out


def write_every_kind(path: pathlib.Path):
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_key_value("k.u8", 250, VT.UINT8)
    w.add_key_value("k.i8", -100, VT.INT8)
    w.add_key_value("k.u16", 65000, VT.UINT16)
    w.add_key_value("k.i16", -32000, VT.INT16)
    w.add_key_value("k.u32", 4000000000, VT.UINT32)
    w.add_key_value("k.i32", -2000000000, VT.INT32)
    w.add_key_value("k.u64", 18000000000000000000, VT.UINT64)
    w.add_key_value("k.i64", -9000000000000000000, VT.INT64)
    w.add_key_value("k.f32", 1.5, VT.FLOAT32)
    w.add_key_value("k.f64", -2.25, VT.FLOAT64)
    w.add_key_value("k.bool", True, VT.BOOL)
    w.add_key_value("k.str", "h\u00e9llo", VT.STRING)
    w.add_array("k.arr_i32", [-1, 7, 9])
    w.add_array("k.arr_f32", [0.5, -3.0])
    w.add_array("k.arr_str", ["a", "", "ccc"])
    w.add_array("k.arr_bool", [True, False])
    w.add_key_value("k.arr_u8", [1, 2, 3], VT.ARRAY, VT.UINT8)
    w.add_key_value("k.arr_f64", [1e300], VT.ARRAY, VT.FLOAT64)
    tensors = {
        "token_embd.weight": rng.standard_normal((10, 64)).astype(np.float16),
        "blk.0.attn_norm.weight": rng.standard_normal(64).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((64, 64)).astype(np.float32),
        "blk.0.ffn_up.weight": rng.standard_normal((2, 3, 32)).astype(np.float16),
    }
    for name, data in tensors.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def test_copy_round_trip_against_gguf_package(tmp_path):
    src = tmp_path / "in.gguf"
    tensors = write_every_kind(src)
    out = tmp_path / "out.gguf"
    quantctl(src, "--type", "COPY", "--out", out, "--quiet")
    a = gguf.GGUFReader(str(src))
    b = gguf.GGUFReader(str(out))
    fa, fb = fields(a), fields(b)
    # Ours adds the two keys llama-quantize sets, and keeps everything else.
    assert fb.pop("general.quantization_version") == ([VT.UINT32], 2)
    assert fb.pop("general.file_type")[0] == [VT.UINT32]
    fa.pop("general.file_type", None)
    fa.pop("general.quantization_version", None)
    assert fa == fb
    assert [t.name for t in b.tensors] == list(tensors)  # input order
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.tensor_type == tb.tensor_type
        assert list(ta.shape) == list(tb.shape)
        assert ta.data.tobytes() == tb.data.tobytes()
        assert tb.data_offset % 32 == 0


def test_malformed_input_is_rejected(tmp_path):
    src = tmp_path / "in.gguf"
    write_every_kind(src)
    raw = src.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(raw[: len(raw) - 100])
    proc = quantctl(bad, "--type", "COPY", "--out", tmp_path / "o.gguf",
                    check=False)
    assert proc.returncode == 1
    assert "INVALID_ARGUMENT" in proc.stderr and "truncated" in proc.stderr
    assert not (tmp_path / "o.gguf").exists()


N_EMBD, N_FF, N_VOCAB, N_LAYER = 256, 352, 300, 2


def write_llama(path: pathlib.Path, seed=3):
    """A 2-layer llama with GQA (8 heads, 2 KV heads); n_ff = 352 is a
    multiple of 32 but not of 256, so ffn_down needs llama's fallback."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(N_LAYER)
    w.add_context_length(128)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(8)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(N_VOCAB)])
    tensors = {}

    def add(name, shape, dtype=np.float16):
        data = (rng.standard_normal(shape) * 0.05).astype(dtype)
        tensors[name] = data
        w.add_tensor(name, data)

    add("token_embd.weight", (N_VOCAB, N_EMBD))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", (N_EMBD,), np.float32)
        add(p + "attn_q.weight", (N_EMBD, N_EMBD))
        add(p + "attn_k.weight", (64, N_EMBD))
        add(p + "attn_v.weight", (64, N_EMBD))
        add(p + "attn_output.weight", (N_EMBD, N_EMBD))
        add(p + "ffn_norm.weight", (N_EMBD,), np.float32)
        add(p + "ffn_gate.weight", (N_FF, N_EMBD))
        add(p + "ffn_up.weight", (N_FF, N_EMBD))
        add(p + "ffn_down.weight", (N_EMBD, N_FF))
    add("output_norm.weight", (N_EMBD,), np.float32)
    add("output.weight", (N_VOCAB, N_EMBD))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


# llama.cpp's Q4_K_M choice for this model (2 layers: layer 1 "uses more
# bits"; ffn_down rows of 352 fall back Q4_K -> Q5_0 and Q6_K -> Q8_0).
Q4_K_M_TYPES = {
    "token_embd.weight": QT.Q4_K,
    "output.weight": QT.Q6_K,
    "output_norm.weight": QT.F32,
    "blk.0.attn_v.weight": QT.Q4_K,
    "blk.1.attn_v.weight": QT.Q6_K,
    "blk.0.attn_q.weight": QT.Q4_K,
    "blk.0.ffn_gate.weight": QT.Q4_K,
    "blk.0.ffn_down.weight": QT.Q5_0,
    "blk.1.ffn_down.weight": QT.Q8_0,
    "blk.1.attn_norm.weight": QT.F32,
}


def test_dry_run_needs_no_server(tmp_path):
    src = tmp_path / "llama.gguf"
    write_llama(src)
    proc = quantctl(src, "--type", "q4_k_m", "--dry-run")
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()
             if line.startswith(("blk.", "output", "token"))}
    for name, qt in Q4_K_M_TYPES.items():
        assert lines[name].split()[2].split("->")[-1].strip() == qt.name or \
            f"-> {qt.name}" in lines[name], lines[name]
    assert "fallback from Q4_K" in lines["blk.0.ffn_down.weight"]
    assert "fallback from Q6_K" in lines["blk.1.ffn_down.weight"]
    assert "Q4_K_M:" in proc.stdout and "2 fallbacks" in proc.stdout


def dequantized(t):
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)


def test_q4_k_m_through_a_server(tmp_path, server):
    src = tmp_path / "llama.gguf"
    tensors = write_llama(src)
    out = tmp_path / "llama-Q4_K_M.gguf"
    proc = quantctl(src, "--type", "Q4_K_M", "--out", out,
                    "--server", server.target)
    assert "fallback from Q4_K" in proc.stdout
    r = gguf.GGUFReader(str(out))
    assert r.fields["general.file_type"].contents() == 15
    assert r.fields["general.quantization_version"].contents() == 2
    assert r.fields["llama.block_count"].contents() == N_LAYER
    assert r.fields["tokenizer.ggml.tokens"].contents()[:2] == ["t0", "t1"]
    by_name = {t.name: t for t in r.tensors}
    assert list(by_name) == list(tensors)
    for name, qt in Q4_K_M_TYPES.items():
        assert by_name[name].tensor_type == qt, name
    for name, data in tensors.items():
        got = dequantized(by_name[name])
        want = data.astype(np.float32).reshape(-1)
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        # 4-bit K-quants of Gaussian weights: about 10% relative error.
        assert rel < 0.15, (name, rel)


def test_q8_0_bytes_equal_gguf_quants(tmp_path, server):
    src = tmp_path / "llama.gguf"
    tensors = write_llama(src, seed=5)
    out = tmp_path / "llama-Q8_0.gguf"
    quantctl(src, "--type", "Q8_0", "--out", out, "--server", server.target,
             "--quiet")
    r = gguf.GGUFReader(str(out))
    assert r.fields["general.file_type"].contents() == 7
    for t in r.tensors:
        data = tensors[t.name]
        if data.ndim == 1:
            assert t.tensor_type == QT.F32
            assert t.data.tobytes() == data.tobytes()
            continue
        assert t.tensor_type == QT.Q8_0, t.name
        want = gguf.quants.quantize(data.astype(np.float32), QT.Q8_0)
        assert t.data.tobytes() == want.tobytes(), t.name


def _keys(report):
    """The report's key sets: top level, totals, servers, tensors by action."""
    by_action = {}
    for t in report["tensors"]:
        by_action.setdefault(t["action"], set()).update(t)
    return (set(report), set(report["totals"]),
            set().union(*map(set, report["servers"])), by_action)


def test_killed_gguf_run_resumes_to_a_clean_output(tmp_path):
    """quantctl killed mid-run on a GGUF model leaves OUT.partial and its
    manifest; the same command sends only what the manifest lacks, and the
    output equals a clean run's, with a report shaped like a safetensors
    run's."""
    import json
    import signal
    import time

    from conftest import Server
    from safetensors.numpy import save_file

    rng = np.random.default_rng(13)
    src = tmp_path / "in.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    w.add_block_count(24)
    w.add_embedding_length(512)
    w.add_head_count(8)
    for i in range(24):
        w.add_tensor(f"blk.{i}.ffn_up.weight",
                     (rng.standard_normal((512, 512)) * 0.05).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(512, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = tmp_path / "out.gguf"
    manifest = pathlib.Path(str(out) + ".partial.manifest")
    server = Server("--workers=1")
    try:
        args = [str(BIN_DIR / "client" / "quantctl"), "quantize", str(src),
                "--type", "Q4_K_M", "--out", str(out), "--streams", "1",
                "--server", server.target]
        run = subprocess.Popen(args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:
            if manifest.exists() and len(manifest.read_text().splitlines()) >= 3:
                break
            time.sleep(0.002)
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=60)
        assert not out.exists()
        assert pathlib.Path(str(out) + ".partial").exists()
        done_before = {json.loads(line)["tensor"]
                       for line in manifest.read_text().splitlines()
                       if line.endswith("}")}
        assert 3 <= len(done_before) < 24

        rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert f"{len(done_before)} resumed" in rerun.stdout
        assert not manifest.exists()
        report = json.loads(pathlib.Path(str(out) + ".report.json").read_text())
        assert report["totals"]["resumed"] == len(done_before)
        resumed = {t["name"] for t in report["tensors"] if t.get("resumed")}
        assert resumed == done_before
        # Not sent again: no attempt on a resumed tensor.
        for t in report["tensors"]:
            if t["name"] in done_before:
                assert t["attempts"] == 0, t

        clean = tmp_path / "clean.gguf"
        r = subprocess.run([*args[:6], str(clean), *args[7:]],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == clean.read_bytes()

        # The same report fields as a safetensors run.
        st = tmp_path / "m.safetensors"
        save_file({"a.weight": rng.standard_normal((64, 256)).astype(np.float32),
                   "norm.weight": np.ones(64, np.float32)}, st)
        st_out = tmp_path / "m-int4.safetensors"
        r = subprocess.run([args[0], "quantize", str(st), "--scheme", "int4_g32",
                            "--out", str(st_out), "--server", server.target,
                            "--quiet"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        st_report = json.loads(
            pathlib.Path(str(st_out) + ".report.json").read_text())
        gguf_keys, st_keys = _keys(report), _keys(st_report)
        assert gguf_keys[:3] == st_keys[:3]
        for action in ("quantized", "copied"):
            assert gguf_keys[3][action] == st_keys[3][action], action
    finally:
        assert server.stop() == 0
