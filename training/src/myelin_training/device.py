"""Choosing the torch device from `--device auto|cpu|cuda`."""

from __future__ import annotations

import torch


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    if choice not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be auto, cpu or cuda, not {choice!r}")
    return torch.device(choice)
