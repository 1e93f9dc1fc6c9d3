"""The live figures' arithmetic on real Prometheus text: the services' metric catalogue on a
registry, two expositions, and the rates, quantiles and batch sizes between them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from myelin_console.live import parse, point, quantile
from myelin_serving.metrics import Metrics


def test_rates_quantiles_and_batch_sizes_between_two_scrapes() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.for_method("/myelin_api.v1.Classifier/Classify").finished("OK", 0.002)
    before = parse(generate_latest(metrics.registry).decode())
    series = metrics.for_method("/myelin_api.v1.Classifier/Classify")
    for seconds in [0.004] * 98 + [0.3, 0.3]:
        series.finished("OK", seconds)
    for rows in (4, 8):
        metrics.batch_size.labels(model="mnist-cnn").observe(rows)
        metrics.inference_duration.labels(model="mnist-cnn", version="1").observe(0.001)
    figures = point(before, parse(generate_latest(metrics.registry).decode()), seconds=10.0)

    classify = figures["requests"]["/myelin_api.v1.Classifier/Classify"]
    assert classify["rate"] == pytest.approx(10.0)  # 100 requests in 10 s; the one before does not count
    assert classify["p50_ms"] is not None and classify["p50_ms"] <= 5  # inside the bucket holding 4 ms
    assert classify["p99_ms"] is not None and classify["p99_ms"] > 100  # the two slow ones
    cnn = figures["models"]["mnist-cnn"]
    assert cnn["rate"] == pytest.approx(0.2) and cnn["batch"] == pytest.approx(6.0)


def test_quantile_interpolates_as_histogram_quantile_does() -> None:
    buckets = {0.1: 10.0, 0.2: 30.0, 0.4: 40.0, float("inf"): 40.0}
    assert quantile(0.25, buckets) == pytest.approx(0.1)  # rank 10: the top of the first bucket
    assert quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: halfway through (0.1, 0.2]
    assert quantile(1.0, buckets) == pytest.approx(0.4)
    assert quantile(0.99, {0.1: 0.0, float("inf"): 0.0}) is None  # no observations
    assert quantile(0.99, {0.1: 1.0, float("inf"): 5.0}) == pytest.approx(0.1)  # in +Inf: the last finite bound
