"""The generator family: language models (generator-gpt-*, generator-gru-*) behind `Generator`.

`steps.py` is continuous batching on the step engine (../engine.py), `cache.py` the batched KV/state
caches and the step graph, `sampling.py` the per-sequence sampler, `text.py` tokenizing and streaming
text out, `openai.py` the OpenAI-compatible `/v1/completions` over the same engine.
"""

from __future__ import annotations

from myelin_api.v1 import generator_pb2, generator_pb2_grpc
from myelin_serving.family import Family, ServingContext
from myelin_serving.generator import openai
from myelin_serving.generator.metrics import GeneratorMetrics
from myelin_serving.generator.model import load
from myelin_serving.generator.servicer import GeneratorServicer
from myelin_serving.generator.settings import GenerationSettings
from myelin_serving.interceptors import HandlerRegistry


def _add_servicers(server: HandlerRegistry, context: ServingContext) -> None:
    generator_pb2_grpc.add_GeneratorServicer_to_server(GeneratorServicer(context), server)


FAMILY = Family(
    name="generator",
    service_names=(generator_pb2.DESCRIPTOR.services_by_name["Generator"].full_name,),
    load=load,
    add_servicers=_add_servicers,
    add_routes=openai.add_routes,
    max_request_bytes=dict.fromkeys(("Generate", "Complete", "Score"), openai.REQUEST_BYTES),
    settings=GenerationSettings,
    settings_key="generation",  # MYELIN_GENERATION__*
    metrics=GeneratorMetrics,
)
