"""The fleet the reliability tests run against: live servers by family, each with background traffic
of well-formed requests that must all succeed while the tests send bad ones."""

from __future__ import annotations

import threading
from collections import Counter

import grpc
import pytest

from harness.rpcs import MESSAGE_LIMIT, OK, ServiceCase, call
from harness.servers import ServerThread, settings_for


class GoodTraffic:
    """Sends the family's well-formed requests in a loop on its own channel; every one must succeed."""

    def __init__(self, target: str, case: ServiceCase) -> None:
        self._requests = case.well_formed()
        self._channel = grpc.insecure_channel(target)
        self._stop = threading.Event()
        self.codes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"good-traffic-{case.family}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for method, request in self._requests:
                outcome = call(self._channel, method, request)
                self.codes[outcome.code.name] += 1
                if outcome.code is not OK:
                    self.failures.append(f"{method}: {outcome.code.name} {outcome.details}")
                # Leave the server (same process, same GIL) time for the requests under test.
                self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._channel.close()

    @property
    def sent(self) -> int:
        return sum(self.codes.values())


class Live:
    def __init__(self, server: ServerThread, case: ServiceCase) -> None:
        self.server = server
        self.case = case
        self.channel = grpc.insecure_channel(server.target)
        self.traffic = GoodTraffic(server.target, case)


class Fleet:
    """Live servers by family, started on first use, stopped (traffic first) at the end of the module."""

    def __init__(self, request: pytest.FixtureRequest, cases: dict[str, ServiceCase]) -> None:
        self._request = request
        self._cases = cases
        self._live: dict[str, Live] = {}

    def get(self, family: str) -> Live:
        if family not in self._live:
            case = self._cases[family]
            repository = self._request.getfixturevalue(case.repository_fixture)
            server = ServerThread(
                settings_for(repository, service=case.family, max_message_bytes=MESSAGE_LIMIT, http_port=0)
            ).start()
            self._live[family] = Live(server, case)
        return self._live[family]

    def started(self) -> list[Live]:
        return list(self._live.values())

    def stop(self) -> None:
        for live in self._live.values():
            live.traffic.stop()
            live.channel.close()
            live.server.stop()


# What the reliability tests sent, for the summary line pytest prints at the end (tests/reliability).
TALLY: Counter[str] = Counter()
