"""Lapse alerts live (`pulse run`, wall-clock timers) and in replay give the same alerts, same ids."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.config import load_settings
from engine.replay import replay
from schemas.codec import loads, parse_ts
from tests.integration.conftest import Names, PulseProcess, produce, read_topic, wait_for

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000
# Event-time timers only: the data is older than the wall clock's reach (timer_wall_clock_max_lag_hours).
ORDERED = {"PULSE_ENGINE_TIMER_IDLE_MS": "3600000"}
# Live timers follow the low watermark of the input partitions, so runs compare exactly on the
# 4-partition topics Pulse creates by default.
PARTITIONS = 4


def _history(now_ms: int) -> list[bytes]:
    """dora: daily for 10 days, silent for the last 20 (lapses); wes: weekly, last seen 3 days ago."""
    today = now_ms // DAY_MS * DAY_MS
    events = []
    for day in range(30, 20, -1):
        ts = today - day * DAY_MS + 9 * 3_600_000
        events.append({"event_id": f"dora-{day}", "user_id": "dora", "type": "session_start", "ts": ts})
    for week in range(6):
        ts = today - (3 + 7 * (5 - week)) * DAY_MS + 10 * 3_600_000
        events.append({"event_id": f"wes-{week}", "user_id": "wes", "type": "session_start", "ts": ts})
    events.sort(key=lambda e: e["ts"])  # type: ignore[arg-type,return-value]
    return [orjson.dumps(e) for e in events]


def _settled(alerts: list[dict[str, Any]], before_ms: int) -> set[tuple[str, str, str]]:
    # Timers are due on day boundaries; compare what was due before today, which both runs have passed.
    return {(a["alert_id"], a["kind"], a["status"]) for a in alerts if parse_ts(a["ts"]) < before_ms}


def test_live_and_replay_fire_the_same_lapse_alerts(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    lines = _history(now_ms)
    produce(kafka, names.topic("events"), [(loads(line)["user_id"].encode(), line) for line in lines])
    pulse = pulse_run({**names.env, "PULSE_ENGINE_TIMER_IDLE_MS": "300"})

    def dora_lapsed() -> list[dict[str, Any]]:
        first = [loads(m.value() or b"") for m in read_topic(kafka, names.topic("alerts"))]
        if not any(a["kind"] == "lapse" and a["user_id"] == "dora" for a in first):
            return []
        # Settled: a second full read finds nothing new.
        return first if len(read_topic(kafka, names.topic("alerts"))) == len(first) else []

    live = wait_for(dora_lapsed, 90, "dora's lapse alert from the live service")
    written = Counter(f'pulse_alerts_total{{kind="{a["kind"]}",status="{a["status"]}"}}' for a in live)
    counted = {k: v for k, v in pulse.metrics().items() if k.startswith("pulse_alerts_total{")}
    assert counted == written, "pulse_alerts_total counts every alert written, by kind and status"

    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    replay(tmp_path / "in.jsonl", tmp_path / "out", load_settings(None, env={}), until_ms=now_ms)
    replayed = [loads(line) for line in (tmp_path / "out" / "alerts.jsonl").read_bytes().splitlines()]

    today = now_ms // DAY_MS * DAY_MS
    assert _settled(live, today) == _settled(replayed, today)
    lapses = [a for a in replayed if a["kind"] == "lapse"]
    assert [a["user_id"] for a in lapses] == ["dora"], "the weekly user must not lapse between visits"
    (lapse,) = lapses
    assert lapse["status"] == "firing"
    assert lapse["silent_days"] <= 6, "a daily user must be flagged within days of stopping"
    assert lapse["next_step"] is None or lapse["next_step"]["action"] == "adopt_feature"


def test_a_crash_in_the_middle_loses_no_alert_and_repeats_only_the_same_ids(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], tmp_path: Path
) -> None:
    from demo.generator import GeneratorConfig, generate
    from tests.integration.test_health_service import committed_input_offsets

    lines = list(generate(GeneratorConfig(users=40, accounts=6, days=35, seed=9, malformed_rate=0.0)))
    half = len(lines) // 2
    messages = [(loads(line)["user_id"].encode(), line) for line in lines]
    # Event-time timers only (no idle switch to the wall clock), so both runs see the same timeline.
    base = {**names.env, **ORDERED, "PULSE_ENGINE_SNAPSHOT_INTERVAL_SECONDS": "0.5"}

    # Straight run over everything, into its own output topics.
    straight_env = {
        **base,
        "PULSE_TOPICS_ALERTS": f"{names.run}-salerts",
        "PULSE_TOPICS_SCORES": f"{names.run}-sscores",
        "PULSE_TOPICS_PROFILES": f"{names.run}-sprofiles",
        "PULSE_TOPICS_ACCOUNT_PROFILES": f"{names.run}-saccount-profiles",
        "PULSE_REDIS_KEY_PREFIX": f"{names.run}s",
    }
    produce(kafka, names.topic("events"), messages[:half], partitions=PARTITIONS)
    crashed = pulse_run({**base, "PULSE_ENGINE_RECOVERY_DIR": str(tmp_path / "recovery")})
    wait_for(lambda: committed_input_offsets(tmp_path / "recovery") == half, 60, "a snapshot of the first half")
    crashed.proc.kill()  # a crash: no clean shutdown
    crashed.proc.wait(timeout=30)
    before = {
        (d["alert_id"], d["status"])
        for d in (loads(m.value() or b"") for m in read_topic(kafka, names.topic("alerts")))
    }

    produce(kafka, names.topic("events"), messages[half:])
    resumed_run = pulse_run({**base, "PULSE_ENGINE_RECOVERY_DIR": str(tmp_path / "recovery")})
    straight_run = pulse_run(straight_env)
    # The resumed run starts at the snapshot's offsets: it reads only the second half.
    for run, expected in ((resumed_run, len(lines) - half), (straight_run, len(lines))):

        def read_all(run: PulseProcess = run, n: int = expected) -> bool:
            return run.metrics().get("pulse_events_in_total") == n

        wait_for(read_all, 120, "all input read")

    def settled(topic: str) -> Callable[[], set[tuple[str, str]]]:
        def read() -> set[tuple[str, str]]:
            first = {(d["alert_id"], d["status"]) for d in (loads(m.value() or b"") for m in read_topic(kafka, topic))}
            again = {(d["alert_id"], d["status"]) for d in (loads(m.value() or b"") for m in read_topic(kafka, topic))}
            return first if first and first == again else set()

        return read

    resumed = wait_for(settled(names.topic("alerts")), 120, "alerts after the restart")
    straight = wait_for(settled(f"{names.run}-salerts"), 120, "alerts of the straight run")
    assert before, "the first run emitted alerts before the crash"
    assert before <= straight, "what was emitted before the crash is what a straight run emits"
    assert resumed == straight
    # Score records re-emitted after the crash carry the ids they had: a consumer drops the copies by id.
    crashed_scores = [loads(m.value() or b"") for m in read_topic(kafka, names.topic("scores"))]
    straight_ids = {
        d["record_id"] for d in (loads(m.value() or b"") for m in read_topic(kafka, f"{names.run}-sscores"))
    }
    assert {d["record_id"] for d in crashed_scores} == straight_ids
    by_id: dict[str, dict[str, object]] = {}
    for doc in crashed_scores:
        assert by_id.setdefault(doc["record_id"], doc) == doc, "a re-emitted copy must be identical"
