"""Generator.Score (the log-probability of each token of a text) and `myelin-eval generator`, which
measures perplexity and bits per character through it: on the session's dry-run models, equal to
the validation loss their manifests recorded at training (PyTorch), within float tolerance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.servers import ServerThread
from myelin_client import Client, InvalidArgumentError
from myelin_training.cli import eval_main


def test_score_gives_each_token_its_logprob(generator_server: ServerThread) -> None:
    with Client(generator_server.target) as client:
        scored = client.score("ROMEO: hello", model="generator-gru-shakespeare")
        assert len(scored.token_ids) == len("ROMEO: hello") and len(scored.logprobs) == len(scored.token_ids) - 1
        assert all(lp < 0 for lp in scored.logprobs)
        assert scored.perplexity == pytest.approx(math.exp(-sum(scored.logprobs) / len(scored.logprobs)))
        # The same text twice: the same answer, whatever else shares the decoding steps.
        assert client.score("ROMEO: hello", model="generator-gru-shakespeare").logprobs == scored.logprobs
        with pytest.raises(InvalidArgumentError, match="scoring takes 2"):
            client.score("R", model="generator-gru-shakespeare")
        with pytest.raises(InvalidArgumentError, match="split it into windows"):
            client.score("x" * 200, model="generator-gpt-shakespeare")  # its context is 128


@pytest.mark.parametrize("model", ["generator-gpt-shakespeare", "generator-gru-shakespeare"])
def test_myelin_eval_generator_reproduces_the_manifest(
    generator_server: ServerThread,
    generator_repository: Path,
    data_dir: Path,
    model: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = tmp_path / "report.json"
    eval_main(
        ["generator", "--target", generator_server.target, "--model", model, "--data-dir", str(data_dir),
         "--json", str(report)]
    )  # fmt: skip
    figures = json.loads(report.read_text())
    manifest = json.loads((generator_repository / model / "1" / "model.json").read_text())
    assert figures["tokens"] == manifest["training"]["validation_tokens"] - 1 - (
        (manifest["training"]["validation_tokens"] - 1) % manifest["training"]["train_config"]["block_size"]
    )  # every full window of the split, as training measured it
    assert figures["loss"] == pytest.approx(manifest["evaluation"]["validation_loss"], abs=1e-4)
    assert figures["bits_per_character"] == pytest.approx(figures["loss"] / math.log(2))  # one token per character
    assert figures["perplexity"] == pytest.approx(manifest["evaluation"]["validation_perplexity"], rel=1e-4)
    assert "the same within 0.001" in capsys.readouterr().out
