"""The Prometheus configuration, alert rules and their unit tests, as promtool reads them."""

from __future__ import annotations

import subprocess

import pytest

from harness.servers import REPO_ROOT

pytestmark = pytest.mark.deploy
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"


def promtool_ok(promtool: str, *args: str) -> str:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_scrape_config_is_valid(promtool: str) -> None:
    out = promtool_ok(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in out


def test_rules_are_valid(promtool: str) -> None:
    out = promtool_ok(promtool, "check", "rules", *sorted(str(p) for p in (PROMETHEUS / "rules").glob("*.yml")))
    assert "SUCCESS" in out


def test_alert_rules_fire_when_and_only_when_they_should(promtool: str) -> None:
    """Service down, a family vanished, error ratio and p99 latency: tests/myelin_test.yml."""
    out = promtool_ok(promtool, "test", "rules", "tests/myelin_test.yml")
    assert "SUCCESS" in out
