"""The translator family: Translate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import Message
from hypothesis import strategies as st

from harness import rpcs
from harness.codes import INVALID, MESSAGE_LIMIT, NOT_FOUND, TOO_BIG, UNDECODABLE
from harness.rpcs import RANGE, Bad, Graph, GraphInput, Request, ServiceCase, invalid_names
from harness.strategies import ANY_TEXT
from myelin_api.v1 import common_pb2, translator_pb2
from myelin_client import Client

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
CASE = ServiceCase(
    family="translator",
    repository_fixture="translator_repository",
    model=TRANSLATOR_MODEL,
    services=("myelin_api.v1.Translator",),
    infer=rpcs.graph_request(ENCODER, {"batch": 1, "source": 3}, source_ids=[[1, 5, 2]], source_mask=np.ones((1, 3))),
    good=((TRANSLATE, _translate("I am here.", max_length=8)),),
    bad=(
        *translator_bad(),
        *rpcs.kserve_bad(
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
        *rpcs.kserve_bad(
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


def workload() -> list[Request]:
    """The soak's well-formed requests: the family's own API, KServe, Models, health."""
    model = common_pb2.ModelRef(name="translator-tatoeba")
    request = translator_pb2.TranslateRequest(model=model, sentences=["I am here."])
    return rpcs.soak_requests(model.name, ("/myelin_api.v1.Translator/Translate", request))


def smoke(client: Client, data_dir: Path) -> str:
    # The export translated a handful of sentences greedily with the PyTorch model (float32) and
    # recorded them in the manifest: the served graphs must give the same words, whatever the config.
    model = "translator-tatoeba"
    examples = json.loads(client.get_model(model).manifest_json)["examples"]
    sources = [e["source"] for e in examples]
    greedy = client.translate(sources, model=model, beam_size=1)
    if greedy.texts != [e["translation"] for e in examples]:
        raise SystemExit(
            f"{model}: greedy {greedy.texts} differ from the export's {[e['translation'] for e in examples]}"
        )
    beam = client.translate(sources, model=model, beam_size=4)
    if any(not t.text for t in beam):
        raise SystemExit(f"{model}: beam 4 gave an empty translation: {beam.texts}")
    first = f"{sources[0]!r} -> {beam.texts[0]!r}"
    return f"{model} v{greedy.version}: greedy matches the export's {len(examples)} examples; beam 4 {first}"
