"""Tables, acceptance checks, the plot and benchmarks/RESULTS.md from one benchmark run's figures."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

LABELS = {
    "myelin-batching-off": "Myelin, batching off",
    "myelin-batching-on": "Myelin, batching on",
    "mlserver": "MLServer 1.7",
}
PLOT = "classifier_throughput.png"
REST = "REST infer"  # bench.REST: KServe v2 REST with a JSON body; compared with MLServer's REST


def _measured(results: dict[str, Any], model: str, batch: int) -> list[dict[str, Any]]:
    return [r for r in results["in_process"] if r["model"] == model and r["batch"] == batch]


def _limit(results: dict[str, Any], model: str, batch: int) -> dict[str, Any]:
    """The reference for 'vs in-process': the servers' own session options (intra-op threads)."""
    measured = _measured(results, model, batch)
    threads = results["settings"]["threads"]
    return next((r for r in measured if r["threads"] == threads), measured[0])


def _best(results: dict[str, Any], model: str, batch: int) -> dict[str, Any]:
    """The fastest thread count in-process at this batch size, printed beside the reference."""
    return max(_measured(results, model, batch), key=lambda r: r["rows_per_s"])


def _best_note(results: dict[str, Any], model: str, batch: int) -> str:
    best = _best(results, model, batch)
    return f"best {best['threads']} thr.: {best['rows_per_s']:.0f}/s"


def _mlserver(results: dict[str, Any], model: str, concurrency: int, api: str = "") -> dict[str, Any] | None:
    """MLServer's best run at this point over the same protocol as `api`: REST against its REST,
    gRPC against its faster gRPC form (raw or typed inputs)."""
    runs = [
        r
        for r in results["runs"]
        if r["system"] == "mlserver"
        and r["model"] == model
        and r["concurrency"] == concurrency
        and (r["api"] == REST) == (api == REST)
    ]
    return max(runs, key=lambda r: r["rps"]) if runs else None


def rows(results: dict[str, Any], model: str) -> list[list[str]]:
    table = []
    runs = [r for r in results["runs"] if r["model"] == model]
    for concurrency in sorted({r["concurrency"] for r in runs}):
        at = [r for r in runs if r["concurrency"] == concurrency]
        batched = next((r for r in at if r["system"] == "myelin-batching-on" and r["api"] == "ModelInfer"), at[0])
        limit = _limit(results, model, batched["notes"]["in_process_batch"])
        table.append(
            [
                str(concurrency),
                f"onnxruntime in-process, batch {limit['batch']}, {limit['threads']} thr. like the servers "
                f"({_best_note(results, model, limit['batch'])})",
                "-",
                f"{limit['rows_per_s']:.0f}",
                f"{limit['p50_ms']:.2f}",
                f"{limit['p99_ms']:.2f}",
                str(limit["batch"]),
                "",
                "",
                f"{limit.get('cpu_us_per_row', 0):.0f}/row",
                "-",
            ]
        )
        for run in at:
            reference = _mlserver(results, model, concurrency, run["api"])
            own_limit = _limit(results, model, run["notes"]["in_process_batch"])
            is_myelin = run["system"] != "mlserver"
            table.append(
                [
                    str(concurrency),
                    LABELS.get(run["system"], run["system"]),
                    run["api"],
                    f"{run['rps']:.0f}" + (f" ({run['errors']} err)" if run["errors"] else ""),
                    f"{run['p50_ms']:.2f}",
                    f"{run['p99_ms']:.2f}",
                    f"{run['mean_batch']:.1f}" if is_myelin else "1",
                    f"{run['rps'] / reference['rps']:.2f}x" if reference and is_myelin else "",
                    f"{run['rps'] / own_limit['rows_per_s']:.2f}x" if is_myelin else "",
                    f"{run['server_cpu_us']:.0f}",
                    f"{run['client_cpu_us']:.0f}",
                ]
            )
    return table


HEADER = [
    "conc.",
    "system",
    "API",
    "req/s",
    "p50 ms",
    "p99 ms",
    "rows/exec",
    "vs MLServer",
    "vs in-process",
    "server CPU us/req",
    "loadgen CPU us/req",
]


