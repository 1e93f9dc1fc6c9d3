"""The families in the reliability suite: one `ServiceCase` each (see tests/myelin_rpcs.py).

A family that lands joins the whole suite (bad input, properties, auth sweep, soak) with its entry
in CASES here and its workload in scripts/soak.py; docs/reliability.md says what an entry holds.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
from google.protobuf.message import Message
from hypothesis import strategies as st

from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.v1 import classifier_pb2, common_pb2, embedder_pb2, generator_pb2, translator_pb2
from myelin_rpcs import (
    ANY_TEXT,
    INVALID,
    MESSAGE_LIMIT,
    NOT_FOUND,
    OK,
    TOO_BIG,
    UNDECODABLE,
    Bad,
    Graph,
    GraphInput,
    ServiceCase,
    Tensor,
    any_request,
    invalid_names,
    model_names,
    shared_fuzz,
)

# The classifier family.


def png(width: int, height: int, *, body: bytes | None = None) -> bytes:
    """A greyscale PNG of the declared size; `body` replaces the pixel data (a bomb declares a lot, sends little)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = body if body is not None else zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _classify(*images: classifier_pb2.Image, model: str = "mnist-cnn", **fields: Any) -> classifier_pb2.ClassifyRequest:
    return classifier_pb2.ClassifyRequest(model=common_pb2.ModelRef(name=model), images=list(images), **fields)


def _raw(
    data: bytes, dtype: int = common_pb2.DATA_TYPE_UINT8, height: int = 28, width: int = 28
) -> classifier_pb2.Image:
    return classifier_pb2.Image(raw=classifier_pb2.RawImage(height=height, width=width, dtype=dtype, data=data))


def _floats(*values: float) -> bytes:
    pixels = np.zeros(784, "<f4")
    pixels[: len(values)] = values
    return pixels.tobytes()


CLASSIFY = "/myelin_api.v1.Classifier/Classify"
BIG_PNG = png(4096, 4096)
ZEROS = _raw(bytes(784))


