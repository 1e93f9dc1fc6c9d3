"""The demo ends with word2vec answering man : king :: woman : queen (the README's seed example): the
model its closing `myelin analogy` asks, trained as the demo trains it, served, answers queen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.servers import REPO_ROOT, ServerThread, settings_for
from myelin_client import Client
from myelin_training.cli import train_main


@pytest.mark.slow
def test_the_demo_closing_analogy_is_queen(data_dir: Path, tmp_path: Path) -> None:
    demo = json.loads((REPO_ROOT / "scripts" / "demo_word2vec.json").read_text())  # what scripts/demo.py runs
    closing = demo["closing_model"]
    (run,) = [r for r in demo["runs"] if f"word2vec-{r['arch']}" == closing]
    train_main([*demo["train"], "--data-dir", str(data_dir), "--arch", run["arch"], "--epochs", str(run["epochs"]),
                "--repository", str(tmp_path / "repository"), "--run-dir", str(tmp_path / "runs")])  # fmt: skip
    settings = settings_for(tmp_path / "repository", service="embedder")
    with ServerThread(settings) as server, Client(server.target) as client:
        answer = client.analogy("man", "king", "woman", model=closing, top_k=3)
    assert answer.word == "queen", answer.candidates
