"""ONNX export with a parity check against PyTorch, and publication into the model repository.

Every family exports through `export_graph`: named inputs and outputs, dynamic axes as named
`torch.export.Dim`s, a pinned opset, `onnx.checker`, then onnxruntime against PyTorch on fresh
random inputs at shapes other than the example's. Drift beyond the tolerance fails the export.

A model version is published with `publish_version`: files are written into a staging folder next
to the versions and renamed into place in one step, so a service watching the repository never
sees half a version.

Repository layout (Triton-style): <repository>/<model-name>/<version>/{model.json, *.onnx, ...}
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from myelin_training.data.files import sha256_file

OPSET = 18
SAME_AXIS_NAME = (
    r"# The axis name: (\S+) will not be used, since it shares the same shape constraints with another axis: \1\.$"
)
MANIFEST = "model.json"
SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
ONNX_TO_KSERVE: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.BOOL: "BOOL",
}


class ExportParityError(RuntimeError):
    """onnxruntime and PyTorch disagree on the exported graph beyond the tolerance."""


@dataclass
class GraphExport:
    """One ONNX graph of a model version.

    `parity_inputs(generator)` returns fresh inputs, ideally at shapes other than the example's;
    it is called `parity_trials` times. `compared_outputs` names the outputs held to the tolerance
    (default: all); leave out what near-ties may legitimately reorder (top-k indices), and check
    it some other way.
    """

    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: tuple[dict[int, Any] | None, ...]
    parity_inputs: Callable[[torch.Generator], tuple[torch.Tensor, ...]]
    atol: float = 1e-4
    rtol: float = 1e-3
    parity_trials: int = 4
    compared_outputs: tuple[str, ...] | None = None


@dataclass
class ParityReport:
    max_abs_diff: float
    trials: int
    shapes: list[list[list[int]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "trials": self.trials, "input_shapes": self.shapes}


def export_graph(spec: GraphExport, path: Path, *, seed: int = 0) -> tuple[ParityReport, dict[str, Any]]:
    """Export `spec.module` to `path`, check it, and return the parity report and its signature."""
    module = spec.module.eval()
    # The exporter logs that torchvision's ops are not registered (we use none) and triggers a
    # pytree deprecation warning inside torch itself; neither is actionable here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*", category=FutureWarning)
        # One Dim shared by several inputs (the batch of every input) is one symbol, as meant; torch 2.13
        # still warns, once per further input, that the name it already gave that symbol "will not be
        # used". Only that case (the same name twice) is silenced; a real clash of two names still shows.
        warnings.filterwarnings("ignore", message=SAME_AXIS_NAME, category=UserWarning)
        torch.onnx.export(
            module,
            spec.example_inputs,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_shapes=spec.dynamic_shapes,
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    report = check_parity(spec, path, seed=seed)
    return report, graph_signature(model)


def check_parity(spec: GraphExport, path: Path, *, seed: int = 0) -> ParityReport:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    shapes: list[list[list[int]]] = []
    for _ in range(spec.parity_trials):
        inputs = spec.parity_inputs(generator)
        shapes.append([list(t.shape) for t in inputs])
        with torch.no_grad():
            expected = spec.module(*inputs)
        if isinstance(expected, torch.Tensor):
            expected = (expected,)
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(spec.input_names, inputs, strict=True)}
        got = session.run(spec.output_names, feeds)
        for name, want, have in zip(spec.output_names, expected, got, strict=True):
            if spec.compared_outputs is not None and name not in spec.compared_outputs:
                continue
            want_np = want.detach().cpu().numpy()
            if want_np.shape != have.shape:
                raise ExportParityError(
                    f"{path.name}: output {name} has shape {have.shape}, PyTorch gives {want_np.shape}"
                )
            diff = np.abs(want_np.astype(np.float64) - have.astype(np.float64))
            worst = max(worst, float(diff.max(initial=0.0)))
            limit = spec.atol + spec.rtol * np.abs(want_np.astype(np.float64))
            if np.any(diff > limit):
                raise ExportParityError(
                    f"{path.name}: output {name} drifts from PyTorch by up to {float(diff.max()):.3g} "
                    f"(atol {spec.atol}, rtol {spec.rtol}) at input shapes {shapes[-1]}"
                )
    return ParityReport(max_abs_diff=worst, trials=spec.parity_trials, shapes=shapes)


def graph_signature(model: onnx.ModelProto) -> dict[str, Any]:
    """Inputs and outputs with KServe datatypes and -1 for dynamic dimensions."""

    def specs(values: Sequence[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out.append({"name": v.name, "datatype": ONNX_TO_KSERVE.get(t.elem_type, str(t.elem_type)), "shape": shape})
        return out

    return {"inputs": specs(model.graph.input), "outputs": specs(model.graph.output)}


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    return name


def existing_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def staging_dir(repository: Path, name: str) -> Path:
    """A fresh folder beside the versions of `name`; services ignore names that are not integers."""
    path = repository / check_name(name) / f".staging-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    return path


def publish_version(repository: Path, name: str, staged: Path, manifest: Mapping[str, Any]) -> Path:
    """Write the manifest into `staged` and rename it to the next free version of `name`."""
    model_dir = repository / check_name(name)
    for _ in range(100):
        version = (existing_versions(model_dir) or [0])[-1] + 1
        body = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **manifest,
        }
        (staged / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=False, default=_json_default) + "\n")
        target = model_dir / str(version)
        try:
            os.rename(staged, target)  # atomic; fails if another export took this version first
        except OSError:
            if target.exists():
                continue
            raise
        return target
    shutil.rmtree(staged, ignore_errors=True)
    raise RuntimeError(f"could not allocate a version for {name} in {repository}")


def graph_entry(path: Path, signature: Mapping[str, Any], parity: ParityReport) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_file(path), **signature, "parity": parity.as_dict()}


def export_info() -> dict[str, Any]:
    return {"opset": OPSET, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} into a manifest")
