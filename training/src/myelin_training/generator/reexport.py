"""myelin-train generator-export: export a trained checkpoint again, as a new version, without training.

    myelin-train generator-export --run-dir runs/generator-gpt-shakespeare \
        --repository model_repository [--name generator-gpt-shakespeare] [--from-version N]

For when the step graph changes and the weights do not. The weights are the checkpoint's (saved at
the last evaluation, i.e. the exported ones); the new version's manifest carries the training,
dataset and evaluation sections of version N (default: the newest), its metrics and curves, and
a `reexport` note naming that version and the checkpoint. The export's own parity check against
PyTorch runs as always.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from myelin_training import export
from myelin_training.generator.export import export_model
from myelin_training.generator.model import GPT, GPTConfig, GRUConfig, GRULanguageModel
from myelin_training.generator.train import CHECKPOINT

CARRIED = ("training", "dataset", "evaluation", "files")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="myelin-train generator-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help=f"the training run holding {CHECKPOINT}")
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--name", help="default: the run directory's name")
    parser.add_argument("--from-version", type=int, default=0, help="carry this version's metadata (0: newest)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity check's random inputs")
    args = parser.parse_args(argv)
    name = args.name or args.run_dir.name
    versions = export.existing_versions(args.repository / name)
    if not versions:
        raise SystemExit(f"{args.repository / name}: no version to carry the training metadata from")
    source = args.repository / name / str(args.from_version or versions[-1])
    previous: dict[str, Any] = json.loads((source / "model.json").read_text())
    checkpoint = torch.load(args.run_dir / CHECKPOINT, weights_only=False, map_location="cpu")
    model: torch.nn.Module
    if checkpoint["arch"] == "gpt":
        model = GPT(GPTConfig(**checkpoint["model_config"]))
    else:
        model = GRULanguageModel(GRUConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    tokenizer = Tokenizer.from_str(checkpoint["tokenizer"])
    files = previous.get("files", {})
    extra = {key: previous[key] for key in CARRIED if key in previous}
    extra["reexport"] = {
        "from_version": previous["version"],
        "checkpoint": str(args.run_dir / CHECKPOINT),
        "checkpoint_iteration": checkpoint["iter"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        # side files are copied by name, so the staged copies keep the previous version's names
        side = []
        for file in files.values():
            (Path(tmp) / file).write_bytes((source / file).read_bytes())
            side.append(Path(tmp) / file)
        version_dir = export_model(
            model,
            arch=checkpoint["arch"],
            repository=args.repository,
            name=name,
            tokenizer=tokenizer,
            tokenizer_kind=previous["tokenizer"]["kind"],
            manifest_extra=extra,
            side_files=side,
            seed=args.seed,
        )
    print(f"exported {name} again (weights of {args.run_dir / CHECKPOINT}) to {version_dir}")


if __name__ == "__main__":
    main()
