"""`make demo`: the suite end to end on a fresh checkout.

Trains every model family with its quick config, exports it into a fresh model repository
(.demo/repository), starts each service on a free port, calls it through the Python SDK and the
`myelin` CLI, prints what came back, and stops the services cleanly (SIGTERM, graceful drain).
Each act first says what its quick model is and what the full recipe reaches (the README's
figures, measured on a 2-core CPU); the demo ends with word2vec answering king - man + woman.
`make up` afterwards serves the same repository.

Data: $MYELIN_DATA_DIR (the Makefile points it at ../shared/data).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from myelin_client import Client
from myelin_serving.launch import serve_command, wait_ports
from myelin_stack import CONSOLE_PORT
from myelin_training.data import mnist
from myelin_training.evaluate_classifier import evaluate

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
REPOSITORY = DEMO / "repository"
BIN = Path(sys.executable).parent


# What each act's quick model is, and what the full recipe reaches (README, 2-core CPU, seed 0).
ABOUT = {
    "digits": "quick configs: mnist-mlp 3 epochs (about 30 s), mnist-cnn 1 epoch (about 75 s), about 98.2% and "
    "99.2% test accuracy. The full recipes (`myelin-train mlp` 30 epochs, `cnn` 12, with augmentation) reach "
    "99.16% and 99.60% in 4.5 and 21 minutes.",
    "translator": "quick config: a 2+2-layer Transformer (d_model 128) trained for ONE epoch, a few minutes: "
    "expect rough French (greedy test BLEU about 8). The full recipe (`myelin-train translator --config cpu`: "
    "8 epochs, 82 minutes) reaches test BLEU 40.7 with beam 4 (38.8 greedy).",
    "generator": "quick config: a 2-layer GPT (d_model 128, block 256) trained for 2 minutes of CPU time: "
    "recognisable words and speakers, not verse. The full CPU recipe (4 layers, d_model 256, 28 minutes) "
    "reaches a validation loss of 1.523 (perplexity 4.59).",
    "word2vec": "skip-gram for 3 epochs (quick) and CBOW for 5 (the default recipe) on ~1.9M words of English. "
    "The full recipe (5 epochs each) reaches 12.3% (skip-gram) and 14.2% (CBOW) analogy accuracy on "
    "questions-words, as gensim does on the same text (12.2% and 14.0%); CBOW answers man : king :: woman : queen.",
}


# The word2vec runs and the model the closing analogy asks: data that the demo's test reads too.
WORD2VEC = json.loads((ROOT / "scripts" / "demo_word2vec.json").read_text())
CLOSING_MODEL = WORD2VEC["closing_model"]


def word2vec_args(run: dict[str, Any], data_dir: Path, repository: Path, runs: Path) -> list[str]:
    """`myelin-train` arguments of one of the demo's word2vec runs."""
    arch = run["arch"]
    return [*WORD2VEC["train"], "--data-dir", str(data_dir), "--arch", arch, "--epochs", str(run["epochs"]),
            "--repository", str(repository), "--run-dir", str(runs / f"word2vec-{arch}")]  # fmt: skip


def banner(text: str) -> None:
    print(f"\n{'=' * 8} {text} {'=' * (70 - len(text))}", flush=True)


def about(act: str) -> None:
    print(textwrap.fill(ABOUT[act], width=100), flush=True)


def run(*args: str | Path) -> None:
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)


