"""myelin-train generator-export: export a trained checkpoint again, as a new version, without training.

    myelin-train generator-export --run-dir runs/generator-gpt-shakespeare \
        --repository model_repository [--name generator-gpt-shakespeare] [--from-version N]
        [--quantize int8 --data-dir DIR]

For when the step graph changes and the weights do not. The weights are the checkpoint's (saved at
the last evaluation, i.e. the exported ones); the new version's manifest carries the training,
dataset and evaluation sections of version N (default: the newest), its metrics and curves, and
a `reexport` note naming that version and the checkpoint. The export's own parity check against
PyTorch runs as always.

`--quantize int8` (GPT only) publishes the step graph with int8 weights for CPU serving
(myelin_training.generator.quantize) and records in the manifest's `quantization` the validation
loss of the float32 graph and of the int8 one, both measured here by decoding the whole
validation split token by token through the graph (the corpus named in the carried `dataset`,
read from --data-dir or MYELIN_DATA_DIR, or --text).
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
from myelin_training.data import text as text_data
from myelin_training.generator.export import export_model
from myelin_training.generator.model import GPT, GPTConfig, GRUConfig, GRULanguageModel
from myelin_training.generator.train import CHECKPOINT
from myelin_training.settings import TrainingSettings

CARRIED = ("training", "dataset", "evaluation", "files")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="myelin-train generator-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help=f"the training run holding {CHECKPOINT}")
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--name", help="default: the run directory's name")
    parser.add_argument("--from-version", type=int, default=0, help="carry this version's metadata (0: newest)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity check's random inputs")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="int8: int8 weights (GPT)")
    parser.add_argument(
        "--data-dir", type=Path, default=TrainingSettings().data_dir, help="dataset folder (default: $MYELIN_DATA_DIR)"
    )
    parser.add_argument("--text", type=Path, help="the UTF-8 file the model was trained on with --text")
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
    validation_ids = None
    if args.quantize == "int8":
        if checkpoint["arch"] != "gpt":
            raise SystemExit("--quantize int8 is for the GPT; the GRU's step graph stays float32")
        if args.data_dir is None and args.text is None:
            parser.error("--quantize int8 measures the validation loss: pass --data-dir (or MYELIN_DATA_DIR) or --text")
        corpus = text_data.load_corpus(previous["dataset"]["name"], args.data_dir, args.text)
        validation_ids = text_data.encode(tokenizer, corpus.val_text)
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
            int8_validation_ids=validation_ids,
        )
    print(f"exported {name} again (weights of {args.run_dir / CHECKPOINT}) to {version_dir}")


if __name__ == "__main__":
    main()
