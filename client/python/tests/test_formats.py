"""The float, codebook and HQQ formats and int<b>_full through the SDK: each
result's parts (codes, scales, block scales, second scales, codebooks, zero
points, tensor scale) checked against numpy recipes written here from the
formats' definitions (ml_dtypes for the FP8 / FP4 / E8M0 casts), and the
SDK's dequantize() equal to the server's fake-quant values for every
format. A format the server does not list in ServerInfo.formats is skipped,
naming it.
"""
import dataclasses

import ml_dtypes
import numpy as np
import pytest

import quantd  # noqa: F401  (assembled by conftest)
from quantd import tensor as qt

F32 = np.float32


def weights(rows=48, cols=256, seed=0):
    """Gaussian weights with a few outlier columns and an all-zero row."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(F32) * F32(0.05)
    w[:, 7] *= F32(40)
    w[3] = 0
    w[5, 100:140] = F32(1e-3)
    return w


def server_formats(client):
    return {f.name.lower(): f for f in client.server_info().formats}


def need(client, fmt):
    if fmt not in server_formats(client):
        pytest.skip(f"the server has no {fmt} format (ServerInfo.formats)")


# --- the decoders against ml_dtypes, no server ----------------------------------

def test_element_decoders_match_ml_dtypes():
    codes = np.arange(256, dtype=np.uint8)
    for decode, dtype in ((qt.decode_e4m3, ml_dtypes.float8_e4m3fn),
                          (qt.decode_e5m2, ml_dtypes.float8_e5m2),
                          (qt.decode_e8m0, ml_dtypes.float8_e8m0fnu)):
        want = codes.view(dtype).astype(F32)
        got = decode(codes)
        assert got.dtype == F32
        assert np.array_equal(got, want, equal_nan=True), decode.__name__
        # Signed zeros too.
        finite = ~np.isnan(want)
        assert np.array_equal(np.signbit(got[finite]), np.signbit(want[finite])), \
            decode.__name__
    nibbles = np.arange(16, dtype=np.uint8)
    want = nibbles.view(ml_dtypes.float4_e2m1fn).astype(F32)
    assert np.array_equal(qt.decode_e2m1(nibbles), want)
    assert np.array_equal(np.signbit(qt.decode_e2m1(nibbles)), np.signbit(want))


def test_nf4_tables():
    t = qt.NF4_VALUES
    assert t.shape == (16,) and t[0] == -1 and t[7] == 0 and t[15] == 1
    assert np.all(np.diff(t) > 0)
    m = qt.nf4_dynamic_map()
    # 2 * (1 + 2 + ... + 64) means of linspace points, 0 and 1, sorted.
    assert m.shape == (256,) and m.dtype == F32
    assert np.all(np.diff(m) >= 0) and m[-1] == 1 and np.count_nonzero(m == 0) == 1
    assert np.array_equal(m[m < 0], -m[(m > 0) & (m < 1)][::-1])
    # The smallest magnitude: 1e-6 * (0.1 + 1) / 2; the largest below 1 the
    # mean of the last two of 65 points in [0.1, 1].
    assert m[128] == F32(F32(1e-6) * ((F32(0.1) + F32(1.0)) / F32(2)))
    step = (F32(1.0) - F32(0.1)) / F32(64)
    assert m[-2] == F32((F32(1.0) - step + F32(1.0)) / F32(2))


# --- every format through the server ----------------------------------------------

SCHEMES = [
    ("int4_full_g128", "int4"), ("int8_full_channel", "int8"),
    ("int4_full_tensor", "int4"),
    ("fp8_e4m3", "fp8_e4m3"), ("fp8_e4m3_channel", "fp8_e4m3"),
    ("fp8_e4m3_g128", "fp8_e4m3"), ("fp8_e5m2_channel", "fp8_e5m2"),
    ("fp4_e2m1", "fp4_e2m1"), ("fp4_e2m1_channel", "fp4_e2m1"),
    ("nf4", "nf4"), ("nf4_g32_dq", "nf4"),
    ("ocp_mxfp8", "ocp_mxfp8"), ("ocp_mxfp4", "ocp_mxfp4"),
    ("modelopt_nvfp4", "modelopt_nvfp4"),
    ("kmeans4_g128", "kmeans4"), ("kmeans3_channel", "kmeans3"),
    ("pot4_g64", "pot4"), ("pot3_channel", "pot3"),
    ("hqq4_g64", "hqq4"), ("hqq2_channel", "hqq2"),
]


def quantize(client, scheme, w):
    try:
        return client.quantize(w, scheme, name=f"w.{scheme}", output="both")
    except quantd.InvalidArgumentError as e:
        if "full" in scheme:
            pytest.skip(f"the server does not take {scheme}: {e}")
        raise


@pytest.mark.parametrize("scheme,fmt", SCHEMES, ids=[s for s, _ in SCHEMES])
def test_dequantize_equals_server(client, scheme, fmt):
    need(client, fmt)
    w = weights()
    q = quantize(client, scheme, w)
    if "full" in scheme and not q.layout.full_range:
        pytest.skip(f"the server ignores Scheme.full_range ({q.scheme})")
    assert q.dequantized.shape == w.shape
    got = q.dequantize()
    assert got.dtype == F32 and got.shape == w.shape
    assert np.array_equal(got, q.dequantized), scheme
    assert q.unpack_codes().shape == w.shape
    # The SDK's own SQNR of its values equals the server's.
    err = np.linalg.norm(w.astype(np.float64) - got)
    assert q.metrics.sqnr_db == pytest.approx(
        20 * np.log10(np.linalg.norm(w.astype(np.float64)) / err), abs=1e-4)


def group_amax(w, g):
    return np.max(np.abs(w.reshape(-1, g)), axis=1)


def test_int_full_range_recipe(client):
    """int<b>_full: scale = amax / ((2^b - 1) / 2), q = clamp(rint(x / scale))."""
    need(client, "int4")
    w = weights()
    for scheme, b, g in (("int4_full_g128", 4, 128), ("int8_full_channel", 8, 256)):
        q = quantize(client, scheme, w)
        if not q.layout.full_range:
            pytest.skip(f"the server ignores Scheme.full_range ({q.scheme})")
        assert q.scheme == scheme and q.zero_points is None
        scale = (group_amax(w, g) / F32((2 ** b - 1) / 2)).astype(F32)
        scale[scale == 0] = np.finfo(F32).eps
        assert np.array_equal(q.scales.reshape(-1), scale), scheme
        codes = np.clip(np.rint(w.reshape(-1, g) / scale[:, None]),
                        -2 ** (b - 1), 2 ** (b - 1) - 1)
        assert np.array_equal(q.unpack_codes().reshape(-1, g), codes), scheme


FP = {"fp8_e4m3": (ml_dtypes.float8_e4m3fn, 448.0),
      "fp8_e5m2": (ml_dtypes.float8_e5m2, 57344.0),
      "fp4_e2m1": (ml_dtypes.float4_e2m1fn, 6.0)}


@pytest.mark.parametrize("scheme,fmt,g", [
    ("fp8_e4m3", "fp8_e4m3", None), ("fp8_e4m3_channel", "fp8_e4m3", 256),
    ("fp8_e5m2_g128", "fp8_e5m2", 128), ("fp4_e2m1", "fp4_e2m1", 32)])
def test_fp_recipe(client, scheme, fmt, g):
    """scale = amax / fmax per group (1 for a zero group), codes the
    round-to-nearest-even cast of x / scale."""
    need(client, fmt)
    w = weights()
    q = quantize(client, scheme, w)
    dtype, fmax = FP[fmt]
    g = g or w.size
    amax = group_amax(w, g)
    scale = (amax / F32(fmax)).astype(F32)
    scale[scale == 0] = 1
    assert q.layout.kind == "float" and q.layout.element_format == fmt[-4:]
    assert np.array_equal(q.scales.reshape(-1), scale)
    x = (w.reshape(-1, g) / scale[:, None]).astype(F32)
    want = x.astype(dtype).view(np.uint8).reshape(-1)
    got = q.unpack_codes().reshape(-1)
    if fmt == "fp4_e2m1":
        want = want & 15
    assert np.array_equal(got, want), scheme


def test_mx_recipe(client):
    """OCP MX: E8M0 byte = clamp(floor(log2 amax) - emax, -127, 127) + 127 per
    32 elements; elements the cast of x / 2^e."""
    need(client, "ocp_mxfp4")
    for fmt, dtype, emax in (("ocp_mxfp4", ml_dtypes.float4_e2m1fn, 2),
                             ("ocp_mxfp8", ml_dtypes.float8_e4m3fn, 8)):
        if fmt not in server_formats(client):
            continue
        w = weights()
        q = quantize(client, fmt, w)
        assert q.layout.block_scale_format == "e8m0"
        assert q.scales is None and q.block_scales.shape == (48, 256 // 32)
        amax = group_amax(w, 32).astype(np.float64)
        e = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1))), -127)
        e = np.clip(e - emax, -127, 127)
        assert np.array_equal(q.block_scales.reshape(-1), (e + 127).astype(np.uint8))
        x = (w.reshape(-1, 32) / np.ldexp(F32(1), e.astype(int))[:, None]).astype(F32)
        # The encoding saturates (|x| / 2^e reaches 512 > 448 for E4M3, where
        # ml_dtypes' cast would give NaN).
        fmax = F32(ml_dtypes.finfo(dtype).max)
        want = np.clip(x, -fmax, fmax).astype(dtype).view(np.uint8).reshape(-1)
        if fmt == "ocp_mxfp4":
            want = want & 15
        assert np.array_equal(q.unpack_codes().reshape(-1), want), fmt


def test_nvfp4_recipe(client):
    """ModelOpt NVFP4: g = amax / 2688, block scale E4M3(amax_b / (6 g)),
    elements E2M1(x / (e4m3 * g))."""
    need(client, "modelopt_nvfp4")
    w = weights()
    q = quantize(client, "modelopt_nvfp4", w)
    g = F32(np.max(np.abs(w)) / F32(2688))
    assert q.tensor_scale == g and q.layout.block_scale_format == "e4m3"
    assert q.block_scales.shape == (48, 256 // 16)
    s = (group_amax(w, 16) / (F32(6) * g)).astype(F32)
    s[s == 0] = 1
    byte = s.astype(ml_dtypes.float8_e4m3fn)
    assert np.array_equal(q.block_scales.reshape(-1), byte.view(np.uint8))
    d = (byte.astype(F32) * g).astype(F32)
    x = np.where(d[:, None] > 0, w.reshape(-1, 16) / np.where(d > 0, d, 1)[:, None], 0)
    want = x.astype(F32).astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 15
    assert np.array_equal(q.unpack_codes().reshape(-1), want.reshape(-1))


def test_nf4_parts(client):
    """NF4: absmax per block, codes the nearest table value (first in the
    high nibble); double quantization sends 8-bit absmax codes, one f32
    second scale per 256 blocks and the offset."""
    need(client, "nf4")
    w = weights(rows=64, cols=512)
    q = quantize(client, "nf4", w)
    assert q.layout.high_nibble_first and q.layout.element_format == "nf4"
    assert np.array_equal(q.scales.reshape(-1), group_amax(w, 64))
    # The first element of each byte is in the high nibble.
    assert np.array_equal(q.codes[:4] >> 4, q.unpack_codes().reshape(-1)[0:8:2])
    # bitsandbytes: s = clamp(x * (1 / max(absmax, 1e-38)), -1, 1) in f32, the
    # code the number of f32 midpoints of the table below s.
    inv = (F32(1) / np.maximum(q.scales.reshape(-1, 1), F32(1e-38))).astype(F32)
    s = np.clip((w.reshape(-1, 64) * inv).astype(F32), -1, 1)
    t = qt.NF4_VALUES
    mid = ((t[:-1] + t[1:]) / F32(2)).astype(F32)
    want = np.sum(s[..., None] > mid, axis=-1)
    assert np.array_equal(q.unpack_codes().reshape(-1), want.reshape(-1))
    dq = quantize(client, "nf4_g64_dq", w)
    blocks = w.size // 64
    assert dq.scales is None and dq.block_scales.size == blocks
    assert dq.layout.block_scale_format == "dynamic_map"
    assert dq.second_scales.shape == (-(-blocks // 256),)
    assert dq.layout.scale_offset == pytest.approx(group_amax(w, 64).mean(), rel=1e-6)
    assert np.array_equal(dq.unpack_codes(), q.unpack_codes())


def test_codebook_and_hqq_parts(client):
    need(client, "kmeans4")
    w = weights()
    q = quantize(client, "kmeans4_g128", w)
    assert q.layout.kind == "codebook" and q.codebooks.shape == (48 * 2, 16)
    assert np.all(np.diff(q.codebooks, axis=1) >= 0)  # sorted centroids
    codes = q.unpack_codes().reshape(-1, 128)
    # Every code names its nearest centroid.
    dist = np.abs(w.reshape(-1, 128)[..., None] - q.codebooks[:, None, :])
    chosen = np.take_along_axis(dist, codes[..., None].astype(int), -1)[..., 0]
    assert np.all(chosen <= dist.min(axis=-1) * (1 + 1e-6) + 1e-12)
    if "pot4" in server_formats(client):
        p = quantize(client, "pot4_g64", w)
        scale = group_amax(w, 64)
        assert np.array_equal(p.scales.reshape(-1), scale)
        m = np.arange(8)
        table = np.where(m == 0, 0, np.ldexp(np.float64(1), -(m - 1)))
        want = np.concatenate([table, -table])[None, :] * scale[:, None]
        assert np.array_equal(p.codebooks, want.astype(F32))
        # The tables the scales imply, when a container keeps only those.
        assert np.array_equal(qt.pot_codebooks(p.scales, 4), p.codebooks)
        implied = dataclasses.replace(p, codebooks=None)
        assert np.array_equal(implied.dequantize(), p.dequantized)
    if "hqq4" in server_formats(client):
        h = quantize(client, "hqq4_g64", w)
        assert h.layout.kind == "hqq" and h.zero_points.dtype == F32
        assert h.zero_points.shape == h.scales.shape == (48, 4)
        assert h.unpack_codes().max() <= 15
