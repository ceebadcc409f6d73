"""`pulse run` on a hostile stream against the real broker and Redis: a far-future clock, per-device event
ids, an erasure that reaches Redis, the compacted profile tables and downstream consumers; Redis profiles
that agree with the score and lifecycle records; and replay agreeing with all of it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Message

from engine.config import load_settings
from engine.replay import replay
from schemas.codec import loads, parse_ts
from tests.integration.conftest import Names, PulseProcess, produce, read_topic, wait_for

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
FAR_FUTURE = b'{"event_id":"e1","user_id":"zed","type":"page_view","ts":"9000-01-01T00:00:00Z"}'


def _stream(now_ms: int) -> list[bytes]:
    """bob: daily for 30 days; dora: daily for 10, then silent (lapses); eve: daily for 10, lapses, and is
    erased 2 days ago; ann: two days with the same per-device ids as bob (e1, e2). All in acct-1."""
    today = now_ms // DAY_MS * DAY_MS
    events: list[dict[str, Any]] = []
    for day in range(30, 0, -1):
        ts = today - day * DAY_MS + 9 * HOUR_MS
        events.append(
            {"event_id": f"e{day}", "user_id": "bob", "account_id": "acct-1", "type": "session_start", "ts": ts}
        )
        if day > 20:
            for user in ("dora", "eve"):
                events.append(
                    {
                        "event_id": f"{user}-{day}",
                        "user_id": user,
                        "account_id": "acct-1",
                        "type": "page_view",
                        "ts": ts + 60_000,
                    }
                )
    for day in (1, 2):
        ts = today - (30 - day) * DAY_MS + 11 * HOUR_MS
        events.append({"event_id": f"e{day}", "user_id": "ann", "account_id": "acct-2", "type": "page_view", "ts": ts})
    events.append({"event_id": "forget-me", "user_id": "eve", "type": "erasure_requested", "ts": today - 2 * DAY_MS})
    events.sort(key=lambda e: e["ts"])
    lines = [orjson.dumps(e) for e in events]
    # A far-future clock in the middle, and a duplicate of bob's latest event sent after it.
    return [*lines[: len(lines) // 2], FAR_FUTURE, *lines[len(lines) // 2 :], lines[-1]]


def _docs(messages: list[Message]) -> list[dict[str, Any]]:
    return [loads(m.value() or b"") for m in messages]


def _latest_per_key(messages: list[Message]) -> dict[str, bytes | None]:
    latest: dict[str, bytes | None] = {}
    for m in sorted(messages, key=lambda m: (m.partition() or 0, m.offset() or 0)):
        latest[(m.key() or b"").decode()] = m.value()
    return latest


def _agrees(client: redis.Redis, names: Names, kafka: str, user: str) -> bool:
    """The Redis profile shows the last score record's score, band, components and the last engagement."""
    profile: dict[bytes, bytes] = client.hgetall(f"{names.run}:user:{user}")  # type: ignore[assignment]
    scores = [d for d in _docs(read_topic(kafka, names.topic("scores"))) if d["user_id"] == user]
    stages = [
        d
        for d in _docs(read_topic(kafka, names.topic("lifecycle")))
        if d["user_id"] == user and d.get("field") == "engagement"
    ]
    if not profile or not scores or not stages:
        return False
    shown = (float(profile[b"score"]), profile[b"band"].decode(), loads(profile[b"components"]))
    return shown == (scores[-1]["score"], scores[-1]["band"], scores[-1]["components"]) and (
        profile[b"engagement"].decode() == stages[-1]["to"]
    )


