"""`myelin-console [--host H] [--port P] [--port-file F]`: the console on uvicorn.

Flags override MYELIN_CONSOLE_* variables (settings.py). The socket is bound before uvicorn
starts, so port 0 picks a free port, which is printed and written to --port-file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from myelin_console.app import create_app
from myelin_console.settings import ConsoleSettings

log = logging.getLogger("myelin_console")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="myelin-console", description="Serve Myelin's web console.")
    parser.add_argument("--host", help="address to bind (MYELIN_CONSOLE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port, 0 picks a free one (MYELIN_CONSOLE_PORT, default 8080)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here as JSON once listening")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    try:
        settings = ConsoleSettings(**overrides)
    except ValidationError as exc:
        print(f"myelin-console: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = socket.create_server((settings.host, settings.port), reuse_port=False)
    except OSError as exc:
        print(
            f"myelin-console: could not listen on {settings.host}:{settings.port}: {exc.strerror or exc}; "
            "choose another port with --port or MYELIN_CONSOLE_PORT",
            file=sys.stderr,
        )
        return 1
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), log_config=None, access_log=False, server_header=False, ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    deployed = [f for f in ("classifier", "translator", "generator", "embedder") if settings.url(f)]
    log.info("myelin console on http://%s:%d (services: %s)", settings.host, port, ", ".join(deployed) or "none")
    if args.port_file is not None:
        args.port_file.write_text(json.dumps({"port": port}))
    asyncio.run(server.serve(sockets=[sock]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
