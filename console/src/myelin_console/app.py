"""The console's Starlette app: the page, its assets, and the `/api/` the page calls.

- `GET /`, `/static/...`: the page and its assets, all local; every answer carries a strict
  Content-Security-Policy (scripts, styles and connections to this origin only, no inline script).
- `GET|POST /api/<family>/<path>`: forwarded to that family's service (`<its URL>/<path>`, for
  `rpc/`, `v2/` and `v1/` paths) with the configured bearer token added; the body is bounded
  before it is read, answers (server-sent events too) stream back as they come, and a browser
  that hangs up closes the upstream call (the service then stops the work). A family with no URL
  configured answers 404 saying which variable to set; one not reachable, 502.
- `GET /api/families`: which families are configured and ready (the page's tabs say so).
- `GET /api/live`: the live figures (live.py); `GET /api/curves/<model>/<version>`: training curves.

The token never leaves the console: it is added to forwarded calls only, and no answer repeats it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from myelin_console.curves import CurveError, read_curves
from myelin_console.live import LiveFigures
from myelin_console.settings import FAMILIES, ConsoleSettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
FORWARDED_PREFIXES = ("rpc/", "v2/", "v1/")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most `limit` bytes: a declared length over it is refused before reading."""
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared[:20]} bytes; the console forwards at most {limit}")
    body = bytearray()
    async for chunk in request.stream():  # no length declared (chunked): counted as it comes
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes, the most the console forwards")
    return bytes(body)


class Console:
    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.urls = {f: url for f in FAMILIES if (url := settings.url(f)) is not None}
        token = settings.token()
        self._auth = {"authorization": f"Bearer {token}"} if token else {}
        self.client = httpx2.AsyncClient(
            verify=str(settings.ca_file) if settings.ca_file else True,
            timeout=httpx2.Timeout(settings.timeout_s, connect=5.0),
            headers=self._auth,
            trust_env=False,
        )
        self.live = LiveFigures(
            self.urls, self.client, interval=settings.scrape_interval_s, window=settings.live_window_s
        )

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def families(self, request: Request) -> Response:
        async def state(family: str) -> dict[str, Any]:
            url = self.urls.get(family)
            if url is None:
                variable = f"MYELIN_CONSOLE_{family.upper()}_URL"
                return {"deployed": False, "ready": False, "error": f"not deployed here (set {variable})"}
            try:
                answer = await self.client.get(f"{url}/v2/health/ready", timeout=5)
            except httpx2.HTTPError as exc:
                return {"deployed": True, "ready": False, "error": f"not reachable: {type(exc).__name__}"}
            ready = answer.status_code == 200
            return {"deployed": True, "ready": ready, "error": None if ready else "no model ready yet"}

        states = await asyncio.gather(*(state(f) for f in FAMILIES))
        return JSONResponse(dict(zip(FAMILIES, states, strict=True)))

    async def live_figures(self, request: Request) -> Response:
        return JSONResponse({"interval_s": self.settings.scrape_interval_s, "families": self.live.report()})

    async def curves(self, request: Request) -> Response:
        if self.settings.repository is None:
            return error(404, "the console has no model repository (MYELIN_CONSOLE_REPOSITORY) to read curves from")
        try:
            points = read_curves(self.settings.repository, request.path_params["model"], request.path_params["version"])
        except CurveError as exc:
            return error(404, str(exc))
        return JSONResponse({"points": points})

    async def forward(self, request: Request) -> Response:
        family, path = request.path_params["family"], request.path_params["path"]
        if family not in FAMILIES:
            return error(404, f"no family {family[:40]!r}; the console knows: {', '.join(FAMILIES)}")
        url = self.urls.get(family)
        if url is None:
            return error(404, f"the {family} service is not deployed here (set MYELIN_CONSOLE_{family.upper()}_URL)")
        if not path.startswith(FORWARDED_PREFIXES) or ".." in path:
            return error(404, f"the console forwards only {', '.join(p + '...' for p in FORWARDED_PREFIXES)}")
        try:
            body = await read_body(request, self.settings.max_request_bytes)
        except BodyTooLarge as exc:
            return error(413, str(exc))
        headers = {"content-type": request.headers.get("content-type", "application/json"), **self._auth}
        outgoing = self.client.build_request(request.method, f"{url}/{path}", content=body, headers=headers)
        try:
            upstream = await self.client.send(outgoing, stream=True)
        except httpx2.HTTPError as exc:
            return error(502, f"the {family} service is not reachable: {type(exc).__name__}")
        kept = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "cache-control")}
        return StreamingResponse(_relay(upstream), upstream.status_code, kept)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        scraper = asyncio.create_task(self.live.run(), name="live-figures")
        try:
            yield
        finally:
            scraper.cancel()
            await asyncio.gather(scraper, return_exceptions=True)
            await self.client.aclose()


async def _relay(upstream: httpx2.Response) -> AsyncIterator[bytes]:
    """The upstream body as it comes; closed however the answer ends (the browser gone too)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx2.HTTPError as exc:
        log.info("forwarded answer cut short: %s", type(exc).__name__)
    finally:
        with anyio.CancelScope(shield=True):
            await upstream.aclose()


def create_app(settings: ConsoleSettings) -> ASGIApp:
    console = Console(settings)
    routes = [
        Route("/", console.page),
        Route("/api/families", console.families),
        Route("/api/live", console.live_figures),
        Route("/api/curves/{model}/{version:int}", console.curves),
        Route("/api/{family}/{path:path}", console.forward, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return SecurityHeaders(Starlette(routes=routes, lifespan=console.lifespan))
