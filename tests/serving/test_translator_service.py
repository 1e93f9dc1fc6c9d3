"""The translator service on a real server (port 0) through the real SDK, with a model trained in this session."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import grpc
import pytest

from harness.servers import ServerThread, settings_for
from myelin_api.v1 import common_pb2, translator_pb2, translator_pb2_grpc
from myelin_client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    MyelinError,
    NotFoundError,
    ResourceExhaustedError,
)
from myelin_client.cli import main as cli_main

MODEL = "translator-tatoeba"
SENTENCES = ["I am cold.", "Where is the station?", "Tom didn't want to go to school today.", "Thanks!"]


@pytest.fixture(scope="module")
def client(translator_server: ServerThread) -> Client:
    with Client(translator_server.target, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def manifest(translator_repository: Path) -> dict:
    return json.loads((translator_repository / MODEL / "1" / "model.json").read_text())


def test_greedy_and_beam_answer_every_sentence_in_order(client: Client) -> None:
    greedy = client.translate(SENTENCES, model=MODEL, beam_size=1)
    beam = client.translate(SENTENCES, model=MODEL, beam_size=4)
    for result in (greedy, beam):
        assert (result.model, result.version) == (MODEL, 1)
        assert len(result) == len(SENTENCES)
        for t in result:
            assert t.text and t.tokens >= 1 and t.log_probability <= 0 and not t.source_truncated
            assert t.score == pytest.approx(t.log_probability / ((5 + t.tokens) / 6) ** 0.6, rel=1e-4)
    assert client.translate(SENTENCES[1], model=MODEL, beam_size=1).texts == greedy.texts[1:2]
    # Greedy keeps only the best token at each step; the best of four beams scores at least as well here.
    assert sum(t.score for t in beam) >= sum(t.score for t in greedy) - 1e-4


def test_served_greedy_matches_pytorch_greedy_from_training(client: Client, manifest: dict) -> None:
    """The manifest's examples were translated greedily by the PyTorch model in float32."""
    examples = manifest["examples"]
    result = client.translate([e["source"] for e in examples], model=MODEL, beam_size=1)
    assert result.texts == [e["translation"] for e in examples]


def test_max_length_and_length_penalty_are_honoured(client: Client) -> None:
    short = client.translate(SENTENCES, model=MODEL, beam_size=3, max_length=2)
    assert all(t.tokens <= 2 for t in short)
    assert any(not t.finished for t in short) or all(t.tokens <= 2 for t in short)
    raw = client.translate(SENTENCES, model=MODEL, beam_size=2, length_penalty=0.0)
    for t in raw:
        assert t.score == pytest.approx(t.log_probability, rel=1e-5)


def test_over_long_input_is_refused_or_truncated(client: Client, manifest: dict) -> None:
    limit = manifest["serving"]["limits"]["max_source_tokens"]
    long = " ".join(["elephant"] * (limit + 20))
    with pytest.raises(InvalidArgumentError, match=rf"at most {limit} \(max_source_tokens\).*truncate"):
        client.translate(["Hello.", long], model=MODEL)
    cut = client.translate(["Hello.", long], model=MODEL, truncate=True, beam_size=1, max_length=5)
    assert [t.source_truncated for t in cut] == [False, True]
    huge = "x" * 1_000_000  # refused before tokenising it all
    with pytest.raises(InvalidArgumentError, match="subword tokens long"):
        client.translate(huge, model=MODEL)


