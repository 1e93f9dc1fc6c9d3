"""Requests and responses for every client method, shared by Client and AsyncClient.

Each method is described once as a `Call`: which RPC, the request message, and how to turn the
response into the dataclasses of `types.py`. The two clients only differ in how they await it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from myelin_api.v1 import classifier_pb2, common_pb2, embedder_pb2, generator_pb2, models_pb2, translator_pb2
from myelin_client import _health
from myelin_client.images import to_images
from myelin_client.types import (
    AnalogyAnswer,
    AnalogyResult,
    Batching,
    Beam,
    Classification,
    ClassifyResult,
    Completion,
    DoesntMatchResult,
    EmbedResult,
    GenerationChunk,
    GenerationOptions,
    LabelProbability,
    ModelInfo,
    Neighbour,
    NeighboursResult,
    PairSimilarity,
    ReloadResult,
    ScoreResult,
    SimilarityResult,
    TensorSpec,
    TranslateResult,
    Translation,
    VersionStatus,
    WordVector,
)

T = TypeVar("T")

STATES = {
    common_pb2.MODEL_STATE_LOADING: "LOADING",
    common_pb2.MODEL_STATE_READY: "READY",
    common_pb2.MODEL_STATE_FAILED: "FAILED",
    common_pb2.MODEL_STATE_UNLOADED: "UNLOADED",
}


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str  # full gRPC method path
    request: Any
    response_type: Any
    parse: Callable[[Any], T]


def classify(images: Any, *, model: str, version: int, top_k: int) -> Call[ClassifyResult]:
    request = classifier_pb2.ClassifyRequest(
        model=common_pb2.ModelRef(name=model, version=version), images=to_images(images), top_k=top_k
    )
    return Call("/myelin_api.v1.Classifier/Classify", request, classifier_pb2.ClassifyResponse, _classify_result)


def _classify_result(response: classifier_pb2.ClassifyResponse) -> ClassifyResult:
    return ClassifyResult(
        model=response.model.name,
        version=response.model.version,
        classifications=[
            Classification([LabelProbability(p.label, p.index, p.probability) for p in c.labels])
            for c in response.classifications
        ],
    )


@dataclass(frozen=True)
class StreamCall:
    """A server-streaming RPC: the request, and the type of each message."""

    method: str
    request: Any
    response_type: Any


FINISH_REASONS = {
    generator_pb2.FINISH_REASON_LENGTH: "length",
    generator_pb2.FINISH_REASON_STOP: "stop",
    generator_pb2.FINISH_REASON_CANCELLED: "cancelled",
}


def generate_request(
    prompt: str, *, model: str, version: int, options: GenerationOptions
) -> generator_pb2.GenerateRequest:
    unknown = sorted(set(options) - set(GenerationOptions.__annotations__))
    if unknown:
        # What Python says of an unknown keyword argument: the options arrive as **options.
        names = ", ".join(GenerationOptions.__annotations__)
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}; the generation options are {names}")
    stop = options.get("stop")
    request = generator_pb2.GenerateRequest(
        model=common_pb2.ModelRef(name=model, version=version),
        prompt=prompt,
        max_new_tokens=options.get("max_new_tokens", 0),
        top_k=options.get("top_k", 0),
        stop=[stop] if isinstance(stop, str) else list(stop or ()),
    )
    # Unset optional fields take the service defaults (temperature 1, top_p 1, penalty 1, random seed).
    for name in ("temperature", "top_p", "repetition_penalty", "seed"):
        value = options.get(name)
        if value is not None:
            setattr(request, name, value)
    return request


def generate(request: generator_pb2.GenerateRequest) -> StreamCall:
    return StreamCall("/myelin_api.v1.Generator/Generate", request, generator_pb2.GenerateResponse)


def complete(request: generator_pb2.GenerateRequest) -> Call[Completion]:
    return Call(
        "/myelin_api.v1.Generator/Complete",
        request,
        generator_pb2.CompleteResponse,
        lambda r: completion(r.model, r.text, list(r.token_ids), r.finish),
    )


def score(text: str, *, model: str, version: int) -> Call[ScoreResult]:
    request = generator_pb2.ScoreRequest(model=common_pb2.ModelRef(name=model, version=version), text=text)
    return Call(
        "/myelin_api.v1.Generator/Score",
        request,
        generator_pb2.ScoreResponse,
        lambda r: ScoreResult(r.model.name, r.model.version, list(r.token_ids), list(r.logprobs)),
    )


def completion(model: common_pb2.ModelRef, text: str, token_ids: list[int], finish: generator_pb2.Finish) -> Completion:
    return Completion(
        model=model.name,
        version=model.version,
        text=text,
        token_ids=token_ids,
        finish_reason=FINISH_REASONS.get(finish.reason, "unspecified"),
        prompt_tokens=finish.prompt_tokens,
        generated_tokens=finish.generated_tokens,
        seed=finish.seed,
        stop_sequence=finish.stop_sequence,
    )


class GenerationAccumulator:
    """Turns streamed GenerateResponse messages into chunks, and the last one into a Completion."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.token_ids: list[int] = []
        self.completion: Completion | None = None

    def add(self, message: generator_pb2.GenerateResponse) -> GenerationChunk:
        chunk = GenerationChunk(message.text, list(message.token_ids))
        self.text.append(chunk.text)
        self.token_ids.extend(chunk.token_ids)
        if message.HasField("finish"):
            self.completion = completion(message.model, "".join(self.text), self.token_ids, message.finish)
        return chunk


