"""`pulse run` on the real broker and Redis: score and account topics, account hashes, restarts."""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from schemas.codec import loads
from tests.integration.conftest import Names, PulseProcess, consume_all, produce, wait_for

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000
T0 = 1_767_600_000_000  # 2026-01-05T08:00:00Z


def _event(event_id: str, user: str, event_type: str, ts: int, **extra: object) -> tuple[bytes, bytes]:
    doc = {"event_id": event_id, "user_id": user, "account_id": "acme", "type": event_type, "ts": ts, **extra}
    return user.encode(), orjson.dumps(doc)


def _history() -> list[tuple[bytes, bytes]]:
    events = []
    for day in range(14):
        for user in ("ann", "ben"):
            ts = T0 + day * DAY_MS + (0 if user == "ann" else 60_000)
            events.append(_event(f"{user}-{day}", user, "feature_used", ts, feature="reports"))
    return events


def test_scores_accounts_and_redis_hashes(
    kafka: str, redis_client: redis.Redis, names: Names, pulse_run: Callable[..., PulseProcess]
) -> None:
    detractor = _event("ann-nps", "ann", "nps_response", T0 + 14 * DAY_MS, properties={"score": 0})
    produce(kafka, names.topic("events"), [*_history(), detractor])
    pulse_run(names.env)

    def ann_detractor_change() -> list[dict[str, object]]:
        scores = [loads(m.value() or b"") for m in consume_all(kafka, names.topic("scores"), 1, timeout=5)]
        return [s for s in scores if s["cause_event_id"] == "ann-nps"]

    (change,) = wait_for(ann_detractor_change, 60, "the score change caused by ann's detractor NPS")
    assert change["user_id"] == "ann"
    assert change["reasons"][0]["component"] == "sentiment"
    assert change["score"] < change["previous_score"]

    accounts = consume_all(kafka, names.topic("accounts"), 1)
    assert all(m.key() == b"acme" for m in accounts)
    assert loads(accounts[0].value() or b"")["kind"] == "account_health_changed"

    key = f"{names.run}:account:acme"
    account = wait_for(lambda: redis_client.hgetall(key), 60, "the account hash in Redis")
    assert loads(account[b"users"]) == 2
    ann = wait_for(lambda: redis_client.hgetall(f"{names.run}:user:ann"), 60, "ann's profile")
    assert ann[b"band"] in (b"healthy", b"watch", b"at_risk")
    assert 0 <= loads(ann[b"score"]) <= 100
    assert loads(ann[b"nps"]) == 0


def committed_input_offsets(recovery: Path) -> int:
    """Sum of the input offsets in bytewax's last committed snapshot (what a restart resumes from)."""
    total = 0
    for db in recovery.glob("part-*.sqlite3"):
        try:
            with sqlite3.connect(db) as conn:
                (commit,) = conn.execute("SELECT coalesce(min(commit_epoch), -1) FROM commits").fetchone()
                rows = conn.execute(
                    "SELECT state_key, ser_change FROM snaps WHERE step_id = 'pulse.input' AND snap_epoch <= ? "
                    "ORDER BY snap_epoch",
                    (commit,),
                ).fetchall()
        except sqlite3.OperationalError:
            return -1  # bytewax is still creating its tables: nothing committed yet
        latest = {key: pickle.loads(blob) for key, blob in rows}
        total += sum(max(0, offset) for offset in latest.values())
    return total


def test_restart_resumes_from_snapshot_and_duplicates_change_nothing(
    kafka: str,
    redis_client: redis.Redis,
    names: Names,
    pulse_run: Callable[..., PulseProcess],
    tmp_path: Path,
) -> None:
    env = {**names.env, "PULSE_ENGINE_RECOVERY_DIR": str(tmp_path / "recovery"),
           "PULSE_ENGINE_SNAPSHOT_INTERVAL_SECONDS": "0.5"}  # fmt: skip
    history = _history()
    produce(kafka, names.topic("events"), history)
    first = pulse_run(env)
    key = f"{names.run}:user:ann"

    def all_applied() -> bool:
        m = first.metrics()
        return m.get("pulse_events_applied_total") == len(history)

    wait_for(all_applied, 60, "the first run to apply the history")
    wait_for(lambda: redis_client.hget(key, "counts"), 60, "ann's profile")
    # Stop only once a committed snapshot covers the whole history, so the restart must resume past it.
    wait_for(lambda: committed_input_offsets(tmp_path / "recovery") == len(history), 60, "a committed snapshot")
    first.stop()

    # Re-send the whole history (duplicates across the restart) plus one new event.
    new = _event("ann-new", "ann", "page_view", T0 + 15 * DAY_MS)
    produce(kafka, names.topic("events"), [*history, new])
    second = pulse_run(env)

    def settled() -> dict[str, float]:
        m = second.metrics()
        seen = m.get("pulse_events_applied_total", 0) + m.get("pulse_events_duplicate_total", 0)
        return m if m.get("pulse_events_applied_total", 0) >= 1 and seen >= len(history) + 1 else {}

    m = wait_for(settled, 60, "the second run to read the re-sent history")
    # Resumed from the snapshot: only the re-sent copies and the new event are read, and the copies are
    # recognised as duplicates by the restored de-duplication state.
    assert (m["pulse_events_applied_total"], m["pulse_events_duplicate_total"]) == (1, len(history))

    def ann_counts() -> dict[str, int] | None:
        raw = redis_client.hget(key, "counts")
        counts: dict[str, int] | None = loads(raw) if raw else None
        return counts if counts and counts["activity"] == 15 else None

    counts = wait_for(ann_counts, 60, "ann's profile to include exactly the new event")
    assert counts["activity"] == 15  # 14 from history + 1 new: nothing counted twice
