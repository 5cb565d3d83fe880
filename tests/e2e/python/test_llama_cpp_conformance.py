"""Conformance of quantd's ggml formats with llama.cpp itself.

llama.cpp (built from source by the llama-cpp-python package) quantizes a
small llama-architecture GGUF with llama_model_quantize, exactly as
llama-quantize does; quantd's kernels (build/tests/kernels/
ggml_quantize_tool) quantize the same f32 tensors. The tensor bytes must be
identical, tensor by tensor:
  - pure files (every matrix one type), for each type in quantd's table, on
    weights that hold the hard inputs (llama_reference.HARD_BLOCKS);
  - with an importance matrix, for each type where quantd has the
    importance path (or, like ggml, ignores it);
  - the llama.cpp mixtures (Q4_0, Q4_K_M, ...) for every tensor whose chosen
    type quantd has.
And llama.cpp runs a file whose tensors quantd produced: it loads, evaluates
a few tokens, and its logits are finite and identical to those of the file
llama.cpp quantized itself.

Types llama.cpp offers that quantd's table does not have yet are skipped
with that reason, so the comparison grows as formats land. Without
llama-cpp-python the module is skipped (CI installs it).
"""
import subprocess

import gguf
import numpy as np
import pytest

import llama_reference as ref
from conftest import BIN_DIR

if ref.llama_cpp is None:
    pytest.skip("llama-cpp-python (module llama_cpp) is not installed",
                allow_module_level=True)

ref.quiet_llama_cpp()
TOOL = BIN_DIR / "tests" / "kernels" / "ggml_quantize_tool"
PURE_TYPES = list(ref.PURE_FTYPE)
MIXTURES = ["Q4_0", "Q5_1", "Q3_K_M", "Q4_K_M", "Q5_K_S", "IQ4_XS"]
TOKENS = [1, 300, 301, 17, 260, 42, 311]
# Hard blocks llama.cpp refuses to write in a type: its quantizer makes a
# code that ggml_validate_row_data rejects, so llama_model_quantize fails
# the whole file. MXFP4: max |x| in [2^-126, 2^-125) gives the shared
# exponent (uint8_t)(-1.0f) = 255, E8M0's NaN (quantd writes the same 255,
# as ggml's C does; a GGUF carrying it is invalid either way).
# Q4_1 with an importance matrix: on "fp16_limit" the weighted search picks
# a minimum just below -65504, whose f16 is -Inf.
REFUSED_BY_LLAMA_CPP = {("MXFP4", False): {"subnormal_inverse_overflows"},
                        ("MXFP4", True): {"subnormal_inverse_overflows"},
                        ("Q4_1", True): {"fp16_limit"}}
# Least cosine similarity of a quantized model's logits with the f32 model's
# (a sanity bound: llama.cpp computed something from the bytes, not noise).
MIN_LOGIT_COSINE = {"Q2_K": 0.25, "Q3_K": 0.25, "Q8_0": 0.95}


@pytest.fixture(scope="module")
def quantd_types():
    assert TOOL.exists(), f"{TOOL} not built"
    types = ref.quantd_tool_types(TOOL)
    assert "Q8_0" in types and "Q4_0" in types, types
    return types


def need(qtype, quantd_types):
    if qtype not in quantd_types:
        pytest.skip(f"{qtype} is not in quantd's ggml format table yet")


@pytest.fixture(scope="module")
def hard_models(tmp_path_factory):
    """(qtype, with imatrix) -> the tiny model with hard rows (less the
    blocks llama.cpp refuses there), and its f32 GGUF."""
    cache = {}

    def get(qtype, with_imatrix=False):
        exclude = frozenset(
            REFUSED_BY_LLAMA_CPP.get((qtype, with_imatrix), ()))
        if exclude not in cache:
            model = ref.SyntheticLlama(ref.ModelShape.tiny(), seed=7,
                                       hard_rows=True, exclude=exclude)
            path = model.write(tmp_path_factory.mktemp("hard") / "f32.gguf")
            cache[exclude] = model, path
        return cache[exclude]
    return get


@pytest.fixture(scope="module")
def clean_model(tmp_path_factory):
    """The tiny model with LLM-like weights only (it evaluates sanely)."""
    model = ref.SyntheticLlama(ref.ModelShape.tiny(), seed=11)
    path = model.write(tmp_path_factory.mktemp("clean") / "f32.gguf")
    return model, path


