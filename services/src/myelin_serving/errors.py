"""Transport-free errors, and the one table that maps them to gRPC status codes and HTTP statuses.

Domain code raises these; the gRPC interceptor turns them into a status with the message as
details, the HTTP door into the table's status with the message in a JSON body. Anything else that
escapes a handler is logged once and becomes INTERNAL (HTTP 500) without a traceback.
"""

from __future__ import annotations

from typing import NamedTuple

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


class Status(NamedTuple):
    grpc: grpc.StatusCode
    http: int


INTERNAL = Status(grpc.StatusCode.INTERNAL, 500)

# The one table. HTTP 499 is nginx's "client closed request": nobody is left to read it.
STATUS_CODES: dict[type[MyelinError], Status] = {
    InvalidArgument: Status(grpc.StatusCode.INVALID_ARGUMENT, 400),
    NotFound: Status(grpc.StatusCode.NOT_FOUND, 404),
    ModelNotReady: Status(grpc.StatusCode.UNAVAILABLE, 503),
    Overloaded: Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    TooLarge: Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    DeadlineExceeded: Status(grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    Unauthenticated: Status(grpc.StatusCode.UNAUTHENTICATED, 401),
    Unavailable: Status(grpc.StatusCode.UNAVAILABLE, 503),
    Cancelled: Status(grpc.StatusCode.CANCELLED, 499),
}


def status_of(error: MyelinError) -> Status:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return INTERNAL


def status_code(error: MyelinError) -> grpc.StatusCode:
    return status_of(error).grpc


def http_status(error: MyelinError) -> int:
    return status_of(error).http
