"""Hostile and careless requests against `myelin-serve` processes, and what each did to the server.

    python scripts/attacks.py --repository DIR [--only NAME ...] [--runs 10] [--json FILE]

Each attack starts its own `myelin-serve` (loopback, free ports) on a repository that holds the
session's dry-run models under their real names (`myelin-train mlp|cnn|generator|translator|word2vec
--dry-run --publish`), does what an attacker or a careless user would, and prints what the server
did: the status each call got, how long a health check waited meanwhile (the event loop blocked),
resident memory before, at its peak and a few seconds after, log lines written, seconds to exit
after SIGTERM. docs/reliability.md gives the figures; tests/reliability/ holds the guarantees as
tests. Memory-heavy attacks are sized so that a server without the limits swells by gigabytes: run
it on a machine that has them.

Attacks (--only): huge-prompt, kserve-rows, repository, kserve-values, streams, shutdown, auth,
largest (not an attack: the largest request each graph's limits allow, for the per-request figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2

from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.v1 import common_pb2, generator_pb2, models_pb2
from myelin_serving.launch import serve_command, wait_ports

# The test harness (tests/harness): the shutdown burst the tests run too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness.servers import burst_then_sigterm

MIB = 1024 * 1024
Tensor = pb.ModelInferRequest.InferInputTensor
INFER = "/inference.GRPCInferenceService/ModelInfer"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
GENERATE = "/myelin_api.v1.Generator/Generate"
COMPLETE = "/myelin_api.v1.Generator/Complete"
GET_MODEL = "/myelin_api.v1.Models/GetModel"
LIST_MODELS = "/myelin_api.v1.Models/ListModels"
RELOAD = "/myelin_api.v1.Models/ReloadModels"
GPT, GRU, TRANSLATOR = "generator-gpt-shakespeare", "generator-gru-shakespeare", "translator-tatoeba"


class Serve:
    """`myelin-serve FAMILY` on free ports, its log in a file, its memory read from /proc."""

    def __init__(self, family: str, repository: Path, tmp: Path, env: dict[str, str] | None = None) -> None:
        stamp = time.monotonic_ns()
        self.port_file, self.log_path = tmp / f"{family}-{stamp}.port", tmp / f"{family}-{stamp}.log"
        command = serve_command(family, repository, http_port=0, port_file=self.port_file)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        ports = wait_ports(self.port_file, self.process, 120)
        if ports is None:
            raise RuntimeError(f"myelin-serve {family} did not start:\n{self.log_path.read_text()}")
        self.port = ports["port"]
        self.channel = grpc.insecure_channel(self.target, options=[("grpc.max_receive_message_length", -1)])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if health(self.channel) == "SERVING":
                return True
            time.sleep(0.1)
        return False

    def memory(self) -> tuple[float, float]:
        """(resident MiB now, peak resident MiB since the last reset_peak)."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def reset_peak(self) -> float:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return self.memory()[0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def close(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def serve(family: str, repository: Path, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Serve]:
    server = Serve(family, repository, tmp, env)
    try:
        yield server
    finally:
        server.close()


def call(
    channel: grpc.Channel, method: str, request: bytes | Any, *, timeout: float = 300, metadata: Any = ()
) -> tuple[str, str, float]:
    """(status, details, seconds) of a unary call sent as raw bytes."""
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    started = time.monotonic()
    try:
        channel.unary_unary(method)(payload, timeout=timeout, metadata=metadata)
        return "OK", "", time.monotonic() - started
    except grpc.RpcError as error:
        return error.code().name, (error.details() or "")[:160], time.monotonic() - started