def classifier_bad() -> tuple[Bad, ...]:
    f32 = common_pb2.DATA_TYPE_FLOAT32
    bad = [
        Bad("no images", CLASSIFY, _classify(), INVALID, "images is empty"),
        Bad("unset image", CLASSIFY, _classify(classifier_pb2.Image()), INVALID, "images[0] is empty"),
        Bad(
            "empty encoded",
            CLASSIFY,
            _classify(classifier_pb2.Image(encoded=b"")),
            INVALID,
            "images[0].encoded is empty",
        ),
        Bad(
            "not an image",
            CLASSIFY,
            _classify(classifier_pb2.Image(encoded=b"GIF89a" + bytes(40))),
            INVALID,
            "is not a PNG or JPEG",
        ),
        Bad(
            "truncated png",
            CLASSIFY,
            _classify(classifier_pb2.Image(encoded=png(28, 28)[:-20])),
            INVALID,
            "could not be decoded",
        ),
        Bad(
            "png bomb",
            CLASSIFY,
            _classify(classifier_pb2.Image(encoded=png(100_000, 100_000, body=b""))),
            INVALID,
            "too many pixels to decode safely",
        ),
        Bad(
            "png side over 4096",
            CLASSIFY,
            _classify(classifier_pb2.Image(encoded=png(5000, 20, body=b""))),
            INVALID,
            "at most 4096 pixels a side",
        ),
        Bad(
            "pixel budget",
            CLASSIFY,
            # Two real 4096x4096 images fill the budget; the third is refused before it is decoded.
            _classify(*[classifier_pb2.Image(encoded=BIG_PNG)] * 2, classifier_pb2.Image(encoded=png(1, 1, body=b""))),
            INVALID,
            "decoded pixels in total",
        ),
        Bad("raw short", CLASSIFY, _classify(_raw(bytes(783))), INVALID, "needs 784 bytes, got 783"),
        Bad(
            "raw wrong size", CLASSIFY, _classify(_raw(bytes(16), height=4, width=4)), INVALID, "this model takes 28x28"
        ),
        Bad(
            "raw huge size",
            CLASSIFY,
            _classify(_raw(b"", height=2**32 - 1, width=2**32 - 1)),
            INVALID,
            "this model takes 28x28",
        ),
        Bad("raw dtype unset", CLASSIFY, _classify(_raw(bytes(784), dtype=0)), INVALID, "dtype must be"),
        Bad("raw dtype unknown", CLASSIFY, _classify(_raw(bytes(784), dtype=77)), INVALID, "dtype must be"),
        Bad("NaN pixel", CLASSIFY, _classify(_raw(_floats(float("nan")), f32)), INVALID, "NaN or infinite"),
        Bad("inf pixel", CLASSIFY, _classify(_raw(_floats(float("inf")), f32)), INVALID, "NaN or infinite"),
        Bad("-inf pixel", CLASSIFY, _classify(_raw(_floats(float("-inf")), f32)), INVALID, "NaN or infinite"),
        Bad("negative pixel", CLASSIFY, _classify(_raw(_floats(-0.5), f32)), INVALID, "must lie in [0, 1]"),
        Bad("pixel above 1", CLASSIFY, _classify(_raw(_floats(1e30), f32)), INVALID, "must lie in [0, 1]"),
        Bad("top_k negative", CLASSIFY, _classify(ZEROS, top_k=-1), INVALID, "top_k must be between 1 and 10"),
        Bad("top_k 11", CLASSIFY, _classify(ZEROS, top_k=11), INVALID, "top_k must be between 1 and 10"),
        Bad("top_k 2**31-1", CLASSIFY, _classify(ZEROS, top_k=2**31 - 1), INVALID, "top_k must be between 1 and 10"),
        Bad("257 images", CLASSIFY, _classify(*[ZEROS] * 257), INVALID, "the limit is 256"),
        Bad(
            "unknown model", CLASSIFY, _classify(ZEROS, model="mnist-gpt"), NOT_FOUND, "this classifier service serves"
        ),
        Bad("no model", CLASSIFY, _classify(ZEROS, model=""), INVALID, "model.name is required"),
        Bad(
            "negative version",
            CLASSIFY,
            classifier_pb2.ClassifyRequest(model=common_pb2.ModelRef(name="mnist-cnn", version=-2), images=[ZEROS]),
            INVALID,
            "model.version must be 0",
        ),
        Bad(
            "over the size limit",
            CLASSIFY,
            _classify(classifier_pb2.Image(encoded=bytes(MESSAGE_LIMIT + 1))),
            TOO_BIG,
            "larger than max",
        ),
        Bad("undecodable", CLASSIFY, UNDECODABLE, INVALID, "not a valid message"),
        Bad("bad UTF-8 in the name", CLASSIFY, b"\x0a\x03\x0a\x01\xff", INVALID, "not a valid message"),
    ]
    bad += [
        Bad(f"{case_id}", CLASSIFY, _classify(ZEROS, model=name), INVALID, "not a valid model name")
        for case_id, name in invalid_names("mnist-cnn")
    ]
    return tuple(bad)


def classify_requests() -> st.SearchStrategy[Message]:
    """Classify requests with images of every kind: raw of any size and dtype, PNGs, random bytes."""
    raw = st.builds(
        lambda h, w, dtype, data: _raw(data, dtype, h, w),
        st.one_of(st.just(28), st.integers(0, 2**32 - 1)),
        st.one_of(st.just(28), st.integers(0, 2**32 - 1)),
        st.sampled_from([0, common_pb2.DATA_TYPE_UINT8, common_pb2.DATA_TYPE_FLOAT32, 99]),
        st.one_of(
            st.binary(min_size=784, max_size=784), st.binary(min_size=3136, max_size=3136), st.binary(max_size=64)
        ),
    )
    encoded = st.one_of(
        st.binary(max_size=512).map(lambda data: classifier_pb2.Image(encoded=data)),
        st.builds(lambda w, h: classifier_pb2.Image(encoded=png(w, h)), st.integers(1, 64), st.integers(1, 64)),
        st.builds(
            lambda w, h: classifier_pb2.Image(encoded=png(w, h, body=b"")),
            st.integers(0, 2**31 - 1),
            st.integers(0, 2**31 - 1),
        ),
    )
    images = st.lists(st.one_of(raw, encoded, st.just(classifier_pb2.Image())), max_size=4)
    return st.builds(
        lambda name, version, imgs, k: classifier_pb2.ClassifyRequest(
            model=common_pb2.ModelRef(name=name, version=version), images=imgs, top_k=k
        ),
        model_names("mnist-cnn"),
        st.one_of(st.just(0), st.integers(-(2**63), 2**63 - 1)),
        images,
        st.one_of(st.integers(0, 10), st.integers(-(2**31), 2**31 - 1)),
    )


