"""`myelin`: the command line for Myelin's services.

    myelin classify digit.png another.jpg --model mnist-cnn --top-k 3
    myelin translate "I am cold." "Where is the station?" --beam-size 4
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


def _translate(client: Client, args: argparse.Namespace) -> int:
    result = client.translate(
        args.sentences,
        model=args.model,
        version=args.version,
        beam_size=args.beam_size,
        max_length=args.max_length,
        length_penalty=args.length_penalty,
        truncate=args.truncate,
    )
    if args.json:
        print(json.dumps(asdict(result), indent=2, ensure_ascii=False))
        return 0
    print(f"model {result.model} version {result.version}")
    for sentence, translation in zip(args.sentences, result, strict=True):
        notes = [] if translation.finished else ["max_length reached"]
        if translation.source_truncated:
            notes.append("source truncated")
        note = f"  [{', '.join(notes)}]" if notes else ""
        print(f"{sentence}\n  -> {translation.text}  (score {translation.score:.3f}){note}")
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

    translate = commands.add_parser("translate", help="translate English sentences to French")
    translate.add_argument("sentences", nargs="+", help="English sentences (quote each one)")
    translate.add_argument("--model", default="translator-tatoeba")
    translate.add_argument("--version", type=int, default=0, help="0: newest")
    translate.add_argument("--beam-size", type=int, help="1 is greedy (service default: 4)")
    translate.add_argument("--max-length", type=int, help="most tokens per translation")
    translate.add_argument("--length-penalty", type=float, help="alpha in [0, 2] (service default: 0.6)")
    translate.add_argument("--truncate", action="store_true", help="cut over-long sentences instead of refusing")
    translate.add_argument("--json", action="store_true")
    translate.set_defaults(run=_translate)

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
