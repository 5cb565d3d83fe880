"""Calibration sets through the SDK against a real server: the output-space
error the server computes from G = XᵀX equals ‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖ computed
here from X and the returned Ŵ; one set serves several tensors; GRAM and
IMPORTANCE sets; an unknown set is INVALID_ARGUMENT naming it; chunks are
whole rows and carry CRC-32C."""
import math

import numpy as np
import pytest

import quantd
from quantd._pb import pb


def output_error(x, w, w_hat):
    """(relative_error, error_sq, signal_sq) from X directly, in float64."""
    x = x.astype(np.float64)
    y = x @ w.astype(np.float64).T
    e = x @ (w.astype(np.float64) - w_hat.astype(np.float64)).T
    error_sq, signal_sq = float(np.sum(e * e)), float(np.sum(y * y))
    return math.sqrt(error_sq / signal_sq), error_sq, signal_sq


def layer(seed, tokens=300, in_features=96, out_features=40):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, in_features)).astype(np.float32)
    x[:, 3] *= 20.0  # an outlier channel, as real activations have
    w = (rng.standard_normal((out_features, in_features)) * 0.1).astype(np.float32)
    return x, w


@pytest.mark.parametrize("scheme", ["int8", "int4_asym_g32", "int3_g16"])
def test_output_error_equals_numpy_from_x(client, scheme):
    x, w = layer(1)
    q = client.quantize(w, scheme, name="proj", calibration=x)
    m = q.output_metrics
    assert isinstance(m, quantd.OutputMetrics)
    assert m.calibration == "proj" and m.tokens == x.shape[0]
    rel, error_sq, signal_sq = output_error(x, w, q.dequantized)
    assert rel > 0
    assert m.relative_error == pytest.approx(rel, abs=1e-4, rel=1e-4)
    assert m.error_sq == pytest.approx(error_sq, rel=1e-3)
    assert m.signal_sq == pytest.approx(signal_sq, rel=1e-4)
    assert m.sqnr_db == pytest.approx(10 * math.log10(signal_sq / error_sq), abs=1e-2)
    # The activation range of the whole set: min-max symmetric by default.
    r = q.activation_range
    assert isinstance(r, quantd.ActivationRange)
    assert r.calibration == "proj" and r.method == "minmax" and r.symmetric
    amax = float(np.abs(x).max())
    assert max(-r.lo, r.hi) == pytest.approx(amax, rel=1e-6)
    assert r.scale == pytest.approx(amax / 127, rel=1e-6)


def test_without_calibration_the_fields_are_unset(client):
    _, w = layer(2)
    q = client.quantize(w, "int8")
    assert q.output_metrics is None and q.activation_range is None
    assert not q.importance_from_calibration


def test_one_set_serves_several_tensors_and_chunks_are_whole_rows(server):
    x, wq = layer(3, tokens=1000)
    _, wk = layer(4)
    _, wv = layer(5)
    # 96 f32 features = 384 bytes a row: 1000 bytes per chunk holds 2 rows, so
    # the set goes in 500 chunks of whole rows.
    attn_in = quantd.Calibration("layer0.attn_in", activations=x)
    chunks = [r for r in attn_in.requests(1000) if r.HasField("calibration_chunk")]
    assert len(chunks) == 500
    assert all(len(c.calibration_chunk.data) == 768 for c in chunks)
    assert [c.calibration_chunk.offset for c in chunks[:3]] == [0, 768, 1536]
    weights = {"q_proj": wq, "k_proj": wk, "v_proj": wv}
    with quantd.Client(server.target, chunk_bytes=1000) as c:
        out = {q.name: q for q in c.quantize_many(
            [(n, w, "int4_g32", "layer0.attn_in") for n, w in weights.items()],
            calibration_sets=[attn_in])}
    assert set(out) == set(weights)
    for name, w in weights.items():
        m = out[name].output_metrics
        assert m.calibration == "layer0.attn_in" and m.tokens == 1000
        rel, _, _ = output_error(x, w, out[name].dequantized)
        assert m.relative_error == pytest.approx(rel, abs=1e-4, rel=1e-4), name


