"""What a call to the suite's servers may get back, and the sizes and bytes the tables use."""

from __future__ import annotations

import grpc

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED
# What a bad request may get: never INTERNAL, UNKNOWN, DEADLINE_EXCEEDED (a hang) or UNAVAILABLE.
DOCUMENTED = frozenset({OK, INVALID, NOT_FOUND, TOO_BIG})
# The suite's servers take messages up to this size (settings.max_message_bytes); cheap to exceed.
MESSAGE_LIMIT = 1024 * 1024
TIMEOUT = 20.0

# Bytes no protobuf message parses: a field tag with wire type 7 (there is none).
UNDECODABLE = b"\xff\xff\xff\xff\x0f"
