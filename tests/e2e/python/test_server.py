"""The real quantd binary seen from Python: health, reflection, numerics
checked against numpy and ml_dtypes, and SIGTERM handling."""
import signal
import time

import grpc
import ml_dtypes
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_health_liveness_and_readiness(server):
    stub = health_pb2_grpc.HealthStub(server.channel())
    SERVING = health_pb2.HealthCheckResponse.SERVING
    assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == SERVING
    assert stub.Check(health_pb2.HealthCheckRequest(service="quantd.v1.Quantizer"),
                      timeout=10).status == SERVING


def test_reflection_lists_the_services(server):
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel())
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "quantd.v1.Quantizer" in names
    assert "grpc.health.v1.Health" in names


def _requests(pb, name, array, dtype, output):
    q = pb[0]
    yield q.QuantizeRequest(start=q.JobStart(
        scheme=q.Scheme(format="int8", symmetric=True,
                        granularity=q.GRANULARITY_PER_CHANNEL),
        options=q.JobOptions(output=output), client="pytest"))
    yield q.QuantizeRequest(header=q.TensorHeader(name=name, dtype=dtype,
                                                  shape=list(array.shape)))
    data = array.tobytes()
    for off in range(0, len(data), 1 << 16):
        yield q.QuantizeRequest(chunk=q.TensorChunk(offset=off,
                                                    data=data[off:off + (1 << 16)]))
    yield q.QuantizeRequest(end=q.TensorEnd())


def _quantize(server, pb, name, array, dtype):
    q, q_grpc = pb
    stub = q_grpc.QuantizerStub(server.channel())
    parts = {}
    result = None
    for r in stub.Quantize(_requests(pb, name, array, dtype, q.OUTPUT_KIND_BOTH),
                           timeout=60):
        if r.HasField("shard"):
            parts[r.shard.part] = parts.get(r.shard.part, b"") + r.shard.data
        else:
            result = r.result
    return parts, result


def _hard_values(rng, shape):
    """Gaussian rows plus subnormals, zeros, signed zeros and ties."""
    w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    w[0, :8] = [0.0, -0.0, 1e-40, -1e-41, 3e-39, 0.5, -0.5, 1.0]
    w[1, :] = 0.0                       # all-zero row
    w[2, :] = 0.25                      # constant row
    w[3, :] = np.float32(1e-39)         # subnormal row
    return w


def _int8_reference(w32):
    """The documented int8 symmetric per-channel rule, evaluated by numpy."""
    amax = np.abs(w32).max(axis=1).astype(np.float32)
    scale = amax / np.float32(127)
    scale = np.maximum(scale, np.finfo(np.float32).tiny)
    inv = np.float32(1) / scale
    codes = np.clip(np.rint(w32 * inv[:, None]), -128, 127).astype(np.int8)
    return codes, scale.astype(np.float32)


@pytest.mark.parametrize("dtype_name", ["F32", "F16", "BF16"])
def test_conversion_and_int8_match_numpy(server, pb, dtype_name):
    q = pb[0]
    rng = np.random.default_rng(1234)
    w = _hard_values(rng, (16, 96))
    if dtype_name == "F32":
        sent, wire = w, q.DTYPE_F32
    elif dtype_name == "F16":
        sent, wire = w.astype(np.float16), q.DTYPE_F16
    else:
        sent, wire = w.astype(ml_dtypes.bfloat16), q.DTYPE_BF16
    # numpy / ml_dtypes widen to f32 exactly: that is the server's input.
    w32 = sent.astype(np.float32)
    parts, result = _quantize(server, pb, f"w.{dtype_name}", sent, wire)
    codes = np.frombuffer(parts[q.ShardChunk.PART_CODES], dtype=np.int8).reshape(w.shape)
    scales = np.frombuffer(parts[q.ShardChunk.PART_SCALES], dtype=np.float32)
    fake = np.frombuffer(parts[q.ShardChunk.PART_FAKE_QUANT], dtype=np.float32).reshape(w.shape)
    ref_codes, ref_scales = _int8_reference(w32)
    np.testing.assert_array_equal(scales, ref_scales)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(fake, codes.astype(np.float32) * scales[:, None])
    # Metrics recomputed independently in float64.
    err = w32.astype(np.float64) - fake.astype(np.float64)
    mse = float(np.mean(err ** 2))
    assert result.metrics.mse == pytest.approx(mse, rel=1e-9, abs=1e-30)
    assert result.metrics.max_abs_error == pytest.approx(float(np.abs(err).max()), rel=1e-12)
    sqnr = 20 * np.log10(np.linalg.norm(w32.astype(np.float64)) / np.linalg.norm(err))
    assert result.metrics.sqnr_db == pytest.approx(sqnr, rel=1e-9)
    assert result.metrics.bits_per_weight == pytest.approx((16 * 96 * 8 + 16 * 32) / (16 * 96))
    assert result.layout.rows == 16 and result.layout.row_length == 96


def test_nan_is_invalid_argument_naming_tensor_and_index(server, pb):
    q = pb[0]
    w = np.ones((4, 8), dtype=np.float32)
    w[2, 3] = np.nan
    with pytest.raises(grpc.RpcError) as e:
        _quantize(server, pb, "w.nan", w, q.DTYPE_F32)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "w.nan" in e.value.details() and "element 19" in e.value.details()
    # The server keeps serving.
    parts, result = _quantize(server, pb, "w.ok", np.ones((4, 8), np.float32), q.DTYPE_F32)
    assert result.tensor == "w.ok"


def test_sigterm_flips_readiness_and_exits_zero(fresh_server):
    stub = health_pb2_grpc.HealthStub(fresh_server.channel())
    assert stub.Check(health_pb2.HealthCheckRequest(service="quantd.v1.Quantizer"),
                      timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    fresh_server.proc.send_signal(signal.SIGTERM)
    assert fresh_server.proc.wait(30) == 0
    log = "".join(fresh_server.log)
    assert '"msg":"draining"' in log and '"msg":"stopped"' in log
