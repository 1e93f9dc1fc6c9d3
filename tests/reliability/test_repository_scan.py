"""The repository scan: one odd file or folder fails that version alone, once in the log, and everything
else loads and serves, at start-up and at run time (docs/reliability.md, "The model repository")."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from harness.rpcs import KSERVE, call
from harness.servers import ServerThread, eventually, settings_for
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_client import Client
from myelin_serving.discovery import MAX_MANIFEST_BYTES

ZEROS = np.zeros((1, 28, 28), np.uint8)
SKIPPED = "myelin_serving.repository"


def copy_version(repository: Path, model: str, source: int, target: str, **manifest: object) -> Path:
    """A copy of a version folder, made aside and renamed into place (a scan never sees it half made)."""
    folder = repository / model / target
    staging = folder.with_name(f".staging-{time.monotonic_ns()}")
    shutil.copytree(repository / model / str(source), staging)
    if manifest:
        data = json.loads((staging / "model.json").read_text())
        (staging / "model.json").write_text(json.dumps({**data, **manifest}))
    return staging.rename(folder)


def odd_entries(repository: Path, outside: Path) -> dict[str, str]:
    """Entries a careless hand leaves behind; for each broken version, a fragment of its reason. Each
    is made aside and renamed into place."""
    staging = repository / ".staging"
    (staging / "latin1" / "1").mkdir(parents=True)
    (staging / "latin1" / "1" / "model.json").write_bytes(b'{"name": "caf\xe9", "family": "classifier"}')
    (staging / "nested" / "1").mkdir(parents=True)
    (staging / "nested" / "1" / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    secret = outside / "secret"
    shutil.copytree(repository / "mnist-mlp", secret)
    (staging / "linked").symlink_to(secret, target_is_directory=True)
    for name in ("latin1", "nested", "linked"):
        (staging / name).rename(repository / name)
    padding = "x" * MAX_MANIFEST_BYTES
    copy_version(repository, "mnist-cnn", 1, "3", version=3, padding=padding)
    copy_version(repository, "mnist-cnn", 1, "\u00b2")  # str.isdigit() says yes; int() said ValueError
    copy_version(repository, "mnist-cnn", 1, "01")  # would have collided with version 1
    copy_version(repository, "mnist-cnn", 1, "99999999999999999999")  # past int64
    (staging / "4").symlink_to(secret / "1", target_is_directory=True)
    (staging / "4").rename(repository / "mnist-mlp" / "4")
    leaky = shutil.copytree(repository / "mnist-mlp" / "1", staging / "5")
    (leaky / "model.onnx").unlink()
    (leaky / "model.onnx").symlink_to(secret / "1" / "model.onnx")
    leaky.rename(repository / "mnist-mlp" / "5")
    return {
        "latin1/1": "is not UTF-8 text",
        "nested/1": "nested too deeply",
        "mnist-cnn/3": f"the limit is {MAX_MANIFEST_BYTES:,}",
        "mnist-mlp/4": "leads outside the repository",
        "mnist-mlp/5": "model.onnx (-> ",
    }


def states(client: Client, model: str) -> dict[int, tuple[str, str]]:
    return {v.version: (v.state, v.reason) for v in client.get_model(model).versions}


def assert_isolated(server: ServerThread, broken: dict[str, str]) -> None:
    """Every broken version FAILED with its reason; the good ones serve; nothing outside leaked in."""
    sample = server.registry.get_sample_value
    with Client(server.target) as client, grpc.insecure_channel(server.target) as channel:
        assert client.health() == "SERVING"
        assert client.classify(ZEROS, model="mnist-cnn").version in (1, 2)
        assert client.classify(ZEROS, model="mnist-mlp").version == 1
        for label, reason in broken.items():
            model, version = label.split("/")
            state, why = states(client, model)[int(version)]
            assert state == "FAILED" and reason in why, (label, why)
            ready = call(channel, f"/{KSERVE}/ModelReady", pb.ModelReadyRequest(name=model, version=version))
            assert (
                ready.code is grpc.StatusCode.OK and pb.ModelReadyResponse.FromString(ready.responses[0]).ready is False
            )
            assert sample("myelin_model_ready", {"model": model, "version": version}) == 0
        assert set(states(client, "mnist-cnn")) <= {1, 2, 3}  # '²', '01' and 99...9 are not versions
        assert "linked" not in {m.name for m in client.list_models()}


def skip_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SKIPPED and r.levelno >= logging.WARNING]


def test_odd_entries_at_start_up_fail_alone_and_are_logged_once(
    tmp_path: Path, fresh_repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = odd_entries(fresh_repository, tmp_path / "outside")
    with ServerThread(settings_for(fresh_repository, reload_interval_s=0.05)) as server:
        assert_isolated(server, broken)
        time.sleep(0.5)  # about ten rescans
        assert_isolated(server, broken)
    lines = skip_lines(caplog)
    for label in broken:
        assert sum(f"model {label} failed" in line for line in lines) == 1, (label, lines)
    for entry in ("/\u00b2'", "/01'", "/99999999999999999999'", "linked: it leads to"):
        assert sum(entry in line for line in lines) == 1, (entry, lines)


def test_odd_entries_at_run_time_do_not_stop_new_versions(tmp_path: Path, fresh_repository: Path) -> None:
    with ServerThread(settings_for(fresh_repository, reload_interval_s=0.05)) as server, Client(server.target) as c:
        broken = odd_entries(fresh_repository, tmp_path / "outside")
        copy_version(fresh_repository, "mnist-cnn", 1, "2", version=2)
        eventually(lambda: c.classify(ZEROS, model="mnist-cnn").version == 2)
        report = c.reload_models()  # answered, not INTERNAL
        assert report.failed == [] and report.loaded == []
        assert c.classify(ZEROS, model="mnist-cnn", version=2).version == 2
        assert_isolated(server, broken)


def test_a_copied_version_folder_serves_as_its_folder_says(
    fresh_repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`cp -r mnist-mlp/1 mnist-mlp/2`: the manifest still says version 1; the folder name wins, as in Triton."""
    with ServerThread(settings_for(fresh_repository, reload_interval_s=0.05)) as server, Client(server.target) as c:
        copy_version(fresh_repository, "mnist-mlp", 1, "2")
        eventually(lambda: c.classify(ZEROS, model="mnist-mlp").version == 2)
        assert states(c, "mnist-mlp") == {2: ("READY", ""), 1: ("READY", "")}
        assert c.get_model("mnist-mlp").version == 2
        assert server.registry.get_sample_value("myelin_model_ready", {"model": "mnist-mlp", "version": "2"}) == 1
        time.sleep(0.3)
    warnings = [line for line in skip_lines(caplog) if "mnist-mlp/2" in line]
    assert (
        len(warnings) == 1 and "describes mnist-mlp/1; the folder names win: serving it as mnist-mlp/2" in warnings[0]
    )


