"""The Generator gRPC servicer: proto in, a plain-Python call, proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from myelin_api.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from myelin_serving.family import ServingContext
from myelin_serving.generator.model import GenerationRequest, GeneratorModel
from myelin_serving.generator.sampling import SamplingParams
from myelin_serving.generator.steps import Finish
from myelin_serving.interceptors import time_left

REASONS = {
    "length": generator_pb2.FINISH_REASON_LENGTH,
    "stop": generator_pb2.FINISH_REASON_STOP,
    "cancelled": generator_pb2.FINISH_REASON_CANCELLED,
}


class GeneratorServicer(generator_pb2_grpc.GeneratorServicer):
    def __init__(self, context: ServingContext) -> None:
        self._manager = context.manager

    async def Generate(
        self, request: generator_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generator_pb2.GenerateResponse]:
        model = self._model(request)
        sequence = model.start(_request(request), timeout=time_left())
        # However the call ends (cancelled, deadline, disconnect), the sequence leaves the batch.
        context.add_done_callback(lambda _: model.loop.cancel(sequence))
        ref = common_pb2.ModelRef(name=model.name, version=model.version)
        async for chunk in model.stream(sequence):
            yield generator_pb2.GenerateResponse(
                model=ref, text=chunk.text, token_ids=chunk.token_ids, finish=_finish(chunk.finish)
            )

    async def Complete(
        self, request: generator_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.CompleteResponse:
        model = self._model(request)
        result = await model.complete(_request(request), timeout=time_left())
        return generator_pb2.CompleteResponse(
            model=common_pb2.ModelRef(name=model.name, version=model.version),
            text=result.text,
            token_ids=result.token_ids,
            finish=_finish(result.finish),
        )

    async def Score(
        self, request: generator_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.ScoreResponse:
        model = self._model(request)
        tokens, logprobs = await model.score(request.text, timeout=time_left())
        return generator_pb2.ScoreResponse(
            model=common_pb2.ModelRef(name=model.name, version=model.version), token_ids=tokens, logprobs=logprobs
        )

    def _model(self, request: generator_pb2.GenerateRequest | generator_pb2.ScoreRequest) -> GeneratorModel:
        model = self._manager.get(request.model.name, request.model.version, kind=GeneratorModel)
        return model


def _request(request: generator_pb2.GenerateRequest) -> GenerationRequest:
    return GenerationRequest(
        prompt=request.prompt,
        max_new_tokens=request.max_new_tokens,
        sampling=SamplingParams(
            temperature=request.temperature if request.HasField("temperature") else 1.0,
            top_k=request.top_k,
            top_p=request.top_p if request.HasField("top_p") else 1.0,
            repetition_penalty=request.repetition_penalty if request.HasField("repetition_penalty") else 1.0,
            seed=request.seed if request.HasField("seed") else None,
        ),
        stop=list(request.stop),
    )


def _finish(finish: Finish | None) -> generator_pb2.Finish | None:
    if finish is None:
        return None
    return generator_pb2.Finish(
        reason=REASONS[finish.reason],
        prompt_tokens=finish.prompt_tokens,
        generated_tokens=finish.generated_tokens,
        seed=finish.seed,
        stop_sequence=finish.stop_sequence,
    )
