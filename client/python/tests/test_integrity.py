"""Checksums both ways, through a proxy in front of the real server that
corrupts one chunk (keeping its CRC-32C) in either direction: the damage is
detected, the tensor is sent again and comes back right."""
from concurrent import futures

import grpc
import numpy as np
import pytest

import quantd
import reference
from quantd.v1 import quantizer_pb2 as pb
from quantd.v1 import quantizer_pb2_grpc as pb_grpc


class CorruptingProxy(pb_grpc.QuantizerServicer):
    """Forwards to `upstream`; flips one byte of the first request chunk or
    of the first response shard chunk, once."""

    def __init__(self, upstream: str, direction: str):
        self.stub = pb_grpc.QuantizerStub(grpc.insecure_channel(upstream))
        self.direction = direction
        self.corrupted = 0
        self.streams = 0

    def _flip(self, message):
        data = bytearray(message.data)
        data[len(data) // 2] ^= 0x10
        message.data = bytes(data)
        self.corrupted += 1

    def Quantize(self, request_iterator, context):
        self.streams += 1

        def requests():
            for r in request_iterator:
                if (self.direction == "request" and not self.corrupted
                        and r.HasField("chunk")):
                    self._flip(r.chunk)
                yield r

        try:
            for response in self.stub.Quantize(requests()):
                if (self.direction == "response" and not self.corrupted
                        and response.HasField("shard")):
                    self._flip(response.shard)
                yield response
        except grpc.RpcError as e:
            context.abort(e.code(), e.details())

    def GetServerInfo(self, request, context):
        return self.stub.GetServerInfo(request)


@pytest.fixture
def proxy(server, request):
    servicer = CorruptingProxy(server.target, request.param)
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_QuantizerServicer_to_server(servicer, s)
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    yield servicer, f"127.0.0.1:{port}"
    s.stop(None)


@pytest.mark.parametrize("proxy", ["request", "response"], indirect=True)
def test_a_corrupted_chunk_is_detected_and_the_tensor_resent(proxy):
    servicer, target = proxy
    w = np.random.default_rng(31).standard_normal((64, 128)).astype(np.float32)
    with quantd.Client(target, backoff_seconds=0.01) as c:
        q = c.quantize(w, "int4_asym_g32")
    assert servicer.corrupted == 1
    assert servicer.streams == 2 and q.attempts == 2
    ref = reference.quantize(w, "int4_asym_g32")
    np.testing.assert_array_equal(q.codes, ref["codes"])
    np.testing.assert_array_equal(q.scales, ref["scales"])


@pytest.mark.parametrize("proxy", ["response"], indirect=True)
def test_with_one_attempt_the_corruption_is_data_loss(proxy):
    servicer, target = proxy
    with quantd.Client(target, max_attempts=1) as c:
        with pytest.raises(quantd.DataLossError) as e:
            c.quantize(np.ones((4, 64), np.float32), name="w")
    assert e.value.tensor == "w" and "crc32c" in e.value.details


def test_part_checks_against_the_result():
    # A result whose part CRC does not match what was assembled.
    from quantd.client import _Job, _Pending
    job = _Job(name="w", data=memoryview(b""), dtype=pb.DTYPE_F32, dtype_name="F32",
               shape=(1, 8), scheme=None, importance=None)
    pending = _Pending(job)
    codes = bytes(range(8))
    pending.add(pb.ShardChunk(tensor="w", part=pb.ShardChunk.PART_CODES, offset=0,
                              data=codes, crc32c=quantd.crc32c(codes)))
    scales = np.float32([1.0]).tobytes()
    pending.add(pb.ShardChunk(tensor="w", part=pb.ShardChunk.PART_SCALES, offset=0,
                              data=scales, crc32c=quantd.crc32c(scales)))
    layout = pb.Layout(scheme=pb.Scheme(format="int8", symmetric=True),
                       shape=[1, 8], rows=1, row_length=8, bits=8, group_size=8,
                       num_scales=1, packed_bytes=8)
    good = pb.TensorResult(tensor="w", layout=layout, parts=[
        pb.PartInfo(part=pb.ShardChunk.PART_CODES, bytes=8,
                    crc32c=quantd.crc32c(codes)),
        pb.PartInfo(part=pb.ShardChunk.PART_SCALES, bytes=4,
                    crc32c=quantd.crc32c(scales))])
    q = pending.finish(good, pb.OUTPUT_KIND_PACKED, "t")
    np.testing.assert_array_equal(q.unpack_codes(), np.arange(8).reshape(1, 8))
    bad = pb.TensorResult()
    bad.CopyFrom(good)
    bad.parts[0].crc32c ^= 1
    with pytest.raises(quantd.DataLossError, match="codes crc32c"):
        pending.finish(bad, pb.OUTPUT_KIND_PACKED, "t")
    # A result listing a part twice, a part the layout lacks, a wrong size.
    twice = pb.TensorResult()
    twice.CopyFrom(good)
    twice.parts.append(good.parts[0])
    with pytest.raises(quantd.DataLossError, match="PART_CODES twice"):
        pending.finish(twice, pb.OUTPUT_KIND_PACKED, "t")
    extra = pb.TensorResult()
    extra.CopyFrom(good)
    extra.parts.append(pb.PartInfo(part=pb.ShardChunk.PART_ZERO_POINTS, bytes=1))
    with pytest.raises(quantd.DataLossError, match="zero points, which the layout"):
        pending.finish(extra, pb.OUTPUT_KIND_PACKED, "t")
    sized = pb.TensorResult()
    sized.CopyFrom(good)
    sized.parts[1].bytes = 8
    with pytest.raises(quantd.DataLossError, match="8 bytes of scales"):
        pending.finish(sized, pb.OUTPUT_KIND_PACKED, "t")
    short = pb.TensorResult()
    short.CopyFrom(good)
    short.layout.packed_bytes = 9
    with pytest.raises(quantd.DataLossError, match="codes has 8 bytes"):
        pending.finish(short, pb.OUTPUT_KIND_PACKED, "t")
    # A chunk out of order marks the tensor as damaged.
    pending.add(pb.ShardChunk(tensor="w", part=pb.ShardChunk.PART_CODES, offset=3,
                              data=b"x", crc32c=quantd.crc32c(b"x")))
    with pytest.raises(quantd.DataLossError, match="offset 3"):
        pending.finish(good, pb.OUTPUT_KIND_PACKED, "t")


def test_part_table_covers_the_proto_enum_once_in_wire_order():
    # Every ShardChunk.Part but UNSPECIFIED has one row, in the server's
    # send order (kernels/parts.h: the packed parts, then fake quant, then
    # channel scales).
    from quantd.tensor import PART_TABLE
    wires = [spec.wire for spec in PART_TABLE]
    enum = [v.number for v in pb.ShardChunk.Part.DESCRIPTOR.values
            if v.number != pb.ShardChunk.PART_UNSPECIFIED]
    assert sorted(wires) == sorted(enum)
    assert len(set(wires)) == len(wires)
    assert wires[-2:] == [pb.ShardChunk.PART_FAKE_QUANT,
                          pb.ShardChunk.PART_CHANNEL_SCALES]
    assert len({spec.name for spec in PART_TABLE}) == len(PART_TABLE)
