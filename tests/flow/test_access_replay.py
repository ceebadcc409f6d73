"""Access requests through the real dataflow: `access.jsonl` in replay, deterministic, changing nothing else."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson

from engine.config import Settings, load_settings
from engine.replay import replay
from schemas.codec import loads

OTHER_FILES = ("scores", "alerts", "lifecycle", "accounts", "dlq", "profiles", "account_profiles")


def _event(event_id: str, user: str, event_type: str, ts: str, **extra: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user, "type": event_type, "ts": ts, **extra})


EVENTS = [
    _event("a1", "alice", "session_start", "2026-01-05T09:00:00Z", account_id="acme"),
    _event("a2", "alice", "feature_used", "2026-01-05T09:05:00Z", account_id="acme", feature="reports"),
    _event("b1", "bob", "page_view", "2026-01-05T10:00:00Z", account_id="acme"),
    _event("b2", "bob", "nps_response", "2026-01-06T12:00:00Z", account_id="acme", properties={"score": 3}),
    _event("e1", "erin", "page_view", "2026-01-06T08:00:00Z"),
    _event("e2", "erin", "erasure_requested", "2026-01-06T09:00:00Z"),
    _event("a3", "alice", "feature_used", "2026-01-07T09:00:00Z", account_id="acme", feature="dashboards"),
    _event("b3", "bob", "page_view", "2026-01-08T10:00:00Z", account_id="acme"),
]
REQUESTS = [
    _event("r1", "alice", "access_requested", "2026-01-06T10:00:00Z"),
    _event("r2", "nobody", "access_requested", "2026-01-06T11:00:00Z"),
    _event("r3", "erin", "access_requested", "2026-01-06T10:30:00Z"),
    # The newest line of the input: must not move event time (the timers run to the last event, not to it).
    _event("r4", "bob", "access_requested", "2026-02-20T00:00:00Z"),
]


def _settings(workers: int = 1) -> Settings:
    base = load_settings(None, env={})
    return dataclasses.replace(base, engine=dataclasses.replace(base.engine, workers=workers, replay_batch_size=3))


def _replay(tmp: Path, name: str, lines: list[bytes], settings: Settings) -> tuple[Path, dict[str, Any]]:
    path = tmp / f"{name}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = replay(path, tmp / name, settings)
    return tmp / name, result.summary


def test_access_requests_are_answered_in_access_jsonl(tmp_path: Path) -> None:
    out, summary = _replay(tmp_path, "with", EVENTS + REQUESTS, _settings())
    docs = [loads(line) for line in (out / "access.jsonl").read_bytes().splitlines()]
    # Ordered like every output: by (event time, key).
    assert [(d["user_id"], d["request_event_id"], d["found"]) for d in docs] == [
        ("alice", "r1", True),
        ("erin", "r3", False),
        ("nobody", "r2", False),
        ("bob", "r4", True),
    ]
    alice, erin, nobody, bob = docs
    assert alice["kind"] == "access_export"
    assert alice["ts"] == "2026-01-06T10:00:00.000Z"
    # Only what was held when the request came: a3 (Jan 7) is not in it yet.
    assert alice["profile"]["features"] == {"reports": 1}
    assert alice["signals"]["account_id"] == "acme"
    assert alice["signals"]["active_dates"] == ["2026-01-05"]
    assert b"bob" not in orjson.dumps(alice)
    assert (erin["profile"], nobody["profile"]) == (None, None)
    assert bob["profile"]["nps"] == 3
    assert bob["signals"]["last_seen"] == "2026-01-08T10:00:00.000Z"
    assert summary["outputs"]["access"] == 4
    assert summary["events_in"] == summary["applied"] + summary["duplicates"] + summary["rejected"]


def test_access_requests_change_no_other_output(tmp_path: Path) -> None:
    with_requests, summary = _replay(tmp_path, "with", EVENTS + REQUESTS, _settings())
    without, plain = _replay(tmp_path, "without", EVENTS, _settings())
    assert (without / "access.jsonl").read_bytes() == b""
    assert plain["outputs"]["access"] == 0
    for name in OTHER_FILES:
        assert (with_requests / f"{name}.jsonl").read_bytes() == (without / f"{name}.jsonl").read_bytes(), name
    assert summary["as_of"] == plain["as_of"]
    assert summary["applied"] == plain["applied"] + len(REQUESTS)


def test_access_jsonl_is_the_same_bytes_twice_and_with_two_workers(tmp_path: Path) -> None:
    first, _ = _replay(tmp_path, "one", EVENTS + REQUESTS, _settings())
    again, _ = _replay(tmp_path, "again", EVENTS + REQUESTS, _settings())
    two, _ = _replay(tmp_path, "two", EVENTS + REQUESTS, _settings(workers=2))
    expected = (first / "access.jsonl").read_bytes()
    assert expected.count(b"\n") == len(REQUESTS)
    assert (again / "access.jsonl").read_bytes() == expected
    assert (two / "access.jsonl").read_bytes() == expected
