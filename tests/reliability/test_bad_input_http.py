"""The bad-input table's HTTP column: every route of every service's HTTP port gets malformed JSON,
wrong content types, bodies over the limit (declared, and streamed without a length), binary tensor
data whose header lengths lie, unknown routes and wrong methods, bad names in paths; each gets its
exact status (never 500) and a message that says what to change, while well-formed traffic over
HTTP and gRPC keeps succeeding on the same server.

The table is derived from each family's ServiceCase (tests/harness/families/): its KServe request
(`infer`) is sent over REST both as binary tensor data and as JSON, and broken in every way below.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.codes import MESSAGE_LIMIT
from harness.families import CASES
from harness.fleet import TALLY, Fleet
from harness.http import HttpAnswer, http_request, raw_http
from harness.rpcs import ServiceCase
from harness.strategies import ANY_TEXT, DATATYPES
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_serving.tensors import DTYPES

JSON = {"Content-Type": "application/json"}
INFER, READY, METADATA = "POST /v2/models/{name}/infer", "GET /v2/models/{name}/ready", "GET /v2/models/{name}"
RPC = "POST /rpc/{service}/{method}"
OPENAI = {
    "generator": ("POST /v1/completions", "/v1/completions"),
    "embedder": ("POST /v1/embeddings", "/v1/embeddings"),
}


@dataclass(frozen=True)
class HttpBad:
    """A bad HTTP request and the exact answer it must get."""

    id: str
    route: str | None  # the route it aims at ("POST /v2/models/{name}/infer"), None for no route
    method: str
    path: str
    body: bytes | list[bytes] | None = None  # a list is sent chunked, without a Content-Length
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 400
    message: str = ""  # must appear in the answer's error message
    declared_length: int | None = None  # send only the headers, declaring this Content-Length


def rest_infer(infer: pb.ModelInferRequest) -> tuple[dict[str, Any], bytes]:
    """A ModelInferRequest as REST: the JSON header (binary_data_size per input) and the binary data."""
    inputs = [
        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "parameters": {"binary_data_size": len(raw)}}
        for t, raw in zip(infer.inputs, infer.raw_input_contents, strict=True)
    ]
    return {"inputs": inputs}, b"".join(infer.raw_input_contents)


def json_infer(infer: pb.ModelInferRequest) -> dict[str, Any]:
    """The same request with JSON data instead of binary."""
    inputs = []
    for t, raw in zip(infer.inputs, infer.raw_input_contents, strict=True):
        values = np.frombuffer(raw, dtype=DTYPES[t.datatype]).tolist()
        inputs.append({"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": values})
    return {"inputs": inputs}


def binary_request(header: dict[str, Any], binary: bytes, *, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    declared = len(head) if length is None else length
    return head + binary, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(declared)}


def http_bad(case: ServiceCase) -> list[HttpBad]:
    model = case.infer.model_name
    infer_path = f"/v2/models/{model}/infer"
    header, binary = rest_infer(case.infer)
    good_json = json.dumps(json_infer(case.infer)).encode()
    first = dict(header["inputs"][0])

    def with_first(**changes: Any) -> dict[str, Any]:
        return {"inputs": [{**first, **changes}, *header["inputs"][1:]]}

    def lying(id_: str, header_: dict[str, Any], binary_: bytes, message: str, length: int | None = None) -> HttpBad:
        body, headers = binary_request(header_, binary_, length=length)
        return HttpBad(id_, INFER, "POST", infer_path, body, headers, 400, message)

    head_length = len(json.dumps(header).encode())
    binary_body, binary_headers = binary_request(header, binary)
    ragged = {
        "inputs": [{"name": first["name"], "datatype": first["datatype"], "shape": [2, 2], "data": [[1, 2], [3]]}]
    }
    words = {"inputs": [{"name": first["name"], "datatype": "FP32", "shape": [1], "data": ["one"]}]}
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = {"inputs": [{"name": first["name"], "datatype": first["datatype"], "shape": [2**62, 2**62], "data": []}]}
    bad = [
        HttpBad("infer malformed JSON", INFER, "POST", infer_path, b'{"inputs": [', JSON, 400, "not valid JSON"),
        HttpBad("infer not UTF-8", INFER, "POST", infer_path, b"\xff\xfe{}", JSON, 400, "not valid JSON"),
        HttpBad("infer an array", INFER, "POST", infer_path, b"[1, 2]", JSON, 400, "must be a JSON object, not an"),
        HttpBad("infer 100,000-deep nesting", INFER, "POST", infer_path, deep, JSON, 400, "not valid JSON"),
        HttpBad("infer empty body", INFER, "POST", infer_path, b"", JSON, 400, "not valid JSON"),
        HttpBad("infer no inputs", INFER, "POST", infer_path, b"{}", JSON, 400, "inputs must be a non-empty array"),
        HttpBad("infer ragged data", INFER, "POST", infer_path, json.dumps(ragged).encode(), JSON, 400,
                "not a regular array"),
        HttpBad("infer words for numbers", INFER, "POST", infer_path, json.dumps(words).encode(), JSON, 400,
                "data must be numbers"),
        HttpBad("infer shape of 2**124 elements", INFER, "POST", infer_path, json.dumps(huge).encode(), JSON, 400,
                "elements, data has 0"),
        HttpBad("infer text/plain", INFER, "POST", infer_path, good_json, {"Content-Type": "text/plain"}, 400,
                "is not application/json"),
        HttpBad("infer form-encoded (curl -d)", INFER, "POST", infer_path, good_json,
                {"Content-Type": "application/x-www-form-urlencoded"}, 400, "-H 'Content-Type: application/json'"),
        HttpBad("infer multipart", INFER, "POST", infer_path, good_json, {"Content-Type": "multipart/form-data; b=x"},
                400, "is not application/json"),
        HttpBad("infer declares 1 TB", INFER, "POST", infer_path, None, JSON, 413, "this server takes at most",
                declared_length=10**12),
        HttpBad("infer declares a length over the limit", INFER, "POST", infer_path, None, JSON, 413,
                f"takes at most {MESSAGE_LIMIT}", declared_length=MESSAGE_LIMIT + 1),
        HttpBad("infer streams past the limit", INFER, "POST", infer_path, [bytes(64 * 1024)] * 17, JSON, 413,
                f"over {MESSAGE_LIMIT} bytes"),
        lying("header length past the body", header, binary, "the whole body is", length=head_length + len(binary) + 1),
        lying("header length cuts the JSON", header, binary, "not valid JSON", length=head_length - 1),
        lying("header length 0", header, binary, "not valid JSON", length=0),
        lying("binary_data_size past the end", with_first(parameters={"binary_data_size": len(binary) + 1}), binary,
              "goes past the end"),
        lying("binary bytes left over", header, binary + b"\x00", "left over"),
        lying("binary_data_size negative", with_first(parameters={"binary_data_size": -4}), binary,
              "must be a byte count"),
        lying("binary_data_size not a number", with_first(parameters={"binary_data_size": "4"}), binary,
              "must be a byte count"),
        lying("binary_data_size and data", with_first(data=[0]), binary, "both data and"),
        HttpBad("header length not a number", INFER, "POST", infer_path, binary_body,
                {**binary_headers, "Inference-Header-Content-Length": "12abc"}, 400, "must be a byte count"),
        HttpBad("binary data without its header length", INFER, "POST", infer_path, binary_body, JSON, 400,
                "not valid JSON"),
        HttpBad("infer unknown model", INFER, "POST", "/v2/models/no-such-model/infer", good_json, JSON, 404,
                "not found"),
        HttpBad("infer path-like name", INFER, "POST", "/v2/models/%2e%2e/infer", good_json, JSON, 400,
                "not a valid model name"),
        HttpBad("infer version text", "POST /v2/models/{name}/versions/{version}/infer", "POST",
                f"/v2/models/{model}/versions/latest/infer", good_json, JSON, 400, "decimal version number"),
        HttpBad("metadata unknown model", METADATA, "GET", "/v2/models/no-such-model", status=404, message="not found"),
        HttpBad("metadata fullwidth version", "GET /v2/models/{name}/versions/{version}", "GET",
                f"/v2/models/{model}/versions/%EF%BC%91", status=400, message="decimal version number"),
        HttpBad("ready unknown model", READY, "GET", "/v2/models/no-such-model/ready", status=404, message="not found"),
        HttpBad("ready version -1", "GET /v2/models/{name}/versions/{version}/ready", "GET",
                f"/v2/models/{model}/versions/-1/ready", status=400, message="decimal version number"),
        HttpBad("unknown route", None, "GET", f"/v2/models/{model}/explain", status=404, message="no route GET"),
        HttpBad("path traversal", None, "GET", "/../../etc/passwd", status=404, message="no route GET"),
        HttpBad("encoded slashes", None, "POST", "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", good_json, JSON, 404,
                "no route POST"),
        HttpBad("unknown prefix", None, "POST", "/v3/infer", good_json, JSON, 404, "no route POST"),
        HttpBad("wrong method on infer", None, "GET", infer_path, status=405, message="GET is not allowed"),
        HttpBad("wrong method on metadata", None, "DELETE", f"/v2/models/{model}", status=405, message="not allowed"),
        HttpBad("server metadata by POST", None, "POST", "/v2", b"{}", JSON, 405, "not allowed"),
    ]  # fmt: skip
    if case.family in OPENAI:
        route, path = OPENAI[case.family]
        body = {"model": case.model, "prompt": "ROMEO:", "max_tokens": 4} if case.family == "generator" else {
            "model": case.model, "input": "king"}  # fmt: skip
        bad += [
            HttpBad(f"{path} malformed JSON", route, "POST", path, b'{"model": ', JSON, 400, "not valid JSON"),
            HttpBad(f"{path} text/plain", route, "POST", path, json.dumps(body).encode(),
                    {"Content-Type": "text/plain"}, 400, "is not application/json"),
            HttpBad(f"{path} no model", route, "POST", path, b"{}", JSON, 400, "model: Field required"),
            HttpBad(f"{path} unknown model", route, "POST", path, json.dumps({**body, "model": "nope"}).encode(), JSON,
                    404, "not found"),
            HttpBad(f"{path} over the limit", route, "POST", path, None, JSON, 413, "this server takes at most",
                    declared_length=MESSAGE_LIMIT + 1),
            HttpBad("models unknown", "GET /v1/models/{model}", "GET", "/v1/models/nope", status=404, message="serves"),
            HttpBad("models by POST", None, "POST", "/v1/models", b"{}", JSON, 405, "not allowed"),
        ]  # fmt: skip
        if case.family == "generator":
            bad += [
                HttpBad("completions max_tokens text", route, "POST", path,
                        json.dumps({**body, "max_tokens": "many"}).encode(), JSON, 400, "max_tokens"),
                HttpBad("completions stream outside the vocabulary", route, "POST", path,
                        json.dumps({**body, "prompt": "\u2603", "stream": True}).encode(), JSON, 400,
                        "vocabulary lacks"),
                HttpBad("completions n 2", route, "POST", path, json.dumps({**body, "n": 2}).encode(), JSON, 400,
                        "not supported"),
            ]  # fmt: skip
        else:
            bad += [
                HttpBad("embeddings token ids", route, "POST", path, json.dumps({**body, "input": [[1, 2]]}).encode(),
                        JSON, 400, "token ids are not supported"),
                HttpBad("embeddings encoding hex", route, "POST", path,
                        json.dumps({**body, "encoding_format": "hex"}).encode(), JSON, 400, "encoding_format"),
            ]  # fmt: skip
    else:
        bad.append(HttpBad("no OpenAI routes here", None, "POST", "/v1/completions", b"{}", JSON, 404, "no route"))
    return bad + rpc_bad(case)


def rpc_bad(case: ServiceCase) -> list[HttpBad]:
    """gRPC-JSON transcoding (`POST /rpc/<service>/<method>`), on the family's first own method."""
    method, message = case.good[0]
    path, good = f"/rpc{method}", json_format.MessageToJson(message).encode()
    unknown_model = json_format.MessageToDict(message) | {"model": {"name": "no-such-model"}}
    mapping = "in protobuf's JSON mapping"
    return [
        HttpBad("rpc malformed JSON", RPC, "POST", path, b'{"model": ', JSON, 400, "not valid JSON"),
        HttpBad("rpc an array", RPC, "POST", path, b"[]", JSON, 400, "must be a JSON object, not an"),
        HttpBad("rpc 100,000-deep nesting", RPC, "POST", path, b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                JSON, 400, "not valid JSON"),
        HttpBad("rpc unknown field", RPC, "POST", path, b'{"pictures": []}', JSON, 400, mapping),
        HttpBad("rpc model a number", RPC, "POST", path, b'{"model": 5}', JSON, 400, mapping),
        HttpBad("rpc text/plain", RPC, "POST", path, good, {"Content-Type": "text/plain"}, 400,
                "is not application/json"),
        HttpBad("rpc declares a length over the limit", RPC, "POST", path, None, JSON, 413,
                f"takes at most {MESSAGE_LIMIT}", declared_length=MESSAGE_LIMIT + 1),
        HttpBad("rpc unknown model", RPC, "POST", path, json.dumps(unknown_model).encode(), JSON, 404, "not found"),
        HttpBad("rpc unknown method", RPC, "POST", "/rpc/myelin_api.v1.Nope/Nope", b"{}", JSON, 404, "no method"),
        HttpBad("rpc a method that streams requests", RPC, "POST",
                "/rpc/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", b"{}", JSON, 404, "no method"),
        HttpBad("rpc by GET", None, "GET", path, status=405, message="GET is not allowed"),
    ]  # fmt: skip


