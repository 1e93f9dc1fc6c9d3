"""A loaded generator version: its tokenizer, step graph, decoding loop and request checks. No gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from myelin_serving.errors import InvalidArgument, Unavailable
from myelin_serving.generator.cache import CacheBatch, KVCacheBatch, StateBatch
from myelin_serving.generator.sampling import ForcedTokens, Sampler, SamplingParams
from myelin_serving.generator.settings import GenerationSettings
from myelin_serving.generator.steps import Chunk, GeneratorSteps, Sequence
from myelin_serving.generator.text import IncrementalDecoder, StopMatcher, TextCodec
from myelin_serving.limits import GraphLimits
from myelin_serving.repository import LoadContext, LoadedModel, ModelVersion
from myelin_serving.runtime import OnnxGraph

GRAPH = "step"


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_new_tokens: int = 0  # 0: the default, capped by the context left
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)


class GeneratorModel(LoadedModel):
    def __init__(
        self,
        version: ModelVersion,
        context: LoadContext,
        batch: CacheBatch,
        codec: TextCodec,
        max_context: int,
    ) -> None:
        super().__init__(version, {GRAPH: batch.graph}, {})
        self.codec = codec
        self.limits = context.settings_of(GenerationSettings)
        self.max_context = max_context
        self.banned = [] if codec.unk_id is None else [codec.unk_id]
        self.loop = GeneratorSteps(
            batch,
            model=version.name,
            version=version.version,
            max_sequences=self.limits.max_sequences,
            stream_interval=self.limits.stream_interval_ms / 1000,
            metrics=context.family_metrics,
        )

    def start(self, request: GenerationRequest, *, timeout: float | None) -> Sequence:
        """Check the request, and queue its sequence for the next step. Raises InvalidArgument/Overloaded."""
        sampling = request.sampling.validated(self.codec.vocab_size)
        stops = self._check_stops(request.stop)
        max_prompt = min(self.limits.max_prompt_tokens, self.max_context - 1)
        prompt = self.codec.encode_prompt(request.prompt, max_prompt)
        if len(prompt) > max_prompt:
            raise InvalidArgument(
                f"the prompt is {len(prompt)} tokens; this model takes at most {max_prompt}: shorten it"
            )
        room = self.max_context - len(prompt)
        max_new = request.max_new_tokens or min(self.limits.default_max_new_tokens, room)
        if max_new > room:
            raise InvalidArgument(
                f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new}) exceed the context of "
                f"{self.max_context} tokens: ask for at most {room} new tokens"
            )
        if timeout is not None and timeout <= 0:
            raise InvalidArgument("the deadline has already passed")
        sampler = Sampler(sampling, self.codec.vocab_size, prompt, self.banned)
        decoder, matcher = IncrementalDecoder(self.codec), StopMatcher(stops)

        def emit(token: int) -> tuple[str, str | None]:
            text = matcher.feed(decoder.add(token))
            return text, matcher.matched

        def finish_text() -> str:
            return matcher.feed(decoder.flush()) + matcher.flush()

        sequence = Sequence(
            prompt=prompt,
            max_new_tokens=max_new,
            seed=int(sampling.seed or 0),
            sampler=sampler,
            emit=emit,
            finish_text=finish_text,
            deadline=None if timeout is None else time.monotonic() + timeout,
        )
        self.loop.submit(sequence)
        return sequence

    async def stream(self, sequence: Sequence) -> AsyncIterator[Chunk]:
        """The sequence's chunks as they come; leaving early (cancel, error) takes it out of the batch."""
        try:
            async for chunk in sequence.chunks():
                yield chunk
        finally:
            self.loop.cancel(sequence)

    async def complete(self, request: GenerationRequest, *, timeout: float | None) -> Chunk:
        sequence = self.start(request, timeout=timeout)
        text: list[str] = []
        tokens: list[int] = []
        async for chunk in self.stream(sequence):
            text.append(chunk.text)
            tokens.extend(chunk.token_ids)
            if chunk.finish is not None:
                return Chunk("".join(text), tokens, chunk.finish)
        raise AssertionError("a sequence always ends with a finish chunk")  # pragma: no cover

    async def score(self, text: str, *, timeout: float | None) -> tuple[list[int], list[float]]:
        """The text's tokens and, for each after the first, its log-probability after those before it."""
        # The last token is predicted, never fed: the context holds one fewer.
        limit = min(self.limits.max_prompt_tokens, self.max_context) + 1
        too_long = len(text) > limit * self.codec.longest_token  # known before tokenizing it
        tokens = [] if too_long else self.codec.encode_text(text)
        if too_long or not 2 <= len(tokens) <= limit:
            size = f"{len(text):,} characters" if too_long else f"{len(tokens)} tokens"
            raise InvalidArgument(
                f"the text is {size}; scoring takes 2 tokens (the first is context only) to {limit} "
                "(the model's context + 1): split it into windows"
            )
        if timeout is not None and timeout <= 0:
            raise InvalidArgument("the deadline has already passed")
        forced = ForcedTokens(tokens[1:])
        sequence = Sequence(
            prompt=tokens[:1],
            max_new_tokens=len(tokens) - 1,
            seed=0,
            sampler=forced,
            emit=lambda token: ("", None),
            finish_text=lambda: "",
            deadline=None if timeout is None else time.monotonic() + timeout,
        )
        self.loop.submit(sequence)
        async for chunk in self.stream(sequence):
            if chunk.finish is not None:
                break
        if len(forced.logprobs) != len(tokens) - 1:  # stopped early: the version is being unloaded
            raise Unavailable(f"model {self.name} version {self.version} stopped scoring (it is being unloaded); retry")
        return tokens, forced.logprobs

    def _check_stops(self, stops: list[str]) -> list[str]:
        if len(stops) > self.limits.max_stop_sequences:
            raise InvalidArgument(f"{len(stops)} stop sequences; at most {self.limits.max_stop_sequences} are allowed")
        for i, stop in enumerate(stops):
            if not 1 <= len(stop) <= self.limits.max_stop_length:
                raise InvalidArgument(
                    f"stop[{i}] must be 1 to {self.limits.max_stop_length} characters, got {len(stop)}"
                )
        return list(stops)

    async def close(self) -> None:
        await self.loop.close(self.limits.drain_timeout_s)


