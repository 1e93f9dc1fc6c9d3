"""The model repository: discovery, versions, manifests and (re)loading.

Layout (what training writes): <root>/<model-name>/<version>/model.json plus the ONNX graphs and
side files the manifest names. Versions are integer folder names; anything else (a training job's
`.staging-*` folder) is ignored. A service loads every version whose manifest names its family,
serves the newest ready one unless a request names a version, and on each refresh loads new
versions, unloads removed ones, and keeps the previous version serving when a new one fails.

Request model names never touch the file system: they are looked up among the names discovered
here, after a syntax check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from myelin_serving.batching import DynamicBatcher
from myelin_serving.errors import InvalidArgument, ModelNotReady, NotFound
from myelin_serving.metrics import Metrics
from myelin_serving.runtime import OnnxGraph, RuntimeOptions
from myelin_serving.settings import BatchingSettings, GenerationSettings, Settings

log = logging.getLogger(__name__)

MANIFEST = "model.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TensorSpec(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class GraphEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: str
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []

    @field_validator("file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # A manifest may only point at files inside its own version folder.
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"graph file {value!r} must be a plain file name inside the version folder")
        return value


class Manifest(BaseModel):
    """The fields services rely on; everything else in model.json is kept and shown as-is."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = 1
    name: str
    version: int
    family: str
    architecture: str = ""
    graphs: dict[str, GraphEntry]
    labels: list[str] = []
    evaluation: dict[str, Any] = {}
    serving: dict[str, Any] = {}


@dataclass(frozen=True)
class ModelVersion:
    """One version folder on disk, with its parsed manifest."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    manifest_text: str
    fingerprint: str

    def graph_path(self, graph: str) -> Path:
        return self.path / self.manifest.graphs[graph].file


class LoadedModel:
    """A version in memory: its graphs, their batchers, and whatever the family adds."""

    def __init__(
        self, version: ModelVersion, graphs: dict[str, OnnxGraph], batchers: dict[str, DynamicBatcher]
    ) -> None:
        self.source = version
        self.name = version.name
        self.version = version.version
        self.manifest = version.manifest
        self.graphs = graphs
        self.batchers = batchers

    @property
    def provider(self) -> str:
        return next(iter(self.graphs.values())).provider if self.graphs else ""

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.batchers.values()))


@dataclass
class LoadContext:
    """What a family's loader needs to build a LoadedModel."""

    runtime: RuntimeOptions
    batching: BatchingSettings
    metrics: Metrics | None = None
    # The process's settings, for families with limits of their own (translator.*); None in unit tests.
    settings: Settings | None = None

    @property
    def generation(self) -> GenerationSettings:
        """The generator family's limits: the process's, or the defaults when there are no settings."""
        return self.settings.generation if self.settings is not None else GenerationSettings()

    async def open_graph(self, version: ModelVersion, graph: str) -> OnnxGraph:
        return await asyncio.to_thread(OnnxGraph, version.graph_path(graph), self.runtime)

    def batching_for(self, version: ModelVersion) -> BatchingSettings:
        overrides = version.manifest.serving.get("batching", {})
        return BatchingSettings.model_validate({**self.batching.model_dump(), **overrides})

    def batcher(self, version: ModelVersion, graph: OnnxGraph) -> DynamicBatcher:
        return DynamicBatcher(
            graph.run, self.batching_for(version), model=version.name, version=version.version, metrics=self.metrics
        )


Loader = Callable[[ModelVersion, LoadContext], Awaitable[LoadedModel]]


@dataclass
class VersionStatus:
    version: int
    state: str  # LOADING | READY | FAILED
    reason: str = ""
    model: LoadedModel | None = None
    fingerprint: str = ""
    source: ModelVersion | None = None  # the files behind `model`, or the ones that failed


@dataclass
class ReloadReport:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def check_name(name: str) -> str:
    if not name:
        raise InvalidArgument("model.name is required")
    if not NAME_RE.fullmatch(name):  # not match: `$` would let a trailing newline through
        raise InvalidArgument(
            f"{name[:80]!r} is not a valid model name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters"
        )
    return name


def scan(root: Path, family: str) -> dict[str, dict[int, ModelVersion]]:
    """Every version folder under `root` whose manifest names `family`. Blocking: run in a thread."""
    found: dict[str, dict[int, ModelVersion]] = {}
    if not root.is_dir():
        return found
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not NAME_RE.fullmatch(model_dir.name):
            continue
        for version_dir in model_dir.iterdir():
            if not version_dir.is_dir() or not version_dir.name.isdigit():
                continue
            version = _read_version(model_dir.name, int(version_dir.name), version_dir)
            if version is not None and version.manifest.family == family:
                found.setdefault(model_dir.name, {})[version.version] = version
    return found


