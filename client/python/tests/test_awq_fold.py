"""AWQ with its scales folded (quantd.awq_fold through
quantd.compressed_tensors, method="awq") on a small llama-like checkpoint
made here: the norms and Linears before each AWQ layer carry 1/s, the
checkpoint has no extra tensors, and a layer fed its original input through
the folded op computes the original layer's output more closely than round
to nearest does. Read back with the independent decoder of
test_compressed_tensors."""
import json

import numpy as np
import pytest

from test_compressed_tensors import as_array, decode_module, read_safetensors

HIDDEN, INTER, LAYERS, VOCAB, TOKENS = 128, 256, 2, 64, 384


def rms_norm(h, gamma):
    return (h / np.sqrt(np.mean(h * h, axis=1, keepdims=True) + 1e-6) * gamma
            ).astype(np.float32)


def silu(x):
    return x / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A 2-layer llama-like model (safetensors + config.json) and each
    Linear's input activations, consistent with its norms: inputs with a
    few outlier channels, as LLM activations have."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(3)
    d = tmp_path_factory.mktemp("llama")
    w = {"model.embed_tokens.weight": rng.standard_normal((VOCAB, HIDDEN)),
         "model.norm.weight": np.ones(HIDDEN),
         "lm_head.weight": rng.standard_normal((VOCAB, HIDDEN)) * 0.05}
    acts = {}
    outliers = rng.choice(HIDDEN, 6, replace=False)
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        g1 = 1.0 + 0.2 * rng.standard_normal(HIDDEN)
        g2 = 1.0 + 0.2 * rng.standard_normal(HIDDEN)
        w[f"{p}.input_layernorm.weight"] = g1
        w[f"{p}.post_attention_layernorm.weight"] = g2
        for x in "qkvo":
            w[f"{p}.self_attn.{x}_proj.weight"] = rng.standard_normal((HIDDEN, HIDDEN)) * 0.05
        for x in ("gate", "up"):
            w[f"{p}.mlp.{x}_proj.weight"] = rng.standard_normal((INTER, HIDDEN)) * 0.05
        w[f"{p}.mlp.down_proj.weight"] = rng.standard_normal((HIDDEN, INTER)) * 0.05
        w = {k: v.astype(np.float32) for k, v in w.items()}
        h = rng.standard_normal((TOKENS, HIDDEN)).astype(np.float32)
        h[:, outliers] *= 12.0
        x1 = rms_norm(h, g1)
        ctx = (x1 @ w[f"{p}.self_attn.v_proj.weight"].T)
        ctx = ctx + 0.5 * rng.standard_normal(ctx.shape).astype(np.float32)
        h2 = h + ctx @ w[f"{p}.self_attn.o_proj.weight"].T
        h2[:, outliers[:3]] *= 8.0
        x2 = rms_norm(h2, g2)
        xd = silu(x2 @ w[f"{p}.mlp.gate_proj.weight"].T) * (
            x2 @ w[f"{p}.mlp.up_proj.weight"].T)
        for x in "qkv":
            acts[f"{p}.self_attn.{x}_proj"] = x1
        acts[f"{p}.self_attn.o_proj"] = ctx.astype(np.float32)
        acts[f"{p}.mlp.gate_proj"] = acts[f"{p}.mlp.up_proj"] = x2
        acts[f"{p}.mlp.down_proj"] = xd.astype(np.float32)
    save_file({k: v.astype(np.float32) for k, v in w.items()},
              str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTER,
        "num_hidden_layers": LAYERS, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": VOCAB}))
    return d, w, acts


def test_mappings_of_llama_and_bert_names():
    from quantd import awq_fold
    shapes = {}
    for x in "qkvo":
        shapes[f"m.layers.0.self_attn.{x}_proj.weight"] = (8, 8)
    shapes["m.layers.0.self_attn.v_proj.weight"] = (4, 8)  # GQA: v out 4
    shapes["m.layers.0.input_layernorm.weight"] = (8,)
    shapes["m.layers.0.post_attention_layernorm.weight"] = (8,)
    shapes["m.layers.0.mlp.up_proj.weight"] = (16, 8)
    shapes["m.layers.0.mlp.down_proj.weight"] = (8, 16)
    shapes["e.encoder.layer.3.attention.self.value.weight"] = (8, 8)
    shapes["e.encoder.layer.3.attention.output.dense.weight"] = (8, 8)
    targets = [n for n, s in shapes.items() if len(s) == 2]
    got = {(m.smooth, m.kind, m.balance) for m in awq_fold.find_mappings(shapes, targets)}
    assert got == {
        # v (4 outputs) cannot fold o (8 inputs): grouped-query attention.
        ("m.layers.0.mlp.up_proj", "linear", ("m.layers.0.mlp.down_proj.weight",)),
        ("m.layers.0.input_layernorm", "norm",
         tuple(f"m.layers.0.self_attn.{x}_proj.weight" for x in "qkv")),
        ("m.layers.0.post_attention_layernorm", "norm",
         ("m.layers.0.mlp.up_proj.weight",)),
        ("e.encoder.layer.3.attention.self.value", "linear",
         ("e.encoder.layer.3.attention.output.dense.weight",)),
    }
    # An ignored Linear takes its mappings with it.
    targets.remove("m.layers.0.self_attn.k_proj.weight")
    smooths = {m.smooth for m in awq_fold.find_mappings(shapes, targets)}
    assert "m.layers.0.input_layernorm" not in smooths


@pytest.mark.parametrize("preset_name", ["W4A16_ASYM", "W4A16"])
def test_awq_folded_checkpoint_beats_round_to_nearest(client, llama, tmp_path,
                                                      preset_name):
    import quantd
    from quantd import compressed_tensors as ct
    model, w, acts = llama
    try:
        client.quantize_many(
            [("probe", np.ones((2, 128), np.float32),
              ct.PRESETS[preset_name].quantd_scheme("awq"), "probe")],
            calibration_sets=[quantd.Calibration(
                "probe", activations=np.eye(128, dtype=np.float32))])
    except quantd.InvalidArgumentError as e:
        pytest.skip(f"the server does not run awq: {e}")
    reports = {r.name: r for r in ct.write_compressed_tensors(
        client, model, tmp_path / "awq", preset_name, method="awq",
        calibration=acts)}
    ct.write_compressed_tensors(client, model, tmp_path / "rtn", preset_name)
    awq, _ = read_safetensors(tmp_path / "awq" / "model.safetensors")
    rtn, _ = read_safetensors(tmp_path / "rtn" / "model.safetensors")
    qc = json.loads((tmp_path / "awq" / "config.json").read_text())[
        "quantization_config"]
    assert qc == json.loads((tmp_path / "rtn" / "config.json").read_text())[
        "quantization_config"]  # an ordinary checkpoint of the preset
    # The same tensor names as round to nearest's: nothing extra to load.
    assert sorted(awq) == sorted(rtn)

    err_awq = err_rtn = 0.0
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        s = {m: reports[f"{p}.{m}.weight"].input_scales
             for m in ("self_attn.q_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.down_proj")}
        # q, k, v share one s, folded into input_layernorm; gate and up
        # into post_attention_layernorm; o's into v's rows, down's into up's.
        for m in ("self_attn.k_proj", "self_attn.v_proj"):
            np.testing.assert_array_equal(reports[f"{p}.{m}.weight"].input_scales,
                                          s["self_attn.q_proj"])
            assert reports[f"{p}.{m}.weight"].folded_into == f"{p}.input_layernorm"
        assert reports[f"{p}.self_attn.o_proj.weight"].folded_into == \
            f"{p}.self_attn.v_proj"
        for norm, key in (("input_layernorm", "self_attn.q_proj"),
                          ("post_attention_layernorm", "mlp.gate_proj")):
            got = as_array(awq[f"{p}.{norm}.weight"])
            want = (w[f"{p}.{norm}.weight"] / s[key]).astype(np.float32)
            np.testing.assert_array_equal(got, want)
            assert np.all(s[key] > 0) and not np.all(s[key] == 1)
        # Each Linear fed its original input through the folded op:
        # x / s_in, giving y / s_out where its own rows were folded.
        cases = [
            ("self_attn.q_proj", "self_attn.q_proj", None),
            ("self_attn.k_proj", "self_attn.q_proj", None),
            ("self_attn.v_proj", "self_attn.q_proj", "self_attn.o_proj"),
            ("self_attn.o_proj", "self_attn.o_proj", None),
            ("mlp.gate_proj", "mlp.gate_proj", None),
            ("mlp.up_proj", "mlp.gate_proj", "mlp.down_proj"),
            ("mlp.down_proj", "mlp.down_proj", None),
        ]
        for m, s_in, s_out in cases:
            x = acts[f"{p}.{m}"].astype(np.float64)
            y = x @ w[f"{p}.{m}.weight"].T.astype(np.float64)
            if s_out is not None:
                y = y / s[s_out]
            y_awq = (x / s[s_in]) @ decode_module(awq, f"{p}.{m}", qc).T
            y_rtn = x @ decode_module(rtn, f"{p}.{m}", qc).T
            if s_out is not None:
                y_rtn = y_rtn / s[s_out]
            e_awq = np.linalg.norm(y - y_awq) / np.linalg.norm(y)
            e_rtn = np.linalg.norm(y - y_rtn) / np.linalg.norm(y)
            err_awq += e_awq
            err_rtn += e_rtn
    print(f"{preset_name}: sum of layer output errors awq {err_awq:.4f} "
          f"rtn {err_rtn:.4f}")
    assert err_awq < 0.95 * err_rtn
    # The norms nobody folds into and the embeddings are copied as they are.
    assert awq["model.norm.weight"] == rtn["model.norm.weight"]
    assert awq["model.embed_tokens.weight"] == rtn["model.embed_tokens.weight"]


def test_awq_needs_calibration_a_weight_only_preset_and_foldable_layers(
        client, llama, tmp_path):
    from quantd import compressed_tensors as ct
    model, _, acts = llama
    with pytest.raises(ValueError, match="calibration"):
        ct.write_compressed_tensors(client, model, tmp_path / "a", "W4A16",
                                    method="awq")
    with pytest.raises(ValueError, match="weight-only"):
        ct.write_compressed_tensors(client, model, tmp_path / "b", "W8A8",
                                    method="awq", calibration=acts)
    with pytest.raises(ValueError, match="no calibration activations"):
        ct.write_compressed_tensors(
            client, model, tmp_path / "c", "W4A16", method="awq",
            calibration={k: v for k, v in acts.items() if "o_proj" not in k})
