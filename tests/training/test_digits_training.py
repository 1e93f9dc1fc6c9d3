"""The MNIST training jobs (dry run): what they write into the repository and beside it."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest

from myelin_training.cli import train_main
from myelin_training.data import mnist


@pytest.mark.parametrize("name", ["mnist-mlp", "mnist-cnn"])
def test_dry_run_exports_a_complete_version(classifier_repository: Path, name: str) -> None:
    version = classifier_repository / name / "1"
    manifest = json.loads((version / "model.json").read_text())
    assert manifest["family"] == "classifier"
    assert manifest["architecture"] == name.split("-")[1]
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert manifest["preprocessing"]["normalization"]["in_graph"] is True
    assert manifest["training"]["dry_run"] is True
    assert manifest["training"]["model_config"] and manifest["training"]["train_config"]["epochs"] == 1
    assert len(manifest["dataset"]["sha256"]) == 64 and len(manifest["dataset"]["files"]) == 4
    evaluation = manifest["evaluation"]
    assert 0.0 <= evaluation["test_accuracy"] <= 1.0 and evaluation["test_size"] == 512
    assert evaluation["onnx_torch_agreement"] >= 0.99
    graph = manifest["graphs"]["model"]
    assert graph["parity"]["max_abs_diff"] < 1e-4
    assert graph["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28]}]
    assert (version / "metrics.jsonl").read_text().count("\n") == 1
    assert (version / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis


def test_missing_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="MNIST file train-images-idx3-ubyte not found"):
        train_main(["mlp", "--dry-run", "--data-dir", str(tmp_path), "--repository", str(tmp_path / "repo")])
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("model.json"))


def test_repository_is_required(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MYELIN_REPOSITORY", raising=False)
    with pytest.raises(SystemExit):
        train_main(["cnn", "--dry-run", "--data-dir", str(data_dir)])
    assert "--repository is required" in capsys.readouterr().err


def test_unknown_family_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train_main(["resnet"])
    assert info.value.code == 2
    assert "unknown family 'resnet'" in capsys.readouterr().err


def test_labels_cover_the_digits() -> None:
    assert list("0123456789") == mnist.LABELS