def imatrix_for(model, seed=5):
    """One importance per column for every matrix, like llama-imatrix's
    mean squared activations: lognormal, a few columns far above the rest,
    one column never activated (0)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, x in model.tensors.items():
        if x.ndim == 2:
            w = rng.lognormal(0, 1, x.shape[1]).astype(np.float32)
            w[rng.choice(x.shape[1], 3, replace=False)] *= 50
            w[rng.integers(x.shape[1])] = 0
            out[name] = w
    return out


def assert_same_bytes(name, qtype, x, ours: bytes, theirs: np.ndarray):
    ours = np.frombuffer(ours, np.uint8).reshape(x.shape[0], -1)
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    bad = np.argwhere(ours != theirs)
    if bad.size == 0:
        return
    row, byte = bad[0].tolist()
    block_bytes = ours.shape[1] // (x.shape[1] // block_size(qtype))
    b = byte // block_bytes
    n = block_size(qtype)
    pytest.fail(
        f"{name} {qtype}: {len(np.unique(bad[:, 0]))} of {x.shape[0]} rows "
        f"differ; first at row {row}, block {b} (byte {byte % block_bytes})\n"
        f"input  {x[row, b * n:(b + 1) * n].tolist()}\n"
        f"quantd {ours[row, b * block_bytes:(b + 1) * block_bytes].tolist()}\n"
        f"llama  {theirs[row, b * block_bytes:(b + 1) * block_bytes].tolist()}")


def block_size(qtype):
    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]


def quantd_takes_importance(qtype, tmp_path):
    """Whether quantd's kernels accept an importance matrix for `qtype`
    (using it, or ignoring it where ggml does, as for Q8_0 and MXFP4);
    GgmlQuantize answers Unimplemented where the path is missing."""
    path = tmp_path / "probe-imatrix.f32"
    np.ones(256, "<f4").tofile(path)
    r = subprocess.run([str(TOOL), "quantize", qtype, "256", str(path)],
                       input=np.ones(256, "<f4").tobytes(),
                       capture_output=True, check=False)
    if r.returncode == 0:
        return True
    assert b"UNIMPLEMENTED" in r.stderr.upper(), r.stderr.decode()
    return False


def compare_file(model, path, quantd_types, tmp_path, expect_type=None,
                 imatrix=None):
    """Every tensor of llama.cpp's output `path` against quantd's bytes for
    the same type; returns (types compared, types skipped)."""
    theirs = ref.read_gguf(path)
    assert set(theirs) == set(model.tensors)
    compared, skipped = set(), set()
    for name, x in model.tensors.items():
        t = theirs[name]
        assert t.shape == x.shape, (name, t.shape, x.shape)
        if x.ndim == 1:  # llama.cpp keeps vectors (norms) f32
            assert t.type == "F32" and np.array_equal(t.data, x), name
            continue
        if expect_type is not None:
            assert t.type == expect_type, (name, t.type)
        if t.type not in quantd_types:
            skipped.add(t.type)
            continue
        importance = None if imatrix is None else imatrix[name]
        ours = ref.quantize_with_quantd(TOOL, x, t.type, importance,
                                        tmp_dir=tmp_path)
        assert_same_bytes(name, t.type, x, ours, t.data)
        compared.add(t.type)
    return compared, skipped


@pytest.mark.parametrize("qtype", PURE_TYPES)
def test_pure_file_bytes_identical(qtype, quantd_types, hard_models,
                                   tmp_path):
    need(qtype, quantd_types)
    model, f32 = hard_models(qtype)
    out = ref.quantize_with_llama_cpp(f32, tmp_path / "q.gguf",
                                      ref.PURE_FTYPE[qtype], pure=True)
    compared, _ = compare_file(model, out, quantd_types, tmp_path,
                               expect_type=qtype)
    assert compared == {qtype}


@pytest.mark.parametrize("qtype", PURE_TYPES)
def test_pure_file_with_imatrix_bytes_identical(qtype, quantd_types,
                                                hard_models, tmp_path):
    need(qtype, quantd_types)
    model, f32 = hard_models(qtype, with_imatrix=True)
    imatrix = imatrix_for(model)
    if not quantd_takes_importance(qtype, tmp_path):
        pytest.skip(f"quantd has no importance-matrix path for {qtype} yet")
    out = ref.quantize_with_llama_cpp(f32, tmp_path / "q.gguf",
                                      ref.PURE_FTYPE[qtype], pure=True,
                                      imatrix=imatrix)
    compared, _ = compare_file(model, out, quantd_types, tmp_path,
                               expect_type=qtype, imatrix=imatrix)
    assert compared == {qtype}


@pytest.mark.parametrize("key", sorted(REFUSED_BY_LLAMA_CPP))
def test_blocks_llama_cpp_refuses_still_match_ggml(key, quantd_types,
                                                   tmp_path):
    """The blocks excluded above, straight through ggml's quantizer
    (ggml_quantize_chunk, no file validation): quantd's bytes equal ggml's."""
    qtype, with_imatrix = key
    need(qtype, quantd_types)
    rng = np.random.default_rng(3)
    for name in REFUSED_BY_LLAMA_CPP[key]:
        x = np.tile(ref.HARD_BLOCKS[name], 8 * 4).reshape(4, 256)
        w = rng.lognormal(0, 1, 256).astype(np.float32) if with_imatrix \
            else None
        ours = ref.quantize_with_quantd(TOOL, x, qtype, w, tmp_dir=tmp_path)
        theirs = ref.quantize_with_ggml(x, qtype, w)
        assert_same_bytes(name, qtype, x, ours,
                          np.frombuffer(theirs, np.uint8).reshape(4, -1))


def test_imatrix_reaches_llama_cpp(hard_models, tmp_path):
    """The imatrix passed through the C API changes llama.cpp's IQ4_NL bytes
    (else the imatrix comparisons above would prove nothing)."""
    model, f32 = hard_models("IQ4_NL")
    plain = ref.read_gguf(ref.quantize_with_llama_cpp(
        f32, tmp_path / "plain.gguf", "IQ4_NL"))
    weighted = ref.read_gguf(ref.quantize_with_llama_cpp(
        f32, tmp_path / "weighted.gguf", "IQ4_NL",
        imatrix=imatrix_for(model)))
    name = "blk.1.ffn_up.weight"
    assert not np.array_equal(plain[name].data, weighted[name].data)


@pytest.mark.parametrize("ftype", MIXTURES)
def test_mixture_bytes_identical_where_quantd_has_the_type(
        ftype, quantd_types, hard_models, tmp_path):
    model, f32 = hard_models(ref.FTYPES[ftype][1])
    out = ref.quantize_with_llama_cpp(f32, tmp_path / "q.gguf", ftype,
                                      pure=False)
    assert ref.gguf_file_type(out) == ref.FTYPES[ftype][0]
    compared, skipped = compare_file(model, out, quantd_types, tmp_path)
    if not compared:
        pytest.skip(f"{ftype}: quantd has none of its types {sorted(skipped)}")


def quantd_file(model, qtype, path, quantd_types):
    """The model with every matrix quantized by quantd, written by gguf's
    GGUFWriter (as a client's GGUF output would be)."""
    quantized = {
        name: (qtype, ref.quantize_with_quantd(TOOL, x, qtype))
        for name, x in model.tensors.items() if x.ndim == 2}
    return model.write(path, quantized,
                       file_type=ref.FTYPES[ref.PURE_FTYPE[qtype]][0])


@pytest.mark.parametrize("qtype", PURE_TYPES)
def test_llama_cpp_runs_quantd_output(qtype, quantd_types, clean_model,
                                      tmp_path):
    need(qtype, quantd_types)
    model, f32 = clean_model
    mine = quantd_file(model, qtype, tmp_path / "quantd.gguf", quantd_types)
    theirs = ref.quantize_with_llama_cpp(f32, tmp_path / "llama.gguf",
                                         ref.PURE_FTYPE[qtype], pure=True)
    ours_logits = ref.evaluate(mine, TOKENS)
    assert ours_logits.shape == (len(TOKENS), model.shape.n_vocab)
    assert np.isfinite(ours_logits).all()
    theirs_logits = ref.evaluate(theirs, TOKENS)
    assert np.array_equal(ours_logits, theirs_logits), (
        f"max |diff| {np.abs(ours_logits - theirs_logits).max()}")
    # The quantized model still computes roughly what the f32 one does
    # (cosine of the logits on this random model: Q8_0 0.998, Q5_x 0.95,
    # Q4_0 / IQ4_NL / MXFP4 0.77-0.80).
    exact = ref.evaluate(f32, TOKENS)
    cos = np.sum(ours_logits * exact, 1) / (
        np.linalg.norm(ours_logits, axis=1) * np.linalg.norm(exact, axis=1))
    assert cos.min() > MIN_LOGIT_COSINE.get(qtype, 0.6), cos
