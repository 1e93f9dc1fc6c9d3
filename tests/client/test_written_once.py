"""`Client` is generated from `AsyncClient` (clients/python/unasync.py): the two must offer the same
methods with the same signatures, defaults and docstrings, only blocking instead of awaitable; and the
generation options are the one typed definition that both clients and the CLI take."""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any

import pytest

from myelin_api.v1 import generator_pb2
from myelin_client import AsyncClient, AsyncGenerationStream, Client, GenerationOptions, GenerationStream

# Each blocking class, its async source, and the async methods that return at once (not awaitable):
# generate hands back a stream to iterate; cancelling a call does not wait.
PAIRS = [(Client, AsyncClient, {"generate"}), (GenerationStream, AsyncGenerationStream, {"cancel"})]


def public(cls: type) -> dict[str, Any]:
    return {name: value for name, value in vars(cls).items() if not name.startswith("_")}


def unasync(annotation: str) -> str:
    """An annotation as the blocking twin spells it: AsyncGenerationStream is GenerationStream."""
    return re.sub(r"\bAsync(?=[A-Z])", "", annotation)


@pytest.mark.parametrize(("sync", "aio", "immediate"), PAIRS, ids=["Client", "GenerationStream"])
def test_the_blocking_twin_has_the_same_signatures_defaults_and_docstrings(
    sync: type, aio: type, immediate: set[str]
) -> None:
    blocking, awaitable = public(sync), public(aio)
    assert set(blocking) == set(awaitable)
    for name, fn in awaitable.items():
        twin = blocking[name]
        assert type(twin) is type(fn), name  # a property stays a property
        assert fn.__doc__ and fn.__doc__.strip(), f"{aio.__name__}.{name} has no docstring"
        assert twin.__doc__ == fn.__doc__, f"{name}: the docstrings differ"
        if isinstance(fn, property):
            assert unasync(fn.fget.__annotations__["return"]) == twin.fget.__annotations__["return"], name
            continue
        signature, twin_signature = inspect.signature(fn), inspect.signature(twin)
        parameters = [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]
        assert [(p.name, p.kind, p.default, p.annotation) for p in twin_signature.parameters.values()] == parameters
        assert twin_signature.return_annotation == unasync(signature.return_annotation), name
        assert not inspect.iscoroutinefunction(twin), f"{sync.__name__}.{name} must block, not return a coroutine"
        assert inspect.iscoroutinefunction(fn) is (name not in immediate), f"{aio.__name__}.{name} awaits?"


def test_both_clients_are_context_managers_of_their_kind() -> None:
    assert inspect.iscoroutinefunction(AsyncClient.__aenter__) and inspect.iscoroutinefunction(AsyncClient.__aexit__)
    assert not hasattr(Client, "__aenter__") and not hasattr(AsyncClient, "__enter__")
    assert inspect.isasyncgenfunction(AsyncGenerationStream.__aiter__)
    assert inspect.isgeneratorfunction(GenerationStream.__iter__)


def test_generation_options_are_the_sampling_fields_of_the_generate_request() -> None:
    fields = {field.name for field in generator_pb2.GenerateRequest.DESCRIPTOR.fields}
    assert set(GenerationOptions.__annotations__) == fields - {"model", "prompt"}
    for cls in (Client, AsyncClient):
        for method in (cls.generate, cls.complete):
            options = inspect.signature(method).parameters["options"]
            assert options.kind is options.VAR_KEYWORD
            assert options.annotation == "Unpack[GenerationOptions]"


def test_an_unknown_generation_keyword_is_a_type_error() -> None:
    # Refused before any call is made: nothing listens on port 1.
    with Client("127.0.0.1:1") as client:
        with pytest.raises(TypeError, match=r"'temprature'.*temperature"):
            client.generate("ROMEO:", temprature=0.5)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"'max_tokens'.*max_new_tokens"):
            client.complete("ROMEO:", max_tokens=5)  # type: ignore[call-arg]

    async def scenario() -> None:
        async with AsyncClient("127.0.0.1:1") as client:
            with pytest.raises(TypeError, match=r"'temprature'.*temperature"):
                client.generate("ROMEO:", temprature=0.5)  # type: ignore[call-arg]
            with pytest.raises(TypeError, match=r"'max_tokens'.*max_new_tokens"):
                await client.complete("ROMEO:", max_tokens=5)  # type: ignore[call-arg]

    asyncio.run(scenario())
