"""The embedder family (word2vec): Embed, MostSimilar, Analogy, Similarity, DoesntMatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import Message
from hypothesis import strategies as st

from harness import rpcs
from harness.codes import INVALID, MESSAGE_LIMIT, NOT_FOUND, OK, TOO_BIG, UNDECODABLE
from harness.rpcs import RANGE, Bad, Graph, GraphInput, Request, ServiceCase, invalid_names, kserve_bad, kserve_infer
from harness.strategies import ANY_TEXT, any_request
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.v1 import common_pb2, embedder_pb2
from myelin_client import Client

EMBEDDER_SERVICE = "myelin_api.v1.Embedder"
W2V = "word2vec-skipgram"


def _w2v(**fields: Any) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=fields.pop("name", W2V), **fields)


def _e(method: str) -> str:
    return f"/{EMBEDDER_SERVICE}/{method}"


def embedder_bad() -> tuple[Bad, ...]:
    vec = embedder_pb2.Vector
    bad = [
        Bad("Embed no words", _e("Embed"), embedder_pb2.EmbedRequest(model=_w2v()), INVALID, "words is empty"),
        Bad("Embed 1,000 words", _e("Embed"), embedder_pb2.EmbedRequest(model=_w2v(), words=["the"] * 1000),
            INVALID, "the limit is"),
        # refused from its bytes, before parsing (wire.py): 64 x max_request_batch fields at most
        Bad("Embed 100k words", _e("Embed"), embedder_pb2.EmbedRequest(model=_w2v(), words=["the"] * 100_000),
            TOO_BIG, "more than 16,384 fields"),
        Bad("Embed unknown model", _e("Embed"), embedder_pb2.EmbedRequest(model=_w2v(name="mnist-cnn"), words=["the"]),
            NOT_FOUND, "embedder service serves"),
        Bad("MostSimilar nothing", _e("MostSimilar"), embedder_pb2.MostSimilarRequest(model=_w2v()), INVALID,
            "at least one positive or negative"),
        Bad("MostSimilar unknown word", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive=["zzqxj-not-a-word"]), INVALID, "unknown word"),
        Bad("MostSimilar cancels out", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive=["the"], negative=["the"]), INVALID, "cancel out"),
        Bad("MostSimilar top_k 2**31-1", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive=["the"], top_k=2**31 - 1), INVALID,
            "top_k must be between 1 and"),
        Bad("MostSimilar top_k -1", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive=["the"], top_k=-1), INVALID, "top_k must be"),
        Bad("MostSimilar restrict_vocab -1", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive=["the"], restrict_vocab=-1), INVALID,
            "restrict_vocab must be 0"),
        Bad("MostSimilar vector too short", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive_vectors=[vec(values=[1.0])]), INVALID,
            "this model's vectors have"),
        Bad("MostSimilar NaN vector", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive_vectors=[vec(values=[float("nan")] * 100)]),
            INVALID, "NaN or infinite"),
        Bad("MostSimilar inf vector", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), negative_vectors=[vec(values=[float("inf")] * 100)]),
            INVALID, "NaN or infinite"),
        Bad("MostSimilar zero vector", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive_vectors=[vec(values=[0.0] * 100)]), INVALID,
            "all zeros"),
        Bad("MostSimilar huge vector", _e("MostSimilar"),
            embedder_pb2.MostSimilarRequest(model=_w2v(), positive_vectors=[vec(values=[3e38] * 100)]), OK,
            ""),  # a real direction, normalised in float64
        Bad("Analogy no questions", _e("Analogy"), embedder_pb2.AnalogyRequest(model=_w2v()), INVALID,
            "questions is empty"),
        Bad("Analogy top_k 2**31-1", _e("Analogy"),
            embedder_pb2.AnalogyRequest(model=_w2v(), questions=[embedder_pb2.AnalogyQuestion(a="a", b="b", c="c")],
                                        top_k=2**31 - 1), INVALID, "top_k must be"),
        Bad("Similarity no pairs", _e("Similarity"), embedder_pb2.SimilarityRequest(model=_w2v()), INVALID,
            "pairs is empty"),
        Bad("DoesntMatch one word", _e("DoesntMatch"), embedder_pb2.DoesntMatchRequest(model=_w2v(), words=["the"]),
            INVALID, "at least two words"),
        Bad("DoesntMatch unknown words", _e("DoesntMatch"),
            embedder_pb2.DoesntMatchRequest(model=_w2v(), words=["the", "\u2028\x00"]), INVALID, "unknown word"),
        Bad("Embed undecodable", _e("Embed"), UNDECODABLE, INVALID, "not a valid message"),
        Bad("Embed over the size limit", _e("Embed"),
            embedder_pb2.EmbedRequest(model=_w2v(), words=["a" * MESSAGE_LIMIT]), TOO_BIG, "larger than max"),
    ]  # fmt: skip
    bad += [Bad(f"Embed {case_id}", _e("Embed"), embedder_pb2.EmbedRequest(model=_w2v(name=name), words=["the"]),
                INVALID, "not a valid model name") for case_id, name in invalid_names(W2V)]  # fmt: skip
    return tuple(bad)


def _with_real_model(strategy: st.SearchStrategy[Message], model: str) -> st.SearchStrategy[Message]:
    """Random requests, most of them naming a real model so that they reach the family's own checks."""

    def name(message: Message, real: bool) -> Message:
        if real:
            message.model.name = model  # type: ignore[attr-defined]
        return message

    return st.builds(name, strategy, st.booleans())


