"""Transient failures: a target that is down, a server restarted in the
middle of a stream; tensors not yet answered are sent again and come back
identical."""
import numpy as np
import pytest

import quantd
import reference
from conftest import free_port


def test_a_down_first_target_moves_tensors_to_the_next(server):
    down = f"127.0.0.1:{free_port()}"
    w = np.random.default_rng(12).standard_normal((32, 64)).astype(np.float32)
    # A new client's first call starts on the first target.
    with quantd.Client([down, server.target], backoff_seconds=0.01) as c:
        out = list(c.quantize_many([("a", w), ("b", w * 2)], "int4_g16"))
    with quantd.Client([down, server.target], backoff_seconds=0.01) as c:
        assert c.server_info().target == server.target
    assert sorted(q.name for q in out) == ["a", "b"]
    for q in out:
        assert q.target == server.target
        # The stream on the first target failed; each tensor's second send
        # went to the next target.
        assert q.attempts == 2
    np.testing.assert_array_equal(
        next(q for q in out if q.name == "a").codes,
        reference.quantize(w, "int4_g16")["codes"])


def test_all_targets_down_is_unavailable_after_max_attempts():
    targets = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with quantd.Client(targets, max_attempts=3, backoff_seconds=0.01) as c:
        with pytest.raises(quantd.UnavailableError) as e:
            c.quantize(np.ones((2, 8), np.float32), name="w")
        assert e.value.tensor == "w"
        with pytest.raises(quantd.UnavailableError):
            c.server_info()
        out = list(c.quantize_many([("x", np.ones((2, 8), np.float32))],
                                   return_exceptions=True))
        assert [type(r) for r in out] == [quantd.UnavailableError]


def test_server_restarted_mid_run(make_server):
    first = make_server()
    port = first.port
    seed = 13
    rng = np.random.default_rng(seed)
    tensors = [(f"t{i}", rng.standard_normal((64, 256)).astype(np.float32))
               for i in range(30)]
    state = {"restarted": False}

    def source():
        for i, item in enumerate(tensors):
            if i == 10:
                # Tensors are in flight on the stream: kill the server and
                # start another on the same port.
                first.kill()
                make_server(port=port)
                state["restarted"] = True
            yield item

    with quantd.Client(f"127.0.0.1:{port}", max_attempts=8,
                       backoff_seconds=0.05, max_backoff_seconds=0.5) as c:
        out = {q.name: q for q in c.quantize_many(source(), "int4_asym_g64")}
    assert state["restarted"]
    assert set(out) == {name for name, _ in tensors}, f"seed {seed}"
    assert max(q.attempts for q in out.values()) >= 2  # some were re-sent
    for name, w in tensors:
        ref = reference.quantize(w, "int4_asym_g64")
        np.testing.assert_array_equal(out[name].codes, ref["codes"], err_msg=name)
        np.testing.assert_array_equal(out[name].scales, ref["scales"], err_msg=name)
