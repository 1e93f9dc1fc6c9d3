"""The server factory: `create_server(settings) -> (server, port)`.

One process serves one family. Besides the family's own service it always exposes the Models
service, the Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`) over the same
models and batchers, `grpc.health.v1` (NOT_SERVING until a model is loaded and warmed up, NOT_SERVING again as
soon as shutdown starts), server reflection; and on its HTTP port (myelin_serving.http) the Open
Inference Protocol over REST, the family's HTTP routes and Prometheus `/metrics`, in the same event
loop over the same models.

Shutdown (`MyelinServer.stop`): NOT_SERVING and the end of every health Watch at once; for the drain
delay both ports still take calls (clients watching health move away); then new calls are refused,
UNAVAILABLE on gRPC and 503 on HTTP (a retry goes elsewhere), while the calls already running
finish; once no gRPC call runs and gRPC has handed over every call it received, or when the grace
period ends, both servers stop: gRPC, and HTTP once its requests in flight (streams included) have
ended or the grace period is over. Every call therefore ends as answered or refused, never
CANCELLED, unless it was still running when the grace period ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from myelin_api.v1 import models_pb2, models_pb2_grpc
from myelin_serving import __version__
from myelin_serving.families import load_family
from myelin_serving.family import Family, ServingContext
from myelin_serving.http.app import create_app
from myelin_serving.http.server import HttpServer
from myelin_serving.interceptors import HandlerRegistry, ServingInterceptor
from myelin_serving.kserve import SERVICE_NAME as KSERVE_SERVICE
from myelin_serving.kserve import InferenceProtocol
from myelin_serving.kserve import add_to_server as add_kserve
from myelin_serving.metrics import Metrics
from myelin_serving.models_service import ModelsServicer
from myelin_serving.repository import LoadContext, ModelManager
from myelin_serving.runtime import CUDA_UNUSABLE, RuntimeOptions, check_device
from myelin_serving.settings import Settings, parse_device
from myelin_serving.wire import ParseLimits

log = logging.getLogger(__name__)

MODELS_SERVICE = models_pb2.DESCRIPTOR.services_by_name["Models"].full_name
# Requests that carry names, versions and little else (the Models service, health, KServe's metadata
# and model repository calls, reflection) are refused above this many bytes, before parsing; the rest
# get max_message_bytes or what their family says (`Family.max_request_bytes`).
CONTROL_REQUEST_BYTES = 64 * 1024
CONTROL_METHODS = (
    *(f"/{MODELS_SERVICE}/{m}" for m in ("ListModels", "GetModel", "ReloadModels", "LoadModel", "UnloadModel")),
    *(f"/{health.SERVICE_NAME}/{m}" for m in ("Check", "Watch", "List")),
    *(f"/{KSERVE_SERVICE}/{m}" for m in ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata")),
    *(f"/{KSERVE_SERVICE}/{m}" for m in ("ModelConfig", "RepositoryIndex")),
    *(f"/{KSERVE_SERVICE}/{m}" for m in ("RepositoryModelLoad", "RepositoryModelUnload")),
    f"/{reflection.SERVICE_NAME}/ServerReflectionInfo",
)


class MyelinServer:
    """A configured, not yet started server. `start()`, then `stop()` (or wait for termination)."""

    def __init__(
        self,
        settings: Settings,
        server: grpc.aio.Server,
        port: int,
        manager: ModelManager,
        family: Family,
        health_servicer: HealthServicer,
        metrics: Metrics,
        interceptor: ServingInterceptor,
    ) -> None:
        self.settings = settings
        self.grpc_server = server
        self.port = port
        self.manager = manager
        self.family = family
        self.health = health_servicer
        self.metrics = metrics
        self.interceptor = interceptor
        self.http: HttpServer | None = None  # None: the HTTP port is off (http_port -1)
        self._health_names = health_names(family)
        self._stopping = False
        self._serving: bool | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._ready = asyncio.Event()
        # Set when the service cannot do what it was asked to (see `failure`): the process should end.
        self.failed = asyncio.Event()
        self.failure = ""
        manager.on_change(self._update_health)

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    @property
    def metrics_port(self) -> int | None:
        """The older name of http_port: /metrics is served there."""
        return self.http_port

    @property
    def serving(self) -> bool:
        """What health says: a model is ready and shutdown has not started."""
        return self._serving is True and not self._stopping

    async def start(self) -> None:
        """Listen now; load and warm up the models in the background (health says when).

        Both ports are bound already (create_server), so nothing here fails on a taken port."""
        await self._set_health(False)
        await self.grpc_server.start()
        if self.http is not None:
            await self.http.start()
        self._spawn(self._load_models())

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Until the first load has finished (whether or not any model became ready)."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, then refuse new calls, let calls in flight finish for `grace` seconds.

        The first `drain_delay_s` of the grace period still serves new calls: clients watching health
        see NOT_SERVING and send their next calls elsewhere before the server stops taking them."""
        if self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + (self.settings.grace_period_s if grace is None else grace)
        await self.health.enter_graceful_shutdown()  # ends every Watch, after NOT_SERVING
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Still serving for the drain delay, so that health-checking clients move away; then new
        # calls are refused (UNAVAILABLE, HTTP 503: retried elsewhere) until no gRPC call arrives.
        await asyncio.sleep(min(self.settings.drain_delay_s, max(deadline - time.monotonic(), 0)))
        self.interceptor.drain()
        await self.interceptor.drained(deadline)
        remaining = max(deadline - time.monotonic(), 0)
        await asyncio.gather(self.grpc_server.stop(remaining), *([self.http.stop(remaining)] if self.http else []))
        await self.manager.close()
        log.info("%s service stopped", self.family.name)

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()

    async def _load_models(self) -> None:
        try:
            report = await self.manager.refresh()
            log.info(
                "%s service: %d model version(s) ready, %d failed, from %s",
                self.family.name,
                len(report.loaded),
                len(report.failed),
                self.manager.root,
            )
            if parse_device(self.settings.device)[0] == "cuda" and report.failed and not report.loaded:
                self._fail_without_cuda()
            if not report.loaded and not report.failed:
                log.warning(
                    "no %s model in %s: NOT_SERVING until one is exported there (%s)",
                    self.family.name,
                    self.manager.root,
                    f"rescanned every {self.settings.reload_interval_s:g} s"
                    if self.settings.reload_interval_s > 0
                    else "ReloadModels rescans it",
                )
        except Exception:
            log.exception("loading models from %s failed", self.manager.root)
        await self._update_health()
        self._ready.set()
        if self.settings.reload_interval_s > 0:
            self._spawn(self.manager.watch(self.settings.reload_interval_s))

    def _fail_without_cuda(self) -> None:
        """`--device cuda` and no version could use CUDA (onnxruntime-gpu without a usable GPU): fail, as
        compose.gpu.yml and the GPU overlay promise, rather than stay up NOT_SERVING."""
        reasons = [s.reason for name in self.manager.names() for s in self.manager.statuses(name)]
        if reasons and all(CUDA_UNUSABLE in reason for reason in reasons):
            device = self.settings.device
            self.failure = f"device {device!r} {CUDA_UNUSABLE} for any model version: is a GPU visible to this process?"
            log.error("%s", self.failure)
            self.failed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        task.add_done_callback(_log_failure)
        self._tasks.append(task)

    async def _update_health(self) -> None:
        await self._set_health(self.manager.ready and not self._stopping)

    async def _set_health(self, serving: bool) -> None:
        if serving == self._serving or self._stopping:
            return
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._health_names:
            await self.health.set(name, status)
        log.info("health: %s", "SERVING" if serving else "NOT_SERVING")


