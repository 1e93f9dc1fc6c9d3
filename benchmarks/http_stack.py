"""Why Starlette and not FastAPI: per-request cost of the two on uvicorn, same load generator.

    .venv/bin/pip install fastapi==0.165.0      # not a Myelin dependency: only this comparison needs it
    flock /tmp/myelin-cpu.lock .venv/bin/python benchmarks/http_stack.py --repository .bench/repository

Each variant runs in its own server process (uvicorn, httptools, uvloop, one worker) and is driven
by benchmarks/classifier/loadgen.py (closed loop, one keep-alive connection per caller):

- a trivial route (GET, a small JSON answer), and
- a KServe v2 infer route on mnist-cnn: JSON body in (one 28x28 image, 784 numbers), onnxruntime
  called inline (the same session for every variant, no batching, so only the stack differs), JSON out.

Variants: Starlette routes with orjson (Myelin's stack; its inference routes also skip Starlette's
router and middleware, see services/src/myelin_serving/http/app.py); FastAPI with the same handler
taking the raw Request (FastAPI's routing and dependency layer only); FastAPI the usual way, the body as a
pydantic model (KServe's and MLServer's style). Prints req/s and the server's CPU per request,
median and range of --repeats rounds (rounds interleave the variants so outside load falls on all
alike); CPU per request is the comparison, req/s moves with whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "classifier"))
import loadgen

VARIANTS = ("starlette", "fastapi-request", "fastapi-pydantic")

SERVER = r"""
import sys, numpy as np, orjson, onnxruntime as ort, uvicorn
variant, model, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
options = ort.SessionOptions(); options.intra_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

def run(data, shape):
    image = np.asarray(data, dtype=np.float32).reshape(shape)
    (probabilities,) = session.run(None, {"image": image})
    return probabilities

if variant == "starlette" or variant == "fastapi-request":
    from starlette.responses import Response

    async def trivial(request):
        return Response(orjson.dumps({"live": True}), media_type="application/json")

    async def infer(request):
        body = orjson.loads(await request.body())
        tensor = body["inputs"][0]
        out = run(tensor["data"], tensor["shape"])
        answer = {"model_name": request.path_params["name"], "outputs": [{"name": "probabilities",
                  "datatype": "FP32", "shape": list(out.shape), "data": out.reshape(-1)}]}
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    if variant == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Route
        app = Starlette(routes=[Route("/trivial", trivial), Route("/v2/models/{name}/infer", infer, methods=["POST"])])
    else:
        from fastapi import FastAPI, Request
        app = FastAPI()

        @app.get("/trivial")
        async def trivial_route(request: Request):
            return await trivial(request)

        @app.post("/v2/models/{name}/infer")
        async def infer_route(name: str, request: Request):
            return await infer(request)
else:
    from typing import Any
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Tensor(BaseModel):
        name: str
        shape: list[int]
        datatype: str
        parameters: dict[str, Any] | None = None
        data: list[Any]

    class InferenceRequest(BaseModel):
        id: str | None = None
        parameters: dict[str, Any] | None = None
        inputs: list[Tensor]

    class InferenceResponse(BaseModel):
        model_name: str
        id: str | None = None
        outputs: list[Tensor]

    app = FastAPI()

    @app.get("/trivial")
    async def trivial_route() -> dict[str, bool]:
        return {"live": True}

    @app.post("/v2/models/{name}/infer")
    async def infer_route(name: str, request: InferenceRequest) -> InferenceResponse:
        tensor = request.inputs[0]
        out = run(tensor.data, tensor.shape)
        return InferenceResponse(model_name=name, outputs=[Tensor(name="probabilities", shape=list(out.shape),
                                 datatype="FP32", data=out.reshape(-1).tolist())])

uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop", log_level="warning",
            access_log=False, lifespan="off")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(variant: str, model: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, variant, str(model), str(port)])
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            asyncio.run(loadgen.rest_sample(target, get("/trivial", target)))
            return process, target
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"{variant} did not start") from None
            time.sleep(0.1)


def get(path: str, target: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path(".bench/repository"))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    model = args.repository / "mnist-cnn" / "1" / "model.onnx"
    pixels = [float(v) for v in range(784)]
    body = json.dumps(
        {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28], "data": [p / 784 for p in pixels]}]}
    ).encode()
    servers = {variant: start(variant, model) for variant in VARIANTS}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for _ in range(args.repeats):
            for variant, (process, target) in servers.items():
                for route, payload in (
                    ("trivial", get("/trivial", target)),
                    ("infer", loadgen.http_post(target, "/v2/models/mnist-cnn/infer", body)),
                ):
                    cpu: list[float] = []

                    def snapshot(p: subprocess.Popen[bytes] = process, into: list[float] = cpu) -> None:
                        into.append(process_cpu(p.pid))

                    result = asyncio.run(
                        loadgen.run_rest_load(
                            target,
                            payload,
                            args.concurrency,
                            max_requests=1_000_000,
                            max_seconds=args.seconds,
                            warmup_seconds=1.0,
                            on_measure=snapshot,
                        )
                    )
                    assert result.errors == 0, result.first_error
                    cpu_us = (process_cpu(process.pid) - cpu[0]) / max(result.requests, 1) * 1e6
                    results.setdefault((variant, route), []).append((result.rps, cpu_us))
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
    print(
        f"\nconcurrency {args.concurrency}, {os.cpu_count()} CPUs, median of {args.repeats} rounds of {args.seconds} s"
    )
    # CPU per request is the comparison: on a shared machine req/s moves with whatever else runs.
    print(f"| {'variant':<18} | {'route':<7} | req/s (range) | server CPU us/req (range) | CPU vs Starlette |")
    print(f"|{'-' * 20}|{'-' * 9}|---|---|---|")
    for (variant, route), runs in results.items():
        rps, cpu = [r for r, _ in runs], [c for _, c in runs]
        base = statistics.median(c for _, c in results[("starlette", route)])
        print(
            f"| {variant:<18} | {route:<7} | {statistics.median(rps):.0f} ({min(rps):.0f}-{max(rps):.0f}) | "
            f"{statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f}) | {statistics.median(cpu) / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
