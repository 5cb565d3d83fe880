"""llama.cpp itself as the reference for quantd's ggml formats: helpers (no
tests here) shared by test_llama_cpp_conformance.py and
bench/ggml_vs_llamacpp.py.

  shape = ModelShape.tiny()
  model = SyntheticLlama(shape, seed=1, hard_rows=True)
  model.write(dir / "f32.gguf")                      # llama-architecture GGUF
  quantize_with_llama_cpp(dir / "f32.gguf", dir / "q4_0.gguf", "Q4_0")
  tensors = read_gguf(dir / "q4_0.gguf")             # name -> GgufTensor
  mine = quantize_with_quantd(tool, model.tensors["blk.0.attn_q.weight"],
                              "Q4_0")                  # quantd's bytes
  model.write(dir / "mine.gguf", quantized={...})    # same file, our bytes
  logits = evaluate(dir / "mine.gguf", [1, 5, 9])     # llama.cpp runs it

The model is what llama.cpp's `llama` architecture loads: token embeddings,
per layer RMS norms, q/k/v/o attention projections (grouped-query), a gated
feed-forward block, a final norm and an output projection; a SentencePiece
("llama") vocabulary of <unk>, <s>, </s>, the 256 byte tokens and filler
pieces. Weights are random but shaped like a trained model's: Gaussian rows
scaled by 1/sqrt(fan_in) with per-row gain, heavy tails and a few outlier
input channels. `hard_rows=True` overwrites the first rows of every matrix
with the inputs quantizers get wrong (HARD_BLOCKS: ties, signed zeros,
subnormals, values at the f16 limit, constant and all-zero blocks) — for
byte comparisons only, since they make the model's activations absurd.

llama.cpp is reached through llama-cpp-python's ctypes bindings
(`llama_cpp`): `llama_model_quantize` with `llama_model_quantize_params`
(ftype, pure, nthread, and the importance matrix as a NULL-terminated array
of `llama_model_imatrix_data`), and `llama_cpp.Llama` to evaluate tokens.
llama.cpp quantizes with ggml_quantize_chunk -> quantize_<type> in
ggml-base (ggml-quants.c), plain C built without architecture flags; the
CPU backend's SIMD `quantize_row_*` only convert activations during matrix
products. So the bytes do not depend on how llama.cpp was built.
"""
from __future__ import annotations

import ctypes
import dataclasses
import pathlib
import subprocess
import zlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType

try:  # the tests skip when llama-cpp-python is not installed
    import llama_cpp
except ImportError:  # pragma: no cover - reported by the tests' skip reason
    llama_cpp = None

F32 = np.float32
DENORM_MIN = np.float32(1e-45)

# llama.cpp's enum llama_ftype (include/llama.h) for the files quantd can
# produce, by the name llama-quantize prints; the default type of each
# (llama_ftype_get_default_type) is the type every tensor gets with pure.
FTYPES = {
    "Q4_0": (2, "Q4_0"),
    "Q4_1": (3, "Q4_1"),
    "Q8_0": (7, "Q8_0"),
    "Q5_0": (8, "Q5_0"),
    "Q5_1": (9, "Q5_1"),
    "Q2_K": (10, "Q2_K"),
    "Q3_K_S": (11, "Q3_K"),
    "Q3_K_M": (12, "Q3_K"),
    "Q3_K_L": (13, "Q3_K"),
    "Q4_K_S": (14, "Q4_K"),
    "Q4_K_M": (15, "Q4_K"),
    "Q5_K_S": (16, "Q5_K"),
    "Q5_K_M": (17, "Q5_K"),
    "Q6_K": (18, "Q6_K"),
    "IQ4_NL": (25, "IQ4_NL"),
    "IQ4_XS": (30, "IQ4_XS"),
    "MXFP4_MOE": (38, "MXFP4"),
}
# One ftype per ggml type, for the pure (one type everywhere) comparisons.
PURE_FTYPE = {}
for _name, (_, _type) in FTYPES.items():
    PURE_FTYPE.setdefault(_type, _name)


def block(fill) -> np.ndarray:
    return np.array([fill(j) for j in range(32)], dtype=F32)