def embedder_fuzz() -> tuple[tuple[str, st.SearchStrategy[Message]], ...]:
    words = st.lists(st.one_of(st.sampled_from(["the", "of", "king", "and", "in"]), ANY_TEXT), max_size=6)
    vectors = st.lists(
        st.builds(lambda v: embedder_pb2.Vector(values=v), st.lists(st.floats(width=32), min_size=0, max_size=101)),
        max_size=2,
    )
    ints = st.one_of(st.integers(-3, 12), st.integers(-(2**31), 2**31 - 1))
    ref = st.builds(_w2v)
    return (
        (_e("Embed"), st.builds(embedder_pb2.EmbedRequest, model=ref, words=words)),
        (_e("MostSimilar"), st.builds(embedder_pb2.MostSimilarRequest, model=ref, positive=words, negative=words,
                                      positive_vectors=vectors, negative_vectors=vectors, top_k=ints,
                                      restrict_vocab=ints)),
        (_e("Analogy"), st.builds(embedder_pb2.AnalogyRequest, model=ref, top_k=ints, restrict_vocab=ints,
            questions=st.lists(st.builds(embedder_pb2.AnalogyQuestion, a=ANY_TEXT, b=ANY_TEXT, c=ANY_TEXT),
                               max_size=3))),
        (_e("Similarity"), st.builds(embedder_pb2.SimilarityRequest, model=ref,
            pairs=st.lists(st.builds(embedder_pb2.WordPair, first=ANY_TEXT, second=ANY_TEXT), max_size=3))),
        (_e("DoesntMatch"), st.builds(embedder_pb2.DoesntMatchRequest, model=ref, words=words)),
        *((method, _with_real_model(any_request(method), W2V)) for method in map(_e, ("Embed", "MostSimilar"))),
    )  # fmt: skip


def _w2v_graphs(model: str) -> tuple[Graph, Graph]:
    lookup = Graph(f"{model}.lookup", (GraphInput("ids", "INT64", ("batch",)),), {"ids": (0, 1000)})
    neighbours = Graph(
        f"{model}.neighbours",
        (
            GraphInput("queries", "FP32", ("batch", 100)),
            GraphInput("exclude", "INT64", ("batch", "exclude")),
            GraphInput("limit", "INT64", ("batch",)),
        ),
        {"exclude": (-1, 1000), "limit": (1, 1000)},
    )
    return lookup, neighbours


