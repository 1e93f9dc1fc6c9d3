"""`myelin-serve FAMILY --repository DIR [--host H] [--port P] [--metrics-port M]`.

Flags override MYELIN_* variables, which override the defaults in settings.py. SIGTERM or SIGINT
starts a graceful stop: health goes NOT_SERVING, new calls are refused, calls in flight finish
within the grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from pydantic import ValidationError

from myelin_serving.server import FAMILIES, create_server
from myelin_serving.settings import Settings

log = logging.getLogger("myelin_serving")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="myelin-serve", description="Serve one model family over gRPC.")
    parser.add_argument("service", choices=sorted(FAMILIES), help="model family to serve")
    parser.add_argument("--repository", type=Path, help="model repository (MYELIN_REPOSITORY)")
    parser.add_argument("--host", help="address to bind (MYELIN_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gRPC port, 0 picks a free one (MYELIN_PORT, default 50051)")
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus port, -1 for none (MYELIN_METRICS_PORT, default 9464)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (MYELIN_DEVICE, default auto)")
    parser.add_argument("--port-file", type=Path, help="write the bound ports here as JSON once listening")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "service": args.service,
            "repository": args.repository,
            "host": args.host,
            "port": args.port,
            "metrics_port": args.metrics_port,
            "device": args.device,
        }.items()
        if value is not None
    }
    return args, overrides


async def serve(settings: Settings, port_file: Path | None) -> None:
    server, port = create_server(settings)
    await server.start()
    metrics = f"http://{settings.metrics_host}:{server.metrics_port}/metrics" if server.metrics_port else "off"
    log.info("%s service listening on %s:%d (metrics: %s)", settings.service, settings.host, port, metrics)
    if port_file is not None:
        port_file.write_text(json.dumps({"port": port, "metrics_port": server.metrics_port}))  # noqa: ASYNC240 - once, tiny
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: NOT_SERVING now, up to %.0f s for requests in flight", settings.grace_period_s)
    await server.stop()


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
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            runner.run(serve(settings, args.port_file))
    except OSError as exc:
        sys.exit(f"myelin-serve: {exc}")


if __name__ == "__main__":
    main()