def translate(
    sentences: str | Sequence[str],
    *,
    model: str,
    version: int,
    beam_size: int | None,
    max_length: int | None,
    length_penalty: float | None,
    truncate: bool,
    beams: bool = False,
) -> Call[TranslateResult]:
    if isinstance(sentences, str):
        sentences = [sentences]
    request = translator_pb2.TranslateRequest(
        model=common_pb2.ModelRef(name=model, version=version),
        sentences=list(sentences),
        truncate=truncate,
        return_beams=beams,
    )
    # Unset options stay unset (presence is tracked): the service applies its defaults.
    if beam_size is not None:
        request.beam_size = beam_size
    if max_length is not None:
        request.max_length = max_length
    if length_penalty is not None:
        request.length_penalty = length_penalty
    return Call("/myelin_api.v1.Translator/Translate", request, translator_pb2.TranslateResponse, _translate_result)


def _translate_result(response: translator_pb2.TranslateResponse) -> TranslateResult:
    return TranslateResult(
        model=response.model.name,
        version=response.model.version,
        translations=[
            Translation(
                t.text,
                t.score,
                t.log_probability,
                t.tokens,
                t.source_truncated,
                t.finished,
                [Beam(b.text, b.score, b.log_probability, b.tokens, b.finished) for b in t.beams],
            )
            for t in response.translations
        ],
    )


EMBEDDER = "/myelin_api.v1.Embedder/"


def _ref(model: str, version: int) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=model, version=version)


def _words(words: str | Sequence[str]) -> list[str]:
    # A lone string is one word, not a sequence of letters.
    return [words] if isinstance(words, str) else list(words)


def _vectors(vectors: Any) -> list[embedder_pb2.Vector]:
    if vectors is None:
        return []
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    return [embedder_pb2.Vector(values=row.tolist()) for row in array.reshape(len(array), -1)]


def _neighbour_list(values: Any) -> list[Neighbour]:
    return [Neighbour(n.word, n.index, n.score) for n in values]


def embed(words: str | Sequence[str], *, model: str, version: int) -> Call[EmbedResult]:
    request = embedder_pb2.EmbedRequest(model=_ref(model, version), words=_words(words))

    def parse(r: embedder_pb2.EmbedResponse) -> EmbedResult:
        vectors = [
            WordVector(v.word, v.index, np.array(v.values, dtype=np.float32) if v.found else None) for v in r.vectors
        ]
        return EmbedResult(r.model.name, r.model.version, r.dim, vectors)

    return Call(EMBEDDER + "Embed", request, embedder_pb2.EmbedResponse, parse)


def most_similar(
    positive: str | Sequence[str],
    negative: str | Sequence[str],
    *,
    positive_vectors: Any,
    negative_vectors: Any,
    model: str,
    version: int,
    top_k: int,
    restrict_vocab: int,
) -> Call[NeighboursResult]:
    request = embedder_pb2.MostSimilarRequest(
        model=_ref(model, version),
        positive=_words(positive),
        negative=_words(negative),
        positive_vectors=_vectors(positive_vectors),
        negative_vectors=_vectors(negative_vectors),
        top_k=top_k,
        restrict_vocab=restrict_vocab,
    )
    return Call(
        EMBEDDER + "MostSimilar",
        request,
        embedder_pb2.MostSimilarResponse,
        lambda r: NeighboursResult(r.model.name, r.model.version, _neighbour_list(r.neighbours)),
    )


def analogies(
    questions: Sequence[tuple[str, str, str]], *, model: str, version: int, top_k: int, restrict_vocab: int
) -> Call[AnalogyResult]:
    asked = [tuple(q) for q in questions]
    for q in asked:
        if len(q) != 3:
            raise ValueError(f"an analogy question is (a, b, c), not {q!r}")
    request = embedder_pb2.AnalogyRequest(
        model=_ref(model, version),
        questions=[embedder_pb2.AnalogyQuestion(a=a, b=b, c=c) for a, b, c in asked],
        top_k=top_k,
        restrict_vocab=restrict_vocab,
    )

    def parse(r: embedder_pb2.AnalogyResponse) -> AnalogyResult:
        answers = [
            AnalogyAnswer((q[0], q[1], q[2]), _neighbour_list(a.candidates), list(a.unknown_words))
            for q, a in zip(asked, r.answers, strict=True)
        ]
        return AnalogyResult(r.model.name, r.model.version, answers)

    return Call(EMBEDDER + "Analogy", request, embedder_pb2.AnalogyResponse, parse)


