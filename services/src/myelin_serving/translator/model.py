"""A loaded translator version: tokenizer, limits, request checks and its steps. No gRPC here."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from myelin_serving.errors import InvalidArgument
from myelin_serving.metrics import Metrics
from myelin_serving.repository import LoadContext, LoadedModel, ModelVersion
from myelin_serving.runtime import OnnxGraph
from myelin_serving.translator.search import Hypothesis, SearchOptions
from myelin_serving.translator.settings import TranslatorSettings
from myelin_serving.translator.steps import StepConfig, TranslatorSteps

ENCODER, DECODER = "encoder", "decoder"
DEFAULT_LENGTH_PENALTY = 0.6
# Requests with more characters than this are tokenized on a worker thread, not on the event loop.
INLINE_TOKENIZE_CHARS = 16 * 1024
MAX_LENGTH_PENALTY = 2.0


@dataclass(frozen=True)
class BeamResult:
    """One hypothesis of the search, detokenised."""

    text: str
    score: float
    log_probability: float
    tokens: int
    finished: bool


@dataclass(frozen=True)
class TranslationResult:
    text: str
    score: float
    log_probability: float
    tokens: int
    source_truncated: bool
    finished: bool
    beams: tuple[BeamResult, ...] = ()  # every hypothesis, best first (the first is this one): when asked


@dataclass(frozen=True)
class Limits:
    max_source_tokens: int
    max_output_tokens: int
    max_beam_size: int
    default_beam_size: int
    max_sentences: int


class OnnxStepGraphs:
    """The two onnxruntime sessions behind the step loop, timed into the shared metrics.

    The encoder's outputs and the decoder's caches stay in the graphs' `tensors` (on the device,
    with IO binding); only the log-probabilities come back to the host.
    """

    def __init__(self, encoder: OnnxGraph, decoder: OnnxGraph, *, model: str, version: int, metrics: Metrics | None):
        self.encoder, self.decoder = encoder, decoder
        self.tensors = decoder.tensors  # the encoder's too: one per device (runtime.bound_tensors)
        self._labels = (model, str(version))
        self._metrics = metrics

    def encode(self, source_ids: np.ndarray, source_mask: np.ndarray) -> tuple[Any, Any]:
        feeds = {"source_ids": source_ids, "source_mask": source_mask}
        _, out = self._run(self.encoder, feeds, [], ["cross_keys", "cross_values"])
        return out["cross_keys"], out["cross_values"]

    def decode(self, feeds: dict[str, Any]) -> tuple[np.ndarray, Any, Any]:
        host, out = self._run(self.decoder, feeds, ["log_probs"], ["present_keys", "present_values"])
        return host["log_probs"], out["present_keys"], out["present_values"]

    def _run(
        self, graph: OnnxGraph, feeds: dict[str, Any], fetch: list[str], keep: list[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        started = time.perf_counter()
        result = self.tensors.run(graph.session, feeds, fetch, keep)
        if self._metrics is not None:
            model, version = self._labels
            self._metrics.inference_duration.labels(model, version).observe(time.perf_counter() - started)
            self._metrics.executions.labels(model).inc()
            self._metrics.batch_size.labels(model).observe(next(iter(feeds.values())).shape[0])
        return result


class TranslatorModel(LoadedModel):
    def __init__(
        self,
        version: ModelVersion,
        graphs: OnnxStepGraphs,
        tokenizer: Tokenizer,
        limits: Limits,
        loop: TranslatorSteps,
        special: dict[str, int],
    ) -> None:
        super().__init__(version, {ENCODER: graphs.encoder, DECODER: graphs.decoder}, {})
        self.tokenizer = tokenizer
        self.limits = limits
        self.loop = loop
        self.special = special
        # No subword is longer than this many characters: a longer sentence cannot fit the limit.
        self._max_token_chars = max(len(t) for t in tokenizer.get_vocab()) + 1

    async def translate(
        self,
        sentences: Sequence[str],
        *,
        beam_size: int | None,
        max_length: int | None,
        length_penalty: float | None,
        truncate: bool,
        timeout: float | None,
        beams: bool = False,
    ) -> list[TranslationResult]:
        options = self._options(len(sentences), beam_size, length_penalty)
        if sum(map(len, sentences)) > INLINE_TOKENIZE_CHARS:  # 256 long sentences take ~0.1 s
            sources, truncated = await asyncio.to_thread(self._tokenize, sentences, truncate)
        else:
            sources, truncated = self._tokenize(sentences, truncate)
        eos = self.special["eos_id"]
        if max_length is not None and not 1 <= max_length <= self.limits.max_output_tokens:
            raise InvalidArgument(
                f"max_length must be between 1 and {self.limits.max_output_tokens} tokens, got {max_length}"
            )
        # One search per sentence; its max_length follows the source unless the request fixed it.
        items = [
            (
                np.asarray([*ids, eos], dtype=np.int64),
                SearchOptions(
                    options.beam_size,
                    max_length or min(self.limits.max_output_tokens, 2 * len(ids) + 10),
                    options.length_penalty,
                ),
            )
            for ids in sources
        ]
        searched = await self.loop.search(items, timeout=timeout)
        results: list[TranslationResult] = []
        for ranked, cut in zip(searched, truncated, strict=True):
            answers = tuple(self._beam(h) for h in (ranked if beams else ranked[:1]))
            best = answers[0]
            results.append(
                TranslationResult(
                    text=best.text,
                    score=best.score,
                    log_probability=best.log_probability,
                    tokens=best.tokens,
                    source_truncated=cut,
                    finished=best.finished,
                    beams=answers if beams else (),
                )
            )
        return results

    def _beam(self, hypothesis: Hypothesis) -> BeamResult:
        return BeamResult(
            text=self.tokenizer.decode(list(hypothesis.tokens), skip_special_tokens=True),
            score=hypothesis.score,
            log_probability=hypothesis.log_probability,
            tokens=hypothesis.length,
            finished=hypothesis.finished,
        )

    def _options(self, count: int, beam_size: int | None, length_penalty: float | None) -> SearchOptions:
        if count == 0:
            raise InvalidArgument("sentences is empty: send at least one sentence")
        if count > self.limits.max_sentences:
            raise InvalidArgument(
                f"{count} sentences in one request; the limit is {self.limits.max_sentences}: split the batch"
            )
        beam = self.limits.default_beam_size if beam_size is None else beam_size
        if not 1 <= beam <= self.limits.max_beam_size:
            raise InvalidArgument(
                f"beam_size must be between 1 (greedy) and {self.limits.max_beam_size}, got {beam_size}"
            )
        alpha = DEFAULT_LENGTH_PENALTY if length_penalty is None else length_penalty
        if not (math.isfinite(alpha) and 0.0 <= alpha <= MAX_LENGTH_PENALTY):
            raise InvalidArgument(f"length_penalty must be a number in [0, {MAX_LENGTH_PENALTY}], got {length_penalty}")
        return SearchOptions(beam, 0, alpha)

    def _tokenize(self, sentences: Sequence[str], truncate: bool) -> tuple[list[list[int]], list[bool]]:
        limit = self.limits.max_source_tokens
        sources: list[list[int]] = []
        truncated: list[bool] = []
        for i, sentence in enumerate(sentences):
            if not sentence.strip():
                raise InvalidArgument(f"sentences[{i}] is empty: send text to translate")
            chars = limit * self._max_token_chars
            if len(sentence) > chars and not truncate:
                raise self._too_long(i, f"more than {limit}")
            ids = self.tokenizer.encode(sentence[:chars], add_special_tokens=False).ids
            if not ids:
                raise InvalidArgument(f"sentences[{i}] has no translatable text")
            if len(ids) > limit and not truncate:
                raise self._too_long(i, str(len(ids)))
            sources.append(ids[:limit])
            truncated.append(len(ids) > limit or len(sentence) > chars)
        return sources, truncated

    def _too_long(self, index: int, count: str) -> InvalidArgument:
        return InvalidArgument(
            f"sentences[{index}] is {count} subword tokens long; this model takes at most "
            f"{self.limits.max_source_tokens} (max_source_tokens): shorten it, or set truncate to cut it"
        )

    async def close(self) -> None:
        await self.loop.close()
        await super().close()


def _limits(version: ModelVersion, settings: TranslatorSettings, max_sentences: int) -> Limits:
    manifest: dict[str, Any] = version.manifest.serving.get("limits", {})
    model_source = int(manifest.get("max_source_tokens", 0))
    max_output = int(manifest.get("max_output_tokens", 0))
    if model_source < 1 or max_output < 1:
        raise ValueError(f"{version.name}: model.json needs serving.limits.max_source_tokens and max_output_tokens")
    source = min(model_source, settings.max_source_tokens) if settings.max_source_tokens else model_source
    return Limits(source, max_output, settings.max_beam_size, settings.default_beam_size, max_sentences)


async def load(version: ModelVersion, context: LoadContext) -> TranslatorModel:
    extra = version.manifest.model_extra or {}
    tokenizer_info: dict[str, Any] = extra.get("tokenizer", {})
    decoding: dict[str, Any] = extra.get("decoding", {})
    tokenizer_file = str(tokenizer_info.get("file", "tokenizer.json"))
    if "/" in tokenizer_file or "\\" in tokenizer_file:
        raise ValueError(f"{version.name}: tokenizer file {tokenizer_file!r} must be a plain file name")
    tokenizer = await asyncio.to_thread(Tokenizer.from_file, str(version.path / tokenizer_file))
    special = {key: int(tokenizer_info[key]) for key in ("pad_id", "bos_id", "eos_id")}
    encoder = await context.open_graph(version, ENCODER)
    decoder = await context.open_graph(version, DECODER)
    names = {i.name for i in decoder.inputs}
    if names != {
        "input_ids",
        "position_ids",
        "past_keys",
        "past_values",
        "past_mask",
        "cross_keys",
        "cross_values",
        "source_mask",
    }:
        raise ValueError(f"{version.name}: decoder.onnx inputs are {sorted(names)}, not a translator decoder step")
    settings = context.settings
    options = context.settings_of(TranslatorSettings)
    limits = _limits(version, options, settings.max_request_batch if settings is not None else 256)
    graphs = OnnxStepGraphs(encoder, decoder, model=version.name, version=version.version, metrics=context.metrics)
    layers, heads, head_dim = (int(decoding[k]) for k in ("num_layers", "num_heads", "head_dim"))
    step_config = StepConfig(
        layers=layers,
        heads=heads,
        head_dim=head_dim,
        bos_id=special["bos_id"],
        eos_id=special["eos_id"],
        pad_id=special["pad_id"],
        max_active_rows=options.max_active_rows,
        max_pending=options.max_pending_sentences,
    )
    # Warm-up before the version is marked ready: the first runs allocate. Shapes like real steps.
    ids = np.full((2, 3), special["eos_id"], dtype=np.int64)
    cross_keys, cross_values = await asyncio.to_thread(graphs.encode, ids, ids > -1)
    empty = np.zeros((2, layers, heads, 0, head_dim), dtype=np.float32)
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.full((2, 1), special["bos_id"], dtype=np.int64),
        "position_ids": np.zeros((2, 1), dtype=np.int64),
        "past_keys": empty,
        "past_values": empty,
        "past_mask": np.zeros((2, 0), dtype=bool),
        "cross_keys": cross_keys,
        "cross_values": cross_values,
        "source_mask": ids > -1,
    }
    await asyncio.to_thread(graphs.decode, feeds)
    loop = TranslatorSteps(
        graphs, step_config, model=version.name, metrics=context.family_metrics, tensors=graphs.tensors
    )
    model = TranslatorModel(version, graphs, tokenizer, limits, loop, special)
    # What a KServe caller may feed each graph: ids in the vocabulary, positions in the position table.
    positions = int(decoding.get("max_positions") or max(limits.max_source_tokens, limits.max_output_tokens) + 1)
    target_vocabulary = int(decoder.outputs[0].shape[-1])  # log_probs (B, vocab)
    model.input_limits[ENCODER] = context.graph_limits(
        version, axes={"source": (1, positions)}, values={"source_ids": (0, tokenizer.get_vocab_size() - 1)}
    )
    model.input_limits[DECODER] = context.graph_limits(
        version,
        axes={"new": (1, positions), "past": (0, positions - 1), "source": (1, positions)},
        values={"input_ids": (0, target_vocabulary - 1), "position_ids": (0, positions - 1)},
    )
    return model
