"""What the client returns: plain dataclasses, no protobuf."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np


@dataclass(frozen=True)
class LabelProbability:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Classification:
    """One image's labels, most probable first."""

    labels: list[LabelProbability]

    @property
    def label(self) -> str:
        return self.labels[0].label

    @property
    def probability(self) -> float:
        return self.labels[0].probability


@dataclass(frozen=True)
class ClassifyResult:
    """The model and version that answered, and one Classification per image, in order."""

    model: str
    version: int
    classifications: list[Classification]

    def __len__(self) -> int:
        return len(self.classifications)

    def __iter__(self) -> Iterator[Classification]:
        return iter(self.classifications)

    def __getitem__(self, index: int) -> Classification:
        return self.classifications[index]

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classifications]


@dataclass(frozen=True)
class Beam:
    """One hypothesis of the beam search: each field means what Translation's of that name means."""

    text: str
    score: float
    log_probability: float
    tokens: int
    finished: bool = True


@dataclass(frozen=True)
class Translation:
    """One sentence's translation and how the model rated it."""

    text: str
    score: float  # log_probability divided by the length penalty: what the beam search ranked by
    log_probability: float  # sum of the token log-probabilities, end-of-sentence included
    tokens: int  # subword tokens generated, end-of-sentence included
    source_truncated: bool = False  # the source was cut to the model's limit (truncate=True)
    finished: bool = True  # False: max_length was reached before the end of the sentence
    # With translate(beams=True): every hypothesis, best first (the first is this translation); else empty.
    beams: list[Beam] = field(default_factory=list)


@dataclass(frozen=True)
class TranslateResult:
    """The model and version that answered, and one Translation per sentence, in order."""

    model: str
    version: int
    translations: list[Translation]

    def __len__(self) -> int:
        return len(self.translations)

    def __iter__(self) -> Iterator[Translation]:
        return iter(self.translations)

    def __getitem__(self, index: int) -> Translation:
        return self.translations[index]

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.translations]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # LOADING | READY | FAILED | UNLOADED
    reason: str = ""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: int
    family: str
    architecture: str
    labels: list[str]
    evaluation: dict[str, float]
    versions: list[VersionStatus]
    execution_provider: str
    inputs: dict[str, list[TensorSpec]] = field(default_factory=dict)  # graph name -> inputs
    outputs: dict[str, list[TensorSpec]] = field(default_factory=dict)
    manifest_json: str = ""
    # graph name -> the dynamic batcher in force; graphs the service runs without one are absent
    batching: dict[str, Batching] = field(default_factory=dict)


@dataclass(frozen=True)
class Batching:
    """How a graph's concurrent requests are batched (the service's settings, then the manifest's)."""

    enabled: bool
    max_batch_size: int  # rows per onnxruntime execution
    max_queue_delay_us: int  # how long the oldest request may wait for others
    adaptive_delay: bool  # wait only when another request is expected inside the delay
    max_queue_size: int  # requests waiting at once; more are refused
    queue_timeout_s: float
    instances: int  # executions in flight at once


@dataclass(frozen=True)
class ReloadResult:
    loaded: list[str]
    unloaded: list[str]
    failed: list[str]


@dataclass(frozen=True)
class ScoreResult:
    """A text's tokens and the log-probability (natural log) of each after the ones before it."""

    model: str
    version: int
    token_ids: list[int]
    logprobs: list[float]  # one fewer than token_ids: the first token is context only

    @property
    def perplexity(self) -> float:
        """exp of the mean negative log-probability per predicted token."""
        return math.exp(-sum(self.logprobs) / len(self.logprobs))


class GenerationOptions(TypedDict, total=False):
    """How `generate` and `complete` sample: keyword arguments of both (and of both clients), or a dict
    passed as `**options`. A key left out (or None) takes the service's default.

    max_new_tokens: at most this many new tokens (0: the service default).
    temperature: 0 is greedy (default 1).
    top_k: sample from the k most probable tokens (0: off).
    top_p: nucleus sampling, in (0, 1] (default 1: off).
    repetition_penalty: above 1 discourages repeats (default 1: off).
    seed: the same seed gives the same text (default: a random one, reported in the Completion).
    stop: a stop sequence, or several: generation ends when the text contains one (left out of it).
    """

    max_new_tokens: int
    temperature: float | None
    top_k: int
    top_p: float | None
    repetition_penalty: float | None
    seed: int | None
    stop: str | list[str] | tuple[str, ...] | None


@dataclass(frozen=True)
class GenerationChunk:
    """New text (possibly empty: text is held back while it may start a stop sequence) and tokens."""

    text: str
    token_ids: list[int]


@dataclass(frozen=True)
class Completion:
    """A finished generation: the text (without prompt or stop sequence) and why it ended.

    finish_reason: "length" (max_new_tokens or the context reached), "stop" (a stop sequence
    appeared: `stop_sequence`), or "cancelled" (the service stopped it: shutdown or unload).
    """

    model: str
    version: int
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    generated_tokens: int
    seed: int
    stop_sequence: str = ""


@dataclass(frozen=True)
class WordVector:
    """One word's L2-normalised vector; `vector` is None (and index -1) for an unknown word."""

    word: str
    index: int
    vector: np.ndarray | None

    @property
    def found(self) -> bool:
        return self.vector is not None


@dataclass(frozen=True)
class EmbedResult:
    model: str
    version: int
    dim: int
    vectors: list[WordVector]

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self) -> Iterator[WordVector]:
        return iter(self.vectors)

    def __getitem__(self, index: int) -> WordVector:
        return self.vectors[index]

    @property
    def unknown(self) -> list[str]:
        return [v.word for v in self.vectors if not v.found]


@dataclass(frozen=True)
class Neighbour:
    word: str
    index: int
    score: float  # cosine similarity


@dataclass(frozen=True)
class NeighboursResult:
    """Words nearest a query, most similar first."""

    model: str
    version: int
    neighbours: list[Neighbour]

    def __len__(self) -> int:
        return len(self.neighbours)

    def __iter__(self) -> Iterator[Neighbour]:
        return iter(self.neighbours)

    def __getitem__(self, index: int) -> Neighbour:
        return self.neighbours[index]

    @property
    def words(self) -> list[str]:
        return [n.word for n in self.neighbours]


@dataclass(frozen=True)
class AnalogyAnswer:
    """Candidates for a : b :: c : ?, best first; empty (and `unknown_words` set) for unknown words."""

    question: tuple[str, str, str]
    candidates: list[Neighbour]
    unknown_words: list[str]

    @property
    def word(self) -> str | None:
        return self.candidates[0].word if self.candidates else None


@dataclass(frozen=True)
class AnalogyResult:
    model: str
    version: int
    answers: list[AnalogyAnswer]

    def __len__(self) -> int:
        return len(self.answers)

    def __iter__(self) -> Iterator[AnalogyAnswer]:
        return iter(self.answers)

    def __getitem__(self, index: int) -> AnalogyAnswer:
        return self.answers[index]

    @property
    def words(self) -> list[str | None]:
        return [a.word for a in self.answers]


@dataclass(frozen=True)
class PairSimilarity:
    first: str
    second: str
    similarity: float | None  # None when a word is unknown
    unknown_words: list[str]


@dataclass(frozen=True)
class SimilarityResult:
    model: str
    version: int
    pairs: list[PairSimilarity]

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PairSimilarity]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> PairSimilarity:
        return self.pairs[index]


@dataclass(frozen=True)
class DoesntMatchResult:
    """The odd word out, and each word's cosine similarity to the mean of all of them."""

    model: str
    version: int
    word: str
    similarities: dict[str, float]