BAD_REQUESTS = [
    ("empty batch", dict(sentences=[]), InvalidArgumentError, "sentences is empty"),
    ("empty string", dict(sentences=["Hello.", ""]), InvalidArgumentError, r"sentences\[1\] is empty"),
    ("blank string", dict(sentences=["   \t"]), InvalidArgumentError, r"sentences\[0\] is empty"),
    ("beam_size 0", dict(sentences=["Hi."], beam_size=0), InvalidArgumentError, "beam_size must be between 1"),
    ("beam_size negative", dict(sentences=["Hi."], beam_size=-3), InvalidArgumentError, "beam_size"),
    ("beam_size huge", dict(sentences=["Hi."], beam_size=10_000), InvalidArgumentError, "and 8, got 10000"),
    ("max_length 0", dict(sentences=["Hi."], max_length=0), InvalidArgumentError, "max_length must be between 1"),
    ("max_length huge", dict(sentences=["Hi."], max_length=100_000), InvalidArgumentError, "max_length"),
    ("negative penalty", dict(sentences=["Hi."], length_penalty=-1.0), InvalidArgumentError, "length_penalty"),
    ("NaN penalty", dict(sentences=["Hi."], length_penalty=float("nan")), InvalidArgumentError, "length_penalty"),
    ("batch over the limit", dict(sentences=["Hi."] * 257), InvalidArgumentError, "limit is 256"),
    ("unknown model", dict(sentences=["Hi."], model="translator-klingon"), NotFoundError, "not found"),
    ("unknown version", dict(sentences=["Hi."], version=7), NotFoundError, "no version 7"),
    ("path-like name", dict(sentences=["Hi."], model="../x"), InvalidArgumentError, "not a valid model name"),
]


