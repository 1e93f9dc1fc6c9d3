"""The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`) over the model repository.

Every service registers it, so any KServe v2 client (tritonclient, the KServe SDK, grpcurl) reaches
every ONNX graph the service has loaded, without our protos.

Naming: a version with one graph (the classifiers' `model.onnx`) is the endpoint `<model>`; a
version with several graphs (an encoder-decoder's `encoder` and `decoder`) has one endpoint per
graph, `<model>.<graph>`. `<model>.<graph>` also works for single-graph versions. An exact model
name wins over the split, so a model called `a.b` is never read as graph `b` of model `a`. The
version is a decimal string; empty means the newest ready version.

Before anything runs, every input is checked against the graph (tensors.py: names, datatypes,
shapes, payload sizes) and against its limits (limits.py: numbers in the request, rows, axes that must
agree, their lengths, the values of integer inputs such as token ids and positions), in that order,
so that a request is refused before it is decoded and nothing a caller sends makes onnxruntime raise.

The model repository extension follows Triton: ModelConfig describes an endpoint in Triton's
ModelConfig form (max_batch_size and dynamic_batching from the batcher in force, inputs and outputs
without the batch dimension when batched, instances, version policy); RepositoryIndex lists every
version of the family's models in the repository, loaded or not; RepositoryModelLoad and
RepositoryModelUnload load and unload a whole model (a graph's endpoint name stands for its model),
and an unloaded model stays so across rescans until it is loaded again.

ModelInfer runs through the graph's dynamic batcher when the family built one for it (so KServe
calls and the family's own API share batches), otherwise on a worker thread behind a `RunGate`
(at most `batching.instances` runs of the graph at once, `batching.max_queue_size` waiting), so that
the memory KServe calls take is bounded by the gate, not by how many callers come. Responses answer
in the form the request used: raw tensors get `raw_output_contents`, typed ones typed contents.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.kserve.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from myelin_api.kserve.v2 import model_config_pb2 as mc
from myelin_serving import __version__
from myelin_serving.errors import DeadlineExceeded, InvalidArgument, ModelNotReady, NotFound, Overloaded
from myelin_serving.interceptors import HandlerRegistry, time_left
from myelin_serving.limits import GraphLimits, check_shapes, check_values
from myelin_serving.repository import LoadedModel, ModelManager, ModelVersion, check_name
from myelin_serving.runtime import CUDA, OnnxGraph, TensorInfo
from myelin_serving.settings import BatchingSettings
from myelin_serving.tensors import RequestTensor, check_header, datatype_of, decode, encode_raw, fill_contents

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PLATFORM = "onnxruntime_onnx"
SERVER_NAME = "myelin"
# Output parameters that would change what an output means; refused rather than silently ignored.
UNSUPPORTED_OUTPUT_PARAMETERS = ("classification",)
EXTENSIONS = ["model_repository", "model_configuration"]
# A version's state as Triton's repository index spells it.
INDEX_STATES = {"READY": "READY", "LOADING": "LOADING", "FAILED": "UNAVAILABLE"}


@dataclass(frozen=True)
class Endpoint:
    """One KServe model: a graph of a loaded model version."""

    name: str  # as the caller spelled it
    model: LoadedModel
    graph_name: str

    @property
    def graph(self) -> OnnxGraph:
        return self.model.graphs[self.graph_name]


@dataclass(frozen=True)
class IndexEntry:
    """One line of the repository index: an endpoint at one version."""

    name: str
    version: str
    state: str  # READY, LOADING, UNAVAILABLE
    reason: str


@dataclass(frozen=True)
class InferResult:
    endpoint: Endpoint
    outputs: dict[str, np.ndarray]  # in the order the caller asked for, or the graph's order


class InferenceProtocol:
    """What the servicer calls: naming, readiness, metadata and inference. No gRPC here."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        max_request_batch: int,
        max_request_elements: int = 4 * 1024 * 1024,
        runs: BatchingSettings | None = None,
        version_policy_latest: int = 0,
    ) -> None:
        self.manager = manager
        self._manager = manager
        # For graphs whose model declares no limits (the manager gives every loaded one its defaults).
        self._default_limits = GraphLimits(max_rows=max_request_batch, max_elements=max_request_elements)
        self.runs = runs or BatchingSettings()
        self._gates: weakref.WeakKeyDictionary[LoadedModel, dict[str, RunGate]] = weakref.WeakKeyDictionary()
        self.version_policy_latest = version_policy_latest

    def endpoint_names(self) -> list[str]:
        names: list[str] = []
        for model in self._manager.names():
            try:
                graphs = list(self._manager.get(model).graphs)
            except ModelNotReady:
                graphs = []
            names.extend([model] if len(graphs) <= 1 else [f"{model}.{g}" for g in graphs])
        return names

    def resolve(self, name: str, version: str) -> Endpoint:
        """The ready endpoint `name` at `version` ("" = newest ready)."""
        model_name, graph = self._split(name)
        model = self._manager.get(model_name, parse_version(version))
        if graph is None:
            if len(model.graphs) != 1:
                choices = ", ".join(f"{model_name}.{g}" for g in model.graphs)
                raise NotFound(f"model {model_name!r} has {len(model.graphs)} graphs; name one of: {choices}")
            graph = next(iter(model.graphs))
        elif graph not in model.graphs:
            raise NotFound(f"model {model_name!r} has no graph {graph!r}; graphs: {', '.join(model.graphs)}")
        return Endpoint(name, model, graph)

    def model_ready(self, name: str, version: str) -> bool:
        """False (not an error) while the version is loading or after it failed; NOT_FOUND if unknown.

        A bare model name asks about the whole version, whatever its graph count."""
        model_name, graph = self._split(name)
        try:
            model = self._manager.get(model_name, parse_version(version))
        except ModelNotReady:
            return False
        if graph is not None and graph not in model.graphs:
            raise NotFound(f"model {model_name!r} has no graph {graph!r}; graphs: {', '.join(model.graphs)}")
        return True

    def versions(self, name: str) -> list[str]:
        model_name, _ = self._split(name)
        return [str(s.version) for s in reversed(self._manager.statuses(model_name)) if s.model is not None]

    def max_elements(self, endpoint: Endpoint) -> int:
        """The most numbers the endpoint's graph takes in one request, all inputs together."""
        return endpoint.model.input_limits.get(endpoint.graph_name, self._default_limits).max_elements

    async def infer(
        self, endpoint: Endpoint, inputs: Sequence[RequestTensor], outputs: Sequence[str], *, timeout: float | None
    ) -> InferResult:
        """Check `inputs` and `outputs` against the endpoint's graph, then run it within `timeout` seconds."""
        graph = endpoint.graph
        limits = endpoint.model.input_limits.get(endpoint.graph_name, self._default_limits)
        feeds = self._feeds(graph, inputs, limits)
        wanted = self._wanted_outputs(graph, outputs)
        batcher = endpoint.model.batchers.get(endpoint.graph_name)
        if batcher is not None:
            self._check_rows(feeds)
            results = await batcher.infer(feeds, timeout=timeout)
        else:
            # The caller chose this run's size: its memory goes back once it is done.
            results = await self._gate(endpoint).run(lambda: graph.run(feeds, wanted, release_memory=True), timeout)
        return InferResult(endpoint, {out: results[out] for out in wanted})

    def index(self, *, ready_only: bool) -> list[IndexEntry]:
        """Every version of the family's models in the repository (and any loaded since removed), by endpoint."""
        disk, manager = self._manager.on_disk(), self._manager
        entries: list[IndexEntry] = []
        for model in sorted(set(disk) | set(manager.names())):
            statuses = {s.version: s for s in manager.statuses(model)}
            for number in sorted(set(disk.get(model, {})) | set(statuses)):
                status = statuses.get(number)
                if status is not None:
                    state, reason = INDEX_STATES[status.state], status.reason
                elif manager.unloaded(model):
                    state, reason = "UNAVAILABLE", "unloaded on request; RepositoryModelLoad serves it again"
                else:
                    state = "UNAVAILABLE"
                    reason = f"not served: the version policy serves the newest {self.version_policy_latest}"
                if ready_only and state != "READY":
                    continue
                files = disk.get(model, {}).get(number) or (status.source if status else None)
                graphs = list(files.manifest.graphs) if isinstance(files, ModelVersion) else []
                names = [model] if len(graphs) <= 1 else [f"{model}.{graph}" for graph in graphs]
                entries.extend(IndexEntry(name, str(number), state, reason) for name in names)
        return entries

    def repository_model(self, name: str) -> str:
        """The model a load or unload names: itself, or the model of a `<model>.<graph>` endpoint."""
        check_name(name)
        known = set(self._manager.names()) | set(self._manager.on_disk())
        model, dot, _ = name.rpartition(".")
        return model if name not in known and dot and model in known else name

    def _gate(self, endpoint: Endpoint) -> RunGate:
        gates = self._gates.setdefault(endpoint.model, {})
        gate = gates.get(endpoint.graph_name)
        if gate is None:
            label = f"{endpoint.model.name}/{endpoint.model.version} graph {endpoint.graph_name!r}"
            gate = gates[endpoint.graph_name] = RunGate(label, self.runs.instances, self.runs.max_queue_size)
        return gate

    def _split(self, name: str) -> tuple[str, str | None]:
        """(model, graph or None) for an endpoint name; NOT_FOUND listing what is served."""
        check_name(name)
        if self._manager.knows(name):
            return name, None
        model, dot, graph = name.rpartition(".")
        if dot and self._manager.knows(model):
            return model, graph
        served = ", ".join(self.endpoint_names()) or "none yet"
        raise NotFound(f"model {name!r} not found; this {self._manager.family} service serves: {served}")

    @staticmethod
    def _feeds(graph: OnnxGraph, inputs: Sequence[RequestTensor], limits: GraphLimits) -> dict[str, np.ndarray]:
        specs = {spec.name: spec for spec in graph.inputs}
        given: dict[str, tuple[int, RequestTensor]] = {}
        for index, tensor in enumerate(inputs):
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidArgument(
                    f"inputs[{index}] is named {tensor.name!r}; the graph's inputs are: {', '.join(specs)}"
                )
            if tensor.name in given:
                raise InvalidArgument(f"input {tensor.name!r} is given twice")
            check_header(tensor, spec, index)
            given[tensor.name] = (index, tensor)
        missing = [name for name in specs if name not in given]
        if missing:
            raise InvalidArgument(f"missing input(s) {', '.join(map(repr, missing))}; the graph needs all of them")
        check_shapes(graph.inputs, {name: tensor.shape for name, (_, tensor) in given.items()}, limits)
        feeds = {name: decode(tensor, specs[name], index) for name, (index, tensor) in given.items()}
        check_values(feeds, limits)
        return feeds

    @staticmethod
    def _check_rows(feeds: dict[str, np.ndarray]) -> None:
        # The batcher joins requests along axis 0, so every input must agree on it.
        rows = {a.shape[0] if a.ndim else 0 for a in feeds.values()}
        if len(rows) != 1:
            raise InvalidArgument(f"all inputs must have the same size on axis 0 (the batch), got {sorted(rows)}")
        if rows.pop() < 1:
            raise InvalidArgument("the batch (axis 0) is empty: send at least one row")

    @staticmethod
    def _wanted_outputs(graph: OnnxGraph, outputs: Sequence[str]) -> list[str]:
        if not outputs:
            return list(graph.output_names)
        for name in outputs:
            if name not in graph.output_names:
                raise InvalidArgument(
                    f"requested output {name!r} is not an output of this graph: {', '.join(graph.output_names)}"
                )
        if len(set(outputs)) != len(outputs):
            raise InvalidArgument("an output is requested twice")
        return list(outputs)


