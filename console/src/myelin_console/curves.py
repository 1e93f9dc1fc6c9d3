"""Training curves: the `metrics.jsonl` that training writes beside each version's manifest, read
from the model repository when the console is given it (read-only)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # the services' model-name rule
MAX_BYTES = 4 * 1024 * 1024
MAX_POINTS = 2000


class CurveError(Exception):
    pass


def read_curves(repository: Path, model: str, version: int) -> list[dict[str, float]]:
    """Every numeric field of each line of `<repository>/<model>/<version>/metrics.jsonl`, at most
    MAX_POINTS lines (evenly thinned)."""
    if not NAME.match(model) or not 0 < version < 10**9:
        raise CurveError(f"no model {model[:80]!r} version {version}")
    path = repository / model / str(version) / "metrics.jsonl"
    try:
        if path.stat().st_size > MAX_BYTES:
            raise CurveError(f"{model} version {version}: metrics.jsonl is over {MAX_BYTES} bytes")
        lines = path.read_text().splitlines()
    except OSError:
        raise CurveError(f"{model} version {version} has no training curves in the repository") from None
    step = max(1, len(lines) // MAX_POINTS)
    points = []
    for line in lines[::step]:
        try:
            record: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            numbers = {
                str(k): float(v) for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            points.append(numbers)
    return points
