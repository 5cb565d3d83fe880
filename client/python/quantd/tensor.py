"""What the server returns for one tensor, as numpy arrays, and the code
packing of proto/README.md.

    q = client.quantize(w, "int4_asym_g128")
    q.codes            # uint8, layout.packed_bytes: the packed codes
    q.scales           # float32 [rows, row_length // group_size]
    q.zero_points      # uint8, same shape (asymmetric), else None
    q.unpack_codes()   # int8 (symmetric) / uint8 (asymmetric), w.shape
    q.dequantize()     # float32, w.shape: scale * (q - zero_point)
    q.dequantized      # the same values, computed by the server (output="both")

The float, codebook and HQQ families (Layout.kind "float", "codebook",
"hqq") add parts: `block_scales` (uint8 E8M0 / E4M3 / dynamic-map codes),
`second_scales` (NF4 double quantization), `codebooks` (f32 tables) and,
for HQQ, f32 `zero_points`; `layout.tensor_scale` is NVFP4's per-tensor
scale. `unpack_codes()` and `dequantize()` decode every family in numpy
from the formats' definitions (proto/quantd/v1/quantizer.proto, message
Layout), equal bit for bit to the server's values.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Tuple

import numpy as np

from quantd._pb import pb
from quantd.scheme import is_block_format, scheme_name

if TYPE_CHECKING:
    from quantd.calibration import ActivationRange, OutputMetrics

__all__ = ["Layout", "Metrics", "QuantizedTensor", "pack_codes", "unpack_codes",
           "decode_e4m3", "decode_e5m2", "decode_e2m1", "decode_e8m0",
           "NF4_VALUES", "nf4_dynamic_map", "pot_codebooks"]

_KIND = {0: "", 1: "int", 2: "ggml_block", 3: "float", 4: "codebook", 5: "hqq"}
_ELEMENT = {0: "", 1: "e4m3", 2: "e5m2", 3: "e2m1", 4: "nf4"}
_BLOCK_SCALE = {0: "", 1: "e8m0", 2: "e4m3", 3: "dynamic_map"}

_GRANULARITY = {
    pb.GRANULARITY_PER_TENSOR: "tensor",
    pb.GRANULARITY_PER_CHANNEL: "channel",
    pb.GRANULARITY_PER_GROUP: "group",
    pb.GRANULARITY_UNSPECIFIED: "channel",
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """How to read codes, scales and zero points (the wire's Layout).

    Integer formats: `bits`-wide codes packed LSB first over the whole tensor
    in row-major order; one f32 scale (and uint8 zero point when asymmetric)
    per group of `group_size` consecutive elements of a row, row-major over
    [rows, row_length // group_size] (per tensor: one), except with
    `has_group_index` (GPTQ act-order groups), where column c of row r uses
    scale [r, g_idx[c]] (QuantizedTensor.g_idx). Block formats
    (`is_block_format`): `codes` are the tensor's ggml bytes, `block_bytes`
    per `block_size` elements, rows in order; the scales are inside the
    blocks.
    """
    scheme: str                 # canonical text: "int4_asym_g128", "Q4_K"
    format: str                 # "int4", "Q4_K"
    shape: Tuple[int, ...]
    rows: int
    row_length: int
    bits: int                   # 0 for block formats
    symmetric: bool
    granularity: str            # "tensor", "channel", "group" ("block")
    group_size: int             # elements per scale (block formats: block_size)
    num_scales: int
    has_zero_points: bool
    packed_bytes: int
    block_size: int = 0
    block_bytes: int = 0
    ggml_type: int = 0
    # The family: "int", "ggml_block", "float", "codebook" or "hqq".
    kind: str = "int"
    full_range: bool = False          # int<b>_full (compressed-tensors' scale)
    # "float" only: element encoding ("e4m3", "e5m2", "e2m1", "nf4") and the
    # encoding of block_scales ("e8m0", "e4m3", "dynamic_map", or "").
    element_format: str = ""
    block_scale_format: str = ""
    num_block_scales: int = 0
    block_scale_group_size: int = 0   # elements per block scale
    num_second_scales: int = 0
    second_scale_group: int = 0       # block scales per second scale (256)
    num_codebooks: int = 0
    codebook_entries: int = 0
    has_zero_points_f32: bool = False  # HQQ's float zero points
    high_nibble_first: bool = False    # NF4: element 2i in the high nibble
    tensor_scale: float = 0.0          # NVFP4's per-tensor f32 scale g
    scale_offset: float = 0.0          # NF4 double quant: mean of the absmax
    # GPTQ act_order with dynamic groups: QuantizedTensor.g_idx gives each
    # input column's group within its row (codes in the original order).
    has_group_index: bool = False
    # How the codes were found: "rtn", "gptq", "awq", "smoothquant".
    method: str = "rtn"

    @property
    def has_channel_scales(self) -> bool:
        """AWQ and SmoothQuant return per-input-column scales s."""
        return not self.is_block_format and self.method in ("awq", "smoothquant")

    @property
    def is_block_format(self) -> bool:
        """A ggml block format (codes are GGUF blocks)."""
        return self.kind == "ggml_block"

    @property
    def num_elements(self) -> int:
        return self.rows * self.row_length

    @property
    def scales_shape(self) -> Tuple[int, ...]:
        """(1,) per tensor, else (rows, row_length // group_size); () when
        there are no separate scales (block formats)."""
        if self.num_scales == 0:
            return (0,)
        if self.granularity == "tensor":
            return (1,)
        return (self.rows, self.row_length // max(self.group_size, 1))

    @property
    def block_scales_shape(self) -> Tuple[int, ...]:
        """(rows, row_length // block_scale_group_size): one byte per block
        of a row (MX, NVFP4, NF4's double quantization, whose second scales
        count the blocks in this row-major order); (num_block_scales,) if
        the count does not fit that shape."""
        g = self.block_scale_group_size
        if g and self.num_block_scales == self.rows * (self.row_length // g) \
                and self.row_length % g == 0:
            return (self.rows, self.row_length // g)
        return (self.num_block_scales,)

    @classmethod
    def from_proto(cls, layout: "pb.Layout") -> "Layout":
        block_size = getattr(layout, "block_size", 0)
        kind = _KIND.get(int(getattr(layout, "kind", 0)), "")
        if not kind:  # a server that predates Layout.kind
            kind = "ggml_block" if block_size > 0 or is_block_format(
                layout.scheme) else "int"
        block = kind == "ggml_block"
        granularity = "block" if block else _GRANULARITY.get(
            layout.scheme.granularity, "channel")
        if kind not in ("int", "ggml_block") and \
                layout.scheme.granularity == pb.GRANULARITY_UNSPECIFIED:
            # The format's default: what group_size says.
            if int(layout.group_size) == int(layout.row_length):
                granularity = "channel"
            elif int(layout.group_size) == int(layout.rows) * int(layout.row_length):
                granularity = "tensor"
            else:
                granularity = "group"
        return cls(
            scheme=scheme_name(layout.scheme),
            format=layout.scheme.format,
            shape=tuple(int(d) for d in layout.shape),
            rows=int(layout.rows),
            row_length=int(layout.row_length),
            bits=int(layout.bits),
            symmetric=bool(layout.scheme.symmetric),
            granularity=granularity,
            group_size=int(layout.group_size),
            num_scales=int(layout.num_scales),
            has_zero_points=bool(layout.has_zero_points),
            packed_bytes=int(layout.packed_bytes),
            block_size=int(block_size),
            block_bytes=int(getattr(layout, "block_bytes", 0)),
            ggml_type=int(getattr(layout, "ggml_type", 0)),
            kind=kind,
            full_range=bool(getattr(layout.scheme, "full_range", False)),
            element_format=_ELEMENT.get(int(getattr(layout, "element_format", 0)), ""),
            block_scale_format=_BLOCK_SCALE.get(
                int(getattr(layout, "block_scale_format", 0)), ""),
            num_block_scales=int(getattr(layout, "num_block_scales", 0)),
            block_scale_group_size=int(getattr(layout, "block_scale_group_size", 0)),
            num_second_scales=int(getattr(layout, "num_second_scales", 0)),
            second_scale_group=int(getattr(layout, "second_scale_group", 0)),
            num_codebooks=int(getattr(layout, "num_codebooks", 0)),
            codebook_entries=int(getattr(layout, "codebook_entries", 0)),
            has_zero_points_f32=bool(getattr(layout, "has_zero_points_f32", False)),
            high_nibble_first=bool(getattr(layout, "high_nibble_first", False)),
            tensor_scale=float(getattr(layout, "tensor_scale", 0.0)),
            scale_offset=float(getattr(layout, "scale_offset", 0.0)),
            has_group_index=bool(getattr(layout, "has_group_index", False)),
            method=pb.QuantMethod.Name(layout.scheme.method)[len("QUANT_METHOD_"):]
            .lower().replace("unspecified", "rtn"),
        )


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Error of the dequantized tensor against the input (as f32)."""
    mse: float
    rmse: float
    max_abs_err: float
    sqnr_db: float           # 20*log10(|w| / |w - w_hat|); inf when exact
    cosine: float            # cosine similarity of w and w_hat
    bits_per_weight: float   # codes + scales + zero points, per element

    @classmethod
    def from_proto(cls, m: "pb.Metrics") -> "Metrics":
        return cls(mse=m.mse, rmse=m.rmse, max_abs_err=m.max_abs_error,
                   sqnr_db=m.sqnr_db, cosine=m.cosine_similarity,
                   bits_per_weight=m.bits_per_weight)


def unpack_codes(codes: np.ndarray, bits: int, count: int,
                 signed: bool) -> np.ndarray:
    """The first `count` `bits`-wide fields of the LSB-first bit stream
    `codes`: element i is bits [i*bits, (i+1)*bits), bit j of the stream
    being bit j % 8 of byte j // 8. Signed fields are two's complement and
    come back as int8, unsigned as uint8 (bits <= 8)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in [1, 8], not {bits}")
    codes = np.frombuffer(np.ascontiguousarray(codes, dtype=np.uint8), np.uint8)
    if bits == 8:
        fields = codes[:count]
    else:
        # Eight fields fill exactly `bits` bytes: widen each such group to a
        # little-endian uint64 and shift the fields out.
        groups = -(-count // 8)
        padded = np.zeros(groups * bits, dtype=np.uint8)
        take = min(len(codes), groups * bits)
        padded[:take] = codes[:take]
        words = np.zeros((groups, 8), dtype=np.uint8)
        words[:, :bits] = padded.reshape(groups, bits)
        words = words.view("<u8").reshape(groups, 1)
        shifts = np.arange(8, dtype=np.uint64) * np.uint64(bits)
        mask = np.uint64((1 << bits) - 1)
        fields = ((words >> shifts) & mask).astype(np.uint8).reshape(-1)[:count]
    if not signed:
        return fields.copy() if bits == 8 else fields
    fields = fields.astype(np.int16)
    fields[fields >= 1 << (bits - 1)] -= 1 << bits
    return fields.astype(np.int8)


def pack_codes(values: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of unpack_codes: the low `bits` bits of each value (two's
    complement for negatives), packed LSB first into uint8 bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in [1, 8], not {bits}")
    fields = (np.asarray(values).reshape(-1).astype(np.int64)
              & ((1 << bits) - 1)).astype(np.uint64)
    count = fields.size
    groups = -(-count // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[:count] = fields
    shifts = np.arange(8, dtype=np.uint64) * np.uint64(bits)
    words = np.bitwise_or.reduce(padded.reshape(groups, 8) << shifts, axis=1)
    out = words.astype("<u8").view(np.uint8).reshape(groups, 8)[:, :bits]
    return out.reshape(-1)[:(count * bits + 7) // 8].copy()


# --- element and scale decoders (proto Layout; kernels/float_formats.h) -----

# E2M1 magnitudes by their 3-bit index; bit 3 is the sign.
_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)

# bitsandbytes' NormalFloat4 table (QLoRA, get_4bit_type("nf4")).
NF4_VALUES = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
    0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=np.float32)


def _minifloat(codes: np.ndarray, exp_bits: int, man_bits: int, bias: int,
               ieee_special: bool) -> np.ndarray:
    """Decodes sign/exponent/mantissa codes of 1 + exp_bits + man_bits bits
    to float32: exponent 0 is subnormal (m * 2^(1 - bias - man_bits)),
    otherwise (1 + m / 2^man_bits) * 2^(e - bias). With ieee_special the top
    exponent is Inf (m = 0) / NaN (E5M2); otherwise only the all-ones code
    is NaN (E4M3 "fn")."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int32)
    sign = np.where((c >> (exp_bits + man_bits)) & 1, -1.0, 1.0)
    e = (c >> man_bits) & ((1 << exp_bits) - 1)
    m = c & ((1 << man_bits) - 1)
    mag = np.where(e == 0, np.ldexp(m.astype(np.float64), 1 - bias - man_bits),
                   np.ldexp(1.0 + m / float(1 << man_bits), e - bias))
    top = (1 << exp_bits) - 1
    if ieee_special:
        mag = np.where(e == top, np.where(m == 0, np.inf, np.nan), mag)
    else:
        mag = np.where((e == top) & (m == (1 << man_bits) - 1), np.nan, mag)
    return (sign * mag).astype(np.float32)


def decode_e4m3(codes: np.ndarray) -> np.ndarray:
    """FP8 E4M3 "fn" (bias 7, max 448, NaN at 0x7f / 0xff) to float32."""
    return _minifloat(codes, 4, 3, 7, False)


def decode_e5m2(codes: np.ndarray) -> np.ndarray:
    """FP8 E5M2 (bias 15, IEEE-like Inf / NaN) to float32."""
    return _minifloat(codes, 5, 2, 15, True)


def decode_e2m1(codes: np.ndarray) -> np.ndarray:
    """FP4 E2M1 (low nibble: sign << 3 | index of {0,.5,1,1.5,2,3,4,6})."""
    c = np.asarray(codes, dtype=np.uint8)
    mag = _E2M1[c & 7]
    return np.where(c & 8, -mag, mag).astype(np.float32)


def decode_e8m0(codes: np.ndarray) -> np.ndarray:
    """OCP MX E8M0 scales: 2^(byte - 127) as float32 (255 is NaN)."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int32)
    out = np.ldexp(np.float32(1.0), np.minimum(c, 254) - 127).astype(np.float32)
    return np.where(c == 255, np.float32(np.nan), out).astype(np.float32)


def nf4_dynamic_map() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic map, create_dynamic_map(signed=True,
    max_exponent_bits=7, total_bits=8), as that function builds it in
    float32 and sorted ascending (256 values): for i in 0..6, the
    2^i + 1 points of linspace(0.1, 1) (float32: start + step * k below
    the middle index, end - step * (steps - 1 - k) from it), the means of
    neighbours, times float32(10^(i - 6)), and their negatives; then 0 and
    1."""
    values = []
    for i in range(7):
        steps = 2 ** i + 1
        start, end = np.float32(0.1), np.float32(1.0)
        step = (end - start) / np.float32(steps - 1)
        k = np.arange(steps)
        half = steps // 2
        points = np.where(k < half, start + step * k.astype(np.float32),
                          end - step * (steps - 1 - k).astype(np.float32)
                          ).astype(np.float32)
        means = ((points[:-1] + points[1:]) / np.float32(2.0)).astype(np.float32)
        factor = np.float32(10.0 ** (i - 6))
        values.extend((factor * means).astype(np.float32).tolist())
        values.extend((-factor * means).astype(np.float32).tolist())
    values += [0.0, 1.0]
    return np.array(sorted(values), dtype=np.float32)


def pot_codebooks(scales: np.ndarray, bits: int) -> np.ndarray:
    """The tables a power-of-two format's scales imply, [groups, 2^bits]:
    entry (s << (bits-1)) | m is 0 for m = 0, else (s ? -1 : 1) * scale *
    2^-(m-1), rounded to f32 (exact unless it falls below FLT_MIN)."""
    m = np.arange(1 << (bits - 1))
    level = np.where(m == 0, 0.0, np.ldexp(1.0, -(m - 1)))
    table = np.concatenate([level, -level])
    return (np.asarray(scales, np.float64).reshape(-1, 1) * table).astype(np.float32)


def _nibbles(codes: np.ndarray, count: int, high_first: bool) -> np.ndarray:
    """Two 4-bit codes per byte: element 2i low and 2i+1 high, or the
    reverse (NF4)."""
    b = np.frombuffer(np.ascontiguousarray(codes, dtype=np.uint8), np.uint8)
    lo, hi = b & 0x0F, b >> 4
    pairs = np.stack((hi, lo) if high_first else (lo, hi), axis=1)
    return pairs.reshape(-1)[:count].copy()


class PartSpec(NamedTuple):
    """A row of the part table (kernels/parts.h): the ShardChunk.Part on the
    wire, the QuantizedTensor field it fills, its element type, which
    outputs carry it ("packed", "fake_quant" or "always") and its shape from
    the layout and the input's shape (None when the layout has none)."""
    wire: int
    name: str
    field: str
    dtype: str
    output: str
    shape: Callable[["Layout", Tuple[int, ...]], Optional[Tuple[int, ...]]]

    def sent(self, output: int) -> bool:
        if self.output == "packed":
            return output != pb.OUTPUT_KIND_FAKE_QUANT
        if self.output == "fake_quant":
            return output in (pb.OUTPUT_KIND_FAKE_QUANT, pb.OUTPUT_KIND_BOTH)
        return True


def _if(cond: bool, shape: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
    return shape if cond else None


# In wire order. HQQ's f32 zero points fill `zero_points` (a layout has
# uint8 or f32 zero points, never both).
PART_TABLE: Tuple[PartSpec, ...] = (
    PartSpec(pb.ShardChunk.PART_CODES, "codes", "codes", "u1", "packed",
             lambda l, s: (l.packed_bytes,)),
    PartSpec(pb.ShardChunk.PART_SCALES, "scales", "scales", "<f4", "packed",
             lambda l, s: _if(l.num_scales > 0 and not l.is_block_format,
                              l.scales_shape)),
    PartSpec(pb.ShardChunk.PART_ZERO_POINTS, "zero points", "zero_points", "u1",
             "packed", lambda l, s: _if(l.has_zero_points, l.scales_shape)),
    PartSpec(pb.ShardChunk.PART_BLOCK_SCALES, "block scales", "block_scales",
             "u1", "packed",
             lambda l, s: _if(l.num_block_scales > 0, l.block_scales_shape)),
    PartSpec(pb.ShardChunk.PART_SECOND_SCALES, "second scales",
             "second_scales", "<f4", "packed",
             lambda l, s: _if(l.num_second_scales > 0, (l.num_second_scales,))),
    PartSpec(pb.ShardChunk.PART_CODEBOOKS, "codebooks", "codebooks", "<f4",
             "packed",
             lambda l, s: _if(l.num_codebooks * l.codebook_entries > 0,
                              (l.num_codebooks, l.codebook_entries))),
    PartSpec(pb.ShardChunk.PART_ZERO_POINTS_F32, "f32 zero points",
             "zero_points", "<f4", "packed",
             lambda l, s: _if(l.has_zero_points_f32, l.scales_shape)),
    PartSpec(pb.ShardChunk.PART_GROUP_INDEX, "group index", "g_idx", "<i4",
             "packed", lambda l, s: _if(l.has_group_index, (l.row_length,))),
    PartSpec(pb.ShardChunk.PART_FAKE_QUANT, "fake-quant values", "dequantized",
             "<f4", "fake_quant", lambda l, s: tuple(s)),
    PartSpec(pb.ShardChunk.PART_CHANNEL_SCALES, "channel scales",
             "channel_scales", "<f4", "always",
             lambda l, s: _if(l.has_channel_scales, (l.row_length,))),
)


@dataclasses.dataclass
class QuantizedTensor:
    """One tensor's result. `codes`, `scales` and `zero_points` are set when
    the output was "packed" or "both", `dequantized` when it was
    "fake_quant" or "both"; the others are None."""
    name: str
    shape: Tuple[int, ...]               # the input's shape
    layout: Layout
    metrics: Metrics
    codes: Optional[np.ndarray]          # uint8 [packed_bytes]
    scales: Optional[np.ndarray]         # float32 layout.scales_shape
    zero_points: Optional[np.ndarray]    # uint8 like scales, asymmetric only
    dequantized: Optional[np.ndarray]    # float32, the input's shape
    dtype: str = "F32"                   # input dtype on the wire
    bytes_in: int = 0
    bytes_out: int = 0
    queue_seconds: float = 0.0           # as reported by the server
    compute_seconds: float = 0.0         # as reported by the server
    seconds: float = 0.0                 # client: header sent to result read
    target: str = ""                     # the server that answered
    attempts: int = 1                    # sends it took
    # With a calibration set (TensorHeader.calibration): the output-space
    # error over its activations (quantd.OutputMetrics; None for an
    # IMPORTANCE set), the static int8 activation range
    # (quantd.ActivationRange; ACTIVATIONS sets), and whether a ggml
    # format took the set's Σx²/tokens as importance weights.
    output_metrics: Optional["OutputMetrics"] = None
    activation_range: Optional["ActivationRange"] = None
    importance_from_calibration: bool = False
    # int8 tensors whose set has held-back rows (Calibration.holdout_rows):
    # the integer-only W8A8 check (quantd.W8A8Check).
    w8a8: Optional["W8A8Check"] = None
    # AWQ / SmoothQuant: the per-input-column scales s (float32,
    # [row_length]); codes, scales and zero points quantize W·diag(s), so
    # the layer's input is to be divided by s (fold 1/s into the op before
    # it). None for other methods.
    channel_scales: Optional[np.ndarray] = None
    # Float formats: uint8 block scales (MX E8M0, NVFP4 E4M3, NF4 double
    # quant's dynamic-map codes), layout.block_scales_shape; NF4 double
    # quant's f32 second-level scales. Codebook formats: f32 tables,
    # [num_codebooks, codebook_entries]. (HQQ's f32 zero points are in
    # zero_points.)
    block_scales: Optional[np.ndarray] = None
    second_scales: Optional[np.ndarray] = None
    codebooks: Optional[np.ndarray] = None
    # GPTQ act_order with dynamic groups (layout.has_group_index): int32
    # [row_length], column c of row r uses scales[r, g_idx[c]] (and that
    # zero point), as GPTQ checkpoints store it. None otherwise.
    g_idx: Optional[np.ndarray] = None

    @property
    def tensor_scale(self) -> float:
        """NVFP4's per-tensor f32 scale g (ModelOpt's weights_scaling_factor_2,
        amax / 2688); 0 for the other formats."""
        return self.layout.tensor_scale

    @property
    def scheme(self) -> str:
        return self.layout.scheme

    def _need_codes(self):
        if self.codes is None:
            raise ValueError(f"tensor {self.name}: no packed codes (output was "
                             "fake_quant; ask for output=\"packed\" or \"both\")")

    def unpack_codes(self) -> np.ndarray:
        """One code per element, in the input's shape: int8 for symmetric
        int schemes, uint8 for asymmetric ones; uint8 for the other
        families (FP8 bytes, E2M1 / NF4 nibbles, codebook indices, HQQ's
        unsigned codes)."""
        self._need_codes()
        layout = self.layout
        if layout.is_block_format:
            raise TypeError(f"tensor {self.name}: {layout.format} is a block "
                            "format; its codes are ggml blocks, not one field per "
                            "element")
        n = layout.num_elements
        if layout.kind == "float":
            if layout.bits == 8:
                q = np.frombuffer(self.codes, np.uint8)[:n].copy()
            else:
                q = _nibbles(self.codes, n, layout.high_nibble_first)
        elif layout.kind in ("codebook", "hqq"):
            q = unpack_codes(self.codes, layout.bits, n, False)
        else:
            q = unpack_codes(self.codes, layout.bits, n, layout.symmetric)
        return q.reshape(self.shape)

    def dequantize(self) -> np.ndarray:
        """float32 values in the input's shape from codes, scales and zero
        points: scale * (q - zero_point), computed in f32 as the server does,
        so it equals `dequantized` bit for bit (with channel_scales s, AWQ
        and SmoothQuant: divided by s, column by column, as the server's
        values are). Block formats are decoded by
        the `gguf` package's numpy dequantizers when it is installed."""
        self._need_codes()
        layout = self.layout
        if layout.is_block_format:
            return _dequantize_blocks(self)
        if layout.kind == "float":
            return _dequantize_float(self)
        if layout.kind == "codebook":
            tables = self.codebooks
            if tables is None and self.scales is not None:
                tables = pot_codebooks(self.scales, layout.bits)  # pot<b>
            groups = tables.shape[0]
            q = self.unpack_codes().reshape(groups, -1).astype(np.int64)
            tables = tables.reshape(groups, -1)
            return np.take_along_axis(tables, q, axis=1).astype(
                np.float32).reshape(self.shape)
        if layout.kind == "hqq":
            groups = layout.num_scales
            q = self.unpack_codes().reshape(groups, -1).astype(np.float32)
            zero = self.zero_points.reshape(groups, 1).astype(np.float32)
            scale = self.scales.reshape(groups, 1).astype(np.float32)
            return ((q - zero) * scale).astype(np.float32).reshape(self.shape)
        if self.g_idx is not None:
            # Each column's group through the index: scales[r, g_idx[c]].
            q = self.unpack_codes().reshape(layout.rows, layout.row_length)
            q = q.astype(np.int32)
            scales = self.scales.reshape(layout.rows, -1)[:, self.g_idx]
            if self.zero_points is not None:
                q = q - self.zero_points.reshape(layout.rows, -1)[
                    :, self.g_idx].astype(np.int32)
            out = (scales.astype(np.float32) * q.astype(np.float32)).reshape(
                self.shape)
            if self.channel_scales is not None:
                out = out / self.channel_scales
            return out
        q = self.unpack_codes().reshape(-1).astype(np.int32)
        groups = layout.num_scales
        q = q.reshape(groups, -1)
        if self.zero_points is not None:
            q = q - self.zero_points.reshape(groups, 1).astype(np.int32)
        out = self.scales.reshape(groups, 1).astype(np.float32) * q.astype(np.float32)
        out = out.reshape(self.shape)
        if self.channel_scales is not None:
            out = out / self.channel_scales  # back to W's space
        return out


def _decode_elements(codes: np.ndarray, element_format: str) -> np.ndarray:
    if element_format == "e4m3":
        return decode_e4m3(codes)
    if element_format == "e5m2":
        return decode_e5m2(codes)
    if element_format == "e2m1":
        return decode_e2m1(codes)
    if element_format == "nf4":
        return NF4_VALUES[codes & 15]
    raise NotImplementedError(f"element format {element_format!r}")


def _dequantize_float(t: QuantizedTensor) -> np.ndarray:
    """FP8 / FP4 / NF4 / MX / NVFP4 values, each product in f32 as the
    server computes it."""
    layout = t.layout
    values = _decode_elements(t.unpack_codes().reshape(-1), layout.element_format)
    n = layout.num_elements
    if layout.block_scale_format == "e8m0":          # OCP MX
        g = layout.block_scale_group_size
        scale = decode_e8m0(t.block_scales).reshape(-1, 1)
        out = values.reshape(-1, g) * scale
    elif layout.block_scale_format == "e4m3":        # NVFP4
        g = layout.block_scale_group_size
        d = (decode_e4m3(t.block_scales) * np.float32(layout.tensor_scale)
             ).astype(np.float32).reshape(-1, 1)
        out = values.reshape(-1, g) * d
    elif layout.block_scale_format == "dynamic_map":  # NF4 double quant
        g = layout.block_scale_group_size
        codes = np.asarray(t.block_scales, np.uint8).reshape(-1)
        second = np.repeat(np.asarray(t.second_scales, np.float32),
                           layout.second_scale_group)[:codes.size]
        absmax = (nf4_dynamic_map()[codes] * second).astype(np.float32)
        absmax = (absmax + np.float32(layout.scale_offset)).astype(np.float32)
        out = values.reshape(-1, g) * absmax.reshape(-1, 1)
    else:                                            # one f32 scale per group
        groups = layout.num_scales
        out = values.reshape(groups, -1) * t.scales.reshape(groups, 1).astype(
            np.float32)
    return out.astype(np.float32).reshape(-1)[:n].reshape(t.shape)


def _dequantize_blocks(t: QuantizedTensor) -> np.ndarray:
    try:
        from gguf import GGMLQuantizationType, quants
    except ImportError as e:
        raise NotImplementedError(
            f"tensor {t.name}: decoding {t.layout.format} blocks needs the gguf "
            "package (pip install gguf), or ask the server with "
            "output=\"both\" and read .dequantized") from e
    qtype = GGMLQuantizationType(t.layout.ggml_type)
    rows = t.codes.reshape(t.layout.rows, -1)
    values = quants.dequantize(rows, qtype)
    return np.asarray(values, dtype=np.float32).reshape(t.shape)
