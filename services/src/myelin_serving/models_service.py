"""The Models servicer every service exposes: list, describe and reload the models it serves."""

from __future__ import annotations

import grpc

from myelin_api.v1 import common_pb2, models_pb2, models_pb2_grpc
from myelin_serving.errors import NotFound
from myelin_serving.repository import ModelManager, VersionStatus, check_name

STATES = {
    "LOADING": common_pb2.MODEL_STATE_LOADING,
    "READY": common_pb2.MODEL_STATE_READY,
    "FAILED": common_pb2.MODEL_STATE_FAILED,
}


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        return models_pb2.ListModelsResponse(
            models=[describe(self._manager, name, 0) for name in self._manager.names()]
        )

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ModelMetadata:
        return describe(self._manager, request.model.name, request.model.version)

    async def ReloadModels(
        self, request: models_pb2.ReloadModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ReloadModelsResponse:
        report = await self._manager.refresh()
        return models_pb2.ReloadModelsResponse(loaded=report.loaded, unloaded=report.unloaded, failed=report.failed)


def describe(manager: ModelManager, name: str, version: int) -> common_pb2.ModelMetadata:
    """Metadata of `version` (0: the newest ready one, else the newest known), with every version's state."""
    check_name(name)
    statuses = manager.statuses(name)
    if not statuses:
        raise NotFound(f"model {name!r} not found; this service serves: {', '.join(manager.names()) or 'none yet'}")
    chosen = _choose(name, statuses, version)
    metadata = common_pb2.ModelMetadata(
        name=name,
        version=chosen.version,
        family=manager.family,
        versions=[
            common_pb2.ModelVersionStatus(version=s.version, state=STATES[s.state], reason=s.reason) for s in statuses
        ],
    )
    source = chosen.source
    if source is not None:
        metadata.architecture = source.manifest.architecture
        metadata.labels.extend(source.manifest.labels)
        for key, value in source.manifest.evaluation.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metadata.evaluation[key] = float(value)
        metadata.manifest_json = source.manifest_json  # compacted once, when the manifest was read
    if chosen.model is not None:
        metadata.execution_provider = chosen.model.provider
        for graph_name, graph in chosen.model.graphs.items():
            signature = metadata.graphs[graph_name]
            signature.inputs.extend(
                common_pb2.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape) for t in graph.inputs
            )
            signature.outputs.extend(
                common_pb2.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape) for t in graph.outputs
            )
    return metadata


def _choose(name: str, statuses: list[VersionStatus], version: int) -> VersionStatus:
    if version:
        for status in statuses:
            if status.version == version:
                return status
        raise NotFound(
            f"model {name!r} has no version {version}; versions: {', '.join(str(s.version) for s in statuses)}"
        )
    return next((s for s in statuses if s.model is not None), statuses[0])
