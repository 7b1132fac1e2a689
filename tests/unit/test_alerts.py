"""The alerting rules (runner/ops/alerts.yml) are valid, fire and stay quiet as tests/alerts/alerts_test.yml
says (`promtool`), and use only metrics, outcomes and buckets that the code defines, so renaming a metric
breaks a test instead of silently muting an alert."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "runner" / "ops" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "alerts" / "alerts_test.yml"
METRICS = ROOT / "runner" / "fleet" / "metrics.py"
EXECUTION = ROOT / "runner" / "worker" / "execution.py"

ALERTS = {
    "RunnerRedisDown",
    "RunnerRedisRefusing",
    "RunnerPostgresDown",
    "RunnerNoLiveWorker",
    "RunnerQueueBacklog",
    "RunnerHighFailureRate",
    "RunnerEventLoopBlocked",
    "RunnerWorkersCrashLooping",
}
# The series each kind of metric exposes, after its name (prometheus-client's conventions).
SUFFIXES = {"Counter": ("_total",), "Histogram": ("_bucket", "_count", "_sum"), "Gauge": ("",), "_gauge": ("",)}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.skip("promtool not found: install Debian's prometheus package (apt-get install prometheus)")
    return subprocess.run([found, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def defined_series() -> set[str]:
    """Every series name runner/fleet/metrics.py exposes: its Counter, Histogram and Gauge definitions and the
    gauges it reads live at each scrape."""
    found = set()
    for node in ast.walk(ast.parse(METRICS.read_text())):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        kind = node.func.id if isinstance(node.func, ast.Name) else None
        if kind in SUFFIXES and isinstance(node.args[0].value, str):
            found.update(node.args[0].value + suffix for suffix in SUFFIXES[kind])
    return found


def test_promtool_checks_the_rules():
    """`promtool check rules` accepts the file: valid YAML, PromQL and templates."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_rule_tests_pass():
    """Each alert fires on its series and stays quiet on the others (low volume, blips, restarts, ...)."""
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_there_and_tells_the_on_call_what_to_do():
    """The seven alerts, each with a severity and a summary and description to act on."""
    found = rules()
    assert {rule["alert"] for rule in found} == ALERTS
    for rule in found:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 200, rule["alert"]


def test_every_rule_tested_fires_somewhere():
    """Each alert has a case in the rule tests where it fires, and one where it must not."""
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == ALERTS
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == ALERTS


def test_every_metric_in_an_expression_is_one_the_code_defines():
    """A metric renamed in runner/fleet/metrics.py (or a typo in a rule) breaks this test."""
    defined = defined_series()
    assert {"runner_jobs_total", "runner_server_up", "runner_queue_live_workers"} <= defined  # the parse works
    used = {name for rule in rules() for name in re.findall(r"\brunner_[a-z_]+\b", rule["expr"])}
    assert len(used) >= 6
    assert used - defined == set(), f"not defined in {METRICS.relative_to(ROOT)}: {sorted(used - defined)}"


def test_the_outcomes_and_the_bucket_the_rules_name_exist():
    """The job outcomes the failure rate counts are ones the worker counts, and le="1.0" is a lag bucket."""
    from runner.fleet.metrics import LOOP_LAG

    code = EXECUTION.read_text()
    exprs = " ".join(rule["expr"] for rule in rules())
    outcomes = {o for group in re.findall(r'outcome=~"([^"]+)"', exprs) for o in group.split("|")}
    assert outcomes == {"completed", "failed", "refused", "cancelled"}
    assert [o for o in outcomes if f'"{o}"' not in code] == []
    assert re.findall(r'le="([^"]+)"', exprs) == ["1.0"]
    assert 1.0 in LOOP_LAG._upper_bounds


def test_the_rules_ship_inside_the_package():
    """pip-installed runners find the rules beside the code: runner/ops/alerts.yml is package data."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "ops/alerts.yml" in pyproject["tool"]["setuptools"]["package-data"]["runner"]
