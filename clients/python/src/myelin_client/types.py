"""What the client returns: plain dataclasses, no protobuf."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


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
class Translation:
    """One sentence's translation and how the model rated it."""

    text: str
    score: float  # log_probability divided by the length penalty: what the beam search ranked by
    log_probability: float  # sum of the token log-probabilities, end-of-sentence included
    tokens: int  # subword tokens generated, end-of-sentence included
    source_truncated: bool = False  # the source was cut to the model's limit (truncate=True)
    finished: bool = True  # False: max_length was reached before the end of the sentence


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


@dataclass(frozen=True)
class ReloadResult:
    loaded: list[str]
    unloaded: list[str]
    failed: list[str]
