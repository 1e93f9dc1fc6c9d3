"""A dry run never becomes the newest version of a real model unless the user asks (--publish)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.servers import ServerThread, settings_for
from myelin_client import Client
from myelin_training.cli import train_main


def test_a_dry_run_exports_beside_the_real_model_not_over_it(
    fresh_repository: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    train_main(["mlp", "--dry-run", "--data-dir", str(data_dir), "--repository", str(fresh_repository)])
    assert sorted(p.name for p in (fresh_repository / "mnist-mlp").iterdir()) == ["1"]
    manifest = json.loads((fresh_repository / "mnist-mlp-dry-run" / "1" / "model.json").read_text())
    assert manifest["name"] == "mnist-mlp-dry-run" and manifest["training"]["dry_run"] is True
    assert (tmp_path / "runs" / "mnist-mlp-dry-run" / "metrics.jsonl").is_file()  # the real run's folder untouched
    assert not (tmp_path / "runs" / "mnist-mlp").exists()
    with ServerThread(settings_for(fresh_repository)) as server, Client(server.target) as client:
        assert client.get_model("mnist-mlp").version == 1
        assert {m.name for m in client.list_models()} == {"mnist-mlp", "mnist-mlp-dry-run", "mnist-cnn"}
    # Asked for, it is published under the real name.
    train_main(["mlp", "--dry-run", "--publish", "--data-dir", str(data_dir), "--repository", str(fresh_repository)])
    assert sorted(p.name for p in (fresh_repository / "mnist-mlp").iterdir()) == ["1", "2"]


def test_the_help_says_where_a_dry_run_goes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_main(["cnn", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exported as <name>-dry-run" in text and "never serves it as a version of <name>" in text
    assert "--publish with --dry-run: export under --name all the same" in text