def send(url: str, bad: HttpBad) -> HttpAnswer:
    if bad.declared_length is None:
        return http_request(f"{url}{bad.path}", bad.method, bad.body, bad.headers)
    head = [f"{bad.method} {bad.path} HTTP/1.1", "Host: x", f"Content-Length: {bad.declared_length}"]
    head += [f"{k}: {v}" for k, v in bad.headers.items()]
    return raw_http(url, ("\r\n".join(head) + "\r\n\r\n").encode())  # no body: the answer must not wait for one


TABLE = [(family, bad) for family, case in CASES.items() for bad in http_bad(case)]


@pytest.mark.parametrize(("family", "bad"), TABLE, ids=[f"{family}: {bad.id}" for family, bad in TABLE])
def test_bad_http_requests_get_their_status(http_fleet: HttpFleet, family: str, bad: HttpBad) -> None:
    answer = send(http_fleet.url(family), bad)
    TALLY["table"] += 1
    assert answer.status != 500 and b"Traceback" not in answer.body
    assert answer.headers.get("content-type") == "application/json", answer.body[:200]
    assert (answer.status, bad.message in answer.error) == (bad.status, True), answer.body[:300]
    assert len(answer.body) < 3000


@pytest.mark.parametrize("family", list(CASES))
def test_every_http_route_is_in_the_table(http_fleet: HttpFleet, family: str) -> None:
    """A new route (the core's or a family's) cannot skip the column: each has a bad case of its own."""
    app = http_fleet.fleet.get(family).server.server.http.app  # type: ignore[union-attr]
    routes = {f"{'|'.join(sorted(r.methods - {'HEAD'}))} {r.path}" for r in app.routes}
    covered = {bad.route for f, bad in TABLE if f == family}
    probes = {"GET /v2/health/live", "GET /v2/health/ready", "GET /metrics", "GET /v2", "GET /v1/models"}
    assert sorted(routes - covered - probes) == []


