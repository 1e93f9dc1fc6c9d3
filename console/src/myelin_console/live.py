"""Live figures from the services' Prometheus `/metrics`: requests/s and p50/p99 latency per method,
executions/s, p50/p99 inference latency and mean batch size per model, over the last minutes.

Each scrape keeps the histograms' cumulative counts (summed over the labels other than the key);
each pair of consecutive scrapes gives one point: the rate is the count's increase over the time
between them, the quantiles come from the buckets' increases interpolated as PromQL's
`histogram_quantile` does, the mean batch size is the sum's increase over the count's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx2
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

# histogram -> the label its series are kept by.
TRACKED = {
    "myelin_request_duration_seconds": "method",
    "myelin_inference_duration_seconds": "model",
    "myelin_batch_size": "model",
    "myelin_decode_step_rows": "model",  # the generator's batch: rows per decoding step
}
MAX_KEYS = 64  # series per histogram and service (the services' labels are bounded already)
MAX_METRICS_BYTES = 8 * 1024 * 1024


@dataclass
class Histogram:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    count: float = 0.0
    sum: float = 0.0


Scrape = dict[tuple[str, str], Histogram]  # (histogram, key) -> summed histogram


def parse(text: str) -> Scrape:
    """The tracked histograms of a Prometheus text exposition, summed by their key label."""
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        label = TRACKED.get(family.name)
        if label is None:
            continue
        for sample in family.samples:
            key = sample.labels.get(label)
            if key is None:
                continue
            histogram = found.get((family.name, key))
            if histogram is None:
                if sum(1 for name, _ in found if name == family.name) >= MAX_KEYS:
                    continue
                histogram = found[(family.name, key)] = Histogram()
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                histogram.buckets[bound] = histogram.buckets.get(bound, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                histogram.count += sample.value
            elif sample.name.endswith("_sum"):
                histogram.sum += sample.value
    return found


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """PromQL's histogram_quantile over cumulative `buckets`; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


def point(before: Scrape, after: Scrape, seconds: float) -> dict[str, Any]:
    """The figures between two scrapes `seconds` apart."""
    requests: dict[str, dict[str, float | None]] = {}
    models: dict[str, dict[str, float | None]] = {}
    for (name, key), now in after.items():
        then = before.get((name, key), Histogram())
        count = max(now.count - then.count, 0.0)
        deltas = {b: max(c - then.buckets.get(b, 0.0), 0.0) for b, c in now.buckets.items()}
        if name == "myelin_request_duration_seconds":
            requests[key] = _latency(count, deltas, seconds)
        elif name == "myelin_inference_duration_seconds":
            models.setdefault(key, {}).update(_latency(count, deltas, seconds))
        else:  # a batch size histogram
            models.setdefault(key, {})["batch"] = (now.sum - then.sum) / count if count else None
    return {"requests": requests, "models": models}


def _latency(count: float, deltas: dict[float, float], seconds: float) -> dict[str, float | None]:
    p50, p99 = quantile(0.5, deltas), quantile(0.99, deltas)
    return {
        "rate": count / seconds,
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
    }


class LiveFigures:
    """Scrapes every configured service every `interval` seconds; keeps `window` seconds of points."""

    def __init__(self, urls: dict[str, str], client: httpx2.AsyncClient, *, interval: float, window: float) -> None:
        self._urls = urls
        self._client = client
        self._interval = interval
        size = max(2, math.ceil(window / interval) + 1)
        self._points: dict[str, deque[dict[str, Any]]] = {family: deque(maxlen=size) for family in urls}
        self._last: dict[str, tuple[float, Scrape]] = {}
        self._errors: dict[str, str | None] = dict.fromkeys(urls)

    async def run(self) -> None:
        while True:
            await asyncio.gather(*(self.scrape(family) for family in self._urls))
            await asyncio.sleep(self._interval)

    async def scrape(self, family: str) -> None:
        try:
            response = await self._client.get(f"{self._urls[family]}/metrics", timeout=self._interval + 5)
            response.raise_for_status()
            if len(response.content) > MAX_METRICS_BYTES:
                raise ValueError(f"/metrics is over {MAX_METRICS_BYTES} bytes")
            scrape = parse(response.text)
        except (httpx2.HTTPError, ValueError) as exc:
            self._errors[family] = f"{type(exc).__name__}: {exc}"[:300]
            return
        self._errors[family] = None
        now = time.time()
        last = self._last.get(family)
        self._last[family] = (now, scrape)
        if last is not None and now > last[0]:
            self._points[family].append({"t": now, **point(last[1], scrape, now - last[0])})

    def report(self) -> dict[str, Any]:
        return {
            family: {"error": self._errors[family], "points": list(points)} for family, points in self._points.items()
        }
