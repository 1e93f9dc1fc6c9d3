"""The Translator gRPC servicer: proto in, a plain-Python call, proto out."""

from __future__ import annotations

from dataclasses import asdict

import grpc

from myelin_api.v1 import common_pb2, translator_pb2, translator_pb2_grpc
from myelin_serving.family import ServingContext
from myelin_serving.interceptors import time_left
from myelin_serving.translator.model import TranslatorModel


class TranslatorServicer(translator_pb2_grpc.TranslatorServicer):
    def __init__(self, context: ServingContext) -> None:
        self._manager = context.manager

    async def Translate(
        self, request: translator_pb2.TranslateRequest, context: grpc.aio.ServicerContext
    ) -> translator_pb2.TranslateResponse:
        model = self._manager.get(request.model.name, request.model.version, kind=TranslatorModel)
        results = await model.translate(
            list(request.sentences),
            beam_size=request.beam_size if request.HasField("beam_size") else None,
            max_length=request.max_length if request.HasField("max_length") else None,
            length_penalty=request.length_penalty if request.HasField("length_penalty") else None,
            truncate=request.truncate,
            timeout=time_left(),
            beams=request.return_beams,
        )
        return translator_pb2.TranslateResponse(
            model=common_pb2.ModelRef(name=model.name, version=model.version),
            translations=[
                translator_pb2.Translation(
                    text=r.text,
                    score=r.score,
                    log_probability=r.log_probability,
                    tokens=r.tokens,
                    source_truncated=r.source_truncated,
                    finished=r.finished,
                    beams=[translator_pb2.Beam(**asdict(b)) for b in r.beams],  # the same fields
                )
                for r in results
            ],
        )
