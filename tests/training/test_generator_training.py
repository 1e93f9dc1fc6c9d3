"""Training and exporting the language models: manifest, step graph against PyTorch, resume, data errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from myelin_training import export
from myelin_training.data.files import DatasetNotFoundError
from myelin_training.generator.export import cache_names, gpt_graph
from myelin_training.generator.model import GPT, GPTConfig
from myelin_training.generator.train import main as train_main


@pytest.mark.parametrize(
    ("name", "cache"), [("generator-gpt-shakespeare", "kv"), ("generator-gru-shakespeare", "state")]
)
def test_dry_run_publishes_a_complete_version(generator_repository: Path, name: str, cache: str) -> None:
    version = generator_repository / name / "1"
    manifest = json.loads((version / "model.json").read_text())
    assert manifest["family"] == "generator" and manifest["decoder"]["cache"] == cache
    assert (version / "step.onnx").is_file() and (version / "tokenizer.json").is_file()
    assert (version / "metrics.jsonl").is_file() and (version / "curves.png").is_file()
    assert manifest["tokenizer"]["kind"] == "char" and manifest["tokenizer"]["unk_id"] is not None
    assert math.isfinite(manifest["evaluation"]["validation_loss"]) and manifest["training"]["dry_run"]
    assert manifest["dataset"]["split"].startswith("first 90%") and len(manifest["dataset"]["sha256"]) == 64
    parity = manifest["graphs"]["step"]["parity"]
    assert parity["trials"] >= 4 and parity["max_abs_diff"] < 1e-3
    if cache == "kv":
        # (input_ids, padding, length, past.0.key (B, H, D, S), past.0.value (B, H, S, D), ...)
        slots = [shapes[4][2] for shapes in parity["input_shapes"]]
        assert 0 in slots and len(set(slots)) > 2  # an empty cache and several cache sizes were checked
        assert all(shapes[3][3] == shapes[4][2] for shapes in parity["input_shapes"])


def test_step_graph_decodes_token_by_token_like_the_full_model(tmp_path: Path) -> None:
    """Prefill then one token at a time through onnxruntime == one PyTorch forward over the sequence."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()
    path = tmp_path / "step.onnx"
    export.export_graph(gpt_graph(model), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = torch.randint(0, 30, (1, 12))
    with torch.no_grad():
        expected = model(ids)[0].numpy()  # (T, vocab)
    names = [f"past.{i}.{kind}" for i in range(2) for kind in ("key", "value")]
    # buffers of 16 slots, keys (B, H, D, S) and values (B, H, S, D); the new keys/values go in place
    cache = [np.zeros((1, 2, 8, 16) if n.endswith(".key") else (1, 2, 16, 8), np.float32) for n in names]
    padding = np.zeros(1, np.int64)

    def run(x: np.ndarray, length: int) -> np.ndarray:
        feeds = {"input_ids": x, "padding": padding, "length": np.array(length), **dict(zip(names, cache, strict=True))}
        logits, *new = session.run(None, feeds)
        for name, buffer, values in zip(names, cache, new, strict=True):
            if name.endswith(".key"):
                buffer[:, :, :, length : length + x.shape[1]] = values
            else:
                buffer[:, :, length : length + x.shape[1]] = values
        return logits

    logits = run(ids[:, :5].numpy(), 0)
    np.testing.assert_allclose(logits[0], expected[4], atol=1e-4)
    for t in range(5, 12):
        logits = run(ids[:, t : t + 1].numpy(), t)
        np.testing.assert_allclose(logits[0], expected[t], atol=1e-4)
    assert [c.shape for c in cache] == [(1, 2, 8, 16), (1, 2, 16, 8)] * 2  # read, never replaced


def test_bpe_on_wikitext2_and_resume(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = [
        "--dry-run",
        "--publish",
        "--corpus",
        "wikitext2",
        "--data-dir",
        str(data_dir),
        "--repository",
        str(tmp_path / "r"),
    ]
    run_dir = ["--run-dir", str(tmp_path / "run")]
    train_main([*common, *run_dir, "--max-iters", "6"])
    train_main([*common, *run_dir, "--max-iters", "12", "--resume"])
    assert "resumed from" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [6, 10, 12]  # dry-run evaluates every 10 iterations and at the end
    manifest = json.loads((tmp_path / "r" / "generator-gpt-wikitext2" / "2" / "model.json").read_text())
    assert manifest["tokenizer"]["kind"] == "bpe" and manifest["tokenizer"]["unk_id"] is None
    assert manifest["training"]["iterations"] == 12 and "test.txt" in manifest["dataset"]["split"]


def test_missing_corpus_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        train_main(["--dry-run", "--data-dir", str(tmp_path), "--repository", str(tmp_path / "r")])
    message = str(info.value)
    assert "tinyshakespeare/input.txt" in message and str(tmp_path) in message and "never downloads" in message


def test_resume_without_a_checkpoint_says_so(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no checkpoint"):
        train_main(
            [
                "--dry-run",
                "--resume",
                "--data-dir",
                str(data_dir),
                "--repository",
                str(tmp_path / "r"),
                "--run-dir",
                str(tmp_path / "empty"),
            ]
        )


def test_the_weights_of_the_best_validation_estimate_are_exported(data_dir: Path, tmp_path: Path) -> None:
    """A run that gets worse after its best evaluation exports the best weights, not the last ones."""
    common = ["--dry-run", "--publish", "--data-dir", str(data_dir), "--repository", str(tmp_path / "r")]
    run_dir = tmp_path / "run"
    train_main([*common, "--run-dir", str(run_dir), "--max-iters", "20"])
    # Resumed with a learning rate far too high: the later evaluations are worse than iteration 20's.
    train_main([*common, "--run-dir", str(run_dir), "--max-iters", "40", "--lr", "10", "--resume"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda r: r["val_loss"])
    assert best["iter"] == 20 and records[-1]["iter"] == 40 and records[-1]["val_loss"] > best["val_loss"]
    manifest = json.loads((tmp_path / "r" / "generator-gpt-shakespeare" / "2" / "model.json").read_text())
    assert manifest["training"]["iterations"] == 40 and manifest["training"]["exported_iteration"] == 20
    assert manifest["evaluation"]["train_loss"] == best["train_loss"]  # the exported iteration's, not the last
    # The exported graph computes what the best weights compute, and not what the last ones do.
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    config = GPTConfig(**checkpoint["model_config"])
    ids = torch.randint(0, config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(
        str(tmp_path / "r" / "generator-gpt-shakespeare" / "2" / "step.onnx"), providers=["CPUExecutionProvider"]
    )
    head_dim = config.n_embd // config.n_head
    # an empty cache: keys (B, H, D, 0), values (B, H, 0, D)
    empty = {
        name: np.zeros(
            (1, config.n_head, head_dim, 0) if name.endswith(".key") else (1, config.n_head, 0, head_dim), np.float32
        )
        for name in cache_names(config.n_layer, "past")
    }
    feeds = {"input_ids": ids.numpy(), "padding": np.zeros(1, np.int64), "length": np.array(0), **empty}
    exported = session.run(["logits"], feeds)[0][0]
    for weights, same in ((checkpoint["best"]["model"], True), (checkpoint["model"], False)):
        model = GPT(config).eval()
        model.load_state_dict(weights)
        with torch.no_grad():
            logits = model(ids)[0, -1].numpy()
        assert np.allclose(exported, logits, atol=1e-3) is same
