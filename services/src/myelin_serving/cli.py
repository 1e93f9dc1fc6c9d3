"""`myelin-serve FAMILY --repository DIR [--host H] [--port P] [--http-port H]`.

Flags override MYELIN_* variables, which override the defaults in settings.py. SIGTERM or SIGINT
starts a graceful stop: health goes NOT_SERVING, new calls are refused, calls in flight finish
within the grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from pydantic import ValidationError

from myelin_serving import settings_doc
from myelin_serving.families import names
from myelin_serving.runtime import GraphLoadError
from myelin_serving.server import create_server
from myelin_serving.settings import Settings

log = logging.getLogger("myelin_serving")


EXAMPLES = """\
the HTTP port (the gRPC port + 1000 by default) answers curl, KServe v2 REST clients and OpenAI SDKs:
  curl -s -o /dev/null -w '%{http_code}\\n' localhost:51051/v2/health/ready   # 200 once models are loaded
  curl -s localhost:51051/v2/models/mnist-cnn                                # inputs, outputs, versions
  curl -s localhost:51051/v2/models/mnist-cnn/infer -H 'Content-Type: application/json' \\
    -d "{\\"inputs\\": [{\\"name\\": \\"image\\", \\"datatype\\": \\"FP32\\", \\"shape\\": [1, 28, 28], \\
    \\"data\\": $(python3 -c 'print([0] * 784)')}]}"
  curl -sN localhost:51053/v1/completions -H 'Content-Type: application/json' \\
    -d '{"model": "generator-gpt-shakespeare", "prompt": "ROMEO:", "max_tokens": 50, "stream": true}'
  curl -s localhost:51054/v1/embeddings -H 'Content-Type: application/json' \\
    -d '{"model": "word2vec-skipgram", "input": ["king", "the queen"]}'
  curl -s localhost:51051/metrics                                            # Prometheus text
"""


# Settings that are also flags, with any older flag names. A flag's type, help, variable and default
# come from the setting itself (settings_doc), so they are written once, in settings.py.
FLAGS: dict[str, tuple[str, ...]] = {
    "repository": (),
    "host": (),
    "port": (),
    "http_port": ("--metrics-port",),
    "device": (),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="myelin-serve",
        description="Serve one model family over gRPC and HTTP. Every setting is also a MYELIN_* variable; flags win.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("service", choices=names(), help="model family to serve (an installed one)")
    for name, older in FLAGS.items():
        flag = "--" + name.replace("_", "-")
        kind = settings_doc.flag_type(name)
        parser.add_argument(flag, *older, dest=name, type=kind, help=settings_doc.flag_help(name))
    parser.add_argument("--port-file", type=Path, help="write the bound ports here as JSON once listening")
    return parser


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    args = build_parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in ("service", *FLAGS) if getattr(args, name) is not None}
    return args, overrides


async def serve(settings: Settings, port_file: Path | None) -> str | None:
    """Serve until SIGTERM or SIGINT; the reason when the service cannot start."""
    try:
        server, port = create_server(settings)
        await server.start()
    except (OSError, ValueError, GraphLoadError) as exc:
        # Said and dropped here, on the running loop: the half-built server goes with the exception.
        return f"myelin-serve: {exc}"
    http = f"{server.http.scheme}://{server.settings.http_host}:{server.http.port}" if server.http else "off"
    log.info("%s service listening on %s:%d (gRPC); HTTP: %s", settings.service, settings.host, port, http)
    if port_file is not None:
        # Written beside and renamed into place: whoever waits for the file never reads it half written.
        # The staged name is this process's own, so two services given one file cannot take each other's.
        # metrics_port: the HTTP port's older name (/metrics is served there), for existing readers.
        staged = port_file.with_name(f"{port_file.name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps({"port": port, "http_port": server.http_port, "metrics_port": server.http_port}))
        staged.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(server.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    log.info("stopping: NOT_SERVING now, up to %.0f s for requests in flight", settings.grace_period_s)
    await server.stop()
    return f"myelin-serve: {server.failure}" if server.failure else None


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if settings.event_loop == "uvloop":
        return uvloop.new_event_loop
    return None  # asyncio's default loop


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        sys.exit(f"myelin-serve: invalid settings:\n{exc}")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(settings.gil_switch_interval_us / 1e6)  # process-wide: set once, here
    with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
        failure = runner.run(serve(settings, args.port_file))
    if failure is not None:
        sys.exit(failure)


if __name__ == "__main__":
    main()
