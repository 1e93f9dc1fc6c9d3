"""What the images run, run here: the container health check against a real service, and the
trainer's `myelin-train-all` on the real pipeline. Plus the Dockerfiles' shape (base image argument,
stages, non-root user, health check) that the compose test builds for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.servers import REPO_ROOT, ServerThread, settings_for

pytestmark = pytest.mark.deploy
IMAGES = REPO_ROOT / "deploy" / "images"


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYELIN_PORT": str(port), "MYELIN_HOST": "0.0.0.0"}
    return subprocess.run(
        [sys.executable, str(IMAGES / "healthcheck.py")], capture_output=True, text=True, env=env, timeout=30
    )


def test_healthcheck_passes_when_serving_and_fails_when_not(classifier_repository: Path, tmp_path: Path) -> None:
    with ServerThread(settings_for(classifier_repository)) as server:
        serving = healthcheck(server.port)
        assert serving.returncode == 0, serving.stdout + serving.stderr
        assert serving.stdout.strip() == f"127.0.0.1:{server.port}: SERVING"
    # A service whose repository holds nothing it can serve listens but stays NOT_SERVING.
    with ServerThread(settings_for(tmp_path)) as server:
        not_serving = healthcheck(server.port)
    assert not_serving.returncode == 1 and "NOT_SERVING" in not_serving.stdout
    gone = healthcheck(server.port)
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stdout


def test_healthcheck_asks_the_family_port_when_no_port_is_set() -> None:
    """Each family's container listens on its own default port; the health check asks that one."""
    env = {k: v for k, v in os.environ.items() if k != "MYELIN_PORT"} | {"MYELIN_SERVICE": "translator"}
    done = subprocess.run(
        [sys.executable, str(IMAGES / "healthcheck.py")], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.stdout.startswith("127.0.0.1:50052: "), done.stdout + done.stderr


@pytest.mark.slow
def test_train_all_trains_each_family_once(data_dir: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    env = {**os.environ, "MYELIN_DATA_DIR": str(data_dir), "MYELIN_REPOSITORY": str(repository)}
    command = [sys.executable, str(IMAGES / "train_all.py"), "--dry-run", "--publish"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    manifests = {p.parent.parent.name: json.loads(p.read_text()) for p in repository.glob("*/*/model.json")}
    assert {name: m["family"] for name, m in manifests.items()} == {
        "mnist-mlp": "classifier",
        "mnist-cnn": "classifier",
        "translator-tatoeba": "translator",
        "generator-gpt-shakespeare": "generator",
        "generator-gru-shakespeare": "generator",
        "word2vec-skipgram": "embedder",
    }
    # Again: the repository has every family already, so nothing is trained twice.
    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "classifier: skipped" in again.stdout and "translator: skipped" in again.stdout
    assert "generator: skipped" in again.stdout and "embedder: skipped" in again.stdout
    assert sorted(p.parent.name for p in repository.glob("*/*/model.json")) == ["1"] * 6


def test_train_all_refuses_unknown_families(tmp_path: Path) -> None:
    env = {**os.environ, "MYELIN_DATA_DIR": str(tmp_path), "MYELIN_REPOSITORY": str(tmp_path / "r")}
    result = subprocess.run(
        [sys.executable, str(IMAGES / "train_all.py"), "--families", "classifier,speech"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2 and "unknown families ['speech']" in result.stderr


@pytest.mark.parametrize("image", ["services", "training"])
def test_dockerfile_is_multi_stage_non_root_with_a_base_image_argument(image: str) -> None:
    text = (REPO_ROOT / image / "Dockerfile").read_text()
    instructions = [
        line.split()[0] for line in text.splitlines() if line and not line[0].isspace() and not line.startswith("#")
    ]
    assert instructions[0] == "ARG" and re.search(r"^ARG BASE_IMAGE=\S+", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS python$", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) >= 3, "python, build and runtime stages"
    assert re.search(r"^COPY --from=build /opt/myelin /opt/myelin$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    # Installs come only from the wheels in the build context, pinned by its constraints.
    assert "--no-index --find-links /wheels" in text and "-c /wheels/constraints.txt" in text
    if image == "services":
        assert re.search(r'^HEALTHCHECK .* CMD \["myelin-healthcheck"\]$', text, re.M)
        assert "torch" not in (IMAGES / "context.sh").read_text().split("services/cpu)")[1].split(";;")[0]
