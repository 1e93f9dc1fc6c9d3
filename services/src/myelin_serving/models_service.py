"""The Models servicer every service exposes: list, describe and reload the models it serves."""

from __future__ import annotations

import grpc

from myelin_api.v1 import common_pb2, models_pb2, models_pb2_grpc
from myelin_serving.errors import NotFound
from myelin_serving.repository import ModelManager, ModelVersion, VersionStatus, check_name
from myelin_serving.settings import BatchingSettings

STATES = {
    "LOADING": common_pb2.MODEL_STATE_LOADING,
    "READY": common_pb2.MODEL_STATE_READY,
    "FAILED": common_pb2.MODEL_STATE_FAILED,
    "UNLOADED": common_pb2.MODEL_STATE_UNLOADED,
}
UNLOADED_REASON = "unloaded on request (UnloadModel or RepositoryModelUnload); LoadModel serves it again"


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        return models_pb2.ListModelsResponse(
            models=[describe(self._manager, name, 0) for name in listed(self._manager)]
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

    async def LoadModel(
        self, request: models_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ModelMetadata:
        await self._manager.load_model(request.name)
        return describe(self._manager, request.name, 0)

    async def UnloadModel(
        self, request: models_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.UnloadModelResponse:
        return models_pb2.UnloadModelResponse(unloaded=await self._manager.unload_model(request.name))


def listed(manager: ModelManager) -> list[str]:
    """The models ListModels shows: those loaded (or loading, or failed), and those unloaded on request."""
    return sorted(set(manager.names()) | {name for name in manager.on_disk() if manager.unloaded(name)})


def unloaded_statuses(manager: ModelManager, name: str) -> list[VersionStatus]:
    """A model unloaded on request: its versions on disk, newest first, each UNLOADED."""
    if not manager.unloaded(name):
        return []
    versions = manager.on_disk().get(name, {})
    return [
        VersionStatus(v, "UNLOADED", UNLOADED_REASON, source=entry if isinstance(entry, ModelVersion) else None)
        for v, entry in sorted(versions.items(), reverse=True)
    ]


def describe(manager: ModelManager, name: str, version: int) -> common_pb2.ModelMetadata:
    """Metadata of `version` (0: the newest ready one, else the newest known), with every version's state."""
    check_name(name)
    statuses = manager.statuses(name) or unloaded_statuses(manager, name)
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
            batcher = chosen.model.batchers.get(graph_name)
            if batcher is not None:
                signature.batching.CopyFrom(batching_config(batcher.config))
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


def batching_config(settings: BatchingSettings) -> common_pb2.BatchingConfig:
    fields = common_pb2.BatchingConfig.DESCRIPTOR.fields_by_name
    return common_pb2.BatchingConfig(**{k: v for k, v in settings.model_dump().items() if k in fields})
