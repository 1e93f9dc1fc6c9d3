"""The OpenAI-compatible routes through the real `openai` SDK, unmodified: completions (whole and
streamed) equal to the gRPC answers for the same seed, embeddings equal to `Embed`, the SDK's
exceptions for the error table's statuses, and a client that hangs up freeing its sequence."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from harness.http import http_request
from harness.servers import (
    ENDLESS_TOKENS,
    LONG_GENERATION,
    ServerProcess,
    ServerThread,
    eventually,
    sample,
    settings_for,
    wait_cancelled_and_still,
)
from myelin_client import Client

GPT, GRU = "generator-gpt-shakespeare", "generator-gru-shakespeare"
SG, CBOW = "word2vec-skipgram", "word2vec-cbow-hs"
COMPLETIONS = "POST /v1/completions"


@pytest.fixture(scope="module")
def generator(generator_repository: Path) -> Iterator[ServerThread]:
    settings = settings_for(generator_repository, service="generator", http_port=0, generation=LONG_GENERATION)
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def embedder(word2vec_repository: Path) -> Iterator[ServerThread]:
    with ServerThread(settings_for(word2vec_repository, service="embedder", http_port=0)) as server:
        yield server


def sdk(server: ServerThread, api_key: str = "unused", **options: Any) -> openai.OpenAI:
    """The OpenAI SDK pointed at the service; no retries, so each status is seen as it was sent."""
    return openai.OpenAI(base_url=f"{server.http_url}/v1", api_key=api_key, max_retries=0, **options)


OPTIONS = [
    dict(temperature=0.8, seed=7),
    dict(temperature=1.2, top_p=0.9, seed=2**64 - 1, stop=["\n\n", "e "]),
    dict(temperature=0.0, stop="the"),
    dict(temperature=0.9, seed=11, extra_body={"top_k": 5, "repetition_penalty": 1.3}),
]


@pytest.mark.parametrize("model", [GPT, GRU])
@pytest.mark.parametrize("options", OPTIONS, ids=["seed", "top_p+stop", "greedy", "top_k+penalty"])
def test_completions_equal_the_grpc_answers_for_the_same_seed(
    generator: ServerThread, model: str, options: dict[str, Any]
) -> None:
    extra = options.get("extra_body", {})
    with Client(generator.target, timeout=60) as client:
        expected = client.complete(
            "ROMEO:",
            model=model,
            max_new_tokens=40,
            temperature=options["temperature"],
            top_p=options.get("top_p"),
            seed=options.get("seed"),
            stop=options.get("stop"),
            top_k=extra.get("top_k", 0),
            repetition_penalty=extra.get("repetition_penalty"),
        )
    with sdk(generator) as api:
        whole = api.completions.create(model=model, prompt="ROMEO:", max_tokens=40, **options)
        chunks = list(
            api.completions.create(
                model=model, prompt=["ROMEO:"], max_tokens=40, stream=True, stream_options={"include_usage": True},
                **options,
            )
        )  # fmt: skip
    assert whole.model == model and whole.object == "text_completion" and whole.id.startswith("cmpl-")
    assert whole.system_fingerprint == f"{model}:1"
    (choice,) = whole.choices
    assert (choice.text, choice.finish_reason) == (expected.text, expected.finish_reason)
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (
        expected.prompt_tokens,
        expected.generated_tokens,
    )
    assert whole.usage.total_tokens == expected.prompt_tokens + expected.generated_tokens
    # Streamed: the same text in pieces, the reason on the last piece, then the usage chunk.
    *pieces, usage = chunks
    assert "".join(p.choices[0].text for p in pieces) == expected.text
    assert [p.choices[0].finish_reason for p in pieces][-1] == expected.finish_reason
    assert all(p.choices[0].finish_reason is None for p in pieces[:-1])
    assert (
        usage.choices == [] and usage.usage is not None and usage.usage.completion_tokens == expected.generated_tokens
    )
    assert len({p.id for p in chunks}) == 1


def test_the_stream_is_server_sent_events_ending_in_done(generator: ServerThread) -> None:
    body = {"model": GPT, "prompt": "JULIET:", "max_tokens": 30, "stream": True, "seed": 3}
    answer = http_request(
        f"{generator.http_url}/v1/completions", "POST", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = answer.body.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    texts = [json.loads(e.removeprefix("data: "))["choices"][0]["text"] for e in events[:-2]]
    with Client(generator.target) as client:
        assert "".join(texts) == client.complete("JULIET:", model=GPT, max_new_tokens=30, seed=3).text


def test_errors_reach_the_sdk_as_its_own_exceptions(generator: ServerThread) -> None:
    with sdk(generator) as api:
        cases: list[tuple[dict[str, Any], type[openai.APIStatusError], str]] = [
            (dict(model=GPT, prompt="x", temperature=20), openai.BadRequestError, "temperature must be between"),
            (dict(model=GPT, prompt="x", n=2), openai.BadRequestError, "n: not supported"),
            (dict(model=GPT, prompt=["a", "b"]), openai.BadRequestError, "one prompt per request"),
            (dict(model=GPT, prompt="x", logprobs=2, echo=True), openai.BadRequestError, "logprobs, echo"),
            (dict(model=GPT, prompt="x", max_tokens=-1), openai.BadRequestError, "max_tokens"),
            (dict(model=GPT, prompt="x", seed=-1), openai.BadRequestError, "seed"),
            (dict(model=GPT, prompt="x", max_tokens=10**9), openai.BadRequestError, "exceed the context"),
            (dict(model="generator-nope", prompt="x"), openai.NotFoundError, "serves: generator-gpt-shakespeare"),
            (dict(model="../etc", prompt="x"), openai.BadRequestError, "not a valid model name"),
        ]
        for arguments, error, message in cases:
            with pytest.raises(error) as info:
                api.completions.create(**arguments)
            assert message in info.value.message, (arguments, info.value.message)
            assert info.value.body is not None and info.value.body["type"] == "invalid_request_error"
        with pytest.raises(openai.NotFoundError) as info:
            api.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hello"}])
        assert "no route POST /v1/chat/completions" in info.value.message and COMPLETIONS in info.value.message
        with pytest.raises(openai.NotFoundError):
            api.embeddings.create(model=GPT, input="x")  # the embedder's route is not the generator's


def test_the_sequence_limit_is_a_rate_limit_error(generator_repository: Path) -> None:
    generation = {**LONG_GENERATION, "max_sequences": 1}
    settings = settings_for(generator_repository, service="generator", http_port=0, generation=generation)
    with ServerThread(settings) as server, sdk(server) as api:
        with api.completions.create(model=GRU, prompt="ROMEO:", max_tokens=ENDLESS_TOKENS, stream=True) as stream:
            next(iter(stream))  # admitted and generating
            with pytest.raises(openai.RateLimitError, match="max_sequences 1"):
                api.completions.create(model=GRU, prompt="ROMEO:", max_tokens=5)
        eventually(lambda: sample(server, "myelin_generator_active_sequences", {"model": GRU}) == 0)
        assert api.completions.create(model=GRU, prompt="ROMEO:", max_tokens=5).usage.completion_tokens == 5


@pytest.mark.parametrize("stream", [True, False], ids=["mid-stream", "whole completion"])
def test_a_client_that_hangs_up_frees_its_sequence(generator: ServerThread, stream: bool) -> None:
    """The sequence leaves the batch at once (the decoding thread drops a cancelled row before its next
    step): the metrics show it cancelled, nothing active, and the token counter still."""
    gru = {"model": GRU}
    eventually(lambda: sample(generator, "myelin_generator_active_sequences", gru) == 0)
    cancelled = sample(generator, "myelin_generator_sequences_total", gru | {"outcome": "cancelled"})
    requests_cancelled = sample(generator, "myelin_requests_total", {"method": COMPLETIONS, "code": "CANCELLED"})
    with sdk(generator, timeout=1.5) as api:
        if stream:
            with api.completions.create(model=GRU, prompt="ROMEO:", max_tokens=ENDLESS_TOKENS, stream=True) as events:
                for i, _ in enumerate(events):
                    if i == 3:
                        break  # leaving the block closes the connection
        else:
            with pytest.raises(openai.APITimeoutError):  # the SDK gives up and closes its connection
                api.completions.create(model=GRU, prompt="ROMEO:", max_tokens=ENDLESS_TOKENS)
    wait_cancelled_and_still(generator, GRU, cancelled)
    eventually(
        lambda: (
            sample(generator, "myelin_requests_total", {"method": COMPLETIONS, "code": "CANCELLED"})
            == requests_cancelled + 1
        )
    )


def test_models_lists_the_ready_models(generator: ServerThread, embedder: ServerThread) -> None:
    for server, names in ((generator, [GPT, GRU]), (embedder, [CBOW, SG])):
        with sdk(server) as api:
            listed = api.models.list()
            assert sorted(m.id for m in listed.data) == names
            assert all(m.owned_by == "myelin" and m.created > 0 for m in listed.data)
            assert api.models.retrieve(names[0]).id == names[0]
            with pytest.raises(openai.NotFoundError, match="serves"):
                api.models.retrieve("nope")


def vector_of(embedding: list[float] | str) -> np.ndarray:
    """The SDK decodes base64 when it chose it itself, and hands it over as text when the caller asked."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_of_words_equal_embed_and_phrases_are_normalised_means(
    embedder: ServerThread, encoding: str
) -> None:
    inputs = ["king", "The queen, and the KING!", "king zzzqqq"]
    with Client(embedder.target) as client:
        vectors = {v.word: v.vector for v in client.embed(["king", "the", "queen", "and"], model=SG)}
    with sdk(embedder) as api:
        answer = api.embeddings.create(model=SG, input=inputs, encoding_format=encoding)
        default = api.embeddings.create(model=SG, input="king")  # the SDK asks for base64 itself
    assert answer.model == SG and [e.index for e in answer.data] == [0, 1, 2]
    got = [vector_of(e.embedding) for e in answer.data]
    assert all(v is not None for v in vectors.values())
    np.testing.assert_array_equal(got[0], vectors["king"])
    np.testing.assert_array_equal(vector_of(default.data[0].embedding), vectors["king"])
    # Every occurrence counts: "the" twice.
    mean = (2 * vectors["the"] + vectors["queen"] + vectors["and"] + vectors["king"]).astype(np.float64) / 5
    np.testing.assert_allclose(got[1], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[2], vectors["king"])  # the unknown word is skipped...
    assert [e.model_extra["unknown_words"] for e in answer.data] == [[], [], ["zzzqqq"]]
    assert answer.usage.prompt_tokens == 1 + 5 + 2 == answer.usage.total_tokens


