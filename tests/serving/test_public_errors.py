"""What a caller reads about a version that failed to load names its files by their place in the
repository (`mnist-mlp/2/model.onnx`), never by the server's own paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.servers import ServerThread, broken_version, settings_for
from myelin_client import Client, UnavailableError


def test_a_failed_version_is_explained_without_server_paths(fresh_repository: Path) -> None:
    broken_version(fresh_repository, "mnist-mlp")
    with ServerThread(settings_for(fresh_repository)) as server, Client(server.target) as client:
        (failed,) = [v for v in client.get_model("mnist-mlp").versions if v.version == 2]
        with pytest.raises(UnavailableError) as info:
            client.classify(np.zeros((28, 28), np.uint8), model="mnist-mlp", version=2)
    for text in (failed.reason, info.value.details):
        assert "mnist-mlp/2/model.onnx" in text and "INVALID_PROTOBUF" in text, text
        assert str(fresh_repository) not in text and str(fresh_repository.parent) not in text, text
