"""word2vec's training recipes: `default` (word2vec.c's and gensim's settings) and `dry-run` (seconds).

Plain data: the flags of `myelin-train word2vec` default to the `default` recipe's fields and
override them; a dry run takes `dry-run`, which keeps every word of the first `words` words of the
corpus for one epoch (whatever --min-count says).
"""

from __future__ import annotations

from dataclasses import dataclass

from myelin_training.word2vec.model import Word2VecConfig


@dataclass(frozen=True)
class Recipe:
    model: Word2VecConfig  # vocab_size comes from the corpus
    words: int = 0  # 0: the whole corpus; N: its first N words


RECIPES: dict[str, Recipe] = {
    # 100 dimensions, window 5, 5 negatives, subsampling t = 1e-3, min count 5, 5 epochs.
    "default": Recipe(Word2VecConfig()),
    "dry-run": Recipe(Word2VecConfig(min_count=1, epochs=1), words=20_000),
}
