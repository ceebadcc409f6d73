"""The Prometheus alerting rules in deploy/prometheus: valid (`promtool check rules`), unit-tested
(`promtool test rules`), and written only against metrics Pulse exports.

promtool comes with Debian's `prometheus` package; `make test` installs it (`scripts/prometheus-local install`).
Without it these tests fail rather than skip, so a CI run can never pass with the rules unchecked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import engine.metrics  # noqa: F401  # registers Pulse's metrics in REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "pulse-rules.yml"
RULE_TESTS = PROMETHEUS / "pulse-rules.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"

# Series Prometheus itself attaches to every scrape target.
SCRAPE_SERIES = {"up"}
PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "offset", "inf", "nan"}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not on PATH: run `scripts/prometheus-local install` (make test does)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )


def load(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert_ok(result)
    assert f"SUCCESS: {len(alerting_rules())} rules found" in result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert_ok(result)
    assert "SUCCESS" in result.stdout + result.stderr


def test_example_config_is_valid_and_loads_the_rules() -> None:
    result = promtool("check", "config", str(CONFIG))
    assert_ok(result)
    config = load(CONFIG)
    assert [RULES.name] == config["rule_files"]
    assert [job["job_name"] for job in config["scrape_configs"]] == ["pulse"]


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested staying silent"
    assert (firing | silent) - names == set(), "tests name alerts the rules do not define"


def test_every_alert_has_severity_and_guidance() -> None:
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, f"{rule['alert']}: say what the SRE should do"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once label matchers, range and
    offset durations, grouping label lists, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job="pulse",le!="x"}[5m]))) > 5 '
        "and on (job, instance) sum without (code) (b_total offset 5m) / c > 1e-2 unless bool d"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d"}


def exported_series() -> set[str]:
    """Every series name Pulse's registry exposes, by family type (a labelled family with no child yet has
    no samples, so names are derived from the type, as the text exposition format does)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "unknown": ("",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def test_rules_use_only_exported_metrics() -> None:
    exported = exported_series() | SCRAPE_SERIES
    # The partition metrics are collected by engine.metrics itself: make sure they are in what we compare to.
    assert {"pulse_consumer_lag", "pulse_event_time_lag_seconds", "pulse_events_in_total"} <= exported
    used: dict[str, set[str]] = {rule["alert"]: metric_names(str(rule["expr"])) for rule in alerting_rules()}
    assert all(used.values()), used
    unknown = {alert: sorted(names - exported) for alert, names in used.items() if names - exported}
    assert unknown == {}, "rules select metrics that engine.metrics does not export"