def test_hostile_stream_live_and_replay(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], redis_client: redis.Redis, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    lines = _stream(now_ms)
    produce(kafka, names.topic("events"), [(None, line) for line in lines], partitions=1)
    env = {**names.env, "PULSE_ENGINE_TIMER_IDLE_MS": "300", "PULSE_ENGINE_PROFILE_FLUSH_MS": "200"}
    service = pulse_run(env)

    def settled() -> list[dict[str, Any]]:
        service.assert_alive()
        lifecycle = _docs(read_topic(kafka, names.topic("lifecycle")))
        alerts = _docs(read_topic(kafka, names.topic("alerts")))
        erased = [d for d in lifecycle if d["kind"] == "user_erased"]
        dora = [a for a in alerts if a["user_id"] == "dora" and a["kind"] == "lapse"]
        return alerts if erased and dora and service.metrics().get("pulse_events_in_total") == len(lines) else []

    live_alerts = wait_for(settled, 90, "the erasure and dora's lapse from the live service")

    # 1. The year-9000 event is a dead letter with its own code; the duplicate after it is still caught;
    #    ann's e1/e2 are not duplicates of bob's.
    (dead,) = read_topic(kafka, names.topic("dlq"))
    assert dead.value() == FAR_FUTURE
    assert dict(dead.headers() or [])["pulse.error"] == b"future_timestamp"
    metrics = service.metrics()
    assert metrics["pulse_events_duplicate_total"] == 1
    assert metrics["pulse_events_applied_total"] == len(lines) - 2
    assert metrics['pulse_events_rejected_total{code="future_timestamp"}'] == 1
    assert metrics["pulse_erasures_total"] == 1
    assert sum(v for k, v in metrics.items() if k.startswith("pulse_erased_ids{")) == 1

    # 4. Erasure: nothing in Redis, a tombstone on the compacted table, open alerts closed, downstream told.
    assert redis_client.exists(f"{names.run}:user:eve") == 0
    tables = wait_for(
        lambda: (t := _latest_per_key(read_topic(kafka, names.topic("profiles")))).get("eve", b"") is None and t,
        30,
        "eve's tombstone on the profiles table",
    )
    assert tables["bob"] is not None
    assert loads(tables["bob"])["user_id"] == "bob"
    eve = [a for a in live_alerts if a["user_id"] == "eve"]
    fired = {a["alert_id"] for a in eve if a["status"] == "firing" and a["kind"] in ("lapse", "churn_risk")}
    closed = {a["alert_id"] for a in eve if a.get("resolution") == "erased"}
    assert fired
    assert closed == fired
    account = wait_for(
        lambda: (a := redis_client.hgetall(f"{names.run}:account:acct-1")) and int(a[b"users"]) == 2 and a,
        30,
        "acct-1 to count bob and dora only",
    )
    assert int(account[b"users"]) == 2
    account_table = _latest_per_key(read_topic(kafka, names.topic("account-profiles")))
    assert loads(account_table["acct-1"] or b"{}")["users"] == 2

    # 7. Redis agrees with the streams, for the lapsed user and the active one.
    for user in ("dora", "bob"):
        wait_for(lambda u=user: _agrees(redis_client, names, kafka, u), 30, f"{user}'s profile to agree")  # type: ignore[misc]

    # Replay agrees: the same alerts settled before today, the same erasure records, the same account.
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    summary = replay(tmp_path / "in.jsonl", tmp_path / "out", load_settings(None, env={}), until_ms=now_ms).summary
    assert (summary["rejected_by_code"], summary["duplicates"]) == ({"future_timestamp": 1}, 1)
    out = tmp_path / "out"
    replayed = [loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    today = now_ms // DAY_MS * DAY_MS

    def settled_ids(alerts: list[dict[str, Any]]) -> set[tuple[str, str, str | None]]:
        return {(a["alert_id"], a["status"], a.get("resolution")) for a in alerts if parse_ts(a["ts"]) < today}

    assert settled_ids(live_alerts) == settled_ids(replayed)
    replay_lifecycle = [loads(line) for line in (out / "lifecycle.jsonl").read_bytes().splitlines()]
    live_lifecycle = _docs(read_topic(kafka, names.topic("lifecycle")))
    assert [d for d in replay_lifecycle if d["kind"] == "user_erased"] == [
        d for d in live_lifecycle if d["kind"] == "user_erased"
    ]
    profiles = {p["user_id"] for p in map(loads, (out / "profiles.jsonl").read_bytes().splitlines())}
    assert profiles == {"ann", "bob", "dora"}
    (acct1,) = [
        a for a in map(loads, (out / "account_profiles.jsonl").read_bytes().splitlines()) if a["account_id"] == "acct-1"
    ]
    assert acct1["users"] == 2