def markdown_table(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def tables(results: dict[str, Any]) -> str:
    out = []
    for model in sorted({r["model"] for r in results["runs"]}, reverse=True):
        table = rows(results, model)
        widths = [max(len(x) for x in col) for col in zip(HEADER, *table, strict=True)]
        out.append(f"\n{model}")
        for row in [HEADER, *table]:
            out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(out)


def acceptance(results: dict[str, Any]) -> str:
    lines = ["\nacceptance:"]
    delay_ms = results["settings"]["delay_us"] / 1000
    for run in results["runs"]:
        if run["system"] != "myelin-batching-on":
            continue
        reference = _mlserver(results, run["model"], run["concurrency"], run["api"])
        limit = _limit(results, run["model"], run["notes"]["in_process_batch"])
        if run["model"] == "mnist-cnn" and run["concurrency"] == 32 and reference:
            vs_ml, vs_limit = run["rps"] / reference["rps"], run["rps"] / limit["rows_per_s"]
            best = _best(results, run["model"], limit["batch"])
            lines.append(
                f"  c=32 mnist-cnn {run['api']:10}: {vs_ml:.2f}x MLServer (>= 2: {'yes' if vs_ml >= 2 else 'NO'}), "
                f"{vs_limit:.2f}x in-process at batch {limit['batch']} with {limit['threads']} thr. as the servers "
                f"(>= 0.7: {'yes' if vs_limit >= 0.7 else 'NO'}); {run['rps'] / best['rows_per_s']:.2f}x the best "
                f"in-process ({best['threads']} thr.)"
            )
        if run["concurrency"] == 1:
            off = next(
                (
                    r
                    for r in results["runs"]
                    if r["system"] == "myelin-batching-off"
                    and r["model"] == run["model"]
                    and r["api"] == run["api"]
                    and r["concurrency"] == 1
                ),
                None,
            )
            parts = [f"  c=1  {run['model']} {run['api']:10}: p50 {run['p50_ms']:.2f} ms"]
            best_p50 = min(
                (
                    r["p50_ms"]
                    for r in results["runs"]
                    if r["system"] == "mlserver"
                    and r["model"] == run["model"]
                    and r["concurrency"] == 1
                    and (r["api"] == REST) == (run["api"] == REST)
                ),
                default=None,
            )
            if best_p50 is not None:
                ok = run["p50_ms"] <= best_p50
                parts.append(f"MLServer's best {best_p50:.2f} ms (no worse: {'yes' if ok else 'NO'})")
            if off:
                cost = run["p50_ms"] - off["p50_ms"]
                ok = cost <= delay_ms
                parts.append(f"batching costs {cost:+.2f} ms vs delay {delay_ms:.2f} ms ({'yes' if ok else 'NO'})")
            lines.append(", ".join(parts))
    lines += sse_acceptance(results)
    return "\n".join(lines)


SSE_ROWS = (("1", "grpc 1", "sse 1"), ("n", "grpc n", "sse n"))


def sse_acceptance(results: dict[str, Any]) -> list[str]:
    sse = results.get("sse")
    if not sse:
        return []
    medians = sse["medians"]
    lines = []
    for count, grpc_key, sse_key in SSE_ROWS:
        streams = 1 if count == "1" else sse["streams"]
        ratio = medians[sse_key] / medians[grpc_key]
        cpu = sse["cpu_us_per_token"]
        lines.append(
            f"  SSE {sse['model']}, {streams} stream(s): {medians[sse_key]:.0f} tokens/s, {ratio:.2f}x gRPC's "
            f"{medians[grpc_key]:.0f} (>= 0.9: {'yes' if ratio >= 0.9 else 'NO'}); service CPU per token "
            f"{cpu[sse_key]:.0f} us against {cpu[grpc_key]:.0f}"
        )
    return lines


def sse_table(results: dict[str, Any]) -> str:
    sse = results["sse"]
    lines = [
        "| streams | gRPC tokens/s (rounds) | SSE tokens/s (rounds) | SSE vs gRPC | service CPU us/token: gRPC, SSE |",
        "|---|---|---|---|---|",
    ]
    for count, grpc_key, sse_key in SSE_ROWS:
        streams = 1 if count == "1" else sse["streams"]
        runs, medians, cpu = sse["runs"], sse["medians"], sse["cpu_us_per_token"]
        spread = {k: f"{min(runs[k]):.0f}-{max(runs[k]):.0f}" for k in (grpc_key, sse_key)}
        lines.append(
            f"| {streams} | {medians[grpc_key]:.0f} ({spread[grpc_key]}) | {medians[sse_key]:.0f} "
            f"({spread[sse_key]}) | {medians[sse_key] / medians[grpc_key]:.2f}x | "
            f"{cpu[grpc_key]:.0f}, {cpu[sse_key]:.0f} |"
        )
    return "\n".join(lines)


def budget(results: dict[str, Any], model: str = "mnist-cnn", concurrency: int = 32) -> str:
    """Where the CPU goes at one point, from the run's own figures: what caps Myelin against the limit."""
    lines = []
    for run in results["runs"]:
        if (run["system"], run["model"], run["concurrency"]) != ("myelin-batching-on", model, concurrency):
            continue
        limit = _limit(results, model, run["notes"]["in_process_batch"])
        compute = limit["cpu_us_per_row"]
        per_request = run["server_cpu_us"] + run["client_cpu_us"]  # us of CPU, both processes
        overhead = per_request - compute
        # Server and load generator share the machine's cores: at these per-request costs, all of
        # them busy all the time would serve at most this many requests a second.
        cores = results["machine"]["cores"]
        ceiling, reference = cores * 1e6 / per_request, limit["rows_per_s"]
        lines.append(
            f"- {run['api']}: per request the server process used {run['server_cpu_us']:.0f} us of CPU "
            f"(onnxruntime included) and the load generator {run['client_cpu_us']:.0f} us. onnxruntime alone "
            f"needs {compute:.0f} us of CPU per row at batch {limit['batch']} (in-process), so serving cost "
            f"about {overhead:.0f} us per request on top of the model, {overhead / compute:.1f}x its compute. "
            f"With all {cores} cores busy all the time, {per_request:.0f} us per request would allow at most "
            f"{ceiling:.0f} req/s, {ceiling / reference:.2f}x the in-process rate ({reference:.0f} rows/s); "
            f"this run served {run['rps']:.0f} req/s, using {run['rps'] * per_request / 1e6:.2f} of the "
            f"{cores} cores."
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in results["runs"]}, reverse=True)
    figure, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        runs = [r for r in results["runs"] if r["model"] == model]
        for system, api in sorted({(r["system"], r["api"]) for r in runs}):
            series = sorted((r["concurrency"], r["rps"]) for r in runs if (r["system"], r["api"]) == (system, api))
            label = f"{LABELS.get(system, system)} ({api})"
            ax.plot(*zip(*series, strict=True), marker="o", label=label)
        limit = []
        for concurrency in sorted({r["concurrency"] for r in runs}):
            batched = next(
                (
                    r
                    for r in runs
                    if r["concurrency"] == concurrency
                    and r["system"] == "myelin-batching-on"
                    and r["api"] == "ModelInfer"
                ),
                None,
            )
            if batched:
                limit.append((concurrency, _limit(results, model, batched["notes"]["in_process_batch"])["rows_per_s"]))
        if limit:
            ax.plot(
                *zip(*limit, strict=True), linestyle="--", color="grey", label="onnxruntime in-process (same batch)"
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(model)
        ax.set_xlabel("concurrent callers")
        ax.set_ylabel("requests/s (one image each)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def write(results: dict[str, Any], folder: Path) -> None:
    plot(results, folder / PLOT)
    m = results["machine"]
    s = results["settings"]
    sections = [
        "# Benchmark: Myelin vs MLServer vs onnxruntime in-process (digit classifiers); generation, gRPC vs SSE",
        "",
        f"Generated by `{results.get('command', 'make bench')}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; wall time {results['wall_seconds']:.0f} s.",
        "",
        *(
            []
            if results.get("cpu_lock_held") and not results.get("partial")
            else [
                "> **Preliminary.** "
                + (
                    ""
                    if results.get("cpu_lock_held")
                    else "This run did not hold /tmp/myelin-cpu.lock: other "
                    "heavy jobs shared the two cores, so the figures are noisy and pessimistic. "
                )
                + ("It covers only part of the grid. " if results.get("partial") else "")
                + "`make bench` replaces it with the full run under the lock.",
                "",
            ]
        ),
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; {m['memory_gib']} GiB; {m['os']}",
        f"- Python {m['python']}, onnxruntime {m['onnxruntime']}, grpcio {m['grpcio']}, MLServer {m['mlserver']}",
        f"- load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}; "
        f"at the end: {', '.join(f'{x:.2f}' for x in m['load_average_at_end'])}. The load generator shares the "
        "two cores with the server under test.",
        "",
        "## Set-up",
        "",
        "- Request: one 28x28 float32 image as raw little-endian bytes. Myelin Classify: `RawImage` "
        "(FLOAT32), top_k 1. KServe `ModelInfer` (Myelin and MLServer): the same serialized "
        "`ModelInferRequest`, `image` FP32 [1, 28, 28] in `raw_input_contents`.",
        "- REST rows (mnist-cnn, concurrency 1 and 32): KServe v2 REST `POST /v2/models/mnist-cnn/infer` "
        "on Myelin's HTTP port and on MLServer's, the same pixels as a JSON body (`image` FP32 [1, 28, 28], "
        "784 numbers, about 16 KB), pre-serialized; one keep-alive HTTP/1.1 connection per caller, answers "
        "read with httptools and the first one decoded and checked. Their 'vs MLServer' is against "
        "MLServer's REST.",
        "- MLServer 1.7.1 in its own virtualenv, `parallel_workers: 0`, a minimal custom runtime "
        "(`benchmarks/classifier/mlserver_runtime.py`: NumpyCodec in, `session.run`, NumpyCodec out), "
        "V2 gRPC, measured with both input forms (raw_input_contents, and the same pixels as typed "
        "fp32_contents); the 'vs MLServer' ratios use its faster one at each point. Default settings "
        "otherwise (no adaptive batching).",
        f"- Every server: onnxruntime intra-op threads {s['threads']}, no spinning. Myelin batching: "
        f"max_batch_size {s['max_batch']}, max_queue_delay_us {s['delay_us']}.",
        f"- Load: closed loop, asyncio + grpc.aio, one channel; per run {s['warmup']} s warm-up, then at "
        f"most {s['seconds']} s or {s['max_requests']} requests. Requests are pre-serialized and answers "
        "kept as bytes (the first answer of every run is decoded and checked against the graph).",
        "- rows/exec: rows per onnxruntime execution in Myelin (its `myelin_batch_size` histogram over the "
        "run). vs in-process: Myelin's req/s over onnxruntime called in this process at that batch size "
        f"(rounded), with the SAME session options as the servers ({s['threads']} intra-op thread, no "
        "spinning), so the ratio measures what serving costs on top of the model: the limit without "
        "network or queue. The in-process row also gives the fastest of 1 and 2 intra-op threads ('best'), "
        "which no server here uses; the acceptance lines print the ratio to it too.",
        "- CPU us/req: CPU time (all threads) of the server process and of the load generator per "
        "request during the measured phase; for the in-process row, onnxruntime's CPU time per row. "
        "Two cores give 2,000,000 us of CPU per second to share.",
        "",
        "## Results",
        "",
    ]
    for model in sorted({r["model"] for r in results["runs"]}, reverse=True):
        sections += [f"### {model}", "", markdown_table(rows(results, model)), ""]
    if results.get("sse"):
        sse = results["sse"]
        sections += [
            f"### {sse['model']}: streams over gRPC and over server-sent events",
            "",
            f"{sse['tokens']} new tokens per stream (temperature 0.8, prompt 'ROMEO:'), the same seeds through both "
            "doors; gRPC: `Generator.Generate` through the SDK (`Client` for one stream, `AsyncClient` for "
            f"{sse['streams']}); SSE: `POST /v1/completions` with `stream: true` and "
            "`stream_options.include_usage`, one keep-alive connection per stream opened before the clock "
            "starts, every event parsed. tokens/s from sending the request(s) to the last token; the "
            f"median of {sse['repeats']} interleaved rounds, the range in brackets.",
            "",
            sse_table(results),
            "",
        ]
    sections += [
        f"![requests/s against concurrency]({PLOT})",
        "",
        "## Acceptance",
        "",
        "```",
        acceptance(results).strip(),
        "```",
        "",
        "## Where the CPU goes (mnist-cnn, concurrency 32)",
        "",
        budget(results),
        "",
        "## Notes on the serving engine",
        "",
        "- Concurrency 1: the batcher does not sit out `max_queue_delay` for a lone caller. It keeps a "
        "moving average of the gaps between arrivals (starting at twice the delay: nobody expected) and "
        "waits only when the next request is due inside the window; a lone request whose batch is "
        "expected to run in under 0.5 ms runs on the event loop, with no hand-off to the worker thread. "
        "The acceptance lines compare batching on with batching off at concurrency 1 for that reason.",
        "- Concurrency 32: batches form from the requests that queued while the previous batch ran "
        "(one onnxruntime call in flight per model, `instances` 1); the delay window only matters "
        "when the queue holds nothing older than it.",
        "- The Myelin process runs on uvloop (`MYELIN_EVENT_LOOP`), with a GIL switch interval of "
        "100 us (`MYELIN_GIL_SWITCH_INTERVAL_US`; Python's default of 5 ms kept the onnxruntime "
        "thread waiting for the GIL around every batch, and 500 us still cost REST 13-15% of its "
        "requests/s at concurrency 32), and its interceptor wraps each method handler once at "
        "registration instead of running grpc.aio's per-call interceptor pipeline. On the HTTP "
        "port, the inference routes are dispatched straight to their handlers, past Starlette's "
        "router and middleware.",
        "- A second server process on the same port (SO_REUSEPORT workers) is not offered: the kernel "
        "spreads connections, not requests, so one client channel (this load generator, or any gRPC "
        "client with one channel) still lands on one process, and each process batches only its own "
        "share (smaller batches). On this machine the server (event loop thread about 0.6 of a core, "
        "onnxruntime thread about 0.55, gRPC's own threads 0.1) and the load generator (0.3) already "
        "use about 1.6 of the 2 cores at concurrency 32, so a second process has no core of its own. "
        "On machines with spare cores, run "
        "more replicas behind a load balancer (deploy/k8s) or one process per model family.",
        "- Why not all of both cores (2026-12-03, CNN ModelInfer at concurrency 32, per-thread CPU from "
        "/proc over 8 s, ad-hoc): the event loop thread used 0.61 of a core, the onnxruntime thread 0.51, "
        "gRPC's threads 0.06, the load generator 0.28. onnxruntime was inside `run()` 74% of the time "
        "(4.3 ms per 10.6-row batch against 2.6 ms in-process) but on a core only 51%: the closed loop "
        "alternates between moments when the event loop, the model and the load generator all want a "
        "core (three threads, two cores) and moments when each waits for another. A GIL switch interval "
        "of 100, 500 or 2,000 us (1,826 / 1,840 / 1,859 req/s), a queue delay of 0 or 1,000 us, and a "
        "higher scheduling priority for the worker threads (nice -10: 1,641 and 1,784 against 1,950 "
        "req/s) did not change that.",
        "",
        "Reproduce: `make bench` (trains the quick models into .bench/ and builds .bench/mlserver-venv on "
        "first use; holds /tmp/myelin-cpu.lock for the whole run). Raw figures: .bench/results.json.",
        "",
    ]
    (folder / "RESULTS.md").write_text("\n".join(sections))
