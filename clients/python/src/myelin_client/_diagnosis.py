"""What the client adds to a failed call's message: the service it probably meant to reach, or why a
TLS handshake was refused. Text only; `errors.from_rpc_error` still makes the exception.

Each family's default port is part of the contract: the `default_port` option on its service in
myelin_api/v1/<family>.proto (classifier 50051, translator 50052, generator 50053, embedder 50054).
"""

from __future__ import annotations

from pathlib import PurePosixPath

import grpc
from google.protobuf import descriptor_pool

from myelin_api.v1 import common_pb2

SOCKET_CLOSED = "Socket closed"
DEFAULT_PORT = common_pb2.DESCRIPTOR.extensions_by_name["default_port"]


def service_of(method: str) -> str:
    """ "/myelin_api.v1.Classifier/Classify" -> "myelin_api.v1.Classifier"."""
    return method.strip("/").split("/", 1)[0]


def family_of(service: str) -> tuple[str, int] | None:
    """(family, default port) of a Myelin family's service, None for any other service."""
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return None
    ports = [value for field, value in descriptor.GetOptions().ListFields() if field is DEFAULT_PORT]
    return (PurePosixPath(descriptor.file.name).stem, int(ports[0])) if ports else None


def service_target(service: str, host: str = "127.0.0.1") -> str:
    """Where a family's service listens by default; the classifier's port for the shared services."""
    known = family_of(service) or family_of("myelin_api.v1.Classifier")
    assert known is not None, "classifier.proto names its default_port"
    return f"{host}:{known[1]}"


def default_target(family: str, host: str = "127.0.0.1") -> str:
    """`host` and the default port of a family's service ("translator" -> "127.0.0.1:50052"), as its
    .proto names it."""
    try:
        file = descriptor_pool.Default().FindFileByName(f"myelin_api/v1/{family}.proto")
    except KeyError:
        raise ValueError(f"no model family {family!r} in myelin_api.v1") from None
    for service in file.services_by_name.values():
        known = family_of(service.full_name)
        if known is not None:
            return f"{host}:{known[1]}"
    raise ValueError(f"myelin_api/v1/{family}.proto names no default_port")


def wrong_service(target: str, method: str, served: list[str] | None) -> str:
    """Why UNIMPLEMENTED: the address serves other services (`served`, from grpc.health.v1 List)."""
    wanted = service_of(method)
    if served is not None and wanted in served:
        return f"{target} serves {wanted} but not this method: the server is probably older than this client"
    family = family_of(wanted)
    meant = f"; the {family[0]} service listens on port {family[1]} by default" if family else ""
    if not served:
        return f"{target} does not serve {wanted} and does not list what it serves: is it a Myelin service?{meant}"
    theirs = sorted({f for f in map(family_of, served) if f is not None})
    kind = f", a {' and '.join(f'{name} service (port {port})' for name, port in theirs)}" if theirs else ""
    return f"{target} does not serve {wanted}: it serves {', '.join(served)}{kind}{meant}"


def tls_hint(code: grpc.StatusCode, details: str, *, tls: bool, client_certificate: bool) -> str:
    """Why the server closed the connection at once, when the TLS settings are the likely reason."""
    if code is not grpc.StatusCode.UNAVAILABLE or not details.endswith(SOCKET_CLOSED):
        return ""
    if not tls:
        return (
            "the server closed the connection: if it uses TLS, connect with TLS "
            "(tls=True or root_certificates; --tls or --tls-ca)"
        )
    if not client_certificate:
        return (
            "the server closed the TLS connection: it probably requires a client certificate (mutual TLS) "
            "and none was sent; pass certificate_chain and private_key (--tls-cert, --tls-key)"
        )
    return (
        "the server closed the TLS connection: it probably rejected the client certificate (not signed by "
        "a CA it trusts, expired, or not for client authentication)"
    )
