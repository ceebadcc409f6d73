"""Lapse alerts live (`pulse run`, wall-clock timers) and in replay give the same alerts, same ids."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.config import load_settings
from engine.replay import replay
from schemas.codec import loads
from tests.integration.conftest import Names, PulseProcess, consume_all, produce, wait_for

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


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
    return {
        (a["alert_id"], a["kind"], a["status"])
        for a in alerts
        if loads(orjson.dumps(a["ts"])) and _ms(a["ts"]) < before_ms
    }


def _ms(ts: str) -> int:
    from schemas.codec import parse_ts

    return parse_ts(ts)


def test_live_and_replay_fire_the_same_lapse_alerts(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    lines = _history(now_ms)
    produce(kafka, names.topic("events"), [(loads(line)["user_id"].encode(), line) for line in lines])
    pulse_run({**names.env, "PULSE_ENGINE_TIMER_IDLE_MS": "300"})

    def dora_lapsed() -> list[dict[str, Any]]:
        alerts = [loads(m.value() or b"") for m in consume_all(kafka, names.topic("alerts"), 1, timeout=5)]
        return alerts if any(a["kind"] == "lapse" and a["user_id"] == "dora" for a in alerts) else []

    live = wait_for(dora_lapsed, 90, "dora's lapse alert from the live service")

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
