"""The GPU check: train, export, serve on the device and on the CPU, compare the answers, measure.

    python scripts/gpu_check.py --device cuda --out DIR            # on a GPU host (deploy/gpu/README.md)
    python scripts/gpu_check.py --device cpu --out DIR --smoke     # the same steps here, in seconds

1. trains the four families with their quick configs (`--smoke`: --dry-run) on the torch device
   and exports them into DIR/repository, as `myelin-train-all` does (deploy/images/train_all.py);
   families already in `--repository` are not trained again;
2. starts each service twice: on `--device` with IO binding on, and on the CPU provider with IO
   binding off (the CPU default), both `myelin-serve` processes on loopback;
3. checks that both answer alike: classification labels, greedy translations, seeded generations,
   nearest neighbours, each against a tolerance (with `--device cpu` they must be identical: the
   bound path against the numpy one);
4. measures on both: CNN requests/s at concurrency 1 and 32 (batching on), generator tokens/s of 1
   and 8 streams with IO binding on and off, translator sentences/s at concurrency 8 with beam 4,
   with the load generators of benchmarks/ (classifier/loadgen.py, generator_throughput.py);
5. writes DIR/gpu-check.json and DIR/gpu-check.md; exits 1 when an answer check failed.

Services get LD_LIBRARY_PATH pointing at the host's NVIDIA wheels (nvidia/*/lib), so that
onnxruntime-gpu finds CUDA and cuDNN where torch found them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GENERATOR, TRANSLATOR, CNN = "generator-gpt-shakespeare", "translator-tatoeba", "mnist-cnn"


def load_module(path: Path) -> ModuleType:
    """A script of this repository (benchmarks/, deploy/) as a module, its folder importable."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # before running it: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass
class Report:
    device: str
    profile: str
    environment: dict[str, Any] = field(default_factory=dict)
    training: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what stopped a step; the report is written anyway
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.answers) and all(a["ok"] for a in self.answers) and not self.errors


def environment(device: str) -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "onnxruntime_package": str(Path(ort.__file__).parent),
        "providers": ort.get_available_providers(),
    }
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        if device != "cpu" and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # a copy of the tree may have no .git
        git = ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]
        info["commit"] = subprocess.run(git, capture_output=True, text=True, timeout=20).stdout.strip() or None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        info["nvidia_smi"] = subprocess.run(smi, capture_output=True, text=True, timeout=20).stdout.strip()
    return info


def cuda_library_path() -> str:
    """The lib folders of the NVIDIA wheels torch uses (nvidia/cu13/lib, nvidia/cudnn/lib, ...)."""
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    return os.pathsep.join(str(p) for root in roots for p in sorted(Path(root).glob("*/lib")))


# --- 1. training ------------------------------------------------------------------------------


def train(repository: Path, data: Path, *, device: str, smoke: bool, generator_minutes: float) -> list[dict[str, Any]]:
    """Every family missing from `repository`, with train_all's command lines, in this process."""
    from myelin_training.cli import train_main

    train_all = load_module(ROOT / "deploy" / "images" / "train_all.py")
    present = train_all.families_in(repository) if repository.is_dir() else set()
    runs = []
    for family, recipe in train_all.FAMILIES.items():
        if family in present:
            runs.append({"family": family, "skipped": "already in the repository"})
            continue
        for command in recipe.commands:
            line = [part.format(data=data, config=recipe.configs["quick"]) for part in command]
            line += ["--repository", str(repository), "--device", "cuda" if device.startswith("cuda") else "cpu"]
            line += ["--dry-run", "--publish"] if smoke else []  # under the real names the check calls
            if command[0] == "generator" and not smoke:
                line += ["--time-budget", str(generator_minutes)]
            line += ["--run-dir", str(repository.parent / "runs" / f"{family}-{len(runs)}")]
            print("myelin-train", " ".join(line), flush=True)
            started = time.monotonic()
            try:
                train_main(line)
            except (Exception, SystemExit) as exc:  # the other families still train, serve and measure
                runs.append({"family": family, "command": line, "error": f"{type(exc).__name__}: {exc}"})
                break
            runs.append({"family": family, "command": line, "seconds": round(time.monotonic() - started, 1)})
    return runs


