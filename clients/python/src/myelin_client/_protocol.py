"""Requests and responses for every client method, shared by Client and AsyncClient.

Each method is described once as a `Call`: which RPC, the request message, and how to turn the
response into the dataclasses of `types.py`. The two clients only differ in how they await it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from myelin_api.v1 import classifier_pb2, common_pb2, models_pb2, translator_pb2
from myelin_client import _health
from myelin_client.images import to_images
from myelin_client.types import (
    Classification,
    ClassifyResult,
    LabelProbability,
    ModelInfo,
    ReloadResult,
    TensorSpec,
    TranslateResult,
    Translation,
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


def translate(
    sentences: str | Sequence[str],
    *,
    model: str,
    version: int,
    beam_size: int | None,
    max_length: int | None,
    length_penalty: float | None,
    truncate: bool,
) -> Call[TranslateResult]:
    if isinstance(sentences, str):
        sentences = [sentences]
    request = translator_pb2.TranslateRequest(
        model=common_pb2.ModelRef(name=model, version=version), sentences=list(sentences), truncate=truncate
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
            Translation(t.text, t.score, t.log_probability, t.tokens, t.source_truncated, t.finished)
            for t in response.translations
        ],
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
