"""Calibration sets: a layer's input activations, sent on a Quantize stream
before the tensors that use them (proto/README.md, "Calibration sets").

    x = captured_inputs["layer0.attn_in"]            # [tokens, in_features]
    attn_in = quantd.Calibration("layer0.attn_in", activations=x)
    for q in client.quantize_many(
            [("q_proj", wq, "int4_g128", "layer0.attn_in"),
             ("k_proj", wk, "int4_g128", "layer0.attn_in")],
            calibration_sets=[attn_in]):
        print(q.name, q.output_metrics.relative_error)

Three kinds, as on the wire:
  activations=X   rows are tokens (F32/F16/BF16); the server folds them into
                  G = XᵀX and per-feature statistics, never holding X;
  gram=G, tokens=n   XᵀX precomputed by the caller (sent as f64);
  importance=v, tokens=n   llama.cpp's imatrix entry Σx²/tokens (f32),
                  importance weights only (no output metrics).

A Calibration keeps its bytes (a view when the array already has the wire
dtype) so that a stream retried after a transient error sends it again.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import numpy as np

from quantd._pb import has_field, pb
from quantd.checksum import crc32c, crc32c_combine

__all__ = ["Calibration", "OutputMetrics", "ActivationRange", "W8A8Check",
           "range_options"]

_RANGE_METHODS = {
    "minmax": 1, "percentile": 2, "mse": 3, "kl": 4,
}


class Calibration:
    """One named calibration set.

    Args:
      name: unique among the sets of a call (1 to 4096 bytes); tensors name
        it to use it. It may equal a tensor's name.
      activations: [tokens, features] float32/float16/bfloat16 values (a
        float64 array is sent as float32); any leading dimensions are
        flattened into tokens.
      gram: [features, features] G = XᵀX (sent as float64); needs tokens.
      importance: [features] Σx²/tokens per feature (sent as float32), each
        finite and >= 0; needs tokens.
      tokens: rows of X behind gram or importance (>= 1); not for
        activations (the server counts the rows).
      dtype: activations only: "f32", "f16" or "bf16" to convert to first.
      channel_histograms: activations only: ask the server to keep a
        histogram per feature too (needed for per-channel ranges other than
        min-max).
      holdout_rows: activations only, at most 4096: the first rows are held
        back from the statistics and kept by the server to check int8
        tensors through the integer-only W8A8 path (QuantizedTensor.w8a8).
        Put a fair sample first (e.g. shuffle the rows).

    Exactly one of activations, gram and importance must be given.
    """

    def __init__(self, name: str, *, activations=None, gram=None, importance=None,
                 tokens: Optional[int] = None, dtype: Optional[str] = None,
                 channel_histograms: bool = False, holdout_rows: int = 0):
        if not has_field(pb.QuantizeRequest, "calibration_header"):
            raise ValueError("this quantd package was built from a proto without "
                             "calibration sets")
        if not isinstance(name, str) or not name:
            raise ValueError("a calibration set needs a non-empty str name")
        given = [k for k, v in (("activations", activations), ("gram", gram),
                                ("importance", importance)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"calibration set {name}: give exactly one of "
                             f"activations, gram and importance (got "
                             f"{', '.join(given) or 'none'})")
        self.name = name
        self.channel_histograms = bool(channel_histograms)
        self.holdout_rows = int(holdout_rows)
        if self.holdout_rows < 0:
            raise ValueError(f"calibration set {name}: holdout_rows must be >= 0")
        if self.holdout_rows and not has_field(pb.CalibrationHeader,
                                               "holdout_rows"):
            raise ValueError("this quantd package was built from a proto without "
                             "held-back rows")
        if activations is not None:
            from quantd.client import _convert  # the tensors' dtype rules
            if tokens is not None:
                raise ValueError(f"calibration set {name}: tokens is counted by "
                                 "the server for activations; do not pass it")
            x = np.asarray(activations)
            if x.ndim < 2 or x.shape[-1] == 0 or x.size == 0:
                raise ValueError(f"calibration set {name}: activations must be "
                                 f"[tokens, features] with at least one row, not "
                                 f"shape {x.shape}")
            arr, wire = _convert(x.reshape(-1, x.shape[-1]), dtype)
            self.kind = "activations"
            self.dtype = wire
            self.features = int(x.shape[-1])
            self.tokens = int(arr.size // self.features)
            self._data = memoryview(arr.reshape(-1).view(np.uint8))
            self._row_bytes = self.features * arr.dtype.itemsize
        else:
            if dtype is not None or channel_histograms or self.holdout_rows:
                raise ValueError(f"calibration set {name}: dtype, "
                                 "channel_histograms and holdout_rows are for "
                                 "activations only")
            if tokens is None or int(tokens) < 1:
                raise ValueError(f"calibration set {name}: {given[0]} needs "
                                 "tokens >= 1 (the rows it came from)")
            self.tokens = int(tokens)
            self.dtype = pb.DTYPE_UNSPECIFIED
            self._row_bytes = 1  # may split anywhere
            if gram is not None:
                g = np.ascontiguousarray(gram, dtype="<f8")
                if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] == 0:
                    raise ValueError(f"calibration set {name}: gram must be "
                                     f"square [features, features], not {g.shape}")
                self.kind = "gram"
                self.features = int(g.shape[0])
                self._data = memoryview(g.reshape(-1).view(np.uint8))
            else:
                v = np.ascontiguousarray(importance, dtype="<f4").reshape(-1)
                if v.size == 0:
                    raise ValueError(f"calibration set {name}: empty importance")
                self.kind = "importance"
                self.features = int(v.size)
                self._data = memoryview(v.view(np.uint8))

    @property
    def nbytes(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return (f"quantd.Calibration({self.name!r}, {self.kind}, "
                f"features={self.features}, tokens={self.tokens})")

    def requests(self, chunk_bytes: int) -> Iterator["pb.QuantizeRequest"]:
        """The set's messages: header, chunks of at most chunk_bytes (whole
        rows for activations) with their CRC-32C, and the end with the CRC-32C
        of all the bytes, folded from the chunks'."""
        kind = {"activations": pb.CALIBRATION_KIND_ACTIVATIONS,
                "gram": pb.CALIBRATION_KIND_GRAM,
                "importance": pb.CALIBRATION_KIND_IMPORTANCE}[self.kind]
        header = pb.CalibrationHeader(name=self.name, kind=kind,
                                      features=self.features)
        if self.kind == "activations":
            header.dtype = self.dtype
            header.channel_histograms = self.channel_histograms
            if self.holdout_rows:
                header.holdout_rows = self.holdout_rows
            if self._row_bytes > chunk_bytes:
                raise ValueError(
                    f"calibration set {self.name}: one row is {self._row_bytes} "
                    f"bytes, more than a chunk ({chunk_bytes}); chunks carry "
                    "whole rows")
            step = (chunk_bytes // self._row_bytes) * self._row_bytes
        else:
            header.tokens = self.tokens
            step = chunk_bytes
        yield pb.QuantizeRequest(calibration_header=header)
        total = 0
        data = self._data
        for offset in range(0, len(data), step):
            piece = data[offset:offset + step].tobytes()
            crc = crc32c(piece)
            total = crc32c_combine(total, crc, len(piece))
            yield pb.QuantizeRequest(calibration_chunk=pb.CalibrationChunk(
                offset=offset, data=piece, crc32c=crc))
        yield pb.QuantizeRequest(calibration_end=pb.CalibrationEnd(crc32c=total))


@dataclasses.dataclass(frozen=True)
class OutputMetrics:
    """Output-space error over a set's activations X: with W the input and
    Ŵ its dequantization, error_sq = ‖X(W − Ŵ)ᵀ‖², signal_sq = ‖XWᵀ‖²,
    relative_error = sqrt(error_sq / signal_sq), sqnr_db =
    10·log10(signal_sq / error_sq)."""
    calibration: str
    tokens: int
    relative_error: float
    sqnr_db: float
    error_sq: float
    signal_sq: float

    @classmethod
    def from_proto(cls, m: "pb.OutputMetrics") -> "OutputMetrics":
        return cls(calibration=m.calibration, tokens=int(m.tokens),
                   relative_error=m.relative_error, sqnr_db=m.sqnr_db,
                   error_sq=m.error_sq, signal_sq=m.signal_sq)


def range_options(method: str = "minmax", *, percentile: Optional[float] = None,
                  asymmetric: bool = False, per_channel: bool = False
                  ) -> "pb.ActivationRangeOptions":
    """How the server estimates a tensor's static int8 activation range:
    method "minmax", "percentile" (percentile in [50, 100], default 99.99),
    "mse" or "kl"; asymmetric codes with a zero point; per_channel also one
    range per input channel (methods other than minmax need the set's
    channel_histograms)."""
    if method not in _RANGE_METHODS:
        raise ValueError(f"unknown range method {method!r} (expected one of "
                         f"{', '.join(_RANGE_METHODS)})")
    out = pb.ActivationRangeOptions(method=_RANGE_METHODS[method],
                                    asymmetric=bool(asymmetric))
    if percentile is not None:
        if method != "percentile":
            raise ValueError("percentile is for method 'percentile' only")
        out.percentile = float(percentile)
    if per_channel:
        if not has_field(pb.ActivationRangeOptions, "per_channel"):
            raise ValueError("this quantd package was built from a proto "
                             "without per-channel ranges")
        out.per_channel = True
    return out


@dataclasses.dataclass(frozen=True)
class ActivationRange:
    """Static int8 range of a set's activations (W8A8): clip to [lo, hi],
    q = clamp(round(x / scale) + zero_point). With per-channel ranges asked
    for, channel_lo / channel_hi / channel_scale (float32) and
    channel_zero_point (int32) hold one value per input channel."""
    calibration: str
    method: str          # "minmax", "percentile", "mse", "kl"
    symmetric: bool
    lo: float
    hi: float
    scale: float
    zero_point: int
    channel_lo: Optional[np.ndarray] = None
    channel_hi: Optional[np.ndarray] = None
    channel_scale: Optional[np.ndarray] = None
    channel_zero_point: Optional[np.ndarray] = None

    @classmethod
    def from_proto(cls, r: "pb.ActivationRange") -> "ActivationRange":
        names = {v: k for k, v in _RANGE_METHODS.items()}
        channels = {}
        if has_field(pb.ActivationRange, "channels") and len(r.channels):
            channels = dict(
                channel_lo=np.array([c.lo for c in r.channels], np.float32),
                channel_hi=np.array([c.hi for c in r.channels], np.float32),
                channel_scale=np.array([c.scale for c in r.channels], np.float32),
                channel_zero_point=np.array([c.zero_point for c in r.channels],
                                            np.int32))
        return cls(calibration=r.calibration,
                   method=names.get(int(r.method), str(r.method)),
                   symmetric=bool(r.symmetric), lo=r.lo, hi=r.hi, scale=r.scale,
                   zero_point=int(r.zero_point), **channels)


@dataclasses.dataclass(frozen=True)
class W8A8Check:
    """The integer-only path of an int8 tensor on its set's held-back rows:
    int8 activations (the static range) times int8 weight codes in an s32
    GEMM (oneDNN), against the f32 layer; the weights-only error beside it."""
    calibration: str
    rows: int
    relative_error: float
    sqnr_db: float
    max_abs_error: float
    weight_only_relative_error: float
    weight_only_sqnr_db: float
    clipped_fraction: float
    activation_scale: float
    activation_zero_point: int
    gemm: str

    @classmethod
    def from_proto(cls, c: "pb.W8A8Check") -> "W8A8Check":
        return cls(calibration=c.calibration, rows=int(c.rows),
                   relative_error=c.relative_error, sqnr_db=c.sqnr_db,
                   max_abs_error=c.max_abs_error,
                   weight_only_relative_error=c.weight_only_relative_error,
                   weight_only_sqnr_db=c.weight_only_sqnr_db,
                   clipped_fraction=c.clipped_fraction,
                   activation_scale=c.activation_scale,
                   activation_zero_point=int(c.activation_zero_point),
                   gemm=c.gemm)
