"""The connection both clients share: channel options, TLS, round-robin for dns:/// targets, tokens."""

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


@dataclass(frozen=True)
class ChannelConfig:
    target: str
    tls: bool
    root_certificates: bytes | None
    certificate_chain: bytes | None
    private_key: bytes | None
    max_message_bytes: int

    def options(self) -> list[tuple[str, object]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # A dns:/// target resolving to several replicas spreads calls over all of them.
            ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
        ]

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
) -> ChannelConfig:
    tls = tls or any(v is not None for v in (root_certificates, certificate_chain, private_key))
    return ChannelConfig(
        target, tls, read_pem(root_certificates), read_pem(certificate_chain), read_pem(private_key), max_message_bytes
    )


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class Connection:
    """Channel, default timeout, auth metadata and cached method callables; `Client` and
    `AsyncClient` add the methods, the first blocking on the channel, the second awaiting it.

    Options are keyword-only: `timeout` (seconds, the default deadline of every call), `token`
    (bearer token), `tls` (TLS with the system roots), `root_certificates`, `certificate_chain`,
    `private_key` (PEM bytes or paths; giving any of them turns TLS on), `max_message_bytes`.
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
    ) -> None:
        config = make_config(
            target,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            max_message_bytes=max_message_bytes,
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
