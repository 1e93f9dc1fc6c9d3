"""The model repository: versions, their states, and (re)loading them.

`discovery.py` reads the repository (layout, folder rules, manifests, symlinks); this module keeps
what one service serves: it loads every version whose manifest names its family, serves the newest
ready one unless a request names a version, and on each refresh loads new versions, unloads removed
ones, keeps the previous files serving when a new copy fails, and shows a version that cannot be
read as FAILED with the reason (GetModel, ModelReady, `myelin_model_ready` 0) while the rest loads.
A failure is logged once per change of the version's files. When a version goes, so do its metric
series, and a model's when its last version goes. A model unloaded on request (UnloadModel,
RepositoryModelUnload) stays out of rescans until it is loaded again.

Request model names never touch the file system: they are looked up among the names discovered
there, after a syntax check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from myelin_serving.batching import DynamicBatcher
from myelin_serving.discovery import MANIFEST as MANIFEST
from myelin_serving.discovery import NAME_RE as NAME_RE
from myelin_serving.discovery import BrokenVersion, Entry, Scanner
from myelin_serving.discovery import GraphEntry as GraphEntry
from myelin_serving.discovery import Manifest as Manifest
from myelin_serving.discovery import ModelVersion as ModelVersion
from myelin_serving.discovery import TensorSpec as TensorSpec
from myelin_serving.discovery import check_name as check_name
from myelin_serving.errors import InvalidArgument, ModelNotReady, NotFound, Unavailable
from myelin_serving.limits import GraphLimits
from myelin_serving.metrics import Metrics
from myelin_serving.runtime import OnnxGraph, RuntimeOptions
from myelin_serving.settings import BatchingSettings, Settings

log = logging.getLogger(__name__)
S = TypeVar("S", bound=BaseModel)


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
        # What each graph takes from a KServe caller (limits.py); the manager fills in the defaults.
        self.input_limits: dict[str, GraphLimits] = {}

    @property
    def provider(self) -> str:
        return next(iter(self.graphs.values())).provider if self.graphs else ""

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.batchers.values()))


M = TypeVar("M", bound=LoadedModel)


@dataclass
class LoadContext:
    """What a family's loader needs to build a LoadedModel."""

    runtime: RuntimeOptions
    batching: BatchingSettings
    metrics: Metrics | None = None
    # The process's settings; None in unit tests.
    settings: Settings | None = None
    # The family's own settings and metrics (`Family.settings`, `Family.metrics`), where it has them.
    family_settings: BaseModel | None = None
    family_metrics: Any = None

    def settings_of(self, kind: type[S]) -> S:
        """The family's own settings as `kind`: the process's, or the defaults when none were given."""
        return self.family_settings if isinstance(self.family_settings, kind) else kind()

    async def open_graph(self, version: ModelVersion, graph: str) -> OnnxGraph:
        return await asyncio.to_thread(OnnxGraph, version.graph_path(graph), self.runtime)

    def batching_for(self, version: ModelVersion) -> BatchingSettings:
        overrides = version.manifest.serving.get("batching", {})
        return BatchingSettings.model_validate({**self.batching.model_dump(), **overrides})

    def graph_limits(self, version: ModelVersion, **declared: Any) -> GraphLimits:
        """A graph's KServe limits: the settings' rows and elements (the manifest's `serving.limits`
        max_rows and max_elements override them), with what the family `declared` (axes, values...)."""
        rows = self.settings.max_request_batch if self.settings is not None else 256
        elements = self.settings.max_request_elements if self.settings is not None else 4 * 1024 * 1024
        limits = version.manifest.serving.get("limits", {})
        sizes = {
            "max_rows": int(limits.get("max_rows", rows)),
            "max_elements": int(limits.get("max_elements", elements)),
        }
        return GraphLimits(**{**sizes, **declared})

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
        self._scanner = Scanner(root, family)
        self._refresh_problem = ""  # the last refresh failure logged, so that it is logged once
        # Unloaded on request (UnloadModel, RepositoryModelUnload): rescans leave them out until loaded.
        self._held: set[str] = set()
        self._on_disk: dict[str, dict[int, Entry]] = {}  # what the last rescan found
        self._lock = asyncio.Lock()
        self._closing: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[], Awaitable[None]]] = []

    def on_change(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Call `listener` after every refresh that loaded, unloaded or failed something."""
        self._listeners.append(listener)

    # Lookups: called on the event loop for every request.

    @overload
    def get(self, name: str, version: int = 0) -> LoadedModel: ...

    @overload
    def get(self, name: str, version: int = 0, *, kind: type[M]) -> M: ...

    def get(self, name: str, version: int = 0, *, kind: type[LoadedModel] = LoadedModel) -> LoadedModel:
        """The version to serve (0: the newest ready one), as the family's model type `kind`:
        InvalidArgument when it is another (a model of this service the family cannot call)."""
        model = self._lookup(name, version)
        if not isinstance(model, kind):
            raise InvalidArgument(f"model {model.name!r} is not a {self.family}")
        return model

    def _lookup(self, name: str, version: int) -> LoadedModel:
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
        """Bring the loaded set in line with the repository on disk.

        Raises Unavailable when the repository itself cannot be read; what is loaded stays."""
        async with self._lock:
            report = ReloadReport()
            try:
                on_disk = self._on_disk = await asyncio.to_thread(self._scanner.scan)
            except OSError as exc:
                raise Unavailable(f"cannot read the model repository {self.root}: {exc}") from exc
            wanted = {name: self._apply_policy(v) for name, v in on_disk.items() if name not in self._held}
            for name in list(self._models):
                for number in list(self._models[name]):
                    if number not in wanted.get(name, {}):
                        self._unload(name, number)
                        report.unloaded.append(f"{name}/{number}")
                if not self._models[name]:
                    del self._models[name]
            for name, versions in wanted.items():
                for number, entry in sorted(versions.items()):
                    current = self._models.get(name, {}).get(number)
                    if current is not None and current.fingerprint == entry.fingerprint:
                        continue
                    if isinstance(entry, BrokenVersion):
                        ok = self._failed(entry, self._status(entry, current), entry.reason, time.perf_counter())
                    else:
                        ok = await self._load(entry, current)
                    (report.loaded if ok else report.failed).append(f"{name}/{number}")
        if report.loaded or report.unloaded or report.failed:
            for listener in self._listeners:
                await listener()
        return report

    def on_disk(self) -> dict[str, dict[int, Entry]]:
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
        """Refresh every `interval` seconds until cancelled; a failure is logged once, until it changes."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
                problem = ""
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._refresh_problem:
                    log.error("repository refresh failed (retrying every %g s): %s", interval, problem)
            self._refresh_problem = problem

    async def close(self) -> None:
        async with self._lock:
            for name in list(self._models):
                for number in list(self._models[name]):
                    self._unload(name, number)
            self._models.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _apply_policy(self, versions: dict[int, Entry]) -> dict[int, Entry]:
        if not self._latest:
            return versions
        keep = sorted(versions)[-self._latest :]
        return {v: versions[v] for v in keep}

    def _status(self, entry: Entry, current: VersionStatus | None) -> VersionStatus:
        status = current or VersionStatus(entry.version, "LOADING", fingerprint=entry.fingerprint)
        self._models.setdefault(entry.name, {})[entry.version] = status
        return status

    async def _load(self, version: ModelVersion, current: VersionStatus | None) -> bool:
        status = self._status(version, current)
        started = time.perf_counter()
        try:
            model = await self._loader(version, self._context)
        except Exception as exc:
            return self._failed(version, status, f"{type(exc).__name__}: {exc}", started)
        for graph in model.graphs:
            model.input_limits.setdefault(graph, self._context.graph_limits(version))
        old = status.model
        status.model, status.state, status.reason = model, "READY", ""
        status.fingerprint, status.source = version.fingerprint, version
        if old is not None:
            self._closing.append(asyncio.create_task(old.close()))
        seconds = time.perf_counter() - started
        self._observe_load(version.name, version.version, model, seconds=seconds)
        log.info("model %s/%s ready on %s (loaded and warmed up in %.2f s)", version.name, version.version,
                 model.provider, seconds)  # fmt: skip
        return True

    def _failed(self, entry: Entry, status: VersionStatus, reason: str, started: float) -> bool:
        """The version's files cannot be served: FAILED, or the earlier files keep serving. Logged once
        per change of its files (the fingerprint), since nothing is retried until they change."""
        label = f"{entry.name}/{entry.version}"
        log.error("model %s failed to load: %s", label, reason)
        # Callers read the reason (GetModel, errors): files by their place in the repository, never by
        # the server's own paths.
        reason = reason.replace(str(entry.path), label).replace(str(self.root), "the repository")
        status.fingerprint = entry.fingerprint
        if status.model is None:
            status.state, status.reason = "FAILED", reason
            status.source = entry if isinstance(entry, ModelVersion) else None
        else:
            status.reason = f"reload failed, still serving the earlier files: {reason}"
        self._observe_load(entry.name, entry.version, None, seconds=time.perf_counter() - started)
        return False

    def _unload(self, name: str, number: int) -> None:
        status = self._models[name].pop(number)
        if self._metrics is not None:
            self._metrics.forget(name, str(number), self._metrics.LOADED_VERSION_SERIES)
        # Requests already holding the model finish; its batchers drain, then stop; then its series go.
        self._closing.append(asyncio.create_task(self._close(name, number, status.model)))
        self._closing = [t for t in self._closing if not t.done()]
        log.info("model %s/%s unloaded", name, number)

    async def _close(self, name: str, number: int, model: LoadedModel | None) -> None:
        if model is not None:
            await model.close()
        if self._metrics is not None and number not in self._models.get(name, {}):  # not loaded again meanwhile
            self._metrics.forget(name, str(number))
            if not self._models.get(name):  # its last version went (and no new one came meanwhile)
                self._metrics.forget(name)

    def _observe_load(self, name: str, number: int, model: LoadedModel | None, *, seconds: float) -> None:
        if self._metrics is None:
            return
        self._metrics.model_loads.labels(name, "ok" if model is not None else "failed").inc()
        if model is not None:
            self._metrics.model_load_duration.labels(name).observe(seconds)
            self._metrics.model_ready.labels(name, str(number)).set(1)
            self._metrics.model_info.labels(name, str(number), self.family, model.provider).set(1)
        elif self._models[name][number].model is None:
            self._metrics.model_ready.labels(name, str(number)).set(0)


def _join(versions: dict[int, Any]) -> str:
    return ", ".join(str(v) for v in sorted(versions))
