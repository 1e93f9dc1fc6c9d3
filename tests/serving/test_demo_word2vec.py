"""The demo ends with word2vec answering man : king :: woman : queen (the README's seed example): the
model its closing `myelin analogy` asks, trained as the demo trains it, served, answers queen."""

from __future__ import annotations

from pathlib import Path

import pytest
from demo import CLOSING_MODEL, WORD2VEC, word2vec_args

from myelin_client import Client
from myelin_testkit import ServerThread, settings_for
from myelin_training.cli import train_main


@pytest.mark.slow
def test_the_demo_closing_analogy_is_queen(data_dir: Path, tmp_path: Path) -> None:
    (arch, epochs), *_ = [(a, e) for a, e in WORD2VEC if f"word2vec-{a}" == CLOSING_MODEL]
    train_main(word2vec_args(arch, epochs, data_dir, tmp_path / "repository", tmp_path / "runs"))
    settings = settings_for(tmp_path / "repository", service="embedder")
    with ServerThread(settings) as server, Client(server.target) as client:
        answer = client.analogy("man", "king", "woman", model=CLOSING_MODEL, top_k=3)
    assert answer.word == "queen", answer.candidates
