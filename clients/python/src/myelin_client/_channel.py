"""Channel construction shared by both clients: TLS, message sizes, round-robin for dns:/// targets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import grpc

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