def test_sets_and_tensors_mixed_on_one_stream(client):
    x1, w1 = layer(6, in_features=64)
    x2, w2 = layer(7, in_features=128)
    sets = [quantd.Calibration("a", activations=x1),
            quantd.Calibration("b", activations=x2.astype(np.float16))]
    out = {q.name: q for q in client.quantize_many(
        [("w1", w1, None, "a"), {"name": "w2", "array": w2, "calibration": sets[1]},
         ("plain", w1)], "int4", calibration_sets=sets)}
    assert out["w1"].output_metrics.calibration == "a"
    assert out["w2"].output_metrics.calibration == "b"
    assert out["plain"].output_metrics is None
    rel, _, _ = output_error(x2.astype(np.float16).astype(np.float32), w2,
                             out["w2"].dequantized)
    assert out["w2"].output_metrics.relative_error == pytest.approx(
        rel, abs=1e-4, rel=1e-4)


def test_unknown_set_is_invalid_argument_naming_it(client):
    x, w = layer(8)
    known = quantd.Calibration("known", activations=x)
    with pytest.raises(quantd.InvalidArgumentError) as e:
        list(client.quantize_many([("w", w, "int8", "no.such.set")],
                                  calibration_sets=[known]))
    assert "no.such.set" in e.value.details
    assert e.value.tensor == "w"


def test_features_must_match_the_row_length(client):
    x, _ = layer(9, in_features=32)
    _, w = layer(9, in_features=64)
    with pytest.raises(quantd.InvalidArgumentError) as e:
        client.quantize(w, "int8", name="w", calibration=x)
    assert "w" in e.value.details


def test_gram_set_gives_the_same_metrics_as_activations(client):
    x, w = layer(10)
    g = x.astype(np.float64).T @ x.astype(np.float64)
    gram = quantd.Calibration("g", gram=g, tokens=x.shape[0])
    acts = quantd.Calibration("x", activations=x)
    out = {q.name: q for q in client.quantize_many(
        [("from_g", w, "int4_asym_g32", "g"), ("from_x", w, "int4_asym_g32", "x")],
        calibration_sets=[gram, acts])}
    mg, mx = out["from_g"].output_metrics, out["from_x"].output_metrics
    assert mg.calibration == "g" and mg.tokens == x.shape[0]
    rel, _, _ = output_error(x, w, out["from_g"].dequantized)
    assert mg.relative_error == pytest.approx(rel, abs=1e-4, rel=1e-4)
    assert mg.relative_error == pytest.approx(mx.relative_error, rel=1e-4)
    # No activations, no activation range.
    assert out["from_g"].activation_range is None
    assert out["from_x"].activation_range is not None


def test_importance_set_feeds_a_ggml_format(client):
    info = client.server_info()
    fmt = next((f for f in info.formats if f.uses_importance and f.block_size
                and f.block_size <= 32), None)
    if fmt is None:
        pytest.skip("the server lists no ggml format with importance weights")
    rng = np.random.default_rng(11)
    w = rng.standard_normal((8, 256)).astype(np.float32)
    imp = rng.uniform(0.0, 4.0, 256).astype(np.float32)
    imp[:16] = 100.0
    set_ = quantd.Calibration("imatrix", importance=imp, tokens=512)
    q = client.quantize(w, fmt.name, name="w", calibration=set_)
    assert q.importance_from_calibration
    assert q.output_metrics is None and q.activation_range is None
    # The same bytes as the weights sent in the header.
    direct = client.quantize(w, fmt.name, name="w", importance=imp)
    np.testing.assert_array_equal(q.codes, direct.codes)
    assert not direct.importance_from_calibration


