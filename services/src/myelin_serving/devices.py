"""Where a graph's tensors live between runs, and the array work the decode loops do on them. No gRPC.

Two kinds of `Tensors`, chosen per graph by the `io_binding` setting (runtime.py):

- `HostTensors`: numpy arrays. `session.run` takes them from host memory at every call and hands
  every output back to the host. On the CPU provider that is free: onnxruntime reads numpy's
  memory as it is.
- `BoundTensors`: onnxruntime `OrtValue`s on the session's device, fed and fetched through
  `IOBinding`. What the next step reads again (a key/value cache, a recurrent state, encoder
  outputs) stays on the device as the graph wrote it; only what the host needs (logits,
  log-probabilities, class probabilities) is copied back, and host inputs (token ids,
  masks, image batches) are copied to the device once per run. The array work between steps
  (joining and dropping rows, trimming and growing cache slots, writing a step's keys and values
  at their slot) runs as small onnxruntime graphs on that same device, so caches never cross.

The families' decode loops (their caches and step batches) are written once against `Tensors`
and run unchanged on either kind. `BoundTensors` also runs on the CPU provider, which is how the
tests cover the device path without a GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import onnxruntime as ort

T = TypeVar("T")
Outputs = tuple[dict[str, np.ndarray], dict[str, Any]]
OPSET = 18
# onnxruntime releases since 1.15 read IR 9; the helper would stamp the newest the onnx package knows.
IR_VERSION = 9


@dataclass(frozen=True)
class Window:
    """What `Tensors.window` makes: `rows` taken along `row_axis` (all when None), then
    [start:stop] along `axis`, then `before` and `after` zero slots added on that axis."""

    axis: int
    start: int
    stop: int
    before: int
    after: int
    rows: np.ndarray | None
    row_axis: int

    def shape(self, shape: tuple[int, ...]) -> list[int]:
        out = list(shape)
        out[self.axis] = self.stop - self.start + self.before + self.after
        if self.rows is not None:
            out[self.row_axis] = len(self.rows)
        return out


class Tensors(Generic[T]):
    """The array operations the decode loops need, on one kind of tensor."""

    def zeros(self, shape: Sequence[int]) -> T:
        """A float32 tensor of zeros."""
        raise NotImplementedError

    def upload(self, array: np.ndarray) -> T:
        """A copy of a host array where this kind's tensors live."""
        raise NotImplementedError

    def download(self, tensor: T) -> np.ndarray:
        raise NotImplementedError

    def shape(self, tensor: T) -> tuple[int, ...]:
        raise NotImplementedError

    def window(
        self,
        tensor: T,
        axis: int,
        start: int,
        stop: int,
        *,
        before: int = 0,
        after: int = 0,
        rows: np.ndarray | None = None,
        row_axis: int = 0,
    ) -> T:
        """`rows` taken along `row_axis` (all when None), then [start:stop] along `axis`, then
        `before` and `after` zero slots added on that axis: a new tensor (or `tensor` itself when
        nothing changes)."""
        shape = self.shape(tensor)
        if rows is None and start == 0 and stop == shape[axis] and before == 0 and after == 0:
            return tensor
        return self._window(tensor, Window(axis, start, stop, before, after, rows, row_axis))

    def _window(self, tensor: T, window: Window) -> T:
        raise NotImplementedError

    def concat(self, tensors: Sequence[T], axis: int) -> T:
        raise NotImplementedError

    def write(self, targets: Sequence[T], updates: Sequence[T], axes: Sequence[int], at: int) -> None:
        """In place: each update (width w on its axis) into its target at slots at .. at + w - 1."""
        raise NotImplementedError

    def run(
        self,
        session: ort.InferenceSession,
        feeds: Mapping[str, Any],
        fetch: Sequence[str],
        keep: Sequence[str] = (),
        options: ort.RunOptions | None = None,
    ) -> Outputs:
        """Run a graph: `fetch`ed outputs come back as host arrays, `keep` ones as this kind's tensors."""
        raise NotImplementedError


