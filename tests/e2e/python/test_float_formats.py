"""The low-precision float formats of kernels/float_formats.h against
independent computations of their documented recipes: numpy for the scales
and ml_dtypes' casts (float8_e4m3fn, float8_e5m2, float4_e2m1fn,
float8_e8m0fnu) for the element rounding. For every format the codes, the
scales and the dequantized values must be identical bit for bit, from the
dispatched fast path and from the scalar reference, on random, outlier and
hard inputs (ties between representable values, signed zeros, f32
subnormals, all-zero blocks, values near the f32 limit). OCP MXFP4 is also
compared with ggml's MXFP4 as the gguf package implements it, where the two
are the same thing. Our outputs come from tests/kernels/float_quantize_tool.
"""
import subprocess

import ml_dtypes
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf import quants

from conftest import BIN_DIR

TOOL = BIN_DIR / "tests" / "kernels" / "float_quantize_tool"
F32 = np.float32

E4M3 = (ml_dtypes.float8_e4m3fn, 448.0)
E5M2 = (ml_dtypes.float8_e5m2, 57344.0)
E2M1 = (ml_dtypes.float4_e2m1fn, 6.0)

# bitsandbytes' NF4 table (bitsandbytes/functional.py, get_4bit_type("nf4")).
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
    0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=F32)


def run_tool(tmp_path, mode, fmt, x, *flags):
    assert TOOL.exists(), f"{TOOL} not built"
    out = tmp_path / mode
    out.mkdir(exist_ok=True)
    r = subprocess.run(
        [str(TOOL), mode, fmt, str(x.shape[1]), str(out), *flags],
        input=np.ascontiguousarray(x, "<f4").tobytes(), capture_output=True,
        check=False)
    assert r.returncode == 0, r.stderr.decode()

    def read(name, dtype):
        return np.fromfile(out / name, dtype=dtype)

    tensor = read("tensor.f32", F32)
    return {
        "codes": read("codes.bin", np.uint8),
        "scales": read("scales.f32", F32),
        "block_scales": read("block_scales.bin", np.uint8),
        "second_scales": read("second_scales.f32", F32),
        "scale_offset": tensor[0],
        "tensor_scale": tensor[1],
        "dequant": read("dequant.f32", F32).reshape(x.shape),
    }


def bits(a):
    return np.asarray(a, F32).view(np.uint32)


def assert_bits_equal(ours, expected, what):
    ours, expected = np.asarray(ours, F32), np.asarray(expected, F32)
    assert ours.shape == expected.shape, what
    bad = np.flatnonzero(bits(ours).ravel() != bits(expected).ravel())
    assert bad.size == 0, (
        f"{what}: {bad.size} differ, first at {bad[0]}: "
        f"{ours.ravel()[bad[0]]!r} vs {expected.ravel()[bad[0]]!r}")


def pack(codes, high_first=False):
    codes = codes.reshape(-1).astype(np.uint8)
    first, second = codes[0::2], codes[1::2]
    if high_first:
        return (first << 4) | second
    return first | (second << 4)


def cast(v, element):
    """ml_dtypes' cast of v (already within +-fmax): codes and values."""
    dtype, _ = element
    q = v.astype(dtype)
    return q.view(np.uint8), q.astype(F32)


# ------------------------------------------------------------- recipes

def scaled_recipe(x, element, group):
    """fp8_e4m3 / fp8_e5m2 / fp4_e2m1: scale = amax / fmax (1 if 0)."""
    _, fmax = element
    g = x.reshape(-1, group)
    scale = (np.abs(g).max(axis=1) / F32(fmax)).astype(F32)
    scale[scale == 0] = 1
    v = np.clip(g / scale[:, None], -fmax, fmax).astype(F32)
    codes, values = cast(v, element)
    return codes, scale, (values * scale[:, None]).astype(F32)


def dynamic_map():
    """bitsandbytes' create_dynamic_map(True, 7, 8) in f32 (see header)."""
    data = []
    for i in range(7):
        steps = 2 ** i + 1
        start, end = F32(0.1), F32(1.0)
        step = F32((end - start) / F32(steps - 1))
        b = np.array([start + step * F32(k) if k < steps // 2
                      else end - step * F32(steps - k - 1)
                      for k in range(steps)], dtype=F32)
        means = ((b[:-1] + b[1:]) / F32(2)).astype(F32)
        scale = F32(10.0 ** (i - 6))
        data += list((scale * means).astype(F32))
        data += list((-scale * means).astype(F32))
    data += [F32(0), F32(1)]
    return np.sort(np.array(data, dtype=F32))


