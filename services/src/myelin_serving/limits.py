"""What a graph takes from a KServe caller beyond its signature, and the checks that apply it. No gRPC.

The ONNX signature gives datatypes, ranks and fixed axes (tensors.py checks those). It does not say
that axes with the same symbolic name must agree across inputs, how long a dynamic axis may be, how
many rows or numbers one request may bring, or which values an integer input may hold; yet a token
id past the vocabulary, a position past the position table or an empty token axis makes onnxruntime
raise, a negative id silently reads the table from its end, and thousands of rows or tokens make a
graph allocate gigabytes. `GraphLimits` says all of it; a family declares the limits of its graphs
when it loads a version (`LoadedModel.input_limits`), and every other graph gets the defaults
(`max_request_batch` rows, `max_request_elements` numbers, manifest `serving.limits` overriding).

Two checks, each raising InvalidArgument (or TooLarge, RESOURCE_EXHAUSTED, for sizes) with a message
that names the limit: `check_shapes` on the declared shapes before anything is decoded, and
`check_values` on the decoded arrays before the graph runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from myelin_serving.errors import InvalidArgument, TooLarge
from myelin_serving.runtime import TensorInfo

Relations = Callable[[Mapping[str, np.ndarray]], None]


@dataclass(frozen=True)
class GraphLimits:
    max_rows: int  # the length of the batch axis
    max_elements: int  # numbers in all inputs together
    batch_axis: str = "batch"  # the symbolic name of the rows axis
    axes: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # symbolic axis -> (min, max) length
    values: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # integer input -> (min, max) value
    relations: Relations | None = None  # what the inputs must satisfy together (raises InvalidArgument)


def check_shapes(specs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]], limits: GraphLimits) -> None:
    """Before decoding: the element budget, agreement of same-named axes, their lengths, the rows."""
    elements = sum(math.prod(shape) for shape in shapes.values())
    if elements > limits.max_elements:
        raise TooLarge(
            f"the inputs hold {elements:,} numbers together; this graph takes at most {limits.max_elements:,} "
            "(max_request_elements): split the request"
        )
    lengths: dict[str, tuple[int, str]] = {}  # axis name -> (length, the input that set it)
    for spec in specs:
        for axis, name in enumerate(spec.dims):
            if not name:
                continue
            length = shapes[spec.name][axis]
            seen = lengths.setdefault(name, (length, spec.name))
            if seen[0] != length:
                raise InvalidArgument(
                    f"axis {name!r} is {seen[0]} long in input {seen[1]!r} but {length} in {spec.name!r}: "
                    "inputs must agree on it"
                )
    rows = lengths.get(limits.batch_axis)
    if rows is not None:
        if rows[0] < 1:
            raise InvalidArgument(f"the batch (axis {limits.batch_axis!r}) is empty: send at least one row")
        if rows[0] > limits.max_rows:
            raise InvalidArgument(f"{rows[0]} rows in one request; the limit is {limits.max_rows}: split the batch")
    for name, (low, high) in limits.axes.items():
        if name in lengths and not low <= lengths[name][0] <= high:
            raise InvalidArgument(f"axis {name!r} is {lengths[name][0]} long; this graph takes {low} to {high}")


def check_values(feeds: Mapping[str, np.ndarray], limits: GraphLimits) -> None:
    """After decoding: every value of the integer inputs in its range, then the family's relations."""
    for name, (low, high) in limits.values.items():
        array = feeds.get(name)
        if array is None or array.size == 0:
            continue
        smallest, largest = int(array.min()), int(array.max())
        if smallest < low or largest > high:
            bad = smallest if smallest < low else largest
            raise InvalidArgument(f"input {name!r} holds {bad}; its values must lie in [{low}, {high}]")
    if limits.relations is not None:
        limits.relations(feeds)
