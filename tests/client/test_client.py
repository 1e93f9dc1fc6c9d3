"""The SDK's public surface, its CLI, its async twin, and its dependencies."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from packaging.requirements import Requirement

import myelin_client
from harness.servers import ServerThread
from myelin_client import AsyncClient, Client, DeadlineExceededError, MyelinError, NotFoundError, UnavailableError
from myelin_client import errors as client_errors
from myelin_client.cli import main as cli_main


def test_all_is_explicit_and_complete() -> None:
    exported = set(myelin_client.__all__)
    assert len(exported) == len(myelin_client.__all__), "duplicates in __all__"
    for name in exported:
        assert hasattr(myelin_client, name), name
    public = {
        name
        for name, value in vars(myelin_client).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public == exported


def test_every_error_class_is_exported_and_keeps_the_status() -> None:
    classes = {c for c in vars(client_errors).values() if inspect.isclass(c) and issubclass(c, MyelinError)}
    assert {c.__name__ for c in classes} <= set(myelin_client.__all__)
    error = NotFoundError(grpc.StatusCode.NOT_FOUND, "model 'x' not found")
    assert error.code is grpc.StatusCode.NOT_FOUND and error.details == "model 'x' not found"


def test_sync_and_async_clients_have_the_same_methods() -> None:
    def methods(cls: type) -> dict[str, list[str]]:
        return {
            name: [p.name for p in inspect.signature(fn).parameters.values()]
            for name, fn in vars(cls).items()
            if inspect.isfunction(fn) and not name.startswith("_")
        }

    sync, aio = methods(Client), methods(AsyncClient)
    assert set(sync) == set(aio)
    assert sync == aio
    for name, fn in vars(Client).items():
        if inspect.isfunction(fn) and not name.startswith("_"):
            for p in list(inspect.signature(fn).parameters.values())[1:]:
                if p.name in ("timeout", "model", "version", "top_k"):
                    assert p.kind is p.KEYWORD_ONLY, f"{name}({p.name}) must be keyword-only"


def test_client_needs_neither_torch_nor_onnxruntime() -> None:
    def requirements(distribution: str) -> set[str]:
        return {Requirement(r).name.lower() for r in importlib.metadata.requires(distribution) or []}

    assert requirements("myelin-client") == {"myelin-api", "grpcio", "numpy"}
    assert "torch" not in requirements("myelin-serving")
    code = "import sys, myelin_client; bad = {'torch', 'onnxruntime', 'PIL'} & set(sys.modules); sys.exit(bad or 0)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_deadline_is_finite_and_errors_are_translated() -> None:
    assert 0 < Client().timeout < float("inf")
    # Nothing listens on the discard port.
    with Client("127.0.0.1:9", timeout=0.3) as client, pytest.raises((UnavailableError, DeadlineExceededError)):
        client.health()


def test_async_client_classifies(classifier_server: ServerThread) -> None:
    async def scenario() -> tuple[list[str], str]:
        async with AsyncClient(classifier_server.target) as client:
            await client.wait_ready(timeout=10)
            results = await asyncio.gather(
                *(client.classify(np.zeros((2, 28, 28), np.uint8), model="mnist-mlp") for _ in range(5))
            )
            with pytest.raises(NotFoundError):
                await client.classify(np.zeros((1, 28, 28), np.uint8), model="missing")
            return [r.model for r in results], await client.health()

    models, health = asyncio.run(scenario())
    assert models == ["mnist-mlp"] * 5 and health == "SERVING"


def test_cli_classify_models_and_health(
    classifier_server: ServerThread, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from myelin_training.data import mnist

    test = mnist.load_split(data_dir, "test")
    files = []
    for i in range(2):
        files.append(tmp_path / f"d{i}.png")
        Image.fromarray(test.images[i]).save(files[-1])
    with pytest.raises(SystemExit) as info:
        cli_main(["--target", classifier_server.target, "classify", *map(str, files), "--top-k", "2"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "model mnist-cnn version 1" in out and f"{files[1]}:" in out
    with pytest.raises(SystemExit) as info:
        cli_main(["--target", classifier_server.target, "models"])
    assert info.value.code == 0 and "mnist-mlp  classifier/mlp" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli_main(["--target", classifier_server.target, "classify", str(files[0]), "--model", "nope"])
    assert info.value.code == 2 and "NOT_FOUND" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main(["--target", classifier_server.target, "health"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == "SERVING"
