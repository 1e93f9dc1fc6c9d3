"""`myelin`: the command line for Myelin's services.

    myelin classify digit.png another.jpg --model mnist-cnn --top-k 3
    myelin generate "ROMEO:" --max-new-tokens 200 --temperature 0.8
    myelin translate "I am cold." "Where is the station?" --beam-size 4
    myelin analogy man king woman                 # man : king :: woman : ?
    myelin most-similar king woman --negative man
    myelin similarity king queen  cat dog         # pairs
    myelin doesnt-match breakfast lunch dinner car
    myelin embed king queen
    myelin models
    myelin unload mnist-mlp; myelin load mnist-mlp
    myelin health

--target defaults to $MYELIN_TARGET, else to 127.0.0.1 and the port of the family the command calls
(the default_port its .proto names: classify 50051, translate 50052, generate 50053, the embedder
commands 50054; models and health 50051); --token to $MYELIN_TOKEN (or --token-file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from myelin_client import _diagnosis
from myelin_client._channel import DEFAULT_EMBEDDER
from myelin_client.client import Client
from myelin_client.errors import MyelinError
from myelin_client.types import GenerationOptions, Neighbour

Command = Callable[[Client, argparse.Namespace], int]
# The service each command calls, for its default --target (models and health: any service has them).
CLASSIFIER, TRANSLATOR, GENERATOR, EMBEDDER = (
    f"myelin_api.v1.{name}" for name in ("Classifier", "Translator", "Generator", "Embedder")
)


def _classify(client: Client, args: argparse.Namespace) -> int:
    result = client.classify([Path(f) for f in args.files], model=args.model, version=args.version, top_k=args.top_k)
    print(f"model {result.model} version {result.version}")
    for path, classification in zip(args.files, result, strict=True):
        labels = ", ".join(f"{p.label} ({p.probability:.3f})" for p in classification.labels)
        print(f"{path}: {labels}")
    return 0


def _generate(client: Client, args: argparse.Namespace) -> int:
    options: GenerationOptions = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": args.stop,
    }
    if args.no_stream:
        result = client.complete(args.prompt, model=args.model, version=args.version, **options)
        print(args.prompt + result.text)
    else:
        print(args.prompt, end="", flush=True)
        with client.generate(args.prompt, model=args.model, version=args.version, **options) as stream:
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


def _translate(client: Client, args: argparse.Namespace) -> int:
    result = client.translate(
        args.sentences,
        model=args.model,
        version=args.version,
        beam_size=args.beam_size,
        max_length=args.max_length,
        length_penalty=args.length_penalty,
        truncate=args.truncate,
        beams=args.beams,
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
        for rank, beam in enumerate(translation.beams, 1):
            unfinished = "" if beam.finished else "  [max_length reached]"
            print(f"     {rank}. {beam.text}  (score {beam.score:.3f}){unfinished}")
    return 0


def _embed(client: Client, args: argparse.Namespace) -> int:
    result = client.embed(args.words, model=args.model, version=args.version)
    print(f"model {result.model} version {result.version}, {result.dim} dimensions")
    for v in result:
        shown = " ".join(f"{x:+.3f}" for x in v.vector[:8]) + " ..." if v.vector is not None else "(unknown word)"
        print(f"{v.word}: {shown}")
    return 0 if not result.unknown else 1


def _print_neighbours(neighbours: list[Neighbour]) -> None:
    for n in neighbours:
        print(f"  {n.word:<20} {n.score:.4f}")


def _most_similar(client: Client, args: argparse.Namespace) -> int:
    result = client.most_similar(args.positive, args.negative, model=args.model, version=args.version, top_k=args.top_k)
    query = " + ".join(args.positive) + "".join(f" - {w}" for w in args.negative)
    print(f"nearest to {query} ({result.model} v{result.version}):")
    _print_neighbours(result.neighbours)
    return 0


def _analogy(client: Client, args: argparse.Namespace) -> int:
    answer = client.analogy(args.a, args.b, args.c, model=args.model, version=args.version, top_k=args.top_k)
    if answer.unknown_words:
        print(f"unknown word(s): {', '.join(answer.unknown_words)}", file=sys.stderr)
        return 1
    print(f"{args.a} : {args.b} :: {args.c} : {answer.word}")
    if args.top_k > 1:
        _print_neighbours(answer.candidates)
    return 0


def _similarity(client: Client, args: argparse.Namespace) -> int:
    if len(args.words) % 2:
        print("myelin similarity: give words in pairs (an even number of words)", file=sys.stderr)
        return 2
    pairs = list(zip(args.words[::2], args.words[1::2], strict=True))
    result = client.similarity(pairs, model=args.model, version=args.version)
    for p in result:
        shown = f"{p.similarity:.4f}" if p.similarity is not None else f"unknown: {', '.join(p.unknown_words)}"
        print(f"{p.first} ~ {p.second}: {shown}")
    return 0 if all(p.similarity is not None for p in result) else 1


def _doesnt_match(client: Client, args: argparse.Namespace) -> int:
    result = client.doesnt_match(args.words, model=args.model, version=args.version)
    print(result.word)
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
        for graph, b in sorted(m.batching.items()):
            batching = f"up to {b.max_batch_size} rows, {b.max_queue_delay_us} us delay" if b.enabled else "off"
            print(f"  {graph}: batching {batching}, queue {b.max_queue_size}, {b.instances} instance(s)")
    return 0


def _load(client: Client, args: argparse.Namespace) -> int:
    info = client.load_model(args.name)
    print(f"{info.name} loaded: " + ", ".join(f"{v.version}:{v.state.lower()}" for v in info.versions))
    return 0


def _unload(client: Client, args: argparse.Namespace) -> int:
    print(f"{args.name} unloaded: {', '.join(client.unload_model(args.name)) or 'nothing was loaded'}")
    return 0


def _health(client: Client, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="myelin", description="Call Myelin's gRPC services.")
    parser.add_argument(
        "--target",
        default=os.environ.get("MYELIN_TARGET"),
        help="HOST:PORT or dns:///name:port (default: $MYELIN_TARGET, else 127.0.0.1 and the port of the family "
        "the command calls: classify 50051, translate 50052, generate 50053, embedder commands 50054)",
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
    classify.set_defaults(run=_classify, service=CLASSIFIER)

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
    generate.set_defaults(run=_generate, service=GENERATOR)
    translate = commands.add_parser("translate", help="translate English sentences to French")
    translate.add_argument("sentences", nargs="+", help="English sentences (quote each one)")
    translate.add_argument("--model", default="translator-tatoeba")
    translate.add_argument("--version", type=int, default=0, help="0: newest")
    translate.add_argument("--beam-size", type=int, help="1 is greedy (service default: 4)")
    translate.add_argument("--max-length", type=int, help="most tokens per translation")
    translate.add_argument("--length-penalty", type=float, help="alpha in [0, 2] (service default: 0.6)")
    translate.add_argument("--truncate", action="store_true", help="cut over-long sentences instead of refusing")
    translate.add_argument("--beams", action="store_true", help="also print every hypothesis of the search, best first")
    translate.add_argument("--json", action="store_true")
    translate.set_defaults(run=_translate, service=TRANSLATOR)

    def embedder_command(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument("--model", default=DEFAULT_EMBEDDER)
        command.add_argument("--version", type=int, default=0, help="0: newest")
        command.set_defaults(run=run, service=EMBEDDER)
        return command

    embed = embedder_command("embed", _embed, "print word vectors")
    embed.add_argument("words", nargs="+")
    similar = embedder_command("most-similar", _most_similar, "nearest words to positive minus negative words")
    similar.add_argument("positive", nargs="*", help="words to add")
    similar.add_argument("--negative", "-n", nargs="+", default=[], help="words to subtract")
    similar.add_argument("--top-k", type=int, default=10)
    analogy = embedder_command("analogy", _analogy, "a : b :: c : ?  (myelin analogy man king woman)")
    analogy.add_argument("a")
    analogy.add_argument("b")
    analogy.add_argument("c")
    analogy.add_argument("--top-k", type=int, default=1)
    similarity = embedder_command("similarity", _similarity, "cosine similarity of word pairs")
    similarity.add_argument("words", nargs="+", help="first second [first second ...]")
    odd = embedder_command("doesnt-match", _doesnt_match, "the word that fits least with the others")
    odd.add_argument("words", nargs="+")

    models = commands.add_parser("models", help="list the models a service serves")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=_models)

    load = commands.add_parser("load", help="load a model from the service's repository (again, after unload)")
    load.add_argument("name")
    load.set_defaults(run=_load)
    unload = commands.add_parser("unload", help="stop serving a model until `myelin load` (rescans leave it out)")
    unload.add_argument("name")
    unload.set_defaults(run=_unload)

    health = commands.add_parser("health", help="print the health status; exit 1 unless SERVING")
    health.add_argument("--service", default="", help="a gRPC service name; empty for the whole server")
    health.set_defaults(run=_health)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    target = args.target or _diagnosis.service_target(getattr(args, "service", CLASSIFIER))
    try:
        if args.token_file is not None:
            args.token = next(iter(args.token_file.read_text().splitlines()), "").strip() or None
        with Client(
            target,
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
        print(f"myelin: {target}: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:
        print(f"myelin: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


if __name__ == "__main__":
    main()
