"""A tiny model family that the tests plug into myelin-serve through its entry point, changing no core
code: this directory on sys.path is an installed distribution (myelin_identity-0.1.dist-info names
`identity = myelin_identity:FAMILY` in the `myelin_serving.families` group).

It brings what a family brings: its own proto (built here as a FileDescriptorProto and added to the
default descriptor pool, where generated code puts its files) with its default port, its settings
(MYELIN_IDENTITY__MAX_VALUES), its metrics on the server's registry, and its model type, serving an
ONNX Identity graph (B, 1) -> (B, 1) through the shared batcher: `Echo` answers the values it got.
"""

from __future__ import annotations

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from prometheus_client import Counter
from pydantic import BaseModel, Field

from myelin_api.v1 import common_pb2
from myelin_serving.batching import DynamicBatcher
from myelin_serving.errors import InvalidArgument
from myelin_serving.family import Family, ServingContext
from myelin_serving.interceptors import HandlerRegistry, time_left
from myelin_serving.metrics import Metrics
from myelin_serving.repository import LoadContext, LoadedModel, ModelVersion
from myelin_serving.runtime import OnnxGraph

PACKAGE = "myelin_identity.v1"
SERVICE = f"{PACKAGE}.Identity"
ECHO = f"/{SERVICE}/Echo"
DEFAULT_PORT = 50099
GRAPH = "model"


def _proto() -> descriptor_pb2.FileDescriptorProto:
    """identity.proto: `service Identity { rpc Echo(EchoRequest) returns (EchoResponse); }`, its
    messages a ModelRef and repeated float values."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="myelin_identity/v1/identity.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=[common_pb2.DESCRIPTOR.name],
    )
    for name in ("EchoRequest", "EchoResponse"):
        message = proto.message_type.add(name=name)
        message.field.add(
            name="model",
            number=1,
            type=field.TYPE_MESSAGE,
            label=field.LABEL_OPTIONAL,
            type_name=".myelin_api.v1.ModelRef",
        )
        message.field.add(name="values", number=2, type=field.TYPE_FLOAT, label=field.LABEL_REPEATED)
    service = proto.service.add(name="Identity")
    service.method.add(name="Echo", input_type=f".{PACKAGE}.EchoRequest", output_type=f".{PACKAGE}.EchoResponse")
    service.options.Extensions[common_pb2.default_port] = DEFAULT_PORT
    return proto


descriptor_pool.Default().AddSerializedFile(_proto().SerializeToString())
EchoRequest = GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.EchoRequest"))
EchoResponse = GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.EchoResponse"))


class IdentitySettings(BaseModel):
    """MYELIN_IDENTITY__*: values one Echo may carry."""

    max_values: int = Field(64, ge=1)


class IdentityMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.echoes = Counter("myelin_identity_echoes", "Echo calls answered", ["model"], registry=metrics.registry)


class IdentityModel(LoadedModel):
    def __init__(self, version: ModelVersion, graph: OnnxGraph, batcher: DynamicBatcher, context: LoadContext) -> None:
        super().__init__(version, {GRAPH: graph}, {GRAPH: batcher})
        self.max_values = context.settings_of(IdentitySettings).max_values
        self.metrics: IdentityMetrics | None = context.family_metrics

    async def echo(self, values: list[float], *, timeout: float | None) -> list[float]:
        if not values:
            raise InvalidArgument("values is empty: send at least one value")
        if len(values) > self.max_values:
            raise InvalidArgument(f"{len(values)} values in one request; the limit is {self.max_values}")
        column = np.asarray(values, dtype=np.float32).reshape(-1, 1)  # (B, 1)
        outputs = await self.batchers[GRAPH].infer({"x": column}, timeout=timeout)
        if self.metrics is not None:
            self.metrics.echoes.labels(self.name).inc()
        return [float(v) for v in outputs["y"][:, 0]]


async def load(version: ModelVersion, context: LoadContext) -> IdentityModel:
    graph = await context.open_graph(version, GRAPH)
    return IdentityModel(version, graph, context.batcher(version, graph), context)


class IdentityServicer:
    def __init__(self, context: ServingContext) -> None:
        self._manager = context.manager

    async def Echo(self, request: object, context: grpc.aio.ServicerContext) -> object:
        model = self._manager.get(request.model.name, request.model.version, kind=IdentityModel)  # type: ignore[attr-defined]
        values = await model.echo(list(request.values), timeout=time_left())  # type: ignore[attr-defined]
        return EchoResponse(model=common_pb2.ModelRef(name=model.name, version=model.version), values=values)


def _add_servicers(server: HandlerRegistry, context: ServingContext) -> None:
    echo = IdentityServicer(context).Echo
    handler = grpc.unary_unary_rpc_method_handler(
        echo, request_deserializer=EchoRequest.FromString, response_serializer=EchoResponse.SerializeToString
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})])


FAMILY = Family(
    name="identity",
    service_names=(SERVICE,),
    load=load,
    add_servicers=_add_servicers,
    settings=IdentitySettings,
    metrics=IdentityMetrics,
)
