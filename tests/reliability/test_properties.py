"""Property-based bad input (hypothesis): requests drawn at random for every RPC of every service get a
documented status with an actionable message, never INTERNAL, UNKNOWN or a hang.

Three kinds of strategies: hand-written ones per RPC (tests/harness/families/ and harness/strategies.py: names
with text of every Unicode category, absurd shapes, sizes and counts, payloads from correct to
random), every request field drawn from its descriptor, and plain random bytes.
MYELIN_FUZZ_EXAMPLES sets the examples per strategy (100 in CI; raise it for a deeper run).
"""

from __future__ import annotations

import os

import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.families import CASES, fuzz_targets
from harness.fleet import TALLY, Fleet
from harness.rpcs import assert_documented, call, rpc
from harness.strategies import any_message

EXAMPLES = int(os.environ.get("MYELIN_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no example database left in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
TARGETS = fuzz_targets()
# Every unary method of every family: its request type with every field at random, and random bytes.
METHODS = [
    (family, method)
    for family, case in CASES.items()
    for method in case.methods()
    if not rpc(method).client_streaming and not rpc(method).server_streaming
]


@pytest.mark.parametrize(("family", "method", "strategy"), TARGETS, ids=[f"{f}: {m}" for f, m, _ in TARGETS])
def test_random_requests_get_a_documented_status(
    fleet: Fleet, family: str, method: str, strategy: st.SearchStrategy[Message]
) -> None:
    channel = fleet.get(family).channel

    @FUZZ
    @given(strategy)
    def check(request: Message) -> None:
        TALLY["property"] += 1
        assert_documented(call(channel, method, request), f"{method} {request}"[:2000])

    check()


@pytest.mark.parametrize(("family", "method"), METHODS, ids=[f"{f}: {m}" for f, m in METHODS])
def test_requests_with_every_field_random_get_a_documented_status(fleet: Fleet, family: str, method: str) -> None:
    channel = fleet.get(family).channel

    @FUZZ
    @given(any_message(method))
    def check(payload: bytes) -> None:
        TALLY["property"] += 1
        assert_documented(call(channel, method, payload), f"{method} {payload[:200]!r}")

    check()


@pytest.mark.parametrize(("family", "method"), METHODS, ids=[f"{f}: {m}" for f, m in METHODS])
def test_random_bytes_get_a_documented_status(fleet: Fleet, family: str, method: str) -> None:
    channel = fleet.get(family).channel

    @FUZZ
    @given(st.binary(max_size=512))
    def check(payload: bytes) -> None:
        TALLY["property"] += 1
        assert_documented(call(channel, method, payload), f"{method} {payload[:200]!r}")

    check()


def test_well_formed_traffic_never_failed_meanwhile(fleet: Fleet) -> None:
    """Runs last in this module: the background traffic of every server the tests above used."""
    for live in fleet.started():
        live.traffic.stop()
        TALLY["well-formed"] += live.traffic.sent
        TALLY["well-formed failed"] += len(live.traffic.failures)
        assert live.traffic.sent > 0 and live.traffic.failures == [], live.traffic.failures[:5]
