"""`myelin`: the command line for Myelin's services.

    myelin classify digit.png another.jpg --model mnist-cnn --top-k 3
    myelin generate "ROMEO:" --max-new-tokens 200 --temperature 0.8
    myelin models
    myelin health

--target defaults to $MYELIN_TARGET or 127.0.0.1:50051; --token to $MYELIN_TOKEN (or --token-file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from myelin_client.client import Client
from myelin_client.errors import MyelinError

Command = Callable[[Client, argparse.Namespace], int]


def _classify(client: Client, args: argparse.Namespace) -> int:
    result = client.classify([Path(f) for f in args.files], model=args.model, version=args.version, top_k=args.top_k)
    print(f"model {result.model} version {result.version}")
    for path, classification in zip(args.files, result, strict=True):
        labels = ", ".join(f"{p.label} ({p.probability:.3f})" for p in classification.labels)
        print(f"{path}: {labels}")
    return 0


def _generate(client: Client, args: argparse.Namespace) -> int:
    options = {
        "model": args.model,
        "version": args.version,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": args.stop,
    }
    if args.no_stream:
        result = client.complete(args.prompt, **options)
        print(args.prompt + result.text)
    else:
        print(args.prompt, end="", flush=True)
        with client.generate(args.prompt, **options) as stream:
            for chunk in stream:
                print(chunk.text, end="", flush=True)
        print()
        if stream.completion is None:  # pragma: no cover - the service always ends with a finish
            return 1
        result = stream.completion
    stop = f" at {result.stop_sequence!r}" if result.stop_sequence else ""
    print(
        f"[{result.model} v{result.version}: {result.finish_reason}{stop}, {result.prompt_tokens} prompt + "
        f"{result.generated_tokens} generated tokens, seed {result.seed}]",
        file=sys.stderr,
    )
    return 0


def _models(client: Client, args: argparse.Namespace) -> int:
    models = client.list_models()
    if args.json:
        print(json.dumps([asdict(m) for m in models], indent=2))
        return 0
    for m in models:
        versions = ", ".join(f"{v.version}:{v.state.lower()}" for v in m.versions)
        figures = ", ".join(f"{k}={v:.4g}" for k, v in sorted(m.evaluation.items()))
        print(f"{m.name}  {m.family}/{m.architecture}  versions [{versions}]  {m.execution_provider}  {figures}")
    return 0


def _health(client: Client, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myelin", description="Call Myelin's gRPC services.")
    parser.add_argument(
        "--target", default=os.environ.get("MYELIN_TARGET", "127.0.0.1:50051"), help="HOST:PORT or dns:///name:port"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    parser.add_argument("--token", default=os.environ.get("MYELIN_TOKEN"), help="bearer token")
    parser.add_argument("--token-file", type=Path, help="file whose first line is the bearer token (not in `ps`)")
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    parser.add_argument("--tls-ca", type=Path, help="PEM file of the CA that signed the server's certificate")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="client private key (mutual TLS)")
    commands = parser.add_subparsers(dest="command", required=True)

    classify = commands.add_parser("classify", help="classify image files")
    classify.add_argument("files", nargs="+", help="PNG or JPEG files")
    classify.add_argument("--model", default="mnist-cnn")
    classify.add_argument("--version", type=int, default=0, help="0: newest")
    classify.add_argument("--top-k", type=int, default=1)
    classify.set_defaults(run=_classify)

    generate = commands.add_parser("generate", help="continue a prompt, printing the text as it streams")
    generate.add_argument("prompt", help="the text to continue (may be empty)")
    generate.add_argument("--model", default="generator-gpt-shakespeare")
    generate.add_argument("--version", type=int, default=0, help="0: newest")
    generate.add_argument("--max-new-tokens", type=int, default=0, help="0: the service default")
    generate.add_argument("--temperature", type=float, help="0 is greedy (default 1)")
    generate.add_argument("--top-k", type=int, default=0, help="0: off")
    generate.add_argument("--top-p", type=float, help="nucleus sampling, in (0, 1] (default 1: off)")
    generate.add_argument("--repetition-penalty", type=float, help="above 1 discourages repeats (default 1: off)")
    generate.add_argument("--seed", type=int, help="the same seed gives the same text")
    generate.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    generate.add_argument("--no-stream", action="store_true", help="wait for the whole text (Complete)")
    generate.set_defaults(run=_generate)

    models = commands.add_parser("models", help="list the models a service serves")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=_models)

    health = commands.add_parser("health", help="print the health status; exit 1 unless SERVING")
    health.add_argument("--service", default="", help="a gRPC service name; empty for the whole server")
    health.set_defaults(run=_health)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.token_file is not None:
            args.token = next(iter(args.token_file.read_text().splitlines()), "").strip() or None
        with Client(
            args.target,
            timeout=args.timeout,
            token=args.token,
            tls=args.tls,
            root_certificates=args.tls_ca,
            certificate_chain=args.tls_cert,
            private_key=args.tls_key,
        ) as client:
            run: Command = args.run
            code = run(client, args)
    except MyelinError as exc:
        print(f"myelin: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:
        print(f"myelin: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


if __name__ == "__main__":
    main()