def series(server: ServerThread, **labels: str) -> list[str]:
    return [
        f"{s.name}{s.labels}"
        for family in server.registry.collect()
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]


def test_removed_versions_and_models_take_their_metric_series_with_them(fresh_repository: Path) -> None:
    with ServerThread(settings_for(fresh_repository, reload_interval_s=0.05)) as server, Client(server.target) as c:
        copy_version(fresh_repository, "mnist-mlp", 1, "2", version=2)
        eventually(lambda: c.classify(ZEROS, model="mnist-mlp").version == 2)
        c.classify(ZEROS, model="mnist-mlp", version=1)
        assert series(server, model="mnist-mlp", version="1") and series(server, model="mnist-mlp", version="2")
        shutil.rmtree(fresh_repository / "mnist-mlp" / "2")
        eventually(lambda: not series(server, model="mnist-mlp", version="2"))
        assert series(server, model="mnist-mlp", version="1")
        shutil.rmtree(fresh_repository / "mnist-mlp")
        eventually(lambda: not series(server, model="mnist-mlp"))
        assert series(server, model="mnist-cnn")


def test_a_manifest_is_read_once_per_change(fresh_repository: Path) -> None:
    """Rewritten in place with its size and times kept, the manifest is not read again (rescans stat
    files, they do not parse them); once its modification time moves, it is."""
    manifest = fresh_repository / "mnist-mlp" / "1" / "model.json"
    with ServerThread(settings_for(fresh_repository, reload_interval_s=0.05)) as server, Client(server.target) as c:
        original = manifest.read_text()
        st = manifest.stat()
        broken = "{" + " " * (len(original.encode()) - 2) + "}"  # same size, not a manifest
        manifest.write_text(broken)
        os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))
        time.sleep(0.3)
        assert states(c, "mnist-mlp") == {1: ("READY", "")}
        assert json.loads(c.get_model("mnist-mlp").manifest_json) == json.loads(original)
        os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        eventually(lambda: states(c, "mnist-mlp")[1][1].startswith("reload failed, still serving the earlier files"))
        assert server.registry.get_sample_value("myelin_model_ready", {"model": "mnist-mlp", "version": "1"}) == 1
