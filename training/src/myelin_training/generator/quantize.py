"""int8 weights for a GPT step graph (CPU serving), and what they cost in validation loss.

onnxruntime's dynamic quantization stores every MatMul/Gemm weight as int8 (one scale per
tensor) and quantizes each call's activations on the fly; onnxruntime fuses that into
DynamicQuantizeMatMul, which runs on integer kernels (AVX-512 VNNI / AVX2 on x86). On the
2-core machine of the README a decoding step of 1 or 8 rows takes about half the float32 graph's
time (README, Benchmarks). The graph's inputs and outputs are unchanged, so the service drives
it as it drives the float32 one. For CPU serving only: onnxruntime's CUDA
provider has no kernel for these nodes and would run them on the CPU.

The price is measured, not assumed: `step_graph_loss` teacher-forces the validation split
through a step graph one token per call, as the service decodes (the same consecutive windows as
the training's whole-split loss), for the float32 graph and for the int8 one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tqdm import tqdm

METHOD = (
    "onnxruntime.quantization.quantize_dynamic: MatMul and Gemm weights int8 (one scale per tensor), "
    "activations quantized per call (DynamicQuantizeMatMul)"
)


class _WithoutPreprocessingHint(logging.Filter):
    """onnxruntime's quantizer logs a hint to run its shape-inference pre-pass on every call; the
    step graph's shapes are symbolic on purpose, so the hint is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_step(source: Path, target: Path) -> None:
    """Write `source` with int8 MatMul/Gemm weights to `target`."""
    hint = _WithoutPreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.getLogger().removeFilter(hint)


def step_graph_loss(
    path: Path, decoder: Mapping[str, Any], ids: np.ndarray, block_size: int, *, batch: int = 64, desc: str = ""
) -> float:
    """Mean next-token loss of a key/value-cache step graph over consecutive windows of
    `block_size` tokens of `ids`, fed one token per call into caller-owned buffers."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    n = (len(ids) - 1) // block_size
    if n < 1:
        raise ValueError(f"{len(ids)} validation tokens: fewer than one window of {block_size} + 1")
    x = ids[: n * block_size].reshape(n, block_size).astype(np.int64)
    y = ids[1 : n * block_size + 1].reshape(n, block_size)
    heads, head_dim = decoder["cache_shape"]["heads"], decoder["cache_shape"]["head_dim"]
    axes = [decoder["slot_axis"][name.rsplit(".", 1)[1]] for name in decoder["cache_inputs"]]
    total = 0.0
    for start in tqdm(range(0, n, batch), desc=desc or path.name, unit="batch", leave=False, disable=None):
        xs, ys = x[start : start + batch], y[start : start + batch]
        rows = len(xs)
        buffers = [
            np.zeros(
                (rows, heads, head_dim, block_size) if axis == 3 else (rows, heads, block_size, head_dim), np.float32
            )
            for axis in axes
        ]
        feeds: dict[str, np.ndarray] = dict(zip(decoder["cache_inputs"], buffers, strict=True))
        feeds["padding"] = np.zeros(rows, np.int64)
        for t in range(block_size):
            feeds["input_ids"] = xs[:, t : t + 1]
            feeds["length"] = np.array(t, np.int64)
            logits, *new = session.run(["logits", *decoder["cache_outputs"]], feeds)
            for axis, buffer, values in zip(axes, buffers, new, strict=True):
                if axis == 3:
                    buffer[:, :, :, t : t + 1] = values
                else:
                    buffer[:, :, t : t + 1] = values
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_z = np.log(np.exp(shifted).sum(axis=1))
            total += float((log_z - shifted[np.arange(rows), ys[:, t]]).sum())
    return total / (n * block_size)


def quantize_version(staged_step: Path, decoder: Mapping[str, Any], validation_ids: np.ndarray) -> dict[str, Any]:
    """Replace the staged float32 step graph by its int8 version; the manifest's `quantization`."""
    block = int(decoder["context"])
    float32 = staged_step.with_name("step.float32.onnx")
    staged_step.rename(float32)
    try:
        quantize_step(float32, staged_step)
        loss_float32 = step_graph_loss(float32, decoder, validation_ids, block, desc="validation, float32 graph")
        loss_int8 = step_graph_loss(staged_step, decoder, validation_ids, block, desc="validation, int8 graph")
    finally:
        float32.unlink()
    return {
        "weights": "int8",
        "method": METHOD,
        "validation_loss": {"float32_graph": loss_float32, "int8_graph": loss_int8},
        "validation_tokens": ((len(validation_ids) - 1) // block) * block,
        "parity": "the step graph's parity entry is the float32 graph's against PyTorch, before quantization",
    }
