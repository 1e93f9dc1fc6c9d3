"""English-French sentence pairs: Tatoeba (manythings.org's eng-fra.txt) and Multi30k, with splits.

Tatoeba comes as one file, so it is split here: pairs are grouped by their English sentence
(normalised: Unicode NFKC, whitespace collapsed, case-folded) and each group goes to train,
validation or test by a hash of that key. The same English sentence therefore never lands in two
splits, the assignment does not depend on file order, and adding lines to the file moves no
existing sentence. Multi30k comes with its own train / val / test_2016_flickr files; training
pairs whose English also appears in validation or test are dropped so the same rule holds.
"""

from __future__ import annotations

import gzip
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from myelin_training.data.files import find_file, fingerprint

CORPORA = ("tatoeba", "multi30k")
SPLITS = ("train", "validation", "test")
MULTI30K_FILES = {"train": "train", "validation": "val", "test": "test_2016_flickr"}


@dataclass(frozen=True)
class Pair:
    source: str  # English
    target: str  # French


@dataclass(frozen=True)
class SplitRecipe:
    """How Tatoeba is cut: fractions of English sentences per split and the hash salt."""

    validation_fraction: float = 0.03
    test_fraction: float = 0.05
    salt: str = "myelin-translator-v1"


@dataclass(frozen=True)
class Corpus:
    name: str
    splits: dict[str, list[Pair]]
    files: list[Path]
    recipe: dict[str, Any]

    def fingerprint(self) -> dict[str, object]:
        return {"corpus": self.name, **fingerprint(self.files), "split": self.recipe, "sizes": self.sizes()}

    def sizes(self) -> dict[str, dict[str, int]]:
        return {
            name: {"pairs": len(pairs), "english_sentences": len({english_key(p.source) for p in pairs})}
            for name, pairs in self.splits.items()
        }


def english_key(sentence: str) -> str:
    """What counts as "the same English sentence": NFKC, collapsed whitespace, case-folded."""
    return " ".join(unicodedata.normalize("NFKC", sentence).split()).casefold()


def assign_split(sentence: str, recipe: SplitRecipe) -> str:
    """train, validation or test for this English sentence: a pure function of its key and the salt."""
    digest = hashlib.sha256(f"{recipe.salt}\n{english_key(sentence)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < recipe.test_fraction:
        return "test"
    if u < recipe.test_fraction + recipe.validation_fraction:
        return "validation"
    return "train"


def tatoeba_path(data_dir: Path) -> Path:
    return find_file(
        "Tatoeba English-French pairs (eng-fra.txt)",
        data_dir,
        ["translation/eng-fra.txt", "eng-fra.txt", "translation/fra.txt", "fra.txt"],
    )


def read_tatoeba(path: Path) -> list[Pair]:
    """`English<TAB>French[<TAB>attribution]` lines; blank lines are skipped, malformed ones are an error."""
    pairs = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(f"{path}:{number}: expected 'English<TAB>French', got {line[:80]!r}")
            pairs.append(Pair(fields[0].strip(), fields[1].strip()))
    return pairs


def split_pairs(pairs: Sequence[Pair], recipe: SplitRecipe) -> dict[str, list[Pair]]:
    splits: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        splits[assign_split(pair.source, recipe)].append(pair)
    return splits


def load_tatoeba(data_dir: Path, recipe: SplitRecipe | None = None) -> Corpus:
    recipe = recipe or SplitRecipe()
    path = tatoeba_path(data_dir)
    splits = split_pairs(read_tatoeba(path), recipe)
    return Corpus("tatoeba", splits, [path], {"method": "sha256 of the English sentence", **asdict(recipe)})


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def load_multi30k(data_dir: Path) -> Corpus:
    splits: dict[str, list[Pair]] = {}
    files: list[Path] = []
    for split, stem in MULTI30K_FILES.items():
        sides = []
        for lang in ("en", "fr"):
            candidates = [
                f"{sub}{stem}.{lang}{ext}" for sub in ("translation/multi30k/", "multi30k/", "") for ext in (".gz", "")
            ]
            path = find_file(f"Multi30k {stem}.{lang}", data_dir, candidates)
            files.append(path)
            sides.append(_read_lines(path))
        english, french = sides
        if len(english) != len(french):
            raise ValueError(f"Multi30k {stem}: {len(english)} English lines but {len(french)} French lines")
        splits[split] = [
            Pair(e.strip(), f.strip()) for e, f in zip(english, french, strict=True) if e.strip() and f.strip()
        ]
    held_out = {english_key(p.source) for name in ("validation", "test") for p in splits[name]}
    splits["train"] = [p for p in splits["train"] if english_key(p.source) not in held_out]
    recipe = {"method": "official Multi30k files; train pairs whose English is in validation or test dropped"}
    return Corpus("multi30k", splits, files, recipe)


def load_corpus(name: str, data_dir: Path, recipe: SplitRecipe | None = None) -> Corpus:
    if name == "tatoeba":
        return load_tatoeba(data_dir, recipe)
    if name == "multi30k":
        return load_multi30k(data_dir)
    raise ValueError(f"unknown corpus {name!r}; choose one of: {', '.join(CORPORA)}")


def references_by_source(pairs: Sequence[Pair]) -> tuple[list[str], list[list[str]]]:
    """Unique English sentences (first-seen order) and every French translation of each."""
    refs: dict[str, list[str]] = {}
    for p in pairs:
        refs.setdefault(p.source, []).append(p.target)
    return list(refs), list(refs.values())
