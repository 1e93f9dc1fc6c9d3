"""The provisioned Grafana dashboard, as far as it can be checked without Grafana (whose image cannot
be pulled here): its layout and wiring. Its queries run against a real Prometheus in
test_prometheus_integration.py."""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import pytest

from harness.servers import REPO_ROOT

pytestmark = pytest.mark.deploy
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "myelin.json"


def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
    g = panel["gridPos"]
    return {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}


def test_dashboard_layout_and_wiring() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert dashboard["uid"] == "myelin-overview"
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "myelin-prometheus"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
    for a, b in combinations(panels, 2):
        assert not cells(a) & cells(b), f"{a['title']!r} overlaps {b['title']!r}"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"service", "model"}


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    """Request rate, errors, p50/p99 latency, batch sizes, queue time, tokens per second, model versions."""
    exprs = " ".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", []))
    for needle in (
        "rate(myelin_requests_total",
        'code!="OK"',
        "histogram_quantile(0.5, sum by (service, le) (rate(myelin_request_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (service, le) (rate(myelin_request_duration_seconds_bucket",
        "myelin_batch_size_bucket",
        "myelin_queue_duration_seconds_bucket",
        "myelin_generated_tokens_total",
        "myelin_model_info",
        # Scale-out: each replica (instance) and the family's sum.
        "sum by (service, instance) (rate(myelin_requests_total",
        "sum by (service) (rate(myelin_requests_total",
    ):
        assert needle in exprs, needle