def bnb_blockwise(values, table, block):
    """bitsandbytes' quantize_4bit / quantize_blockwise (default backend):
    absmax per block, s = clamp(x * (1 / max(absmax, 1e-38)), -1, 1), code =
    the number of table midpoints below s. Returns codes, absmax."""
    mid = ((table[:-1] + table[1:]) / F32(2)).astype(F32)
    n = values.size
    codes = np.empty(n, np.uint8)
    absmaxes = []
    for begin in range(0, n, block):
        chunk = values[begin:begin + block]
        absmax = np.abs(chunk).max().astype(F32)
        inv = (F32(1) / np.maximum(absmax, F32(1e-38))).astype(F32)
        s = np.clip((chunk * inv).astype(F32), -1, 1)
        codes[begin:begin + block] = np.searchsorted(mid, s, side="left")
        absmaxes.append(absmax)
    return codes, np.array(absmaxes, dtype=F32)


def mx_recipe(x, element):
    dtype, fmax = element
    emax = int(np.floor(np.log2(fmax)))
    g = x.reshape(-1, 32)
    amax = np.abs(g).max(axis=1)
    e = np.frexp(amax)[1].astype(np.int64) - 1  # exact floor(log2)
    e = np.where(amax > 0, e - emax, -127).clip(-127, 127)
    scale = np.ldexp(F32(1), e).astype(F32)
    byte = (e + 127).astype(np.uint8)
    # The E8M0 byte is what ml_dtypes makes of 2^e.
    assert (scale.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8) == byte).all()
    v = np.clip(g / scale[:, None], -fmax, fmax).astype(F32)
    codes, values = cast(v, element)
    return codes, byte, (values * scale[:, None]).astype(F32)


def nvfp4_recipe(x):
    g = F32(np.abs(x).max() / F32(2688))
    if g == 0:
        g = F32(1)
    blocks = x.reshape(-1, 16)
    s = (np.abs(blocks).max(axis=1) / (F32(6) * g)).astype(F32)
    s[s == 0] = 1
    s8 = s.astype(ml_dtypes.float8_e4m3fn)
    d = (s8.astype(F32) * g).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.clip(blocks / d[:, None], -6, 6).astype(F32)
    v[d == 0] = 0
    codes, values = cast(v, E2M1)
    codes = np.where(d[:, None] == 0, 0, codes).astype(np.uint8)
    block_scale = (s8.astype(F32) * g).astype(F32)
    return codes, s8.view(np.uint8), g, (values * block_scale[:, None]).astype(F32)


# ------------------------------------------------------------- inputs

def gaussian(rows, cols, seed, outliers):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.02, (rows, cols)).astype(F32)
    if outliers:
        x[:, 5::37] *= 50
    return x


