"""Round trips through a real server, checked against the numpy reference
of the documented formulas: codes byte for byte, scales and zero points
exactly, dequantize() bit for bit with the server's values, metrics."""
import numpy as np
import pytest

import quantd
import reference

SCHEMES = [
    "int8", "int8_asym", "int8_tensor", "int7_asym_g32", "int6_g64",
    "int5_asym_channel", "int4", "int4_asym_g128", "int4_tensor", "int3",
    "int3_asym_g16", "int2_asym", "int2_g8",
]


def check_against_reference(q, w, scheme):
    ref = reference.quantize(w, scheme)
    assert q.scheme == quantd.scheme_name(quantd.parse_scheme(scheme))
    assert q.shape == w.shape
    assert q.layout.num_elements == w.size
    assert q.layout.packed_bytes == ref["codes"].size
    np.testing.assert_array_equal(q.codes, ref["codes"])
    np.testing.assert_array_equal(q.scales, ref["scales"])
    assert q.scales.dtype == np.float32
    if ref["zero_points"] is None:
        assert q.zero_points is None and not q.layout.has_zero_points
    else:
        assert q.zero_points.dtype == np.uint8
        np.testing.assert_array_equal(q.zero_points, ref["zero_points"])
    np.testing.assert_array_equal(q.unpack_codes(), ref["values"])
    np.testing.assert_array_equal(q.dequantize(), ref["dequantized"])
    # The server's fake-quant values equal ours bit for bit.
    assert q.dequantized.dtype == np.float32 and q.dequantized.shape == w.shape
    np.testing.assert_array_equal(q.dequantize().view(np.uint32),
                                  q.dequantized.view(np.uint32))
    mse, max_abs, sqnr, cosine = reference.metrics(w, ref["dequantized"])
    assert q.metrics.mse == pytest.approx(mse, rel=1e-5)
    assert q.metrics.rmse == pytest.approx(np.sqrt(mse), rel=1e-5)
    assert q.metrics.max_abs_err == pytest.approx(max_abs, rel=1e-6)
    assert q.metrics.sqnr_db == pytest.approx(sqnr, rel=1e-5)
    assert q.metrics.cosine == pytest.approx(cosine, rel=1e-6)
    assert q.metrics.bits_per_weight == pytest.approx(ref["bits_per_weight"])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_schemes_match_the_documented_formulas(client, scheme):
    seed = sum(map(ord, scheme))
    w = np.random.default_rng(seed).standard_normal((48, 256)).astype(np.float32)
    w[0, :7] = 0  # some exact zeros
    w[5] *= 40    # a row with a much larger range
    q = client.quantize(w, scheme, name=f"w-{scheme}")
    assert q.name == f"w-{scheme}"
    assert q.dtype == "F32" and q.attempts == 1 and q.target == client.targets[0]
    assert q.bytes_in == w.nbytes
    check_against_reference(q, w, scheme)


def test_odd_shapes(client):
    rng = np.random.default_rng(11)
    for shape, scheme in [((3, 5, 7), "int3_asym"), ((13,), "int5"),
                          ((), "int8_tensor"), ((2, 3, 40), "int4_g8")]:
        w = rng.standard_normal(shape).astype(np.float32)
        q = client.quantize(w, scheme)
        check_against_reference(q, w, scheme)


def test_all_zero_tensor_comes_back_exactly(client):
    w = np.zeros((4, 16), np.float32)
    q = client.quantize(w, "int4_asym_g8")
    np.testing.assert_array_equal(q.dequantize(), w)
    assert q.metrics.sqnr_db == float("inf")


def test_f16_input(client):
    w16 = (np.random.default_rng(3).standard_normal((32, 128)) * 3).astype(np.float16)
    q = client.quantize(w16, "int4_asym_g32")
    assert q.dtype == "F16" and q.bytes_in == w16.nbytes
    check_against_reference(q, w16.astype(np.float32), "int4_asym_g32")



def test_bf16_input_ml_dtypes_and_raw_bits(client):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w = np.random.default_rng(4).standard_normal((16, 64)).astype(np.float32)
    wb = w.astype(ml_dtypes.bfloat16)
    q = client.quantize(wb, "int6_g16")
    assert q.dtype == "BF16" and q.bytes_in == wb.size * 2
    check_against_reference(q, wb.astype(np.float32), "int6_g16")
    raw = client.quantize(wb.view(np.uint16), "int6_g16", dtype="bf16")
    np.testing.assert_array_equal(raw.codes, q.codes)
    # float32 values converted to bf16 on the way out.
    conv = client.quantize(w, "int6_g16", dtype="bf16")
    np.testing.assert_array_equal(conv.codes, q.codes)


def test_float64_is_sent_as_f32_and_non_contiguous_views_work(client):
    w = np.random.default_rng(5).standard_normal((64, 32))
    q = client.quantize(w.T, "int8")  # a transposed float64 view
    assert q.dtype == "F32" and q.shape == q.layout.shape == (32, 64)
    check_against_reference(q, w.T.astype(np.float32), "int8")


def test_output_kinds(client):
    w = np.random.default_rng(6).standard_normal((8, 64)).astype(np.float32)
    both = client.quantize(w, "int4")
    packed = client.quantize(w, "int4", output="packed")
    assert packed.dequantized is None
    np.testing.assert_array_equal(packed.codes, both.codes)
    np.testing.assert_array_equal(packed.dequantize(), both.dequantized)
    fake = client.quantize(w, "int4", output="fake_quant")
    assert fake.codes is None and fake.scales is None
    np.testing.assert_array_equal(fake.dequantized, both.dequantized)
    with pytest.raises(ValueError, match="no packed codes"):
        fake.dequantize()
    with pytest.raises(ValueError, match="output must be"):
        client.quantize(w, "int4", output="everything")


def test_multi_chunk_tensor(server):
    # 3 MiB of input in 256 KiB chunks, int8 codes and values of 3 MiB back.
    w = np.random.default_rng(8).standard_normal((768, 1024)).astype(np.float32)
    with quantd.Client(server.target, chunk_bytes=256 << 10) as c:
        q = c.quantize(w, "int8_asym_g256")
    check_against_reference(q, w, "int8_asym_g256")


def test_server_info(client):
    info = client.server_info()
    assert info.target == client.targets[0]
    assert info.version and info.kernel_isa in ("scalar", "avx2", "avx512")
    assert info.workers == 2
    assert {"int2", "int4", "int8"} <= set(info.format_names)
    assert set(info.dtypes) == {"F32", "F16", "BF16"}
    assert info.limits.max_chunk_bytes == 1 << 20
    int4 = next(f for f in info.formats if f.name == "int4")
    assert int4.bits == 4 and int4.symmetric and int4.asymmetric
    assert set(int4.granularities) == {"tensor", "channel", "group"}
