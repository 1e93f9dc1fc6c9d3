"""The grpc.health.v1 messages the client needs (Check; List, for what a server serves), built in a
private descriptor pool.

The client depends on grpcio alone, not on grpcio-health-checking; a private pool keeps these
definitions from clashing with that package's when both are imported in one process.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_file = descriptor_pb2.FileDescriptorProto(name="myelin_client/health.proto", package="grpc.health.v1", syntax="proto3")
_request = _file.message_type.add(name="HealthCheckRequest")
_request.field.add(name="service", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
_response = _file.message_type.add(name="HealthCheckResponse")
_response.field.add(name="status", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32)

_list_request = _file.message_type.add(name="HealthListRequest")
_list_response = _file.message_type.add(name="HealthListResponse")
# map<string, HealthCheckResponse> statuses = 1, spelled out as protoc writes a map: a nested entry type.
_entry = _list_response.nested_type.add(name="StatusesEntry")
_entry.options.map_entry = True
_entry.field.add(name="key", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
_entry.field.add(
    name="value",
    number=2,
    type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    type_name=".grpc.health.v1.HealthCheckResponse",
)
_list_response.field.add(
    name="statuses",
    number=1,
    label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    type_name=".grpc.health.v1.HealthListResponse.StatusesEntry",
)

_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file)
HealthCheckRequest = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest"))
HealthCheckResponse = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse"))
HealthListRequest = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.health.v1.HealthListRequest"))
HealthListResponse = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.health.v1.HealthListResponse"))

CHECK = "/grpc.health.v1.Health/Check"
# Every service name the server reports health for (what it serves), with its status.
LIST = "/grpc.health.v1.Health/List"
# ServingStatus values (an enum on the wire; int32 decodes it identically).
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