# 32-element blocks that land on the quantizers' edge cases. Every value is
# finite and every block quantizes to finite scales in every type (llama.cpp
# validates its output and refuses an Inf scale).
HARD_BLOCKS = {
    "all_zero": block(lambda j: 0.0),
    "all_negative_zero": block(lambda j: -0.0),
    "negative_zero_first": block(lambda j: -0.0 if j == 0 else 0.0),
    "negative_zero_inside": block(lambda j: -0.0 if j == 3 else 1.0),
    "zero_max_of_negatives": block(lambda j: -0.0 if j % 2 else -2.0),
    "constant": block(lambda j: 0.7),
    "constant_negative": block(lambda j: -3.0),
    "one_nonzero": block(lambda j: 0.25 if j == 17 else 0.0),
    "q8_0_ties": block(lambda j: 127.0 if j == 0 else (j - 15) + 0.5),
    "q4_0_ties": block(lambda j: -8.0 if j == 0 else (j - 16) * 0.5),
    "q4_1_ties": block(lambda j: 15.0 if j == 0 else j * 0.5),
    "q5_0_ties": block(lambda j: -16.0 if j == 0 else (j - 16) * 0.5),
    "integer_ramp": block(lambda j: float(j - 16)),
    "subnormal_tiny": block(lambda j: (j - 16) * DENORM_MIN),
    "subnormal_inverse_overflows": block(lambda j: (j - 16) * 1e-39),
    "small_normal": block(lambda j: (j - 16) * 1e-37),
    "single_denorm_min": block(lambda j: DENORM_MIN if j == 5 else 0.0),
    "fp16_limit": block(lambda j: (j - 16) / 16 * 65504.0),
    "fp16_limit_single": block(lambda j: -65504.0 if j == 9 else 1.0),
    "fp16_limit_both_signs": block(
        lambda j: 65504.0 if j == 2 else (-65504.0 if j == 30 else 0.5)),
    "powers_of_two": block(lambda j: 2.0 ** (j - 16)),
    "below_powers_of_two": block(
        lambda j: np.nextafter(F32(2.0 ** (j - 16)), F32(0))),
    "one_positive_max_last": block(lambda j: 5.0 if j == 31 else -5.0),
    "alternating_sign": block(lambda j: 1.5 if j % 2 else -1.5),
}