def _kserve_infer(model: str, name: str, array: np.ndarray, datatype: str) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[Tensor(name=name, datatype=datatype, shape=list(array.shape))],
        raw_input_contents=[np.ascontiguousarray(array).tobytes()],
    )


INFER = "/inference.GRPCInferenceService/ModelInfer"
RANGE = "its values must lie in [0, "


def graph_request(graph: Graph, lengths: dict[str, int], **arrays: Any) -> pb.ModelInferRequest:
    """A raw ModelInfer for `graph`: each input zeros at the given axis lengths, unless given."""
    request = pb.ModelInferRequest(model_name=graph.endpoint)
    for spec in graph.inputs:
        dtype = {"INT64": "<i8", "BOOL": "?", "FP32": "<f4"}[spec.datatype]
        shape = tuple(lengths[a] if isinstance(a, str) else a for a in spec.axes)
        array = np.asarray(arrays.get(spec.name, np.zeros(shape)), dtype=dtype)
        request.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return request


def kserve_bad(graph: Graph, lengths: dict[str, int], cases: list[tuple[str, dict[str, Any], str]]) -> list[Bad]:
    """ModelInfer cases for one graph: (id, axis lengths (ints) and input values that differ, message fragment)."""
    bad = []
    for case_id, changes, message in cases:
        axes = {k: v for k, v in changes.items() if k in lengths and isinstance(v, int)}  # else an input's values
        arrays = {k: v for k, v in changes.items() if k not in axes}
        request = graph_request(graph, {**lengths, **axes}, **arrays)
        bad.append(Bad(f"ModelInfer {graph.endpoint} {case_id}", INFER, request, INVALID, message))
    return bad


CLASSIFIER_GRAPHS = tuple(
    Graph(model, (GraphInput("image", "FP32", ("batch", 28, 28)),)) for model in ("mnist-cnn", "mnist-mlp")
)
CLASSIFIER = ServiceCase(
    family="classifier",
    repository_fixture="classifier_repository",
    model="mnist-cnn",
    services=("myelin_api.v1.Classifier",),
    infer=_kserve_infer("mnist-cnn", "image", np.zeros((1, 28, 28), "<f4"), "FP32"),
    good=(
        (CLASSIFY, _classify(ZEROS, top_k=3)),
        (CLASSIFY, _classify(classifier_pb2.Image(encoded=png(28, 28)), ZEROS, model="mnist-mlp")),
    ),
    bad=(
        *classifier_bad(),
        *kserve_bad(
            CLASSIFIER_GRAPHS[0],
            {"batch": 1},
            [("257 rows", {"batch": 257}, "the limit is 256"), ("no rows", {"batch": 0}, "is empty")],
        ),
    ),
    fuzz=((CLASSIFY, classify_requests()),),
    graphs=CLASSIFIER_GRAPHS,
)