def hard(rows, cols, seed):
    """Ties of every element grid (at block scale 1: one element is the
    block's fmax), signed zeros, subnormals, huge values, zero blocks."""
    rng = np.random.default_rng(seed)
    pool = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 1.0625, 1.1875,
                     0.0009765625, 0.0029296875, 0.0, -0.0, 1e-45, 3e-39,
                     2.0 ** -126, 6.0, 448.0, 3.0e38, 1e-30], dtype=F32)
    x = rng.choice(pool, size=(rows, cols)).astype(F32)
    x *= rng.choice([-1, 1], size=(rows, cols)).astype(F32)
    x[:, 0::16] = 6.0  # E2M1 blocks at scale 1 (16 and 32 element blocks)
    x[0, :] = 0.0      # all-zero rows
    x[1, : cols // 2] = -0.0
    x[2, :] = rng.choice(pool[:9], size=cols) * F32(2.0 ** -60)
    return x


INPUTS = {
    "gaussian": lambda: gaussian(8, 256, 1, False),
    "outlier_channels": lambda: gaussian(8, 256, 2, True),
    "hard": lambda: hard(8, 256, 3),
}

SCALED_CASES = [
    ("fp8_e4m3", E4M3, "tensor", None),
    ("fp8_e4m3", E4M3, "channel", None),
    ("fp8_e4m3", E4M3, "block", 32),
    ("fp8_e5m2", E5M2, "tensor", None),
    ("fp8_e5m2", E5M2, "channel", None),
    ("fp8_e5m2", E5M2, "block", 128),
    ("fp4_e2m1", E2M1, "block", 16),
    ("fp4_e2m1", E2M1, "block", 32),
    ("fp4_e2m1", E2M1, "channel", None),
    ("fp4_e2m1", E2M1, "tensor", None),
]


@pytest.mark.parametrize("mode", ["quantize", "reference"])
@pytest.mark.parametrize("inputs", sorted(INPUTS))
@pytest.mark.parametrize("fmt,element,granularity,block", SCALED_CASES)
def test_scaled_formats(tmp_path, mode, inputs, fmt, element, granularity,
                        block):
    x = INPUTS[inputs]()
    flags = [f"--granularity={granularity}"]
    if block:
        flags.append(f"--block={block}")
    ours = run_tool(tmp_path, mode, fmt, x, *flags)
    group = {"tensor": x.size, "channel": x.shape[1]}.get(granularity, block)
    codes, scale, values = scaled_recipe(x, element, group)
    assert_bits_equal(ours["scales"], scale, "scales")
    expected_codes = codes.reshape(-1) if fmt != "fp4_e2m1" else pack(codes)
    assert (ours["codes"] == expected_codes).all()
    assert_bits_equal(ours["dequant"], values.reshape(x.shape), "dequantized")


@pytest.mark.parametrize("mode", ["quantize", "reference"])
@pytest.mark.parametrize("inputs", sorted(INPUTS))
@pytest.mark.parametrize("block", [64, 32])
def test_nf4(tmp_path, mode, inputs, block):
    x = INPUTS[inputs]()
    ours = run_tool(tmp_path, mode, "nf4", x, f"--block={block}")
    codes, absmax = bnb_blockwise(x.reshape(-1), NF4, block)
    assert (ours["codes"] == pack(codes, high_first=True)).all()
    assert_bits_equal(ours["scales"], absmax, "absmax")
    values = (NF4[codes].reshape(-1, block) * absmax[:, None]).astype(F32)
    assert_bits_equal(ours["dequant"], values.reshape(x.shape), "dequantized")


@pytest.mark.parametrize("mode", ["quantize", "reference"])
@pytest.mark.parametrize("inputs", sorted(INPUTS))
def test_nf4_double_quant(tmp_path, mode, inputs):
    # 1024 x 64: 1024 absmax values in four second-level blocks of 256.
    x = np.resize(INPUTS[inputs](), (1024, 64)).astype(F32)
    if inputs != "hard":  # (hard has 3e38 already)
        x[7] *= 100  # blocks far from the mean
    ours = run_tool(tmp_path, mode, "nf4", x, "--double_quant")
    codes, absmax = bnb_blockwise(x.reshape(-1), NF4, 64)
    assert (ours["codes"] == pack(codes, high_first=True)).all()
    offset = F32(np.cumsum(absmax.astype(np.float64))[-1] / absmax.size)
    centred = (absmax - offset).astype(F32)
    dyn = dynamic_map()
    codes2, absmax2 = bnb_blockwise(centred, dyn, 256)
    assert bits(ours["scale_offset"]) == bits(offset)
    assert (ours["block_scales"] == codes2).all()
    assert_bits_equal(ours["second_scales"], absmax2, "second-level absmax")
    absmax_hat = ((dyn[codes2].reshape(-1, 256) * absmax2[:, None]).reshape(-1)
                  + offset).astype(F32)
    values = (NF4[codes].reshape(-1, 64) * absmax_hat[:, None]).astype(F32)
    assert_bits_equal(ours["dequant"], values.reshape(x.shape), "dequantized")


@pytest.mark.parametrize("mode", ["quantize", "reference"])
@pytest.mark.parametrize("inputs", sorted(INPUTS))
@pytest.mark.parametrize("fmt,element", [("ocp_mxfp8", E4M3),
                                         ("ocp_mxfp4", E2M1)])
def test_ocp_mx(tmp_path, mode, inputs, fmt, element):
    x = INPUTS[inputs]()
    ours = run_tool(tmp_path, mode, fmt, x)
    codes, byte, values = mx_recipe(x, element)
    assert (ours["block_scales"] == byte).all()
    expected_codes = codes.reshape(-1) if fmt == "ocp_mxfp8" else pack(codes)
    assert (ours["codes"] == expected_codes).all()
    assert_bits_equal(ours["dequant"], values.reshape(x.shape), "dequantized")


@pytest.mark.parametrize("mode", ["quantize", "reference"])
@pytest.mark.parametrize("inputs", sorted(INPUTS))
def test_modelopt_nvfp4(tmp_path, mode, inputs):
    x = INPUTS[inputs]()
    if inputs == "hard":
        # A block whose E4M3 scale underflows to 0 (s = 2^-12).
        g = F32(np.abs(x).max() / F32(2688))
        x[3, 16:32] = F32(6) * g * F32(2.0 ** -12)
    ours = run_tool(tmp_path, mode, "modelopt_nvfp4", x)
    codes, s8, g, values = nvfp4_recipe(x)
    assert bits(ours["tensor_scale"]) == bits(g)
    assert (ours["block_scales"] == s8).all()
    assert (ours["codes"] == pack(codes)).all()
    assert_bits_equal(ours["dequant"], values.reshape(x.shape), "dequantized")
    if inputs == "hard":
        assert s8[3 * 16 + 1] == 0


def test_all_zero_tensor(tmp_path):
    x = np.zeros((2, 64), F32)
    x[1] = -0.0
    for fmt in ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "nf4", "ocp_mxfp8",
                "ocp_mxfp4", "modelopt_nvfp4"]:
        ours = run_tool(tmp_path, "quantize", fmt, x)
        assert (ours["dequant"] == 0).all(), fmt
        if fmt.startswith("fp"):  # the scale of a zero group is 1
            assert (ours["scales"] == 1).all(), fmt


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "nf4",
                                 "ocp_mxfp8", "ocp_mxfp4", "modelopt_nvfp4"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused(tmp_path, fmt, bad):
    x = gaussian(2, 64, 4, False)
    x[1, 3] = bad
    r = subprocess.run([str(TOOL), "quantize", fmt, "64", str(tmp_path)],
                       input=x.tobytes(), capture_output=True, check=False)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "INVALID_ARGUMENT" in err and "element 67" in err, err


