"""Server errors become quantd.QuantdError subclasses with the status code,
the server's message and the tensor; one bad tensor does not fail the
others of its stream."""
import grpc
import numpy as np
import pytest

import quantd


def test_unknown_scheme_is_invalid_argument(client):
    w = np.ones((4, 8), np.float32)
    with pytest.raises(quantd.InvalidArgumentError) as e:
        client.quantize(w, "int9")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(e.value, quantd.QuantdError)
    assert "int9" in e.value.details
    # A per-tensor override naming an unknown format.
    with pytest.raises(quantd.InvalidArgumentError) as e:
        list(client.quantize_many([("w", w, "Q9_Z")]))
    assert e.value.tensor == "w" and "Q9_Z" in e.value.details


def test_group_size_that_does_not_divide_the_row(client):
    with pytest.raises(quantd.InvalidArgumentError) as e:
        client.quantize(np.ones((4, 10), np.float32), "int4_g4", name="odd")
    assert e.value.tensor == "odd"
    assert "odd" in str(e.value)


def test_nan_names_the_tensor_and_the_others_complete(client):
    rng = np.random.default_rng(9)
    good = {f"g{i}": rng.standard_normal((16, 64)).astype(np.float32) for i in range(6)}
    bad = rng.standard_normal((16, 64)).astype(np.float32)
    bad[2, 5] = np.nan
    items = list(good.items())
    items.insert(3, ("bad", bad))
    with pytest.raises(quantd.InvalidArgumentError) as e:
        list(client.quantize_many(items))
    assert e.value.tensor == "bad"
    out = list(client.quantize_many(items, return_exceptions=True))
    errors = [r for r in out if isinstance(r, quantd.QuantdError)]
    assert [(type(x), x.tensor) for x in errors] == [(quantd.InvalidArgumentError, "bad")]
    done = {r.name: r for r in out if isinstance(r, quantd.QuantizedTensor)}
    assert set(done) == set(good)
    assert all(r.attempts == 1 for r in done.values())


def test_limit_is_resource_exhausted_after_the_attempts(make_server):
    s = make_server("--max_tensor_bytes=4096")
    with quantd.Client(s.target, max_attempts=2, backoff_seconds=0.01) as c:
        with pytest.raises(quantd.ResourceExhaustedError) as e:
            c.quantize(np.ones((64, 64), np.float32), name="big")
        assert "max_tensor_bytes" in e.value.details
        assert e.value.tensor == "big"
        assert c.quantize(np.ones((8, 64), np.float32)).layout.bits == 8


def test_error_from_status_maps_every_code():
    for code in grpc.StatusCode:
        if code == grpc.StatusCode.OK:
            continue
        e = quantd.errors.error_from_status(code, "m", tensor="t")
        assert isinstance(e, quantd.QuantdError)
        assert e.code == code and e.details == "m" and e.tensor == "t"
    assert type(quantd.errors.error_from_status(
        grpc.StatusCode.DATA_LOSS, "x")) is quantd.DataLossError


def test_deadline_is_retried_then_raised_per_tensor(server):
    w = np.random.default_rng(10).standard_normal((1024, 1024)).astype(np.float32)
    with quantd.Client(server.target, timeout=1e-4, max_attempts=2,
                       backoff_seconds=0.01) as c:
        out = list(c.quantize_many([("a", w), ("b", w)], return_exceptions=True))
    assert sorted((type(e), e.tensor) for e in out) == [
        (quantd.DeadlineExceededError, "a"), (quantd.DeadlineExceededError, "b")]
    assert all(e.code == grpc.StatusCode.DEADLINE_EXCEEDED for e in out)