# The embedder family (word2vec): Embed, MostSimilar, Analogy, Similarity, DoesntMatch.

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
EMBEDDER = ServiceCase(
    family="embedder",
    repository_fixture="word2vec_repository",
    model=W2V,
    services=(EMBEDDER_SERVICE,),
    infer=_kserve_infer(f"{W2V}.lookup", "ids", np.array([0, 3, 5], "<i8"), "INT64"),
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

# The translator family: Translate.

TRANSLATE = "/myelin_api.v1.Translator/Translate"
TRANSLATOR_MODEL = "translator-tatoeba"


def _translate(*sentences: str, **fields: Any) -> translator_pb2.TranslateRequest:
    model = common_pb2.ModelRef(name=fields.pop("model", TRANSLATOR_MODEL))
    return translator_pb2.TranslateRequest(model=model, sentences=list(sentences), **fields)


def translator_bad() -> tuple[Bad, ...]:
    nan, inf = float("nan"), float("inf")
    bad = [
        Bad("no sentences", TRANSLATE, _translate(), INVALID, "sentences is empty"),
        Bad("empty sentence", TRANSLATE, _translate(""), INVALID, "sentences[0] is empty"),
        Bad("10,000 sentences", TRANSLATE, _translate(*["hi"] * 10_000), INVALID, "the limit is"),
        Bad("huge sentence", TRANSLATE, _translate("word " * 50_000), INVALID, "subword tokens long"),
        Bad("beam_size 0", TRANSLATE, _translate("hello", beam_size=0), INVALID, "beam_size must be between 1"),
        Bad("beam_size -1", TRANSLATE, _translate("hello", beam_size=-1), INVALID, "beam_size must be between 1"),
        Bad("beam_size 2**31-1", TRANSLATE, _translate("hello", beam_size=2**31 - 1), INVALID, "beam_size must be"),
        Bad("max_length 0", TRANSLATE, _translate("hello", max_length=0), INVALID, "max_length must be between 1"),
        Bad("max_length 2**31-1", TRANSLATE, _translate("hello", max_length=2**31 - 1), INVALID, "max_length must"),
        Bad("length_penalty NaN", TRANSLATE, _translate("hello", length_penalty=nan), INVALID, "length_penalty must"),
        Bad("length_penalty inf", TRANSLATE, _translate("hello", length_penalty=inf), INVALID, "length_penalty must"),
        Bad("length_penalty -1", TRANSLATE, _translate("hello", length_penalty=-1.0), INVALID, "length_penalty must"),
        Bad("unknown model", TRANSLATE, _translate("hello", model="mnist-cnn"), NOT_FOUND, "translator service serves"),
        Bad("undecodable", TRANSLATE, UNDECODABLE, INVALID, "not a valid message"),
        Bad("over the size limit", TRANSLATE, _translate("a" * MESSAGE_LIMIT), TOO_BIG, "larger than max"),
    ]
    bad += [Bad(f"{case_id}", TRANSLATE, _translate("hello", model=name), INVALID, "not a valid model name")
            for case_id, name in invalid_names(TRANSLATOR_MODEL)]  # fmt: skip
    return tuple(bad)


def translate_requests() -> st.SearchStrategy[Message]:
    ints = st.one_of(st.none(), st.integers(-2, 6), st.integers(-(2**31), 2**31 - 1))
    floats = st.one_of(st.none(), st.floats(width=32))

    def build(sentences: list[str], beam: int | None, length: int | None, penalty: float | None, cut: bool) -> Any:
        fields = {
            k: v for k, v in (("beam_size", beam), ("max_length", length), ("length_penalty", penalty)) if v is not None
        }
        return _translate(*sentences, truncate=cut, **fields)

    sentences = st.lists(st.one_of(st.sampled_from(["hello", "I am here.", "Tom"]), ANY_TEXT), max_size=3)
    return st.builds(build, sentences, ints, ints, floats, st.booleans())


ENCODER = Graph(
    f"{TRANSLATOR_MODEL}.encoder",
    (GraphInput("source_ids", "INT64", ("batch", "source")), GraphInput("source_mask", "BOOL", ("batch", "source"))),
    {"source_ids": (0, 300)},
)
_CACHE_AXES: tuple[str | int, ...] = ("batch", 1, 4, "past", 8)  # the dry-run translator: 1 layer, 4 heads of 8
DECODER = Graph(
    f"{TRANSLATOR_MODEL}.decoder",
    (
        GraphInput("input_ids", "INT64", ("batch", "new")),
        GraphInput("position_ids", "INT64", ("batch", "new")),
        GraphInput("past_keys", "FP32", _CACHE_AXES),
        GraphInput("past_values", "FP32", _CACHE_AXES),
        GraphInput("past_mask", "BOOL", ("batch", "past")),
        GraphInput("cross_keys", "FP32", ("batch", 1, 4, "source", 8)),
        GraphInput("cross_values", "FP32", ("batch", 1, 4, "source", 8)),
        GraphInput("source_mask", "BOOL", ("batch", "source")),
    ),
    {"input_ids": (0, 300), "position_ids": (0, 100)},
)
TRANSLATOR = ServiceCase(
    family="translator",
    repository_fixture="translator_repository",
    model=TRANSLATOR_MODEL,
    services=("myelin_api.v1.Translator",),
    infer=pb.ModelInferRequest(
        model_name=f"{TRANSLATOR_MODEL}.encoder",
        inputs=[
            Tensor(name="source_ids", datatype="INT64", shape=[1, 3]),
            Tensor(name="source_mask", datatype="BOOL", shape=[1, 3]),
        ],
        raw_input_contents=[np.array([[1, 5, 2]], "<i8").tobytes(), np.ones((1, 3), "?").tobytes()],
    ),
    good=((TRANSLATE, _translate("I am here.", max_length=8)),),
    bad=(
        *translator_bad(),
        *kserve_bad(
            ENCODER,
            {"batch": 1, "source": 3},
            [
                ("token 10**9", {"source_ids": np.full((1, 3), 10**9)}, RANGE),
                ("token -1", {"source_ids": np.full((1, 3), -1)}, RANGE),
                ("200 tokens", {"source": 200}, "axis 'source' is 200 long; this graph takes 1 to"),
                ("no tokens", {"source": 0}, "axis 'source' is 0 long"),
                ("257 rows", {"batch": 257}, "the limit is 256"),
            ],
        ),
        *kserve_bad(
            DECODER,
            {"batch": 1, "new": 1, "past": 0, "source": 3},
            [
                ("position 10**6", {"position_ids": [[10**6]]}, RANGE),
                ("token 10**9", {"input_ids": [[10**9]]}, RANGE),
                ("past 1,000 long", {"past": 1000}, "axis 'past' is 1000 long"),
                ("no new token", {"new": 0}, "axis 'new' is 0 long"),
                ("257 rows", {"batch": 257}, "the limit is 256"),
                ("rows disagree", {"source_mask": np.ones((2, 3))}, "inputs must agree on it"),
            ],
        ),
    ),
    fuzz=((TRANSLATE, translate_requests()),),
    graphs=(ENCODER, DECODER),
)

# The generator family: Generate (server streaming) and Complete.

GENERATE = "/myelin_api.v1.Generator/Generate"
COMPLETE = "/myelin_api.v1.Generator/Complete"
SCORE = "/myelin_api.v1.Generator/Score"
GENERATOR_MODEL = "generator-gpt-shakespeare"


def _generate(prompt: str = "ROMEO:", **fields: Any) -> generator_pb2.GenerateRequest:
    model = common_pb2.ModelRef(name=fields.pop("model", GENERATOR_MODEL))
    return generator_pb2.GenerateRequest(model=model, prompt=prompt, **fields)


def generator_bad() -> tuple[Bad, ...]:
    nan, inf = float("nan"), float("inf")
    cases = [
        ("max_new_tokens over the context", _generate(max_new_tokens=2**31), "exceed the context"),
        ("huge prompt", _generate("a" * 100_000), "this model takes at most"),
        ("characters outside the vocabulary", _generate("ROMEO: \u2603\U0001f600"), "vocabulary lacks"),
        ("temperature NaN", _generate(temperature=nan), "temperature must be between"),
        ("temperature inf", _generate(temperature=inf), "temperature must be between"),
        ("temperature -1", _generate(temperature=-1.0), "temperature must be between"),
        ("temperature 1e30", _generate(temperature=1e30), "temperature must be between"),
        ("top_k 2**31", _generate(top_k=2**31), "top_k must be between"),
        ("top_p 0", _generate(top_p=0.0), "top_p must be in"),
        ("top_p NaN", _generate(top_p=nan), "top_p must be in"),
        ("top_p 2", _generate(top_p=2.0), "top_p must be in"),
        ("repetition_penalty 0", _generate(repetition_penalty=0.0), "repetition_penalty must be in"),
        ("repetition_penalty inf", _generate(repetition_penalty=inf), "repetition_penalty must be in"),
        ("1,000 stop sequences", _generate(stop=["x"] * 1000), "stop sequences; at most"),
        ("empty stop sequence", _generate(stop=[""]), "stop[0] must be 1 to"),
        ("huge stop sequence", _generate(stop=["x" * 10_000]), "stop[0] must be 1 to"),
    ]
    bad = []
    for method in (GENERATE, COMPLETE):
        kind = method.rsplit("/", 1)[1]
        bad += [Bad(f"{kind} {case_id}", method, request, INVALID, message) for case_id, request, message in cases]
        bad += [
            Bad(f"{kind} unknown model", method, _generate(model="mnist-cnn"), NOT_FOUND, "mnist-cnn"),
            Bad(f"{kind} undecodable", method, UNDECODABLE, INVALID, "not a valid message"),
            Bad(f"{kind} over the size limit", method, _generate("a" * MESSAGE_LIMIT), TOO_BIG, "larger than max"),
        ]
        bad += [Bad(f"{kind} {case_id}", method, _generate(model=name), INVALID, "not a valid model name")
                for case_id, name in invalid_names(GENERATOR_MODEL)]  # fmt: skip
    bad += [
        Bad("Score empty", SCORE, _score(""), INVALID, "scoring takes 2 tokens"),
        Bad("Score one token", SCORE, _score("R"), INVALID, "scoring takes 2 tokens"),
        Bad("Score over the context", SCORE, _score("a" * 200), INVALID, "split it into windows"),
        Bad("Score huge", SCORE, _score("a" * 500_000), INVALID, "500,000 characters"),
        Bad("Score unknown model", SCORE, _score(model="mnist-cnn"), NOT_FOUND, "mnist-cnn"),
        Bad("Score undecodable", SCORE, UNDECODABLE, INVALID, "not a valid message"),
        Bad("Score over the size limit", SCORE, _score("a" * MESSAGE_LIMIT), TOO_BIG, "larger than max"),
    ]
    return tuple(bad)


def _score(text: str = "ROMEO: hello", **fields: Any) -> generator_pb2.ScoreRequest:
    model = common_pb2.ModelRef(name=fields.pop("model", GENERATOR_MODEL))
    return generator_pb2.ScoreRequest(model=model, text=text)


def generate_requests() -> st.SearchStrategy[Message]:
    floats = st.one_of(st.none(), st.floats(width=32))
    uints = st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1))

    def build(
        prompt: str, new: int, temperature: float | None, top_k: int, top_p: float | None, penalty: float | None,
        seed: int | None, stop: list[str],
    ) -> Any:  # fmt: skip
        fields = {
            k: v
            for k, v in (
                ("temperature", temperature),
                ("top_p", top_p),
                ("repetition_penalty", penalty),
                ("seed", seed),
            )
            if v is not None
        }
        return _generate(prompt, max_new_tokens=new, top_k=top_k, stop=stop, **fields)

    prompts = st.one_of(st.sampled_from(["ROMEO:", "", "KING:\n"]), ANY_TEXT)
    seeds = st.one_of(st.none(), st.integers(0, 2**64 - 1))
    stops = st.lists(st.one_of(st.sampled_from(["\n", "the"]), ANY_TEXT), max_size=3)
    return st.builds(build, prompts, uints, floats, uints, floats, floats, seeds, stops)


