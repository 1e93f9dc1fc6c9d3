"""Transport-free errors, and the one table that maps them to gRPC status codes.

Domain code raises these; the interceptor turns them into a status with the message as details.
Anything else that escapes a handler is logged once and becomes INTERNAL without a traceback.
"""

from __future__ import annotations

import grpc


class MyelinError(Exception):
    """Base of every error a caller may see; the message must say what to change."""


class InvalidArgument(MyelinError):
    """The request is malformed or out of range."""


class NotFound(MyelinError):
    """Unknown model or version."""


class ModelNotReady(MyelinError):
    """The model exists but no version of it is ready (loading, or failed to load)."""


class Overloaded(MyelinError):
    """A queue or concurrency limit is full; retry later."""


class TooLarge(MyelinError):
    """The request is larger than the method takes (its size is refused before any work on it)."""


class DeadlineExceeded(MyelinError):
    """The request's deadline passed before its work was done."""


class Unauthenticated(MyelinError):
    """Missing or wrong credentials."""


class Unavailable(MyelinError):
    """The service is shutting down or not ready."""


class Cancelled(MyelinError):
    """The caller went away."""


STATUS_CODES: dict[type[MyelinError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Cancelled: grpc.StatusCode.CANCELLED,
}


def status_code(error: MyelinError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL
