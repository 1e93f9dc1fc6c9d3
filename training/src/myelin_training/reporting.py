"""Training metrics: one JSON line per evaluation, and a plot of the curves (PNG)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt


def count(n: int, noun: str, plural: str = "") -> str:
    """'1 epoch', '12,345 epochs' (plural: when adding an s will not do)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def parameters(n: int) -> str:
    """'3.2M parameters' from a million up, exact below ('24,714 parameters'), never '0.0 M'."""
    return f"{n / 1e6:.1f}M parameters" if n >= 1_000_000 else count(n, "parameter")


def figures(record: Mapping[str, Any], *, skip: tuple[str, ...] = ()) -> str:
    """A record's float figures for a log line, each in its own form: rates whole with thousands
    separators, seconds to a tenth, losses and scores to four decimals."""

    def shown(key: str, value: float) -> str:
        if key.endswith("_per_second"):
            return f"{value:,.0f}"
        if key.endswith("seconds"):
            return f"{value:.1f}"
        return f"{value:.4f}"

    return ", ".join(
        f"{key} {shown(key, value)}" for key, value in record.items() if isinstance(value, float) and key not in skip
    )


class MetricsLog:
    """Appends records to `<run_dir>/metrics.jsonl` and keeps them for plotting."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        if append and path.exists():
            self.records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            path.write_text("")

    def keep_until(self, key: str, last: float) -> None:
        """Drop the records after `last` (a resumed run repeats what its checkpoint had not kept)."""
        self.records = [r for r in self.records if r[key] <= last]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    x: str,
    panels: Mapping[str, Sequence[str]],
    title: str,
) -> Path:
    """One panel per entry of `panels` ({"loss": ["train_loss", "val_loss"], ...}) against `x`."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (label, keys) in zip(axes[0], panels.items(), strict=True):
        for key in keys:
            points = [(r[x], r[key]) for r in records if key in r and r[key] is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(points) < 40 else None, label=key)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
