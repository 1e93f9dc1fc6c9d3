"""A version's vocabulary: `vocab.tsv`, one `word<TAB>count` line per word, most frequent first."""

from __future__ import annotations

import re
from pathlib import Path

# Words as training splits its corpora (myelin_training.data.corpus.tokenize): runs of letters and
# digits, lowercased; punctuation and underscores separate them.
WORD = re.compile(r"[^\W_]+")


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower())


class Vocabulary:
    def __init__(self, words: list[str], counts: list[int]) -> None:
        self.words = words
        self.counts = counts
        self._index = {w: i for i, w in enumerate(words)}

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        """The word's id (frequency rank), or -1. Lookups are lowercase, as training's tokeniser."""
        return self._index.get(word.lower(), -1)

    @classmethod
    def read(cls, folder: Path, name: str) -> Vocabulary:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"vocab file {name!r} must be a plain file name inside the version folder")
        words, counts = [], []
        for number, line in enumerate((folder / name).read_text(encoding="utf-8").splitlines(), 1):
            word, _, count = line.partition("\t")
            if not word or not count.isdigit():
                raise ValueError(f"{folder / name}:{number}: expected `word<TAB>count`")
            words.append(word)
            counts.append(int(count))
        if len(set(words)) != len(words):
            raise ValueError(f"{folder / name}: a word appears twice")
        if not words:
            raise ValueError(f"{folder / name}: empty vocabulary")
        return cls(words, counts)
