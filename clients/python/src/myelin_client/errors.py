"""The client's exceptions: one hierarchy, each keeping the gRPC status code and details.

    MyelinError                   every error the client raises for a failed call
    ├── InvalidArgumentError      INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION: fix the request
    ├── NotFoundError             NOT_FOUND: unknown model or version
    ├── ResourceExhaustedError    RESOURCE_EXHAUSTED: overloaded or over a limit; retry with backoff
    ├── DeadlineExceededError     DEADLINE_EXCEEDED: the call took longer than its timeout
    ├── UnauthenticatedError      UNAUTHENTICATED, PERMISSION_DENIED: missing or wrong token
    ├── UnavailableError          UNAVAILABLE: server down, starting, or shutting down; retry
    ├── CancelledError            CANCELLED: the call was cancelled
    ├── ServerError               INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, ...: a server fault, or
    │                             (UNIMPLEMENTED) the wrong address: the message names what it serves
    └── ClientClosedError         no call made: the client was closed (close(), or its `with` ended)

`from_rpc_error` is the one place a `grpc.RpcError` becomes one of these; `hint` adds what the
client knows beyond the server's words (the address it probably meant, a refused TLS handshake).
"""

from __future__ import annotations

import grpc


class MyelinError(Exception):
    """A failed call. `code` is the gRPC status, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidArgumentError(MyelinError):
    pass


class NotFoundError(MyelinError):
    pass


class ResourceExhaustedError(MyelinError):
    pass


class DeadlineExceededError(MyelinError):
    pass


class UnauthenticatedError(MyelinError):
    pass


class UnavailableError(MyelinError):
    pass


class CancelledError(MyelinError):
    pass


class ServerError(MyelinError):
    pass


class ClientClosedError(MyelinError):
    """A call on a closed client; no request was sent. `code` is FAILED_PRECONDITION."""

    def __init__(self, target: str) -> None:
        super().__init__(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"this client of {target} is closed (close() was called, or its `with` block ended): "
            "make a new client to call again",
        )


_BY_CODE: dict[grpc.StatusCode, type[MyelinError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: UnauthenticatedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


def from_rpc_error(error: grpc.RpcError, *, hint: str = "") -> MyelinError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    if hint:
        details = f"{details} ({hint})"
    return _BY_CODE.get(code, ServerError)(code, details)