def test_set_checksums_fold_to_the_whole(client):
    x, _ = layer(12, tokens=50)
    reqs = list(quantd.Calibration("s", activations=x).requests(4096))
    header, chunks, end = reqs[0], reqs[1:-1], reqs[-1]
    assert header.calibration_header.kind == pb.CALIBRATION_KIND_ACTIVATIONS
    assert header.calibration_header.dtype == pb.DTYPE_F32
    assert header.calibration_header.features == 96
    assert all(quantd.crc32c(c.calibration_chunk.data) == c.calibration_chunk.crc32c
               for c in chunks)
    assert end.calibration_end.crc32c == quantd.crc32c(x.tobytes())


def test_bad_arguments_are_refused_locally():
    x = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError):
        quantd.Calibration("s")
    with pytest.raises(ValueError):
        quantd.Calibration("s", activations=x, gram=np.eye(8))
    with pytest.raises(ValueError):
        quantd.Calibration("s", gram=np.eye(8))  # no tokens
    with pytest.raises(ValueError):
        quantd.Calibration("s", activations=x, tokens=4)
    with pytest.raises(ValueError):
        list(quantd.Calibration("s", activations=x).requests(16))  # row > chunk


def test_a_bad_set_is_raised_once_naming_the_set(client):
    x, w = layer(13)
    x[7, 5] = np.inf
    with pytest.raises(quantd.InvalidArgumentError) as e:
        list(client.quantize_many([("w1", w, "int8", "bad"), ("w2", w, "int8", "bad")],
                                  calibration_sets=[quantd.Calibration("bad", activations=x)],
                                  return_exceptions=True))
    assert "'bad'" in e.value.details
    assert e.value.tensor is None


def methods_supported(client, scheme):
    """Whether the server quantizes `scheme` (a +method) with a set."""
    x, w = layer(14, tokens=64, in_features=32, out_features=8)
    try:
        client.quantize(w, scheme, name="probe", calibration=x)
        return True
    except (ValueError, quantd.InvalidArgumentError, quantd.UnimplementedError):
        return False


def test_method_text_round_trips():
    if not quantd._pb.has_field(pb.Scheme, "method"):
        with pytest.raises(ValueError):
            quantd.parse_scheme("int4_g128+gptq")
        return
    for text, canonical in [
            ("int4_asym_g128+gptq", "int4_asym_g128+gptq"),
            ("int4_g128+gptq(act_order,static_groups,damp=0.05,block=64)",
             "int4_sym_g128+gptq(act_order,static_groups,damp=0.05,block=64)"),
            ("int3_g128+awq(grid=10,noclip)", "int3_sym_g128+awq(grid=10,noclip)"),
            ("int8+smoothquant(alpha=0.5)", "int8_sym_channel+smoothquant(alpha=0.5)"),
            ("int8+rtn", "int8_sym_channel")]:
        assert quantd.scheme_name(quantd.parse_scheme(text)) == canonical
    for bad in ("int8+foo", "Q4_K+awq", "Q4_K+gptq(static_groups)",
                "int8+gptq(grid=3)", "int8+awq(alpha=1)"):
        with pytest.raises(ValueError):
            quantd.parse_scheme(bad)


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_methods_beat_rtn_in_output_space(client, method):
    scheme = "int3_asym_g32"
    if not methods_supported(client, f"{scheme}+{method}"):
        pytest.skip(f"the server does not quantize +{method}")
    x, w = layer(15, tokens=512)
    cal = quantd.Calibration("x", activations=x)
    out = {q.name: q for q in client.quantize_many(
        [("rtn", w, scheme, "x"), (method, w, f"{scheme}+{method}", "x")],
        calibration_sets=[cal])}
    q = out[method]
    rel, _, _ = output_error(x, w, q.dequantized)
    assert q.output_metrics.relative_error == pytest.approx(rel, abs=1e-4, rel=1e-4)
    assert q.output_metrics.relative_error < out["rtn"].output_metrics.relative_error
    if method == "awq":
        assert q.channel_scales is not None and q.channel_scales.shape == (96,)
        assert np.all(q.channel_scales > 0)
        np.testing.assert_allclose(q.dequantize(), q.dequantized, rtol=1e-6, atol=1e-7)
    else:
        assert q.channel_scales is None


