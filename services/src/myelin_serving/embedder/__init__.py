"""The embedder family: word2vec vectors (word2vec-*) behind `Embedder`, and OpenAI's `/v1/embeddings`."""

from __future__ import annotations

from myelin_api.v1 import embedder_pb2, embedder_pb2_grpc
from myelin_serving.embedder import openai
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
    add_routes=openai.add_routes,
    max_request_bytes=dict.fromkeys(
        ("Embed", "MostSimilar", "Analogy", "Similarity", "DoesntMatch"), openai.REQUEST_BYTES
    ),
)
