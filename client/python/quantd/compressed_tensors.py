"""Hugging Face checkpoints in vLLM's compressed-tensors layout, quantized
by quantd servers.

    import quantd
    from quantd import compressed_tensors as ct

    with quantd.Client("localhost:50051") as client:
        report = ct.write_compressed_tensors(client, "models/MiniLM", "out/",
                                             "W4A16")
    print(ct.format_report(report))

or from a shell:

    python -m quantd.compressed_tensors --server localhost:50051 \\
        --model models/MiniLM --preset W4A16 --out out/ [--group-size 128] \\
        [--ignore REGEX] [--calibration activations.npz]

The input is a model directory: config.json and model.safetensors (or
model.safetensors.index.json with its shards). Every Linear weight (a 2-D
floating-point "<module>.weight" that is not an embedding, a norm, or
matched by an ignore pattern; a layer stored transposed, as GPT-2's Conv1D,
needs an ignore pattern) is quantized on the server; everything else
(biases, norms, embeddings, buffers such as position_ids) is copied into
the output byte for byte, in its own dtype. The output directory gets
model.safetensors and config.json (the input's, plus `quantization_config`),
and the input's other small files (tokenizer, generation config...).

Format (compressed-tensors' compressors, as vLLM loads them; M is a
module name such as "model.layers.0.mlp.up_proj", W its weight [out, in]):

  pack-quantized (W4A16, W8A16 and their _ASYM variants, int weights only):
    M.weight_packed   int32 [out, ceil(in * b / 32)]: the codes q in
                      [-2^(b-1), 2^(b-1)-1] stored as q + 2^(b-1), packed
                      densely along each row: element j of a row occupies
                      bits [j*b, (j+1)*b) of the row's little-endian
                      stream of 32-bit words (for b = 4: eight per word,
                      element j at bits 4*(j % 8)).
    M.weight_scale    [out, in / group_size] (group) or [out, 1] (channel),
                      float32.
    M.weight_shape    int64 [2]: W's shape.
    M.weight_zero_point (asymmetric only) int32 [ceil(out * b / 32),
                      groups]: the zero points z in [-2^(b-1), 2^(b-1)-1]
                      as z + 2^(b-1), packed the same way along the OUTPUT
                      dimension (each column of the [out, groups] matrix is
                      one stream).
    M.weight_g_idx    (method gptq, actorder "group" only) int32 [in]: the
                      group of each input column; column c then uses
                      weight_scale[:, g_idx[c]] (and that zero point).
    Value: (q - z) * scale.
  int-quantized (W8A8): M.weight int8 [out, in], M.weight_scale float32
    [out, 1]; with static activations M.input_scale float32 [1].
  float-quantized (FP8, FP8_DYNAMIC): M.weight float8_e4m3fn [out, in],
    M.weight_scale float32 [1] (tensor) or [out, 1] (channel); with static
    activations M.input_scale float32 [1]. Value: fp8 * scale.
  nvfp4-pack-quantized (NVFP4A16, NVFP4): M.weight_packed uint8 [out, in/2]
    (E2M1 codes, element 2i in the low nibble), M.weight_scale
    float8_e4m3fn [out, in/16], M.weight_global_scale float32 [1]; NVFP4
    adds M.input_global_scale float32 [1]. Value: e2m1 * (scale /
    global_scale). compressed-tensors stores the reciprocal of quantd's
    tensor scale g = amax / 2688: global_scale = 2688 / amax (f32), so a
    decoded value may differ from quantd's e2m1 * (scale * g) in the last
    bits (at most a few units in the last place).
  mxfp4-pack-quantized (MXFP4A16, MXFP4): M.weight_packed uint8 [out, in/2],
    M.weight_scale uint8 [out, in/32] (E8M0: 2^(byte - 127)).
  mxfp8-quantized (MXFP8A16, MXFP8): M.weight float8_e4m3fn [out, in],
    M.weight_scale uint8 [out, in/32] (E8M0).

With round to nearest, symmetric int presets use compressed-tensors'
full-range convention
(quantd's "int<b>_full": scale = amax / ((2^b - 1) / 2), codes clamped to
[-2^(b-1), 2^(b-1)-1]); asymmetric ones quantd's int<b>_asym, whose
unsigned codes u and zero points zu are stored as they are (u = q + 2^(b-1)
and zu = z + 2^(b-1) in compressed-tensors' terms, so (q - z) = (u - zu)).
With method "gptq" symmetric scales are GPTQ's own, amax / (2^(b-1) - 1)
(quantd's int<b>_sym), which decode the same way.

Static activation scales (W8A8, FP8, NVFP4) need calibration activations:
`calibration` maps a module name to its input X [tokens, in]; the server
measures the range of X (ActivationRange) and input_scale is amax / 127.5
(int8), amax / 448 (FP8) or input_global_scale 2688 / amax (NVFP4). Without
calibration W8A8 and FP8 quantize activations dynamically, per token.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import struct
import sys
import tempfile
import time
from typing import (Any, BinaryIO, Callable, Dict, Iterable, Iterator, List,
                    Mapping,
                    Optional, Sequence, Tuple, Union)

import numpy as np

__all__ = ["PRESETS", "Preset", "TensorReport", "write_compressed_tensors",
           "quantization_config", "format_report", "pack_to_int32",
           "SafetensorsReader", "SafetensorsWriter", "main"]

# The compressed-tensors release whose layout and config this writer follows.
COMPRESSED_TENSORS_VERSION = "0.18.0"

# --- presets -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preset:
    """One compressed-tensors scheme: how weights (and activations) are
    quantized, the quantd scheme that produces the weights, and the format
    the checkpoint is written in."""
    name: str
    format: str                  # compressed-tensors' CompressionFormat value
    weight_type: str             # "int" or "float"
    num_bits: int
    strategy: str                # "group", "channel", "tensor", "tensor_group"
    group_size: Optional[int]
    symmetric: bool
    # Input activations: None (A16), or "int8" / "fp8" / "nvfp4" / "mxfp4".
    activations: Optional[str] = None

    def with_group_size(self, group_size: Optional[int]) -> "Preset":
        """The preset with another group size (int presets only): None keeps
        it, 0 or -1 means per channel."""
        if group_size is None:
            return self
        if self.weight_type != "int" or self.format != "pack-quantized":
            raise ValueError(f"preset {self.name}: the group size is fixed")
        if group_size in (0, -1):
            return dataclasses.replace(self, strategy="channel", group_size=None)
        if group_size < 1:
            raise ValueError(f"group size must be >= 1, or 0 / -1 for per "
                             f"channel, not {group_size}")
        return dataclasses.replace(self, strategy="group", group_size=group_size)

    def quantd_scheme(self, method: str = "rtn",
                      actorder: Optional[str] = None) -> str:
        """The textual quantd scheme for this preset's weights. Int presets
        also take method "gptq" (on each Linear's calibration activations)
        with actorder None, "weight" (act-order, groups of consecutive
        columns) or "group" (act-order groups, stored as weight_g_idx)."""
        if method not in ("rtn", "gptq", "awq"):
            raise ValueError(f"method {method!r} (rtn, gptq or awq)")
        if actorder not in (None, "weight", "group"):
            raise ValueError(f"actorder {actorder!r} (weight or group)")
        if method != "gptq" and actorder is not None:
            raise ValueError("actorder applies to method gptq only")
        if self.weight_type == "int":
            gran = (f"g{self.group_size}" if self.strategy == "group"
                    else self.strategy)
            if method == "rtn":
                sym = "full" if self.symmetric else "asym"
                return f"int{self.num_bits}_{sym}_{gran}"
            if actorder is not None and self.strategy != "group":
                # compressed-tensors refuses activation ordering on any
                # other strategy when it loads the config.
                raise ValueError(f"preset {self.name}: actorder {actorder} "
                                 f"needs groups, not strategy {self.strategy}")
            # GPTQ and AWQ pick their own scales (symmetric: amax /
            # (2^(b-1) - 1)); compressed-tensors decodes any scale the same
            # way.
            sym = "sym" if self.symmetric else "asym"
            if method == "awq":
                if self.format != "pack-quantized":
                    raise ValueError(f"preset {self.name}: method awq needs a "
                                     "weight-only (A16) int preset")
                return f"int{self.num_bits}_{sym}_{gran}+awq"
            options = {None: "", "weight": "(act_order,static_groups)",
                       "group": "(act_order)"}[actorder]
            return f"int{self.num_bits}_{sym}_{gran}+gptq{options}"
        if method != "rtn":
            raise ValueError(f"preset {self.name}: method {method} needs an "
                             "int preset")
        if self.format == "float-quantized":
            return f"fp8_e4m3_{self.strategy}"
        if self.format == "nvfp4-pack-quantized":
            return "modelopt_nvfp4"
        if self.format == "mxfp4-pack-quantized":
            return "ocp_mxfp4"
        if self.format == "mxfp8-quantized":
            return "ocp_mxfp8"
        raise ValueError(f"preset {self.name}: no quantd scheme")


def _int_preset(name, bits, symmetric, activations=None, fmt="pack-quantized",
                strategy="group", group_size=128):
    return Preset(name=name, format=fmt, weight_type="int", num_bits=bits,
                  strategy=strategy, group_size=group_size,
                  symmetric=symmetric, activations=activations)


PRESETS: Dict[str, Preset] = {p.name: p for p in (
    _int_preset("W4A16", 4, True),
    _int_preset("W4A16_ASYM", 4, False),
    _int_preset("W8A16", 8, True),
    _int_preset("W8A16_ASYM", 8, False),
    _int_preset("W8A8", 8, True, activations="int8", fmt="int-quantized",
                strategy="channel", group_size=None),
    Preset("FP8", "float-quantized", "float", 8, "tensor", None, True, "fp8"),
    Preset("FP8_DYNAMIC", "float-quantized", "float", 8, "channel", None, True,
           "fp8"),
    Preset("NVFP4A16", "nvfp4-pack-quantized", "float", 4, "tensor_group", 16,
           True),
    Preset("NVFP4", "nvfp4-pack-quantized", "float", 4, "tensor_group", 16,
           True, "nvfp4"),
    Preset("MXFP4A16", "mxfp4-pack-quantized", "float", 4, "group", 32, True),
    Preset("MXFP4", "mxfp4-pack-quantized", "float", 4, "group", 32, True,
           "mxfp4"),
    Preset("MXFP8A16", "mxfp8-quantized", "float", 8, "group", 32, True),
    Preset("MXFP8", "mxfp8-quantized", "float", 8, "group", 32, True, "mxfp8"),
)}


def _args(num_bits, type_, strategy, group_size, symmetric, dynamic,
          observer, scale_dtype=None, zp_dtype=None) -> Dict[str, Any]:
    """QuantizationArgs as compressed-tensors dumps them (every field; its
    serializer writes zp_dtype only for asymmetric args)."""
    return {
        "actorder": None,
        "block_structure": None,
        "dynamic": dynamic,
        "group_size": group_size,
        "num_bits": num_bits,
        "observer": observer,
        "observer_kwargs": {},
        "scale_dtype": scale_dtype,
        "strategy": strategy,
        "symmetric": symmetric,
        "type": type_,
        "zp_dtype": None if symmetric else zp_dtype,
    }


def _weight_args(p: Preset, actorder: Optional[str] = None) -> Dict[str, Any]:
    scale_dtype = {"nvfp4-pack-quantized": "torch.float8_e4m3fn",
                   "mxfp4-pack-quantized": "torch.uint8",
                   "mxfp8-quantized": "torch.uint8"}.get(p.format)
    args = _args(p.num_bits, p.weight_type, p.strategy, p.group_size,
                 p.symmetric, False, "memoryless_minmax", scale_dtype,
                 "torch.int8" if p.weight_type == "int" else None)
    args["actorder"] = actorder
    return args


def _input_args(p: Preset, static: bool) -> Optional[Dict[str, Any]]:
    kind = p.activations
    if kind is None:
        return None
    if kind in ("int8", "fp8"):
        type_ = "int" if kind == "int8" else "float"
        if static:
            return _args(8, type_, "tensor", None, True, False, "static_minmax")
        return _args(8, type_, "token", None, True, True, None)
    if kind == "nvfp4":
        return _args(4, "float", "tensor_group", 16, True, "local",
                     "static_minmax", "torch.float8_e4m3fn")
    if kind in ("mxfp4", "mxfp8"):
        return _args(4 if kind == "mxfp4" else 8, "float", "group", 32, True,
                     True, None, "torch.uint8")
    raise ValueError(f"activations {kind!r}")


def quantization_config(preset: Preset, ignore: Sequence[str],
                        static_activations: bool = False,
                        actorder: Optional[str] = None) -> Dict[str, Any]:
    """config.json's `quantization_config` as compressed-tensors writes it
    (ModelCompressor.update_config: the QuantizationConfig dump with the
    version, quant_method, sparsity_config and transform_config). `actorder`
    is the weights' activation ordering ("group": each Linear has
    weight_g_idx)."""
    return {
        "config_groups": {
            "group_0": {
                "format": preset.format,
                "input_activations": _input_args(preset, static_activations),
                "output_activations": None,
                "targets": ["Linear"],
                "weights": _weight_args(preset, actorder),
            },
        },
        "format": preset.format,
        "global_compression_ratio": None,
        "ignore": list(ignore),
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": COMPRESSED_TENSORS_VERSION,
    }


# --- safetensors ------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"), "U64": np.dtype("<u8"), "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"), "F8_E4M3": np.dtype("u1"), "F8_E5M2": np.dtype("u1"),
}
_ST_SIZES = {k: v.itemsize for k, v in _ST_DTYPES.items()}


class SafetensorsReader:
    """Reads safetensors files (one, or the shards an index names) without
    loading them: `raw(name)` is the tensor's bytes (memory-mapped),
    `array(name)` a numpy array (BF16 as ml_dtypes.bfloat16 when installed,
    F8 as uint8 bits)."""

    def __init__(self, model_dir: Union[str, os.PathLike]):
        self.dir = pathlib.Path(model_dir)
        single = self.dir / "model.safetensors"
        index = self.dir / "model.safetensors.index.json"
        if single.exists():
            files = [single]
        elif index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [self.dir / f for f in dict.fromkeys(weight_map.values())]
        else:
            raise FileNotFoundError(f"{self.dir}: no model.safetensors or "
                                    "model.safetensors.index.json")
        self.entries: Dict[str, Tuple[np.memmap, str, Tuple[int, ...]]] = {}
        self.metadata: Dict[str, str] = {}
        for path in files:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) \
                if os.path.getsize(path) > 8 + n else np.zeros(0, np.uint8)
            self.metadata.update(header.pop("__metadata__", {}) or {})
            for name, info in header.items():
                start, end = info["data_offsets"]
                dtype, shape = info["dtype"], tuple(info["shape"])
                if dtype not in _ST_SIZES:
                    raise ValueError(f"{path}: tensor {name} has dtype {dtype}, "
                                     "which this reader does not know")
                if end - start != _ST_SIZES[dtype] * math.prod(shape):
                    raise ValueError(f"{path}: tensor {name}: {end - start} bytes "
                                     f"for {dtype} {list(shape)}")
                self.entries[name] = (data[start:end], dtype, shape)

    def keys(self) -> List[str]:
        return list(self.entries)

    def dtype(self, name: str) -> str:
        return self.entries[name][1]

    def shape(self, name: str) -> Tuple[int, ...]:
        return self.entries[name][2]

    def raw(self, name: str) -> np.ndarray:
        return self.entries[name][0]

    def array(self, name: str) -> np.ndarray:
        raw, dtype, shape = self.entries[name]
        arr = np.frombuffer(raw, dtype=_ST_DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            try:
                import ml_dtypes
                arr = arr.view(ml_dtypes.bfloat16)
            except ImportError:
                pass
        return arr


class SafetensorsWriter:
    """Writes one safetensors file tensor by tensor: the data goes to a
    temporary file beside the output as it comes (nothing is held), and
    close() writes the header (tensors sorted by name, as safetensors
    does) and appends the data in that order."""

    def __init__(self, path: Union[str, os.PathLike],
                 metadata: Optional[Mapping[str, str]] = None):
        self.path = pathlib.Path(path)
        self.metadata = dict(metadata or {})
        self._tmp = tempfile.NamedTemporaryFile(
            dir=self.path.parent, prefix=".tensors-", delete=False)
        self._items: Dict[str, Tuple[str, Tuple[int, ...], int, int]] = {}
        self._offset = 0

    def add(self, name: str, dtype: str, shape: Sequence[int], data) -> None:
        """`data`: bytes-like or an array whose bytes are the little-endian
        values of `dtype` (a safetensors dtype name, e.g. "I32", "F8_E4M3")."""
        if name in self._items:
            raise ValueError(f"tensor {name} written twice")
        buf = memoryview(np.ascontiguousarray(data)).cast("B") \
            if isinstance(data, np.ndarray) else memoryview(data).cast("B")
        if len(buf) != _ST_SIZES[dtype] * math.prod(shape):
            raise ValueError(f"tensor {name}: {len(buf)} bytes for {dtype} "
                             f"{list(shape)}")
        self._tmp.write(buf)
        self._items[name] = (dtype, tuple(int(d) for d in shape), self._offset,
                             len(buf))
        self._offset += len(buf)

    def close(self) -> None:
        self._tmp.flush()
        header: Dict[str, Any] = {}
        if self.metadata:
            header["__metadata__"] = self.metadata
        order = sorted(self._items)
        offset = 0
        for name in order:
            dtype, shape, _, size = self._items[name]
            header[name] = {"dtype": dtype, "shape": list(shape),
                            "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
        with open(self.path, "wb") as out, open(self._tmp.name, "rb") as src:
            out.write(struct.pack("<Q", len(text)))
            out.write(text)
            for name in order:
                _, _, start, size = self._items[name]
                src.seek(start)
                while size:
                    piece = src.read(min(size, 1 << 24))
                    out.write(piece)
                    size -= len(piece)
        self._tmp.close()
        os.unlink(self._tmp.name)

    def abort(self) -> None:
        self._tmp.close()
        if os.path.exists(self._tmp.name):
            os.unlink(self._tmp.name)


# --- packing ---------------------------------------------------------------------------


def pack_to_int32(values: np.ndarray, num_bits: int, axis: int = 1) -> np.ndarray:
    """compressed-tensors' int32 packing of signed b-bit values (2-D):
    each line along `axis` (rows for axis=1, columns for axis=0) is one
    dense stream of 32-bit words in which element j, stored as
    value + 2^(b-1), occupies bits [j*b, (j+1)*b) (crossing a word boundary
    where it must); ceil(length * b / 32) words per line."""
    v = np.asarray(values, dtype=np.int64)
    if v.ndim != 2:
        raise ValueError(f"pack_to_int32 takes a 2-D array, not {v.ndim}-D")
    if axis == 0:
        return np.ascontiguousarray(pack_to_int32(v.T, num_bits, 1).T)
    lo, hi = -(1 << (num_bits - 1)), (1 << (num_bits - 1)) - 1
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"values outside the {num_bits}-bit range [{lo}, {hi}]")
    u = (v + (1 << (num_bits - 1))).astype(np.uint64)
    rows, cols = u.shape
    words = -(-cols * num_bits // 32)
    if 32 % num_bits == 0:  # fields never straddle words: 32 / b per word
        per = 32 // num_bits
        padded = np.zeros((rows, words * per), dtype=np.uint64)
        padded[:, :cols] = u
        acc = np.zeros((rows, words), dtype=np.uint64)
        for k in range(per):
            acc |= padded[:, k::per] << np.uint64(k * num_bits)
        return acc.astype(np.uint32).view(np.int32)
    out = np.zeros((rows, words + 1), dtype=np.uint64)
    start = np.arange(cols, dtype=np.int64) * num_bits
    word, shift = start // 32, (start % 32).astype(np.uint64)
    # Each field lands in word `word` (low part) and possibly word + 1.
    wide = u << shift[None, :]
    np.add.at(out, (slice(None), word), wide & np.uint64(0xFFFFFFFF))
    np.add.at(out, (slice(None), word + 1), wide >> np.uint64(32))
    return out[:, :words].astype(np.uint32).view(np.int32)


# --- the writer -------------------------------------------------------------------------

# Modules whose 2-D weights are not Linear layers (compressed-tensors'
# targets ["Linear"] leave them alone).
_NOT_LINEAR = re.compile(r"(^|\.)(embed[a-z_]*|[a-z_]*embeddings?|wte|wpe|"
                         r"tok_embeddings|shared|[a-z_]*norm[a-z_0-9]*|"
                         r"LayerNorm|ln_[a-z0-9_]*)(\.|$)", re.IGNORECASE)
# Linear layers kept in full precision unless asked otherwise.
DEFAULT_IGNORE = (r"(^|\.)lm_head$",)
_FLOAT_DTYPES = ("F32", "F16", "BF16")


@dataclasses.dataclass
class TensorReport:
    """One tensor of the output: quantized (scheme set) or copied."""
    name: str                       # the input tensor's name
    shape: Tuple[int, ...]
    scheme: str                     # the quantd scheme, "" when copied
    dtype: str                      # the input's safetensors dtype
    bits_per_weight: float          # as stored in the output
    sqnr_db: float = float("nan")
    stored: Tuple[str, ...] = ()    # the output tensors it became
    stored_bytes: int = 0
    seconds: float = 0.0
    # method "awq": the module whose output was divided by the scales s
    # folded out of this Linear's input, and s itself (float32, [in]).
    folded_into: str = ""
    input_scales: Optional[np.ndarray] = None


def _module_of(name: str) -> str:
    return name[:-len(".weight")]


def is_linear_weight(name: str, dtype: str, shape: Sequence[int]) -> bool:
    """A Linear layer's weight, by the name and shape of the tensor alone: a
    2-D floating-point "<module>.weight" whose module is not an embedding
    or a norm."""
    return (name.endswith(".weight") and len(shape) == 2 and dtype in _FLOAT_DTYPES
            and not _NOT_LINEAR.search(_module_of(name)))


def _input_array(reader: SafetensorsReader, name: str):
    arr = reader.array(name)
    if reader.dtype(name) == "BF16" and arr.dtype == np.uint16:
        return {"array": arr, "dtype": "bf16"}
    return {"array": arr}


def _static_scale(preset: Preset, q) -> Optional[Tuple[str, float]]:
    """(tensor suffix, value) of the static activation parameter from the
    server's activation range, or None."""
    r = q.activation_range
    if r is None or preset.activations is None:
        return None
    amax = np.float32(max(-float(r.lo), float(r.hi), 0.0))
    if preset.activations == "int8":
        value = amax / np.float32(127.5)
        return "input_scale", float(value if value > 0 else np.finfo(np.float32).eps)
    if preset.activations == "fp8":
        value = amax / np.float32(448.0)
        return "input_scale", float(value if value > 0 else np.finfo(np.float32).eps)
    if preset.activations == "nvfp4":
        value = np.float32(448.0 * 6.0) / amax if amax > 0 else np.float32(1.0)
        return "input_global_scale", float(value)
    return None


