#!/opt/myelin/bin/python
"""Train and export every model family into one model repository: compose's `trainer` and the
Kubernetes training Job run this (`myelin-train-all` in the training image).

    myelin-train-all [--config quick|full] [--families classifier,generator] [--force] [--dry-run [--publish]]

FAMILIES is the one list: each family and the `myelin-train` commands that produce its models. A
family whose trainer this image does not have is skipped with a message, so the list can name
families before they land. A family that already has a model in the repository is skipped unless
--force, so bringing the stack up again does not train again. Data and repository come from
MYELIN_DATA_DIR and MYELIN_REPOSITORY, as for `myelin-train`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from myelin_training.cli import TRAINERS
from myelin_training.settings import TrainingSettings


@dataclass(frozen=True)
class Recipe:
    """The myelin-train command lines that produce a family's models. "{data}" is the data folder and
    "{config}" the trainer's own name for the quick or full config; --repository (and --dry-run when
    asked) are appended."""

    commands: list[list[str]]
    configs: dict[str, str] = field(default_factory=lambda: {"quick": "quick", "full": "full"})


# family, as the services and manifests name it -> its recipe
FAMILIES: dict[str, Recipe] = {
    "classifier": Recipe(
        [
            ["mlp", "--data-dir", "{data}", "--config", "{config}"],
            ["cnn", "--data-dir", "{data}", "--config", "{config}"],
        ]
    ),
    "translator": Recipe(
        [["translator", "--data-dir", "{data}", "--config", "{config}"]], {"quick": "quick", "full": "cpu"}
    ),
    # The GPT and its GRU baseline; the generator trainer calls its ~30-minute CPU config `cpu`.
    "generator": Recipe(
        [
            ["generator", "--data-dir", "{data}", "--config", "{config}"],
            ["generator", "--arch", "gru", "--data-dir", "{data}", "--config", "{config}"],
        ],
        {"quick": "quick", "full": "cpu"},
    ),
    # word2vec has no --config: its defaults are a short run over WikiText-2's validation text.
    "embedder": Recipe([["word2vec", "--data-dir", "{data}", "--corpus", "{data}/text/wikitext-2/valid.txt"]]),
}


def families_in(repository: Path) -> set[str]:
    """Families that already have at least one exported version in the repository."""
    found = set()
    for manifest in repository.glob("*/*/model.json"):
        try:
            found.add(json.loads(manifest.read_text())["family"])
        except (OSError, ValueError, KeyError):
            continue  # a version being written, or not ours: the services judge it
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="myelin-train-all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["quick", "full"], default="quick")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default: all)")
    parser.add_argument("--force", action="store_true", help="train even where the repository has the family")
    parser.add_argument("--dry-run", action="store_true", help="pass --dry-run to every trainer (seconds each)")
    parser.add_argument(
        "--publish", action="store_true", help="with --dry-run: export under the real names (see myelin-train --help)"
    )
    args = parser.parse_args(argv)
    settings = TrainingSettings()
    if settings.data_dir is None or settings.repository is None:
        parser.error("set MYELIN_DATA_DIR and MYELIN_REPOSITORY")
    unknown = set(args.families.split(",")) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    settings.repository.mkdir(parents=True, exist_ok=True)
    present = families_in(settings.repository)
    started = time.monotonic()
    for family in args.families.split(","):
        recipe = FAMILIES[family]
        if any(command[0] not in TRAINERS for command in recipe.commands):
            print(f"{family}: skipped, this image has no trainer for it yet", flush=True)
            continue
        if family in present and not args.force:
            print(f"{family}: skipped, {settings.repository} already has it (--force trains again)", flush=True)
            continue
        for command in recipe.commands:
            line = [part.format(data=settings.data_dir, config=recipe.configs[args.config]) for part in command]
            line += ["--repository", str(settings.repository)]
            line += [flag for flag, on in (("--dry-run", args.dry_run), ("--publish", args.publish)) if on]
            print(f"{family}: myelin-train {' '.join(line)}", flush=True)
            subprocess.run([str(Path(sys.executable).parent / "myelin-train"), *line], check=True)
    print(f"trained in {time.monotonic() - started:.0f} s; repository: {settings.repository}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
