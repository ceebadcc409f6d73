"""An account's pause covers every member, wherever their state is sharded."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson

from engine.config import load_settings
from engine.replay import replay
from operators.shard import shard_of
from schemas.codec import loads, parse_ts

DAY_MS = 86_400_000
T0 = parse_ts("2026-02-02T09:00:00Z")


def _lapses(tmp_path: Path, pause: bool) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for day in range(20):
        for user in ("admin", "member"):
            events.append({"event_id": f"{user}-{day}", "user_id": user, "account_id": "acme",
                           "type": "session_start", "ts": T0 + day * DAY_MS})  # fmt: skip
    if pause:  # the admin pauses the subscription on day 20 and resumes it on day 40
        events.append({"event_id": "p", "user_id": "admin", "account_id": "acme", "type": "subscription_paused",
                       "ts": T0 + 20 * DAY_MS})  # fmt: skip
        events.append({"event_id": "r", "user_id": "admin", "account_id": "acme", "type": "subscription_resumed",
                       "ts": T0 + 40 * DAY_MS})  # fmt: skip
    path = tmp_path / f"in-{pause}.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    base = load_settings(None, env={})
    settings = dataclasses.replace(base, engine=dataclasses.replace(base.engine, workers=2))
    out = tmp_path / f"out-{pause}"
    replay(path, out, settings, until_ms=T0 + 60 * DAY_MS)
    docs = [loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    return [d for d in docs if d["kind"] == "lapse" and d["status"] == "firing" and d["user_id"] == "member"]


def test_members_of_a_paused_account_do_not_lapse_until_it_resumes(tmp_path: Path) -> None:
    assert shard_of("admin", 16) != shard_of("member", 16), "the point is a member in another shard"
    (unpaused,) = _lapses(tmp_path, pause=False)
    assert parse_ts(unpaused["ts"]) < T0 + 25 * DAY_MS  # a daily user silent from day 20 lapses within days
    (after_resume,) = _lapses(tmp_path, pause=True)
    assert parse_ts(after_resume["ts"]) >= T0 + 40 * DAY_MS  # nothing while paused; the rhythm restarts at resume
