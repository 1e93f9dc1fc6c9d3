"""Our `inference` messages say on the wire what tritonclient's (Triton's own protos) say: every field
and enum value we define has Triton's number, type and cardinality. Fields of Triton's we leave out
are fine (a client reads them as unset); a field of ours that Triton numbers differently is not."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

from harness.tritonclient import TRITONCLIENT_PYTHON
from myelin_api.kserve.v2 import grpc_predict_v2_pb2, model_config_pb2

DUMP = """
import json, sys
from tritonclient.grpc import model_config_pb2, service_pb2
out = {}
def walk(d):
    out[d.full_name] = {f.name: [f.number, f.type, f.label == 3, f.message_type.full_name if f.message_type else
                        (f.enum_type.full_name if f.enum_type else "")] for f in d.fields}
    for n in d.nested_types: walk(n)
    for e in d.enum_types: out[e.full_name] = {v.name: v.number for v in e.values}
for file in (model_config_pb2.DESCRIPTOR, service_pb2.DESCRIPTOR):
    for d in file.message_types_by_name.values(): walk(d)
    for e in file.enum_types_by_name.values(): out[e.full_name] = {v.name: v.number for v in e.values}
json.dump(out, sys.stdout)
"""


def ours(files: tuple[FileDescriptor, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def enum(e: EnumDescriptor) -> None:
        out[e.full_name] = {v.name: v.number for v in e.values}

    def walk(d: Descriptor) -> None:
        out[d.full_name] = {
            f.name: [
                f.number,
                f.type,
                f.is_repeated,
                f.message_type.full_name if f.message_type else (f.enum_type.full_name if f.enum_type else ""),
            ]
            for f in d.fields
        }
        for nested in d.nested_types:
            walk(nested)
        for e in d.enum_types:
            enum(e)

    for file in files:
        for d in file.message_types_by_name.values():
            walk(d)
        for e in file.enum_types_by_name.values():
            enum(e)
    return out


def test_every_inference_message_and_enum_matches_triton_field_by_field() -> None:
    done = subprocess.run([str(TRITONCLIENT_PYTHON), "-c", DUMP], capture_output=True, text=True, check=True)
    triton: dict[str, Any] = json.loads(done.stdout)
    mine = ours((grpc_predict_v2_pb2.DESCRIPTOR, model_config_pb2.DESCRIPTOR))
    assert "inference.ModelConfig" in mine and "inference.RepositoryIndexResponse.ModelIndex" in mine
    for name, fields in mine.items():
        assert name in triton, f"{name} is not one of Triton's"
        for field, spec in fields.items():
            assert triton[name].get(field) == spec, f"{name}.{field}: ours {spec}, Triton's {triton[name].get(field)}"
