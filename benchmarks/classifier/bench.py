"""`make bench`: Myelin against MLServer 1.7 and against onnxruntime in-process, on the digit classifiers;
then the generator's streams over gRPC and over server-sent events.

One run, side by side, for mnist-mlp and mnist-cnn at concurrency 1, 8, 32 and 64:

- in-process onnxruntime at the batch sizes Myelin formed (the limit: no network, no queue), with
  the servers' session options for the ratio and the fastest thread count beside it,
- Myelin with dynamic batching off and on, through its Classify API and through KServe ModelInfer,
- MLServer 1.7.1 serving the same ONNX file through a minimal custom runtime (mlserver_runtime.py),
  over its V2 gRPC with raw tensor contents, in its own virtualenv (.bench/mlserver-venv);
- REST: Myelin's and MLServer's KServe v2 REST `infer` on mnist-cnn at concurrency 1 and 32, the same
  image as a JSON body (784 numbers), one keep-alive connection per caller (loadgen.py).

Then `generator_throughput.compare_sse`: tokens/s of one and of eight streams of the quick GPT through
`Generator.Generate` (gRPC) and through `/v1/completions` with `stream: true` (SSE), interleaved.

Every server gets the same request (one 28x28 float32 image, raw little-endian bytes) from the
same closed-loop asyncio load generator (loadgen.py), bounded in requests and seconds, on
loopback. Models are trained once (`myelin-train mlp|cnn --config quick`) into .bench/ and reused.
Writes benchmarks/RESULTS.md and the plot; the raw figures go to .bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from prometheus_client.parser import text_string_to_metric_families

from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as kserve_pb
from myelin_api.kserve.v2 import grpc_predict_v2_pb2_grpc as kserve_grpc
from myelin_api.v1 import classifier_pb2, common_pb2

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
import generator_throughput
import inprocess
import loadgen
import report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BENCH = ROOT / ".bench"
REPOSITORY = BENCH / "repository"
MLSERVER_VENV = BENCH / "mlserver-venv"
BIN = Path(sys.executable).parent
MODELS = ("mnist-mlp", "mnist-cnn")
CONCURRENCY = (1, 8, 32, 64)
CLASSIFY = "/myelin_api.v1.Classifier/Classify"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
TYPED = "ModelInfer typed"  # KServe ModelInfer with typed contents instead of raw bytes
REST = "REST infer"  # KServe v2 REST, the image as JSON data
REST_CONCURRENCY = (1, 32)
REST_MODEL = "mnist-cnn"
GENERATOR = "generator-gpt-shakespeare"


@dataclass
class Run:
    model: str
    system: str  # what served it
    api: str  # Classify | ModelInfer | in-process
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int = 0
    mean_batch: float = 1.0  # rows per onnxruntime execution (Myelin's metrics; in-process: the batch)
    server_cpu_us: float = 0.0  # server process CPU time per request (all its threads, compute included)
    client_cpu_us: float = 0.0  # the load generator's own CPU time per request
    notes: dict[str, Any] = field(default_factory=dict)


# Setup: models and MLServer's virtualenv, both reused when present.


def ensure_models(data_dir: Path, *, generator: bool) -> None:
    wanted = [("mlp", "mnist-mlp", []), ("cnn", "mnist-cnn", [])]
    if generator:
        wanted.append(("generator", GENERATOR, ["--arch", "gpt"]))
    for trainer, name, extra in wanted:
        if (REPOSITORY / name / "1" / "model.json").exists():
            continue
        print(f"training {name} (quick config) into {REPOSITORY}", flush=True)
        subprocess.run(
            [
                str(BIN / "myelin-train"),
                trainer,
                *extra,
                "--config",
                "quick",
                "--data-dir",
                str(data_dir),
                "--repository",
                str(REPOSITORY),
                "--run-dir",
                str(BENCH / "runs" / trainer),
            ],
            check=True,
        )


def ensure_mlserver() -> Path:
    requirements = HERE / "mlserver-requirements.txt"
    stamp = MLSERVER_VENV / f".installed-{hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]}"
    if not stamp.exists():
        print(f"building {MLSERVER_VENV} (MLServer and its own dependencies)", flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(MLSERVER_VENV)], check=True)
        pip = [str(MLSERVER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.touch()
    return MLSERVER_VENV / "bin" / "mlserver"


# Servers.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    target: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_url: str = ""
    http_target: str = ""  # its KServe v2 REST port


def wait_kserve_ready(server: Server, models: tuple[str, ...], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.target) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()[-3000:]}")
            try:
                if all(stub.ModelReady(kserve_pb.ModelReadyRequest(name=m), timeout=2).ready for m in models):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout} s:\n{server.log.read_text()[-3000:]}")


@contextmanager
def myelin_server(*, batching: bool, threads: int, delay_us: int, max_batch: int) -> Iterator[Server]:
    name = f"myelin-batching-{'on' if batching else 'off'}"
    port_file, log = BENCH / f"{name}.port", BENCH / f"{name}.log"
    port_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "MYELIN_BATCHING__ENABLED": str(batching).lower(),
        "MYELIN_BATCHING__MAX_QUEUE_DELAY_US": str(delay_us),
        "MYELIN_BATCHING__MAX_BATCH_SIZE": str(max_batch),
        "MYELIN_INTRA_OP_THREADS": str(threads),
        "MYELIN_RELOAD_INTERVAL_S": "0",
        "MYELIN_LOG_LEVEL": "WARNING",
    }
    command = [str(BIN / "myelin-serve"), "classifier", "--repository", str(REPOSITORY), "--port", "0"]
    command += ["--http-port", "0", "--device", "cpu", "--port-file", str(port_file)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        ports = json.loads(port_file.read_text())
        server = Server(name, f"127.0.0.1:{ports['port']}", process, log)
        server.metrics_url = f"http://127.0.0.1:{ports['http_port']}/metrics"
        server.http_target = f"127.0.0.1:{ports['http_port']}"
        wait_kserve_ready(server, MODELS)
        yield server
    finally:
        stop(process)


@contextmanager
def mlserver(executable: Path, *, threads: int) -> Iterator[Server]:
    folder = BENCH / "mlserver-models"
    folder.mkdir(parents=True, exist_ok=True)
    grpc_port, http_port = free_port(), free_port()
    settings = {
        "debug": False,
        "parallel_workers": 0,  # inference in the server process: workers cannot start here
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": free_port(),
        "load_models_at_startup": True,
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    for model in MODELS:
        (folder / model).mkdir(exist_ok=True)
        model_settings = {
            "name": model,
            "implementation": "mlserver_runtime.OnnxClassifier",
            "parameters": {
                "uri": str(REPOSITORY / model / "1" / "model.onnx"),
                "extra": {"intra_op_threads": threads},
            },
        }
        (folder / model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    log = BENCH / "mlserver.log"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(executable), "start", str(folder)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=BENCH
        )
    try:
        server = Server("mlserver", f"127.0.0.1:{grpc_port}", process, log, http_target=f"127.0.0.1:{http_port}")
        wait_kserve_ready(server, MODELS)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# Requests: one 28x28 float32 image, raw little-endian bytes, the same pixels for everyone.

PIXELS = np.random.default_rng(7).random((1, 28, 28), dtype=np.float32)


def classify_request(model: str) -> bytes:
    raw = classifier_pb2.RawImage(height=28, width=28, dtype=common_pb2.DATA_TYPE_FLOAT32, data=PIXELS.tobytes())
    request = classifier_pb2.ClassifyRequest(
        model=common_pb2.ModelRef(name=model), images=[classifier_pb2.Image(raw=raw)], top_k=1
    )
    return request.SerializeToString()


def infer_request(model: str, *, typed: bool = False) -> bytes:
    tensor = kserve_pb.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 28, 28])
    if typed:  # the same pixels as InferTensorContents.fp32_contents
        tensor.contents.fp32_contents.extend(PIXELS.ravel().tolist())
        request = kserve_pb.ModelInferRequest(model_name=model, inputs=[tensor])
    else:
        request = kserve_pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[PIXELS.tobytes()])
    return request.SerializeToString()


def rest_request(server: Server, model: str) -> bytes:
    """The same pixels as a KServe v2 REST infer request with JSON data, serialized once."""
    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 28, 28], "data": PIXELS.ravel().tolist()}
    body = json.dumps({"inputs": [tensor]}).encode()
    return loadgen.http_post(server.http_target, f"/v2/models/{model}/infer", body)


def expected_label(model: str) -> int:
    session = ort.InferenceSession(str(REPOSITORY / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return int(np.argmax(session.run(None, {"image": PIXELS})[0]))


def check_answer(api: str, answer: bytes, label: int) -> None:
    """The first answer of every run must be the graph's own answer, in whatever form the server used."""
    if api == "Classify":
        got = classifier_pb2.ClassifyResponse.FromString(answer).classifications[0].labels[0].index
    elif api == REST:
        got = int(np.argmax(json.loads(answer)["outputs"][0]["data"]))
    else:
        response = kserve_pb.ModelInferResponse.FromString(answer)
        if response.raw_output_contents:
            probabilities = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
        else:
            probabilities = np.array(response.outputs[0].contents.fp32_contents, dtype=np.float32)
        got = int(np.argmax(probabilities))
    if got != label:
        raise RuntimeError(f"{api} answered label {got}, the graph says {label}")


