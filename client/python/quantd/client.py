"""quantd.Client: numpy tensors in, quantized tensors out, over gRPC.

    import numpy as np, quantd

    with quantd.Client("localhost:50051") as client:
        q = client.quantize(np.random.randn(4096, 4096).astype(np.float32),
                            "int4_asym_g128")
        print(q.metrics.sqnr_db, q.codes.nbytes, q.scales.shape)

        for q in client.quantize_many((name, w) for name, w in weights.items()):
            save(q.name, q.codes, q.scales, q.zero_points)

One Quantize stream carries many tensors: each is sent as a header, chunks
of at most `chunk_bytes` with their CRC-32C, and an end carrying the whole
tensor's CRC-32C (folded from the chunks'); at most `max_in_flight` tensors
are sent but unanswered, so the server always has the next tensor while it
quantizes one, and neither side holds more than that. Every response chunk's
CRC-32C is checked, and every assembled part against the TensorResult.

Failures: the codes quantctl retries (client/dispatcher.h kRetryableCodes:
UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED, DATA_LOSS -- a
checksum mismatch either way --, INTERNAL, UNKNOWN, CANCELLED) are
transient: the tensors not yet answered are sent again on a new stream after
a jittered exponential back-off, on the next target when several were
given, up to `max_attempts` sends per tensor. UNAUTHENTICATED and
PERMISSION_DENIED are raised at once. Any other status ends the tensor it
names (the server's message starts with "tensor NAME:"); the other tensors
of that stream are re-sent, without counting it as an attempt. Errors are
raised as quantd.QuantdError subclasses carrying the status code.

Thread-safety: a Client may be shared by threads; each call runs its own
streams. Channels are made once, in the constructor, and closed by close()
or the `with` block.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import queue
import random
import threading
import time
from typing import (Any, Dict, Iterable, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import grpc
import numpy as np

from quantd import errors
from quantd._pb import has_field, pb, pb_grpc
from quantd.calibration import (ActivationRange, Calibration, OutputMetrics,
                                W8A8Check, range_options)
from quantd.checksum import crc32c, crc32c_combine
from quantd.scheme import SchemeLike, parse_scheme
from quantd.tensor import PART_TABLE, Layout, Metrics, QuantizedTensor

__all__ = ["Client", "ServerInfo", "FormatInfo", "Limits"]

_OUTPUT = {
    "packed": pb.OUTPUT_KIND_PACKED,
    "fake_quant": pb.OUTPUT_KIND_FAKE_QUANT,
    "both": pb.OUTPUT_KIND_BOTH,
}
_DTYPE_NAMES = {pb.DTYPE_F32: "F32", pb.DTYPE_F16: "F16", pb.DTYPE_BF16: "BF16"}
_DTYPE_BY_NAME = {"f32": pb.DTYPE_F32, "float32": pb.DTYPE_F32,
                  "f16": pb.DTYPE_F16, "float16": pb.DTYPE_F16,
                  "bf16": pb.DTYPE_BF16, "bfloat16": pb.DTYPE_BF16}
_GRANULARITY_NAMES = {pb.GRANULARITY_PER_TENSOR: "tensor",
                      pb.GRANULARITY_PER_CHANNEL: "channel",
                      pb.GRANULARITY_PER_GROUP: "group"}
_KIND_NAMES = {1: "int", 2: "ggml_block", 3: "float", 4: "codebook", 5: "hqq"}
# Retried with back-off, on the next target when there are several: the
# server, the network or a checksum failed, not the tensor. The same codes as
# the C++ client's kRetryableCodes (client/dispatcher.h); both are checked
# against tests/data/shared_cases.json.
_TRANSIENT = frozenset((
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED))
# About the call, not a tensor: every tensor would fail the same way.
_FATAL = frozenset((grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED))


# --- server info -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FormatInfo:
    name: str
    bits: int                        # 0 for block formats
    granularities: Tuple[str, ...]   # "tensor", "channel", "group"
    symmetric: bool
    asymmetric: bool
    block_size: int = 0              # > 0: a ggml block format
    block_bytes: int = 0
    bits_per_weight: float = 0.0
    uses_importance: bool = False
    # "int", "ggml_block", "float", "codebook", "hqq" ("" from an older server)
    kind: str = ""
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Limits:
    max_tensor_bytes: int
    max_chunk_bytes: int
    memory_budget_bytes: int
    max_queue_jobs: int


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    target: str
    version: str
    build: str
    kernel_isa: str
    workers: int
    dtypes: Tuple[str, ...]
    formats: Tuple[FormatInfo, ...]
    limits: Limits

    @property
    def format_names(self) -> List[str]:
        return [f.name for f in self.formats]

    @classmethod
    def from_proto(cls, target: str, info: "pb.ServerInfo") -> "ServerInfo":
        formats = tuple(FormatInfo(
            name=f.name, bits=f.bits,
            granularities=tuple(_GRANULARITY_NAMES.get(g, str(g))
                                for g in f.granularities),
            symmetric=f.symmetric, asymmetric=f.asymmetric,
            block_size=getattr(f, "block_size", 0),
            block_bytes=getattr(f, "block_bytes", 0),
            bits_per_weight=getattr(f, "bits_per_weight", 0.0),
            uses_importance=getattr(f, "uses_importance", False),
            kind=_KIND_NAMES.get(int(getattr(f, "kind", 0)), ""),
            description=getattr(f, "description", ""),
        ) for f in info.formats)
        lim = info.limits
        return cls(target=target, version=info.version, build=info.build,
                   kernel_isa=info.kernel_isa, workers=info.workers,
                   dtypes=tuple(_DTYPE_NAMES.get(d, str(d)) for d in info.dtypes),
                   formats=formats,
                   limits=Limits(lim.max_tensor_bytes, lim.max_chunk_bytes,
                                 lim.memory_budget_bytes, lim.max_queue_jobs))


# --- one tensor to send --------------------------------------------------------

@dataclasses.dataclass
class _Job:
    name: str
    data: memoryview               # little-endian bytes, kept until answered
    dtype: int                     # pb.DType
    dtype_name: str
    shape: Tuple[int, ...]
    scheme: Optional["pb.Scheme"]  # None: the job's default
    importance: Optional[np.ndarray]
    calibration: str = ""          # a set of the stream, or none
    attempts: int = 0              # failed sends so far
    isolate: bool = False          # send alone: it may be the bad one


def _as_wire_array(array: Any, dtype: Optional[str]) -> Tuple[np.ndarray, int]:
    """The array as contiguous little-endian bytes of a wire dtype, in its
    shape (0-d included)."""
    arr, wire = _convert(array, dtype)
    return arr.reshape(np.shape(array)), wire


def _convert(array: Any, dtype: Optional[str]) -> Tuple[np.ndarray, int]:
    if dtype is not None:
        try:
            wire = _DTYPE_BY_NAME[dtype.lower()]
        except KeyError:
            raise ValueError(f"dtype must be one of f32, f16, bf16, not {dtype!r}")
    else:
        wire = None
    arr = np.asarray(array)
    kind = arr.dtype
    if wire == pb.DTYPE_BF16 and kind in (np.uint16, np.int16):
        return np.ascontiguousarray(arr, dtype="<u2"), wire
    if kind.name == "bfloat16":  # ml_dtypes.bfloat16
        if wire not in (None, pb.DTYPE_BF16):
            raise ValueError(f"a bfloat16 array cannot be sent as {dtype}")
        return np.ascontiguousarray(arr).view(np.uint16).astype("<u2", copy=False), \
            pb.DTYPE_BF16
    if kind.kind != "f":
        raise TypeError(f"expected a float32, float16 or bfloat16 array, got "
                        f"{kind} (raw bfloat16 bits: uint16 with dtype=\"bf16\")")
    if wire is None:
        wire = pb.DTYPE_F16 if kind.itemsize == 2 else pb.DTYPE_F32
    if wire == pb.DTYPE_F32:
        return np.ascontiguousarray(arr, dtype="<f4"), wire
    if wire == pb.DTYPE_F16:
        return np.ascontiguousarray(arr, dtype="<f2"), wire
    # Float values to bfloat16: needs ml_dtypes for correct rounding.
    try:
        import ml_dtypes
    except ImportError as e:
        raise TypeError("converting floats to bf16 needs ml_dtypes; pass raw "
                        "bfloat16 bits as uint16 instead") from e
    bf = np.ascontiguousarray(arr, dtype=np.float32).astype(ml_dtypes.bfloat16)
    return bf.view(np.uint16).astype("<u2", copy=False), wire


def _make_job(item: Any, index: int) -> _Job:
    """A _Job from (name, array[, scheme[, calibration]]) or a mapping with
    keys name, array and optionally scheme, importance, dtype, calibration."""
    if isinstance(item, dict):
        name, array = item["name"], item["array"]
        scheme, importance, dtype = (item.get("scheme"), item.get("importance"),
                                     item.get("dtype"))
        calibration = item.get("calibration")
    else:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3, 4):
            raise TypeError(f"tensor #{index}: expected (name, array), (name, "
                            f"array, scheme) or (name, array, scheme, "
                            f"calibration), got {type(item).__name__}")
        name, array = item[0], item[1]
        scheme = item[2] if len(item) >= 3 else None
        calibration = item[3] if len(item) == 4 else None
        importance = dtype = None
    if isinstance(calibration, Calibration):
        calibration = calibration.name
    if calibration is not None and not isinstance(calibration, str):
        raise TypeError(f"tensor #{index}: calibration must name a set (str or "
                        f"quantd.Calibration), not {type(calibration).__name__}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"tensor #{index}: the name must be a non-empty str")
    arr, wire = _as_wire_array(array, dtype)
    imp = None
    if importance is not None:
        if not has_field(pb.TensorHeader, "importance"):
            raise ValueError("this quantd package was built from a proto without "
                             "TensorHeader.importance")
        imp = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1)
    data = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
    return _Job(name=name, data=data, dtype=wire, dtype_name=_DTYPE_NAMES[wire],
                shape=tuple(int(d) for d in arr.shape),
                scheme=None if scheme is None else parse_scheme(scheme),
                importance=imp, calibration=calibration or "")


# --- one tensor being received -----------------------------------------------

class _Pending:
    __slots__ = ("job", "parts", "crcs", "sent", "corrupt")

    def __init__(self, job: _Job):
        self.job = job
        self.parts: Dict[int, List[bytes]] = collections.defaultdict(list)
        self.crcs: Dict[int, Tuple[int, int]] = {}  # part -> (crc, length)
        self.sent = time.monotonic()
        self.corrupt: Optional[str] = None

    def add(self, shard: "pb.ShardChunk") -> None:
        if self.corrupt:
            return
        crc, length = self.crcs.get(shard.part, (0, 0))
        if shard.offset != length:
            self.corrupt = (f"part {pb.ShardChunk.Part.Name(shard.part)} chunk at "
                            f"offset {shard.offset}, expected {length}")
            return
        chunk_crc = crc32c(shard.data)
        if chunk_crc != shard.crc32c:
            self.corrupt = (f"part {pb.ShardChunk.Part.Name(shard.part)} chunk at "
                            f"offset {shard.offset}: crc32c mismatch (corrupted in "
                            "transit)")
            return
        self.parts[shard.part].append(shard.data)
        self.crcs[shard.part] = (crc32c_combine(crc, chunk_crc, len(shard.data)),
                                 length + len(shard.data))

    def finish(self, result: "pb.TensorResult", output: int, target: str,
               ) -> QuantizedTensor:
        """The assembled tensor; DataLossError if a part is short, long or
        fails its crc32c."""
        name = self.job.name

        def loss(what: str) -> errors.DataLossError:
            return errors.DataLossError(f"tensor {name}: {what}", tensor=name,
                                        target=target)

        if self.corrupt:
            raise loss(self.corrupt)
        layout = Layout.from_proto(result.layout)
        listed: Dict[int, "pb.PartInfo"] = {}
        for info in result.parts:
            if info.part in listed:
                raise loss(f"result lists {pb.ShardChunk.Part.Name(info.part)} "
                           "twice")
            listed[info.part] = info
        fields: Dict[str, Any] = {}
        for spec in PART_TABLE:
            shape = spec.shape(layout, self.job.shape) \
                if spec.sent(output) else None
            want = 0 if shape is None else \
                int(np.prod(shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
            crc, length = self.crcs.get(spec.wire, (0, 0))
            info = listed.pop(spec.wire, None)
            if length != want:
                raise loss(f"{spec.name} has {length} bytes, the layout says "
                           f"{want}")
            if want == 0:
                if info is not None:
                    raise loss(f"result lists {spec.name}, which the layout "
                               "and output do not have")
                continue
            if info is None or info.bytes != want:
                raise loss(f"result lists {0 if info is None else info.bytes} "
                           f"bytes of {spec.name}, the layout says {want}")
            if crc != info.crc32c:
                raise loss(f"{spec.name} crc32c {crc:#010x} differs from the "
                           f"server's {info.crc32c:#010x}")
            raw = b"".join(self.parts[spec.wire])
            fields[spec.field] = np.frombuffer(raw, dtype=spec.dtype).astype(
                np.dtype(spec.dtype).newbyteorder("="), copy=False).reshape(shape)
        if listed:
            raise loss("result lists unknown parts: " + ", ".join(
                str(k) for k in listed))
        wanted = {spec.wire for spec in PART_TABLE if spec.sent(output)}
        unwanted = [k for k, v in self.parts.items() if v and k not in wanted]
        if unwanted:
            leftover = ", ".join(pb.ShardChunk.Part.Name(k) for k in unwanted)
            raise loss(f"parts not asked for: {leftover}")
        g_idx = fields.get("g_idx")
        if g_idx is not None and g_idx.size:
            groups = layout.row_length // max(layout.group_size, 1)
            if g_idx.min() < 0 or g_idx.max() >= groups:
                raise loss(f"group index outside [0, {groups})")
        calibrated = {}
        if has_field(pb.TensorResult, "output_metrics"):
            if result.HasField("output_metrics"):
                calibrated["output_metrics"] = OutputMetrics.from_proto(
                    result.output_metrics)
            if result.HasField("activation_range"):
                calibrated["activation_range"] = ActivationRange.from_proto(
                    result.activation_range)
            calibrated["importance_from_calibration"] = bool(
                result.importance_from_calibration)
            if has_field(pb.TensorResult, "w8a8") and result.HasField("w8a8"):
                calibrated["w8a8"] = W8A8Check.from_proto(result.w8a8)
        return QuantizedTensor(
            name=name, shape=self.job.shape, layout=layout, metrics=Metrics.from_proto(result.metrics),
            **{"codes": None, "scales": None, "zero_points": None,
               "dequantized": None, **fields},
            dtype=self.job.dtype_name,
            bytes_in=result.bytes_in, bytes_out=result.bytes_out,
            queue_seconds=result.queue_seconds,
            compute_seconds=result.compute_seconds,
            seconds=time.monotonic() - self.sent, target=target,
            attempts=self.job.attempts + 1, **calibrated)


# --- the request side of one stream ----------------------------------------

_HALF_CLOSE = object()


class _Sender:
    """The request iterator of one stream, consumed by a gRPC thread: the
    JobStart, then each calibration set or job put(), in order, as header,
    chunks and end."""

    def __init__(self, start: "pb.QuantizeRequest", chunk_bytes: int):
        self._start = start
        self._chunk_bytes = chunk_bytes
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._stopped = threading.Event()

    def put(self, job: Union[_Job, Calibration]) -> None:
        self._queue.put(job)

    def half_close(self) -> None:
        self._queue.put(_HALF_CLOSE)

    def stop(self) -> None:
        self._stopped.set()
        self._queue.put(_HALF_CLOSE)

    def __iter__(self) -> Iterator["pb.QuantizeRequest"]:
        yield self._start
        while not self._stopped.is_set():
            job = self._queue.get()
            if job is _HALF_CLOSE:
                return
            if isinstance(job, Calibration):
                for request in job.requests(self._chunk_bytes):
                    if self._stopped.is_set():
                        return
                    yield request
                continue
            header = pb.TensorHeader(name=job.name, dtype=job.dtype,
                                     shape=list(job.shape))
            if job.scheme is not None:
                header.scheme.CopyFrom(job.scheme)
            if job.importance is not None:
                header.importance.extend(job.importance.tolist())
            if job.calibration:
                header.calibration = job.calibration
            yield pb.QuantizeRequest(header=header)
            tensor_crc = 0
            data = job.data
            for offset in range(0, len(data), self._chunk_bytes):
                if self._stopped.is_set():
                    return
                piece = data[offset:offset + self._chunk_bytes].tobytes()
                crc = crc32c(piece)
                tensor_crc = crc32c_combine(tensor_crc, crc, len(piece))
                yield pb.QuantizeRequest(chunk=pb.TensorChunk(
                    offset=offset, data=piece, crc32c=crc))
            yield pb.QuantizeRequest(end=pb.TensorEnd(crc32c=tensor_crc))


# --- the client -------------------------------------------------------------------

def _read_pem(value: Union[None, str, bytes, os.PathLike], what: str
              ) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{what} {value} cannot be read: {e}") from e


def _split_targets(target: Union[str, Sequence[str]]) -> List[str]:
    items = target.split(",") if isinstance(target, str) else list(target)
    targets = [t.strip() for t in items if t and t.strip()]
    if not targets:
        raise ValueError("no target given (host:port)")
    return targets


class Client:
    """A client of one or several quantd servers.

    Args:
      target: "host:port", a comma-separated list of them, a list, or a gRPC
        target URI ("dns:///quantd.ns.svc:50051"). Each entry gets its own
        channel; streams start on the next entry in turn and move to the
        following one when a server is unavailable.
      tls_ca: PEM (path or bytes) of the CA that signed the servers'
        certificates; turns TLS on. Default: plaintext.
      tls_cert, tls_key: a client certificate and key (path or bytes) for
        mutual TLS; both or neither, and only with tls_ca.
      tls_server_name: the name to check the servers' certificates against
        when it differs from the target host.
      token: bearer token sent as "authorization: Bearer TOKEN" on every
        call. Default: the QUANTD_TOKEN environment variable, if set.
      timeout: seconds allowed for each call: a server_info() and each
        Quantize stream (one per quantize() or per attempt of a
        quantize_many(), which carries many tensors). A stream past it
        fails DEADLINE_EXCEEDED, which is retried like the other transient
        errors, each attempt with the whole timeout. Default: none.
      max_attempts: sends per tensor before a transient error (see the
        module comment) is raised. Default 3.
      max_in_flight: tensors sent but not yet answered per stream. 2 keeps
        the server busy (tensor k+1 arrives while k is quantized). Default 2.
      chunk_bytes: bytes per TensorChunk; at most the server's
        max_chunk_bytes (1 MiB). Default 1 MiB.
      backoff_seconds, max_backoff_seconds: the back-off before attempt n is
        uniform in [0.5, 1.5] * min(backoff_seconds * 2^(n-1),
        max_backoff_seconds). Defaults 0.2 and 10.
      channel_options: extra gRPC channel arguments, [(key, value), ...].
      client_name: JobStart.client, for server logs.
    """

    def __init__(self, target: Union[str, Sequence[str]], *,
                 tls_ca=None, tls_cert=None, tls_key=None,
                 tls_server_name: Optional[str] = None,
                 token: Optional[str] = None,
                 timeout: Optional[float] = None,
                 max_attempts: int = 3,
                 max_in_flight: int = 2,
                 chunk_bytes: int = 1 << 20,
                 backoff_seconds: float = 0.2,
                 max_backoff_seconds: float = 10.0,
                 channel_options: Sequence[Tuple[str, Any]] = (),
                 client_name: str = "quantd-python"):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if not 1 <= chunk_bytes <= 1 << 20:
            raise ValueError("chunk_bytes must be in [1, 1 MiB]")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("a client certificate needs both tls_cert and tls_key")
        if tls_cert is not None and tls_ca is None:
            raise ValueError("a client certificate needs TLS: give tls_ca too")
        self.targets = _split_targets(target)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_in_flight = max_in_flight
        self.chunk_bytes = chunk_bytes
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.client_name = client_name
        if token is None:
            token = os.environ.get("QUANTD_TOKEN") or None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 64 << 20),
                   # A restarted server is found again within a second.
                   ("grpc.initial_reconnect_backoff_ms", 250),
                   ("grpc.max_reconnect_backoff_ms", 2000)]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        options.extend(channel_options)
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read_pem(tls_ca, "tls_ca"),
                private_key=_read_pem(tls_key, "tls_key"),
                certificate_chain=_read_pem(tls_cert, "tls_cert"))
            self._channels = [grpc.secure_channel(t, creds, options=options)
                              for t in self.targets]
        else:
            self._channels = [grpc.insecure_channel(t, options=options)
                              for t in self.targets]
        self._stubs = [pb_grpc.QuantizerStub(c) for c in self._channels]
        self._lock = threading.Lock()
        self._next = 0  # guarded by _lock: where the next call starts

    # -- lifetime --

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"quantd.Client({','.join(self.targets)!r})"

    # -- helpers --

    def _start_index(self) -> int:
        with self._lock:
            index = self._next
            self._next = (self._next + 1) % len(self.targets)
            return index

    def _backoff(self, attempt: int) -> None:
        delay = min(self.backoff_seconds * (2 ** (attempt - 1)),
                    self.max_backoff_seconds)
        time.sleep(delay * random.uniform(0.5, 1.5))

    # -- calls --

    def server_info(self) -> ServerInfo:
        """The version, formats, dtypes, limits and workers of the first
        server that answers (tried in turn, with back-off, up to
        max_attempts rounds on transient errors)."""
        index = self._start_index()
        last: Optional[errors.QuantdError] = None
        for attempt in range(1, self.max_attempts + 1):
            for k in range(len(self.targets)):
                i = (index + k) % len(self.targets)
                try:
                    info = self._stubs[i].GetServerInfo(
                        pb.GetServerInfoRequest(), timeout=self.timeout,
                        metadata=self._metadata)
                    return ServerInfo.from_proto(self.targets[i], info)
                except grpc.RpcError as e:
                    last = errors.error_from_rpc(e, target=self.targets[i])
                    if last.code not in _TRANSIENT:
                        raise last from None
            if attempt < self.max_attempts:
                self._backoff(attempt)
        raise last

    def quantize(self, array, scheme: SchemeLike = "int8", *, name: str = "tensor",
                 output: str = "both", importance=None,
                 dtype: Optional[str] = None,
                 calibration: Union[None, Calibration, Any] = None,
                 activation_range: Union[None, str, Any] = None
                 ) -> QuantizedTensor:
        """Quantizes one tensor.

        Args:
          array: float32, float16 or bfloat16 (ml_dtypes) values of any shape;
            float64 is sent as float32; raw bfloat16 bits as uint16 with
            dtype="bf16". The last dimension is the row.
          scheme: "int8", "int4_asym_g128", "int3_tensor", a ggml block format
            ("Q4_K") the server supports, or a quantd.v1.Scheme.
          output: "both" (codes, scales, zero points and dequantized values),
            "packed" or "fake_quant".
          importance: per-column weights for ggml block formats (llama.cpp's
            imatrix entry), row_length values >= 0.
          dtype: "f32", "f16" or "bf16" to convert to before sending.
          calibration: the tensor's input activations X ([tokens,
            row_length] floats, sent as a calibration set named like the
            tensor) or a quantd.Calibration; the result then has
            output_metrics (and activation_range for activations).
          activation_range: how the static activation range is estimated:
            a method name ("minmax", "percentile", "mse", "kl") or
            quantd.range_options(...) (percentile, asymmetric, per_channel).

        Raises a quantd.QuantdError subclass for a failed call, for instance
        InvalidArgumentError for an unknown scheme or a NaN.
        """
        sets = []
        if calibration is not None:
            if not isinstance(calibration, Calibration):
                calibration = Calibration(name, activations=calibration)
            sets.append(calibration)
        item = {"name": name, "array": array, "scheme": None,
                "importance": importance, "dtype": dtype,
                "calibration": calibration}
        # Read the stream to its end, so that it finishes with OK rather than
        # being cancelled once the result is in.
        (result,) = self.quantize_many([item], scheme, output=output,
                                       calibration_sets=sets,
                                       activation_range=activation_range)
        return result

    def quantize_many(self, tensors: Iterable[Any], scheme: SchemeLike = "int8", *,
                      output: str = "both", max_in_flight: Optional[int] = None,
                      return_exceptions: bool = False,
                      calibration_sets: Sequence[Calibration] = (),
                      activation_range: Union[None, str, Any] = None
                      ) -> Iterator[Union[QuantizedTensor, errors.QuantdError]]:
        """Quantizes many tensors on one stream, yielding each result as it
        completes (completion order, not input order).

        Args:
          tensors: an iterable of (name, array), (name, array, scheme),
            (name, array, scheme, calibration) or dicts with keys name, array
            and optionally scheme, importance, dtype, calibration (scheme may
            be None for the default; calibration names one of
            calibration_sets, or is that quantd.Calibration). Read lazily: at most max_in_flight arrays are referenced at
            once (plus those waiting to be re-sent), so a generator that loads
            one tensor at a time keeps memory bounded. Names must be unique.
          scheme: the default scheme, for tensors that do not name one.
          output: "both", "packed" or "fake_quant" (see quantize()).
          max_in_flight: overrides the client's.
          return_exceptions: yield a QuantdError (with .tensor set) for a tensor
            that failed, and go on with the others, instead of raising it.
            Errors about the call itself (UNAUTHENTICATED, PERMISSION_DENIED,
            DEADLINE_EXCEEDED, CANCELLED) are raised either way.
          activation_range: the job's static activation range estimator, as
            for quantize().
          calibration_sets: quantd.Calibration sets, sent at the start of
            the stream (and of every stream a retry opens) before any tensor,
            in order; names must be unique. Each set's activations are
            folded by the server into statistics whose size depends on its
            features only.
        """
        try:
            output_kind = _OUTPUT[output]
        except KeyError:
            raise ValueError(f"output must be one of {', '.join(_OUTPUT)}, not "
                             f"{output!r}") from None
        default_scheme = parse_scheme(scheme)
        sets = list(calibration_sets)
        for s in sets:
            if not isinstance(s, Calibration):
                raise TypeError(f"calibration_sets holds a {type(s).__name__}, "
                                "not a quantd.Calibration")
        if len({s.name for s in sets}) != len(sets):
            raise ValueError("calibration set names must be unique")
        in_flight_max = max_in_flight or self.max_in_flight
        source = enumerate(tensors)
        source_done = False
        names_seen = set()
        retry: "collections.deque[_Job]" = collections.deque()
        target = self._start_index()
        failures = 0  # consecutive failed streams, for the back-off

        def next_job(sent_here) -> Optional[_Job]:
            nonlocal source_done
            for job in retry:
                if job.name not in sent_here:
                    retry.remove(job)
                    return job
            if source_done:
                return None
            try:
                index, item = next(source)
            except StopIteration:
                source_done = True
                return None
            job = _make_job(item, index)
            if job.name in names_seen:
                raise ValueError(f"tensor name {job.name!r} given twice")
            names_seen.add(job.name)
            return job

        options = pb.JobOptions(output=output_kind)
        if activation_range is not None:
            if isinstance(activation_range, str):
                activation_range = range_options(activation_range)
            options.activation_range.CopyFrom(activation_range)
        start = pb.QuantizeRequest(start=pb.JobStart(
            scheme=default_scheme, options=options, client=self.client_name))

        while retry or not source_done:
            if failures:
                self._backoff(failures)
            address = self.targets[target]
            sender = _Sender(start, self.chunk_bytes)
            for s in sets:
                sender.put(s)
            in_flight: "collections.OrderedDict[str, _Pending]" = \
                collections.OrderedDict()
            sent_here = set()
            closed = False
            failed_here: List[Tuple[_Job, errors.QuantdError]] = []

            def fill():
                """Sends tensors until max_in_flight are unanswered; half-closes
                when this stream has nothing left to send and nothing to read.
                A tensor under suspicion (isolate) travels alone."""
                nonlocal closed
                while not closed and len(in_flight) < in_flight_max:
                    if any(p.job.isolate for p in in_flight.values()):
                        return
                    job = next_job(sent_here)
                    if job is None:
                        # Tensors already sent on this stream (a checksum
                        # retry) wait for the next one.
                        if not in_flight:
                            sender.half_close()
                            closed = True
                        return
                    if job.isolate and in_flight:
                        retry.appendleft(job)
                        return
                    in_flight[job.name] = _Pending(job)
                    sent_here.add(job.name)
                    sender.put(job)

            fill()
            if closed and not in_flight:
                break  # nothing was left to send
            call = self._stubs[target].Quantize(
                iter(sender), timeout=self.timeout, metadata=self._metadata)
            stream_error: Optional[errors.QuantdError] = None
            try:
                current: Optional[str] = None
                for response in call:
                    if response.HasField("shard"):
                        shard = response.shard
                        pending = in_flight.get(shard.tensor)
                        if pending is None or (current and current != shard.tensor):
                            raise errors.InternalError(
                                f"protocol violation: shard of tensor "
                                f"{shard.tensor}, which is not in flight or "
                                f"interleaves with {current}", target=address)
                        current = shard.tensor
                        pending.add(shard)
                    elif response.HasField("result"):
                        result = response.result
                        current = None
                        pending = in_flight.pop(result.tensor, None)
                        if pending is None:
                            raise errors.InternalError(
                                f"protocol violation: result for tensor "
                                f"{result.tensor}, which is not in flight",
                                target=address)
                        try:
                            done = pending.finish(result, output_kind, address)
                        except errors.DataLossError as e:
                            pending.job.attempts += 1
                            if pending.job.attempts >= self.max_attempts:
                                failed_here.append((pending.job, e))
                            else:
                                retry.append(pending.job)
                            done = None
                        fill()
                        if done is not None:
                            failures = 0
                            yield done
                        while failed_here:
                            job, e = failed_here.pop(0)
                            if not return_exceptions:
                                raise e
                            yield e
                    else:
                        raise errors.InternalError(
                            "protocol violation: empty response", target=address)
                if in_flight:
                    stream_error = errors.DataLossError(
                        f"the server finished the stream without answering "
                        f"{', '.join(in_flight)}", target=address)
            except grpc.RpcError as e:
                stream_error = errors.error_from_rpc(e, target=address)
            except errors.InternalError as e:
                stream_error = e
            except BaseException:
                # The consumer stopped (GeneratorExit) or a bug: end the call.
                sender.stop()
                call.cancel()
                raise
            finally:
                sender.stop()
            if stream_error is None:
                continue
            call.cancel()
            failures += 1
            code = stream_error.code
            if code in _FATAL or stream_error.details.startswith("JobStart"):
                raise stream_error  # about the call: every tensor would fail
            if code not in _TRANSIENT and stream_error.details.startswith(
                    "calibration set '"):
                raise stream_error  # a bad set fails every stream that sends it
            unanswered = [p.job for p in in_flight.values()]
            if code in _TRANSIENT:
                if len(self.targets) > 1:
                    target = (target + 1) % len(self.targets)
                requeue = []
                for job in unanswered:
                    job.attempts += 1
                    if job.attempts >= self.max_attempts:
                        failed_here.append((job, errors.error_from_status(
                            code, stream_error.details, tensor=job.name,
                            target=address)))
                    else:
                        requeue.append(job)
                retry.extendleft(reversed(requeue))
            else:
                # The error names its tensor ("tensor NAME: ..."); if it names
                # none in flight, each is sent again alone to find it.
                culprit = None
                for job in unanswered:
                    if stream_error.details.startswith(f"tensor {job.name}: ") and (
                            culprit is None or len(job.name) > len(culprit.name)):
                        culprit = job
                if culprit is None and len(unanswered) == 1:
                    culprit = unanswered[0]
                if culprit is not None:
                    failures = 0  # the server is fine; the tensor is not
                    stream_error.tensor = culprit.name
                    failed_here.append((culprit, stream_error))
                    requeue = [j for j in unanswered if j is not culprit]
                elif unanswered:
                    requeue = unanswered
                    for job in requeue:
                        job.isolate = True
                else:
                    raise stream_error  # no tensor to blame: about the call
                retry.extendleft(reversed(requeue))
            for job, e in failed_here:
                if not return_exceptions:
                    raise e
                yield e
