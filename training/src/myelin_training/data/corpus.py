"""Plain-text corpora, streamed: files or folders, `.gz` or not, one huge line or many lines.

Tokenisation (the customary one for the word-vector evaluation sets): lowercase, then every maximal
run of Unicode letters and digits is a word; everything else (punctuation, apostrophes, `@-@`,
the `<` `>` of WikiText's `<unk>`) separates words. So "King's" gives `king`, `s`.

A line is a sentence (windows never cross one), and a sentence longer than `MAX_SENTENCE` words
is cut into pieces, as word2vec.c and gensim do, so a text8-like single line streams in pieces
and never sits whole in memory: text is read in blocks of `BLOCK_CHARS` characters.

Formats: `text` takes whole lines; `tsv-first` takes the first tab-separated column of each line
(the English side of Tatoeba's `English<TAB>French` pairs).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from myelin_training.data.files import DatasetNotFoundError, sha256_file

MAX_SENTENCE = 10_000
BLOCK_CHARS = 1 << 20
FORMATS = ("text", "tsv-first")
WORD = re.compile(r"[^\W_]+")

# The English text under ../shared/data, about two million words: (path, format).
PRESETS: dict[str, list[tuple[str, str]]] = {
    "english": [
        ("text/wikitext-2/valid.txt", "text"),
        ("text/wikitext-2/test.txt", "text"),
        ("text/tinyshakespeare/input.txt", "text"),
        ("translation/eng-fra.txt", "tsv-first"),
        ("translation/multi30k/train.en.gz", "text"),
        ("translation/multi30k/val.en.gz", "text"),
        ("translation/multi30k/test_2016_flickr.en.gz", "text"),
        ("text/gensim-lee/lee_background.cor", "text"),
        ("text/gensim-lee/lee.cor", "text"),
    ]
}


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    format: str = "text"


def tokenize(text: str) -> list[str]:
    return WORD.findall(text.lower())


def resolve(paths: Sequence[Path], fmt: str = "text") -> list[CorpusFile]:
    """Files as given, folders expanded (sorted, recursively, hidden files skipped)."""
    if fmt not in FORMATS:
        raise ValueError(f"corpus format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    files: list[CorpusFile] = []
    missing: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)
            )
            files += [CorpusFile(p, fmt) for p in found]
            if not found:
                missing.append(path)
        elif path.is_file():
            files.append(CorpusFile(path, fmt))
        else:
            missing.append(path)
    if missing:
        raise DatasetNotFoundError("corpus file(s)", missing)
    return files


def preset(name: str, data_dir: Path) -> list[CorpusFile]:
    """A named corpus under `data_dir`; every missing file is named in one error."""
    if name not in PRESETS:
        raise ValueError(f"unknown corpus preset {name!r}; choose one of: {', '.join(PRESETS)}")
    entries = [CorpusFile(data_dir / rel, fmt) for rel, fmt in PRESETS[name]]
    missing = [e.path for e in entries if not e.path.is_file()]
    if missing:
        raise DatasetNotFoundError(f"corpus preset {name!r}", missing)
    return entries


def _open_text(path: Path) -> TextIO:
    """Text from a plain or gzip-compressed file (recognised by its magic bytes, whatever its name)."""
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def _pieces(file: CorpusFile) -> Iterator[tuple[str, bool]]:
    """(text, ends_a_line): whole lines, or pieces of about BLOCK_CHARS cut at whitespace."""
    with _open_text(file.path) as f:
        carry = ""
        while block := f.read(BLOCK_CHARS):
            lines = (carry + block).split("\n")
            carry = lines.pop()
            for line in lines:
                yield line, True
            if len(carry) > BLOCK_CHARS:
                cut = max(carry.rfind(" "), carry.rfind("\t"))
                if cut > 0:
                    yield carry[:cut], False
                    carry = carry[cut + 1 :]
        if carry:
            yield carry, True


def sentences(files: Iterable[CorpusFile]) -> Iterator[list[str]]:
    """Tokenised sentences (lines), each at most MAX_SENTENCE words; empty lines are skipped."""
    for file in files:
        words: list[str] = []
        in_first_column = True  # tsv-first: still before the line's first tab
        for text, ends_line in _pieces(file):
            if file.format == "tsv-first":
                if in_first_column:
                    head, tab, _ = text.partition("\t")
                    words += tokenize(head)
                    in_first_column = not tab
            else:
                words += tokenize(text)
            while len(words) >= MAX_SENTENCE:
                yield words[:MAX_SENTENCE]
                words = words[MAX_SENTENCE:]
            if ends_line:
                if words:
                    yield words
                words, in_first_column = [], True


def fingerprint(files: Sequence[CorpusFile]) -> dict[str, object]:
    """Per-file SHA-256 and one digest over the ordered list (the same files in another order differ)."""
    entries = [{"path": str(f.path), "format": f.format, "sha256": sha256_file(f.path)} for f in files]
    combined = hashlib.sha256("".join(f"{e['format']}:{e['sha256']}\n" for e in entries).encode()).hexdigest()
    return {"files": entries, "sha256": combined}