# Random JSON bodies for every POST route (hypothesis; MYELIN_FUZZ_EXAMPLES per route, 100 in CI).
FUZZ = settings(
    max_examples=int(os.environ.get("MYELIN_FUZZ_EXAMPLES", "100")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def post_bodies(case: ServiceCase, route: str) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies shaped like the route's, every field from plausible to absurd, and any JSON object."""
    if route == INFER:
        first = case.infer.inputs[0]
        tensor = st.fixed_dictionaries(
            {
                "name": st.one_of(st.just(first.name), ANY_TEXT),
                "datatype": st.one_of(st.sampled_from(DATATYPES), ANY_TEXT),
                "shape": st.one_of(st.just(list(first.shape)), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)),
            },
            optional={"data": ANY_JSON, "parameters": st.dictionaries(st.just("binary_data_size"), ANY_JSON)},
        )
        shaped = st.fixed_dictionaries(
            {"inputs": st.lists(tensor, max_size=3)}, optional={"outputs": ANY_JSON, "id": ANY_JSON}
        )
    else:
        text_field = "prompt" if case.family == "generator" else "input"
        options = ("max_tokens", "temperature", "top_p", "stop", "seed", "stream", "n", "encoding_format")
        shaped = st.fixed_dictionaries(
            {"model": st.one_of(st.just(case.model), ANY_TEXT), text_field: ANY_JSON},
            optional=dict.fromkeys(options, ANY_JSON),
        )
    return st.one_of(shaped, st.dictionaries(ANY_TEXT, ANY_JSON, max_size=4))


POST_ROUTES = [
    (family, route, path)
    for family, case in CASES.items()
    for route, path in [
        (INFER, f"/v2/models/{case.infer.model_name}/infer"),
        *([OPENAI[family]] if family in OPENAI else []),
    ]
]


@pytest.mark.parametrize(("family", "route", "path"), POST_ROUTES, ids=[f"{f}: {r}" for f, r, _ in POST_ROUTES])
def test_random_json_bodies_get_a_documented_status(http_fleet: HttpFleet, family: str, route: str, path: str) -> None:
    url = http_fleet.url(family) + path

    @FUZZ
    @given(post_bodies(CASES[family], route))
    def check(body: dict[str, Any]) -> None:
        TALLY["property"] += 1
        answer = http_request(url, "POST", json.dumps(body).encode(), JSON)
        assert answer.status in (200, 400, 404), (answer.status, answer.body[:300], body)
        if answer.status != 200:
            assert answer.error.strip() and "Traceback" not in answer.error and len(answer.body) < 3000

    check()


class HttpTraffic:
    """Well-formed requests over HTTP in a loop on the family's server; every one must succeed."""

    def __init__(self, url: str, case: ServiceCase) -> None:
        header, binary = rest_infer(case.infer)
        body, headers = binary_request(header, binary)
        infer = f"/v2/models/{case.infer.model_name}/infer"
        self._requests: list[tuple[str, str, bytes | None, dict[str, str]]] = [
            ("POST", infer, body, headers),
            ("POST", infer, json.dumps(json_infer(case.infer)).encode(), JSON),
            ("GET", f"/v2/models/{case.model}/ready", None, {}),
            ("GET", "/v2/health/ready", None, {}),
        ]
        if case.family == "generator":
            completion = {"model": case.model, "prompt": "ROMEO:", "max_tokens": 8, "seed": 1}
            self._requests.append(("POST", "/v1/completions", json.dumps(completion).encode(), JSON))
        if case.family == "embedder":
            embedding = {"model": case.model, "input": ["the", "the time"]}
            self._requests.append(("POST", "/v1/embeddings", json.dumps(embedding).encode(), JSON))
        self._url = url
        self._stop = threading.Event()
        self.codes: Counter[int] = Counter()
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"http-traffic-{case.family}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for method, path, body, headers in self._requests:
                answer = http_request(f"{self._url}{path}", method, body, headers)
                self.codes[answer.status] += 1
                if answer.status != 200:
                    self.failures.append(f"{method} {path}: {answer.status} {answer.body[:200]!r}")
                self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def sent(self) -> int:
        return sum(self.codes.values())


class HttpFleet:
    """The reliability fleet (gRPC traffic in the background), and HTTP traffic beside it."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.traffic: dict[str, HttpTraffic] = {}

    def url(self, family: str) -> str:
        live = self.fleet.get(family)
        if family not in self.traffic:
            self.traffic[family] = HttpTraffic(live.server.http_url, live.case)
        return live.server.http_url


@pytest.fixture(scope="module")
def http_fleet(fleet: Fleet) -> HttpFleet:
    return HttpFleet(fleet)


def test_well_formed_traffic_never_failed_meanwhile(http_fleet: HttpFleet) -> None:
    """Runs last in this module: the HTTP and gRPC background traffic of every server used above."""
    for family in CASES:
        http_fleet.url(family)
    for family, traffic in http_fleet.traffic.items():
        traffic.stop()
        TALLY["well-formed"] += traffic.sent
        TALLY["well-formed failed"] += len(traffic.failures)
        assert traffic.sent > 0 and traffic.failures == [], (family, traffic.failures[:5])
    for live in http_fleet.fleet.started():
        live.traffic.stop()
        TALLY["well-formed"] += live.traffic.sent
        TALLY["well-formed failed"] += len(live.traffic.failures)
        assert live.traffic.sent > 0 and live.traffic.failures == [], live.traffic.failures[:5]