@pytest.mark.parametrize(("case", "kwargs", "error", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_clear_status(
    client: Client, case: str, kwargs: dict, error: type[MyelinError], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        client.translate(**{"model": MODEL, **kwargs})
    assert "Traceback" not in info.value.details


def test_unset_options_take_the_defaults_but_zero_is_refused(translator_server: ServerThread) -> None:
    with grpc.insecure_channel(translator_server.target) as channel:
        stub = translator_pb2_grpc.TranslatorStub(channel)
        model = common_pb2.ModelRef(name=MODEL)
        answer = stub.Translate(translator_pb2.TranslateRequest(model=model, sentences=["Hi."]), timeout=30)
        assert len(answer.translations) == 1
        with pytest.raises(grpc.RpcError) as info:
            stub.Translate(translator_pb2.TranslateRequest(model=model, sentences=["Hi."], beam_size=0), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            stub.Translate(translator_pb2.TranslateRequest(sentences=["Hi."]), timeout=30)
        assert (
            info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model.name is required" in info.value.details()
        )


def test_concurrent_requests_share_decoder_steps_and_get_their_own_answers(
    client: Client, translator_server: ServerThread
) -> None:
    requests = [[s] for s in SENTENCES] + [SENTENCES[::-1], SENTENCES[:2]]
    alone = [client.translate(r, model=MODEL, beam_size=2).texts for r in requests]
    sample = translator_server.registry.get_sample_value
    labels = {"model": MODEL}
    steps_before = sample("myelin_decode_steps_total", labels) or 0.0
    shared_before = (sample("myelin_decode_step_requests_count", labels) or 0.0) - (
        sample("myelin_decode_step_requests_bucket", {**labels, "le": "1.0"}) or 0.0
    )
    barrier = threading.Barrier(len(requests))
    together: list[list[str] | None] = [None] * len(requests)

    def call(i: int) -> None:
        barrier.wait()
        together[i] = client.translate(requests[i], model=MODEL, beam_size=2).texts

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    shared_after = sample("myelin_decode_step_requests_count", labels) - sample(
        "myelin_decode_step_requests_bucket", {**labels, "le": "1.0"}
    )
    assert shared_after > shared_before, "no decoder step served two requests at once"
    steps = sample("myelin_decode_steps_total", labels) - steps_before
    # Sequentially these requests took one step per token each; together, far fewer steps.
    assert steps < sum(sum(t.tokens for t in client.translate(r, model=MODEL, beam_size=1)) for r in requests)


def test_bad_requests_do_not_disturb_good_ones(client: Client) -> None:
    expected = client.translate(SENTENCES, model=MODEL, beam_size=2).texts
    failures: list[BaseException] = []

    def good() -> None:
        try:
            for _ in range(3):
                assert client.translate(SENTENCES, model=MODEL, beam_size=2).texts == expected
        except BaseException as exc:
            failures.append(exc)

    def bad() -> None:
        for _, kwargs, error, _ in BAD_REQUESTS:
            with pytest.raises(error):
                client.translate(**{"model": MODEL, **kwargs})

    threads = [threading.Thread(target=good) for _ in range(3)] + [threading.Thread(target=bad) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert client.health() == "SERVING"


def test_full_queue_is_resource_exhausted(translator_repository: Path) -> None:
    settings = settings_for(
        translator_repository,
        service="translator",
        translator={"max_pending_sentences": 4, "max_active_rows": 4, "max_beam_size": 2, "default_beam_size": 1},
    )
    with ServerThread(settings) as server, Client(server.target, timeout=60) as c:
        with pytest.raises(ResourceExhaustedError, match="sentences queued"):
            c.translate(["Hi."] * 5, model=MODEL)
        with pytest.raises(InvalidArgumentError, match="and 2, got 3"):
            c.translate(["Hi."], model=MODEL, beam_size=3)
        assert len(c.translate(["Hi."] * 4, model=MODEL)) == 4


def test_async_client_and_cli(translator_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    async def go() -> list[str]:
        async with AsyncClient(translator_server.target, timeout=60) as c:
            results = await asyncio.gather(*(c.translate(s, model=MODEL, beam_size=1) for s in SENTENCES))
            return [r[0].text for r in results]

    texts = asyncio.run(go())
    with Client(translator_server.target) as c:
        assert texts == c.translate(SENTENCES, model=MODEL, beam_size=1).texts
    with pytest.raises(SystemExit) as info:
        cli_main(["--target", translator_server.target, "translate", "I am cold.", "--beam-size", "1"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"model {MODEL} version 1" in out and f"-> {texts[0]}" in out
    with pytest.raises(SystemExit) as info:
        cli_main(["--target", translator_server.target, "translate", "", "--model", MODEL])
    assert info.value.code == 2 and "is empty" in capsys.readouterr().err


def test_models_health_reflection_and_metrics(client: Client, translator_server: ServerThread, manifest: dict) -> None:
    info = client.get_model(MODEL)
    assert (info.family, info.architecture, info.version) == ("translator", "transformer", 1)
    assert set(info.inputs) == {"encoder", "decoder"}
    assert [t.name for t in info.inputs["encoder"]] == ["source_ids", "source_mask"]
    assert info.evaluation["test_bleu_greedy"] == pytest.approx(manifest["evaluation"]["test_bleu_greedy"])
    assert client.health("myelin_api.v1.Translator") == "SERVING"
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(translator_server.target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "myelin_api.v1.Translator" in services and "myelin_api.v1.Models" in services
    sample = translator_server.registry.get_sample_value
    assert (
        sample(
            "myelin_model_info",
            {"model": MODEL, "version": "1", "family": "translator", "provider": "CPUExecutionProvider"},
        )
        == 1
    )
    assert sample("myelin_generated_tokens_total", {"model": MODEL}) > 0
    assert sample("myelin_queue_depth", {"model": MODEL}) == 0


def test_eval_reproduces_the_training_figures_through_the_service(
    translator_server: ServerThread, manifest: dict, data_dir: Path, tmp_path: Path
) -> None:
    from myelin_training.cli import eval_main

    out = tmp_path / "eval.json"
    pairs = manifest["evaluation"]["test_pairs"]  # the dry run scored the first 64 test pairs
    target, data = translator_server.target, str(data_dir)
    flags = ["--limit", str(pairs), "--beam-size", "1", "--beam-size", "3", "--json", str(out)]
    eval_main(["translator", "--target", target, "--data-dir", data, *flags])
    greedy, beam = json.loads(out.read_text())
    assert (greedy["beam_size"], beam["beam_size"], greedy["pairs"]) == (1, 3, pairs)
    assert greedy["bleu"] == pytest.approx(manifest["evaluation"]["test_bleu_greedy"], abs=1e-6)
    assert greedy["chrf"] == pytest.approx(manifest["evaluation"]["test_chrf_greedy"], abs=1e-6)
    assert 0.0 <= beam["bleu"] <= 100.0 and beam["sentences"] == greedy["sentences"]