class RunGate:
    """At most `instances` KServe runs of one graph at once, at most `queue` more waiting (more are
    refused with RESOURCE_EXHAUSTED). A run counts until its thread finishes, even when its caller
    left (cancelled, or its deadline passed while the graph ran)."""

    def __init__(self, label: str, instances: int, queue: int) -> None:
        self._label = label
        self._free = asyncio.Semaphore(instances)
        self._queue = queue
        self._waiting = 0

    async def run(self, work: Callable[[], dict[str, np.ndarray]], timeout: float | None) -> dict[str, np.ndarray]:
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded("the request's deadline passed before inference started")
        if self._waiting >= self._queue:
            raise Overloaded(f"{self._label} has {self._waiting} requests waiting (max_queue_size); retry with backoff")
        self._waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await self._free.acquire()
        except TimeoutError:
            raise DeadlineExceeded("the request's deadline passed while it waited for the graph") from None
        finally:
            self._waiting -= 1
        running = asyncio.get_running_loop().run_in_executor(None, work)
        running.add_done_callback(self._finished)
        return await asyncio.shield(running)

    def _finished(self, running: asyncio.Future[dict[str, np.ndarray]]) -> None:
        self._free.release()
        if not running.cancelled():
            running.exception()  # retrieved here: a caller that left no longer awaits it


