"""The two grpc.health.v1 messages the client needs, built in a private descriptor pool.

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

_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file)
HealthCheckRequest = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest"))
HealthCheckResponse = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse"))

CHECK = "/grpc.health.v1.Health/Check"
# ServingStatus values (an enum on the wire; int32 decodes it identically).
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
