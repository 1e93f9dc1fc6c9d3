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
