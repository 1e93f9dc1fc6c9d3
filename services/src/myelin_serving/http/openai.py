"""What the OpenAI-compatible routes share: their error body, request parsing, and `/v1/models`.

Families add the routes that fit their models (`/v1/completions`, `/v1/embeddings`: the family's
`add_routes`) and say which models `GET /v1/models` lists; the core adds `/v1/models` only when
some family did. Errors take OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`
(the SDKs read `message`), with the HTTP status of the one error table and its gRPC code name as
`code`. Request bodies are pydantic models that ignore fields they do not know (clients send
many); a field Myelin does not implement is refused when it asks for something, never ignored.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from myelin_serving.errors import InvalidArgument, ModelNotReady, NotFound, Status
from myelin_serving.http.responses import json_response
from myelin_serving.http.routes import HttpRoutes, ModelCard
from myelin_serving.repository import MANIFEST, ModelManager

RequestModel = TypeVar("RequestModel", bound=BaseModel)


def openai_error(status: Status, message: str) -> dict[str, Any]:
    kind = (
        "rate_limit_error" if status.http == 429 else "server_error" if status.http >= 500 else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": status.grpc.name.lower()}}


def parse(model: type[RequestModel], body: dict[str, Any]) -> RequestModel:
    """`body` as `model`, or InvalidArgument naming each wrong field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()[:5]
        )
        raise InvalidArgument(f"invalid request: {problems}") from None


def add_model_routes(routes: HttpRoutes) -> None:
    """`GET /v1/models` and `GET /v1/models/{model}`, from what the family's listers say."""
    if not routes.model_listers:
        return
    listers = list(routes.model_listers)

    def cards() -> list[ModelCard]:
        return [card for lister in listers for card in lister()]

    async def list_models(request: Request) -> Response:
        return json_response({"object": "list", "data": [_card(c) for c in cards()]})

    async def get_model(request: Request) -> Response:
        wanted = request.path_params["model"]
        found = next((c for c in cards() if c.id == wanted), None)
        if found is None:
            served = ", ".join(c.id for c in cards()) or "none yet"
            raise NotFound(f"model {wanted[:80]!r} not found; this service serves: {served}")
        return json_response(_card(found))

    routes.add("/v1/models", list_models, errors=openai_error)
    routes.add("/v1/models/{model}", get_model, errors=openai_error)


def model_cards(manager: ModelManager) -> list[ModelCard]:
    """A card for every model with a ready version; `created` is when its newest ready version was exported."""
    cards = []
    for name in manager.names():
        try:
            model = manager.get(name)
        except ModelNotReady:
            continue
        try:
            created = int((model.source.path / MANIFEST).stat().st_mtime)
        except OSError:  # removed from disk since it was loaded
            created = 0
        cards.append(ModelCard(name, created))
    return cards


def _card(card: ModelCard) -> dict[str, Any]:
    return {"id": card.id, "object": "model", "created": card.created, "owned_by": card.owned_by}