def _global_scale(weight: np.ndarray) -> np.float32:
    """compressed-tensors' NVFP4 weight_global_scale, 448 * 6 / amax (f32), from
    the weight's amax; 1 for an all-zero tensor (where quantd's g is 1)."""
    amax = np.float32(np.max(np.abs(np.asarray(weight, dtype=np.float32))))
    if amax == 0:
        return np.float32(1.0)
    return np.float32(np.float32(2688.0) / amax)


def _stored_tensors(preset: Preset, module: str, q, weight,
                    actorder: Optional[str] = None
                    ) -> List[Tuple[str, str, Tuple[int, ...], np.ndarray]]:
    """(name, safetensors dtype, shape, data) of one quantized Linear."""
    layout = getattr(q, "layout", None)  # None: an awq_fold.FoldedWeight
    rows, cols = q.shape
    out = []
    scale_shape = (rows, 1) if preset.strategy == "channel" else (
        (1,) if preset.strategy == "tensor" else None)
    if preset.format == "pack-quantized":
        b = preset.num_bits
        codes = q.unpack_codes().astype(np.int64)
        if not preset.symmetric:
            codes = codes - (1 << (b - 1))           # unsigned u -> q = u - 2^(b-1)
        out.append((f"{module}.weight_packed", "I32",
                    (rows, -(-cols * b // 32)), pack_to_int32(codes, b, axis=1)))
        scales = q.scales.reshape(rows, -1).astype("<f4")
        out.append((f"{module}.weight_scale", "F32", scales.shape, scales))
        out.append((f"{module}.weight_shape", "I64", (2,),
                    np.array([rows, cols], dtype="<i8")))
        if not preset.symmetric:
            zp = q.zero_points.reshape(rows, -1).astype(np.int64) - (1 << (b - 1))
            packed = pack_to_int32(zp, b, axis=0)
            out.append((f"{module}.weight_zero_point", "I32", packed.shape, packed))
        g_idx = getattr(q, "g_idx", None)
        if g_idx is None and actorder == "group":
            # One group per row (in == group size): every column in group 0,
            # still stored, as the config promises every Linear one.
            g_idx = np.arange(cols) // max(cols // scales.shape[1], 1)
        if g_idx is not None:
            # GPTQ's act-order groups (actorder "group"): column c uses
            # weight_scale[:, g_idx[c]].
            out.append((f"{module}.weight_g_idx", "I32", (cols,),
                        np.asarray(g_idx, dtype="<i4")))
    elif preset.format == "int-quantized":
        codes = q.unpack_codes().astype(np.int8)
        out.append((f"{module}.weight", "I8", (rows, cols), codes))
        out.append((f"{module}.weight_scale", "F32", scale_shape,
                    q.scales.astype("<f4").reshape(scale_shape)))
    elif preset.format == "float-quantized":
        out.append((f"{module}.weight", "F8_E4M3", (rows, cols),
                    np.asarray(q.codes, np.uint8)))
        out.append((f"{module}.weight_scale", "F32", scale_shape,
                    q.scales.astype("<f4").reshape(scale_shape)))
    elif preset.format == "mxfp8-quantized":
        out.append((f"{module}.weight", "F8_E4M3", (rows, cols),
                    np.asarray(q.codes, np.uint8)))
        out.append((f"{module}.weight_scale", "U8", (rows, cols // 32),
                    np.asarray(q.block_scales, np.uint8)))
    elif preset.format in ("nvfp4-pack-quantized", "mxfp4-pack-quantized"):
        if layout.high_nibble_first:
            raise ValueError(f"tensor {q.name}: unexpected nibble order")
        out.append((f"{module}.weight_packed", "U8", (rows, cols // 2),
                    np.asarray(q.codes, np.uint8)))
        bs = np.asarray(q.block_scales, np.uint8)
        if preset.format == "nvfp4-pack-quantized":
            out.append((f"{module}.weight_scale", "F8_E4M3", (rows, cols // 16), bs))
            out.append((f"{module}.weight_global_scale", "F32", (1,),
                        np.array([_global_scale(weight)], dtype="<f4")))
        else:
            out.append((f"{module}.weight_scale", "U8", (rows, cols // 32), bs))
    else:
        raise ValueError(f"format {preset.format}")
    return out


def input_sets(calibration: Mapping[str, np.ndarray], weights: Iterable[str]
               ) -> Tuple[Dict[str, str], List[Any]]:
    """The calibration sets of `weights` ("<module>.weight" names) from
    `calibration` (module name -> its input activations): each weight's set
    name, and the sets, one per distinct array (q, k and v sharing one array
    send it once). ValueError naming the first weight without an entry."""
    from quantd.calibration import Calibration
    by_array: Dict[int, Calibration] = {}
    set_of: Dict[str, str] = {}
    for name in weights:
        module = _module_of(name)
        if module not in calibration:
            raise ValueError(f"tensor {name}: no calibration activations for "
                             f"module {module}")
        x = calibration[module]
        if id(x) not in by_array:
            by_array[id(x)] = Calibration(f"{module}.input", activations=x)
        set_of[name] = by_array[id(x)].name
    return set_of, list(by_array.values())


def _check_shape(preset: Preset, name: str, shape: Tuple[int, ...]) -> Optional[str]:
    """Why this Linear cannot take the preset, or None."""
    cols = shape[1]
    if preset.strategy in ("group", "tensor_group") and cols % preset.group_size:
        return f"in_features {cols} is not a multiple of the group size " \
               f"{preset.group_size}"
    return None


def write_compressed_tensors(
        client, model_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
        preset: Union[str, Preset], *, group_size: Optional[int] = None,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        calibration: Optional[Mapping[str, np.ndarray]] = None,
        method: str = "rtn", actorder: Optional[str] = None,
        output: str = "packed",
        on_result: Optional[Callable[[Any], None]] = None,
        max_in_flight: Optional[int] = None) -> List[TensorReport]:
    """Quantizes every Linear weight of the Hugging Face model in `model_dir`
    on `client`'s servers (one quantize_many stream, tensors read lazily)
    and writes a compressed-tensors checkpoint to `out_dir`.

    Args:
      preset: a PRESETS name ("W4A16", "W4A16_ASYM", "W8A16", "W8A16_ASYM",
        "W8A8", "FP8", "FP8_DYNAMIC", "NVFP4A16", "NVFP4", "MXFP4A16",
        "MXFP4", "MXFP8A16", "MXFP8") or a Preset.
      group_size: int presets only: replaces the preset's 128; 0 or -1 for
        one scale per output channel.
      ignore: regular expressions (re.search) on module names: matching
        Linear layers are copied unquantized and listed in the config's
        `ignore`. Default: lm_head.
      calibration: module name -> that layer's input activations [tokens,
        in_features]; gives W8A8, FP8 and NVFP4 static activation scales
        (every quantized Linear then needs an entry). Arrays shared by
        several modules (q, k, v) are sent once.
      method: "rtn" (round to nearest, compressed-tensors' own scales),
        "gptq" for the int presets: GPTQ on each Linear's calibration
        activations (every quantized Linear needs an entry), or "awq" for
        the weight-only int presets: AWQ on the Linears whose input comes
        from a foldable op, its scales folded into that op (norm weights and
        biases, the previous Linear's rows; quantd.awq_fold has the
        mappings), so the checkpoint needs nothing extra at run time; the
        other Linears are rounded to nearest. Those Linears' results do not
        go to on_result.
      actorder: GPTQ's activation ordering: None, "weight" (columns
        quantized by descending activation energy, groups of consecutive
        columns) or "group" (groups formed in that order, llm-compressor's
        actorder="group": each Linear gets weight_g_idx).
      output: "packed", or "both" to have each result's dequantized values
        (for on_result).
      on_result: called with each quantd.QuantizedTensor as it arrives.

    Returns one TensorReport per input tensor, in the input's order.
    Raises ValueError for an unknown preset, a Linear whose shape the
    preset cannot take (its name and why), a missing calibration entry;
    quantd errors as raised by Client.quantize_many.
    """
    if isinstance(preset, str):
        try:
            preset = PRESETS[preset.upper()]
        except KeyError:
            raise ValueError(f"unknown preset {preset!r} (one of "
                             f"{', '.join(PRESETS)})") from None
    preset = preset.with_group_size(group_size)
    scheme = preset.quantd_scheme(method, actorder)
    model_dir, out_dir = pathlib.Path(model_dir), pathlib.Path(out_dir)
    reader = SafetensorsReader(model_dir)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    patterns = [re.compile(p) for p in ignore]

    targets, ignored = [], []
    for name in reader.keys():
        if not is_linear_weight(name, reader.dtype(name), reader.shape(name)):
            continue
        module = _module_of(name)
        if any(p.search(module) for p in patterns):
            ignored.append(module)
            continue
        why = _check_shape(preset, name, reader.shape(name))
        if why:
            raise ValueError(f"tensor {name}: preset {preset.name}: {why} (add "
                             f"--ignore for it)")
        targets.append(name)
    if preset.format == "pack-quantized" and not preset.symmetric \
            and preset.strategy == "tensor":
        raise ValueError(f"preset {preset.name}: no zero point per tensor")

    static = bool(calibration) and preset.activations in ("int8", "fp8", "nvfp4")
    if method in ("gptq", "awq") and not calibration:
        raise ValueError(f"method {method} needs calibration activations for "
                         "every quantized Linear")
    mappings: List[Any] = []
    if method == "awq":
        from quantd import awq_fold
        mappings = awq_fold.find_mappings(
            {n: reader.shape(n) for n in reader.keys()}, targets)
        if not mappings:
            raise ValueError("method awq: no Linear whose input comes from a "
                             "foldable op (llama-like pre-norm decoder or "
                             "BERT-like attention names)")
    if preset.activations == "nvfp4" and not static:
        raise ValueError(f"preset {preset.name} quantizes activations with a "
                         "static global scale: give calibration activations, or "
                         "use NVFP4A16")
    set_of: Dict[str, str] = {}
    sets: List[Any] = []
    if static or method == "gptq":
        set_of, sets = input_sets(calibration, targets)

    out_dir.mkdir(parents=True, exist_ok=True)
    writer = SafetensorsWriter(out_dir / "model.safetensors",
                               metadata={"format": "pt"})
    reports: Dict[str, TensorReport] = {}
    folded: Dict[str, Any] = {}
    changed: Dict[str, np.ndarray] = {}
    rest_scheme = scheme
    try:
        if method == "awq":
            # AWQ on the foldable Linears first: their scales change norms,
            # biases and weights that are written below.
            from quantd import awq_fold
            rest_scheme = preset.quantd_scheme("rtn")
            folded, changed = awq_fold.run(
                client, lambda n: reader.array(n) if n in reader.entries else None,
                mappings, scheme, calibration, max_in_flight=max_in_flight)
            smooth_of = {b: m.smooth for m in mappings for b in m.balance}
            for name, part in folded.items():
                stored = _stored_tensors(preset, _module_of(name), part, None)
                size = 0
                for out_name, dtype, shape, data in stored:
                    writer.add(out_name, dtype, shape, data)
                    size += _ST_SIZES[dtype] * math.prod(shape)
                reports[name] = TensorReport(
                    name=name, shape=part.shape, scheme=part.scheme,
                    dtype=reader.dtype(name),
                    bits_per_weight=8.0 * size / math.prod(part.shape),
                    sqnr_db=part.sqnr_db, stored=tuple(x[0] for x in stored),
                    stored_bytes=size, seconds=part.seconds,
                    folded_into=smooth_of[name], input_scales=part.input_scales)
        for name in reader.keys():
            if name in targets:
                continue
            shape = reader.shape(name)
            if name in changed:  # a norm or bias an AWQ scale was folded into
                writer.add(name, reader.dtype(name), shape,
                           awq_fold.to_dtype(changed[name], reader.dtype(name)))
            else:
                writer.add(name, reader.dtype(name), shape, reader.raw(name))
            n = max(math.prod(shape), 1)
            reports[name] = TensorReport(
                name=name, shape=shape, scheme="", dtype=reader.dtype(name),
                bits_per_weight=8.0 * _ST_SIZES[reader.dtype(name)],
                stored=(name,), stored_bytes=_ST_SIZES[reader.dtype(name)] * n)

        def items() -> Iterator[Dict[str, Any]]:
            for name in targets:
                if name in folded:
                    continue
                item = {"name": name, "scheme": rest_scheme,
                        **_input_array(reader, name)}
                if name in changed:  # a row-folded Linear outside AWQ
                    item["array"] = changed[name]
                    item.pop("dtype", None)
                if name in set_of:
                    item["calibration"] = set_of[name]
                yield item

        static_values: Dict[str, Tuple[str, float]] = {}
        for q in client.quantize_many(items(), rest_scheme, output=output,
                                      max_in_flight=max_in_flight,
                                      calibration_sets=sets):
            if on_result is not None:
                on_result(q)
            if preset.weight_type == "int" and preset.symmetric and \
                    method in ("rtn", "awq") and not q.layout.full_range:
                raise ValueError(
                    f"tensor {q.name}: the server at {q.target} answered "
                    f"{q.scheme}, not the full-range {rest_scheme} (it predates "
                    "Scheme.full_range)")
            module = _module_of(q.name)
            weight = reader.array(q.name)
            stored = _stored_tensors(preset, module, q, weight, actorder)
            if static:
                param = _static_scale(preset, q)
                if param is None:
                    raise ValueError(f"tensor {q.name}: the server sent no "
                                     "activation range")
                suffix, value = param
                stored.append((f"{module}.{suffix}", "F32", (1,),
                               np.array([value], dtype="<f4")))
            size = 0
            for out_name, dtype, shape, data in stored:
                writer.add(out_name, dtype, shape, data)
                size += _ST_SIZES[dtype] * math.prod(shape)
            n = math.prod(q.shape)
            reports[q.name] = TensorReport(
                name=q.name, shape=tuple(q.shape), scheme=q.scheme,
                dtype=reader.dtype(q.name), bits_per_weight=8.0 * size / n,
                sqnr_db=q.metrics.sqnr_db, stored=tuple(s[0] for s in stored),
                stored_bytes=size, seconds=q.seconds)
        writer.close()
    except BaseException:
        writer.abort()
        raise

    config["quantization_config"] = quantization_config(preset, ignored, static,
                                                        actorder)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2,
                                                    sort_keys=True) + "\n")
    for extra in model_dir.iterdir():
        # Tokenizer, generation config, sentence-transformers' module folders
        # and the like (small files only, no weights).
        target = out_dir / extra.name
        if target.exists() or extra.name in (
                "config.json", "model.safetensors.index.json") \
                or extra.name.endswith(".safetensors"):
            continue
        if extra.is_file() and extra.stat().st_size < (64 << 20):
            shutil.copy2(extra, target)
        elif extra.is_dir() and not any(
                f.suffix in (".safetensors", ".bin", ".pt", ".gguf")
                or (f.is_file() and f.stat().st_size >= (64 << 20))
                for f in extra.rglob("*")):
            shutil.copytree(extra, target)
    return [reports[name] for name in reader.keys()]


def format_report(reports: Sequence[TensorReport], quantized_only: bool = True) -> str:
    """A table: name, shape, scheme, bits per weight (as stored), SQNR."""
    rows = [r for r in reports if r.scheme or not quantized_only]
    width = max([len(r.name) for r in rows] + [6])
    lines = [f"{'tensor':<{width}}  {'shape':>12}  {'scheme':<18} {'bpw':>7} "
             f"{'SQNR dB':>8}"]
    for r in rows:
        shape = "x".join(str(d) for d in r.shape)
        sqnr = f"{r.sqnr_db:8.2f}" if r.scheme else f"{'-':>8}"
        lines.append(f"{r.name:<{width}}  {shape:>12}  {r.scheme or 'copied':<18} "
                     f"{r.bits_per_weight:7.3f} {sqnr}")
    quantized = [r for r in reports if r.scheme]
    if quantized:
        weights = sum(math.prod(r.shape) for r in quantized)
        stored = sum(r.stored_bytes for r in quantized)
        lines.append(f"{len(quantized)} Linear weights, {weights} elements, "
                     f"{stored} bytes: {8.0 * stored / weights:.3f} bits per weight")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quantd.compressed_tensors",
        description="Quantize a Hugging Face model's Linear weights on quantd "
                    "servers and write a compressed-tensors checkpoint (vLLM).")
    parser.add_argument("--server", required=True,
                        help="host:port[,host:port...] of quantd servers")
    parser.add_argument("--model", required=True,
                        help="directory with config.json and model.safetensors")
    parser.add_argument("--preset", required=True, type=str.upper,
                        choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--group-size", type=int, default=None,
                        help="int presets: elements per scale (0: per channel)")
    parser.add_argument("--ignore", action="append", default=None,
                        metavar="REGEX",
                        help="keep matching Linear modules unquantized "
                             "(repeatable; default: lm_head)")
    parser.add_argument("--calibration", default=None, metavar="NPZ",
                        help="an .npz of each Linear's input activations "
                             "[tokens, in_features], keyed by module name: "
                             "static activation scales (W8A8 / FP8 / NVFP4) "
                             "and --method gptq")
    parser.add_argument("--method", choices=("rtn", "gptq", "awq"), default="rtn",
                        help="int presets: gptq / awq quantize on "
                             "--calibration (awq folds its scales into the "
                             "norms and Linears before)")
    parser.add_argument("--actorder", choices=("weight", "group"), default=None,
                        help="gptq's activation ordering (group: weight_g_idx)")
    parser.add_argument("--all", action="store_true",
                        help="also list the copied tensors")
    args = parser.parse_args(argv)

    import quantd
    start = time.monotonic()
    calibration = None
    if args.calibration:
        with np.load(args.calibration) as npz:
            calibration = {k: npz[k] for k in npz.files}
    with quantd.Client(args.server) as client:
        try:
            reports = write_compressed_tensors(
                client, args.model, args.out, args.preset,
                group_size=args.group_size, calibration=calibration,
                method=args.method, actorder=args.actorder,
                ignore=args.ignore if args.ignore is not None else DEFAULT_IGNORE)
        except (ValueError, quantd.QuantdError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(format_report(reports, quantized_only=not args.all))
    print(f"wrote {args.out} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
