"""A real Prometheus (scripts/prometheus-local) scraping a real `pulse run`: the metrics the alert rules
need arrive, and the rules of deploy/prometheus/pulse-rules.yml load and evaluate on them."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.integration.conftest import ROOT, Names, PulseProcess, free_port, produce, wait_for

pytestmark = pytest.mark.integration
SCRIPT = ROOT / "scripts" / "prometheus-local"
RULES = ROOT / "deploy" / "prometheus" / "pulse-rules.yml"
PARTITIONS = 4
EVENTS = 300


class Prometheus:
    """A Prometheus server started by scripts/prometheus-local in its own directory, on its own port."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.started = False

    def _script(self, *args: str) -> None:
        env = {**os.environ, "PULSE_PROMETHEUS_START_TIMEOUT": "20", "PULSE_PROMETHEUS_STOP_TIMEOUT": "10"}
        result = subprocess.run(
            [str(SCRIPT), *args, "--dir", str(self.dir), "--port", str(self.port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"prometheus-local {args[0]} exited {result.returncode}:\n{result.stderr}")

    def start(self, targets: list[str], rules: Path | None = None) -> None:
        args = ["start", "--scrape-interval", "1s"]
        for target in targets:
            args += ["--target", target]
        if rules is not None:
            args += ["--rules", str(rules)]
        self.started = True  # stop even after a failed start: it may have left a process behind
        self._script(*args)

    def stop(self) -> None:
        if self.started:
            self._script("stop")

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.load(response)
        except (OSError, urllib.error.HTTPError, ValueError):
            return None
        return body["data"] if body.get("status") == "success" else None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now ([] when Prometheus does not answer)."""
        data = self.api("query", query=promql)
        return list(data["result"]) if data and data["resultType"] == "vector" else []


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path / "prometheus")
    yield server
    server.stop()


def _events(now_s: float) -> list[tuple[bytes | None, bytes]]:
    messages: list[tuple[bytes | None, bytes]] = []
    for n in range(EVENTS):
        user = f"u{n % 30:02d}"
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s - 600 + n))
        doc = {"event_id": f"e{n}", "user_id": user, "account_id": "acme", "type": "page_view", "ts": ts}
        messages.append((user.encode(), orjson.dumps(doc)))
    return messages


def test_prometheus_scrapes_pulse_and_evaluates_the_rules(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], prometheus: Prometheus
) -> None:
    topic = names.topic("events")
    produce(kafka, topic, [], partitions=PARTITIONS)  # the input topic, empty for now
    pulse = pulse_run(names.env)
    prometheus.start([f"127.0.0.1:{pulse.metrics_port}"], rules=RULES)

    # Produce only once Prometheus holds a sample of the counter from before the events, so the rate
    # over its next samples cannot miss the increase (however fast Pulse applies them).
    def scraped_before_events() -> bool:
        pulse.assert_alive()
        up = prometheus.query('up{job="pulse"} == 1')
        return bool(up) and bool(prometheus.query('pulse_events_applied_total{job="pulse"} == 0'))

    wait_for(scraped_before_events, 30, "Prometheus to scrape `pulse run` (up == 1) before any event", interval=0.2)
    produce(kafka, topic, _events(time.time()), partitions=PARTITIONS)

    seen_rate: list[float] = []
    seen_partitions: set[str] = set()

    def rate_and_lag_seen() -> bool:
        pulse.assert_alive()
        for sample in prometheus.query('rate(pulse_events_applied_total{job="pulse"}[15s]) > 0'):
            seen_rate.append(float(sample["value"][1]))
        lag = prometheus.query('pulse_consumer_lag{job="pulse"}')
        seen_partitions.update(sample["metric"]["partition"] for sample in lag)
        return bool(seen_rate) and len(seen_partitions) >= PARTITIONS

    try:
        wait_for(rate_and_lag_seen, 30, "the applied rate and the consumer lag in Prometheus", interval=0.5)
    except pytest.fail.Exception:
        pytest.fail(
            f"Prometheus never showed both rate(pulse_events_applied_total[15s]) > 0 (seen: {seen_rate}) and "
            f"pulse_consumer_lag for each of {PARTITIONS} partitions (seen: {sorted(seen_partitions)})"
        )
    assert seen_partitions == {str(p) for p in range(PARTITIONS)}
    assert all(rate > 0 for rate in seen_rate)

    # Every alerting rule loaded and evaluated without error on the real series; none fires on a healthy run.
    def rules_evaluated() -> list[dict[str, Any]]:
        data = prometheus.api("rules", type="alert")
        rules = [rule for group in (data or {}).get("groups", []) for rule in group["rules"]]
        return rules if rules and all(rule.get("lastEvaluation", "").startswith("2") for rule in rules) else []

    rules = wait_for(rules_evaluated, 15, "the alert rules to be evaluated")
    assert {rule["health"] for rule in rules} == {"ok"}, [(r["name"], r.get("lastError")) for r in rules]
    defined = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    assert {rule["name"] for rule in rules} == defined
    firing = [rule["name"] for rule in rules if rule["state"] == "firing"]
    assert firing == []
