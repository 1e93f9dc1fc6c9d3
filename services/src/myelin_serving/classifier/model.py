"""A loaded classifier version and the classification logic: no gRPC here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from myelin_serving.batching import DynamicBatcher
from myelin_serving.classifier.images import PixelBudget, PixelRows, RawPixels, decode_grey, raw_pixels
from myelin_serving.errors import InvalidArgument
from myelin_serving.repository import LoadContext, LoadedModel, ModelVersion
from myelin_serving.runtime import OnnxGraph

GRAPH = "model"

ImageInput = bytes | RawPixels


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs more, for every answer
class Prediction:
    label: str
    index: int
    probability: float


class ClassifierModel(LoadedModel):
    def __init__(self, version: ModelVersion, graph: OnnxGraph, batcher: DynamicBatcher) -> None:
        super().__init__(version, {GRAPH: graph}, {GRAPH: batcher})
        _, self.height, self.width = graph.inputs[0].shape  # (B, H, W)
        self.input_name = graph.inputs[0].name
        self.output_name = graph.outputs[0].name
        self.labels = list(version.manifest.labels) or [str(i) for i in range(graph.outputs[0].shape[-1])]

    async def classify(
        self, images: Sequence[ImageInput], *, top_k: int, max_batch: int, timeout: float | None
    ) -> list[list[Prediction]]:
        if not images:
            raise InvalidArgument("images is empty: send at least one image")
        if len(images) > max_batch:
            raise InvalidArgument(f"{len(images)} images in one request; the limit is {max_batch}: split the batch")
        k = top_k or 1
        if not 1 <= k <= len(self.labels):
            raise InvalidArgument(f"top_k must be between 1 and {len(self.labels)}, got {top_k}")
        pixels = await self._preprocess(images)
        outputs = await self.batchers[GRAPH].infer({self.input_name: pixels}, timeout=timeout)
        return self._top_k(outputs[self.output_name], k)

    async def _preprocess(self, images: Sequence[ImageInput]) -> PixelRows:
        # Decoding cost depends on the declared image size, not the payload's: keep it off the event loop.
        if any(isinstance(i, bytes) for i in images):
            return await asyncio.to_thread(self._pixels, images)
        return self._pixels(images)

    def _pixels(self, images: Sequence[ImageInput]) -> PixelRows:
        # Checked here, converted once: PixelRows writes them into the batch the batcher assembles.
        budget = PixelBudget()
        return PixelRows(
            [
                decode_grey(image, self.height, self.width, i, budget)
                if isinstance(image, bytes)
                else raw_pixels(image, self.height, self.width, i)
                for i, image in enumerate(images)
            ],
            self.height,
            self.width,
        )

    def _top_k(self, probabilities: np.ndarray, k: int) -> list[list[Prediction]]:
        # (B, classes) -> the k most probable labels per row, most probable first
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]  # (B, k)
        labels = self.labels
        # Python lists from here: indexing numpy scalars one by one costs more than converting once.
        return [
            [Prediction(labels[j], j, row[j]) for j in indices]
            for indices, row in zip(top.tolist(), probabilities.tolist(), strict=True)
        ]


async def load(version: ModelVersion, context: LoadContext) -> ClassifierModel:
    graph = await context.open_graph(version, GRAPH)
    spec = graph.inputs[0]
    if len(graph.inputs) != 1 or len(spec.shape) != 3 or min(spec.shape[1:]) < 1 or spec.datatype != "FP32":
        raise ValueError(f"{version.name}: a classifier graph takes one FP32 input of shape (B, H, W), not {spec}")
    model = ClassifierModel(version, graph, context.batcher(version, graph))
    # Warm-up: the first runs allocate; do them before the version is marked ready.
    max_rows = context.batching_for(version).max_batch_size
    for rows in sorted({1, max_rows}):
        zeros = np.zeros((rows, model.height, model.width), dtype=np.float32)
        await asyncio.to_thread(graph.run, {model.input_name: zeros})
    return model
