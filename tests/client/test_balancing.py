"""The SDK over several replicas: round robin, client-side health checking and retries on
UNAVAILABLE, against real servers on loopback. (Replicas dying under load: tests/reliability/test_replicas.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.servers import ServerThread, settings_for
from myelin_client import AsyncClient, Client, UnavailableError

ZEROS = np.zeros((1, 28, 28), np.uint8)
CLASSIFY = "/myelin_api.v1.Classifier/Classify"


def requests(server: ServerThread, code: str) -> float:
    return server.registry.get_sample_value("myelin_requests_total", {"method": CLASSIFY, "code": code}) or 0.0


def test_an_unavailable_replica_is_retried_on_another(fresh_repository: Path, classifier_server: ServerThread) -> None:
    # This replica serves mnist-mlp, so it is SERVING, but it has no mnist-cnn: UNAVAILABLE for those.
    (fresh_repository / "mnist-cnn" / "1" / "model.onnx").unlink()
    with ServerThread(settings_for(fresh_repository)) as broken:
        target = f"ipv4:{broken.target},{classifier_server.target}"
        with Client(target) as client:
            results = [client.classify(ZEROS, model="mnist-cnn") for _ in range(20)]
        assert all(r.model == "mnist-cnn" for r in results)
        # Round robin sent first attempts to the broken replica (each call takes two picks, so most
        # first attempts land there); every one was retried on the other.
        refused = requests(broken, "UNAVAILABLE")
        assert refused >= 5, refused
        with Client(target, max_attempts=1) as client:
            outcomes = []
            for _ in range(20):
                try:
                    outcomes.append(client.classify(ZEROS, model="mnist-cnn").model)
                except UnavailableError as exc:
                    outcomes.append(exc.details)
        failed = [o for o in outcomes if o != "mnist-cnn"]
        assert 5 <= len(failed) <= 15 and all("no ready version" in f for f in failed), outcomes


def test_a_replica_that_is_not_serving_gets_no_calls(tmp_path: Path, classifier_server: ServerThread) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with ServerThread(settings_for(empty)) as starting:
        # Two addresses: health checking is on, and the NOT_SERVING replica is left out.
        with Client(f"ipv4:{starting.target},{classifier_server.target}") as client:
            assert all(client.list_models() for _ in range(10))
            assert client.health() == "SERVING"
        # One host:port: no health checking, the caller reaches the server whatever it says.
        with Client(starting.target) as client:
            assert client.health() == "NOT_SERVING" and client.list_models() == []
        with Client(f"ipv4:{starting.target},{classifier_server.target}", health_check=False) as client:
            assert {len(client.list_models()) for _ in range(10)} == {0, 2}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"load_balancing": "random"}, "load_balancing must be one of round_robin, pick_first"),
        ({"max_attempts": 0}, "max_attempts must be between 1"),
        ({"max_attempts": 6}, "max_attempts must be between 1"),
        ({"retry_initial_backoff": 2.0, "retry_max_backoff": 1.0}, "retry backoffs must satisfy"),
        ({"retry_initial_backoff": 0.0}, "retry backoffs must satisfy"),
    ],
)
def test_bad_balancing_options_are_refused(options: dict[str, object], message: str) -> None:
    for cls in (Client, AsyncClient):
        with pytest.raises(ValueError, match=message):
            cls("127.0.0.1:50051", **options)  # type: ignore[arg-type]
