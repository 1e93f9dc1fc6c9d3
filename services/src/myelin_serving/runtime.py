"""onnxruntime sessions: provider choice (CUDA, then CPU), threads, warm-up. No gRPC here.

`onnxruntime.get_available_providers()` lists CUDA whenever onnxruntime-gpu is installed, GPU or
not, so the provider in use is read back from the session after creating it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

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


# Shrinks the CPU arena after a run: measured on the GRU step graph, a 256 x 4,096-token run left
# the process at 720 MB without it and back at its idle 56 MB with it; small runs cost ~10 us more.
_RELEASE = ort.RunOptions()
_RELEASE.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


class GraphLoadError(RuntimeError):
    """An ONNX file is missing, corrupt, or cannot run on the requested device."""


@dataclass(frozen=True)
class RuntimeOptions:
    device: str = "auto"  # auto | cpu | cuda
    intra_op_threads: int = 0  # 0: onnxruntime's default, one per core
    # onnxruntime's pool threads busy-wait for work between runs by default; on a few cores that
    # steals the CPU the event loop needs to receive the next batch.
    spinning: bool = False


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
        wanted = [CUDA, CPU] if options.device in ("auto", "cuda") and CUDA in ort.get_available_providers() else [CPU]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise GraphLoadError(f"{path}: onnxruntime cannot load it: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        if options.device == "cuda" and self.provider != CUDA:
            raise GraphLoadError(f"{path}: device 'cuda' was asked for but onnxruntime could not use CUDA")
        self.path = path
        self.inputs = [_info(i) for i in self.session.get_inputs()]
        self.outputs = [_info(o) for o in self.session.get_outputs()]
        self.output_names = [o.name for o in self.outputs]

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, *, release_memory: bool = False
    ) -> dict[str, np.ndarray]:
        """The graph's outputs for `feeds`. `release_memory` hands the memory the run took back after it
        (onnxruntime's CPU arena otherwise keeps its high-water mark for later runs): for runs whose
        size a caller chose, such as KServe requests on graphs without a batcher."""
        names = list(outputs) if outputs is not None else self.output_names
        options = _RELEASE if release_memory else None
        return dict(zip(names, self.session.run(names, dict(feeds), options), strict=True))


def _info(arg: ort.NodeArg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    dims = tuple(d if isinstance(d, str) else "" for d in arg.shape)
    return TensorInfo(name=arg.name, datatype=ORT_TO_KSERVE.get(arg.type, arg.type), shape=shape, dims=dims)
