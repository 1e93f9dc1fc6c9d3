"""The Embedder gRPC servicer: proto in, a plain-Python call, proto out."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from myelin_api.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from myelin_serving.embedder.model import EmbedderModel, Neighbour
from myelin_serving.family import ServingContext
from myelin_serving.interceptors import time_left


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    def __init__(self, context: ServingContext) -> None:
        self._manager = context.manager
        self._max_items = context.settings.max_request_batch

    def _model(self, ref: common_pb2.ModelRef) -> EmbedderModel:
        model = self._manager.get(ref.name, ref.version, kind=EmbedderModel)
        return model

    async def Embed(
        self, request: embedder_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedResponse:
        model = self._model(request.model)
        vectors = await model.embed(list(request.words), max_items=self._max_items, timeout=time_left())
        return embedder_pb2.EmbedResponse(
            model=_ref(model),
            dim=model.dim,
            vectors=[
                embedder_pb2.WordVector(
                    word=v.word, found=v.values is not None, index=v.index, values=[] if v.values is None else v.values
                )
                for v in vectors
            ],
        )

    async def MostSimilar(
        self, request: embedder_pb2.MostSimilarRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.MostSimilarResponse:
        model = self._model(request.model)
        neighbours = await model.most_similar(
            list(request.positive),
            list(request.negative),
            [list(v.values) for v in request.positive_vectors],
            [list(v.values) for v in request.negative_vectors],
            top_k=request.top_k,
            restrict_vocab=request.restrict_vocab,
            max_items=self._max_items,
            timeout=time_left(),
        )
        return embedder_pb2.MostSimilarResponse(model=_ref(model), neighbours=_neighbours(neighbours))

    async def Analogy(
        self, request: embedder_pb2.AnalogyRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.AnalogyResponse:
        model = self._model(request.model)
        answers = await model.analogy(
            [(q.a, q.b, q.c) for q in request.questions],
            top_k=request.top_k,
            restrict_vocab=request.restrict_vocab,
            max_items=self._max_items,
            timeout=time_left(),
        )
        return embedder_pb2.AnalogyResponse(
            model=_ref(model),
            answers=[
                embedder_pb2.AnalogyAnswer(candidates=_neighbours(a.candidates), unknown_words=a.unknown_words)
                for a in answers
            ],
        )

    async def Similarity(
        self, request: embedder_pb2.SimilarityRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.SimilarityResponse:
        model = self._model(request.model)
        results = await model.similarity(
            [(p.first, p.second) for p in request.pairs], max_items=self._max_items, timeout=time_left()
        )
        return embedder_pb2.SimilarityResponse(
            model=_ref(model),
            similarities=[
                embedder_pb2.PairSimilarity(
                    found=r.similarity is not None, similarity=r.similarity or 0.0, unknown_words=r.unknown_words
                )
                for r in results
            ],
        )

    async def DoesntMatch(
        self, request: embedder_pb2.DoesntMatchRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.DoesntMatchResponse:
        model = self._model(request.model)
        word, similarities = await model.doesnt_match(
            list(request.words), max_items=self._max_items, timeout=time_left()
        )
        return embedder_pb2.DoesntMatchResponse(model=_ref(model), word=word, similarities=similarities)


def _ref(model: EmbedderModel) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=model.name, version=model.version)


def _neighbours(neighbours: Sequence[Neighbour]) -> list[embedder_pb2.Neighbour]:
    return [embedder_pb2.Neighbour(word=n.word, index=n.index, score=n.score) for n in neighbours]
