"""The generator family: Generate (server streaming), Complete and Score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import Message
from hypothesis import strategies as st

from harness import rpcs
from harness.codes import INVALID, MESSAGE_LIMIT, NOT_FOUND, TOO_BIG, UNDECODABLE
from harness.rpcs import RANGE, Bad, Graph, GraphInput, Request, ServiceCase, invalid_names
from harness.strategies import ANY_TEXT
from myelin_api.v1 import common_pb2, generator_pb2
from myelin_client import Client

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
CASE = ServiceCase(
    family="generator",
    repository_fixture="generator_repository",
    model=GENERATOR_MODEL,
    services=("myelin_api.v1.Generator",),
    infer=rpcs.graph_request(GPT_STEP, {"batch": 1, "sequence": 2, "slots": 0}, input_ids=[[3, 5]]),
    good=(
        (COMPLETE, _generate(max_new_tokens=8, seed=1)),
        (GENERATE, _generate(max_new_tokens=8, seed=2, temperature=0.8, top_k=5, top_p=0.9, stop=["\n\n"])),
        (SCORE, _score()),
    ),
    bad=(
        *generator_bad(),
        *rpcs.kserve_bad(
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
        *rpcs.kserve_bad(
            GRU_STEP,
            {"batch": 1, "sequence": 1},
            [("token 10**9", {"input_ids": [[10**9]]}, RANGE), ("no tokens", {"sequence": 0}, "is 0 long")],
        ),
    ),
    fuzz=((GENERATE, generate_requests()), (COMPLETE, generate_requests())),
    graphs=(GPT_STEP, GRU_STEP),
)


def workload() -> list[Request]:
    """The soak's well-formed requests: the family's own API, KServe, Models, health."""
    model = common_pb2.ModelRef(name="generator-gpt-shakespeare")
    request = generator_pb2.GenerateRequest(model=model, prompt="ROMEO:", max_new_tokens=16, temperature=0.8, seed=3)
    return rpcs.soak_requests(model.name, ("/myelin_api.v1.Generator/Complete", request))


def smoke(client: Client, data_dir: Path) -> str:
    """Every generator model: a seeded stream, and Complete with the same seed giving the same text."""
    text = []
    for model in [m.name for m in client.list_models() if m.family == "generator"]:
        options = {"model": model, "max_new_tokens": 64, "temperature": 0.8, "seed": 7}
        with client.generate("ROMEO:", **options) as stream:
            streamed = "".join(chunk.text for chunk in stream)
        result = client.complete("ROMEO:", **options)
        if result.generated_tokens != 64 or result.finish_reason != "length" or result.text != streamed:
            raise SystemExit(
                f"{model}: {result.generated_tokens} tokens ({result.finish_reason}); the stream and Complete "
                f"with the same seed must give the same 64 tokens: {streamed!r} vs {result.text!r}"
            )
        text.append(f"{model} v{result.version} streamed 64 tokens, Complete the same ({result.text[:24]!r}...)")
    return ", ".join(text)
