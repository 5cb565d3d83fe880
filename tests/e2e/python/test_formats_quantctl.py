"""The float, codebook and HQQ formats and int<b>_full through the real quantd
and quantctl: the safetensors output's NAME.<part> tensors, decoded here with
numpy from the layout the proto documents (message Layout) and the file's
metadata, give exactly the fake-quant values quantctl --fake-quant writes,
and the report's metrics; int<b>_full's codes and scales are those of
compressed-tensors' full-range formula, and fp8_e4m3's those of ml_dtypes'
cast, both written here from their definitions."""
import json
import pathlib
import subprocess

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import BIN_DIR
from test_float_formats import dynamic_map

F32 = np.float32
NAME = "layers.0.mlp.up.weight"

# bitsandbytes' NF4 table (functional.py get_4bit_type("nf4")).
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367,
                -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=F32)
# OCP FP4 E2M1 magnitudes; bit 3 is the sign.
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=F32)


def _quantctl(*args):
    return subprocess.run([str(BIN_DIR / "client" / "quantctl"), *args],
                          capture_output=True, text=True, timeout=300)


def _unpack(packed, n, bits):
    bitstream = np.unpackbits(packed, bitorder="little")[: n * bits]
    fields = bitstream.reshape(n, bits).astype(np.int64)
    return (fields << np.arange(bits)).sum(axis=1)


def _elements(codes, n, bits, element, high_first):
    codes = codes.reshape(-1)
    if bits == 4:
        lo, hi = codes & 15, codes >> 4
        pair = (hi, lo) if high_first else (lo, hi)
        codes = np.stack(pair, axis=1).reshape(-1)[:n]
    if element == "e4m3":
        return codes.astype(np.uint8).view(ml_dtypes.float8_e4m3fn).astype(F32)
    if element == "e5m2":
        return codes.astype(np.uint8).view(ml_dtypes.float8_e5m2).astype(F32)
    if element == "nf4":
        return NF4[codes]
    sign = np.where(codes & 8, F32(-1), F32(1))
    return (sign * E2M1[codes & 7]).astype(F32)


