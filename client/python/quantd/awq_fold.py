"""AWQ whose per-input-channel scales are folded into the op before each
Linear, so the checkpoint is plain quantized weights that any runtime loads.

AWQ quantizes W·diag(s) and needs the layer's input divided by s. That
division is free when the input comes from an op that is linear per channel
and feeds nothing else: a pre-norm block's RMSNorm / LayerNorm (its weight
and bias divided by s), or a Linear whose output channels are the next
Linear's input channels (its rows and bias divided by s). Linears sharing
one such input (q, k, v; gate, up) need one shared s: they are quantized as
one tensor, their rows stacked, which makes AWQ's search minimise their
joint output error, and are split back afterwards (groups never cross a
row, so the split is exact).

The mappings are llm-compressor's for llama-like decoders (names
"<prefix>.layers.N.input_layernorm", "self_attn.{q,k,v,o}_proj",
"post_attention_layernorm", "mlp.{gate,up,down}_proj"):

    input_layernorm          -> q_proj, k_proj, v_proj
    v_proj (rows)            -> o_proj            (when v's out == o's in)
    post_attention_layernorm -> gate_proj, up_proj
    up_proj (rows)           -> down_proj

and for BERT-like encoders ("encoder.layer.N.attention.self.value" ->
"attention.output.dense"), whose norms are post-norm (their output is also
the residual, so no norm fold is valid) only value -> output.dense.
Linears in no mapping are quantized without AWQ.

Row folds come first (their s changes v's and up's weights), then the
norm folds quantize the stacked Linears, v and up with their rows already
divided.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class FoldMapping:
    """The op whose output is divided by s, and the Linears (weight tensor
    names) that share that output as their input."""
    smooth: str                 # module name (a norm, or a Linear)
    kind: str                   # "norm" or "linear"
    balance: Tuple[str, ...]    # "<module>.weight" names


_LLAMA = re.compile(r"^(?P<p>.*\.layers\.\d+)\.self_attn\.q_proj\.weight$")
_BERT = re.compile(r"^(?P<p>.*encoder\.layer\.\d+)\.attention\.self\.value\.weight$")


def find_mappings(shapes: Mapping[str, Tuple[int, ...]],
                  targets: Iterable[str]) -> List[FoldMapping]:
    """The foldable (smooth, balance) pairs among `targets` (weight names
    that will be quantized), given every tensor's shape; row folds first."""
    targets = set(targets)
    rows: List[FoldMapping] = []
    norms: List[FoldMapping] = []

    def linear(smooth: str, balance: str) -> None:
        s, b = f"{smooth}.weight", f"{balance}.weight"
        if s in targets and b in targets and shapes[s][0] == shapes[b][1]:
            rows.append(FoldMapping(smooth, "linear", (b,)))

    def norm(smooth: str, balance: Sequence[str]) -> None:
        names = tuple(f"{m}.weight" for m in balance)
        w = f"{smooth}.weight"
        if w in shapes and len(shapes[w]) == 1 and all(n in targets for n in names) \
                and all(shapes[n][1] == shapes[w][0] for n in names):
            norms.append(FoldMapping(smooth, "norm", names))

    for name in sorted(shapes):
        m = _LLAMA.match(name)
        if m:
            p = m.group("p")
            linear(f"{p}.self_attn.v_proj", f"{p}.self_attn.o_proj")
            linear(f"{p}.mlp.up_proj", f"{p}.mlp.down_proj")
            norm(f"{p}.input_layernorm",
                 [f"{p}.self_attn.{x}_proj" for x in "qkv"])
            gate = f"{p}.mlp.gate_proj.weight" in shapes
            norm(f"{p}.post_attention_layernorm",
                 ([f"{p}.mlp.gate_proj"] if gate else []) + [f"{p}.mlp.up_proj"])
        m = _BERT.match(name)
        if m:
            p = m.group("p")
            linear(f"{p}.attention.self.value", f"{p}.attention.output.dense")
    return rows + norms


class FoldedWeight:
    """One Linear's quantized weight cut from an AWQ result: what the
    compressed-tensors writer reads of a quantd.QuantizedTensor (name,
    shape, scheme, unpack_codes(), scales, zero_points, g_idx, metrics'
    SQNR), plus `input_scales`, the s its input is divided by."""

    def __init__(self, name: str, codes: np.ndarray, scales: np.ndarray,
                 zero_points: Optional[np.ndarray], scheme: str,
                 input_scales: np.ndarray, sqnr_db: float, seconds: float):
        self.name = name
        self.shape = tuple(codes.shape)
        self._codes = codes
        self.scales = scales
        self.zero_points = zero_points
        self.g_idx = None
        self.scheme = scheme
        self.input_scales = input_scales
        self.sqnr_db = sqnr_db
        self.seconds = seconds

    def unpack_codes(self) -> np.ndarray:
        return self._codes


