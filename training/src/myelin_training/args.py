"""Flags every training job shares, with defaults from the typed settings."""

from __future__ import annotations

import argparse
from pathlib import Path

from myelin_training.settings import TrainingSettings


def add_common_arguments(parser: argparse.ArgumentParser, *, default_name: str, needs_data: bool = True) -> None:
    settings = TrainingSettings()
    if needs_data:
        parser.add_argument(
            "--data-dir", type=Path, default=settings.data_dir, help="dataset folder (default: $MYELIN_DATA_DIR)"
        )
    parser.add_argument(
        "--repository", type=Path, default=settings.repository, help="model repository (default: $MYELIN_REPOSITORY)"
    )
    parser.add_argument("--name", default=default_name, help=f"model name in the repository (default: {default_name})")
    parser.add_argument("--device", default=settings.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None, help="metrics, plots, checkpoints (default: runs/<name>)")
    parser.add_argument("--dry-run", action="store_true", help="a few hundred examples, one short epoch: seconds")


def require_paths(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name, None) is None:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} is required (or set MYELIN_{name.upper()})")
