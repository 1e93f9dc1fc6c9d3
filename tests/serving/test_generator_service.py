"""The generator service on a real server (port 0) through the real SDK."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry
from tokenizers import Tokenizer

from harness.servers import ENDLESS_TOKENS, LONG_GENERATION, ServerThread, settings_for
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as kserve_pb
from myelin_api.kserve.v2 import grpc_predict_v2_pb2_grpc as kserve_grpc
from myelin_api.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from myelin_client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    InvalidArgumentError,
    MyelinError,
    NotFoundError,
    ResourceExhaustedError,
)
from myelin_client.cli import main as cli_main
from myelin_serving.generator.sampling import Sampler, SamplingParams
from myelin_training.generator.reexport import main as reexport_main

GPT, GRU = "generator-gpt-shakespeare", "generator-gru-shakespeare"


@pytest.fixture(scope="module")
def client(generator_server: ServerThread) -> Iterator[Client]:
    with Client(generator_server.target, timeout=30) as c:
        yield c


def sample(server: ServerThread, name: str, model: str, **labels: str) -> float:
    return server.registry.get_sample_value(name, {"model": model, **labels}) or 0.0


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


@pytest.mark.parametrize("model", [GPT, GRU])
def test_stream_arrives_in_order_and_matches_complete(client: Client, model: str) -> None:
    options = dict(model=model, max_new_tokens=40, temperature=0.9, seed=11)
    with client.generate("ROMEO:", **options) as stream:
        chunks = list(stream)
    done = stream.completion
    assert done is not None and done.finish_reason == "length"
    assert (done.model, done.version) == (model, 1)
    assert done.generated_tokens == 40 == len(done.token_ids) and done.prompt_tokens == len("ROMEO:")
    assert [t for c in chunks for t in c.token_ids] == done.token_ids  # tokens in the order produced
    assert "".join(c.text for c in chunks) == done.text and len(done.text) == 40  # one character per token
    whole = client.complete("ROMEO:", **options)
    assert (whole.text, whole.token_ids, whole.seed) == (done.text, done.token_ids, 11)


def test_same_seed_same_text_whatever_runs_beside_it(client: Client, generator_server: ServerThread) -> None:
    options = dict(model=GPT, max_new_tokens=30, temperature=1.0, top_k=20, top_p=0.95, seed=1234)
    alone = client.complete("First Citizen:", **options).text
    results: list[str] = []
    errors: list[BaseException] = []

    def noise(seed: int) -> None:
        try:
            client.complete("To be", model=GPT, max_new_tokens=50, seed=seed)
        except BaseException as exc:
            errors.append(exc)

    def target() -> None:
        results.append(client.complete("First Citizen:", **options).text)

    threads = [threading.Thread(target=noise, args=(s,)) for s in range(5)] + [threading.Thread(target=target)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [alone]
    other = client.complete("First Citizen:", **{**options, "seed": 4321}).text
    assert other != alone
    random_seeds = {client.complete("x", model=GPT, max_new_tokens=5).seed for _ in range(3)}
    assert len(random_seeds) == 3


def plain_decode(version_dir: Path, prompt: str, tokens: int, params: SamplingParams) -> list[int]:
    """The simplest decode loop over the step graph, outside the service: one sequence, its cache
    grown by concatenation to exactly its length, the same sampler."""
    manifest = json.loads((version_dir / "model.json").read_text())
    decoder, unk = manifest["decoder"], manifest["tokenizer"]["unk_id"]
    session = ort.InferenceSession(str(version_dir / "step.onnx"), providers=["CPUExecutionProvider"])
    ids = Tokenizer.from_file(str(version_dir / "tokenizer.json")).encode(prompt, add_special_tokens=False).ids
    sampler = Sampler(params, manifest["tokenizer"]["vocab_size"], ids, [unk])
    x, out = np.array([ids], np.int64), []
    if decoder["cache"] == "kv":
        names, axes, s = decoder["cache_inputs"], decoder["slot_axis"], decoder["cache_shape"]
        shapes = {"key": (1, s["heads"], s["head_dim"], 0), "value": (1, s["heads"], 0, s["head_dim"])}
        cache = [np.zeros(shapes[n.rsplit(".", 1)[1]], np.float32) for n in names]
        while len(out) < tokens:
            length = len(ids) + len(out) - x.shape[1]
            feeds = {"input_ids": x, "padding": np.zeros(1, np.int64), "length": np.array(length, np.int64)}
            logits, *new = session.run(None, {**feeds, **dict(zip(names, cache, strict=True))})
            cache = [
                np.concatenate([c, v], axis=axes[n.rsplit(".", 1)[1]])
                for n, c, v in zip(names, cache, new, strict=True)
            ]
            out.append(sampler(logits[0]))
            x = np.array([out[-1:]], np.int64)
    else:
        state = np.zeros((decoder["state_shape"]["layers"], 1, decoder["state_shape"]["hidden"]), np.float32)
        while len(out) < tokens:
            logits, state = session.run(None, {"input_ids": x, "state": state})
            out.append(sampler(logits[0]))
            x = np.array([out[-1:]], np.int64)
    return out


@pytest.mark.parametrize("model", [GPT, GRU])
def test_the_service_generates_what_a_plain_loop_does_with_the_same_seed(
    generator_server: ServerThread, generator_repository: Path, model: str
) -> None:
    """Through the service, while other streams share its steps (batched rows, buffers growing and
    rearranged as they join and leave), a seeded stream's tokens are the plain loop's, for plain
    temperature sampling (drawn with the other rows) and with top-k and top-p (drawn alone)."""
    cases = [SamplingParams(temperature=0.8, seed=11), SamplingParams(temperature=1.1, top_k=12, top_p=0.9, seed=12)]
    expected = [plain_decode(generator_repository / model / "1", "ROMEO:", 80, params) for params in cases]

    async def run() -> list[list[int]]:
        async with AsyncClient(generator_server.target, timeout=60) as client:

            async def tokens(prompt: str, n: int, **options: float | int) -> list[int]:
                async with client.generate(prompt, model=model, max_new_tokens=n, **options) as stream:
                    return [t async for chunk in stream for t in chunk.token_ids]

            others = [tokens("First Citizen:", 20 + 15 * i, temperature=0.9, seed=i) for i in range(4)]
            mine = [
                tokens("ROMEO:", 80, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, seed=p.seed or 0)
                for p in cases
            ]
            return (await asyncio.gather(*mine, *others))[: len(cases)]

    assert asyncio.run(run()) == expected


def export_int8(run_dir: Path, repository: Path, name: str, data_dir: Path) -> None:
    flags = {"--run-dir": run_dir, "--repository": repository, "--name": name, "--data-dir": data_dir}
    reexport_main([*(str(x) for pair in flags.items() for x in pair), "--quantize", "int8"])


def test_an_int8_version_is_what_the_service_decodes(
    generator_training: tuple[Path, Path], data_dir: Path, tmp_path: Path
) -> None:
    """`myelin-train generator-export --quantize int8`: a new version whose step graph has int8
    weights, whose manifest gives the validation loss of the float32 and of the int8 graph, and
    which the service decodes token for token as a plain onnxruntime loop over it does."""
    repository, runs = generator_training
    target = tmp_path / "repository"
    shutil.copytree(repository / GPT, target / GPT)
    export_int8(runs / "gpt", target, GPT, data_dir)
    version = target / GPT / "2"
    manifest = json.loads((version / "model.json").read_text())
    quantization = manifest["quantization"]
    losses = quantization["validation_loss"]
    assert quantization["weights"] == "int8" and quantization["validation_tokens"] > 100_000
    assert 0 < losses["float32_graph"] < 5 and abs(losses["int8_graph"] - losses["float32_graph"]) < 0.05
    operators = {node.op_type for node in onnx.load(str(version / "step.onnx")).graph.node}
    assert operators & {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert manifest["graphs"]["step"]["sha256"] == hashlib.sha256((version / "step.onnx").read_bytes()).hexdigest()
    params = SamplingParams(temperature=0.8, seed=3)
    expected = plain_decode(version, "ROMEO:", 40, params)
    with ServerThread(settings_for(target, service="generator")) as server, Client(server.target, timeout=30) as c:
        with c.generate("ROMEO:", model=GPT, max_new_tokens=40, temperature=0.8, seed=3) as stream:
            tokens = [t for chunk in stream for t in chunk.token_ids]
        assert c.get_model(GPT).version == 2
    assert tokens == expected


def test_int8_is_refused_for_the_gru(generator_training: tuple[Path, Path], data_dir: Path, tmp_path: Path) -> None:
    repository, runs = generator_training
    shutil.copytree(repository / GRU, tmp_path / GRU)
    with pytest.raises(SystemExit, match="GRU"):
        export_int8(runs / "gru", tmp_path, GRU, data_dir)
    assert sorted(p.name for p in (tmp_path / GRU).iterdir()) == ["1"]


def test_greedy_is_deterministic_without_a_seed(client: Client) -> None:
    a = client.complete("ROMEO:", model=GRU, max_new_tokens=20, temperature=0)
    b = client.complete("ROMEO:", model=GRU, max_new_tokens=20, temperature=0)
    assert a.text == b.text and a.seed != b.seed


def test_stop_sequences_end_generation_and_are_not_returned(client: Client) -> None:
    full = client.complete("ROMEO:", model=GPT, max_new_tokens=50, seed=5)
    stop = full.text[20:23]
    cut = full.text.index(stop)
    stopped = client.complete("ROMEO:", model=GPT, max_new_tokens=50, seed=5, stop=["@@never@@", stop])
    assert stopped.finish_reason == "stop" and stopped.stop_sequence == stop
    assert stopped.text == full.text[:cut]
    assert stopped.generated_tokens == cut + len(stop)  # it stopped as soon as the stop was complete
    with client.generate("ROMEO:", model=GPT, max_new_tokens=50, seed=5, stop=stop) as stream:
        texts = [c.text for c in stream]
    assert "".join(texts) == full.text[:cut] and stream.completion is not None
    assert stream.completion.finish_reason == "stop"


def test_cancelling_a_stream_stops_its_work(generator_server: ServerThread) -> None:
    """After the client cancels, the sequence leaves the batch: no more tokens are generated for it."""
    with Client(generator_server.target, timeout=60) as client:
        wait_for(lambda: sample(generator_server, "myelin_generator_active_sequences", GRU) == 0)
        cancelled_before = sample(generator_server, "myelin_generator_sequences_total", GRU, outcome="cancelled")
        with client.generate("ROMEO:", model=GRU, max_new_tokens=ENDLESS_TOKENS) as stream:
            for i, _ in enumerate(stream):
                if i == 3:
                    break
        wait_for(
            lambda: (
                sample(generator_server, "myelin_generator_sequences_total", GRU, outcome="cancelled")
                == cancelled_before + 1
            )
        )
        assert sample(generator_server, "myelin_generator_active_sequences", GRU) == 0
        tokens = sample(generator_server, "myelin_generated_tokens_total", GRU)
        # Nothing else is generating on this model: the counter must not move any more.
        time.sleep(0.3)
        assert sample(generator_server, "myelin_generated_tokens_total", GRU) == tokens
        assert stream.completion is None


def test_deadline_ends_a_long_generation(generator_server: ServerThread) -> None:
    with Client(generator_server.target) as client:
        deadline_before = sum(
            sample(generator_server, "myelin_generator_sequences_total", GRU, outcome=o)
            for o in ("deadline", "cancelled")
        )
        with pytest.raises(DeadlineExceededError):
            client.complete("ROMEO:", model=GRU, max_new_tokens=ENDLESS_TOKENS, timeout=0.3)
        wait_for(
            lambda: (
                sum(
                    sample(generator_server, "myelin_generator_sequences_total", GRU, outcome=o)
                    for o in ("deadline", "cancelled")
                )
                == deadline_before + 1
            )
        )
        wait_for(lambda: sample(generator_server, "myelin_generator_active_sequences", GRU) == 0)


def test_concurrent_streams_are_decoded_together(generator_server: ServerThread) -> None:
    async def scenario() -> list[str]:
        async with AsyncClient(generator_server.target, timeout=60) as client:
            prompts = [("First Citizen: " * 2)[: 3 + 3 * i] for i in range(8)]  # lengths differ

            async def one(i: int) -> str:
                parts = []
                async with client.generate(prompts[i], model=GPT, max_new_tokens=50, seed=i) as stream:
                    async for chunk in stream:
                        parts.append(chunk.text)
                assert stream.completion is not None and stream.completion.generated_tokens == 50
                return "".join(parts)

            streamed = await asyncio.gather(*(one(i) for i in range(8)))
            for i, text in enumerate(streamed):
                assert (await client.complete(prompts[i], model=GPT, max_new_tokens=50, seed=i)).text == text
            return streamed

    steps_before = sample(generator_server, "myelin_generator_step_batch_size_count", GPT)
    rows_before = sample(generator_server, "myelin_generator_step_batch_size_sum", GPT)
    texts = asyncio.run(scenario())
    assert len(texts) == 8 and all(len(t) == 50 for t in texts)
    steps = sample(generator_server, "myelin_generator_step_batch_size_count", GPT) - steps_before
    rows = sample(generator_server, "myelin_generator_step_batch_size_sum", GPT) - rows_before
    # 8 x 49 decoding steps plus 8 x 49 single-sequence checks; sharing shows as rows > steps.
    assert rows > steps
    assert sample(generator_server, "myelin_generator_time_to_first_token_seconds_count", GPT) > 0
    assert sample(generator_server, "myelin_generator_inter_token_latency_seconds_count", GPT) > 0


BAD_REQUESTS = [
    ("temperature negative", dict(temperature=-1.0), InvalidArgumentError, "temperature"),
    ("temperature too high", dict(temperature=11.0), InvalidArgumentError, "temperature"),
    ("temperature nan", dict(temperature=float("nan")), InvalidArgumentError, "temperature"),
    ("top_p zero", dict(top_p=0.0), InvalidArgumentError, "top_p"),
    ("top_p above one", dict(top_p=1.5), InvalidArgumentError, "top_p"),
    ("top_k over vocabulary", dict(top_k=10_000), InvalidArgumentError, "top_k"),
    ("repetition penalty zero", dict(repetition_penalty=0.0), InvalidArgumentError, "repetition_penalty"),
    ("context exceeded", dict(max_new_tokens=1000), InvalidArgumentError, "exceed the context of 128"),
    ("prompt too long", dict(prompt="a" * 200), InvalidArgumentError, "at most 127"),
    ("unknown characters", dict(prompt="naïve €"), InvalidArgumentError, "vocabulary lacks"),
    ("too many stops", dict(stop=[str(i) for i in range(9)]), InvalidArgumentError, "at most 8"),
    ("empty stop", dict(stop=[""]), InvalidArgumentError, r"stop\[0\]"),
    ("long stop", dict(stop=["x" * 65]), InvalidArgumentError, r"stop\[0\]"),
    ("unknown model", dict(model="generator-lstm"), NotFoundError, "not found"),
    ("unknown version", dict(version=7), NotFoundError, "no version 7"),
    ("bad model name", dict(model="../x"), InvalidArgumentError, "not a valid model name"),
]


@pytest.mark.parametrize(("case", "kwargs", "error", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_parameters_get_a_clear_status(
    client: Client, case: str, kwargs: dict, error: type[MyelinError], message: str
) -> None:
    kwargs = {"model": GPT, "prompt": "ROMEO:", "max_new_tokens": 5, **kwargs}
    with pytest.raises(error, match=message) as info:
        client.complete(**kwargs)
    assert "Traceback" not in info.value.details
    with pytest.raises(error, match=message), client.generate(**kwargs) as stream:
        list(stream)


def test_bad_requests_do_not_disturb_streams(client: Client) -> None:
    expected = client.complete("ROMEO:", model=GPT, max_new_tokens=30, seed=3).text
    failures: list[BaseException] = []

    def good() -> None:
        try:
            for _ in range(3):
                with client.generate("ROMEO:", model=GPT, max_new_tokens=30, seed=3) as stream:
                    assert "".join(c.text for c in stream) == expected
        except BaseException as exc:
            failures.append(exc)

    def bad() -> None:
        for _, kwargs, error, _ in BAD_REQUESTS:
            with pytest.raises(error):
                client.complete(**{"model": GPT, "prompt": "ROMEO:", "max_new_tokens": 5, **kwargs})

    threads = [threading.Thread(target=good) for _ in range(3)] + [threading.Thread(target=bad) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_empty_prompt_starts_from_a_newline_and_unset_fields_take_defaults(generator_server: ServerThread) -> None:
    with grpc.insecure_channel(generator_server.target) as channel:
        stub = generator_pb2_grpc.GeneratorStub(channel)
        reply = stub.Complete(generator_pb2.GenerateRequest(model=common_pb2.ModelRef(name=GPT)), timeout=30)
        # dry-run GPT context is 128: the default 128 is capped by what is left after the 1-token prompt
        assert reply.finish.prompt_tokens == 1 and reply.finish.generated_tokens == 127
        assert reply.finish.reason == generator_pb2.FINISH_REASON_LENGTH


def test_sequence_limit_gives_resource_exhausted(generator_repository: Path) -> None:
    settings = settings_for(
        generator_repository, service="generator", generation={**LONG_GENERATION, "max_sequences": 2}
    )
    with ServerThread(settings, CollectorRegistry()) as server, Client(server.target, timeout=60) as client:
        streams = [client.generate("ROMEO:", model=GRU, max_new_tokens=ENDLESS_TOKENS) for _ in range(2)]
        iterators = [iter(s) for s in streams]
        for it in iterators:
            next(it)  # both are admitted and generating
        with pytest.raises(ResourceExhaustedError, match="max_sequences 2"):
            client.complete("ROMEO:", model=GRU, max_new_tokens=5)
        for s in streams:
            s.cancel()
        wait_for(lambda: sample(server, "myelin_generator_active_sequences", GRU) == 0)
        assert client.complete("ROMEO:", model=GRU, max_new_tokens=5).generated_tokens == 5


def test_cli_generate_streams_and_completes(generator_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--target", generator_server.target, "generate", "ROMEO:", "--model", GPT, "--max-new-tokens", "20"]
    with pytest.raises(SystemExit) as info:
        cli_main([*args, "--temperature", "0.8", "--seed", "9"])
    streamed = capsys.readouterr()
    assert info.value.code == 0 and streamed.out.startswith("ROMEO:") and "length" in streamed.err
    with pytest.raises(SystemExit) as info:
        cli_main([*args, "--temperature", "0.8", "--seed", "9", "--no-stream"])
    assert info.value.code == 0 and capsys.readouterr().out == streamed.out
    with pytest.raises(SystemExit) as info:
        cli_main([*args, "--top-p", "2"])
    assert info.value.code == 2 and "top_p" in capsys.readouterr().err


def test_unloading_a_version_cancels_its_streams_after_the_drain_timeout(
    generator_repository: Path, tmp_path: Path
) -> None:
    import shutil

    repository = tmp_path / "repository"
    shutil.copytree(generator_repository, repository)
    settings = settings_for(repository, service="generator", generation={**LONG_GENERATION, "drain_timeout_s": 0.2})
    with ServerThread(settings, CollectorRegistry()) as server, Client(server.target, timeout=60) as client:
        with client.generate("ROMEO:", model=GRU, max_new_tokens=ENDLESS_TOKENS) as stream:
            chunks = iter(stream)
            first = next(chunks)
            shutil.rmtree(repository / GRU)
            assert client.reload_models().unloaded == [f"{GRU}/1"]
            rest = list(chunks)  # the stream ends with a last message instead of an error
        assert stream.completion is not None and stream.completion.finish_reason == "cancelled"
        received = len(first.token_ids) + sum(len(c.token_ids) for c in rest)
        assert stream.completion.generated_tokens == received < ENDLESS_TOKENS
        with pytest.raises(NotFoundError):
            client.complete("ROMEO:", model=GRU, max_new_tokens=5)


def step_request(model: str, inputs: dict[str, np.ndarray]) -> kserve_pb.ModelInferRequest:
    tensor = kserve_pb.ModelInferRequest.InferInputTensor
    datatypes = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}
    return kserve_pb.ModelInferRequest(
        model_name=model,
        inputs=[tensor(name=n, datatype=datatypes[a.dtype], shape=list(a.shape)) for n, a in inputs.items()],
        raw_input_contents=[a.astype(a.dtype.newbyteorder("<")).tobytes() for a in inputs.values()],
    )


def test_the_step_graph_is_served_stateless_through_kserve(
    client: Client, generator_server: ServerThread, generator_repository: Path
) -> None:
    """KServe v2 exposes each generator's step graph as `<model>` (the caller carries the cache);
    a prompt from an empty cache gives the logits whose argmax Complete's greedy first token is."""
    version_dir = generator_repository / GPT / "1"
    manifest = json.loads((version_dir / "model.json").read_text())
    shape, unk = manifest["decoder"]["cache_shape"], manifest["tokenizer"]["unk_id"]
    ids = Tokenizer.from_file(str(version_dir / "tokenizer.json")).encode("ROMEO:", add_special_tokens=False).ids
    keys = np.zeros((1, shape["heads"], shape["head_dim"], 0), np.float32)  # (B, H, D, 0 slots)
    values = np.zeros((1, shape["heads"], 0, shape["head_dim"]), np.float32)  # (B, H, 0 slots, D)
    inputs = {
        "input_ids": np.array([ids], np.int64),
        "padding": np.zeros(1, np.int64),
        "length": np.array(0, np.int64),  # filled cache slots: a 0-d tensor
        **{name: keys if name.endswith(".key") else values for name in manifest["decoder"]["cache_inputs"]},
    }
    with grpc.insecure_channel(generator_server.target) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(kserve_pb.ModelMetadataRequest(name=GPT), timeout=10)
        assert [t.name for t in metadata.inputs] == list(inputs)
        response = stub.ModelInfer(step_request(f"{GPT}.step", inputs), timeout=10)
        names = [o.name for o in response.outputs]
        assert names == ["logits", *manifest["decoder"]["cache_outputs"]]
        logits = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(response.outputs[0].shape).copy()
        new = response.outputs[1].shape
        assert list(new) == [1, shape["heads"], shape["head_dim"], len(ids)]  # the prompt's keys, to cache
        with pytest.raises(grpc.RpcError) as bad:
            stub.ModelInfer(step_request(GRU, {"input_ids": np.zeros((1, 1), np.int64)}), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "state" in (bad.value.details() or "")
    logits[0, unk] = -np.inf  # the service never samples <unk>
    greedy = client.complete("ROMEO:", model=GPT, max_new_tokens=1, temperature=0)
    assert greedy.token_ids == [int(np.argmax(logits[0]))]
