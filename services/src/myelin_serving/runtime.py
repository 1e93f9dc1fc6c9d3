"""onnxruntime sessions: provider choice (CUDA, then CPU), threads, device memory, IO binding. No gRPC.

`onnxruntime.get_available_providers()` lists CUDA whenever onnxruntime-gpu is installed, GPU or
not, so the provider in use is read back from the session after creating it. Each graph then
gets the `Tensors` its callers move data with (devices.py): OrtValues bound on the session's device
when IO binding is on, numpy arrays otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from myelin_serving.devices import HOST, BoundTensors, Tensors
from myelin_serving.settings import parse_device

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_TO_KSERVE = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint64)": "UINT64",
    "tensor(uint32)": "UINT32",
    "tensor(uint16)": "UINT16",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


# What a version's load error says when `--device cuda[:N]` cannot be honoured (the server looks for it).
CUDA_UNUSABLE = "was asked for but onnxruntime could not use CUDA"

# Shrinks the CPU arena after a run: measured on the GRU step graph, a 256 x 4,096-token run left
# the process at 720 MB without it and back at its idle 56 MB with it; small runs cost ~10 us more.
_RELEASE = ort.RunOptions()
_RELEASE.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


class GraphLoadError(RuntimeError):
    """An ONNX file is missing, corrupt, or cannot run on the requested device."""


def check_device(device: str) -> None:
    """Refuse `cuda[:N]` at start when this onnxruntime has no CUDA provider at all (the CPU package)."""
    if parse_device(device)[0] == "cuda" and CUDA not in ort.get_available_providers():
        raise GraphLoadError(
            f"--device {device} (MYELIN_DEVICE) was asked for, but this onnxruntime {ort.__version__} has no CUDA "
            f"provider (it has {', '.join(ort.get_available_providers())}): install onnxruntime-gpu (the GPU "
            "image has it), or serve with --device auto or cpu"
        )


@dataclass(frozen=True)
class RuntimeOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    intra_op_threads: int = 0  # 0: onnxruntime's default, one per core
    # onnxruntime's pool threads busy-wait for work between runs by default; on a few cores that
    # steals the CPU the event loop needs to receive the next batch.
    spinning: bool = False
    # on | off | auto (on for CUDA, off for the CPU provider, where it measured slower: devices.py)
    io_binding: str = "auto"
    # The CUDA arena's limit per session, in MiB (onnxruntime's gpu_mem_limit); 0: no limit.
    device_memory_limit_mb: int = 0


_BOUND: dict[tuple[str, int, int], BoundTensors] = {}
_BOUND_LOCK = threading.Lock()


def bound_tensors(device: str, device_id: int, providers: list[Any]) -> BoundTensors:
    """One BoundTensors (and its operation graphs) per device and memory limit, shared by every graph."""
    limit = next((p[1].get("gpu_mem_limit", 0) for p in providers if isinstance(p, tuple)), 0)
    key = (device, device_id, int(limit))
    with _BOUND_LOCK:
        if key not in _BOUND:
            _BOUND[key] = BoundTensors(device, device_id, providers)
        return _BOUND[key]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # KServe name: FP32, INT64, ...
    shape: tuple[int, ...]  # -1 for dynamic dimensions
    dims: tuple[str, ...] = ()  # the symbolic name of each axis ("batch", "sequence"), "" where none


class OnnxGraph:
    """One onnxruntime session and its signature."""

    def __init__(self, path: Path, options: RuntimeOptions) -> None:
        if not path.is_file():
            raise GraphLoadError(f"{path}: ONNX file not found")
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3  # errors only: a missing CUDA library is handled below
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.intra_op_threads:
            session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = 1
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spinning else "0")
        kind, index = parse_device(options.device)
        wanted: list[Any] = [CPU]
        if kind in ("auto", "cuda") and CUDA in ort.get_available_providers():
            cuda: dict[str, Any] = {"device_id": index}
            if options.device_memory_limit_mb:
                cuda["gpu_mem_limit"] = options.device_memory_limit_mb * 1024 * 1024
            wanted = [(CUDA, cuda), CPU]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise GraphLoadError(f"{path}: onnxruntime cannot load it: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        if kind == "cuda" and self.provider != CUDA:
            raise GraphLoadError(f"{path}: device {options.device!r} {CUDA_UNUSABLE}")
        on_cuda = self.provider == CUDA
        if options.io_binding == "on" or (options.io_binding == "auto" and on_cuda):
            place = ("cuda", index, wanted) if on_cuda else ("cpu", 0, [CPU])
            self.tensors: Tensors[Any] = bound_tensors(*place)
        else:
            self.tensors = HOST
        self.path = path
        self.inputs = [_info(i) for i in self.session.get_inputs()]
        self.outputs = [_info(o) for o in self.session.get_outputs()]
        self.output_names = [o.name for o in self.outputs]

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, *, release_memory: bool = False
    ) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (bound: inputs copied to the device once, outputs back once).

        `release_memory` hands the memory the run took back after it (onnxruntime's CPU arena otherwise
        keeps its high-water mark for later runs): for runs whose size a caller chose, such as KServe
        requests on graphs without a batcher."""
        names = list(outputs) if outputs is not None else self.output_names
        return self.tensors.run(self.session, feeds, names, options=_RELEASE if release_memory else None)[0]


def _info(arg: ort.NodeArg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    dims = tuple(d if isinstance(d, str) else "" for d in arg.shape)
    return TensorInfo(name=arg.name, datatype=ORT_TO_KSERVE.get(arg.type, arg.type), shape=shape, dims=dims)
