"""`myelin-train FAMILY ...` and `myelin-eval FAMILY ...`: one command for every model family."""

from __future__ import annotations

import importlib
import sys

# Family -> module with main(argv). Imported lazily so `--help` stays fast and one family's
# dependencies never load for another.
TRAINERS = {
    "mlp": "myelin_training.mlp.train",
    "cnn": "myelin_training.cnn.train",
    "generator": "myelin_training.generator.train",
    "generator-export": "myelin_training.generator.reexport",
    "translator": "myelin_training.translator.train",
    "word2vec": "myelin_training.word2vec.train",
}
EVALUATORS = {
    "classifier": "myelin_training.evaluate_classifier",
    "generator": "myelin_training.generator.evaluate",
    "translator": "myelin_training.translator.evaluate",
    "word2vec": "myelin_training.word2vec.evaluate_cli",
}


def _dispatch(prog: str, table: dict[str, str], argv: list[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in table:
        names = "|".join(table)
        print(f"usage: {prog} {{{names}}} [options]   ({prog} FAMILY --help for the options)", file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"{prog}: unknown family {argv[0]!r}", file=sys.stderr)
            raise SystemExit(2)
        raise SystemExit(0 if argv else 2)
    importlib.import_module(table[argv[0]]).main(argv[1:])


def train_main(argv: list[str] | None = None) -> None:
    _dispatch("myelin-train", TRAINERS, argv)


def eval_main(argv: list[str] | None = None) -> None:
    _dispatch("myelin-eval", EVALUATORS, argv)