def _decode(out, layout, scheme):
    """W_hat from the NAME.<part> tensors, as message Layout states it."""
    shape = layout["shape"]
    n = int(np.prod(shape))
    fmt = layout["format"]
    codes = out[f"{NAME}.qweight"]
    group = layout["group_size"]
    g = np.arange(n) // group
    if layout.get("kind") == "codebook":
        q = _unpack(codes, n, layout["bits"])
        books = out[f"{NAME}.codebooks"].reshape(-1, layout["codebook_entries"])
        return books[g, q].reshape(shape)
    if layout.get("kind") == "hqq":
        q = _unpack(codes, n, layout["bits"]).astype(F32)
        scale = out[f"{NAME}.scales"].reshape(-1)
        zero = out[f"{NAME}.zero_points"].reshape(-1)
        return ((q - zero[g]) * scale[g]).reshape(shape)
    if layout.get("kind") is None:  # int<b>, symmetric (full range here)
        q = _unpack(codes, n, layout["bits"])
        bits = layout["bits"]
        q = np.where(q >= 1 << (bits - 1), q - (1 << bits), q)
        scale = out[f"{NAME}.scales"].reshape(-1)
        return (scale[g] * q.astype(F32)).reshape(shape)
    element = {"fp8_e4m3": "e4m3", "ocp_mxfp8": "e4m3", "fp8_e5m2": "e5m2",
               "nf4": "nf4"}.get(fmt, "e2m1")
    v = _elements(codes, n, layout["bits"], element, fmt == "nf4")
    if fmt in ("ocp_mxfp8", "ocp_mxfp4"):
        e = out[f"{NAME}.block_scales"].reshape(-1).astype(np.int32) - 127
        return (v * np.ldexp(F32(1), e)[g].astype(F32)).reshape(shape)
    if fmt == "modelopt_nvfp4":
        tensor_scale = out[f"{NAME}.tensor_scale"].reshape(-1)[0]
        block = out[f"{NAME}.block_scales"].reshape(-1).view(ml_dtypes.float8_e4m3fn)
        d = (block.astype(F32) * tensor_scale).astype(F32)
        return (v * d[g]).reshape(shape)
    if layout["double_quant"]:
        byte = out[f"{NAME}.block_scales"].reshape(-1)
        second = out[f"{NAME}.second_scales"].reshape(-1)
        offset = out[f"{NAME}.scale_offset"].reshape(-1)[0]
        j = np.arange(byte.size)
        absmax = (dynamic_map()[byte] * second[j // 256] + offset).astype(F32)
        return (v * absmax[g]).reshape(shape)
    scale = out[f"{NAME}.scales"].reshape(-1)
    return (v * scale[g]).reshape(shape)


SCHEMES = ["int4_full_g32", "int8_full", "fp8_e4m3_channel", "fp8_e5m2_g64",
           "fp4_e2m1", "nf4", "nf4_g32_dq", "ocp_mxfp8", "ocp_mxfp4",
           "modelopt_nvfp4", "kmeans3", "pot4_g64", "hqq4", "hqq2_channel"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((48, 256)) * 0.02).astype(F32)
    w[:, 5] *= 40  # an outlier column
    path = tmp / "model.safetensors"
    save_file({NAME: w}, path)
    return tmp, path, w


def _run(server, tmp, path, scheme, *extra):
    out_path = tmp / f"{scheme}{'.fq' if extra else ''}.safetensors"
    r = _quantctl("quantize", str(path), "--scheme", scheme, "--out",
                  str(out_path), "--server", server.target, "--progress",
                  "none", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out_path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(header_len))["__metadata__"]
    report = json.loads(pathlib.Path(str(out_path) + ".report.json").read_text())
    return load_file(out_path), meta, report


@pytest.mark.parametrize("scheme", SCHEMES)
def test_parts_decode_to_the_fake_quant_values(server, model, scheme):
    tmp, path, w = model
    out, meta, report = _run(server, tmp, path, scheme)
    layout = json.loads(meta[f"quantd.{NAME}"])
    w_hat = _decode(out, layout, scheme)
    fq, _, _ = _run(server, tmp, path, scheme, "--fake-quant")
    np.testing.assert_array_equal(w_hat.view(np.uint32),
                                  fq[NAME].astype(F32).view(np.uint32))
    # The report's metrics are those of the decoded values.
    m = [t for t in report["tensors"] if t["name"] == NAME][0]["metrics"]
    err = w.astype(np.float64) - w_hat.astype(np.float64)
    assert m["mse"] == pytest.approx(np.mean(err ** 2), rel=1e-9)
    assert m["bits_per_weight"] == pytest.approx(layout.get(
        "bits_per_weight", m["bits_per_weight"]), rel=1e-12)


@pytest.mark.parametrize("bits,group", [(4, 32), (8, 256)])
def test_int_full_is_compressed_tensors_formula(server, model, bits, group):
    """calculate_qparams: scale = amax / ((2^b - 1) / 2), 0 -> finfo(f32).eps;
    _quantize: round(clamp(x / scale, -2^(b-1), 2^(b-1) - 1))."""
    tmp, path, w = model
    scheme = f"int{bits}_full_g{group}" if group != 256 else f"int{bits}_full"
    out, meta, _ = _run(server, tmp, path, scheme)
    groups = w.reshape(-1, group)
    amax = np.abs(groups).max(axis=1)
    scale = (amax / F32((2 ** bits - 1) / 2)).astype(F32)
    scale = np.where(scale == 0, np.finfo(F32).eps, scale).astype(F32)
    q = np.round(np.clip(groups / scale[:, None], -(2 ** (bits - 1)),
                         2 ** (bits - 1) - 1)).astype(np.int64).reshape(-1)
    np.testing.assert_array_equal(out[f"{NAME}.scales"].reshape(-1).view(np.uint32),
                                  scale.view(np.uint32))
    got = _unpack(out[f"{NAME}.qweight"], q.size, bits)
    np.testing.assert_array_equal(got, q & ((1 << bits) - 1))
    assert json.loads(meta[f"quantd.{NAME}"])["full_range"] is True


def test_fp8_e4m3_channel_is_ml_dtypes_cast(server, model):
    tmp, path, w = model
    out, _, _ = _run(server, tmp, path, "fp8_e4m3_channel")
    scale = (np.abs(w).max(axis=1) / F32(448)).astype(F32)
    want = (w / scale[:, None]).astype(F32).astype(ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(out[f"{NAME}.scales"].reshape(-1), scale)
    np.testing.assert_array_equal(out[f"{NAME}.qweight"].reshape(-1),
                                  want.view(np.uint8).reshape(-1))
