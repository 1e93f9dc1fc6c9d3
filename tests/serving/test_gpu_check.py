"""scripts/gpu_check.py end to end with `--device cpu --smoke`: what a GPU host runs, on the CPU
provider, where the "device" services use IO binding and the reference ones do not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.servers import REPO_ROOT


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_and_both_paths_answer_alike(
    tmp_path: Path,
    data_dir: Path,
    classifier_repository: Path,
    translator_repository: Path,
    generator_repository: Path,
) -> None:
    # Three families come from this session's models; the check trains the embedder (seconds).
    repository = tmp_path / "repository"
    for source in (classifier_repository, translator_repository, generator_repository):
        for model in source.iterdir():
            shutil.copytree(model, repository / model.name)
    out = tmp_path / "out"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--smoke"]
    command += ["--out", str(out), "--repository", str(repository), "--data-dir", str(data_dir), "--threads", "1"]
    # about 30 s alone on 2 cores; the bound leaves room for a machine busy with other work
    done = subprocess.run(command, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    report = json.loads((out / "gpu-check.json").read_text())
    assert report["ok"] is True and report["device"] == "cpu" and report["profile"] == "smoke"
    assert "CPUExecutionProvider" in report["environment"]["providers"]
    trained = {r["family"]: r for r in report["training"]}
    assert set(trained) == {"classifier", "translator", "generator", "embedder"}
    assert "--dry-run" in trained["embedder"]["command"] and "skipped" in trained["classifier"]
    assert (repository / "word2vec-skipgram" / "1" / "model.json").is_file()

    # CPU against CPU: the bound path must give exactly what the numpy path gives.
    checks = {a["check"]: a for a in report["answers"]}
    assert {a["family"] for a in report["answers"]} == {"classifier", "translator", "generator", "embedder"}
    for name, check in checks.items():
        assert check["ok"], check
        expected = 0.0 if "difference" in name else 1.0
        assert check["value"] == expected, check
    assert checks["models on CPUExecutionProvider"]["providers"]

    figures = {(t["measure"], t["device"], t["io_binding"]): t["value"] for t in report["throughput"]}
    expected_rows = {
        *((f"CNN requests/s, concurrency {c}", "cpu", b) for c in (1, 32) for b in ("on", "off")),
        *(("translator sentences/s, concurrency 8, beam 4", "cpu", b) for b in ("on", "off")),
        *((f"generator tokens/s, {n}", "cpu", b) for n in ("1 stream", "8 streams") for b in ("on", "off")),
    }
    assert set(figures) == expected_rows
    assert all(value > 0 for value in figures.values())
    text = (out / "gpu-check.md").read_text()
    assert text.startswith("# GPU check: `--device cpu` (smoke)") and "PASSED" in text
    assert "| CNN requests/s, concurrency 32 | cpu | on |" in text
