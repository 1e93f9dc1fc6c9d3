"""What parsing a request will cost, read from its bytes before protobuf parses them.

A message's size on the wire does not bound what parsing it takes: a zero in a packed INT64 array is
one byte on the wire and eight once parsed (more while the array grows), and an empty message in a
repeated field is two bytes on the wire and a whole object once parsed. One 60 MB KServe request of
typed zeros took a server from 135 MB to 1.2 GB, and kept 1.1 GB. `check_parse_cost` walks the
message's fields with its descriptor (tags and lengths only; nothing is copied) and refuses it when it
holds more fields, or packed numbers, than the server allows, before the parser runs.

Messages up to SMALL_MESSAGE bytes are not walked: whatever they hold, parsing them costs little.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from myelin_serving.errors import TooLarge

SMALL_MESSAGE = 64 * 1024
_VARINT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_ENUM,
    }
)
_FIXED_SIZES = {
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
    FieldDescriptor.TYPE_DOUBLE: 8,
}
_CHUNK = 1024 * 1024


class MalformedMessage(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass
class ParseLimits:
    max_fields: int  # fields anywhere in the message (each a slot, a string or a message once parsed)
    max_numbers: int  # numbers in packed repeated fields


def check_parse_cost(data: bytes, descriptor: Descriptor, limits: ParseLimits) -> None:
    """Raise TooLarge if parsing `data` as `descriptor` would take more than `limits` allow, and
    MalformedMessage if it is not a message at all (groups included: proto3 has none)."""
    if len(data) <= SMALL_MESSAGE:
        return
    counts = [0, 0]  # fields, packed numbers
    _walk(memoryview(data), 0, len(data), descriptor, limits, counts)


def _walk(
    view: memoryview, start: int, end: int, descriptor: Descriptor, limits: ParseLimits, counts: list[int]
) -> None:
    for number, wire, value_start, value_end in _fields(view, start, end):
        counts[0] += 1
        if counts[0] > limits.max_fields:
            raise TooLarge(f"the request holds more than {limits.max_fields:,} fields; split it")
        field = descriptor.fields_by_number.get(number)
        if field is None or wire != 2:
            continue
        if field.message_type is not None:
            _walk(view, value_start, value_end, field.message_type, limits, counts)
        elif field.type in _VARINT_TYPES:
            counts[1] += _count_varints(view[value_start:value_end])
        elif field.type in _FIXED_SIZES:
            counts[1] += (value_end - value_start) // _FIXED_SIZES[field.type]
        if counts[1] > limits.max_numbers:
            raise TooLarge(
                f"the request holds more than {limits.max_numbers:,} numbers in its repeated fields "
                "(max_request_elements); split it, or send large tensors in raw_input_contents"
            )


def _count_varints(data: memoryview) -> int:
    # The last byte of each varint has its high bit clear.
    return sum(
        int(np.count_nonzero(np.frombuffer(data[i : i + _CHUNK], dtype=np.uint8) < 0x80))
        for i in range(0, len(data), _CHUNK)
    )


def _fields(view: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field in view[start:end]."""
    position = start
    while position < end:
        key, position = _varint(view, position, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, following = _varint(view, position, end)
        elif wire == 1:
            following = position + 8
        elif wire == 2:
            length, position = _varint(view, position, end)
            following = position + length
        elif wire == 5:
            following = position + 4
        else:
            raise MalformedMessage(f"wire type {wire} at byte {position}")
        if following > end or number == 0:
            raise MalformedMessage(f"a field runs past its end at byte {position}")
        yield number, wire, position, following
        position = following


def _varint(view: memoryview, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while position < end and shift < 70:
        byte = view[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise MalformedMessage(f"a truncated varint at byte {position}")