LOOKUP, NEIGHBOURS = _w2v_graphs(W2V)
CASE = ServiceCase(
    family="embedder",
    repository_fixture="word2vec_repository",
    model=W2V,
    services=(EMBEDDER_SERVICE,),
    infer=kserve_infer(f"{W2V}.lookup", "ids", np.array([0, 3, 5], "<i8"), "INT64"),
    good=(
        (_e("Embed"), embedder_pb2.EmbedRequest(model=_w2v(), words=["the", "of", "zzqxj-not-a-word"])),
        (_e("MostSimilar"), embedder_pb2.MostSimilarRequest(model=_w2v(), positive=["the"], top_k=5)),
        (
            _e("Similarity"),
            embedder_pb2.SimilarityRequest(model=_w2v(), pairs=[embedder_pb2.WordPair(first="the", second="of")]),
        ),
    ),
    bad=(
        *embedder_bad(),
        *kserve_bad(
            LOOKUP,
            {"batch": 1},
            [
                ("id 10**9", {"ids": [10**9]}, RANGE),
                ("id -1", {"ids": [-1]}, RANGE),
                ("257 rows", {"batch": 257}, "256"),
            ],
        ),
        *kserve_bad(
            NEIGHBOURS,
            {"batch": 1, "exclude": 8},
            [
                ("exclude 10**9", {"exclude": np.full((1, 8), 10**9)}, "its values must lie in [-1, "),
                ("exclude 1,025 wide", {"exclude": 1025}, "axis 'exclude' is 1025 long"),
                ("limit -1", {"limit": [-1]}, RANGE),
            ],
        ),
    ),
    fuzz=embedder_fuzz(),
    graphs=(LOOKUP, NEIGHBOURS, *_w2v_graphs("word2vec-cbow-hs")),
)


def workload() -> list[Request]:
    """The soak's well-formed requests: the family's own API, KServe, Models, health."""
    model = common_pb2.ModelRef(name="word2vec-skipgram")
    lookup = pb.ModelInferRequest(
        model_name="word2vec-skipgram.lookup",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="ids", datatype="INT64", shape=[4])],
        raw_input_contents=[np.array([0, 3, 5, 9], "<i8").tobytes()],
    )
    pair = embedder_pb2.WordPair(first="the", second="of")
    similar = embedder_pb2.MostSimilarRequest(model=model, positive=["the"], top_k=10)
    return rpcs.soak_requests(
        "word2vec-skipgram",
        ("/myelin_api.v1.Embedder/Embed", embedder_pb2.EmbedRequest(model=model, words=["the", "of", "and"])),
        ("/myelin_api.v1.Embedder/MostSimilar", similar),
        ("/myelin_api.v1.Embedder/Similarity", embedder_pb2.SimilarityRequest(model=model, pairs=[pair])),
        ("/inference.GRPCInferenceService/ModelInfer", lookup),
    )


def smoke(client: Client, data_dir: Path) -> str:
    """Frequent words of any English corpus: known, unit vectors, a word its own nearest match. The
    compose model learns from WikiText-2's validation text only, so no quality is asked of it."""
    words = ["the", "of", "city", "year"]
    result = client.embed(words)
    if result.unknown:
        raise SystemExit(f"{result.model}: unknown words {result.unknown}")
    norms = [float(np.linalg.norm(v.vector)) for v in result if v.vector is not None]
    if any(abs(n - 1.0) > 1e-3 for n in norms):
        raise SystemExit(f"{result.model}: vectors should be unit length, got norms {norms}")
    same = client.similarity([("city", "city")]).pairs[0].similarity
    if same is None or abs(same - 1.0) > 1e-3:
        raise SystemExit(f"{result.model}: similarity(city, city) is {same}, not 1")
    neighbours = client.most_similar("city", top_k=5)
    answer = client.analogy("year", "years", "city").word
    near = ", ".join(neighbours.words)
    return f"{result.model} v{result.version} dim {result.dim}, near 'city': {near}; year : years :: city : {answer}"
