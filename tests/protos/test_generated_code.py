"""The committed generated code is exactly what the generate script makes from protos/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from harness.servers import REPO_ROOT

COMMITTED = REPO_ROOT / "protos" / "python" / "src" / "myelin_api"


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "protos" / "python" / "generate.py"), "--out", str(tmp_path)], check=True
    )
    fresh = tmp_path / "myelin_api"
    assert _files(fresh) == _files(COMMITTED), "run `make protos` and commit the result"
    differing = [f for f in sorted(_files(fresh)) if not filecmp.cmp(fresh / f, COMMITTED / f, shallow=False)]
    assert differing == [], f"stale generated code: {differing}; run `make protos`"


def test_kserve_contract_keeps_the_standard_names() -> None:
    from myelin_api.kserve.v2 import grpc_predict_v2_pb2

    service = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in service.methods} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        # the model repository extension, as Triton has it
        "ModelConfig",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
    request = grpc_predict_v2_pb2.ModelInferRequest.DESCRIPTOR
    assert request.fields_by_name["raw_input_contents"].number == 7
    assert request.fields_by_name["inputs"].number == 5