# --- 2. services ------------------------------------------------------------------------------


@dataclass
class Service:
    family: str
    device: str
    io_binding: str
    process: subprocess.Popen[bytes]
    port_file: Path
    log: Path
    target: str = ""
    providers: dict[str, str] = field(default_factory=dict)  # model -> execution provider in use

    @property
    def label(self) -> str:
        return f"{self.family} on {self.device}, IO binding {self.io_binding}"


# `myelin-serve` through the interpreter that runs this check (a GPU host may lack the console script).
SERVE_MODULE = (sys.executable, "-m", "myelin_serving.cli")


@contextlib.contextmanager
def services(
    family: str, repository: Path, tmp: Path, setups: list[tuple[str, str]], threads: int
) -> Iterator[list[Service]]:
    """`myelin-serve FAMILY` once per (device, io_binding), on loopback; stopped with SIGTERM."""
    from myelin_client import Client
    from myelin_serving.launch import serve_command

    started: list[Service] = []
    library_path = cuda_library_path()
    try:
        for device, binding in setups:
            name = f"{family}-{device.replace(':', '')}-{binding}"
            port_file, log = tmp / f"{name}.port", tmp / f"{name}.log"
            env = {
                **os.environ,
                "MYELIN_DEVICE": device,
                "MYELIN_IO_BINDING": binding,
                "MYELIN_METRICS_PORT": "-1",
                "MYELIN_RELOAD_INTERVAL_S": "0",
                "MYELIN_INTRA_OP_THREADS": str(threads),
                "MYELIN_GENERATION__MAX_SEQUENCES": "64",
            }
            if library_path:
                env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [library_path, env.get("LD_LIBRARY_PATH")]))
            command = serve_command(family, repository, host=None, port_file=port_file, program=SERVE_MODULE)
            process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
            started.append(Service(family, device, binding, process, port_file, log))
        for service in started:  # started together, waited for one by one
            while not service.target:
                if service.process.poll() is not None:
                    raise SystemExit(f"{service.label} did not start:\n{service.log.read_text()[-3000:]}")
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                    service.target = f"127.0.0.1:{json.loads(service.port_file.read_text())['port']}"
                time.sleep(0.1)
            service.providers = ready(service, Client, deadline=time.monotonic() + 300)
        yield started
    finally:
        for service in started:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in started:
            try:
                service.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.process.kill()


def ready(service: Service, client_type: Any, *, deadline: float) -> dict[str, str]:
    """Wait until every model of the service is ready (a failed load ends the check, with its
    reason); then each model's execution provider."""
    with client_type(service.target) as client:
        while True:
            models = client.list_models()  # answered while models load
            failed = [f"{m.name}/{v.version}: {v.reason}" for m in models for v in m.versions if v.state == "FAILED"]
            if failed:
                raise SystemExit(f"{service.label}: models failed to load: {'; '.join(failed)}")
            # Health says SERVING once any model is ready: wait for every one (a busy machine loads slowly).
            loaded = all(any(v.state == "READY" for v in m.versions) for m in models)
            if models and loaded and client.health() == "SERVING":
                return {m.name: m.execution_provider for m in models}
            if time.monotonic() > deadline:
                raise SystemExit(f"{service.label}: not ready in time; its log: {service.log}")
            time.sleep(0.5)


# --- 3. answers -------------------------------------------------------------------------------


def check(family: str, what: str, value: float, tolerance: str, ok: bool, **detail: Any) -> dict[str, Any]:
    return {"family": family, "check": what, "value": round(value, 6), "tolerance": tolerance, "ok": ok, **detail}


def on_device(service: Service) -> dict[str, Any]:
    """Every model of a device service runs on the provider its device names (CUDA for cuda:N)."""
    wanted = "CPUExecutionProvider" if service.device == "cpu" else "CUDAExecutionProvider"
    share = sum(p == wanted for p in service.providers.values()) / len(service.providers)
    return check(service.family, f"models on {wanted}", share, "= 1", share == 1.0, providers=service.providers)


