"""HTTP for tests: any request with http.client, any answer status returned rather than raised, and
raw bytes on a socket for what no client would send."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The message of an error body: KServe's {"error": "..."} or OpenAI's {"error": {"message": ...}}."""
        error = self.json()["error"]
        return str(error["message"] if isinstance(error, dict) else error)


def http_request(
    url: str,
    method: str = "GET",
    body: bytes | Iterable[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 30,
) -> HttpAnswer:
    """One request with http.client: any method, headers and body (an iterable is sent chunked), any
    answer status returned rather than raised."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        chunked = body is not None and not isinstance(body, bytes)
        connection.request(method, path or "/", body=body, headers=dict(headers or {}), encode_chunked=chunked)
        response = connection.getresponse()
        return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def raw_http(url: str, request: bytes, *, timeout: float = 20) -> HttpAnswer:
    """Send `request` as it is (what no HTTP client would send) and read one answer."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as connection:
        connection.sendall(request)
        answer = connection.makefile("rb")
        status = int(answer.readline().split()[1])
        headers = {}
        while (line := answer.readline().strip()) != b"":
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        return HttpAnswer(status, headers, answer.read(int(headers["content-length"])))
