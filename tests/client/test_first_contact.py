"""What a new user meets one step off the happy path, through the SDK and the `myelin` CLI: the wrong
address (it names what the server does serve and where the wanted service listens), the default
address of each command, and a call on a closed client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from harness.servers import ServerThread
from myelin_client import AsyncClient, Client, ClientClosedError, ServerError
from myelin_client.cli import main as cli

WRONG_FAMILY = "does not serve myelin_api.v1.Translator: it serves "


def test_the_wrong_address_names_what_it_serves_and_where_to_go(classifier_server: ServerThread) -> None:
    with Client(classifier_server.target) as client:
        with pytest.raises(ServerError) as info:
            client.translate("I am cold.")
        with pytest.raises(ServerError) as streamed, client.generate("ROMEO:") as stream:
            list(stream)
    details = info.value.details
    assert info.value.code is grpc.StatusCode.UNIMPLEMENTED
    assert f"{classifier_server.target} {WRONG_FAMILY}" in details
    assert "myelin_api.v1.Classifier" in details and "a classifier service (port 50051)" in details
    assert "the translator service listens on port 50052 by default" in details
    assert "the generator service listens on port 50053 by default" in streamed.value.details


def test_the_async_client_explains_the_wrong_address_too(classifier_server: ServerThread) -> None:
    async def scenario() -> str:
        async with AsyncClient(classifier_server.target) as client:
            with pytest.raises(ServerError) as info:
                await client.analogy("man", "king", "woman")
            return info.value.details

    details = asyncio.run(scenario())
    assert "does not serve myelin_api.v1.Embedder" in details and "port 50054 by default" in details


def test_the_cli_explains_the_wrong_address(
    classifier_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["--target", classifier_server.target, "translate", "I am cold."])
    err = capsys.readouterr().err
    assert info.value.code == 2 and WRONG_FAMILY in err and "port 50052 by default" in err


@pytest.mark.parametrize(
    ("command", "port"),
    [(["classify", "x.png"], 50051), (["translate", "hi"], 50052), (["generate", "hi"], 50053),
     (["analogy", "a", "b", "c"], 50054), (["models"], 50051)],
)  # fmt: skip
def test_each_command_defaults_to_its_family_port(
    command: list[str],
    port: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Without --target or MYELIN_TARGET a command calls 127.0.0.1 on its family's port; the error says so."""
    monkeypatch.delenv("MYELIN_TARGET", raising=False)
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save("x.png")
    with pytest.raises(SystemExit):
        cli(["--timeout", "0.3", *command])
    assert f"myelin: 127.0.0.1:{port}: " in capsys.readouterr().err


def test_a_closed_client_says_so(classifier_server: ServerThread) -> None:
    client = Client(classifier_server.target)
    assert client.health() == "SERVING"
    client.close()
    for call in (client.health, lambda: client.classify(np.zeros((28, 28), np.uint8)), lambda: client.generate("x")):
        with pytest.raises(ClientClosedError, match=r"is closed .* make a new client") as info:
            call()
        assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION

    async def scenario() -> None:
        async with AsyncClient(classifier_server.target) as aclient:
            assert await aclient.health() == "SERVING"
        with pytest.raises(ClientClosedError, match=classifier_server.target):
            await aclient.list_models()

    asyncio.run(scenario())