def classifier_answers(device: str, reference: str, data: Path, count: int) -> list[dict[str, Any]]:
    from myelin_client import Client
    from myelin_training.data import mnist

    images = mnist.load_split(data, "test").images[:count]
    results = []
    for model in ("mnist-mlp", "mnist-cnn"):
        answers = []
        for target in (device, reference):
            with Client(target, timeout=120) as client:
                answers.append(client.classify(images, model=model, top_k=10))
        labels = [[c.label for c in answer] for answer in answers]
        agree = float(np.mean([a == b for a, b in zip(*labels, strict=True)]))
        probabilities = [
            np.array([[p.probability for p in sorted(c.labels, key=lambda p: p.index)] for c in answer])
            for answer in answers
        ]
        gap = float(np.abs(probabilities[0] - probabilities[1]).max())
        results.append(check("classifier", f"{model} labels agree", agree, ">= 0.99", agree >= 0.99, images=count))
        results.append(check("classifier", f"{model} max probability difference", gap, "<= 1e-3", gap <= 1e-3))
    return results


def translator_answers(device: str, reference: str, data: Path, count: int) -> list[dict[str, Any]]:
    from myelin_client import Client

    lines = (data / "translation" / "eng-fra.txt").read_text(encoding="utf-8").splitlines()
    step = max(1, len(lines) // count)
    sentences = [line.split("\t")[0] for line in lines[::step][:count]]
    texts = []
    for target in (device, reference):
        with Client(target, timeout=300) as client:
            texts.append([t.text for t in client.translate(sentences, model=TRANSLATOR, beam_size=1, truncate=True)])
    agree = float(np.mean([a == b for a, b in zip(*texts, strict=True)]))
    return [check("translator", "greedy translations identical", agree, ">= 0.9", agree >= 0.9, sentences=count)]


def prompts(data: Path, count: int) -> list[str]:
    """Line starts from the head of the corpus: characters that any generator trained on it knows."""
    head = (data / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:4000]
    lines = [line[:24] for line in head.splitlines() if len(line) > 8]
    return lines[:: max(1, len(lines) // count)][:count]


def generator_answers(device: str, reference: str, data: Path, count: int, tokens: int) -> list[dict[str, Any]]:
    from myelin_client import Client

    results = []
    for model in (GENERATOR, "generator-gru-shakespeare"):
        runs = []
        for target in (device, reference):
            with Client(target, timeout=300) as client:
                runs.append(
                    [
                        client.complete(p, model=model, max_new_tokens=tokens, temperature=0.8, seed=i).token_ids
                        for i, p in enumerate(prompts(data, count))
                    ]
                )
        agree = float(np.mean([a == b for a, b in zip(*runs, strict=True)]))
        prefix = statistics.mean(
            next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            for a, b in zip(*runs, strict=True)
        )
        results.append(
            check(
                "generator", f"{model} seeded generations identical", agree, ">= 0.9", agree >= 0.9, mean_prefix=prefix
            )
        )
    return results


def embedder_answers(device: str, reference: str, count: int) -> list[dict[str, Any]]:
    from myelin_client import Client

    candidates = ["the", "of", "and", "in", "city", "king", "war", "music", "french", "river", "year", "film"]
    with Client(reference) as client:
        words = [w.word for w in client.embed(candidates).vectors if w.found][:count]
    lists = []
    for target in (device, reference):
        with Client(target, timeout=120) as client:
            lists.append([client.most_similar(word, top_k=10).neighbours for word in words])
    overlap = float(
        np.mean([len({n.word for n in a} & {n.word for n in b}) / max(1, len(b)) for a, b in zip(*lists, strict=True)])
    )
    gap = max(
        (abs(x.score - y.score) for a, b in zip(*lists, strict=True) for x, y in zip(a, b, strict=False)), default=0.0
    )
    return [
        check("embedder", "nearest neighbours overlap", overlap, ">= 0.95", overlap >= 0.95, words=len(words)),
        check("embedder", "max similarity difference", gap, "<= 1e-3", gap <= 1e-3),
    ]


# --- 4. throughput ----------------------------------------------------------------------------


def figure(measure: str, service: Service, value: float, unit: str, **detail: Any) -> dict[str, Any]:
    row = {"measure": measure, "device": service.device, "io_binding": service.io_binding}
    return {**row, "value": round(value, 1), "unit": unit, **detail}


def load(loadgen: ModuleType, service: Service, method: str, request: bytes, concurrency: int, seconds: float) -> Any:
    result = asyncio.run(
        loadgen.run_load(
            service.target, method, request, concurrency, max_requests=10**7, max_seconds=seconds,
            warmup_seconds=seconds / 4, timeout=60,
        )
    )  # fmt: skip
    if result.errors:
        raise SystemExit(f"{service.label}: {result.errors} errors under load, first: {result.first_error}")
    return result


def cnn_throughput(service: Service, seconds: float) -> list[dict[str, Any]]:
    bench = load_module(ROOT / "benchmarks" / "classifier" / "bench.py")
    request = bench.classify_request(CNN)
    rows = []
    for concurrency in (1, 32):
        result = load(bench.loadgen, service, "/myelin_api.v1.Classifier/Classify", request, concurrency, seconds)
        rows.append(
            figure(f"CNN requests/s, concurrency {concurrency}", service, result.rps, "requests/s",
                   p50_ms=round(result.percentile_ms(50), 2), p99_ms=round(result.percentile_ms(99), 2))
        )  # fmt: skip
    return rows


def translator_throughput(service: Service, seconds: float) -> list[dict[str, Any]]:
    from myelin_api.v1 import common_pb2, translator_pb2

    loadgen = load_module(ROOT / "benchmarks" / "classifier" / "loadgen.py")
    request = translator_pb2.TranslateRequest(
        model=common_pb2.ModelRef(name=TRANSLATOR), sentences=["The weather is nice today."], beam_size=4
    ).SerializeToString()
    result = load(loadgen, service, "/myelin_api.v1.Translator/Translate", request, 8, seconds)
    return [figure("translator sentences/s, concurrency 8, beam 4", service, result.rps, "sentences/s")]


def generator_throughput(service: Service, prompt: str, tokens: int, repeats: int) -> list[dict[str, Any]]:
    bench = load_module(ROOT / "benchmarks" / "generator_throughput.py")
    bench.one_stream(service.target, GENERATOR, prompt, 8, 0.8, 0)  # warm up
    one = [bench.one_stream(service.target, GENERATOR, prompt, tokens, 0.8, i) for i in range(repeats)]
    eight = [
        asyncio.run(bench.many_streams(service.target, GENERATOR, prompt, tokens, 0.8, list(range(8))))
        for _ in range(repeats)
    ]
    return [
        figure("generator tokens/s, 1 stream", service, statistics.median(one), "tokens/s", tokens=tokens),
        figure("generator tokens/s, 8 streams", service, statistics.median(eight), "tokens/s", tokens=tokens),
    ]


# --- 5. report --------------------------------------------------------------------------------


def markdown(report: Report) -> str:
    env = report.environment
    lines = [
        f"# GPU check: `--device {report.device}` ({report.profile})",
        "",
        f"{'PASSED' if report.ok else 'FAILED'} in {report.seconds:.0f} s. "
        f"GPU: {env.get('gpu', 'none')}; onnxruntime {env.get('onnxruntime')} ({', '.join(env.get('providers', []))}); "
        f"torch {env.get('torch', '-')} (CUDA {env.get('torch_cuda') or '-'}); Python {env.get('python')}; "
        f"{env.get('cpus')} CPUs.",
        "",
        *(f"- error: {e}" for e in report.errors),
        *([""] if report.errors else []),
        "## Answers: the device against the CPU provider",
        "",
        "| family | check | value | tolerance | ok |",
        "|---|---|---|---|---|",
        *(f"| {a['family']} | {a['check']} | {a['value']} | {a['tolerance']} | {'yes' if a['ok'] else 'NO'} |"
          for a in report.answers),
        "",
        "## Throughput",
        "",
        "| measure | device | IO binding | value |",
        "|---|---|---|---|",
        *(f"| {t['measure']} | {t['device']} | {t['io_binding']} | {t['value']} {t['unit']} |"
          for t in report.throughput),
        "",
        "## Training",
        "",
        *(f"- {r['family']}: {r.get('skipped') or r.get('error') or str(r['seconds']) + ' s'}"
          + (f", myelin-train {' '.join(r['command'])}" if "command" in r else "") for r in report.training),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the bound CPU path against numpy)")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-check.json and gpu-check.md")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MYELIN_DATA_DIR", ROOT / "data")))
    parser.add_argument("--repository", type=Path, help="default OUT/repository; families already there are kept")
    parser.add_argument("--smoke", action="store_true", help="dry-run training, short measurements (CI)")
    parser.add_argument("--seconds", type=float, help="seconds per requests/s figure (default 8, smoke 1)")
    parser.add_argument("--generator-minutes", type=float, default=0.75, help="training budget of each generator")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads per service (0: all)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    repository = (args.repository or args.out / "repository").resolve()
    seconds = args.seconds or (1.0 if args.smoke else 8.0)
    report = Report(args.device, "smoke" if args.smoke else "quick configs", environment(args.device))
    report.training = train(
        repository, args.data_dir, device=args.device, smoke=args.smoke, generator_minutes=args.generator_minutes
    )
    items, tokens, repeats = (8, 16, 1) if args.smoke else (64, 200, 3)
    device_setup, cpu_setup = (args.device, "on"), ("cpu", "off")
    untrained = {r["family"] for r in report.training if "error" in r}
    report.errors += [f"training {r['family']}: {r['error']}" for r in report.training if "error" in r]

    def classifier(run: Path) -> None:
        with services("classifier", repository, run, [device_setup, cpu_setup], args.threads) as (dev, cpu):
            report.answers.append(on_device(dev))
            report.answers += classifier_answers(dev.target, cpu.target, args.data_dir, 4 * items)
            for service in (dev, cpu):
                report.throughput += cnn_throughput(service, seconds)

    def translator(run: Path) -> None:
        with services("translator", repository, run, [device_setup, cpu_setup], args.threads) as (dev, cpu):
            report.answers.append(on_device(dev))
            report.answers += translator_answers(dev.target, cpu.target, args.data_dir, items)
            for service in (dev, cpu):
                report.throughput += translator_throughput(service, seconds)

    def generator(run: Path) -> None:
        # Both bindings on both sides; with --device cpu the device pair and the CPU pair are the same
        # two services, started once (two services of one name would share a port file and a log).
        setups = list(dict.fromkeys([device_setup, (args.device, "off"), cpu_setup, ("cpu", "on")]))
        with services("generator", repository, run, setups, args.threads) as generators:
            report.answers.append(on_device(generators[0]))
            device, cpu = generators[0].target, generators[setups.index(cpu_setup)].target
            report.answers += generator_answers(device, cpu, args.data_dir, items, tokens // 2)
            prompt = prompts(args.data_dir, 1)[0]
            for service in generators:
                report.throughput += generator_throughput(service, prompt, tokens, repeats)

    def embedder(run: Path) -> None:
        with services("embedder", repository, run, [device_setup, cpu_setup], args.threads) as (dev, cpu):
            report.answers.append(on_device(dev))
            report.answers += embedder_answers(dev.target, cpu.target, items)

    with tempfile.TemporaryDirectory() as tmp:
        for family, step in (("classifier", classifier), ("translator", translator), ("generator", generator),
                             ("embedder", embedder)):  # fmt: skip
            if family in untrained:
                continue
            try:
                step(Path(tmp))
            except (Exception, SystemExit) as exc:  # one family's failure must not lose the others' figures
                report.errors.append(f"{family}: {type(exc).__name__}: {exc}")
    report.seconds = round(time.monotonic() - started, 1)
    (args.out / "gpu-check.json").write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