def needs_field(message, field):
    if not quantd._pb.has_field(message, field):
        pytest.skip(f"this proto has no {message.DESCRIPTOR.name}.{field}")


def test_w8a8_check_on_held_back_rows_equals_numpy(client):
    needs_field(pb.CalibrationHeader, "holdout_rows")
    x, w = layer(21, tokens=400)
    held = 64
    cal = quantd.Calibration("x", activations=x, holdout_rows=held)
    out = {q.name: q for q in client.quantize_many(
        [("w8", w, "int8", "x"), ("w4", w, "int4_g32", "x")],
        calibration_sets=[cal])}
    q = out["w8"]
    # The statistics come from the other rows only.
    assert q.output_metrics.tokens == 400 - held
    rest = x[held:]
    assert q.activation_range.scale == np.float32(
        np.float32(np.abs(rest).max()) / np.float32(127))
    c = q.w8a8
    assert c is not None and c.rows == held and c.calibration == "x" and c.gemm
    # The integer path in numpy: round half to even, saturate, int64 sums.
    xs = x[:held]
    xq = np.clip(np.rint(xs / np.float32(c.activation_scale)), -128, 127)
    codes = q.unpack_codes().reshape(w.shape).astype(np.int64)
    acc = xq.astype(np.int64) @ codes.T
    y_int = (np.float64(c.activation_scale) * q.scales.astype(np.float64).reshape(1, -1)
             * acc.astype(np.float64))
    y = xs.astype(np.float64) @ w.astype(np.float64).T
    rel = np.linalg.norm(y_int - y) / np.linalg.norm(y)
    assert c.relative_error == pytest.approx(rel, rel=1e-4, abs=1e-6)
    clipped = np.count_nonzero(np.abs(np.rint(xs / np.float32(c.activation_scale))) > 127.5)
    assert c.clipped_fraction == pytest.approx(clipped / xs.size)
    y_w = xs.astype(np.float64) @ q.dequantized.astype(np.float64).T
    assert c.weight_only_relative_error == pytest.approx(
        np.linalg.norm(y_w - y) / np.linalg.norm(y), rel=1e-4, abs=1e-6)
    assert c.relative_error >= c.weight_only_relative_error
    # Not an int8 scheme: no check.
    assert out["w4"].w8a8 is None


def test_per_channel_ranges_follow_the_rule(client):
    needs_field(pb.ActivationRangeOptions, "per_channel")
    x, w = layer(22)
    q = client.quantize(w, "int8", name="proj", calibration=x,
                        activation_range=quantd.range_options(per_channel=True))
    r = q.activation_range
    amax = np.abs(x).max(axis=0).astype(np.float32)
    want = np.maximum(amax / np.float32(127), np.finfo(np.float32).tiny)
    np.testing.assert_array_equal(r.channel_scale, want.astype(np.float32))
    np.testing.assert_array_equal(r.channel_hi, amax)
    np.testing.assert_array_equal(r.channel_zero_point, 0)
    asym = client.quantize(
        w, "int8", name="proj", calibration=x,
        activation_range=quantd.range_options(asymmetric=True, per_channel=True))
    lo = np.minimum(x.min(axis=0), 0).astype(np.float32)
    hi = np.maximum(x.max(axis=0), 0).astype(np.float32)
    scale = ((hi - lo) / np.float32(255)).astype(np.float32)
    np.testing.assert_array_equal(asym.activation_range.channel_scale, scale)
    zp = np.clip(np.rint(-lo * (np.float32(1) / scale)), 0, 255)
    np.testing.assert_array_equal(asym.activation_range.channel_zero_point, zp)
    # Without per_channel: none.
    plain = client.quantize(w, "int8", name="proj", calibration=x,
                            activation_range="minmax")
    assert plain.activation_range.channel_scale is None
    # A histogram method per channel needs the set's channel histograms.
    with pytest.raises(quantd.InvalidArgumentError, match="channel_histograms"):
        client.quantize(w, "int8", name="proj", calibration=x,
                        activation_range=quantd.range_options("kl", per_channel=True))
    hist = quantd.Calibration("proj", activations=x, channel_histograms=True)
    p = client.quantize(w, "int8", name="proj", calibration=hist,
                        activation_range=quantd.range_options(
                            "percentile", percentile=99.0, per_channel=True))
    assert np.all(p.activation_range.channel_hi <= amax)
    assert np.count_nonzero(p.activation_range.channel_hi < amax) > len(amax) // 2


