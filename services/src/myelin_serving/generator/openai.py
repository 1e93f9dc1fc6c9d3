"""OpenAI-compatible text completions over the decoding loop: `POST /v1/completions`.

The same `GeneratorModel.start` / `stream` / `complete` the gRPC servicer calls, so both doors share
the loop, its limits and its sampler: a request with a seed gets the same text through either. The
mapping: `prompt` (a string, or a list of one), `max_tokens` (unset: the service default, 128,
capped by the context left; the gRPC door's `max_new_tokens` 0), `temperature`, `top_p`, `stop`
(a string or a list), `seed`, `stream` (server-sent events ending in `data: [DONE]`, with
`stream_options.include_usage` adding the usage chunk), and Myelin's own `top_k` and
`repetition_penalty` (the SDK's `extra_body`). `n` and `best_of` must be 1; `logprobs`, `echo`,
`suffix`, `logit_bias` and non-zero presence or frequency penalties are refused (not silently
ignored). `finish_reason` is `length`, `stop` or `cancelled` (the service stopped the sequence).

There is no `/v1/chat/completions`: the models are character-level language models trained on
plain text without roles or turns, so any chat template would be invented; that route answers 404
naming the routes that exist.

A client that disconnects (mid-stream, or while waiting for a whole completion) cancels the
sequence, which leaves the batch before the next decoding step.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from myelin_serving.errors import InvalidArgument
from myelin_serving.family import ServingContext
from myelin_serving.generator.model import GenerationRequest, GeneratorModel
from myelin_serving.generator.sampling import SamplingParams
from myelin_serving.generator.steps import Finish, Sequence
from myelin_serving.http.body import read_json
from myelin_serving.http.openai import model_cards, openai_error, parse
from myelin_serving.http.responses import EventStream, json_response, sse_event, unless_disconnected
from myelin_serving.http.routes import HttpRoutes
from myelin_serving.interceptors import time_left

DONE = b"data: [DONE]\n\n"


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    best_of: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**64)
    logprobs: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # Myelin's own sampling options, beside OpenAI's.
    top_k: int = Field(0, ge=0)
    repetition_penalty: float | None = None

    def generation(self) -> GenerationRequest:
        """The request in the decoding loop's terms, refusing what it cannot honour."""
        refused = {
            "n": self.n not in (None, 1),
            "best_of": self.best_of not in (None, 1),
            "logprobs": bool(self.logprobs),
            "echo": bool(self.echo),
            "suffix": bool(self.suffix),
            "logit_bias": bool(self.logit_bias),
            "presence_penalty": bool(self.presence_penalty),
            "frequency_penalty": bool(self.frequency_penalty),
        }
        asked = [name for name, unsupported in refused.items() if unsupported]
        if asked:
            raise InvalidArgument(
                f"{', '.join(asked)}: not supported here (one completion per request, no log probabilities, no "
                "echo or suffix, no logit bias; for repeats use repetition_penalty)"
            )
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise InvalidArgument(f"prompt has {len(self.prompt)} entries: send one prompt per request")
            prompt = self.prompt[0]
        else:
            prompt = self.prompt
        return GenerationRequest(
            prompt=prompt,
            max_new_tokens=self.max_tokens or 0,
            sampling=SamplingParams(
                temperature=1.0 if self.temperature is None else self.temperature,
                top_k=self.top_k,
                top_p=1.0 if self.top_p is None else self.top_p,
                repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
                seed=self.seed,
            ),
            stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []),
        )


# Largest request, gRPC or HTTP (refused before it is read). A prompt is refused past
# max_prompt_tokens x its model's longest token (a few KiB for the shipped models), a scored text past
# the model's context, and stops are 8 x 64 characters: 1 MiB leaves room for raised limits.
REQUEST_BYTES = 1024 * 1024


class Completions:
    """Request in, the generator's own calls, OpenAI JSON (or events) out."""

    def __init__(self, context: ServingContext) -> None:
        self._manager = context.manager
        self._limit = min(context.settings.max_message_bytes, REQUEST_BYTES)

    async def create(self, request: Request) -> Response:
        params = parse(CompletionRequest, await read_json(request, self._limit))
        generation = params.generation()
        model = self._manager.get(params.model, kind=GeneratorModel)
        head = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model.name,
            "system_fingerprint": f"{model.name}:{model.version}",
        }
        if params.stream:
            sequence = model.start(generation, timeout=time_left())
            usage = params.stream_options is not None and params.stream_options.include_usage
            return EventStream(self._events(model, sequence, head, usage=usage))
        result = await unless_disconnected(request, model.complete(generation, timeout=time_left()))
        assert result.finish is not None
        return json_response({**head, "choices": [_choice(result.text, result.finish)], "usage": _usage(result.finish)})

    async def _events(
        self, model: GeneratorModel, sequence: Sequence, head: dict[str, Any], *, usage: bool
    ) -> AsyncIterator[bytes]:
        finish: Finish | None = None
        try:
            async for chunk in model.stream(sequence):
                finish = chunk.finish
                yield sse_event({**head, "choices": [_choice(chunk.text, finish)]})
        finally:  # however the stream ends (the client gone: closed at its last event), the sequence leaves
            model.loop.cancel(sequence)
        if usage and finish is not None:
            yield sse_event({**head, "choices": [], "usage": _usage(finish)})
        yield DONE


def _choice(text: str, finish: Finish | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": None if finish is None else finish.reason}


def _usage(finish: Finish) -> dict[str, int]:
    prompt, generated = finish.prompt_tokens, finish.generated_tokens
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def add_routes(routes: HttpRoutes, context: ServingContext) -> None:
    completions = Completions(context)
    routes.add("/v1/completions", completions.create, methods=("POST",), errors=openai_error)
    routes.add_models(lambda: model_cards(context.manager))