def test_embedding_errors(embedder: ServerThread) -> None:
    url = f"{embedder.http_url}/v1/embeddings"
    with sdk(embedder) as api:
        with pytest.raises(openai.BadRequestError, match="no word in the"):
            api.embeddings.create(model=SG, input=["king", "zzzqqq xxyyzz"])
        with pytest.raises(openai.BadRequestError, match="token ids are not supported"):
            api.embeddings.create(model=SG, input=[[1, 2, 3]])
        with pytest.raises(openai.BadRequestError, match="dimensions must be"):
            api.embeddings.create(model=SG, input="king", dimensions=7)
        with pytest.raises(openai.NotFoundError, match="serves: word2vec-cbow-hs, word2vec-skipgram"):
            api.embeddings.create(model="word2vec-nope", input="king")
        with pytest.raises(openai.BadRequestError, match="inputs is empty"):
            api.embeddings.create(model=SG, input=[])
    too_many = {"model": SG, "input": [f"w{i}" for i in range(embedder.settings.max_request_batch + 1)]}
    answer = http_request(url, "POST", json.dumps(too_many).encode(), {"Content-Type": "application/json"})
    assert answer.status == 400 and "the limit is" in answer.error
    encoded = http_request(
        url, "POST", json.dumps({"model": SG, "input": "king", "encoding_format": "base64"}).encode()
    )
    assert encoded.status == 200  # no Content-Type header: read as JSON
    values = vector_of(encoded.json()["data"][0]["embedding"])
    with Client(embedder.target) as client:
        np.testing.assert_array_equal(values, client.embed("king", model=SG)[0].vector)


