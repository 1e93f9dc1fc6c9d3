"""Requests and responses for every client method, shared by Client and AsyncClient.

Each method is described once as a `Call`: which RPC, the request message, and how to turn the
response into the dataclasses of `types.py`. The two clients only differ in how they await it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from myelin_api.v1 import classifier_pb2, common_pb2, generator_pb2, models_pb2
from myelin_client import _health
from myelin_client.images import to_images
from myelin_client.types import (
    Classification,
    ClassifyResult,
    Completion,
    GenerationChunk,
    LabelProbability,
    ModelInfo,
    ReloadResult,
    TensorSpec,
    VersionStatus,
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
    prompt: str,
    *,
    model: str,
    version: int,
    max_new_tokens: int,
    temperature: float | None,
    top_k: int,
    top_p: float | None,
    repetition_penalty: float | None,
    seed: int | None,
    stop: str | list[str] | tuple[str, ...] | None,
) -> generator_pb2.GenerateRequest:
    # Unset optional fields take the service defaults (temperature 1, top_p 1, penalty 1, random seed).
    request = generator_pb2.GenerateRequest(
        model=common_pb2.ModelRef(name=model, version=version),
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        stop=[stop] if isinstance(stop, str) else list(stop or ()),
    )
    if temperature is not None:
        request.temperature = temperature
    if top_p is not None:
        request.top_p = top_p
    if repetition_penalty is not None:
        request.repetition_penalty = repetition_penalty
    if seed is not None:
        request.seed = seed
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


def health(service: str) -> Call[str]:
    return Call(
        _health.CHECK,
        _health.HealthCheckRequest(service=service),
        _health.HealthCheckResponse,
        lambda r: _health.STATUS_NAMES.get(r.status, "UNKNOWN"),
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
    )
