"""--resume for the epoch-based jobs (the MNIST classifiers and word2vec), as the generator and the
translator have it: a checkpoint after every epoch; resuming goes on from the next epoch (to a new
total with --epochs), and resuming a finished run exports the same model again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from myelin_training.cli import train_main


def manifest(repository: Path, name: str, version: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((repository / name / str(version) / "model.json").read_text())
    return loaded


def epochs_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("family", "name"), [("mlp", "mnist-mlp-dry-run"), ("cnn", "mnist-cnn-dry-run")])
def test_the_classifiers_resume(
    family: str, name: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository, run_dir = tmp_path / "r", tmp_path / "run"
    common = [family, "--dry-run", "--data-dir", str(data_dir), "--repository", str(repository)]
    common += ["--run-dir", str(run_dir)]
    with pytest.raises(SystemExit, match="no checkpoint at"):
        train_main([*common, "--resume"])
    train_main(common)
    train_main([*common, "--epochs", "2", "--resume"])
    assert "after epoch 1 of 2" in capsys.readouterr().out
    assert epochs_logged(run_dir) == [1, 2]
    assert manifest(repository, name, 2)["training"]["train_config"]["epochs"] == 2
    train_main([*common, "--resume"])  # finished: the same weights, exported again
    assert "after epoch 2 of 2" in capsys.readouterr().out and epochs_logged(run_dir) == [1, 2]
    again, before = manifest(repository, name, 3)["evaluation"], manifest(repository, name, 2)["evaluation"]
    assert again["test_predictions_sha256"] == before["test_predictions_sha256"]
    assert again["test_loss"] == before["test_loss"]


def test_word2vec_resumes(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repository, run_dir = tmp_path / "r", tmp_path / "run"
    common = ["word2vec", "--dry-run", "--corpus-preset", "english", "--data-dir", str(data_dir)]
    common += ["--repository", str(repository), "--run-dir", str(run_dir), "--threads", "1"]
    train_main(common)
    train_main([*common, "--epochs", "2", "--resume"])
    assert "after epoch 1 of 2" in capsys.readouterr().out
    assert epochs_logged(run_dir) == [1, 2]
    assert manifest(repository, "word2vec-skipgram-dry-run", 2)["training"]["examples"] > 0
    train_main([*common, "--resume"])
    assert "after epoch 2 of 2" in capsys.readouterr().out
    second, third = (manifest(repository, "word2vec-skipgram-dry-run", v) for v in (2, 3))
    assert second["evaluation"] == third["evaluation"] and second["training"]["model_config"]["epochs"] == 2
