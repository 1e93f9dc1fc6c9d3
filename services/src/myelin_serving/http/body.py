"""Request bodies: bounded before they are read, then parsed as JSON.

A declared Content-Length over the limit is refused (413) before a byte of the body is read; a body
without one (chunked) is read as it streams in and refused the moment it passes the limit, so no
body larger than the limit is ever held. The limit is the gRPC door's for the same work:
`max_message_bytes`, or less where the family's methods take less (`Family.max_request_bytes`).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from myelin_serving.errors import InvalidArgument, TooLarge

JSON = "application/json"
BINARY = "application/octet-stream"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (TooLarge otherwise, before or while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or not declared.isascii():
            raise InvalidArgument(f"Content-Length must be a byte count, not {declared[:40]!r}")
        if int(declared) > limit:
            raise TooLarge(f"the body is {declared} bytes; this server takes at most {limit} on this route")
        # The HTTP parser stops the body at the declared length: reading it whole is bounded.
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over {limit} bytes, the most this server takes on this route")
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_type(request: Request, *accepted: str) -> str:
    """The request's media type, if it is one of `accepted` (JSON types always are) or absent."""
    header = request.headers.get("content-type")
    if header is None:
        return ""
    media = header.partition(";")[0].strip().lower()
    if media == JSON or media.endswith("+json") or media in accepted:
        return media
    raise InvalidArgument(
        f"Content-Type {header[:60]!r} is not {' or '.join([JSON, *accepted])}: send the body as JSON "
        f"(curl: -H 'Content-Type: {JSON}')"
    )


def parse_object(data: bytes | memoryview, what: str = "the body") -> dict[str, Any]:
    """`data` as a JSON object, or InvalidArgument saying what is wrong with it."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object, not {type_name(value)}")
    return value


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body, its type and size checked first."""
    check_content_type(request)
    return parse_object(await read_body(request, limit))


def type_name(value: object) -> str:
    """What JSON calls the type of a parsed value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
