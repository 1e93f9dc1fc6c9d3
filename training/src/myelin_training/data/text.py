"""Plain-text corpora for language models, their train/validation split, and their tokenizers.

Corpora (under --data-dir, or any UTF-8 file with --text):
- shakespeare: Tiny Shakespeare (text/tinyshakespeare/input.txt), 1,115,394 characters. Split as
  nanoGPT does: the first 90% of the text trains, the last 10% validates.
- wikitext2: WikiText-2 (text/wikitext-2/). Its train split is not available here, so the
  validation file trains and the test file validates.
- a file given with --text: the first 90% trains, the last 10% validates.

Tokenizers (both are `tokenizers` objects saved as tokenizer.json, which the service loads):
- char: one token per character of the training text, plus <unk> last for anything else.
- bpe: byte-level BPE learned on the training text (no unknown tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from myelin_training.data.files import find_file, fingerprint

UNK = "<unk>"
CORPORA = {
    "shakespeare": ("text/tinyshakespeare/input.txt", "tinyshakespeare/input.txt", "input.txt"),
    "wikitext2": ("text/wikitext-2/valid.txt", "wikitext-2/valid.txt", "wiki.valid.tokens"),
}
WIKITEXT2_VALIDATION = ("text/wikitext-2/test.txt", "wikitext-2/test.txt", "wiki.test.tokens")
TRAIN_FRACTION = 0.9


@dataclass(frozen=True)
class Corpus:
    name: str
    train_text: str
    val_text: str
    files: list[Path]
    split: str  # how train and validation were made, for the manifest

    def fingerprint(self) -> dict[str, object]:
        return {"name": self.name, "split": self.split, **fingerprint(self.files)}


def load_corpus(name: str, data_dir: Path | None, text_file: Path | None = None) -> Corpus:
    if text_file is not None:
        if not text_file.is_file():
            raise FileNotFoundError(f"--text {text_file}: no such file")
        return _split_90_10(text_file.stem, text_file)
    if data_dir is None:
        raise ValueError("a data directory is needed for the built-in corpora")
    if name == "wikitext2":
        train_path = find_file("WikiText-2 validation split", data_dir, CORPORA[name])
        val_path = find_file("WikiText-2 test split", data_dir, WIKITEXT2_VALIDATION)
        return Corpus(
            name,
            train_path.read_text(encoding="utf-8"),
            val_path.read_text(encoding="utf-8"),
            [train_path, val_path],
            "trained on WikiText-2 valid.txt, validated on test.txt (the train split is not available)",
        )
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)} or pass --text FILE")
    return _split_90_10(name, find_file(f"corpus {name}", data_dir, CORPORA[name]))


def _split_90_10(name: str, path: Path) -> Corpus:
    text = path.read_text(encoding="utf-8")
    cut = int(len(text) * TRAIN_FRACTION)
    return Corpus(name, text[:cut], text[cut:], [path], "first 90% of the characters train, last 10% validate")


def char_tokenizer(text: str) -> Tokenizer:
    """A character vocabulary in sorted order (nanoGPT's ids), then <unk> for unseen characters."""
    vocab = {c: i for i, c in enumerate(sorted(set(text)))}
    vocab[UNK] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def bpe_tokenizer(text: str, vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_chunks(text), trainer=trainer)
    return tokenizer


def _chunks(text: str, size: int = 1 << 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def encode(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """The whole text as one int64 id array (encoded in chunks of lines: fast and exact)."""
    lines = text.splitlines(keepends=True)
    pieces = ["".join(lines[i : i + 512]) for i in range(0, len(lines), 512)]
    ids = [e.ids for e in tokenizer.encode_batch(pieces, add_special_tokens=False)]
    return np.fromiter((i for chunk in ids for i in chunk), dtype=np.int64)
