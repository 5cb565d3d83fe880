"""Many tensors on one stream: every result arrives once, correct, while the
source is read lazily (at most max_in_flight arrays ahead of the results)."""
import time

import numpy as np
import pytest

import quantd
import reference

SCHEMES = ["int8", "int4_asym_g32", "int3_tensor", "int2_g16", "int6_asym"]


def test_fifty_tensors_pipelined_with_bounded_read_ahead(server):
    seed = 50
    rng = np.random.default_rng(seed)
    tensors = {f"layer.{i}.w": rng.standard_normal(
        (int(rng.integers(1, 40)), 32 * int(rng.integers(1, 9)))).astype(np.float32)
        for i in range(50)}
    pulled = []

    def source():
        for i, (name, w) in enumerate(tensors.items()):
            pulled.append(name)
            if i % 3 == 0:
                yield name, w  # the job's default scheme
            else:
                yield name, w, SCHEMES[i % len(SCHEMES)]

    results = {}
    with quantd.Client(server.target, max_in_flight=3) as c:
        for q in c.quantize_many(source(), "int5_asym_g16"):
            assert q.name not in results
            results[q.name] = q
            # Memory bound: the source is never read more than max_in_flight
            # tensors ahead of the results handed out.
            assert len(pulled) - len(results) <= 3
    assert set(results) == set(tensors), f"seed {seed}"
    for i, (name, w) in enumerate(tensors.items()):
        scheme = "int5_asym_g16" if i % 3 == 0 else SCHEMES[i % len(SCHEMES)]
        ref = reference.quantize(w, scheme)
        q = results[name]
        assert q.attempts == 1
        np.testing.assert_array_equal(q.codes, ref["codes"], err_msg=name)
        np.testing.assert_array_equal(q.scales, ref["scales"], err_msg=name)
        np.testing.assert_array_equal(q.dequantize(), q.dequantized, err_msg=name)


def test_mapping_items_and_an_empty_source(client):
    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(4, 16)
    out = list(client.quantize_many([
        {"name": "a", "array": w, "scheme": "int4"},
        {"name": "b", "array": w.astype(np.float16), "dtype": "f32"},
    ], output="packed"))
    assert sorted(q.name for q in out) == ["a", "b"]
    b = next(q for q in out if q.name == "b")
    assert b.dtype == "F32" and b.layout.bits == 8 and b.dequantized is None
    assert list(client.quantize_many([])) == []


def test_stopping_early_cancels_the_stream(server):
    # A consumer that breaks out of the loop ends the stream; the client
    # stays usable.
    w = np.ones((8, 32), np.float32)
    with quantd.Client(server.target) as c:
        it = c.quantize_many((f"t{i}", w) for i in range(20))
        first = next(it)
        assert first.name.startswith("t")
        it.close()
        assert c.quantize(w, "int8").scales.shape == (8, 1)


def test_caller_mistakes_are_python_errors(client):
    w = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="given twice"):
        list(client.quantize_many([("x", w), ("x", w)]))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        client.quantize(np.ones((2, 8), np.int32))
    with pytest.raises(TypeError, match=r"\(name, array\)"):
        list(client.quantize_many([w]))
    with pytest.raises(ValueError, match="malformed scheme"):
        client.quantize(w, "int4_g")


def test_finished_calls_end_with_ok_not_cancelled(make_server):
    s = make_server()
    w = np.ones((4, 32), np.float32)
    with quantd.Client(s.target) as c:
        for _ in range(3):
            c.quantize(w, "int4")
        assert len(list(c.quantize_many([("a", w), ("b", w)]))) == 2
    # The server counts a stream once its status is sent; wait for the four.
    deadline = time.monotonic() + 20
    while s.handled("Quantize").get("OK", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert s.handled("Quantize") == {"OK": 4}
