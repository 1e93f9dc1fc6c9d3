"""The tools the deployment checks run. `make test` installs the Debian ones when missing (make
deploy-tools); a missing tool fails the test that needs it rather than skipping it silently."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _require(name: str, how: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {how}")
    return path


@pytest.fixture(scope="session")
def compose() -> list[str]:
    """Compose v2 (`docker compose`) when the docker CLI has it, else Debian's docker-compose."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return [_require("docker-compose", "run `make deploy-tools` (Debian's docker-compose)")]


@pytest.fixture(scope="session")
def promtool() -> str:
    return _require("promtool", "run `make deploy-tools` (Debian's prometheus)")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return _require("kubectl", "kubectl (for `kubectl kustomize`) comes with the machine image")