@contextlib.contextmanager
def service(family: str) -> Iterator[str]:
    """`myelin-serve FAMILY` on a free port; yields its target, stops it with SIGTERM."""
    port_file = DEMO / f"{family}.port"
    port_file.unlink(missing_ok=True)
    log = (DEMO / f"{family}.log").open("w")
    process = subprocess.Popen(
        serve_command(family, REPOSITORY, host=None, http_port=0, port_file=port_file),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ports = wait_ports(port_file, process, 60)
        if ports is None:
            raise SystemExit(f"myelin-serve {family} did not start; see {log.name}")
        http = f"http://127.0.0.1:{ports['http_port']}"
        print(f"{family} service: grpc 127.0.0.1:{ports['port']}, {http} (REST, /metrics)")
        yield f"127.0.0.1:{ports['port']}"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        log.close()
        print(f"{family} service stopped (SIGTERM, exit code {code})")


def ascii_digit(image: np.ndarray) -> str:
    ramp = " .:-=+*#%@"
    return "\n".join("".join(ramp[int(p) * (len(ramp) - 1) // 255] for p in row[::1]) for row in image[3:25:2, 2:26])


def classifier_act(data_dir: Path) -> None:
    banner("digits: train mnist-mlp and mnist-cnn (quick config)")
    about("digits")
    for arch in ("mlp", "cnn"):
        run(
            BIN / "myelin-train",
            arch,
            "--config",
            "quick",
            "--data-dir",
            data_dir,
            "--repository",
            REPOSITORY,
            "--run-dir",
            DEMO / "runs" / f"mnist-{arch}",
        )
    test = mnist.load_split(data_dir, "test")
    digits = DEMO / "digits"
    digits.mkdir(exist_ok=True)
    files = []
    for i in range(3):
        path = digits / f"test-{i}-label-{test.labels[i]}.png"
        Image.fromarray(test.images[i]).save(path)
        files.append(path)

    banner("digits: serve and classify through the SDK")
    with service("classifier") as target, Client(target, timeout=60) as client:
        client.wait_ready()
        for model in client.list_models():
            print(
                f"{model.name} v{model.version} ({model.architecture}) on {model.execution_provider}: "
                f"test accuracy at training {model.evaluation['test_accuracy']:.4%}"
            )
        for name in ("mnist-mlp", "mnist-cnn"):
            report = evaluate(client, name, test.images, test.labels)
            same = "identical to" if report["same_predictions"] else "DIFFERENT from"
            print(
                f"{name}: served accuracy {report['served_accuracy']:.4%} on all {report['images']} test images, "
                f"predictions {same} the offline evaluation ({report['images_per_second']:.0f} images/s)"
            )
        result = client.classify(test.images[:8], model="mnist-cnn", top_k=2)
        print(f"\nfirst 8 test digits through mnist-cnn v{result.version}:")
        for label, c in zip(test.labels[:8], result, strict=True):
            top = ", ".join(f"{p.label} ({p.probability:.3f})" for p in c.labels)
            print(f"  true {label}: {top}")
        print(ascii_digit(test.images[0]))
        buffer = io.BytesIO()
        Image.fromarray(test.images[0]).save(buffer, format="PNG")
        print(f"the digit above, as PNG bytes: {client.classify(buffer.getvalue()).labels[0]}")
        run(BIN / "myelin", "--target", target, "classify", *files, "--top-k", "2")


def translator_act(data_dir: Path) -> None:
    banner("translator: train translator-tatoeba (quick config: minutes, not the accuracy target)")
    about("translator")
    run(
        BIN / "myelin-train",
        "translator",
        "--config",
        "quick",
        "--data-dir",
        data_dir,
        "--repository",
        REPOSITORY,
        "--run-dir",
        DEMO / "runs" / "translator-tatoeba",
    )
    sentences = ["I am cold.", "Where is the train station?", "She doesn't like coffee.", "We're going home."]
    banner("translator: serve and translate through the SDK (greedy vs beam search)")
    with service("translator") as target, Client(target, timeout=120) as client:
        client.wait_ready()
        info = client.get_model("translator-tatoeba")
        print(
            f"translator-tatoeba v{info.version} on {info.execution_provider}: test BLEU at training "
            f"{info.evaluation['test_bleu_greedy']:.1f} (greedy, PyTorch)"
        )
        greedy = client.translate(sentences, beam_size=1)
        beam = client.translate(sentences, beam_size=4)
        for sentence, g, b in zip(sentences, greedy, beam, strict=True):
            print(f"  {sentence}\n    greedy: {g.text}  ({g.score:.2f})\n    beam 4: {b.text}  ({b.score:.2f})")
        run(BIN / "myelin", "--target", target, "translate", "I am cold.", "Thank you very much!")
        run(
            BIN / "myelin-eval",
            "translator",
            "--target",
            target,
            "--data-dir",
            data_dir,
            "--limit",
            "500",
            "--examples",
            "3",
        )


def word2vec_act(data_dir: Path) -> None:
    banner("word2vec: train skip-gram (3 epochs) and CBOW (5) on ~1.9M words of English")
    about("word2vec")
    for one in WORD2VEC["runs"]:
        run(BIN / "myelin-train", *word2vec_args(one, data_dir, REPOSITORY, DEMO / "runs"))

    banner("word2vec: serve both and ask for neighbours and analogies through the SDK")
    with service("embedder") as target, Client(target, timeout=60) as client:
        client.wait_ready()
        for model in client.list_models():
            e = model.evaluation
            print(
                f"{model.name} v{model.version}: analogy accuracy {e['analogy_accuracy']:.2%} "
                f"({e['analogy_answered']:.0f} questions in vocabulary), WordSim-353 rho "
                f"{e['wordsim353_spearman']:.3f}, SimLex-999 rho {e['simlex999_spearman']:.3f}"
            )
        for name in ("word2vec-skipgram", "word2vec-cbow"):
            print(f"\n{name}:")
            known = [v.word for v in client.embed(["king", "france", "three", "walking"], model=name) if v.found]
            for word in known:
                near = client.most_similar(word, model=name, top_k=6)
                print(f"  nearest to {word}: {', '.join(near.words)}")
            for a, b, c in (("man", "king", "woman"), ("france", "paris", "germany"), ("good", "better", "bad")):
                answer = client.analogy(a, b, c, model=name, top_k=3)
                others = ", ".join(n.word for n in answer.candidates[1:])
                print(f"  {a} : {b} :: {c} : {answer.word}   (then {others})")
            pairs = client.similarity([("king", "queen"), ("king", "car")], model=name)
            print("  " + "; ".join(f"{p.first} ~ {p.second} = {p.similarity}" for p in pairs))
            odd = client.doesnt_match(["breakfast", "lunch", "dinner", "car"], model=name)
            print(f"  odd one out of breakfast, lunch, dinner, car: {odd.word}")
        run(
            BIN / "myelin-eval",
            "word2vec",
            "--target",
            target,
            "--model",
            "word2vec-skipgram",
            "--model-dir",
            REPOSITORY / "word2vec-skipgram" / "1",
            "--data-dir",
            data_dir,
        )
        banner("word2vec: king - man + woman, through the CLI")
        run(BIN / "myelin", "--target", target, "analogy", "man", "king", "woman", "--model", CLOSING_MODEL)


def generator_act(data_dir: Path) -> None:
    banner("text: train generator-gpt-shakespeare (quick config)")
    about("generator")
    run(
        BIN / "myelin-train",
        "generator",
        "--arch",
        "gpt",
        "--config",
        "quick",
        "--data-dir",
        data_dir,
        "--repository",
        REPOSITORY,
        "--run-dir",
        DEMO / "runs" / "generator-gpt-shakespeare",
    )

    banner("text: serve it and stream a sample through the SDK")
    with service("generator") as target, Client(target, timeout=60) as client:
        client.wait_ready()
        info = client.get_model("generator-gpt-shakespeare")
        print(
            f"{info.name} v{info.version} ({info.architecture}) on {info.execution_provider}: "
            f"validation loss at training {info.evaluation['validation_loss']:.3f}\n"
        )
        print("ROMEO:", end="", flush=True)
        with client.generate("ROMEO:", max_new_tokens=200, temperature=0.8, top_k=40, seed=1) as stream:
            for chunk in stream:
                print(chunk.text, end="", flush=True)
        done = stream.completion
        if done is not None:
            print(f"\n[{done.finish_reason}: {done.generated_tokens} tokens, seed {done.seed}]")
        stopped = client.complete("JULIET:", max_new_tokens=200, temperature=0.8, seed=2, stop=["\n\n"])
        print(f"JULIET: up to the first blank line -> {stopped.finish_reason!r}: {stopped.text!r}")
        run(BIN / "myelin", "--target", target, "generate", "KING:", "--max-new-tokens", "80", "--temperature", "0.8")
        # Perplexity and bits per character on the validation split, through the service.
        run(BIN / "myelin-eval", "generator", "--target", target, "--data-dir", data_dir, "--concurrency", "32")


def main() -> None:
    data_dir = Path(os.environ.get("MYELIN_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data_dir / "mnist").is_dir():
        raise SystemExit(
            f"no datasets at {data_dir}: set MYELIN_DATA_DIR to the folder described in ../shared/data/README.md"
        )
    shutil.rmtree(REPOSITORY, ignore_errors=True)
    REPOSITORY.mkdir(parents=True)
    started = time.monotonic()
    classifier_act(data_dir)
    translator_act(data_dir)
    generator_act(data_dir)
    word2vec_act(data_dir)
    banner(f"demo finished in {time.monotonic() - started:.0f} s; `make up` serves {REPOSITORY.relative_to(ROOT)}")
    print(
        f"see and try them in a browser: `make up` starts the services and the web console at "
        f"http://127.0.0.1:{CONSOLE_PORT} (`make down` stops them)"
    )


if __name__ == "__main__":
    main()
