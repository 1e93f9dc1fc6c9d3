"""Train for a few steps, export, serve as a process, classify through the SDK and myelin-eval."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.servers import BIN, ServerProcess


@pytest.mark.e2e
def test_train_export_serve_classify(tmp_path: Path, data_dir: Path) -> None:
    repository = tmp_path / "repository"
    subprocess.run(
        [
            BIN / "myelin-train",
            "cnn",
            "--dry-run",
            "--publish",
            "--data-dir",
            data_dir,
            "--repository",
            repository,
            "--run-dir",
            tmp_path / "run",
        ],
        check=True,
        capture_output=True,
    )
    server = ServerProcess("classifier", repository, tmp_path)
    try:
        report_path = tmp_path / "eval.json"
        result = subprocess.run(
            [
                BIN / "myelin-eval",
                "classifier",
                "--target",
                server.target,
                "--data-dir",
                data_dir,
                "--json",
                report_path,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (report,) = json.loads(report_path.read_text())
        manifest = json.loads((repository / "mnist-cnn" / "1" / "model.json").read_text())
        assert report["same_predictions"] is True
        assert report["served_accuracy"] == pytest.approx(manifest["evaluation"]["onnx_test_accuracy"])
        assert "same predictions as the manifest" in result.stdout
        assert server.terminate() == 0
    finally:
        server.kill()