# the dry-run GPT: 2 layers, 2 heads of 16; an empty cache of keys (B, H, D, S) and values (B, H, S, D)
_CACHE = {"key": np.zeros((1, 2, 16, 0), np.float32), "value": np.zeros((1, 2, 0, 16), np.float32)}
GPT_STEP = Graph(
    f"{GENERATOR_MODEL}.step",
    (
        GraphInput("input_ids", "INT64", ("batch", "sequence")),
        GraphInput("padding", "INT64", ("batch",)),
        GraphInput("length", "INT64", ()),
        *(
            GraphInput(
                f"past.{layer}.{kind}",
                "FP32",
                ("batch", 2, 16, "slots") if kind == "key" else ("batch", 2, "slots", 16),
            )
            for layer in range(2)
            for kind in ("key", "value")
        ),
    ),
    {"input_ids": (0, 50), "padding": (0, 0), "length": (0, 0)},
)
GRU_STEP = Graph(
    "generator-gru-shakespeare.step",
    (GraphInput("input_ids", "INT64", ("batch", "sequence")), GraphInput("state", "FP32", (1, "batch", 32))),
    {"input_ids": (0, 50)},
)
GENERATOR = ServiceCase(
    family="generator",
    repository_fixture="generator_repository",
    model=GENERATOR_MODEL,
    services=("myelin_api.v1.Generator",),
    infer=pb.ModelInferRequest(
        model_name=f"{GENERATOR_MODEL}.step",
        inputs=[
            Tensor(name="input_ids", datatype="INT64", shape=[1, 2]),
            Tensor(name="padding", datatype="INT64", shape=[1]),
            Tensor(name="length", datatype="INT64", shape=[]),
            *(
                Tensor(name=f"past.{layer}.{kind}", datatype="FP32", shape=list(_CACHE[kind].shape))
                for layer in range(2)
                for kind in ("key", "value")
            ),
        ],
        raw_input_contents=[
            np.array([[3, 5]], "<i8").tobytes(),
            np.zeros(1, "<i8").tobytes(),
            np.zeros((), "<i8").tobytes(),
            *(_CACHE[kind].tobytes() for _ in range(2) for kind in ("key", "value")),
        ],
    ),
    good=(
        (COMPLETE, _generate(max_new_tokens=8, seed=1)),
        (GENERATE, _generate(max_new_tokens=8, seed=2, temperature=0.8, top_k=5, top_p=0.9, stop=["\n\n"])),
        (SCORE, _score()),
    ),
    bad=(
        *generator_bad(),
        *kserve_bad(
            GPT_STEP,
            {"batch": 1, "sequence": 1, "slots": 0},
            [
                ("token 10**9", {"input_ids": [[10**9]]}, RANGE),
                ("token -1", {"input_ids": [[-1]]}, RANGE),
                ("length -5", {"length": -5}, RANGE),
                ("length past the cache", {"length": 5}, "the cache has 0 slots"),
                ("past the position table", {"length": 127, "slots": 127, "sequence": 2}, "positions end at 127"),
                ("padding past the inputs", {"padding": [7]}, "padding must leave the last input real"),
                ("no tokens", {"sequence": 0}, "axis 'sequence' is 0 long"),
                ("rows disagree", {"past.0.key": np.zeros((2, 2, 16, 0))}, "inputs must agree on it"),
                ("257 rows", {"batch": 257}, "the limit is 256"),
            ],
        ),
        *kserve_bad(
            GRU_STEP,
            {"batch": 1, "sequence": 1},
            [("token 10**9", {"input_ids": [[10**9]]}, RANGE), ("no tokens", {"sequence": 0}, "is 0 long")],
        ),
    ),
    fuzz=((GENERATE, generate_requests()), (COMPLETE, generate_requests())),
    graphs=(GPT_STEP, GRU_STEP),
)

# One entry per family.
CASES: dict[str, ServiceCase] = {case.family: case for case in (CLASSIFIER, TRANSLATOR, GENERATOR, EMBEDDER)}


def bad_inputs(cases: Iterable[ServiceCase] = CASES.values()) -> list[tuple[str, Bad]]:
    return [(case.family, bad) for case in cases for bad in case.all_bad()]


def fuzz_targets(cases: Iterable[ServiceCase] = CASES.values()) -> list[tuple[str, str, st.SearchStrategy[Message]]]:
    return [(case.family, method, strategy) for case in cases for method, strategy in (*case.fuzz, *shared_fuzz(case))]
