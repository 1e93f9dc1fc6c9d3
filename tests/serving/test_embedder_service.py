"""The embedder service on a real server (port 0) through the real SDK, with word2vec models trained here."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from harness.servers import ServerThread
from myelin_client import AsyncClient, Client, InvalidArgumentError, MyelinError, NotFoundError
from myelin_client.cli import main as cli_main
from myelin_training.word2vec import evaluate
from myelin_training.word2vec.evaluate_cli import main as eval_main
from myelin_training.word2vec.evaluate_cli import read_vectors

SG, CBOW = "word2vec-skipgram", "word2vec-cbow-hs"


@pytest.fixture(scope="module")
def client(embedder_server: ServerThread) -> Client:
    with Client(embedder_server.target, timeout=30) as c:
        yield c


def version_dir(repository: Path, name: str) -> Path:
    return repository / name / "1"


def test_both_models_are_served_with_their_figures(client: Client) -> None:
    models = {m.name: m for m in client.list_models()}
    assert set(models) == {SG, CBOW}
    for m in models.values():
        assert m.family == "embedder" and m.versions[0].state == "READY"
        assert {"analogy_accuracy", "wordsim353_spearman", "simlex999_spearman"} <= set(m.evaluation)
        assert set(m.inputs) == {"lookup", "neighbours"}
    assert models[CBOW].architecture == "cbow" and models[SG].architecture == "skipgram"


def test_embed_reports_unknown_words_per_word(client: Client, word2vec_repository: Path) -> None:
    words, vectors = read_vectors(version_dir(word2vec_repository, SG) / "vectors.txt")
    result = client.embed(["the", "Lobster", "qqqzzzx", words[5]], model=SG)
    assert (result.model, result.version, result.dim) == (SG, 1, 100)
    assert [v.found for v in result] == [True, True, False, True]
    assert result.unknown == ["qqqzzzx"] and result[2].index == -1 and result[2].vector is None
    assert result[0].index == 0 and result[3].index == 5  # ids are frequency ranks
    for v in (result[0], result[1], result[3]):
        assert v.vector is not None
        assert np.linalg.norm(v.vector) == pytest.approx(1.0, abs=1e-5)
        raw = vectors[v.index]
        np.testing.assert_allclose(v.vector, raw / np.linalg.norm(raw), atol=1e-5)  # vectors.txt agrees


def test_most_similar_excludes_the_query_and_ranks_by_cosine(client: Client) -> None:
    result = client.most_similar(["the", "of"], ["and"], model=SG, top_k=7)
    assert len(result) == 7 and not {"the", "of", "and"} & set(result.words)
    scores = [n.score for n in result]
    assert scores == sorted(scores, reverse=True)
    the = client.embed("the", model=SG)[0].vector
    own = client.most_similar(positive_vectors=the, model=SG, top_k=3)
    assert own[0].word == "the" and own[0].score == pytest.approx(1.0, abs=1e-5)
    restricted = client.most_similar(positive_vectors=the, model=SG, top_k=5, restrict_vocab=20)
    assert all(n.index < 20 for n in restricted)
    # A raw vector of any length counts by its direction only.
    scaled = client.most_similar(positive_vectors=the * 7.5, model=SG, top_k=3)
    assert scaled.words == own.words


def test_analogy_is_most_similar_of_b_plus_c_minus_a(client: Client) -> None:
    answer = client.analogy("of", "the", "in", model=SG, top_k=3)
    expected = client.most_similar(["the", "in"], ["of"], model=SG, top_k=3)
    assert [c.word for c in answer.candidates] == expected.words
    assert answer.word == expected.words[0] and answer.unknown_words == []
    batch = client.analogies([("of", "the", "in"), ("of", "qqqzzzx", "in")], model=SG)
    assert batch.words == [answer.word, None] and batch[1].unknown_words == ["qqqzzzx"]


@pytest.mark.parametrize("name", [SG, CBOW])
def test_served_analogies_equal_the_offline_evaluation(
    embedder_server: ServerThread, word2vec_repository: Path, data_dir: Path, tmp_path: Path, name: str
) -> None:
    report = tmp_path / "eval.json"
    args = ["--target", embedder_server.target, "--model", name, "--data-dir", str(data_dir), "--json", str(report)]
    eval_main([*args, "--model-dir", str(version_dir(word2vec_repository, name))])  # exits 1 on any difference
    figures = json.loads(report.read_text())
    served, offline = figures["served"], figures["offline"]
    assert served["equal_to_offline"] == offline["analogy"]["total"]["answered"] > 100
    manifest = json.loads((version_dir(word2vec_repository, name) / "model.json").read_text())
    assert served["answers_sha256"] == manifest["evaluation"]["analogy_answers_sha256"]
    assert served["accuracy"] == pytest.approx(manifest["evaluation"]["analogy_accuracy"], abs=1e-12)
    eval_main(args)  # without the files: against the manifest's digest


def test_similarity_and_doesnt_match(client: Client) -> None:
    vectors = {v.word: v.vector for v in client.embed(["the", "of", "lobster", "and"], model=SG)}
    result = client.similarity([("the", "of"), ("The", "lobster"), ("the", "qqqzzzx")], model=SG)
    assert result[0].similarity == pytest.approx(float(vectors["the"] @ vectors["of"]), abs=1e-5)
    assert result[1].similarity == pytest.approx(float(vectors["the"] @ vectors["lobster"]), abs=1e-5)
    assert result[2].similarity is None and result[2].unknown_words == ["qqqzzzx"]
    odd = client.doesnt_match(["the", "of", "and", "lobster"], model=SG)
    mean = sum(vectors[w] for w in ("the", "of", "and", "lobster"))
    expected = {w: float(vectors[w] @ mean / np.linalg.norm(mean)) for w in vectors}
    assert odd.word == min(expected, key=expected.__getitem__)
    assert odd.similarities == pytest.approx(expected, abs=1e-5)


def v(n: int, value: float = 0.1) -> np.ndarray:
    return np.full(n, value, dtype=np.float32)


BAD_REQUESTS = [
    ("embed nothing", "embed", dict(words=[]), InvalidArgumentError, "words is empty"),
    ("embed too many", "embed", dict(words=["the"] * 257), InvalidArgumentError, "limit is 256"),
    ("most_similar nothing", "most_similar", dict(), InvalidArgumentError, "at least one positive or negative"),
    ("unknown word", "most_similar", dict(positive=["the", "qqqzzzx"]), InvalidArgumentError, "'qqqzzzx'"),
    ("huge top_k", "most_similar", dict(positive=["the"], top_k=10**6), InvalidArgumentError, "top_k must be"),
    ("negative top_k", "most_similar", dict(positive=["the"], top_k=-3), InvalidArgumentError, "top_k must be"),
    ("negative restrict", "most_similar", dict(positive=["the"], restrict_vocab=-1), InvalidArgumentError, "restrict"),
    ("non-finite vector", "most_similar", dict(positive_vectors=v(100, np.nan)), InvalidArgumentError, "NaN"),
    ("infinite vector", "most_similar", dict(negative_vectors=v(100, np.inf)), InvalidArgumentError, "infinite"),
    ("wrong vector size", "most_similar", dict(positive_vectors=v(99)), InvalidArgumentError, "has 99 values"),
    ("zero vector", "most_similar", dict(positive_vectors=v(100, 0.0)), InvalidArgumentError, "all zeros"),
    ("cancelling terms", "most_similar", dict(positive=["the"], negative=["the"]), InvalidArgumentError, "cancel"),
    ("analogy nothing", "analogies", dict(questions=[]), InvalidArgumentError, "questions is empty"),
    ("analogy top_k", "analogies", dict(questions=[("the", "of", "a")], top_k=5000), InvalidArgumentError, "top_k"),
    ("similarity nothing", "similarity", dict(pairs=[]), InvalidArgumentError, "pairs is empty"),
    ("one word", "doesnt_match", dict(words=["the"]), InvalidArgumentError, "at least two words"),
    ("odd unknown", "doesnt_match", dict(words=["the", "qqqzzzx"]), InvalidArgumentError, "'qqqzzzx'"),
    ("unknown model", "embed", dict(words=["the"], model="word2vec-nope"), NotFoundError, "not found"),
    ("unknown version", "embed", dict(words=["the"], version=7), NotFoundError, "no version 7"),
    ("bad model name", "embed", dict(words=["the"], model="../x"), InvalidArgumentError, "not a valid model name"),
]


@pytest.mark.parametrize(
    ("case", "method", "kwargs", "error", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_input_gets_a_clear_status(
    client: Client, case: str, method: str, kwargs: dict, error: type[MyelinError], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        getattr(client, method)(**{"model": SG, **kwargs})
    assert "Traceback" not in info.value.details


def test_bad_requests_do_not_disturb_good_ones(client: Client) -> None:
    expected = client.most_similar(["the"], model=CBOW, top_k=5).words
    failures: list[BaseException] = []

    def good() -> None:
        try:
            for _ in range(10):
                assert client.most_similar(["the"], model=CBOW, top_k=5).words == expected
        except BaseException as exc:
            failures.append(exc)

    def bad() -> None:
        for _, method, kwargs, error, _ in BAD_REQUESTS:
            with pytest.raises(error):
                getattr(client, method)(**{"model": SG, **kwargs})

    threads = [threading.Thread(target=good) for _ in range(3)] + [threading.Thread(target=bad) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert client.health() == "SERVING"


def test_async_client_gives_the_same_answers(embedder_server: ServerThread, client: Client) -> None:
    async def scenario() -> tuple[list[str], str | None]:
        async with AsyncClient(embedder_server.target) as c:
            similar, answer = await asyncio.gather(
                c.most_similar(["of"], model=SG, top_k=4), c.analogy("of", "the", "in", model=SG)
            )
            return similar.words, answer.word

    words, word = asyncio.run(scenario())
    assert words == client.most_similar(["of"], model=SG, top_k=4).words
    assert word == client.analogy("of", "the", "in", model=SG).word


def test_cli_analogy_and_friends(embedder_server: ServerThread, client: Client, capsys: pytest.CaptureFixture) -> None:
    target = ["--target", embedder_server.target]
    with pytest.raises(SystemExit) as info:
        cli_main([*target, "analogy", "of", "the", "in"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"of : the :: in : {client.analogy('of', 'the', 'in').word}"
    with pytest.raises(SystemExit) as info:
        cli_main([*target, "similarity", "the", "of", "the", "qqqzzzx"])
    out = capsys.readouterr().out
    assert info.value.code == 1 and "the ~ of: 0." in out and "unknown: qqqzzzx" in out
    with pytest.raises(SystemExit) as info:
        cli_main([*target, "most-similar", "the", "--negative", "of", "--top-k", "3", "--model", CBOW])
    assert info.value.code == 0 and len(capsys.readouterr().out.strip().splitlines()) == 4
    with pytest.raises(SystemExit) as info:
        cli_main([*target, "analogy", "of", "qqqzzzx", "in"])
    assert info.value.code == 1 and "unknown word(s): qqqzzzx" in capsys.readouterr().err


def test_offline_numpy_and_onnx_scorers_agree(word2vec_repository: Path, data_dir: Path) -> None:
    folder = version_dir(word2vec_repository, SG)
    words, vectors = read_vectors(folder / "vectors.txt")
    sections = evaluate.load_analogies(evaluate.eval_paths(data_dir)["analogy"])
    by_numpy = evaluate.analogies(sections, words, evaluate.NumpyScorer(vectors))
    by_onnx = evaluate.analogies(sections, words, evaluate.OnnxScorer(folder))
    assert by_numpy["total"]["answered"] == by_onnx["total"]["answered"] > 100
    # Different float summation orders may flip a near tie, no more.
    assert abs(by_numpy["total"]["correct"] - by_onnx["total"]["correct"]) <= 2