def test_sigterm_lets_a_stream_in_flight_finish_and_refuses_new_connections(
    generator_repository: Path, tmp_path: Path
) -> None:
    """Graceful stop over HTTP, as over gRPC: readiness goes 400 and new connections are refused, while a
    stream that started before the signal runs to its `[DONE]` within the grace period."""
    tokens = 3000
    server = ServerProcess(
        "generator", generator_repository, tmp_path, env={"MYELIN_GENERATION__MAX_CONTEXT_TOKENS": str(tokens + 64)}
    )
    try:
        url = f"http://127.0.0.1:{server.http_port}"
        with Client(server.target) as client:
            client.wait_ready(timeout=60)
        body = {"model": GRU, "prompt": "ROMEO:", "max_tokens": tokens, "seed": 5, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
        connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        first = response.readline()  # the stream is under way
        assert response.status == 200 and first.startswith(b"data: {")
        server.process.send_signal(signal.SIGTERM)
        eventually(lambda: _refused(url))
        rest = response.read().decode()  # the rest of the events, to the end
        connection.close()
        assert server.process.wait(timeout=30) == 0
    finally:
        server.kill()
    events = [json.loads(e.removeprefix("data: ")) for e in (first.decode() + rest).split("\n\n")[:-2]]
    assert rest.endswith("data: [DONE]\n\n") and events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == tokens  # every token, none cut by the stop


def _refused(url: str) -> bool:
    try:
        return http_request(f"{url}/v2/health/ready", timeout=2).status == 400
    except ConnectionRefusedError:
        return True


def test_while_the_server_drains_http_answers_503_and_probes_still_answer(generator_repository: Path) -> None:
    """Shutdown's order over HTTP, as over gRPC: after the drain delay new requests are refused with 503
    (retry elsewhere) while a gRPC call is still running, the open probes still answer (not ready), and
    once the running call has ended both ports close."""
    settings = settings_for(
        generator_repository, service="generator", http_port=0, generation=LONG_GENERATION, drain_delay_s=0
    )
    with ServerThread(settings) as server, Client(server.target) as client:
        url, body = server.http_url, json.dumps({"model": GRU, "prompt": "ROMEO:", "max_tokens": 4}).encode()
        headers = {"Content-Type": "application/json"}
        assert http_request(f"{url}/v1/completions", "POST", body, headers).status == 200
        with client.generate("ROMEO:", model=GRU, max_new_tokens=ENDLESS_TOKENS) as stream:
            next(iter(stream))  # a gRPC call in flight: the drain waits for it
            stopping = asyncio.run_coroutine_threadsafe(server.server.stop(30), server.loop)
            eventually(server.server.interceptor.draining)
            refused = http_request(f"{url}/v1/completions", "POST", body, headers)
            assert refused.status == 503 and "shutting down" in refused.error
            assert http_request(f"{url}/v2/health/live").status == 200
            assert http_request(f"{url}/v2/health/ready").status == 400
            assert not stopping.done()
        stopping.result(timeout=20)  # the stream's end lets the stop finish, well inside its 30 s
        with pytest.raises(ConnectionRefusedError):
            http_request(f"{url}/v2/health/live", timeout=5)