def parse_version(version: str) -> int:
    if not version:
        return 0
    if not version.isdigit() or not version.isascii():
        raise InvalidArgument(f"model_version must be empty (newest) or a decimal version number, not {version[:40]!r}")
    return int(version)


def request_tensors(request: pb.ModelInferRequest) -> list[RequestTensor]:
    """The inputs of a ModelInferRequest, each with its raw bytes or its typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: send one per input, in order"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        has_contents = tensor.HasField("contents")
        if raw and has_contents:
            raise InvalidArgument(
                f"inputs[{index}] {tensor.name!r} has contents while raw_input_contents is used: send one or the other"
            )
        if not raw and not has_contents:
            raise InvalidArgument(f"inputs[{index}] {tensor.name!r} has no data: set contents or raw_input_contents")
        tensors.append(
            RequestTensor(
                name=tensor.name,
                datatype=tensor.datatype,
                shape=tuple(tensor.shape),
                raw=raw[index] if raw else None,
                contents=None if raw else tensor.contents,
            )
        )
    if not tensors:
        raise InvalidArgument("inputs is empty: send every input the graph takes")
    return tensors


def requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    for output in request.outputs:
        for parameter in UNSUPPORTED_OUTPUT_PARAMETERS:
            if parameter in output.parameters:
                raise InvalidArgument(f"output parameter {parameter!r} is not supported; ask for the plain tensor")
    return [output.name for output in request.outputs]


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Proto in, an InferenceProtocol call, proto out."""

    def __init__(self, protocol: InferenceProtocol, *, serving: Callable[[], bool]) -> None:
        self._protocol = protocol
        self._serving = serving

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._serving())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._protocol.model_ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        endpoint = self._protocol.resolve(request.name, request.version)
        graph = endpoint.graph
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=self._protocol.versions(request.name),
            platform=PLATFORM,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in graph.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in graph.outputs],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        raw = bool(request.raw_input_contents)
        endpoint = self._protocol.resolve(request.model_name, request.model_version)
        result = await self._protocol.infer(
            endpoint, request_tensors(request), requested_outputs(request), timeout=time_left()
        )
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=str(result.endpoint.model.version), id=request.id
        )
        for name, array in result.outputs.items():
            output = response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
            if not raw:
                fill_contents(output.contents, array)
        if raw:
            response.raw_output_contents.extend(encode_raw(array) for array in result.outputs.values())
        return response

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        endpoint = self._protocol.resolve(request.name, request.version)
        protocol = self._protocol
        return pb.ModelConfigResponse(config=model_config(endpoint, protocol.version_policy_latest, protocol.runs))

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        check_repository(request.repository_name)
        entry = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                entry(name=e.name, version=e.version, state=e.state, reason=e.reason)
                for e in self._protocol.index(ready_only=request.ready)
            ]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        check_repository(request.repository_name, request.parameters)
        model = self._protocol.repository_model(request.model_name)
        await self._protocol.manager.load_model(model)
        self._protocol.manager.get(model)  # ModelNotReady, with each version's reason, when none loaded
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        check_repository(request.repository_name, request.parameters)
        await self._protocol.manager.unload_model(self._protocol.repository_model(request.model_name))
        return pb.RepositoryModelUnloadResponse()


