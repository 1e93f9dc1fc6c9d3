"""The connection both clients share: channel options, TLS, load balancing and retries, tokens.

Balancing and retries live in the channel's service config, so gRPC itself applies them:

- `round_robin` over every address the target names: a `dns:///name:port` target (each address
  the name resolves to, e.g. a Kubernetes headless Service or a compose service scaled out) or an
  `ipv4:a:port,b:port` list. A replica that goes away is skipped; gRPC reconnects to it with backoff
  and re-resolves a dns:/// name when a connection closes.
- Client-side health checking (grpc.health.v1 Watch) on targets that name replicas: a replica gets
  calls only while its health says SERVING, so one warming up or draining (SIGTERM) gets none.
- A retry policy for UNAVAILABLE (the replica is gone, refused the call, or has no ready model):
  up to `max_attempts` attempts with exponential backoff, all within the call's deadline. gRPC only
  retries a call before any response has arrived: a generation stream that has received a chunk is
  never retried, it fails with UNAVAILABLE when its replica dies, and the next stream goes to a live
  replica. A request larger than gRPC's per-call retry buffer (256 KiB) is not retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc

from myelin_client import _diagnosis
from myelin_client._protocol import Call, StreamCall
from myelin_client.errors import ClientClosedError, MyelinError, from_rpc_error

Pem = bytes | str | Path | None

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0
# The embedder methods' default model: what `myelin-train word2vec` names a skip-gram model.
DEFAULT_EMBEDDER = "word2vec-skipgram"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
LOAD_BALANCING = ("round_robin", "pick_first")
# Attempts per call, the first included (gRPC caps it at 5); 1 turns retries off.
DEFAULT_MAX_ATTEMPTS = 4
# Backoff before retry n is random in [0, min(initial * 2**(n-1), max)] seconds (gRPC's policy).
DEFAULT_RETRY_INITIAL_BACKOFF = 0.1
DEFAULT_RETRY_MAX_BACKOFF = 1.0


@dataclass(frozen=True)
class ChannelConfig:
    target: str
    tls: bool
    root_certificates: bytes | None
    certificate_chain: bytes | None
    private_key: bytes | None
    max_message_bytes: int
    load_balancing: str = "round_robin"
    health_check: bool = False
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_initial_backoff: float = DEFAULT_RETRY_INITIAL_BACKOFF
    retry_max_backoff: float = DEFAULT_RETRY_MAX_BACKOFF

    def options(self) -> list[tuple[str, object]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.service_config", json.dumps(self.service_config())),
        ]

    def service_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"loadBalancingConfig": [{self.load_balancing: {}}]}
        if self.health_check:
            config["healthCheckConfig"] = {"serviceName": ""}  # the whole server's health
        if self.max_attempts > 1:
            retry = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.retry_initial_backoff:.3f}s",
                "maxBackoff": f"{self.retry_max_backoff:.3f}s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
            config["methodConfig"] = [{"name": [{}], "retryPolicy": retry}]  # [{}]: every method
        return config

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)


def read_pem(value: bytes | str | Path | None) -> bytes | None:
    """PEM given as bytes, or as a path to a file holding it."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def make_config(
    target: str,
    *,
    tls: bool,
    root_certificates: bytes | str | Path | None,
    certificate_chain: bytes | str | Path | None,
    private_key: bytes | str | Path | None,
    max_message_bytes: int,
    load_balancing: str = "round_robin",
    health_check: bool | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_initial_backoff: float = DEFAULT_RETRY_INITIAL_BACKOFF,
    retry_max_backoff: float = DEFAULT_RETRY_MAX_BACKOFF,
) -> ChannelConfig:
    tls = tls or any(v is not None for v in (root_certificates, certificate_chain, private_key))
    if load_balancing not in LOAD_BALANCING:
        raise ValueError(f"load_balancing must be one of {', '.join(LOAD_BALANCING)}, not {load_balancing!r}")
    if not 1 <= max_attempts <= 5:
        raise ValueError(f"max_attempts must be between 1 (no retries) and 5 (gRPC's limit), not {max_attempts}")
    if not 0 < retry_initial_backoff <= retry_max_backoff:
        raise ValueError(
            f"retry backoffs must satisfy 0 < retry_initial_backoff <= retry_max_backoff, "
            f"not {retry_initial_backoff} and {retry_max_backoff}"
        )
    return ChannelConfig(
        target,
        tls,
        read_pem(root_certificates),
        read_pem(certificate_chain),
        read_pem(private_key),
        max_message_bytes,
        load_balancing,
        names_replicas(target) if health_check is None else health_check,
        max_attempts,
        retry_initial_backoff,
        retry_max_backoff,
    )


