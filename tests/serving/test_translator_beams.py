"""Every hypothesis of the beam search (TranslateRequest.return_beams), on a real server with a model trained
in this session: over gRPC, over the gRPC-JSON route, through both SDK clients and the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from harness.http import http_request
from harness.servers import ServerThread, settings_for
from myelin_api.v1 import common_pb2, translator_pb2, translator_pb2_grpc
from myelin_client import AsyncClient, Beam, Client
from myelin_client.cli import main as cli_main
from myelin_serving.translator.search import BeamSearch, SearchOptions

MODEL = "translator-tatoeba"
PAD, BOS, EOS = 0, 1, 2
SENTENCES = ["I am cold.", "Where is the station?", "Tom didn't want to go to school today.", "Thanks!"]


@pytest.fixture(scope="module")
def server(translator_repository: Path) -> Iterator[ServerThread]:
    with ServerThread(settings_for(translator_repository, service="translator", http_port=0)) as server:
        yield server


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[translator_pb2_grpc.TranslatorStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield translator_pb2_grpc.TranslatorStub(channel)


def ask(stub: translator_pb2_grpc.TranslatorStub, **fields: object) -> translator_pb2.TranslateResponse:
    request = translator_pb2.TranslateRequest(model=common_pb2.ModelRef(name=MODEL), sentences=SENTENCES, **fields)
    answer: translator_pb2.TranslateResponse = stub.Translate(request, timeout=60)
    return answer


def figures(t: translator_pb2.Translation | translator_pb2.Beam) -> tuple[str, float, float, int, bool]:
    return t.text, t.score, t.log_probability, t.tokens, t.finished


@pytest.mark.parametrize("beam_size", [1, 2, 4, 8])
def test_beams_are_ranked_and_the_first_is_the_translation(
    stub: translator_pb2_grpc.TranslatorStub, beam_size: int
) -> None:
    plain = ask(stub, beam_size=beam_size)
    answer = ask(stub, beam_size=beam_size, return_beams=True)
    assert not any(t.beams for t in plain.translations)
    # Asking for the beams changes nothing else: the same translations, the same figures.
    assert [figures(t) for t in answer.translations] == [figures(t) for t in plain.translations]
    for t in answer.translations:
        assert 1 <= len(t.beams) <= beam_size
        assert figures(t.beams[0]) == figures(t)
        ranks = [(b.finished, b.score) for b in t.beams]
        assert ranks == sorted(ranks, reverse=True)
        for b in t.beams:
            assert b.text and b.tokens >= 1 and b.log_probability <= 0
            assert b.score == pytest.approx(b.log_probability / ((5 + b.tokens) / 6) ** 0.6, rel=1e-4)
    counts = [len(t.beams) for t in answer.translations]
    if beam_size == 1:
        assert counts == [1] * len(SENTENCES)  # greedy: one hypothesis
    else:  # the search stops once beam_size hypotheses have finished: every one of them comes back
        assert max(counts) == beam_size
        assert all(len({(b.text, b.score) for b in t.beams}) == len(t.beams) for t in answer.translations)


def test_the_json_route_carries_the_beams(server: ServerThread, stub: translator_pb2_grpc.TranslatorStub) -> None:
    body = {"model": {"name": MODEL}, "sentences": SENTENCES[:2], "beamSize": 3, "returnBeams": True}
    answer = http_request(
        f"{server.http_url}/rpc/myelin_api.v1.Translator/Translate",
        "POST",
        json.dumps(body).encode(),
        {"content-type": "application/json"},
    )
    assert answer.status == 200, answer.body
    expected = ask(stub, beam_size=3, return_beams=True).translations[:2]
    got = answer.json()["translations"]
    assert [[b["text"] for b in t["beams"]] for t in got] == [[b.text for b in t.beams] for t in expected]
    assert [[b["score"] for b in t["beams"]] for t in got] == [
        [pytest.approx(b.score) for b in t.beams] for t in expected
    ]


def test_both_clients_and_the_cli_expose_the_beams(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    async def go() -> list[list[Beam]]:
        async with AsyncClient(server.target, timeout=60) as c:
            result = await c.translate(SENTENCES, model=MODEL, beam_size=3, beams=True)
            return [t.beams for t in result]

    async_beams = asyncio.run(go())
    with Client(server.target, timeout=60) as c:
        result = c.translate(SENTENCES, model=MODEL, beam_size=3, beams=True)
        assert not any(t.beams for t in c.translate(SENTENCES, model=MODEL, beam_size=3))
    assert [t.beams for t in result] == async_beams
    for t in result:
        assert all(isinstance(b, Beam) for b in t.beams) and 1 <= len(t.beams) <= 3
        first = t.beams[0]
        assert (first.text, first.score, first.log_probability, first.tokens, first.finished) == (
            t.text,
            t.score,
            t.log_probability,
            t.tokens,
            t.finished,
        )
    with pytest.raises(SystemExit) as info:
        cli_main(["--target", server.target, "translate", SENTENCES[0], "--beam-size", "3", "--beams"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for rank, beam in enumerate(result[0].beams, 1):
        assert f"     {rank}. {beam.text}  (score {beam.score:.3f})" in out


def test_ranked_keeps_beam_size_hypotheses_when_one_step_finishes_more() -> None:
    """k = 2: EOS ends one hypothesis at step 1 and both live ones at step 2, three in all."""
    search = BeamSearch(SearchOptions(beam_size=2, max_length=10, length_penalty=0.0), eos_id=EOS, banned=(PAD, BOS))
    first = np.log(np.array([0.0, 0.0, 0.5, 0.3, 0.2], dtype=np.float64) + 1e-12)  # EOS, then tokens 3 and 4
    search.advance(first[None, :])
    assert search.width == 2 and len(search.finished) == 1
    second = np.log(np.array([0.0, 0.0, 0.9, 0.05, 0.05], dtype=np.float64) + 1e-12)
    search.advance(np.stack([second, second]))
    assert search.done and len(search.finished) == 3
    ranked = search.ranked()
    assert [h.tokens for h in ranked] == [(), (3,)]  # log 0.5, then log 0.3 + log 0.9; (4,) is dropped
    assert ranked[0] == search.best()