def check_repository(name: str, parameters: Mapping[str, object] | None = None) -> None:
    if name:
        raise InvalidArgument(f"this service has one model repository: leave repository_name empty, not {name[:80]!r}")
    # tritonclient's unload_model always sends unload_dependents; no model here has dependents (no ensembles).
    unsupported = sorted(set(parameters or ()) - {"unload_dependents"})
    if unsupported:
        raise InvalidArgument(
            f"load/unload parameters ({', '.join(unsupported)[:200]}) are not supported: a model's files and "
            "configuration come from its version folders in the repository"
        )


def model_config(endpoint: Endpoint, version_policy_latest: int, runs: BatchingSettings) -> mc.ModelConfig:
    """The endpoint in Triton's ModelConfig form; batched graphs leave the batch dimension out of dims.
    A graph without a batcher runs `runs.instances` KServe calls at once (its RunGate)."""
    graph, model = endpoint.graph, endpoint.model
    batcher = model.batchers.get(endpoint.graph_name)
    batched = batcher is not None
    facts = {
        "family": model.manifest.family,
        "architecture": model.manifest.architecture,
        "version": str(model.version),
    }
    config = mc.ModelConfig(
        name=endpoint.name,
        platform=PLATFORM,
        backend="onnxruntime",
        max_batch_size=batcher.config.max_batch_size if batcher is not None else 0,
        input=[
            mc.ModelInput(name=t.name, data_type=data_type(t.datatype), dims=dims(t, batched)) for t in graph.inputs
        ],
        default_model_filename=model.manifest.graphs[endpoint.graph_name].file,
        parameters={key: mc.ModelParameter(string_value=value) for key, value in facts.items()},
    )
    for t in graph.outputs:
        config.output.add(name=t.name, data_type=data_type(t.datatype), dims=dims(t, batched))
    config.instance_group.add(
        name=endpoint.name,
        count=(batcher.config if batcher is not None else runs).instances,
        kind=mc.ModelInstanceGroup.KIND_GPU if model.provider == CUDA else mc.ModelInstanceGroup.KIND_CPU,
    )
    if version_policy_latest:
        config.version_policy.latest.num_versions = version_policy_latest
    else:
        config.version_policy.all.SetInParent()
    if batcher is not None and batcher.config.enabled:
        batching = config.dynamic_batching
        batching.max_queue_delay_microseconds = batcher.config.max_queue_delay_us
        batching.default_queue_policy.default_timeout_microseconds = round(batcher.config.queue_timeout_s * 1e6)
        batching.default_queue_policy.max_queue_size = batcher.config.max_queue_size
    return config


def data_type(datatype: str) -> str:
    """KServe's datatype name as Triton's DataType: FP32 -> TYPE_FP32, BYTES -> TYPE_STRING."""
    name = "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
    return name if name in mc.DataType.DESCRIPTOR.values_by_name else "TYPE_INVALID"


def dims(tensor: TensorInfo, batched: bool) -> list[int]:
    """Triton leaves the batch dimension out of a batched model's dims."""
    return list(tensor.shape[1:] if batched else tensor.shape)


def add_to_server(server: HandlerRegistry, protocol: InferenceProtocol, *, serving: Callable[[], bool]) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(protocol, serving=serving), server)
