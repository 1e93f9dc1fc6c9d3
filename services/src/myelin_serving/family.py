"""What a model family plugs into the shared server: its loader, its gRPC servicers, its HTTP routes,
and what it owns besides (its settings, its metrics). `families.py` finds the installed ones through
entry points."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pool
from pydantic import BaseModel

from myelin_api.v1 import common_pb2
from myelin_serving.http.routes import HttpRoutes
from myelin_serving.interceptors import HandlerRegistry
from myelin_serving.metrics import Metrics
from myelin_serving.repository import Loader, ModelManager
from myelin_serving.settings import Settings


@dataclass(frozen=True)
class ServingContext:
    """Handed to a family's `add_servicers` and `add_routes`: the shared parts of one server."""

    manager: ModelManager
    settings: Settings
    metrics: Metrics


@dataclass(frozen=True)
class Family:
    name: str  # the manifest's family and `myelin-serve NAME`
    # Full gRPC service names the family adds (health statuses and reflection list them).
    service_names: tuple[str, ...]
    load: Loader
    add_servicers: Callable[[HandlerRegistry, ServingContext], None]
    # HTTP routes beside the core's (KServe REST, /metrics): OpenAI-compatible ones where they fit.
    add_routes: Callable[[HttpRoutes, ServingContext], None] | None = None
    # Request sizes (bytes) the family's methods take at most, where lower than max_message_bytes:
    # refused with RESOURCE_EXHAUSTED before parsing. Keys are method names ("Generate").
    max_request_bytes: Mapping[str, int] = field(default_factory=dict)
    # Its own settings: a model read from MYELIN_<KEY>__<FIELD> variables (and Settings(<key>={...})),
    # KEY being `settings_key` (the family's name unless set); LoadContext.family_settings holds them.
    settings: type[BaseModel] | None = None
    settings_key: str = ""
    # Its own metrics, built once per server on the shared registry (they may keep shared ones from
    # the core's `Metrics` too); LoadContext.family_metrics holds them, and a version's series go with
    # the version's others.
    metrics: Callable[[Metrics], Any] | None = None

    @property
    def settings_section(self) -> str:
        """The key of its settings: MYELIN_<KEY>__<FIELD>, Settings(<key>={...})."""
        return self.settings_key or self.name

    def read_settings(self, settings: Settings) -> BaseModel | None:
        """Its own settings, validated from the process settings' section (ValidationError when bad)."""
        if self.settings is None:
            return None
        section = settings.section(self.settings_section)
        return section if isinstance(section, self.settings) else self.settings.model_validate(section or {})

    @property
    def default_port(self) -> int:
        """The gRPC port its proto names (`option (default_port)` on its service): one table for
        myelin-serve, the `myelin` CLI, compose, Kubernetes and `make up`."""
        option = common_pb2.DESCRIPTOR.extensions_by_name["default_port"]
        for name in self.service_names:
            for described, value in descriptor_pool.Default().FindServiceByName(name).GetOptions().ListFields():
                if described is option:
                    return int(value)
        raise ValueError(f"no service of the {self.name} family names its default_port in its .proto")