class HealthServicer(health.aio.HealthServicer):
    """grpc.health.v1 for a fixed set of service names.

    The stock servicer answers an unknown name with a bare NOT_FOUND, keeps a condition for every
    name anyone ever watched, and keeps every Watch open through shutdown; this one says which names
    it knows, answers a Watch of an unknown name with SERVICE_UNKNOWN without keeping anything for
    it, and ends every Watch (after NOT_SERVING) as soon as shutdown starts."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self._names = frozenset(names)
        self._known = ", ".join(repr(n) for n in names)
        self._statuses: dict[str, health_pb2.HealthCheckResponse.ServingStatus] = {}
        self._changed = asyncio.Condition()
        self._shutting_down = False

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        await super().set(service, status)
        async with self._changed:
            self._statuses[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        async with self._changed:
            self._shutting_down = True
            self._changed.notify_all()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """Every name and its status (the stock aio servicer does not implement List: INTERNAL)."""
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=self._status(name)) for name in self._statuses}
        )

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._names:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown service {request.service[:80]!r}; health is reported for: {self._known}",
            )
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        """The status now, then every change, until the caller leaves or shutdown starts."""

        def now() -> health_pb2.HealthCheckResponse.ServingStatus:
            if request.service in self._names:
                return self._status(request.service)
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

        sent = None
        while True:
            status = now()
            if status != sent:  # written outside the lock: a slow reader must not hold up set()
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if self._shutting_down:
                return
            async with self._changed:
                if now() == sent and not self._shutting_down:
                    await self._changed.wait()

    def _status(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus:
        if self._shutting_down:
            return health_pb2.HealthCheckResponse.NOT_SERVING
        return self._statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def health_names(family: Family) -> tuple[str, ...]:
    """The names health reports: "" (the whole server) and every service this server has but reflection."""
    return ("", *family.service_names, MODELS_SERVICE, KSERVE_SERVICE)


def create_server(settings: Settings, *, registry: CollectorRegistry | None = None) -> tuple[MyelinServer, int]:
    """Build and bind the server for `settings.service`; call inside a running event loop."""
    if not settings.repository.is_dir():
        # Triton refuses to start on a missing repository too; an empty one is fine (models may come).
        raise OSError(
            f"no model repository at {settings.repository} (--repository, MYELIN_REPOSITORY): train a model into "
            "it first (myelin-train FAMILY --repository DIR), or point at an existing one"
        )
    check_device(settings.device)
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    family = load_family(settings.service)
    family_metrics = family.metrics(metrics) if family.metrics is not None else None
    if family_metrics is not None:
        metrics.extend(family_metrics)
    settings = settings.with_ports(family.default_port)
    context = LoadContext(
        RuntimeOptions(
            settings.device,
            settings.intra_op_threads,
            settings.intra_op_spinning,
            settings.io_binding,
            settings.device_memory_limit_mb,
        ),
        settings.batching,
        metrics,
        settings=settings,
        family_settings=family.read_settings(settings),
        family_metrics=family_metrics,
    )
    manager = ModelManager(
        settings.repository, family.name, family.load, context, latest=settings.version_policy_latest, metrics=metrics
    )
    interceptor = ServingInterceptor(
        metrics,
        tokens=settings.tokens(),
        default_deadline_s=settings.default_deadline_s,
        access_log_enabled=settings.access_log,
        max_request_bytes=request_limits(family, settings),
        # Generous for any well-formed request: a Classify of 256 raw images holds about 1,500 fields.
        parse_limits=ParseLimits(max_fields=64 * settings.max_request_batch, max_numbers=settings.max_request_elements),
    )
    server = grpc.aio.server(options=_channel_options(settings), interceptors=interceptor.aio_interceptors())
    # Every servicer registers through the interceptor, which wraps its handlers once, here.
    handlers = HandlerRegistry(server, interceptor)
    serving_context = ServingContext(manager, settings, metrics)
    family.add_servicers(handlers, serving_context)
    models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(manager), handlers)
    health_servicer = HealthServicer(health_names(family))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, handlers)
    # enable_server_reflection picks the asyncio servicer only for a grpc.aio.Server: name it here.
    reflected = (*family.service_names, MODELS_SERVICE, KSERVE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(reflected), handlers)
    address = f"{settings.host}:{settings.port}"
    credentials = _server_credentials(settings)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # grpc's way of saying the address cannot be bound; it says no more
        raise OSError(
            f"could not listen on {address} for gRPC: the port is taken (another service?) or the host is not "
            "an address of this machine; choose another port with --port (MYELIN_PORT), or another host with "
            "--host (MYELIN_HOST)"
        ) from None
    metrics.server_info.info({"service": family.name, "version": __version__, "device": settings.device})
    myelin_server = MyelinServer(settings, server, port, manager, family, health_servicer, metrics, interceptor)
    protocol = InferenceProtocol(
        manager,
        max_request_batch=settings.max_request_batch,
        max_request_elements=settings.max_request_elements,
        runs=settings.batching,
        version_policy_latest=settings.version_policy_latest,
    )
    add_kserve(handlers, protocol, serving=lambda: myelin_server.serving)
    if settings.http_port is not None and settings.http_port >= 0:
        app = create_app(
            family,
            serving_context,
            protocol,
            serving=lambda: myelin_server.serving,
            draining=interceptor.draining,
            rpc_methods=handlers.methods,
        )
        myelin_server.http = HttpServer(app, settings, settings.http_port)
    return myelin_server, port


def request_limits(family: Family, settings: Settings) -> dict[str, int]:
    """Methods whose requests are refused at a size below max_message_bytes, and that size."""
    limits = dict.fromkeys(CONTROL_METHODS, CONTROL_REQUEST_BYTES)
    for service in family.service_names:
        for method, size in family.max_request_bytes.items():
            limits[f"/{service}/{method}"] = size
    return {method: size for method, size in limits.items() if size < settings.max_message_bytes}


def _channel_options(settings: Settings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a taken port is an error, not a silently shared one
    ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(max(settings.grace_period_s, 1) * 1000)),
        ]
    return options


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
