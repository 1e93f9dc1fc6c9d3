"""The reliability suite's fleet: one live server per family, started when a test first asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.families import CASES
from harness.fleet import TALLY, Fleet


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    fleet = Fleet(request, CASES)
    try:
        yield fleet
    finally:
        fleet.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures docs/reliability.md quotes: how much bad input this run sent, and what it disturbed."""
    if TALLY:
        terminalreporter.write_line(
            f"reliability: {TALLY['table'] + TALLY['property']} bad requests "
            f"({TALLY['table']} from the table, {TALLY['property']} drawn by hypothesis); "
            f"{TALLY['well-formed']} well-formed requests alongside, {TALLY['well-formed failed']} failed; "
            f"{TALLY['faults']} faults injected; {TALLY['in flight at SIGTERM']} requests in flight at SIGTERM, "
            f"{TALLY['lost']} of them lost"
        )
