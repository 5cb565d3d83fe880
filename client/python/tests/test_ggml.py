"""ggml block formats through the SDK: codes are the tensor's ggml blocks
(no separate scales), decoded with gguf's dequantizers bit for bit like the
server's values; importance weights reach the server. Skipped against a
server whose format table has no block formats."""
import numpy as np
import pytest

import quantd


@pytest.fixture(scope="module")
def block_formats(server):
    with quantd.Client(server.target) as c:
        formats = [f for f in c.server_info().formats if f.block_size > 0]
    if not formats:
        pytest.skip("the server offers no ggml block formats")
    return formats


def test_every_block_format_round_trips(client, block_formats):
    seed = 21
    w = np.random.default_rng(seed).standard_normal((6, 512)).astype(np.float32)
    for f in block_formats:
        q = client.quantize(w, f.name.lower(), name=f"w.{f.name}")
        layout = q.layout
        assert layout.is_block_format and layout.format == f.name
        assert (layout.block_size, layout.block_bytes) == (f.block_size, f.block_bytes)
        assert layout.ggml_type > 0
        assert q.scales is None and q.zero_points is None
        assert q.codes.size == layout.packed_bytes == 6 * (512 // f.block_size) * f.block_bytes
        assert q.metrics.bits_per_weight == pytest.approx(f.block_bytes * 8 / f.block_size)
        assert q.metrics.sqnr_db > 5, f.name
        with pytest.raises(TypeError, match="block format"):
            q.unpack_codes()
        pytest.importorskip("gguf")
        np.testing.assert_array_equal(q.dequantize().view(np.uint32),
                                      q.dequantized.view(np.uint32),
                                      err_msg=f"{f.name} seed {seed}")


def test_importance_weights(client, block_formats):
    users = [f for f in block_formats if f.uses_importance]
    if not users:
        pytest.skip("no block format uses importance weights")
    fmt = users[0].name
    seed = 22
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 512)).astype(np.float32)
    importance = rng.uniform(0, 1, 512).astype(np.float32) ** 4 * 100
    plain = client.quantize(w, fmt, output="packed")
    weighted = client.quantize(w, fmt, importance=importance, output="packed")
    assert weighted.codes.size == plain.codes.size
    assert not np.array_equal(weighted.codes, plain.codes), f"{fmt} seed {seed}"
    with pytest.raises(quantd.InvalidArgumentError) as e:
        client.quantize(w, fmt, name="short", importance=np.ones(5, np.float32))
    assert e.value.tensor == "short"
    with pytest.raises(quantd.InvalidArgumentError) as e:
        client.quantize(w, "int4", name="int", importance=np.ones(512, np.float32))
    assert e.value.tensor == "int"
