"""Exceptions of the quantd SDK: one class per gRPC status code.

    try:
        client.quantize(w, "int4_g100")
    except quantd.InvalidArgumentError as e:
        print(e.code, e.details, e.tensor)  # StatusCode.INVALID_ARGUMENT, ...

Every exception the SDK raises for a failed call is a QuantdError carrying
the gRPC status code (`code`, a grpc.StatusCode), the server's message
(`details`) and, when known, the tensor it concerns (`tensor`). Mistakes the
SDK catches before anything is sent (an unsupported dtype, a malformed
scheme, duplicate names) are TypeError/ValueError, as in numpy.
"""
from __future__ import annotations

from typing import Optional

import grpc

__all__ = [
    "QuantdError", "CancelledError", "UnknownError", "InvalidArgumentError",
    "DeadlineExceededError", "NotFoundError", "ResourceExhaustedError",
    "FailedPreconditionError", "UnimplementedError", "InternalError",
    "UnavailableError", "DataLossError", "UnauthenticatedError",
    "PermissionDeniedError", "error_from_status", "error_from_rpc",
]


class QuantdError(Exception):
    """A call failed with a gRPC status other than OK."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, *, code: Optional[grpc.StatusCode] = None,
                 tensor: Optional[str] = None, target: Optional[str] = None):
        if code is not None:
            self.code = code
        self.details = details
        self.tensor = tensor
        self.target = target
        super().__init__(f"{self.code.name}: {details}")


class CancelledError(QuantdError):
    code = grpc.StatusCode.CANCELLED


class UnknownError(QuantdError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(QuantdError):
    """Bad input: a NaN, an unknown format, a group size that does not divide
    the row, ... The message names the tensor."""
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(QuantdError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(QuantdError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhaustedError(QuantdError):
    """Over a server limit (the message names it); retried by the client."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(QuantdError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnimplementedError(QuantdError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(QuantdError):
    """A bug on the server, or a server that broke the wire contract."""
    code = grpc.StatusCode.INTERNAL


class UnavailableError(QuantdError):
    """No server could be reached, or it is draining; retried by the client."""
    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(QuantdError):
    """A CRC-32C or size mismatch, on either side of the wire."""
    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(QuantdError):
    """The server wants a bearer token and got none."""
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(QuantdError):
    """The bearer token is not one the server accepts."""
    code = grpc.StatusCode.PERMISSION_DENIED


_BY_CODE = {cls.code: cls for cls in (
    CancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError,
    NotFoundError, ResourceExhaustedError, FailedPreconditionError,
    UnimplementedError, InternalError, UnavailableError, DataLossError,
    UnauthenticatedError, PermissionDeniedError)}


def error_from_status(code: grpc.StatusCode, details: str, *,
                      tensor: Optional[str] = None,
                      target: Optional[str] = None) -> QuantdError:
    """The QuantdError subclass for `code` (QuantdError itself for codes
    without one, such as ABORTED)."""
    cls = _BY_CODE.get(code, QuantdError)
    return cls(details, code=code, tensor=tensor, target=target)


def error_from_rpc(error: grpc.RpcError, *, tensor: Optional[str] = None,
                   target: Optional[str] = None) -> QuantdError:
    """The QuantdError for a grpc.RpcError raised by a stub call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return error_from_status(code or grpc.StatusCode.UNKNOWN, details or "",
                             tensor=tensor, target=target)
