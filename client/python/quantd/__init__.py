"""quantd: Python SDK of the quantd quantization server.

    import numpy as np, quantd

    with quantd.Client("localhost:50051") as client:
        q = client.quantize(np.random.randn(256, 512).astype(np.float32),
                            "int4_asym_g128")
        q.codes, q.scales, q.zero_points, q.metrics.sqnr_db

See README.md for streaming many tensors, TLS, tokens and retries.
"""
from quantd.calibration import (ActivationRange, Calibration, OutputMetrics,
                                W8A8Check, range_options)
from quantd.client import Client, FormatInfo, Limits, ServerInfo
from quantd.checksum import crc32c, crc32c_combine
from quantd.errors import (CancelledError, DataLossError, DeadlineExceededError,
                           InternalError, InvalidArgumentError,
                           PermissionDeniedError, QuantdError,
                           ResourceExhaustedError, UnauthenticatedError,
                           UnavailableError, UnimplementedError)
from quantd.mixed_precision import (CurvePoint, MixedPrecisionPlan,
                                    plan_mixed_precision)
from quantd.scheme import parse_scheme, scheme_name
from quantd.tensor import Layout, Metrics, QuantizedTensor, pack_codes, unpack_codes

__version__ = "0.1.0"

__all__ = [
    "Client", "Calibration", "OutputMetrics", "ActivationRange", "W8A8Check",
    "range_options", "plan_mixed_precision", "MixedPrecisionPlan", "CurvePoint", "ServerInfo", "FormatInfo", "Limits", "QuantizedTensor", "Layout",
    "Metrics", "parse_scheme", "scheme_name", "pack_codes", "unpack_codes",
    "crc32c", "crc32c_combine", "QuantdError", "InvalidArgumentError",
    "ResourceExhaustedError", "UnavailableError", "DataLossError",
    "UnauthenticatedError", "PermissionDeniedError", "DeadlineExceededError",
    "CancelledError", "InternalError", "UnimplementedError",
]