def hard_rows(row_length: int, rng: np.random.Generator,
              exclude=()) -> np.ndarray:
    """Rows of `row_length` (a multiple of 256) holding the hard inputs: whole
    rows that are constant, zero or subnormal (so a 256-element super-block
    sees them too), then rows made of HARD_BLOCKS (but those named in
    `exclude`) in turn, each block once alone among random neighbours and
    once repeated over a super-block."""
    rows = [
        np.zeros(row_length, F32),
        np.full(row_length, -0.0, F32),
        np.full(row_length, 0.7, F32),
        np.full(row_length, -65504.0, F32),
        (np.arange(row_length) % 7 - 3).astype(F32) * DENORM_MIN,
    ]
    blocks = [b for name, b in HARD_BLOCKS.items() if name not in exclude]
    per_row = row_length // 32
    # Hard blocks among random weights.
    mixed = rng.normal(0, 0.02, (len(blocks) * 2 // per_row + 1, row_length))
    mixed = mixed.astype(F32).reshape(-1, 32)
    for i, b in enumerate(blocks):
        mixed[2 * i] = b
    rows.extend(mixed.reshape(-1, row_length))
    # Each hard block filling a whole 256-element super-block.
    tiled = np.concatenate([np.tile(b, 8) for b in blocks])
    tiled = np.concatenate(
        [tiled, np.zeros(-tiled.size % row_length, F32)])
    rows.extend(tiled.reshape(-1, row_length))
    return np.stack(rows).astype(F32)


@dataclasses.dataclass(frozen=True)
class ModelShape:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx: int = 256

    @staticmethod
    def tiny() -> "ModelShape":
        """Two layers, hidden 256: every row a multiple of 256 (the K-quant
        super-block) so no tensor falls back to another type."""
        return ModelShape(n_vocab=384, n_embd=256, n_layer=2, n_ff=512,
                          n_head=4, n_head_kv=2)

    @staticmethod
    def one_billion() -> "ModelShape":
        """About 1.1 B parameters, Llama-3.2-1B-like widths (hidden 2048,
        16 layers, ffn 8192, 32 heads, 8 KV heads), a 32000-token vocabulary
        and an untied output projection."""
        return ModelShape(n_vocab=32000, n_embd=2048, n_layer=16, n_ff=8192,
                          n_head=32, n_head_kv=8, n_ctx=2048)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """name -> numpy shape (rows, row_length), in GGUF file order."""
        e, kv = self.n_embd, self.n_head_kv * self.head_dim
        shapes = {"token_embd.weight": (self.n_vocab, e)}
        for i in range(self.n_layer):
            p = f"blk.{i}."
            shapes.update({
                p + "attn_norm.weight": (e,),
                p + "attn_q.weight": (e, e),
                p + "attn_k.weight": (kv, e),
                p + "attn_v.weight": (kv, e),
                p + "attn_output.weight": (e, e),
                p + "ffn_norm.weight": (e,),
                p + "ffn_gate.weight": (self.n_ff, e),
                p + "ffn_up.weight": (self.n_ff, e),
                p + "ffn_down.weight": (e, self.n_ff),
            })
        shapes["output_norm.weight"] = (e,)
        shapes["output.weight"] = (self.n_vocab, e)
        return shapes

    def n_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.tensor_shapes().values())


def vocab(n_vocab: int):
    """A SentencePiece vocabulary llama.cpp accepts: (tokens, scores, types).
    Byte tokens <0x00>..<0xFF> make every text tokenizable."""
    T = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL] + [T.BYTE] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    k = 0
    while len(tokens) < n_vocab:
        piece = letters[k % 26] + (letters[k // 26 % 26] if k >= 26 else "")
        tokens.append("\u2581" + piece if k % 2 == 0 else piece)
        types.append(T.NORMAL)
        k += 1
    assert len(tokens) == n_vocab, "n_vocab must be at least 259"
    scores = [0.0] * 3 + [-1000.0] * 256 + [
        -float(i) for i in range(n_vocab - 259)]
    return tokens, scores, [int(t) for t in types]


def llm_like_matrix(rng: np.random.Generator, rows: int, cols: int,
                    gain: float = 1.0) -> np.ndarray:
    """Gaussian / sqrt(cols) with per-row gain (lognormal), Student-t tails
    and ~1% outlier input channels 4-8x larger, as trained weights have."""
    x = rng.standard_t(5, (rows, cols)).astype(F32)
    x *= F32(gain / np.sqrt(cols) / np.sqrt(5 / 3))
    x *= rng.lognormal(0, 0.3, (rows, 1)).astype(F32)
    outliers = rng.choice(cols, max(1, cols // 100), replace=False)
    x[:, outliers] *= rng.uniform(4, 8, outliers.size).astype(F32)
    return x


class SyntheticLlama:
    """A llama-architecture model with synthetic weights, held in memory as
    f32 arrays (use `write_streaming` for sizes that do not fit)."""

    def __init__(self, shape: ModelShape, seed: int = 0,
                 hard_rows: bool = False, exclude=()):
        self.shape = shape
        self.seed = seed
        self.hard = hard_rows
        self.exclude = frozenset(exclude)
        self.tensors = {name: self.make_tensor(name, s)
                        for name, s in shape.tensor_shapes().items()}

    def make_tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        if len(shape) == 1:  # RMS norm gains around 1
            return (1 + 0.1 * rng.standard_normal(shape)).astype(F32)
        gain = 1.0 if name != "token_embd.weight" else 8.0
        x = llm_like_matrix(rng, shape[0], shape[1], gain)
        if self.hard:
            h = hard_rows(shape[1], rng, self.exclude)
            n = min(h.shape[0], shape[0])
            x[:n] = h[:n]
        return x

    def writer_with_metadata(self, path, file_type: int = 0):
        s = self.shape
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_name("quantd-synthetic-llama")
        w.add_context_length(s.n_ctx)
        w.add_embedding_length(s.n_embd)
        w.add_block_count(s.n_layer)
        w.add_feed_forward_length(s.n_ff)
        w.add_head_count(s.n_head)
        w.add_head_count_kv(s.n_head_kv)
        w.add_rope_dimension_count(s.head_dim)
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(s.n_vocab)
        w.add_file_type(file_type)
        if file_type != 0:
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        tokens, scores, types = vocab(s.n_vocab)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        return w

    def write(self, path, quantized: dict | None = None,
              file_type: int = 0) -> pathlib.Path:
        """Writes the model; tensors named in `quantized` (name ->
        (ggml type name, bytes)) hold those bytes instead of f32."""
        quantized = quantized or {}
        w = self.writer_with_metadata(path, file_type)
        for name, x in self.tensors.items():
            if name in quantized:
                qtype, data = quantized[name]
                raw = np.frombuffer(data, np.uint8).reshape(x.shape[0], -1)
                w.add_tensor(name, raw, raw_dtype=GGMLQuantizationType[qtype])
            else:
                w.add_tensor(name, x)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return pathlib.Path(path)


def write_streaming(shape: ModelShape, path, seed: int = 0) -> pathlib.Path:
    """Writes a synthetic f32 model tensor by tensor, never holding more than
    one tensor in memory (for the ~1 B parameter benchmark model)."""
    maker = SyntheticLlama.__new__(SyntheticLlama)
    maker.shape, maker.seed, maker.hard, maker.exclude = shape, seed, False, ()
    w = maker.writer_with_metadata(path, 0)
    shapes = shape.tensor_shapes()
    for name, s in shapes.items():
        w.add_tensor_info(name, s, np.dtype(F32), int(np.prod(s)) * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, s in shapes.items():
        w.write_tensor_data(maker.make_tensor(name, s))
    w.close()
    return pathlib.Path(path)


@dataclasses.dataclass
class GgufTensor:
    name: str
    type: str             # ggml type name: "Q4_0", "F32"
    shape: tuple          # numpy order (rows, row_length)
    data: np.ndarray      # f32 values, or the raw bytes as uint8 (rows, bytes)


def read_gguf(path) -> dict[str, GgufTensor]:
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        out[t.name] = GgufTensor(t.name, t.tensor_type.name, shape,
                                 np.array(t.data))
    return out


def gguf_file_type(path) -> int:
    field = gguf.GGUFReader(str(path)).fields["general.file_type"]
    return int(field.parts[field.data[0]][0])


def require_llama_cpp():
    if llama_cpp is None:
        raise RuntimeError("llama-cpp-python is not installed")
    return llama_cpp


def quantize_with_llama_cpp(src, dst, ftype: str, pure: bool = True,
                            imatrix: dict[str, np.ndarray] | None = None,
                            nthread: int = 1) -> pathlib.Path:
    """llama.cpp's llama_model_quantize (what llama-quantize runs) on `src`.
    `ftype` is a key of FTYPES; `imatrix` maps tensor names to one f32
    importance per column (what llama-imatrix stores per tensor)."""
    lib = require_llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = FTYPES[ftype][0]
    params.pure = pure
    keep_alive = []
    if imatrix:
        entries = (lib.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(imatrix.items()):
            values = np.ascontiguousarray(values, dtype=F32)
            keep_alive.append(values)
            entries[i].name = name.encode()
            entries[i].data = values.ctypes.data_as(
                ctypes.POINTER(ctypes.c_float))
            entries[i].size = values.size
        entries[len(imatrix)].name = None  # the terminator
        params.imatrix = ctypes.cast(
            entries, ctypes.POINTER(lib.llama_model_imatrix_data))
        keep_alive.append(entries)
    rc = lib.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                  ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({ftype}) failed: {rc}")
    return pathlib.Path(dst)


def quantize_with_ggml(x: np.ndarray, qtype: str,
                      importance: np.ndarray | None = None) -> bytes:
    """ggml's own quantizer for one tensor (ggml_quantize_chunk in the
    libggml-base that llama-cpp-python ships), for inputs llama.cpp's file
    writer refuses (ggml_validate_row_data) but the quantizer still defines."""
    lib = require_llama_cpp()
    import os
    base = ctypes.CDLL(os.path.join(os.path.dirname(lib.__file__), "lib",
                                    "libggml-base.so"))
    fn = base.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p]
    t = GGMLQuantizationType[qtype]
    block, type_size = gguf.GGML_QUANT_SIZES[t]
    x = np.ascontiguousarray(x, F32)
    dst = np.zeros(x.shape[0] * x.shape[1] // block * type_size, np.uint8)
    w = None if importance is None else np.ascontiguousarray(importance, F32)
    fn(int(t), x.ctypes.data, dst.ctypes.data, 0, x.shape[0], x.shape[1],
       None if w is None else w.ctypes.data)
    return dst.tobytes()


def quantd_tool_types(tool) -> list[str]:
    """The ggml types the quantize tool knows, asked type by type (a name it
    does not know exits 2 with 'unknown type')."""
    known = []
    for t in GGMLQuantizationType:
        r = subprocess.run([str(tool), "quantize", t.name, "256"], input=b"",
                           capture_output=True, check=False)
        if r.returncode == 0:
            known.append(t.name)
        elif b"unknown type" not in r.stderr:
            raise RuntimeError(f"{tool} {t.name}: {r.stderr.decode()}")
    return known


def quantize_with_quantd(tool, x: np.ndarray, qtype: str,
                         importance: np.ndarray | None = None,
                         mode: str = "quantize", tmp_dir=None) -> bytes:
    """quantd's bytes for the f32 matrix `x` (rows, row_length) in `qtype`,
    from the kernels' ggml_quantize_tool."""
    args = [str(tool), mode, qtype, str(x.shape[-1])]
    if importance is not None:
        path = pathlib.Path(tmp_dir) / f"imatrix-{x.shape[-1]}.f32"
        np.ascontiguousarray(importance, "<f4").tofile(path)
        args.append(str(path))
    r = subprocess.run(args, input=np.ascontiguousarray(x, "<f4").tobytes(),
                       capture_output=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.decode()}")
    return r.stdout


def quiet_llama_cpp():
    """Drops llama.cpp's log lines (model dumps, per-tensor progress); errors
    still reach the caller as return codes."""
    lib = require_llama_cpp()
    lib.llama_log_set(_DROP_LOG, None)


def evaluate(path, tokens: list[int], n_threads: int = 1) -> np.ndarray:
    """llama.cpp loads the GGUF and evaluates `tokens` in one batch (one
    sequence, positions 0..n-1); the logits of every position,
    (len(tokens), n_vocab) f32.

    Weights stay in llama.cpp's plain CPU buffers (use_extra_bufts = false):
    the extra buffer types repack Q4_0/Q4_1/Q8_0 for AMX or interleaved SIMD
    kernels, and ggml's AMX matrix product faults on machines whose kernel
    does not grant AMX tile state to the process. The plain path dequantizes
    the file's own blocks, which is what a comparison of bytes needs."""
    lib = require_llama_cpp()
    lib.llama_backend_init()
    mparams = lib.llama_model_default_params()
    mparams.use_extra_bufts = False
    mparams.use_mmap = True
    model = lib.llama_model_load_from_file(str(path).encode(), mparams)
    if not model:
        raise RuntimeError(f"llama.cpp cannot load {path}")
    try:
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 64
        cparams.n_threads = cparams.n_threads_batch = n_threads
        ctx = lib.llama_init_from_model(model, cparams)
        if not ctx:
            raise RuntimeError(f"llama.cpp cannot make a context for {path}")
        try:
            batch = lib.llama_batch_init(len(tokens), 0, 1)
            try:
                batch.n_tokens = len(tokens)
                for i, token in enumerate(tokens):
                    batch.token[i] = token
                    batch.pos[i] = i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = True
                rc = lib.llama_decode(ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode failed: {rc}")
                n_vocab = lib.llama_vocab_n_tokens(
                    lib.llama_model_get_vocab(model))
                logits = np.ctypeslib.as_array(lib.llama_get_logits(ctx),
                                               shape=(len(tokens), n_vocab))
                return np.array(logits, dtype=F32)
            finally:
                lib.llama_batch_free(batch)
        finally:
            lib.llama_free(ctx)
    finally:
        lib.llama_model_free(model)


if llama_cpp is not None:
    _DROP_LOG = llama_cpp.llama_log_callback(lambda level, text, user: None)
