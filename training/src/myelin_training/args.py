"""Flags every training job shares, with defaults from the typed settings."""

from __future__ import annotations

import argparse
from pathlib import Path

from myelin_training.settings import TrainingSettings

DRY_RUN_SUFFIX = "-dry-run"


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
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"a few hundred examples, one short epoch: seconds. Exported as <name>{DRY_RUN_SUFFIX} (run folder "
        f"runs/<name>{DRY_RUN_SUFFIX}), so a service never serves it as a version of <name>; see --publish",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="with --dry-run: export under --name all the same, as the newest version of the real model "
        "(what tests of the serving side want)",
    )


def dry_run_name(args: argparse.Namespace) -> None:
    """A dry run's model (and run folder) is <name>-dry-run unless --publish: a model trained for seconds
    must never become the newest version of the real one by accident."""
    if args.dry_run and not args.publish and not args.name.endswith(DRY_RUN_SUFFIX):
        args.name += DRY_RUN_SUFFIX


def require_paths(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name, None) is None:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} is required (or set MYELIN_{name.upper()})")
