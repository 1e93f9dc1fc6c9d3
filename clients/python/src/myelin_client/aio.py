"""`AsyncClient`: the asyncio client, with the same methods as `Client`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from myelin_client import _protocol
from myelin_client._channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    auth_metadata,
    make_config,
)
from myelin_client.errors import DeadlineExceededError, UnavailableError, from_rpc_error
from myelin_client.types import ClassifyResult, ModelInfo, ReloadResult, TranslateResult

T = TypeVar("T")
Pem = bytes | str | Path | None


class AsyncClient:
    """Like `Client`, for asyncio code: `async with AsyncClient(target) as client: await client.classify(...)`."""

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
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=config.options())
            if credentials
            else grpc.aio.insecure_channel(target, options=config.options())
        )
        self.target = target
        self.timeout = timeout
        self._metadata = auth_metadata(token)
        self._callables: dict[str, Any] = {}

    async def classify(
        self, images: Any, *, model: str = "mnist-cnn", version: int = 0, top_k: int = 1, timeout: float | None = None
    ) -> ClassifyResult:
        return await self._invoke(_protocol.classify(images, model=model, version=version, top_k=top_k), timeout)

    async def translate(
        self,
        sentences: str | Sequence[str],
        *,
        model: str = "translator-tatoeba",
        version: int = 0,
        beam_size: int | None = None,
        max_length: int | None = None,
        length_penalty: float | None = None,
        truncate: bool = False,
        timeout: float | None = None,
    ) -> TranslateResult:
        call = _protocol.translate(
            sentences,
            model=model,
            version=version,
            beam_size=beam_size,
            max_length=max_length,
            length_penalty=length_penalty,
            truncate=truncate,
        )
        return await self._invoke(call, timeout)

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        return await self._invoke(_protocol.list_models(), timeout)

    async def get_model(self, name: str, *, version: int = 0, timeout: float | None = None) -> ModelInfo:
        return await self._invoke(_protocol.get_model(name, version), timeout)

    async def reload_models(self, *, timeout: float | None = None) -> ReloadResult:
        return await self._invoke(_protocol.reload_models(), timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        return await self._invoke(_protocol.health(service), timeout)

    async def wait_ready(self, *, timeout: float = 60.0, service: str = "") -> None:
        end = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < end:
            try:
                last = await self.health(service, timeout=max(0.1, min(2.0, end - time.monotonic())))
                if last == "SERVING":
                    return
            except (UnavailableError, DeadlineExceededError) as exc:
                last = exc.code.name
            await asyncio.sleep(0.1)
        raise DeadlineExceededError(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.target} not SERVING after {timeout} s ({last})"
        )

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _invoke(self, call: _protocol.Call[T], timeout: float | None) -> T:
        fn = self._callables.get(call.method)
        if fn is None:
            fn = self._channel.unary_unary(
                call.method,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=call.response_type.FromString,
            )
            self._callables[call.method] = fn
        try:
            response = await fn(
                call.request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return call.parse(response)