def names_replicas(target: str) -> bool:
    """A `dns:` target (every address the name resolves to) or an `ipv4:`/`ipv6:` list of several."""
    scheme, _, rest = target.partition(":")
    return scheme == "dns" or (scheme in ("ipv4", "ipv6") and "," in rest)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class Connection:
    """Channel, default timeout, auth metadata and cached method callables; `Client` and
    `AsyncClient` add the methods, the first blocking on the channel, the second awaiting it.

    Options are keyword-only: `timeout` (seconds, the default deadline of every call), `token`
    (bearer token), `tls` (TLS with the system roots), `root_certificates`, `certificate_chain`,
    `private_key` (PEM bytes or paths; giving any of them turns TLS on), `max_message_bytes`.

    Replicas (see the module docstring): `load_balancing` ("round_robin", the default, or
    "pick_first": one address at a time); `health_check` (send calls only to replicas whose
    grpc.health.v1 status is SERVING; None, the default, turns it on for targets that name replicas,
    `dns:` or an `ipv4:`/`ipv6:` list of several addresses, and off for one `host:port`);
    `max_attempts` (4: attempts per call on UNAVAILABLE, 1 turns retries off), and the backoff
    between them, `retry_initial_backoff` (0.1 s) doubling up to `retry_max_backoff` (1 s).
    """

    _channels: ClassVar[Any] = grpc  # grpc or grpc.aio

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        tls: bool = False,
        root_certificates: Pem = None,
        certificate_chain: Pem = None,
        private_key: Pem = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        load_balancing: str = "round_robin",
        health_check: bool | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_initial_backoff: float = DEFAULT_RETRY_INITIAL_BACKOFF,
        retry_max_backoff: float = DEFAULT_RETRY_MAX_BACKOFF,
    ) -> None:
        config = make_config(
            target,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            max_message_bytes=max_message_bytes,
            load_balancing=load_balancing,
            health_check=health_check,
            max_attempts=max_attempts,
            retry_initial_backoff=retry_initial_backoff,
            retry_max_backoff=retry_max_backoff,
        )
        credentials = config.credentials()
        if credentials is not None:
            self._channel = self._channels.secure_channel(target, credentials, options=config.options())
        else:
            self._channel = self._channels.insecure_channel(target, options=config.options())
        self.target = target
        self.timeout = timeout
        self._config = config
        self._metadata = auth_metadata(token)
        self._callables: dict[str, Any] = {}
        self._closed = False

    def _callable(self, call: Call[Any]) -> Any:
        if self._closed:
            raise ClientClosedError(self.target)
        fn = self._callables.get(call.method)
        if fn is None:
            fn = self._channel.unary_unary(
                call.method,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=call.response_type.FromString,
            )
            self._callables[call.method] = fn
        return fn

    def _stream_callable(self, call: StreamCall) -> Any:
        if self._closed:
            raise ClientClosedError(self.target)
        fn = self._callables.get(call.method)
        if fn is None:
            fn = self._channel.unary_stream(
                call.method,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=call.response_type.FromString,
            )
            self._callables[call.method] = fn
        return fn

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _error(self, error: grpc.RpcError, method: str, served: list[str] | None = None) -> MyelinError:
        """The MyelinError for a failed call of `method`, with what the client can add: the services
        the server does serve (`served`, asked for after UNIMPLEMENTED), or the likely TLS problem."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return from_rpc_error(error, hint=_diagnosis.wrong_service(self.target, method, served))
        details = (error.details() if hasattr(error, "details") else None) or ""
        hint = _diagnosis.tls_hint(
            code, details, tls=self._config.tls, client_certificate=self._config.certificate_chain is not None
        )
        return from_rpc_error(error, hint=hint)