def _read_version(name: str, number: int, path: Path) -> ModelVersion | None:
    manifest_path = path / MANIFEST
    try:
        text = manifest_path.read_text()
    except FileNotFoundError:
        return None  # not a version (yet)
    try:
        manifest = Manifest.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        log.error("ignoring %s: unreadable manifest: %s", manifest_path, exc)
        return None
    except ValidationError as exc:
        # Each problem with where it is ("graphs.model.file: ..."), not pydantic's "1 validation error" header.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors())
        log.error("ignoring %s: invalid manifest: %s", manifest_path, problems)
        return None
    if manifest.name != name or manifest.version != number:
        log.error("ignoring %s: it describes %s/%s", manifest_path, manifest.name, manifest.version)
        return None
    return ModelVersion(name, number, path, manifest, text, _fingerprint(path, text))


def _fingerprint(path: Path, manifest_text: str) -> str:
    # A version folder is immutable once published; this notices the rare in-place rewrite.
    digest = hashlib.sha256(manifest_text.encode())
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_file():
            st = entry.stat()
            digest.update(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


class ModelManager:
    """The versions one service serves, their states, and their lifecycle."""

    def __init__(
        self,
        root: Path,
        family: str,
        loader: Loader,
        context: LoadContext,
        *,
        latest: int = 0,
        metrics: Metrics | None = None,
    ) -> None:
        self.root = root
        self.family = family
        self._loader = loader
        self._context = context
        self._latest = latest
        self._metrics = metrics
        self._models: dict[str, dict[int, VersionStatus]] = {}
        # Unloaded on request (UnloadModel, RepositoryModelUnload): rescans leave them out until loaded.
        self._held: set[str] = set()
        self._on_disk: dict[str, dict[int, ModelVersion]] = {}  # what the last rescan found
        self._lock = asyncio.Lock()
        self._closing: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[], Awaitable[None]]] = []

    def on_change(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Call `listener` after every refresh that loaded, unloaded or failed something."""
        self._listeners.append(listener)

    # Lookups: called on the event loop for every request.

    def get(self, name: str, version: int = 0) -> LoadedModel:
        check_name(name)
        if version < 0:
            raise InvalidArgument(f"model.version must be 0 (newest) or a positive version, not {version}")
        versions = self._models.get(name)
        if not versions:
            served = ", ".join(sorted(self._models)) or "none yet"
            raise NotFound(f"model {name!r} not found; this {self.family} service serves: {served}")
        if version:
            status = versions.get(version)
            if status is None:
                raise NotFound(f"model {name!r} has no version {version}; versions: {_join(versions)}")
            if status.model is None:
                raise ModelNotReady(f"model {name!r} version {version} is {status.state.lower()}: {status.reason}")
            return status.model
        for number in sorted(versions, reverse=True):
            if versions[number].model is not None:
                return versions[number].model  # type: ignore[return-value]
        reasons = "; ".join(f"version {v}: {s.state.lower()} {s.reason}".strip() for v, s in sorted(versions.items()))
        raise ModelNotReady(f"model {name!r} has no ready version ({reasons})")

    def names(self) -> list[str]:
        return sorted(self._models)

    def knows(self, name: str) -> bool:
        """Whether `name` has any version here, ready or not (no syntax check: call check_name first)."""
        return name in self._models

    def statuses(self, name: str) -> list[VersionStatus]:
        return [self._models[name][v] for v in sorted(self._models.get(name, {}), reverse=True)]

    def ready_models(self) -> list[LoadedModel]:
        return [s.model for versions in self._models.values() for s in versions.values() if s.model is not None]

    @property
    def ready(self) -> bool:
        return any(s.model is not None for versions in self._models.values() for s in versions.values())

    # Lifecycle.

    async def refresh(self) -> ReloadReport:
        """Bring the loaded set in line with the repository on disk."""
        async with self._lock:
            report = ReloadReport()
            on_disk = self._on_disk = await asyncio.to_thread(scan, self.root, self.family)
            wanted = {name: self._apply_policy(v) for name, v in on_disk.items() if name not in self._held}
            for name in list(self._models):
                for number in list(self._models[name]):
                    if number not in wanted.get(name, {}):
                        self._unload(name, number)
                        report.unloaded.append(f"{name}/{number}")
                if not self._models[name]:
                    del self._models[name]
            for name, versions in wanted.items():
                for number, version in sorted(versions.items()):
                    current = self._models.get(name, {}).get(number)
                    if current is not None and current.fingerprint == version.fingerprint:
                        continue
                    ok = await self._load(version, current)
                    (report.loaded if ok else report.failed).append(f"{name}/{number}")
        if report.loaded or report.unloaded or report.failed:
            for listener in self._listeners:
                await listener()
        return report

    def on_disk(self) -> dict[str, dict[int, ModelVersion]]:
        """The models of this family in the repository at the last rescan, loaded or not."""
        return self._on_disk

    def unloaded(self, name: str) -> bool:
        """Whether `name` was unloaded on request (and stays so until `load_model`)."""
        return name in self._held

    async def load_model(self, name: str) -> ReloadReport:
        """Serve `name` again if it was unloaded, and rescan now. NotFound when the repository lacks it."""
        check_name(name)
        self._held.discard(name)
        report = await self.refresh()
        if name not in self._on_disk:
            raise NotFound(f"model {name!r} is not in the repository; {self._holds()}")
        return report

    async def unload_model(self, name: str) -> list[str]:
        """Stop serving every version of `name` until `load_model`; calls holding it finish first."""
        check_name(name)
        async with self._lock:
            if name not in self._models and name not in self._on_disk:
                raise NotFound(f"model {name!r} is not in the repository; {self._holds()}")
            self._held.add(name)
            unloaded = [f"{name}/{number}" for number in sorted(self._models.get(name, {}))]
            for number in list(self._models.get(name, {})):
                self._unload(name, number)
            self._models.pop(name, None)
        for listener in self._listeners:
            await listener()
        return unloaded

    def _holds(self) -> str:
        names = sorted(set(self._on_disk) | set(self._models))
        return f"its {self.family} models are: {', '.join(names) or 'none'}"

    async def watch(self, interval: float) -> None:
        """Refresh every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("repository refresh failed; will retry")

    async def close(self) -> None:
        async with self._lock:
            for name in list(self._models):
                for number in list(self._models[name]):
                    self._unload(name, number)
            self._models.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _apply_policy(self, versions: dict[int, ModelVersion]) -> dict[int, ModelVersion]:
        if not self._latest:
            return versions
        keep = sorted(versions)[-self._latest :]
        return {v: versions[v] for v in keep}

    async def _load(self, version: ModelVersion, current: VersionStatus | None) -> bool:
        name, number = version.name, version.version
        label = f"{name}/{number}"
        status = current or VersionStatus(number, "LOADING", fingerprint=version.fingerprint)
        self._models.setdefault(name, {})[number] = status
        started = time.perf_counter()
        try:
            model = await self._loader(version, self._context)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", label, reason)
            # Callers read the reason (GetModel, errors): files by their place in the repository, never
            # by the server's own paths.
            reason = reason.replace(str(version.path), label).replace(str(self.root), "the repository")
            status.fingerprint = version.fingerprint
            if status.model is None:
                status.state, status.reason, status.source = "FAILED", reason, version
            else:
                status.reason = f"reload failed, still serving the earlier files: {reason}"
            self._observe_load(name, number, None, ok=False, seconds=time.perf_counter() - started)
            return False
        old = status.model
        status.model, status.state, status.reason = model, "READY", ""
        status.fingerprint, status.source = version.fingerprint, version
        if old is not None:
            self._closing.append(asyncio.create_task(old.close()))
        seconds = time.perf_counter() - started
        self._observe_load(name, number, model, ok=True, seconds=seconds)
        log.info("model %s ready on %s (loaded and warmed up in %.2f s)", label, model.provider, seconds)
        return True

    def _unload(self, name: str, number: int) -> None:
        status = self._models[name].pop(number)
        if self._metrics is not None:
            with contextlib.suppress(KeyError):
                self._metrics.model_ready.remove(name, str(number))
            if status.model is not None:
                with contextlib.suppress(KeyError):
                    self._metrics.model_info.remove(name, str(number), self.family, status.model.provider)
        if status.model is not None:
            # Requests already holding the model finish; its batchers drain, then stop.
            self._closing.append(asyncio.create_task(status.model.close()))
        self._closing = [t for t in self._closing if not t.done()]
        log.info("model %s/%s unloaded", name, number)

    def _observe_load(self, name: str, number: int, model: LoadedModel | None, *, ok: bool, seconds: float) -> None:
        if self._metrics is None:
            return
        self._metrics.model_loads.labels(name, "ok" if ok else "failed").inc()
        if model is not None:
            self._metrics.model_load_duration.labels(name).observe(seconds)
            self._metrics.model_ready.labels(name, str(number)).set(1)
            self._metrics.model_info.labels(name, str(number), self.family, model.provider).set(1)
        elif self._models[name][number].model is None:
            self._metrics.model_ready.labels(name, str(number)).set(0)


def _join(versions: dict[int, Any]) -> str:
    return ", ".join(str(v) for v in sorted(versions))
