"""Bad input, every RPC of every service: each gets its exact documented status and a message that says
what to change, while well-formed traffic keeps succeeding on the same server.

The table: each family's own bad requests (tests/harness/families/) plus the ones every service shares
(tests/harness/rpcs.py: Models, KServe v2, health), undecodable bytes to every unary method, path-like
names and names with a character of every Unicode category, over-limit messages.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2

from harness.families import CASES, bad_inputs
from harness.fleet import TALLY, Fleet
from harness.rpcs import HEALTH, OK, UNDECODABLE, Bad, assert_documented, call, rpc, service_rpcs
from harness.servers import ServerThread

BAD_INPUTS = bad_inputs()


@pytest.mark.parametrize(("family", "bad"), BAD_INPUTS, ids=[f"{family}: {bad.id}" for family, bad in BAD_INPUTS])
def test_bad_input_gets_its_documented_status(fleet: Fleet, family: str, bad: Bad) -> None:
    outcome = call(fleet.get(family).channel, bad.method, bad.request)
    TALLY["table"] += 1
    assert (outcome.code, bad.message in outcome.details) == (bad.code, True), outcome.details
    assert_documented(outcome, bad.id)


@pytest.mark.parametrize("family", list(CASES))
def test_every_rpc_is_in_the_table(family: str) -> None:
    """A new RPC (or a new family service) cannot skip the suite: each method has a bad case or a fuzz target."""
    case = CASES[family]
    covered = {bad.method for bad in case.all_bad()} | {method for method, _ in case.fuzz}
    unary = [r.method for s in case.services for r in service_rpcs(s) if not r.client_streaming]
    assert [m for m in unary if m not in covered] == []


@pytest.mark.parametrize("family", list(CASES))
def test_undecodable_bytes_to_every_method_are_invalid_argument(fleet: Fleet, family: str) -> None:
    """Streaming methods too (health Watch, reflection), and the family's own."""
    live = fleet.get(family)
    methods = [*live.case.methods(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]
    for method in methods:
        outcome = call(live.channel, method, UNDECODABLE)
        TALLY["table"] += 1
        assert (outcome.code, method) == (grpc.StatusCode.INVALID_ARGUMENT, method), outcome.details
        assert "not a valid message" in outcome.details and rpc(method).request.DESCRIPTOR.full_name in outcome.details


@pytest.mark.parametrize("family", list(CASES))
def test_unknown_methods_are_unimplemented(fleet: Fleet, family: str) -> None:
    channel = fleet.get(family).channel
    for method in ("/myelin_api.v1.Classifier/Nope", "/../../etc/passwd", "/inference.GRPCInferenceService/"):
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(method, request_serializer=None, response_deserializer=None)(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("family", list(CASES))
def test_health_watch_of_an_unknown_service_says_so_and_the_stream_ends_on_cancel(fleet: Fleet, family: str) -> None:
    outcome = call(
        fleet.get(family).channel,
        f"/{HEALTH}/Watch",
        health_pb2.HealthCheckRequest(service="../../etc/passwd"),
        max_responses=1,
    )
    assert outcome.code is OK
    status = health_pb2.HealthCheckResponse.FromString(outcome.responses[0]).status
    assert status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def test_every_family_the_services_know_is_in_the_table() -> None:
    """A family that lands joins the suite: a module in tests/harness/families/ (docs/reliability.md)."""
    from myelin_serving.families import names

    assert sorted(set(names()) - set(CASES)) == [], "add a module to tests/harness/families/"


def test_well_formed_traffic_never_failed_meanwhile(fleet: Fleet) -> None:
    """Runs last in this module: the background traffic of every server the tests above used."""
    for family in CASES:
        fleet.get(family)
    for live in fleet.started():
        live.traffic.stop()
        TALLY["well-formed"] += live.traffic.sent
        TALLY["well-formed failed"] += len(live.traffic.failures)
        assert live.traffic.sent > 0 and live.traffic.failures == [], live.traffic.failures[:5]
        assert _health(live.server) == "SERVING"


def _health(server: ServerThread) -> str:
    from myelin_client import Client

    with Client(server.target) as client:
        return client.health()
