"""`AsyncClient` and `AsyncGenerationStream`: the asyncio client, and the one client written by hand.

`client.py` (`Client` and `GenerationStream`, which block) is generated from this file by
clients/python/unasync.py, httpcore's way: `async`/`await` dropped, `Async*` names and `grpc.aio` made
sync. Change this file, then run `make unasync`; `make test` fails while client.py differs from what
the script writes. So write it in terms the script translates: see the substitutions there.
"""

from __future__ import annotations

import contextlib
import time
from asyncio import sleep
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc

from myelin_client import _health, _protocol
from myelin_client._channel import DEFAULT_EMBEDDER, Connection
from myelin_client._protocol import GenerationAccumulator
from myelin_client.errors import DeadlineExceededError, MyelinError, UnavailableError
from myelin_client.types import (
    AnalogyAnswer,
    AnalogyResult,
    ClassifyResult,
    Completion,
    DoesntMatchResult,
    EmbedResult,
    GenerationChunk,
    GenerationOptions,
    ModelInfo,
    NeighboursResult,
    ReloadResult,
    ScoreResult,
    SimilarityResult,
    TranslateResult,
)

T = TypeVar("T")
DEFAULT_GENERATOR = "generator-gpt-shakespeare"


class AsyncClient(Connection):
    """A connection to one Myelin service (or, with a dns:/// target, to all its replicas).

    Every call has a finite deadline: `timeout` seconds unless the call passes its own. Failed
    calls raise a `MyelinError` subclass (see `myelin_client.errors`).

        async with AsyncClient("127.0.0.1:50051") as client:
            result = await client.classify(["digit.png"], model="mnist-cnn", top_k=3)
    """

    _channels = grpc.aio

    async def classify(
        self, images: Any, *, model: str = "mnist-cnn", version: int = 0, top_k: int = 1, timeout: float | None = None
    ) -> ClassifyResult:
        """Classify numpy arrays ((H, W) or (N, H, W)), PIL images, encoded bytes or file paths."""
        return await self._invoke(_protocol.classify(images, model=model, version=version, top_k=top_k), timeout)

    def generate(
        self,
        prompt: str,
        *,
        model: str = DEFAULT_GENERATOR,
        version: int = 0,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> AsyncGenerationStream:
        """Stream the continuation of `prompt`: iterate the returned stream for GenerationChunks as
        they are produced; `stream.completion` then holds the finish reason and token counts.

        `options` are the sampling keywords of `GenerationOptions` (max_new_tokens, temperature,
        top_k, top_p, repetition_penalty, seed, stop). Leaving the stream's context manager early
        (or calling `stream.cancel()`) cancels the call.
        """
        call = _protocol.generate(_protocol.generate_request(prompt, model=model, version=version, options=options))
        response = self._stream_callable(call)(call.request, timeout=self._timeout(timeout), metadata=self._metadata)
        return AsyncGenerationStream(response, self, call.method)

    async def complete(
        self,
        prompt: str,
        *,
        model: str = DEFAULT_GENERATOR,
        version: int = 0,
        timeout: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> Completion:
        """Generate like `generate`, and return the whole text once it is finished."""
        request = _protocol.generate_request(prompt, model=model, version=version, options=options)
        return await self._invoke(_protocol.complete(request), timeout)

    async def score(
        self, text: str, *, model: str = DEFAULT_GENERATOR, version: int = 0, timeout: float | None = None
    ) -> ScoreResult:
        """The log-probability the model gives each token of `text` after the ones before it (the first is
        context only); `.perplexity` sums them up. At most the model's context + 1 tokens per call."""
        return await self._invoke(_protocol.score(text, model=model, version=version), timeout)

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
        beams: bool = False,
        timeout: float | None = None,
    ) -> TranslateResult:
        """Translate English sentences to French: one string or a list, answered in order.

        beam_size 1 is greedy; unset options take the service's defaults (beam 4, length penalty 0.6,
        max_length from the source length). Over-long sentences are refused unless truncate=True.
        beams=True also answers every hypothesis of the search in each Translation's `beams`, best first.
        """
        call = _protocol.translate(
            sentences,
            model=model,
            version=version,
            beam_size=beam_size,
            max_length=max_length,
            length_penalty=length_penalty,
            truncate=truncate,
            beams=beams,
        )
        return await self._invoke(call, timeout)

    async def embed(
        self,
        words: str | Sequence[str],
        *,
        model: str = DEFAULT_EMBEDDER,
        version: int = 0,
        timeout: float | None = None,
    ) -> EmbedResult:
        """Words to L2-normalised vectors; unknown words come back with `found` False, not as an error."""
        return await self._invoke(_protocol.embed(words, model=model, version=version), timeout)

    async def most_similar(
        self,
        positive: str | Sequence[str] = (),
        negative: str | Sequence[str] = (),
        *,
        positive_vectors: Any = None,
        negative_vectors: Any = None,
        model: str = DEFAULT_EMBEDDER,
        version: int = 0,
        top_k: int = 10,
        restrict_vocab: int = 0,
        timeout: float | None = None,
    ) -> NeighboursResult:
        """Words nearest to positive minus negative (words and/or raw vectors); king - man + woman is
        most_similar(["king", "woman"], ["man"]). The query words themselves are left out."""
        call = _protocol.most_similar(
            positive,
            negative,
            positive_vectors=positive_vectors,
            negative_vectors=negative_vectors,
            model=model,
            version=version,
            top_k=top_k,
            restrict_vocab=restrict_vocab,
        )
        return await self._invoke(call, timeout)

    async def analogy(
        self,
        a: str,
        b: str,
        c: str,
        *,
        model: str = DEFAULT_EMBEDDER,
        version: int = 0,
        top_k: int = 1,
        restrict_vocab: int = 0,
        timeout: float | None = None,
    ) -> AnalogyAnswer:
        """a : b :: c : ? (man : king :: woman : queen); `.word` is the best candidate."""
        result = await self.analogies(
            [(a, b, c)], model=model, version=version, top_k=top_k, restrict_vocab=restrict_vocab, timeout=timeout
        )
        return result.answers[0]

    async def analogies(
        self,
        questions: Sequence[tuple[str, str, str]],
        *,
        model: str = DEFAULT_EMBEDDER,
        version: int = 0,
        top_k: int = 1,
        restrict_vocab: int = 0,
        timeout: float | None = None,
    ) -> AnalogyResult:
        """Many (a, b, c) questions in one call; a question with an unknown word gets no candidates."""
        call = _protocol.analogies(questions, model=model, version=version, top_k=top_k, restrict_vocab=restrict_vocab)
        return await self._invoke(call, timeout)

    async def similarity(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        model: str = DEFAULT_EMBEDDER,
        version: int = 0,
        timeout: float | None = None,
    ) -> SimilarityResult:
        """Cosine similarity of each (first, second) pair; None for a pair with an unknown word."""
        return await self._invoke(_protocol.similarity(pairs, model=model, version=version), timeout)

    async def doesnt_match(
        self, words: Sequence[str], *, model: str = DEFAULT_EMBEDDER, version: int = 0, timeout: float | None = None
    ) -> DoesntMatchResult:
        """The word least similar to the mean of all of them."""
        return await self._invoke(_protocol.doesnt_match(words, model=model, version=version), timeout)

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every model the service knows, with its versions and their states."""
        return await self._invoke(_protocol.list_models(), timeout)

    async def get_model(self, name: str, *, version: int = 0, timeout: float | None = None) -> ModelInfo:
        """One model's metadata: its graphs' inputs and outputs, labels, evaluation, batching (0: newest)."""
        return await self._invoke(_protocol.get_model(name, version), timeout)

    async def reload_models(self, *, timeout: float | None = None) -> ReloadResult:
        """Scan the service's repository now: what it loaded, unloaded, and failed to load."""
        return await self._invoke(_protocol.reload_models(), timeout)

    async def load_model(self, name: str, *, timeout: float | None = None) -> ModelInfo:
        """Load (or load again) `name` from the service's repository, e.g. after unload_model."""
        return await self._invoke(_protocol.load_model(name), timeout)

    async def unload_model(self, name: str, *, timeout: float | None = None) -> list[str]:
        """Stop serving every version of `name` until load_model; returns them as "name/version"."""
        return await self._invoke(_protocol.unload_model(name), timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """SERVING, NOT_SERVING or SERVICE_UNKNOWN for `service` ("" is the whole server)."""
        return await self._invoke(_protocol.health(service), timeout)

    async def wait_ready(self, *, timeout: float = 60.0, service: str = "") -> None:
        """Return once health says SERVING; DeadlineExceededError after `timeout` seconds."""
        end = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < end:
            try:
                last = await self.health(service, timeout=max(0.1, min(2.0, end - time.monotonic())))
                if last == "SERVING":
                    return
            except (UnavailableError, DeadlineExceededError) as exc:
                last = exc.code.name
            await sleep(0.1)
        raise DeadlineExceededError(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.target} not SERVING after {timeout} s ({last})"
        )

    async def close(self) -> None:
        """Close the channel; calls after this raise ClientClosedError."""
        self._closed = True
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _invoke(self, call: _protocol.Call[T], timeout: float | None) -> T:
        try:
            response = await self._callable(call)(call.request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise await self._explain(exc, call.method) from None
        return call.parse(response)

    async def _explain(self, error: grpc.RpcError, method: str) -> MyelinError:
        served = None
        if error.code() is grpc.StatusCode.UNIMPLEMENTED and method != _health.LIST:
            # The wrong address, most likely: ask the server what it does serve.
            with contextlib.suppress(MyelinError):
                served = await self._invoke(_protocol.health_list(), min(self.timeout, 5.0))
        return self._error(error, method, served)


class AsyncGenerationStream:
    """The chunks of one Generate call, from `AsyncClient.generate`: iterate them as they arrive, then
    read `completion`. A failed call raises the MyelinError the client would."""

    def __init__(self, call: Any, client: AsyncClient, method: str) -> None:
        self._call = call
        self._client = client
        self._method = method
        self._accumulator = GenerationAccumulator()

    async def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        try:
            async for message in self._call:
                yield self._accumulator.add(message)
        except grpc.RpcError as exc:
            raise await self._client._explain(exc, self._method) from None

    @property
    def completion(self) -> Completion | None:
        """The whole text and the finish reason, once the last chunk has arrived (else None)."""
        return self._accumulator.completion

    def cancel(self) -> None:
        """Cancel the call: the service stops generating for it within one decoding step."""
        self._call.cancel()

    async def __aenter__(self) -> AsyncGenerationStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._accumulator.completion is None:
            self.cancel()