class HostTensors(Tensors[np.ndarray]):
    """numpy arrays in host memory; `session.run` moves them (a no-op on the CPU provider)."""

    def zeros(self, shape: Sequence[int]) -> np.ndarray:
        return np.zeros(tuple(shape), dtype=np.float32)

    def upload(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)

    def download(self, tensor: np.ndarray) -> np.ndarray:
        return tensor

    def shape(self, tensor: np.ndarray) -> tuple[int, ...]:
        return tuple(tensor.shape)

    def _window(self, tensor: np.ndarray, window: Window) -> np.ndarray:
        if window.rows is not None:
            tensor = np.take(tensor, window.rows, axis=window.row_axis)  # a copy
        index: list[slice] = [slice(None)] * tensor.ndim
        index[window.axis] = slice(window.start, window.stop)
        part = tensor[tuple(index)]
        if not window.before and not window.after:
            return np.ascontiguousarray(part)
        out = np.zeros(window.shape(tensor.shape), dtype=tensor.dtype)
        index[window.axis] = slice(window.before, window.before + part.shape[window.axis])
        out[tuple(index)] = part
        return out

    def concat(self, tensors: Sequence[np.ndarray], axis: int) -> np.ndarray:
        return tensors[0] if len(tensors) == 1 else np.concatenate(tensors, axis=axis)

    def write(self, targets: Sequence[np.ndarray], updates: Sequence[np.ndarray], axes: Sequence[int], at: int) -> None:
        for target, update, axis in zip(targets, updates, axes, strict=True):
            index: list[slice] = [slice(None)] * target.ndim
            index[axis] = slice(at, at + update.shape[axis])
            target[tuple(index)] = update

    def run(
        self,
        session: ort.InferenceSession,
        feeds: Mapping[str, Any],
        fetch: Sequence[str],
        keep: Sequence[str] = (),
        options: ort.RunOptions | None = None,
    ) -> Outputs:
        names = [*fetch, *keep]
        values = session.run(names, dict(feeds), options)
        return dict(zip(fetch, values[: len(fetch)], strict=True)), dict(zip(keep, values[len(fetch) :], strict=True))


HOST = HostTensors()


class BoundTensors(Tensors[ort.OrtValue]):
    """OrtValues on one device (`cuda` and its index, or `cpu`), moved only where asked.

    The array operations are small ONNX graphs (Gather, Slice, Pad, Concat, ScatterElements), one
    onnxruntime session per shape of operation, made on first use and shared by every graph on the
    device. `write` binds the scatter's output to its input's memory: onnxruntime's CPU and CUDA
    ScatterElements kernels skip their copy when the two are the same buffer, so a step's keys land
    in the cache without copying it.
    """

    def __init__(self, device: str, device_id: int, providers: list[Any]) -> None:
        self.device, self.device_id = device, device_id
        self._providers = providers
        self._sessions: dict[tuple[Any, ...], ort.InferenceSession] = {}
        self._lock = threading.Lock()

    # --- moving -------------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> ort.OrtValue:
        # np.array: a private copy, since on the CPU the OrtValue shares the array's memory
        return ort.OrtValue.ortvalue_from_numpy(np.array(array, order="C"), self.device, self.device_id)

    def download(self, tensor: ort.OrtValue) -> np.ndarray:
        return tensor.numpy()

    def shape(self, tensor: ort.OrtValue) -> tuple[int, ...]:
        return tuple(tensor.shape())

    def run(
        self,
        session: ort.InferenceSession,
        feeds: Mapping[str, Any],
        fetch: Sequence[str],
        keep: Sequence[str] = (),
        options: ort.RunOptions | None = None,
    ) -> Outputs:
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:  # a host array: copied to the device once, by onnxruntime, for this run
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in fetch:
            binding.bind_output(name, "cpu")
        for name in keep:
            binding.bind_output(name, self.device, self.device_id)
        session.run_with_iobinding(binding, options)
        values = binding.get_outputs()
        host = {name: value.numpy() for name, value in zip(fetch, values[: len(fetch)], strict=True)}
        return host, dict(zip(keep, values[len(fetch) :], strict=True))

    # --- array work, as graphs on the device ----------------------------------------------------

    def zeros(self, shape: Sequence[int]) -> ort.OrtValue:
        if 0 in shape:  # nothing to fill: no graph, no copy
            return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, self.device, self.device_id)
        return self._op(("zeros",), {"shape": np.asarray(shape, dtype=np.int64)})

    def _window(self, tensor: ort.OrtValue, window: Window) -> ort.OrtValue:
        rank = len(tensor.shape())
        shape = window.shape(tuple(tensor.shape()))
        if 0 in shape:
            return self.zeros(shape)
        pads = np.zeros(2 * rank, dtype=np.int64)
        pads[window.axis], pads[rank + window.axis] = window.before, window.after
        feeds: dict[str, Any] = {
            "x": tensor,
            "starts": np.array([window.start], dtype=np.int64),
            "ends": np.array([window.stop], dtype=np.int64),
            "pads": pads,
        }
        row_axis = None
        if window.rows is not None:
            feeds["rows"] = np.asarray(window.rows, dtype=np.int64)
            row_axis = window.row_axis
        return self._op(("window", rank, window.axis, row_axis), feeds)

    def concat(self, tensors: Sequence[ort.OrtValue], axis: int) -> ort.OrtValue:
        shapes = [self.shape(t) for t in tensors]
        filled = [t for t, s in zip(tensors, shapes, strict=True) if 0 not in s]
        if len(filled) == 1:
            return filled[0]
        if not filled:
            shape = list(shapes[0])
            shape[axis] = sum(s[axis] for s in shapes)
            return self.zeros(shape)
        return self._op(("concat", len(filled), axis), {f"x{i}": t for i, t in enumerate(filled)})

    def write(
        self, targets: Sequence[ort.OrtValue], updates: Sequence[ort.OrtValue], axes: Sequence[int], at: int
    ) -> None:
        ranks = tuple(len(target.shape()) for target in targets)
        session = self._session(("write", tuple(axes), ranks))
        binding = session.io_binding()
        binding.bind_cpu_input("at", np.array(at, dtype=np.int64))
        for i, (target, update) in enumerate(zip(targets, updates, strict=True)):
            binding.bind_ortvalue_input(f"data{i}", target)
            binding.bind_ortvalue_input(f"update{i}", update)
            # the output IS the target's memory: the scatter writes in place
            binding.bind_output(f"out{i}", self.device, self.device_id, np.float32, target.shape(), target.data_ptr())
        session.run_with_iobinding(binding)

    def _op(self, key: tuple[Any, ...], feeds: dict[str, Any]) -> ort.OrtValue:
        _, device = self.run(self._session(key), feeds, (), ("y",))
        return device["y"]

    def _session(self, key: tuple[Any, ...]) -> ort.InferenceSession:
        session = self._sessions.get(key)
        if session is None:
            with self._lock:
                session = self._sessions.get(key)
                if session is None:
                    options = ort.SessionOptions()
                    options.log_severity_level = 3
                    options.intra_op_num_threads = 1  # copies and gathers: one thread does it
                    options.inter_op_num_threads = 1
                    session = ort.InferenceSession(_op_graph(key), options, providers=self._providers)
                    self._sessions[key] = session
        return session


