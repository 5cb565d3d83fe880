"""What the server returns for one tensor, as numpy arrays, and the code
packing of proto/README.md.

    q = client.quantize(w, "int4_asym_g128")
    q.codes            # uint8, layout.packed_bytes: the packed codes
    q.scales           # float32 [rows, row_length // group_size]
    q.zero_points      # uint8, same shape (asymmetric), else None
    q.unpack_codes()   # int8 (symmetric) / uint8 (asymmetric), w.shape
    q.dequantize()     # float32, w.shape: scale * (q - zero_point)
    q.dequantized      # the same values, computed by the server (output="both")
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np

from quantd._pb import pb
from quantd.scheme import is_block_format, scheme_name

if TYPE_CHECKING:
    from quantd.calibration import ActivationRange, OutputMetrics

__all__ = ["Layout", "Metrics", "QuantizedTensor", "pack_codes", "unpack_codes"]

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
    [rows, row_length // group_size] (per tensor: one). Block formats
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

    @property
    def is_block_format(self) -> bool:
        return self.block_size > 0

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

    @classmethod
    def from_proto(cls, layout: "pb.Layout") -> "Layout":
        block_size = getattr(layout, "block_size", 0)
        block = block_size > 0 or is_block_format(layout.scheme)
        return cls(
            scheme=scheme_name(layout.scheme),
            format=layout.scheme.format,
            shape=tuple(int(d) for d in layout.shape),
            rows=int(layout.rows),
            row_length=int(layout.row_length),
            bits=int(layout.bits),
            symmetric=bool(layout.scheme.symmetric),
            granularity="block" if block else _GRANULARITY.get(
                layout.scheme.granularity, "channel"),
            group_size=int(layout.group_size),
            num_scales=int(layout.num_scales),
            has_zero_points=bool(layout.has_zero_points),
            packed_bytes=int(layout.packed_bytes),
            block_size=int(block_size),
            block_bytes=int(getattr(layout, "block_bytes", 0)),
            ggml_type=int(getattr(layout, "ggml_type", 0)),
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
    # AWQ / SmoothQuant: the per-input-column scales s (float32,
    # [row_length]); codes, scales and zero points quantize W·diag(s), so
    # the layer's input is to be divided by s (fold 1/s into the op before
    # it). None for other methods.
    channel_scales: Optional[np.ndarray] = None

    @property
    def scheme(self) -> str:
        return self.layout.scheme

    def _need_codes(self):
        if self.codes is None:
            raise ValueError(f"tensor {self.name}: no packed codes (output was "
                             "fake_quant; ask for output=\"packed\" or \"both\")")

    def unpack_codes(self) -> np.ndarray:
        """One integer code per element, in the input's shape: int8 for
        symmetric schemes, uint8 for asymmetric ones."""
        self._need_codes()
        if self.layout.is_block_format:
            raise TypeError(f"tensor {self.name}: {self.layout.format} is a block "
                            "format; its codes are ggml blocks, not one field per "
                            "element")
        q = unpack_codes(self.codes, self.layout.bits, self.layout.num_elements,
                         self.layout.symmetric)
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
