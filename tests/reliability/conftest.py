"""The reliability suite's fleet: one live server per family, started when a test first asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from myelin_rpcs import Fleet


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    fleet = Fleet(request)
    try:
        yield fleet
    finally:
        fleet.stop()
