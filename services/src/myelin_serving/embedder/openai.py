"""OpenAI-compatible embeddings over the word2vec models: `POST /v1/embeddings`.

`model` names a word2vec version (the newest ready one); `input` is a string or a list of
strings. Each string is split into words as training split its corpus (runs of letters and digits,
lowercased), and its embedding is the mean of its known words' unit vectors (`lookup` graph, its
dynamic batcher, the same as `Embedder.Embed`), scaled to length 1: a single known word gets
exactly its `Embed` vector. Unknown words are skipped and listed in the entry's `unknown_words`
(an addition to OpenAI's fields); a string without any known word is refused (400).
`encoding_format` is `float` (JSON numbers) or `base64` (little-endian float32, what the OpenAI SDK
asks for by default); `dimensions`, when given, must be the model's. `usage` counts words.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from myelin_serving.embedder.model import EmbedderModel, TextVector
from myelin_serving.errors import InvalidArgument
from myelin_serving.family import ServingContext
from myelin_serving.http.body import read_json, type_name
from myelin_serving.http.openai import model_cards, openai_error, parse
from myelin_serving.http.responses import json_response
from myelin_serving.http.routes import HttpRoutes
from myelin_serving.interceptors import time_left


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: Any  # a string or a list of strings: checked in texts(), with a message about this field
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidArgument(
                f"input must be a string or an array of strings (words and phrases; token ids are not "
                f"supported), not {type_name(self.input)}"
            )
        return texts


# Largest request, gRPC or HTTP (refused before it is read): words, and vectors of at most a few
# thousand numbers, 256 terms a request (max_request_batch).
REQUEST_BYTES = 4 * 1024 * 1024


class Embeddings:
    def __init__(self, context: ServingContext) -> None:
        self._manager = context.manager
        self._limit = min(context.settings.max_message_bytes, REQUEST_BYTES)
        self._max_items = context.settings.max_request_batch

    async def create(self, request: Request) -> Response:
        params = parse(EmbeddingRequest, await read_json(request, self._limit))
        texts = params.texts()
        model = self._manager.get(params.model, kind=EmbedderModel)
        if params.dimensions is not None and params.dimensions != model.dim:
            raise InvalidArgument(f"dimensions must be {model.dim}, this model's vector length, or left out")
        vectors = await model.embed_texts(texts, max_items=self._max_items, timeout=time_left())
        words = sum(v.words for v in vectors)
        return json_response(
            {
                "object": "list",
                "data": [_entry(i, v, params.encoding_format) for i, v in enumerate(vectors)],
                "model": model.name,
                "usage": {"prompt_tokens": words, "total_tokens": words},
            }
        )


def _entry(index: int, vector: TextVector, encoding: str) -> dict[str, Any]:
    values: Any = vector.values  # orjson writes float32 arrays itself
    if encoding == "base64":
        values = base64.b64encode(vector.values.astype("<f4").tobytes()).decode("ascii")
    return {"object": "embedding", "index": index, "embedding": values, "unknown_words": vector.unknown_words}


def add_routes(routes: HttpRoutes, context: ServingContext) -> None:
    embeddings = Embeddings(context)
    routes.add("/v1/embeddings", embeddings.create, methods=("POST",), errors=openai_error)
    routes.add_models(lambda: model_cards(context.manager))
