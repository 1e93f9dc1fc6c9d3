"""The embedder family: word2vec vectors (word2vec-*) behind `Embedder`."""

from __future__ import annotations

from myelin_api.v1 import embedder_pb2, embedder_pb2_grpc
from myelin_serving.embedder.model import load
from myelin_serving.embedder.servicer import EmbedderServicer
from myelin_serving.family import Family, ServingContext
from myelin_serving.interceptors import HandlerRegistry


def _add_servicers(server: HandlerRegistry, context: ServingContext) -> None:
    embedder_pb2_grpc.add_EmbedderServicer_to_server(EmbedderServicer(context), server)


FAMILY = Family(
    name="embedder",
    service_names=(embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name,),
    load=load,
    add_servicers=_add_servicers,
    # Words, and vectors of at most a few thousand numbers, 256 terms a request (max_request_batch).
    max_request_bytes=dict.fromkeys(("Embed", "MostSimilar", "Analogy", "Similarity", "DoesntMatch"), 4 * 1024 * 1024),
)
