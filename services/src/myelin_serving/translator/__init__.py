"""The translator family: English-to-French Transformers (translator-tatoeba, ...) behind `Translator`.

model.py     a loaded version: tokenizer, limits, request checks
steps.py     every request's sentences in one encoder and one decoder call per step (../engine.py)
batch.py     the rows of one decoder step: caches padded to a common length, joined and reordered
search.py    beam search for one sentence (beam_size 1 is greedy)
servicer.py  the gRPC servicer
"""

from __future__ import annotations

from myelin_api.v1 import translator_pb2, translator_pb2_grpc
from myelin_serving.family import Family, ServingContext
from myelin_serving.interceptors import HandlerRegistry
from myelin_serving.translator.metrics import TranslatorMetrics
from myelin_serving.translator.model import load
from myelin_serving.translator.servicer import TranslatorServicer
from myelin_serving.translator.settings import TranslatorSettings


def _add_servicers(server: HandlerRegistry, context: ServingContext) -> None:
    translator_pb2_grpc.add_TranslatorServicer_to_server(TranslatorServicer(context), server)


FAMILY = Family(
    name="translator",
    service_names=(translator_pb2.DESCRIPTOR.services_by_name["Translator"].full_name,),
    load=load,
    add_servicers=_add_servicers,
    # 256 sentences (max_request_batch) of what a model's source limit can hold is about 1 MiB of
    # UTF-8 for the shipped models; with `truncate`, longer sentences are cut after parsing.
    max_request_bytes={"Translate": 8 * 1024 * 1024},
    settings=TranslatorSettings,  # MYELIN_TRANSLATOR__*
    metrics=TranslatorMetrics,
)
