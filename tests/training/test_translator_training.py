"""The translator's data, model and training job (dry run): splits, tokenizer, KV cache, export, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from myelin_training.cli import train_main
from myelin_training.data import pairs
from myelin_training.data.files import DatasetNotFoundError
from myelin_training.translator import tokenizer as tk
from myelin_training.translator.averaging import average_weights
from myelin_training.translator.batches import EncodedPairs, make_batches
from myelin_training.translator.model import Translator, TranslatorConfig


@pytest.fixture(scope="module")
def tatoeba(data_dir: Path) -> pairs.Corpus:
    return pairs.load_corpus("tatoeba", data_dir)


def test_tatoeba_split_keeps_each_english_sentence_in_one_split(tatoeba: pairs.Corpus, data_dir: Path) -> None:
    keys = {name: {pairs.english_key(p.source) for p in split} for name, split in tatoeba.splits.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    sizes = tatoeba.sizes()
    assert sum(s["pairs"] for s in sizes.values()) == 135_842
    assert 0.04 < sizes["test"]["english_sentences"] / sum(len(k) for k in keys.values()) < 0.06
    again = pairs.load_corpus("tatoeba", data_dir)  # deterministic: the same split every time
    assert again.splits["test"] == tatoeba.splits["test"]
    # "I'm cold." and "i'm  cold." are the same English sentence.
    recipe = pairs.SplitRecipe()
    assert pairs.assign_split("I'm cold.", recipe) == pairs.assign_split("i'm  cold.", recipe)


def test_multi30k_uses_its_own_splits(data_dir: Path) -> None:
    corpus = pairs.load_corpus("multi30k", data_dir)
    sizes = corpus.sizes()
    assert sizes["validation"]["pairs"] == 1014 and sizes["test"]["pairs"] == 1000
    assert 28_900 < sizes["train"]["pairs"] <= 29_000
    held_out = {pairs.english_key(p.source) for name in ("validation", "test") for p in corpus.splits[name]}
    assert not held_out & {pairs.english_key(p.source) for p in corpus.splits["train"]}


def test_missing_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"eng-fra\.txt") as info:
        pairs.load_corpus("tatoeba", tmp_path)
    assert str(tmp_path / "translation" / "eng-fra.txt") in str(info.value)
    with pytest.raises(FileNotFoundError, match="Multi30k"):
        train_main(
            [
                "translator",
                "--dry-run",
                "--corpus",
                "multi30k",
                "--data-dir",
                str(tmp_path),
                "--repository",
                str(tmp_path / "r"),
            ]
        )


def test_tokenizer_round_trips_and_keeps_the_special_ids(tatoeba: pairs.Corpus) -> None:
    train = tatoeba.splits["train"][:3000]
    tokenizer = tk.train_tokenizer((t for p in train for t in (p.source, p.target)), 600)
    assert [tokenizer.token_to_id(t) for t in tk.SPECIALS] == [0, 1, 2, 3]
    for text in ("Je n'ai pas froid.", "Où est la gare\u202f?"):
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert min(ids) >= len(tk.SPECIALS)
        assert tk.decode(tokenizer, [tk.BOS_ID, *ids, tk.EOS_ID]) == text.replace("\u202f", " ")


def test_length_buckets_respect_the_token_budget() -> None:
    rng = np.random.default_rng(0)
    data = EncodedPairs(
        [[5] * int(n) for n in rng.integers(1, 40, 500)], [[6] * int(n) for n in rng.integers(1, 40, 500)]
    )
    batches = make_batches(data, 300, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    src, tgt = data.lengths()
    for b in batches:
        assert len(b) * (max(src[b].max(), tgt[b].max()) + 1) <= 300


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decoding_is_the_training_forward_pass(norm_first: bool) -> None:
    torch.manual_seed(0)
    config = TranslatorConfig(vocab_size=50, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=48)
    model = Translator(TranslatorConfig(**{**config.__dict__, "norm_first": norm_first})).eval()
    source = torch.randint(4, 50, (3, 7))
    source_mask = torch.ones(3, 7, dtype=torch.bool)
    source_mask[1, 4:] = False
    target = torch.randint(4, 50, (3, 6))
    with torch.no_grad():
        full = model(source, source_mask, target)  # (B, T, V): teacher forcing, empty cache
        keys, values = model.cross_keys_values(model.encode(source, source_mask))
        past_k, past_v, past_mask = model.empty_cache(3, torch.device("cpu"))
        # Two padding slots in front of the cache, as for a row that joined a batch late.
        pad = torch.randn(3, 2, 4, 2, 8)
        past_k, past_v = torch.cat([pad, past_k], 3), torch.cat([pad, past_v], 3)
        past_mask = torch.cat([torch.zeros(3, 2, dtype=torch.bool), past_mask], 1)
        for t in range(6):
            states, k, v = model.decode(
                target[:, t : t + 1], torch.full((3, 1), t), past_k, past_v, past_mask, keys, values, source_mask
            )
            assert torch.allclose(model.logits(states)[:, 0], full[:, t], atol=1e-5)
            past_k, past_v = torch.cat([past_k, k], 3), torch.cat([past_v, v], 3)
            past_mask = torch.cat([past_mask, torch.ones(3, 1, dtype=torch.bool)], 1)
        # Causal: changing a later target token leaves earlier positions untouched.
        changed = target.clone()
        changed[:, 4] = 7
        assert torch.allclose(model(source, source_mask, changed)[:, :4], full[:, :4], atol=1e-6)


def test_dry_run_exports_a_complete_version(translator_repository: Path) -> None:
    version = translator_repository / "translator-tatoeba" / "1"
    manifest = json.loads((version / "model.json").read_text())
    assert (manifest["family"], manifest["architecture"]) == ("translator", "transformer")
    assert manifest["dataset"]["corpus"] == "tatoeba" and len(manifest["dataset"]["sha256"]) == 64
    assert manifest["dataset"]["sizes"]["test"]["pairs"] == 6820
    assert manifest["training"]["dry_run"] is True and manifest["training"]["model_config"]["d_model"] == 32
    for key in ("validation_bleu", "test_bleu_greedy", "test_chrf_greedy", "test_pairs"):
        assert key in manifest["evaluation"]
    for graph in ("encoder", "decoder"):
        entry = manifest["graphs"][graph]
        assert entry["parity"]["max_abs_diff"] < 1e-4 and entry["parity"]["trials"] >= 4
        assert (version / entry["file"]).is_file()
    # Parity was checked at an empty cache (the first step) and at a whole prefix (T > 1, P = 0).
    shapes = manifest["graphs"]["decoder"]["parity"]["input_shapes"]
    assert any(s[0][1] == 1 and s[2][3] == 0 for s in shapes) and any(s[0][1] > 1 and s[2][3] == 0 for s in shapes)
    tokenizer = tk.load(version / manifest["tokenizer"]["file"])
    assert tokenizer.get_vocab_size() == manifest["tokenizer"]["vocab_size"]
    decoder = ort.InferenceSession(str(version / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in decoder.get_inputs()][:2] == ["input_ids", "position_ids"]
    assert [o.name for o in decoder.get_outputs()] == ["log_probs", "present_keys", "present_values"]
    assert (version / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_of_a_finished_run_only_exports_again(translator_run: tuple[Path, Path], data_dir: Path) -> None:
    repository, run_dir = translator_run
    assert (run_dir / "checkpoint-last.pt").is_file() and (run_dir / "checkpoint-best.pt").is_file()
    lines = (run_dir / "metrics.jsonl").read_text().count("\n")
    train_main(
        [
            "translator",
            "--resume",
            "--data-dir",
            str(data_dir),
            "--repository",
            str(repository),
            "--run-dir",
            str(run_dir),
        ]
    )
    first = json.loads((repository / "translator-tatoeba" / "1" / "model.json").read_text())
    second = json.loads((repository / "translator-tatoeba" / "2" / "model.json").read_text())
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == lines  # no new epoch
    assert second["evaluation"] == first["evaluation"]
    assert second["training"]["recipe"] == "dry"
    (repository / "translator-tatoeba" / "2").rename(repository.parent / "translator-v2-moved-aside")


def test_average_weights_is_the_element_wise_mean(tmp_path: Path) -> None:
    config = TranslatorConfig(vocab_size=40, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32)
    states = []
    for seed in range(3):
        torch.manual_seed(seed)
        states.append(Translator(config).state_dict())
        torch.save({"epoch": seed + 1, "model": states[-1]}, tmp_path / f"w{seed}.pt")
    averaged = average_weights([tmp_path / f"w{seed}.pt" for seed in range(3)])
    assert set(averaged) == set(states[0])
    for name, tensor in averaged.items():
        assert tensor.dtype == states[0][name].dtype
        torch.testing.assert_close(tensor, sum(s[name] for s in states) / 3)


def test_average_last_keeps_the_last_epochs_and_exports_what_validation_prefers(tmp_path: Path, data_dir: Path) -> None:
    repository, run_dir = tmp_path / "repository", tmp_path / "run"
    common = ["--data-dir", str(data_dir), "--repository", str(repository), "--run-dir", str(run_dir)]
    train_main(["translator", "--dry-run", "--publish", "--epochs", "3", "--average-last", "2", *common])
    assert sorted(p.name for p in run_dir.glob("weights-epoch*.pt")) == ["weights-epoch2.pt", "weights-epoch3.pt"]
    manifest = json.loads((repository / "translator-tatoeba" / "1" / "model.json").read_text())
    evaluation = manifest["evaluation"]
    assert manifest["training"]["train_config"]["average_last"] == 2
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best_single = max(e["val_bleu"] for e in epochs if "val_bleu" in e)
    if evaluation["averaged_epochs"] == 2:
        assert evaluation["validation_bleu"] > best_single
    else:
        assert evaluation["averaged_epochs"] == 0 and evaluation["validation_bleu"] == best_single