def similarity(pairs: Sequence[tuple[str, str]], *, model: str, version: int) -> Call[SimilarityResult]:
    asked = [tuple(p) for p in pairs]
    for p in asked:
        if len(p) != 2:
            raise ValueError(f"a similarity pair is (first, second), not {p!r}")
    request = embedder_pb2.SimilarityRequest(
        model=_ref(model, version), pairs=[embedder_pb2.WordPair(first=a, second=b) for a, b in asked]
    )

    def parse(r: embedder_pb2.SimilarityResponse) -> SimilarityResult:
        results = [
            PairSimilarity(p[0], p[1], s.similarity if s.found else None, list(s.unknown_words))
            for p, s in zip(asked, r.similarities, strict=True)
        ]
        return SimilarityResult(r.model.name, r.model.version, results)

    return Call(EMBEDDER + "Similarity", request, embedder_pb2.SimilarityResponse, parse)


def doesnt_match(words: Sequence[str], *, model: str, version: int) -> Call[DoesntMatchResult]:
    asked = _words(words)
    request = embedder_pb2.DoesntMatchRequest(model=_ref(model, version), words=asked)
    return Call(
        EMBEDDER + "DoesntMatch",
        request,
        embedder_pb2.DoesntMatchResponse,
        lambda r: DoesntMatchResult(
            r.model.name, r.model.version, r.word, dict(zip(asked, r.similarities, strict=True))
        ),
    )


def list_models() -> Call[list[ModelInfo]]:
    return Call(
        "/myelin_api.v1.Models/ListModels",
        models_pb2.ListModelsRequest(),
        models_pb2.ListModelsResponse,
        lambda r: [model_info(m) for m in r.models],
    )


def get_model(name: str, version: int) -> Call[ModelInfo]:
    request = models_pb2.GetModelRequest(model=common_pb2.ModelRef(name=name, version=version))
    return Call("/myelin_api.v1.Models/GetModel", request, common_pb2.ModelMetadata, model_info)


def reload_models() -> Call[ReloadResult]:
    return Call(
        "/myelin_api.v1.Models/ReloadModels",
        models_pb2.ReloadModelsRequest(),
        models_pb2.ReloadModelsResponse,
        lambda r: ReloadResult(list(r.loaded), list(r.unloaded), list(r.failed)),
    )


def load_model(name: str) -> Call[ModelInfo]:
    request = models_pb2.LoadModelRequest(name=name)
    return Call("/myelin_api.v1.Models/LoadModel", request, common_pb2.ModelMetadata, model_info)


def unload_model(name: str) -> Call[list[str]]:
    return Call(
        "/myelin_api.v1.Models/UnloadModel",
        models_pb2.UnloadModelRequest(name=name),
        models_pb2.UnloadModelResponse,
        lambda r: list(r.unloaded),
    )


def health(service: str) -> Call[str]:
    return Call(
        _health.CHECK,
        _health.HealthCheckRequest(service=service),
        _health.HealthCheckResponse,
        lambda r: _health.STATUS_NAMES.get(r.status, "UNKNOWN"),
    )


def health_list() -> Call[list[str]]:
    """The services the server reports health for: what it serves ("" is the whole server: left out)."""
    return Call(
        _health.LIST,
        _health.HealthListRequest(),
        _health.HealthListResponse,
        lambda r: sorted(name for name in r.statuses if name),
    )


def model_info(m: common_pb2.ModelMetadata) -> ModelInfo:
    def specs(values: Any) -> list[TensorSpec]:
        return [TensorSpec(v.name, v.datatype, list(v.shape)) for v in values]

    return ModelInfo(
        name=m.name,
        version=m.version,
        family=m.family,
        architecture=m.architecture,
        labels=list(m.labels),
        evaluation=dict(m.evaluation),
        versions=[VersionStatus(v.version, STATES.get(v.state, "UNKNOWN"), v.reason) for v in m.versions],
        execution_provider=m.execution_provider,
        inputs={name: specs(g.inputs) for name, g in m.graphs.items()},
        outputs={name: specs(g.outputs) for name, g in m.graphs.items()},
        manifest_json=m.manifest_json,
        batching={name: _batching(g.batching) for name, g in m.graphs.items() if g.HasField("batching")},
    )


def _batching(b: common_pb2.BatchingConfig) -> Batching:
    return Batching(
        b.enabled,
        b.max_batch_size,
        b.max_queue_delay_us,
        b.adaptive_delay,
        b.max_queue_size,
        b.queue_timeout_s,
        b.instances,
    )