def test_gptq_onto_a_ggml_format_beats_ggml_rounding(client):
    x, w = layer(23, tokens=600, in_features=256, out_features=32)
    x = x @ np.random.default_rng(5).standard_normal((256, 256)).astype(np.float32) / 16
    scheme = "Q4_K+gptq(act_order)"
    try:
        parsed = quantd.parse_scheme(scheme)
    except ValueError:
        pytest.skip("this proto has no methods")
    assert quantd.scheme_name(parsed) == scheme
    cal = quantd.Calibration("x", activations=x)
    try:
        out = {q.name: q for q in client.quantize_many(
            [("rtn", w, "Q4_K", "x"), ("gptq", w, scheme, "x")],
            calibration_sets=[cal])}
    except quantd.InvalidArgumentError as e:
        pytest.skip(f"the server does not run gptq on block formats: {e}")
    g = out["gptq"]
    rel, _, _ = output_error(x, w, g.dequantize())
    assert g.output_metrics.relative_error == pytest.approx(rel, rel=1e-4, abs=1e-6)
    assert g.output_metrics.relative_error < 0.7 * out["rtn"].output_metrics.relative_error
    assert g.codes.nbytes == out["rtn"].codes.nbytes


def test_gptq_act_order_with_dynamic_groups_returns_g_idx(client):
    """GPTQ's desc_act with g_idx: codes in the original column order,
    g_idx[c] the group of column c, and dequantize() through it equals the
    server's fake quant bit for bit."""
    needs_field(pb.TensorResult, "group_index_crc32c")
    x, w = layer(31, tokens=512, in_features=128)
    x = x @ np.random.default_rng(6).standard_normal((128, 128)).astype(np.float32) / 12
    scheme = "int4_asym_g32+gptq(act_order)"
    cal = quantd.Calibration("x", activations=x)
    out = {q.name: q for q in client.quantize_many(
        [("plain", w, "int4_asym_g32+gptq", "x"), ("desc_act", w, scheme, "x"),
         ("static", w, "int4_asym_g32+gptq(act_order,static_groups)", "x")],
        calibration_sets=[cal])}
    q = out["desc_act"]
    assert q.layout.has_group_index
    assert out["plain"].g_idx is None and out["static"].g_idx is None
    assert q.g_idx.shape == (128,) and q.g_idx.dtype == np.int32
    # Every group of a row holds group_size columns, and the columns are
    # grouped by descending diag(XᵀX) (the quantization order).
    assert np.bincount(q.g_idx, minlength=4).tolist() == [32, 32, 32, 32]
    diag = np.einsum("ti,ti->i", x.astype(np.float64), x.astype(np.float64))
    order = np.argsort(-diag, kind="stable")
    np.testing.assert_array_equal(q.g_idx[order], np.arange(128) // 32)
    np.testing.assert_array_equal(q.dequantize(), q.dequantized)
    rel, _, _ = output_error(x, w, q.dequantize())
    assert q.output_metrics.relative_error == pytest.approx(rel, rel=1e-4, abs=1e-6)
    # The index is counted in the stored bits: 32 bits per column per row.
    assert q.metrics.bits_per_weight == pytest.approx(
        out["plain"].metrics.bits_per_weight + 32 / 40)
