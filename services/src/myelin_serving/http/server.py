"""uvicorn in the gRPC server's event loop: one process, one loop, two ports.

`uvicorn.run` and `Server.serve` own the process (their own loop, their own SIGINT/SIGTERM
handlers); here uvicorn's lower-level steps run inside the loop grpc.aio already uses: the socket
is bound up front (so a taken port fails at start-up with a message naming the port, the address
and the setting to change, and port 0 is known at once), `startup` serves it, `main_loop` keeps the
Date header fresh, and `shutdown` stops accepting, closes idle connections and lets requests in
flight finish within the grace period. TLS and mutual TLS use the gRPC port's files.

The request line and headers are bounded too (MAX_HEAD): httptools (llhttp) accepts any amount of
them, and would hold a 20 MB header in memory before a route could refuse anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from myelin_serving.settings import Settings

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024  # bytes of request line and headers per request (nginx's default is 8 KB to 32 KB)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request line plus headers over MAX_HEAD bytes (431)."""

    _head_bytes = 0  # received while waiting for the end of a request's headers
    _in_head = True  # between the end of one request and the end of the next one's headers
    _events = 0  # headers and messages completed so far
    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        events = self._events
        super().data_received(data)
        # Only data that ended neither headers nor a message is head: a chunk that did holds body bytes.
        if self._in_head and events == self._events:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._refuse()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._events = False, 0, self._events + 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._events = True, self._events + 1
        super().on_message_complete()

    def _refuse(self) -> None:
        self._refused = True
        body = orjson.dumps({"error": f"the request line and headers are over {MAX_HEAD} bytes"})
        head = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.transport.close()


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening)."""
    name = host.strip("[]") or None
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT, not a taken one
        sock.bind(address)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise OSError(
            f"could not listen on {host}:{port} for HTTP: {exc.strerror or exc}; choose another port with "
            "--http-port (MYELIN_HTTP_PORT; 0: any free port), or -1 for no HTTP port"
        ) from exc
    return sock


class HttpServer:
    """The service's HTTP port. `start()` in the running loop, then `stop(grace)`."""

    def __init__(self, app: ASGIApp, settings: Settings, port: int) -> None:
        self.app = app
        self._socket = bind(settings.http_host, port)
        self.port: int = self._socket.getsockname()[1]
        options: dict[str, Any] = {}
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            options = {"ssl_certfile": settings.tls_cert_file, "ssl_keyfile": settings.tls_key_file}
            if settings.tls_client_ca_file is not None:
                options |= {"ssl_ca_certs": settings.tls_client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        self.tls = bool(options)
        self._config = uvicorn.Config(
            app,
            host=settings.http_host,
            port=self.port,
            http=BoundedHttpToolsProtocol,  # httptools: the C parser; h11 (pure Python) costs more per request
            ws="none",
            lifespan="off",
            log_config=None,  # the service configures logging; uvicorn must not
            access_log=False,  # the routes write Myelin's own access log
            server_header=False,
            proxy_headers=False,
            **options,
        )
        self._config.load()
        self._server = uvicorn.Server(self._config)
        self._main_loop: asyncio.Task[None] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    async def start(self) -> None:
        server = self._server
        server.lifespan = self._config.lifespan_class(self._config)  # what Server.serve sets up first
        await server.startup(sockets=[self._socket])
        self._main_loop = asyncio.create_task(server.main_loop(), name="http-main-loop")

    async def stop(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for `grace` seconds, then cancel the rest."""
        self._server.should_exit = True
        if self._main_loop is not None:
            await self._main_loop
            self._config.timeout_graceful_shutdown = max(1, math.ceil(grace))
            await self._server.shutdown(sockets=[self._socket])
        else:
            self._socket.close()