def _op_graph(key: tuple[Any, ...]) -> bytes:
    """The serialized ONNX model of one array operation (float32 tensors, int64 indices)."""
    from onnx import TensorProto, helper

    def tensor(name: str, elem: int = TensorProto.FLOAT) -> Any:
        return helper.make_tensor_value_info(name, elem, None)

    kind = key[0]
    nodes: list[Any]
    if kind == "zeros":
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["y"])]  # default value: float 0
        inputs, outputs = [tensor("shape", TensorProto.INT64)], [tensor("y")]
    elif kind == "window":
        _, _rank, axis, row_axis = key  # the rank only keys the cache
        source = "x"
        nodes = []
        inputs = [tensor("x"), tensor("starts", TensorProto.INT64), tensor("ends", TensorProto.INT64)]
        if row_axis is not None:
            nodes.append(helper.make_node("Gather", ["x", "rows"], ["taken"], axis=row_axis))
            inputs.append(tensor("rows", TensorProto.INT64))
            source = "taken"
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [axis])
        nodes.append(helper.make_node("Constant", [], ["axes"], value=axes))
        nodes.append(helper.make_node("Slice", [source, "starts", "ends", "axes"], ["part"]))
        nodes.append(helper.make_node("Pad", ["part", "pads"], ["y"], mode="constant"))
        inputs.append(tensor("pads", TensorProto.INT64))
        outputs = [tensor("y")]
    elif kind == "concat":
        _, count, axis = key
        names = [f"x{i}" for i in range(count)]
        nodes = [helper.make_node("Concat", names, ["y"], axis=axis)]
        inputs, outputs = [tensor(n) for n in names], [tensor("y")]
    elif kind == "write":
        # out_i = ScatterElements(data_i, index_i, update_i) along axis_i, where index_i holds
        # at, at + 1, ... along that axis (the update's width), broadcast to the update's shape
        _, axes_list, ranks = key
        one = helper.make_tensor("one", TensorProto.INT64, [], [1])
        nodes, inputs, outputs = [helper.make_node("Constant", [], ["one"], value=one)], [], []
        inputs.append(tensor("at", TensorProto.INT64))
        for i, (axis, rank) in enumerate(zip(axes_list, ranks, strict=True)):
            where = helper.make_tensor(f"axis{i}", TensorProto.INT64, [], [axis])
            lined = helper.make_tensor(
                f"lined{i}", TensorProto.INT64, [rank], [-1 if d == axis else 1 for d in range(rank)]
            )
            nodes += [
                helper.make_node("Shape", [f"update{i}"], [f"shape{i}"]),
                helper.make_node("Constant", [], [f"axis{i}"], value=where),
                helper.make_node("Gather", [f"shape{i}", f"axis{i}"], [f"width{i}"]),
                helper.make_node("Add", ["at", f"width{i}"], [f"end{i}"]),
                helper.make_node("Range", ["at", f"end{i}", "one"], [f"slots{i}"]),
                helper.make_node("Constant", [], [f"lined{i}"], value=lined),
                helper.make_node("Reshape", [f"slots{i}", f"lined{i}"], [f"column{i}"]),
                helper.make_node("Expand", [f"column{i}", f"shape{i}"], [f"index{i}"]),
                helper.make_node("ScatterElements", [f"data{i}", f"index{i}", f"update{i}"], [f"out{i}"], axis=axis),
            ]
            inputs += [tensor(f"data{i}"), tensor(f"update{i}")]
            outputs.append(tensor(f"out{i}"))
    else:  # pragma: no cover - the keys above are the only ones made
        raise ValueError(f"unknown array operation {kind!r}")
    graph = helper.make_graph(nodes, f"myelin-{kind}", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return bytes(model.SerializeToString())
