"""The soak test's short form (tests/harness/soak.py; `make soak` runs the long one): concurrency 64 across
the services for 30 s, then the same verdict as the long form: no error but overload refusals, nothing
lost, resident memory grown by less than 10 %, every service exited cleanly after SIGTERM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.families import CASES
from harness.soak import MAX_RSS_GROWTH, WORKLOADS, main


def test_soak_short_form(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # One repository with every family's session models: one service each, as `make up` runs them.
    repository = tmp_path / "repository"
    for case in CASES.values():
        for model in request.getfixturevalue(case.repository_fixture).iterdir():
            shutil.copytree(model, repository / model.name)
    report = tmp_path / "soak.json"
    argv = ["--repository", str(repository), "--duration", "30", "--warmup", "6", "--window", "8"]
    code = main([*argv, "--concurrency", "64", "--state-dir", str(tmp_path / "state"), "--json", str(report)])
    result = json.loads(report.read_text())
    assert code == 0, result
    assert result["errors"] == {} and result["lost"] == 0 and result["requests"] == result["answered"] > 0
    assert set(result["status_by_family"]) == set(CASES)
    assert all(result[p][w] is not None for p in ("p50_ms", "p99_ms") for w in ("start", "end"))
    assert all(growth < 100 * MAX_RSS_GROWTH for growth in result["rss_growth_pct"].values())
    assert set(result["exit_codes"].values()) == {0}


def test_every_family_in_the_suite_has_a_soak_workload() -> None:
    assert set(CASES) <= set(WORKLOADS)
