"""What a model family plugs into the shared server: its loader, its gRPC servicers, its HTTP routes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    name: str  # the manifest's family, e.g. "classifier"
    # Full gRPC service names the family adds (health statuses and reflection list them).
    service_names: tuple[str, ...]
    load: Loader
    add_servicers: Callable[[HandlerRegistry, ServingContext], None]
    # HTTP routes beside the core's (KServe REST, /metrics): OpenAI-compatible ones where they fit.
    add_routes: Callable[[HttpRoutes, ServingContext], None] | None = None