async def load(version: ModelVersion, context: LoadContext) -> GeneratorModel:
    manifest: dict[str, Any] = version.manifest.model_dump()
    decoder, tokenizer = manifest.get("decoder"), manifest.get("tokenizer")
    if not isinstance(decoder, dict) or not isinstance(tokenizer, dict):
        raise ValueError(f"{version.name}: a generator manifest needs `decoder` and `tokenizer` sections")
    generation = context.settings_of(GenerationSettings)
    # The step graph's intra-op threads spin during a step (generation.step_spinning): decoding has
    # its own thread, and on 2 cores a one-row step took 0.28 ms spinning against 0.53 ms not
    # (0.40 ms on one thread), an 8-row step 1.0 ms against 1.45 ms.
    runtime = dataclasses.replace(context.runtime, spinning=context.runtime.spinning or generation.step_spinning)
    graph = await asyncio.to_thread(OnnxGraph, version.graph_path(GRAPH), runtime)
    codec = await asyncio.to_thread(
        TextCodec,
        version.path / _plain(tokenizer["file"]),
        unk_id=tokenizer.get("unk_id"),
        start_text=tokenizer.get("start_text") or "\n",
    )
    batch: CacheBatch
    limits: GraphLimits
    if decoder["cache"] == "kv":
        if decoder.get("cache_update") != "caller" or decoder.get("slot_axis") != {"key": 3, "value": 2}:
            raise ValueError(
                f"{version.name}: its step graph has an older cache layout (exported before the read-only, "
                "key-transposed cache); export it again: myelin-train generator-export --run-dir RUN --repository DIR"
            )
        shape = decoder["cache_shape"]
        batch = KVCacheBatch(
            graph,
            inputs=list(decoder["cache_inputs"]),
            outputs=list(decoder["cache_outputs"]),
            slot_axes=[decoder["slot_axis"][name.rsplit(".", 1)[1]] for name in decoder["cache_inputs"]],
            heads=shape["heads"],
            head_dim=shape["head_dim"],
        )
        max_context = min(int(decoder["context"]), generation.max_context_tokens)
        limits = _kv_limits(version, context, graph, int(decoder["context"]), decoder["cache_inputs"])
    elif decoder["cache"] == "state":
        shape = decoder["state_shape"]
        batch = StateBatch(graph, layers=shape["layers"], hidden=shape["hidden"])
        max_context = generation.max_context_tokens
        # A KServe caller feeds at most a prompt's worth of tokens per call (the state carries the rest):
        # 256 rows x 4,096 tokens took the dry-run GRU 700 MB above idle, 256 x 1,024 a quarter of it.
        tokens = min(max_context, generation.max_prompt_tokens)
        limits = context.graph_limits(
            version, axes={"sequence": (1, tokens)}, values={"input_ids": (0, _vocabulary(graph) - 1)}
        )
    else:
        raise ValueError(f"{version.name}: unknown decoder cache {decoder['cache']!r} (kv or state)")
    # Warm-up before the version is marked ready: a prompt, then a few steps at two rows and at one.
    prompts = [[0, 1, 2], [3]]
    _, rows = await asyncio.to_thread(batch.prefill, prompts)
    batch.join(rows)
    for keep in ([0, 1], [0, 1], [0, 1], [0], [0], [0]):
        batch.keep(keep)
        await asyncio.to_thread(batch.step, np.zeros(batch.rows, dtype=np.int64))
    batch.keep([])
    model = GeneratorModel(version, context, batch, codec, max_context)
    model.input_limits[GRAPH] = limits
    return model