# ------------------------------------------------------ ggml's MXFP4

def test_ocp_mxfp4_against_ggml_mxfp4(tmp_path):
    """ggml's MXFP4 (gguf.quants) and OCP MXFP4 share the E8M0 exponent and
    the E2M1 values. They differ, as float_formats.h states, only in (a)
    ties at |x| / 2^e in {0.75, 1.75, 3.5}, where ggml takes the smaller
    magnitude and OCP the even code, (b) the sign of zero, and (c) the
    exponent of a block whose maximum lies just below a power of two, where
    ggml's f32 log2 rounds up."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (16, 256)).astype(F32)
    x[:, 7::29] *= 30
    # Row 0: ties on purpose, at block exponent 0 (a 6 in every block).
    ties = np.array([0.75, 1.75, 3.5, -0.75, -1.75, -3.5, 0.25, 1.25, 2.5, 5.0],
                    dtype=F32)
    x[0] = np.resize(ties, 256)
    x[0, 0::32] = 6.0
    # Row 1: block maxima just below a power of two.
    x[1] = rng.uniform(-1, 1, 256).astype(F32)
    x[1, 0::32] = np.nextafter(F32(8.0), F32(0))
    ours = run_tool(tmp_path, "quantize", "ocp_mxfp4", x)
    theirs_bytes = quants.quantize(x, GGMLQuantizationType.MXFP4)
    theirs = quants.dequantize(theirs_bytes, GGMLQuantizationType.MXFP4)
    theirs = theirs.reshape(x.shape)
    their_e = theirs_bytes.reshape(-1, 17)[:, 0]

    below_pow2 = np.zeros((16, 8), bool)
    below_pow2[1] = True
    below_pow2 = below_pow2.reshape(-1)
    # (c): one more in ggml exactly where the maximum is just below 2^k.
    assert (their_e[below_pow2] == ours["block_scales"][below_pow2] + 1).all()
    assert (their_e[~below_pow2] == ours["block_scales"][~below_pow2]).all()

    scale = np.ldexp(F32(1), ours["block_scales"].astype(np.int64) - 127)
    scaled = np.abs(x.reshape(-1, 32) / scale[:, None].astype(F32)).reshape(x.shape)
    tie = np.isin(scaled, [0.75, 1.75, 3.5])
    same_block = ~np.repeat(below_pow2.reshape(16, 8), 32, axis=1)
    agree = same_block & ~tie
    # (b): == treats -0 and +0 as equal; everything else is the same value.
    assert agree.sum() > 0.9 * x.size
    assert (ours["dequant"][agree] == theirs[agree]).all()
    # (a): at ties OCP is the even code (the larger magnitude), ggml smaller.
    assert tie.sum() > 100
    assert (np.abs(ours["dequant"][tie]) > np.abs(theirs[tie])).all()