def batch_counts(metrics_url: str, model: str) -> tuple[float, float]:
    """(rows, executions) so far from Myelin's myelin_batch_size histogram."""
    body = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    rows = executions = 0.0
    for family in text_string_to_metric_families(body):
        if family.name == "myelin_batch_size":
            for s in family.samples:
                if s.labels.get("model") == model and s.name.endswith("_sum"):
                    rows = s.value
                elif s.labels.get("model") == model and s.name.endswith("_count"):
                    executions = s.value
    return rows, executions


def load(server: Server, api: str, model: str, concurrency: int, args: argparse.Namespace) -> Run:
    cpu: dict[str, float] = {}

    def snapshot() -> None:
        cpu["server"], cpu["client"] = process_cpu(server.process.pid), own_cpu()

    bounds = {"max_requests": args.max_requests, "max_seconds": args.seconds, "warmup_seconds": args.warmup}
    if api == REST:
        payload = rest_request(server, model)
        check_answer(api, asyncio.run(loadgen.rest_sample(server.http_target, payload)), expected_label(model))
        before = batch_counts(server.metrics_url, model) if server.metrics_url else (0.0, 0.0)
        phase = loadgen.run_rest_load(server.http_target, payload, concurrency, on_measure=snapshot, **bounds)
    else:
        request = classify_request(model) if api == "Classify" else infer_request(model, typed=api == TYPED)
        method = CLASSIFY if api == "Classify" else MODEL_INFER
        check_answer(api, asyncio.run(loadgen.sample(server.target, method, request)), expected_label(model))
        before = batch_counts(server.metrics_url, model) if server.metrics_url else (0.0, 0.0)
        phase = loadgen.run_load(server.target, method, request, concurrency, on_measure=snapshot, **bounds)
    result = asyncio.run(phase)
    done = max(result.requests, 1)
    server_cpu_us = (process_cpu(server.process.pid) - cpu["server"]) / done * 1e6
    client_cpu_us = (own_cpu() - cpu["client"]) / done * 1e6
    mean_batch = 1.0
    if server.metrics_url:
        # Includes the warm-up phase: same load, same batching regime.
        after = batch_counts(server.metrics_url, model)
        executions = after[1] - before[1]
        mean_batch = (after[0] - before[0]) / executions if executions else 1.0
    run = Run(
        model=model,
        system=server.name,
        api=api,
        concurrency=concurrency,
        rps=result.rps,
        p50_ms=result.percentile_ms(50),
        p99_ms=result.percentile_ms(99),
        requests=result.requests,
        errors=result.errors,
        mean_batch=mean_batch,
        server_cpu_us=server_cpu_us,
        client_cpu_us=client_cpu_us,
        notes={"first_error": result.first_error} if result.errors else {},
    )
    print(
        f"  {model:9} {server.name:20} {api:10} c={concurrency:<3} {run.rps:8.0f} req/s  p50 {run.p50_ms:6.2f} ms"
        f"  p99 {run.p99_ms:6.2f} ms  batch {run.mean_batch:5.1f}  errors {run.errors}"
        f"  cpu/req server {run.server_cpu_us:5.0f} us, loadgen {run.client_cpu_us:4.0f} us",
        flush=True,
    )
    return run


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (from /proc; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0"
    )
    python = MLSERVER_VENV / "bin" / "python"
    mlserver_version = ""  # `--systems` without mlserver: its virtualenv may not exist
    if python.exists():
        mlserver_version = subprocess.run(
            [str(python), "-c", "import mlserver; print(mlserver.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "grpcio": grpc.__version__,
        "mlserver": mlserver_version,
        "load_average_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    global REPOSITORY
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("MYELIN_DATA_DIR", ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run (bound)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--max-requests", type=int, default=40_000, help="requests per run (bound)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads in every server")
    parser.add_argument("--delay-us", type=int, default=1000, help="Myelin's max_queue_delay_us")
    parser.add_argument("--max-batch", type=int, default=64, help="Myelin's max_batch_size")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--systems", nargs="+", default=["mlserver", "off", "on"], help="mlserver, off, on")
    parser.add_argument("--repository", type=Path, default=REPOSITORY, help="reuse models from here")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--no-sse", action="store_true", help="skip the generator's gRPC vs SSE streams")
    parser.add_argument("--sse-repeats", type=int, default=15, help="rounds of the gRPC vs SSE comparison")
    args = parser.parse_args(argv)

    started = time.time()
    BENCH.mkdir(exist_ok=True)
    REPOSITORY = args.repository.resolve()
    ensure_models(args.data_dir, generator=not args.no_sse)
    executable = ensure_mlserver() if "mlserver" in args.systems else Path()
    info = machine()
    print(f"machine: {info}", flush=True)
    runs: list[Run] = []
    limits: dict[tuple[str, int], list[inprocess.InProcessResult]] = {}
    with ExitStack() as stack:
        # Every server up at once (idle ones cost nothing), so each (model, concurrency) point runs
        # all systems back to back and they share the same background load on this shared machine.
        servers = []
        for system in args.systems:
            if system == "mlserver":
                servers.append(stack.enter_context(mlserver(executable, threads=args.threads)))
            else:
                context = myelin_server(
                    batching=system == "on", threads=args.threads, delay_us=args.delay_us, max_batch=args.max_batch
                )
                servers.append(stack.enter_context(context))
        for model in args.models:
            for concurrency in args.concurrency:
                for server in servers:
                    # MLServer: both V2 input forms, to show which is its fast path; Myelin: both its APIs.
                    apis = ("ModelInfer", TYPED) if server.name == "mlserver" else ("Classify", "ModelInfer")
                    if model == REST_MODEL and concurrency in REST_CONCURRENCY:
                        apis += (REST,)  # KServe v2 REST with a JSON body, on both servers
                    for api in apis:
                        run = load(server, api, model, concurrency, args)
                        runs.append(run)
                        # The limit at the batch size this run formed, measured now, under the same load.
                        batch = max(1, round(run.mean_batch))
                        run.notes["in_process_batch"] = batch
                        if (model, batch) not in limits:
                            limits[(model, batch)] = measured = inprocess.reference(
                                REPOSITORY / model / "1" / "model.onnx",
                                batch,
                                threads=args.threads,
                                seconds=2.0,
                                thread_counts=(1, 2),
                            )
                            figures = ", ".join(f"{r.rows_per_s:.0f} rows/s with {r.threads} thr." for r in measured)
                            print(f"  {model:9} in-process batch {batch:<3} {figures}", flush=True)
    sse = None
    if not args.no_sse:
        print(f"\n{GENERATOR}: streams through gRPC and through SSE, {args.sse_repeats} rounds", flush=True)
        sse = generator_throughput.compare_sse(REPOSITORY, GENERATOR, repeats=args.sse_repeats, threads=args.threads)
    elapsed = time.time() - started
    info["load_average_at_end"] = os.getloadavg()
    results = {
        # Set by `make bench`, which runs this under flock /tmp/myelin-cpu.lock for the whole run.
        "cpu_lock_held": os.environ.get("MYELIN_BENCH_LOCKED") == "1",
        "partial": args.models != list(MODELS) or args.concurrency != list(CONCURRENCY),
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k not in ("data_dir", "no_write", "repository")},
        "runs": [asdict(r) for r in runs],
        "in_process": [asdict(r) | {"model": k[0]} for k, v in sorted(limits.items()) for r in v],
        "sse": sse,
        "wall_seconds": elapsed,
        "command": "make bench"
        if os.environ.get("MYELIN_BENCH_LOCKED") == "1" and not argv and len(sys.argv) == 1
        else "benchmarks/classifier/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (BENCH / "results.json").write_text(json.dumps(results, indent=2))
    print(report.tables(results))
    print(report.acceptance(results))
    print(report.budget(results))
    if not args.no_write:
        report.write(results, ROOT / "benchmarks")
    print(f"benchmark wall time: {elapsed:.0f} s")


if __name__ == "__main__":
    main()