def health(channel: grpc.Channel, timeout: float = 5) -> str:
    try:
        answer = channel.unary_unary(HEALTH_CHECK, response_deserializer=health_pb2.HealthCheckResponse.FromString)(
            health_pb2.HealthCheckRequest().SerializeToString(), timeout=timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    except grpc.RpcError as error:
        return error.code().name


class HealthProbe:
    """Checks health every 20 ms on its own channel; the longest answer shows how long the loop was blocked."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stop = threading.Event()
        self.longest = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            health(self._channel, timeout=600)
            self.longest = max(self.longest, time.monotonic() - started)
            self._stop.wait(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._channel.close()
        return self.longest


def under_attack(server: Serve, attack: Callable[[], Any], settle: float = 3.0) -> dict[str, Any]:
    """Run `attack` with a health probe alongside; the memory before, at the peak and `settle` s after."""
    idle = server.reset_peak()
    probe = HealthProbe(server.target)
    started = time.monotonic()
    result = attack()
    seconds = time.monotonic() - started
    longest = probe.stop()
    peak = server.memory()[1]
    time.sleep(settle)
    return {
        "result": result,
        "seconds": round(seconds, 2),
        "health_waited_s": round(longest, 2),
        "rss_idle_mib": round(idle),
        "rss_peak_mib": round(peak),
        "rss_after_mib": round(server.memory()[0]),
    }


def parallel(count: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def infer(model: str, *tensors: tuple[str, str, np.ndarray]) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[Tensor(name=name, datatype=datatype, shape=list(array.shape)) for name, datatype, array in tensors],
        raw_input_contents=[array.tobytes() for _, _, array in tensors],
    )


def gpt_step(ids: np.ndarray, *, padding: np.ndarray | None = None, length: int = 0, slots: int = 0) -> Any:
    """A KServe request for the dry-run GPT's step graph (2 layers, 2 heads of 16)."""
    rows = ids.shape[0]
    cache = []
    for layer in range(2):
        cache.append((f"past.{layer}.key", "FP32", np.zeros((rows, 2, 16, slots), "<f4")))
        cache.append((f"past.{layer}.value", "FP32", np.zeros((rows, 2, slots, 16), "<f4")))
    pad = np.zeros(rows, "<i8") if padding is None else padding.astype("<i8")
    return infer(
        f"{GPT}.step",
        ("input_ids", "INT64", ids.astype("<i8")),
        ("padding", "INT64", pad),
        ("length", "INT64", np.array(length, "<i8")),
        *cache,
    )


def encoder(ids: np.ndarray) -> Any:
    return infer(f"{TRANSLATOR}.encoder", ("source_ids", "INT64", ids.astype("<i8")), ("source_mask", "BOOL", ids > -1))


def decoder(
    rows: int,
    *,
    new: int = 1,
    past: int = 0,
    source: int = 3,
    ids: int | np.ndarray = 1,
    positions: int | np.ndarray = 0,
    values: Callable[[tuple[int, ...]], np.ndarray] = np.zeros,
) -> Any:
    """A KServe request for the dry-run translator's decoder step (1 layer, 4 heads of 8)."""
    cache = (rows, 1, 4, past, 8)
    cross = (rows, 1, 4, source, 8)
    return infer(
        f"{TRANSLATOR}.decoder",
        ("input_ids", "INT64", np.broadcast_to(ids, (rows, new)).astype("<i8")),
        ("position_ids", "INT64", np.broadcast_to(positions, (rows, new)).astype("<i8")),
        ("past_keys", "FP32", values(cache).astype("<f4")),
        ("past_values", "FP32", values(cache).astype("<f4")),
        ("past_mask", "BOOL", np.ones((rows, past), "?")),
        ("cross_keys", "FP32", values(cross).astype("<f4")),
        ("cross_values", "FP32", values(cross).astype("<f4")),
        ("source_mask", "BOOL", np.ones((rows, source), "?")),
    )


def w2v_model(repository: Path) -> str:
    return next(p.parent.parent.name for p in sorted(repository.glob("word2vec-*/*/model.json")))


# --- the attacks ---------------------------------------------------------------------------------


def attack_huge_prompt(repository: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One Complete whose prompt is 8 MB of text, with health checks alongside."""
    request = generator_pb2.GenerateRequest(model=common_pb2.ModelRef(name=GPT), prompt="a" * 8_000_000)
    with serve("generator", repository, tmp) as server:
        server.wait_serving()
        return under_attack(server, lambda: call(server.channel, COMPLETE, request)[:2])


def attack_kserve_rows(repository: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """KServe ModelInfer on graphs without a batcher: 257 rows, then 8,000 rows x 125 tokens (9 MB)."""
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    with serve("translator", repository, tmp) as server:
        server.wait_serving()
        out["encoder 257 rows"] = call(server.channel, INFER, encoder(rng.integers(4, 400, (257, 3))))[:2]
        out["decoder 257 rows"] = call(server.channel, INFER, decoder(257))[:2]
        big = encoder(rng.integers(4, 400, (8000, 125)))
        out["encoder 8000x125"] = under_attack(server, lambda: call(server.channel, INFER, big)[:2])
    with serve("generator", repository, tmp) as server:
        server.wait_serving()
        out["gpt step 257 rows"] = call(server.channel, INFER, gpt_step(np.ones((257, 1))))[:2]
    return out


def _bad_entries(repository: Path, tmp: Path) -> None:
    """What a careless hand leaves in a repository: each entry is wrong in its own way."""
    template = repository / "mnist-mlp" / "1"
    (repository / "latin1" / "1").mkdir(parents=True)
    (repository / "latin1" / "1" / "model.json").write_bytes(b'{"name": "caf\xe9"}')
    shutil.copytree(template, repository / "mnist-mlp" / "\u00b2")  # isdigit() but not int()
    (repository / "nested" / "1").mkdir(parents=True)
    (repository / "nested" / "1" / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    outside = tmp / "outside" / "linked"
    shutil.copytree(template, outside / "1")
    manifest = json.loads((outside / "1" / "model.json").read_text())
    (outside / "1" / "model.json").write_text(json.dumps({**manifest, "name": "linked"}))
    (repository / "linked").symlink_to(outside, target_is_directory=True)


def _classifier_copy(repository: Path, tmp: Path, name: str) -> Path:
    copy = tmp / name
    copy.mkdir()
    for model in ("mnist-mlp", "mnist-cnn"):
        shutil.copytree(repository / model, copy / model)
    return copy


def _models(server: Serve) -> dict[str, list[str]]:
    try:
        answer = server.channel.unary_unary(
            LIST_MODELS, response_deserializer=models_pb2.ListModelsResponse.FromString
        )(b"", timeout=10)
    except grpc.RpcError as error:
        return {"error": [error.code().name]}
    return {
        m.name: [f"{v.version}:{common_pb2.ModelState.Name(v.state).removeprefix('MODEL_STATE_')}" for v in m.versions]
        for m in answer.models
    }


def _error_lines(log: str) -> int:
    return sum(" ERROR " in line for line in log.splitlines())


def attack_repository(repository: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Odd entries in the repository at start-up and at run time; a 41 MB manifest under GetModel."""
    out: dict[str, Any] = {}
    env = {"MYELIN_RELOAD_INTERVAL_S": "1"}
    at_start = _classifier_copy(repository, tmp, "at-start")
    _bad_entries(at_start, tmp / "a")
    with serve("classifier", at_start, tmp, env) as server:
        serving = server.wait_serving(timeout=15)
        time.sleep(5)
        out["at start"] = {
            "serving": serving,
            "models": _models(server),
            "error_lines_in_5s": _error_lines(server.log()),
        }
    at_run = _classifier_copy(repository, tmp, "at-run")
    with serve("classifier", at_run, tmp, env) as server:
        server.wait_serving()
        before = _error_lines(server.log())
        _bad_entries(at_run, tmp / "b")
        shutil.copytree(at_run / "mnist-cnn" / "1", at_run / "mnist-cnn" / "2")
        manifest = json.loads((at_run / "mnist-cnn" / "2" / "model.json").read_text())
        (at_run / "mnist-cnn" / "2" / "model.json").write_text(json.dumps({**manifest, "version": 2}))
        time.sleep(5)
        out["at run time"] = {
            "models": _models(server),
            "reload": call(server.channel, RELOAD, b"")[:2],
            "error_lines_in_5s": _error_lines(server.log()) - before,
        }
    copied = _classifier_copy(repository, tmp, "copied")
    with serve("classifier", copied, tmp, env) as server:
        server.wait_serving()
        before = _error_lines(server.log())
        shutil.copytree(copied / "mnist-mlp" / "1", copied / "mnist-mlp" / "2")  # cp -r mnist-mlp/1 mnist-mlp/2
        time.sleep(5)
        lines = server.log().splitlines()
        out["cp -r 1 2"] = {
            "models": _models(server),
            "log_lines_about_it_in_5s": sum("mnist-mlp/2" in line for line in lines),
            "error_lines_in_5s": _error_lines(server.log()) - before,
        }
    big = _classifier_copy(repository, tmp, "big-manifest")
    path = big / "mnist-mlp" / "1" / "model.json"
    manifest = json.loads(path.read_text())
    manifest["history"] = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(1_000_000)]
    path.write_text(json.dumps(manifest))
    request = models_pb2.GetModelRequest(model=common_pb2.ModelRef(name="mnist-mlp"))
    with serve("classifier", big, tmp, env) as server:
        server.wait_serving()
        out["manifest MB"] = round(path.stat().st_size / 1e6, 1)
        out["10 GetModel"] = under_attack(
            server, lambda: Counter(c for c, _, _ in parallel(10, lambda _: call(server.channel, GET_MODEL, request)))
        )
    return out


def attack_kserve_values(repository: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Values out of the model's ranges in KServe tensors; eight callers repeating one for 10 s."""
    one = np.ones((1, 1))
    w2v = w2v_model(repository)
    gru_state = ("state", "FP32", np.zeros((1, 1, 32), "<f4"))
    cases: dict[str, list[tuple[str, Any]]] = {
        "generator": [
            ("gpt token 1e9", gpt_step(np.full((1, 1), 10**9))),
            ("gpt token -1", gpt_step(np.full((1, 1), -1))),
            ("gpt length 1000", gpt_step(one, length=1000, slots=1000)),
            ("gpt length -5", gpt_step(one, length=-5)),
            ("gpt padding 7 of 1", gpt_step(one, padding=np.array([7]))),
            ("gpt no tokens", gpt_step(np.zeros((1, 0)))),
            ("gpt cache rows 1 vs 2", _mismatched_cache()),
            ("gru token 1e9", infer(f"{GRU}.step", ("input_ids", "INT64", np.full((1, 1), 10**9, "<i8")), gru_state)),
            ("gru no tokens", infer(f"{GRU}.step", ("input_ids", "INT64", np.zeros((1, 0), "<i8")), gru_state)),
        ],
        "translator": [
            ("encoder token 1e9", encoder(np.full((1, 3), 10**9))),
            ("encoder 200 tokens", encoder(np.full((1, 200), 5))),
            ("encoder no tokens", encoder(np.zeros((1, 0)))),
            ("decoder position 1e6", decoder(1, positions=10**6)),
            ("decoder past 1000", decoder(1, past=1000)),
        ],
        "embedder": [
            ("w2v id 1e9", infer(f"{w2v}.lookup", ("ids", "INT64", np.array([10**9], "<i8")))),
            ("w2v id -1", infer(f"{w2v}.lookup", ("ids", "INT64", np.array([-1], "<i8")))),
        ],
    }
    out: dict[str, Any] = {}
    flood = cases["generator"][0][1].SerializeToString()
    for family, requests in cases.items():
        server = Serve(family, repository, tmp)
        try:
            server.wait_serving()
            if family == "generator":
                out["8 callers x 10 s, gpt token 1e9"] = _flood(server, flood)
            for name, request in requests:
                if server.process.poll() is not None:  # the last case killed it: a fresh one for the next
                    server.close()
                    server = Serve(family, repository, tmp)
                    server.wait_serving()
                before = len(server.log().splitlines())
                code, details, _ = call(server.channel, INFER, request, timeout=30)
                time.sleep(0.2)
                died = server.process.poll()
                lines = len(server.log().splitlines()) - before
                fate = f"the server died (exit {died})" if died is not None else f"{lines} log lines"
                out[name] = (code, details[:90], fate)
        finally:
            server.close()
    return out


def _flood(server: Serve, request: bytes) -> dict[str, Any]:
    size, deadline = len(server.log()), time.monotonic() + 10

    def repeat(_: int) -> Counter[str]:
        codes: Counter[str] = Counter()
        while time.monotonic() < deadline:
            codes[call(server.channel, INFER, request, timeout=30)[0]] += 1
        return codes

    codes = sum(parallel(8, repeat), Counter())
    time.sleep(0.5)
    log = server.log()[size:]
    return {"calls": dict(codes), "log_lines": log.count("\n"), "log_bytes": len(log)}


def _mismatched_cache() -> Any:
    request = gpt_step(np.ones((1, 1)))
    request.inputs[3].shape[0] = 2
    request.raw_input_contents[3] = np.zeros((2, 2, 16, 0), "<f4").tobytes()
    return request


def attack_streams(repository: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A health Watch without a deadline; SIGTERM with a Watch open; callers leaving generate() early."""
    out: dict[str, Any] = {}
    with serve("classifier", repository, tmp, {"MYELIN_DEFAULT_DEADLINE_S": "3"}) as server:
        server.wait_serving()
        started = time.monotonic()
        watch = server.channel.unary_stream(HEALTH_WATCH)(health_pb2.HealthCheckRequest().SerializeToString())
        timer = threading.Timer(8, watch.cancel)
        timer.start()
        try:
            for _ in watch:
                pass
            ended = "OK"
        except grpc.RpcError as error:
            ended = error.code().name
        timer.cancel()
        lasted = time.monotonic() - started
        fate = "still open when the probe left at 8 s" if lasted >= 8 else f"{ended} after {lasted:.1f} s"
        out["Watch, no deadline, server default 3 s"] = fate
    with serve("classifier", repository, tmp, {"MYELIN_GRACE_PERIOD_S": "10"}) as server:
        server.wait_serving()
        watch = server.channel.unary_stream(HEALTH_WATCH)(health_pb2.HealthCheckRequest().SerializeToString())
        next(iter(watch))
        code, seconds = server.terminate()
        out["SIGTERM with a Watch open, grace 10 s"] = f"exit {code} after {seconds:.1f} s"
    from myelin_client import Client

    with serve("generator", repository, tmp) as server:
        server.wait_serving()
        with Client(server.target) as client:
            for _ in range(args.runs):
                with client.generate("ROMEO:", model=GRU, max_new_tokens=4000) as stream:
                    for i, _chunk in enumerate(stream):
                        if i == 2:
                            break
        time.sleep(1)
        log = server.log()
        metrics = _metric_lines(server, "myelin_requests_total", GENERATE)
        out[f"{args.runs} callers leaving generate() early"] = {
            "requests_total": metrics,
            "error_lines": _error_lines(log),
            "info_lines_about_cancel": sum("cancel" in line.lower() and " INFO " in line for line in log.splitlines()),
        }
    return out


def _metric_lines(server: Serve, name: str, method: str) -> dict[str, float]:
    import urllib.request

    port = json.loads(server.port_file.read_text())["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'method="{method}"' in line:
            code = line.split('code="', 1)[1].split('"', 1)[0]
            found[code] = float(line.rsplit(" ", 1)[1])
    return found


def attack_shutdown(repository: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """SIGTERM while 600 KServe calls are in flight on the classifier, `--runs` times: every call must end
    OK (accepted) or UNAVAILABLE (refused)."""
    request = infer("mnist-cnn", ("image", "FP32", np.zeros((1, 28, 28), "<f4"))).SerializeToString()
    totals: Counter[str] = Counter()
    runs_with_other = 0
    for _ in range(args.runs):
        with serve("classifier", repository, tmp, {"MYELIN_GRACE_PERIOD_S": "5"}) as server:
            server.wait_serving()
            codes, _ = asyncio.run(burst_then_sigterm(server.target, server.process, request, calls=600, delay=0.05))
            totals.update(codes)
            runs_with_other += bool(set(codes) - {"OK", "UNAVAILABLE"})
    return {"runs": args.runs, "codes": dict(totals), "runs with another status": runs_with_other}


def attack_auth(repository: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Sixteen 60 MB messages without a token, at once, to a server with tokens on."""
    payload = infer("mnist-cnn", ("image", "FP32", np.zeros((60 * 1_000_000 // 3136, 28, 28), "<f4")))
    data = payload.SerializeToString()
    with serve("classifier", repository, tmp, {"MYELIN_AUTH_TOKENS": "a-secret-token"}) as server:
        server.wait_serving()
        result = under_attack(
            server, lambda: Counter(c for c, _, _ in parallel(16, lambda _: call(server.channel, INFER, data)))
        )
    result["message_mb"] = round(len(data) / 1e6, 1)
    return result


def attack_largest(repository: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The largest KServe request each graph's default limits allow (256 rows, every axis as long as
    the model and max_request_elements let it be): what one such request costs the server."""
    rng = np.random.default_rng(0)
    w2v = w2v_model(repository)
    requests: dict[str, list[tuple[str, Any]]] = {
        "classifier": [
            ("mnist-cnn 256 x 28 x 28", infer("mnist-cnn", ("image", "FP32", rng.random((256, 28, 28), "f4")))),
        ],
        "embedder": [
            ("lookup 256 ids", infer(f"{w2v}.lookup", ("ids", "INT64", rng.integers(0, 3000, 256)))),
            ("neighbours 256 x 1,024 excluded", infer(
                f"{w2v}.neighbours", ("queries", "FP32", rng.random((256, 100), "f4")),
                ("exclude", "INT64", rng.integers(-1, 3000, (256, 1024))), ("limit", "INT64", np.full(256, 3000)))),
        ],
        "translator": [
            ("encoder 256 x 128 tokens", encoder(rng.integers(4, 400, (256, 128)))),
            ("decoder 256 rows, 128 new, 100 past, 128 source", _largest_decoder(rng)),
        ],
        "generator": [
            ("gpt step 256 x 128 tokens, 120 slots", gpt_step(rng.integers(0, 59, (256, 128)), slots=120)),
            ("gru step 256 x 1,024 tokens", infer(
                f"{GRU}.step", ("input_ids", "INT64", rng.integers(0, 59, (256, 1024))),
                ("state", "FP32", np.zeros((1, 256, 32), "<f4")))),
        ],
    }  # fmt: skip
    out: dict[str, Any] = {}
    for family, cases in requests.items():
        with serve(family, repository, tmp) as server:
            server.wait_serving()
            for name, request in cases:
                data = request.SerializeToString()
                figures = under_attack(server, lambda data=data: call(server.channel, INFER, data)[:2], settle=1)
                out[name] = {"message_mb": round(len(data) / 1e6, 1), **figures}
    return out


def _largest_decoder(rng: np.random.Generator) -> Any:
    rows, new, past = 256, 128, 100
    return decoder(
        rows,
        new=new,
        past=past,
        source=128,
        ids=rng.integers(4, 400, (rows, new)),
        positions=np.arange(past, past + new) % 128,
        values=lambda shape: rng.random(shape, "f4"),
    )


ATTACKS: dict[str, Callable[[Path, Path, argparse.Namespace], dict[str, Any]]] = {
    "huge-prompt": attack_huge_prompt,
    "kserve-rows": attack_kserve_rows,
    "repository": attack_repository,
    "kserve-values": attack_kserve_values,
    "streams": attack_streams,
    "shutdown": attack_shutdown,
    "auth": attack_auth,
    "largest": attack_largest,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--runs", type=int, default=10, help="SIGTERM runs, and callers leaving generate() early")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="myelin-attacks-") as tmp:
        for name in args.only:
            started = time.monotonic()
            work = Path(tmp) / name
            work.mkdir()
            figures[name] = ATTACKS[name](args.repository.resolve(), work, args)
            print(f"== {name} ({time.monotonic() - started:.0f} s)\n{json.dumps(figures[name], indent=2)}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
