"""The Classifier gRPC servicer: proto in, a plain-Python call, proto out."""

from __future__ import annotations

import grpc

from myelin_api.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2
from myelin_serving.classifier.images import RawPixels
from myelin_serving.classifier.model import ClassifierModel, ImageInput
from myelin_serving.errors import InvalidArgument
from myelin_serving.family import ServingContext
from myelin_serving.interceptors import time_left

DTYPES = {common_pb2.DATA_TYPE_UINT8: "uint8", common_pb2.DATA_TYPE_FLOAT32: "float32"}


class ClassifierServicer(classifier_pb2_grpc.ClassifierServicer):
    def __init__(self, context: ServingContext) -> None:
        self._manager = context.manager
        self._max_batch = context.settings.max_request_batch

    async def Classify(
        self, request: classifier_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        model = self._manager.get(request.model.name, request.model.version, kind=ClassifierModel)
        images = [_image(image, i) for i, image in enumerate(request.images)]
        results = await model.classify(images, top_k=request.top_k, max_batch=self._max_batch, timeout=time_left())
        return classifier_pb2.ClassifyResponse(
            model=common_pb2.ModelRef(name=model.name, version=model.version),
            classifications=[
                classifier_pb2.Classification(
                    labels=[
                        classifier_pb2.LabelProbability(label=p.label, index=p.index, probability=p.probability)
                        for p in predictions
                    ]
                )
                for predictions in results
            ],
        )


def _image(image: classifier_pb2.Image, index: int) -> ImageInput:
    kind = image.WhichOneof("kind")
    if kind == "encoded":
        return image.encoded
    if kind == "raw":
        raw = image.raw
        return RawPixels(raw.height, raw.width, DTYPES.get(raw.dtype, ""), raw.data)
    raise InvalidArgument(f"images[{index}] is empty: set `encoded` (PNG/JPEG bytes) or `raw` (pixels)")
