"""The stock KServe client (tritonclient), run from its own virtualenv (.venv-tritonclient) in its own
process: what tests/serving/tritonclient_probe.py reads and reports."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.servers import REPO_ROOT
from myelin_serving.tensors import datatype_of, encode_raw

TRITONCLIENT_PYTHON = REPO_ROOT / ".venv-tritonclient" / "bin" / "python"
TRITONCLIENT_PROBE = REPO_ROOT / "tests" / "serving" / "tritonclient_probe.py"


@dataclass(frozen=True)
class KServeCall:
    name: str  # the KServe model name: `<model>` or `<model>.<graph>`
    graph_file: Path  # the ONNX file behind it, for the expected answer
    inputs: dict[str, np.ndarray]


def tritonclient_job(target: str, calls: list[KServeCall], **extra: Any) -> dict[str, Any]:
    """What tritonclient_probe.py reads: the target, options (ssl, headers) and the calls to make."""
    models = [
        {
            "name": call.name,
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype_of(array),
                    "shape": list(array.shape),
                    "data": base64.b64encode(encode_raw(array)).decode(),
                }
                for name, array in call.inputs.items()
            ],
        }
        for call in calls
    ]
    return {"target": target, "models": models, **extra}


def run_tritonclient(job: dict[str, Any]) -> dict[str, Any]:
    """Run the stock tritonclient (its own virtualenv, its own process) and return what it saw."""
    if not TRITONCLIENT_PYTHON.exists():
        pytest.fail(f"{TRITONCLIENT_PYTHON} is missing: run `make setup` (it builds .venv-tritonclient)")
    done = subprocess.run(
        [str(TRITONCLIENT_PYTHON), str(TRITONCLIENT_PROBE)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report
