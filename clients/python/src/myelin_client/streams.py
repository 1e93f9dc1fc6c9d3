"""Streams of generated text: iterate chunks as they arrive, then read the Completion.

    with client.generate("ROMEO:", max_new_tokens=200) as stream:
        for chunk in stream:
            print(chunk.text, end="", flush=True)
    print(stream.completion.finish_reason)

Leaving the `with` block (or calling `cancel()`) early cancels the call, and the service stops
generating for it within one decoding step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any

import grpc

from myelin_client._protocol import GenerationAccumulator
from myelin_client.errors import MyelinError
from myelin_client.types import Completion, GenerationChunk


class GenerationStream:
    """The chunks of one Generate call (blocking iteration). `explain` is the client's: it turns the
    call's grpc.RpcError into a MyelinError."""

    def __init__(self, call: Any, explain: Callable[[grpc.RpcError], MyelinError]) -> None:
        self._call = call
        self._explain = explain
        self._accumulator = GenerationAccumulator()

    def __iter__(self) -> Iterator[GenerationChunk]:
        try:
            for message in self._call:
                yield self._accumulator.add(message)
        except grpc.RpcError as exc:
            raise self._explain(exc) from None

    @property
    def completion(self) -> Completion | None:
        """The whole text and the finish reason, once the last chunk has arrived (else None)."""
        return self._accumulator.completion

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._accumulator.completion is None:
            self.cancel()


class AsyncGenerationStream:
    """The chunks of one Generate call, for `async for`."""

    def __init__(self, call: Any, explain: Callable[[grpc.RpcError], Awaitable[MyelinError]]) -> None:
        self._call = call
        self._explain = explain
        self._accumulator = GenerationAccumulator()

    async def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        try:
            async for message in self._call:
                yield self._accumulator.add(message)
        except grpc.RpcError as exc:
            raise await self._explain(exc) from None

    @property
    def completion(self) -> Completion | None:
        return self._accumulator.completion

    def cancel(self) -> None:
        self._call.cancel()

    async def __aenter__(self) -> AsyncGenerationStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._accumulator.completion is None:
            self.cancel()