def _vocabulary(graph: OnnxGraph) -> int:
    """Token ids the step graph embeds: its logits' last axis (B, vocab)."""
    logits = next(o for o in graph.outputs if o.name == "logits")
    return int(logits.shape[-1])


def _kv_limits(
    version: ModelVersion, context: LoadContext, graph: OnnxGraph, positions: int, cache_inputs: list[str]
) -> GraphLimits:
    """What a KServe caller may feed the GPT step graph: ids in the vocabulary, at least one token,
    every position inside the position table, `padding` and `length` that describe the cache sent.
    Row b's inputs sit at slots length .. length + T - 1 and its real tokens start at padding[b]."""
    value_cache = next(name for name in cache_inputs if name.endswith(".value"))  # (B, H, S, D)

    def relations(feeds: Mapping[str, np.ndarray]) -> None:
        tokens, length = feeds["input_ids"].shape[1], int(feeds["length"])
        slots, padding = feeds[value_cache].shape[2], feeds["padding"]
        if length > slots:
            raise InvalidArgument(f"length is {length} but the cache has {slots} slots: length counts filled slots")
        last = length + tokens - 1  # the slot of the last input, real in every row
        if int(padding.max()) > last:
            raise InvalidArgument(f"padding must leave the last input real: at most {last} for these inputs")
        if last - int(padding.min()) >= positions:
            raise InvalidArgument(
                f"the inputs reach position {last - int(padding.min())}; this model's positions end at {positions - 1}"
            )

    return context.graph_limits(
        version,
        axes={"sequence": (1, positions), "slots": (0, positions)},
        values={"input_ids": (0, _vocabulary(graph) - 1), "padding": (0, positions - 1), "length": (0, positions - 1)},
        relations=relations,
    )


def _plain(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"tokenizer file {name!r} must be a plain file name inside the version folder")
    return name