def _sqnr_db(w: np.ndarray, w_hat: np.ndarray) -> float:
    w = w.astype(np.float64)
    err = float(np.sum((w - w_hat.astype(np.float64)) ** 2))
    sig = float(np.sum(w * w))
    return float("inf") if err == 0 else 10.0 * np.log10(sig / err)


def run(client, read: Callable[[str], np.ndarray], mappings: Sequence[FoldMapping],
        scheme: str, calibration: Mapping[str, np.ndarray],
        max_in_flight: Optional[int] = None
        ) -> Tuple[Dict[str, FoldedWeight], Dict[str, np.ndarray]]:
    """Quantizes the mappings' Linears with AWQ (`scheme`, e.g.
    "int4_asym_g128+awq") on their inputs (`calibration`, module name ->
    activations) and folds the scales.

    Returns the quantized weights by weight name, and the float32 values of
    the tensors the folds change (norm weights and biases, the row-folded
    Linears' biases), by tensor name. `read(name)` gives a tensor as an
    array (None if absent).
    """
    from quantd.compressed_tensors import input_sets

    weights: Dict[str, np.ndarray] = {}  # float32, with row folds applied

    def weight(name: str) -> np.ndarray:
        if name not in weights:
            weights[name] = np.asarray(read(name), dtype=np.float32)
        return weights[name]

    changed: Dict[str, np.ndarray] = {}
    out: Dict[str, FoldedWeight] = {}
    for phase in ("linear", "norm"):
        batch = [m for m in mappings if m.kind == phase]
        if not batch:
            continue
        # The stacked Linears share their input: the first one's set.
        set_of, sets = input_sets(calibration, [m.balance[0] for m in batch])
        items = [{"name": m.smooth, "scheme": scheme,
                  "array": np.concatenate([weight(n) for n in m.balance], axis=0),
                  "calibration": set_of[m.balance[0]]} for m in batch]
        by_smooth = {m.smooth: m for m in batch}
        for q in client.quantize_many(items, scheme, output="packed",
                                      max_in_flight=max_in_flight,
                                      calibration_sets=sets):
            m = by_smooth[q.name]
            s = np.asarray(q.channel_scales, dtype=np.float32)
            codes = q.unpack_codes().reshape(q.shape)
            groups = q.scales.reshape(q.shape[0], -1)
            zps = None if q.zero_points is None else \
                q.zero_points.reshape(q.shape[0], -1)
            w_hat = q.dequantize().reshape(q.shape)  # already divided by s
            start = 0
            for n in m.balance:
                rows = weight(n).shape[0]
                cut = slice(start, start + rows)
                start += rows
                out[n] = FoldedWeight(
                    n, codes[cut], groups[cut], None if zps is None else zps[cut],
                    q.scheme, s, _sqnr_db(weight(n), w_hat[cut]), q.seconds)
            # Fold 1/s into the op before: its output channels are divided
            # (a norm's weight, a Linear's rows) and so is its bias.
            if m.kind == "norm":
                changed[f"{m.smooth}.weight"] = (
                    np.asarray(read(f"{m.smooth}.weight"), np.float32) / s)
            else:
                name = f"{m.smooth}.weight"
                weights[name] = weight(name) / s[:, None]
            bias = read(f"{m.smooth}.bias")
            if bias is not None:
                changed[f"{m.smooth}.bias"] = np.asarray(bias, np.float32) / s
    # A row-folded Linear that is not balanced by a norm mapping (BERT's
    # value) is quantized by the caller from its changed weight.
    for name, w in weights.items():
        if name not in out:
            changed[name] = w
    return out, changed


def to_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as the little-endian bytes of a safetensors float
    dtype (BF16 rounded to nearest even)."""
    v = np.asarray(values, dtype=np.float32)
    if dtype == "F32":
        return v.astype("<f4")
    if dtype == "F16":
        return v.astype("<f2")
    if dtype == "BF16":
        bits = v.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype("<u2")
    raise ValueError(f"cannot write a folded tensor as {dtype}")
