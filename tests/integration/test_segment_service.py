"""`pulse run` with `[input] format = "segment"` on the real broker and Redis: Segment / RudderStack messages
in, profiles with the right account out, no trait anywhere, bad messages on the dead-letter topic verbatim,
and `pulse erase` speaking the same format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from engine.config import load_settings
from engine.replay import replay
from schemas.codec import format_ts, loads
from tests.integration.conftest import ROOT, Names, PulseProcess, consume_all, produce, read_topic, wait_for

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "segment"
CANARIES = (b"canary", b"Canary", b"910 000 111")
OUTPUT_TOPICS = (
    "scores", "alerts", "lifecycle", "accounts", "dlq", "profiles", "account-profiles", "access", "funnel", "insights",
)  # fmt: skip


def _fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _message(base: dict[str, Any], message_id: str, user: str, ts: str, **extra: Any) -> dict[str, Any]:
    return {**base, "messageId": message_id, "userId": user, "timestamp": ts, **extra}


def _redis_bytes(client: redis.Redis, prefix: str) -> bytes:
    """Every key under the run's prefix and every value in it, whatever the key's type."""
    c: Any = client  # redis-py's return types are unions of sync and async forms
    parts: list[bytes] = []
    for key in c.scan_iter(f"{prefix}:*"):
        parts.append(key)
        kind = c.type(key)
        if kind == b"hash":
            parts += [field + b"=" + value for field, value in c.hgetall(key).items()]
        elif kind == b"string":
            parts.append(c.get(key) or b"")
        elif kind == b"set":
            parts += list(c.smembers(key))
        elif kind == b"zset":
            parts += [member for member, _ in c.zrange(key, 0, -1, withscores=True)]
        elif kind == b"list":
            parts += list(c.lrange(key, 0, -1))
        else:
            pytest.fail(f"unexpected Redis type {kind!r} for {key!r}")
    return b"\n".join(parts)


def test_segment_messages_in_profiles_out_traits_nowhere(
    kafka: str, redis_client: redis.Redis, names: Names, pulse_run: Callable[..., PulseProcess]
) -> None:
    track = {m["event"]: m for m in _fixture("track.json")}
    user = "usr_segment_1"
    # Recent event times (minutes apart, two days ago), as in production: live timers and clocks behave as there.
    t0 = (int(time.time()) // 60 - 2 * 1440) * 60_000
    plus_one = timezone(timedelta(hours=1))
    compact = datetime.fromtimestamp((t0 - 55 * 60_000) / 1000, plus_one).strftime("%Y-%m-%d %H:%M:%S.250+0100")
    naive = datetime.fromtimestamp((t0 + 13 * 60_000) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    good = [
        _message(track["Signed Up"], "m1", user, format_ts(t0)),
        _message(track["Feature Used"], "m2", user, compact),  # 55 minutes before m1, at +01:00
        _message(_fixture("page.json"), "m3", user, format_ts(t0 + 10 * 60_000)),
        _message(_fixture("identify.json"), "m4", user, format_ts(t0 + 11 * 60_000)),
        # The group call moves the user from acct-northwind (context.groupId above) to acct-contoso.
        _message(_fixture("group.json"), "m5", user, format_ts(t0 + 12 * 60_000)),
        _message({k: v for k, v in track["NPS Submitted"].items() if k != "context"}, "m6", user, naive),  # UTC
    ]
    bad = {
        b"missing_field": orjson.dumps({k: v for k, v in good[1].items() if k != "messageId"}),
        b"invalid_timestamp": orjson.dumps(_message(track["Feature Used"], "m7", user, "last tuesday")),
        b"wrong_type": orjson.dumps({**good[2], "messageId": "m8", "type": "batch"}),
    }
    values = [orjson.dumps(m) for m in good] + list(bad.values())
    produce(kafka, names.topic("events"), [(user.encode(), value) for value in values])
    env = {**names.env, "PULSE_INPUT_FORMAT": "segment"}
    pulse = pulse_run(env)

    letters = consume_all(kafka, names.topic("dlq"), len(bad))
    pulse.assert_alive()
    by_code = {dict(m.headers() or [])["pulse.error"]: m for m in letters}
    assert {code: m.value() for code, m in by_code.items()} == bad  # verbatim: the Segment bytes
    assert dict(by_code[b"missing_field"].headers() or [])["pulse.detail"] == b"messageId is required"
    assert by_code[b"missing_field"].key() == user.encode()

    key = f"{names.run}:user:{user}"

    def moved() -> dict[bytes, bytes]:
        profile: dict[bytes, bytes] = redis_client.hgetall(key)  # type: ignore[assignment]
        return profile if profile.get(b"account_id") == b"acct-contoso" else {}

    profile = wait_for(moved, 60, "the profile in Redis with the group call's account")
    counts = loads(profile[b"counts"])
    assert (counts["activity"], counts["commercial"], counts["sentiment"]) == (2, 1, 1)
    assert loads(profile[b"features"]) == {"reports": 1}
    assert profile[b"first_seen"] == format_ts(t0 - 55 * 60_000 + 250).encode()

    def accounted() -> dict[str, float]:
        m = pulse.metrics()
        done = m.get("pulse_events_applied_total", 0) + m.get("pulse_events_duplicate_total", 0)
        rejected = sum(v for k, v in m.items() if k.startswith("pulse_events_rejected_total"))
        return m if m.get("pulse_events_in_total") == len(values) and done + rejected == len(values) else {}

    m = wait_for(accounted, 60, "metrics to account for every message")
    assert m["pulse_events_applied_total"] == len(good)
    # The account topic has the user in acct-contoso: wait for it, then every output is as complete as it gets.
    wait_for(
        lambda: any(b"acct-contoso" in (r.key() or b"") for r in read_topic(kafka, names.topic("account-profiles"))),
        60,
        "acct-contoso's profile on the account profile topic",
    )
    stored = _redis_bytes(redis_client, names.run)
    assert user.encode() in stored
    assert not any(canary in stored for canary in CANARIES)
    for kind in OUTPUT_TOPICS:
        for record in read_topic(kafka, names.topic(kind)):
            content = (record.key() or b"") + (record.value() or b"")
            assert not any(canary in content for canary in CANARIES), kind

    # `pulse erase` sends its erasure in the configured format: a Segment track call the decoder accepts.
    erased = subprocess.run(
        [sys.executable, "-m", "engine.cli", "erase", user, "--timeout", "90"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        timeout=180,
    )
    assert erased.returncode == 0, erased.stderr.decode()
    assert not redis_client.exists(key)
    event_id = loads(erased.stdout)["erasure_event_id"]
    (request,) = [
        loads(r.value() or b"null")
        for r in read_topic(kafka, names.topic("events"))
        if b"erasure-" in (r.value() or b"")
    ]
    assert (request["type"], request["event"], request["messageId"], request["userId"]) == (
        "track", "Erasure Requested", event_id, user,
    )  # fmt: skip
    assert pulse.stop() in (0, -15)


def test_a_visitor_who_signs_up_joins_the_user_in_pulse_run(
    kafka: str, redis_client: redis.Redis, names: Names, pulse_run: Callable[..., PulseProcess], tmp_path: Path
) -> None:
    """The identity stage live: a browser's anonymous page views, then an `alias` to the user who signed up,
    then more page views from the same browser, over 4 partitions keyed by whichever id a message has."""
    now = datetime.now(UTC)

    def stamp(days: float) -> str:
        return format_ts(int((now - timedelta(days=days)).timestamp() * 1000))

    def page(message_id: str, days: float) -> dict[str, Any]:
        return {"type": "page", "messageId": message_id, "anonymousId": "anon-7", "timestamp": stamp(days)}

    visits = [page(f"p{d}", 10 - d) for d in range(4)]
    sign_up = {"type": "track", "event": "Signed Up", "messageId": "su", "userId": "u-7", "timestamp": stamp(5),
               "context": {"groupId": "acme"}}  # fmt: skip
    alias = {"type": "alias", "messageId": "al", "userId": "u-7", "previousId": "anon-7", "timestamp": stamp(5)}
    after = [page("p9", 2)]
    messages = [*visits, sign_up, alias, *after]
    produce(
        kafka,
        names.topic("events"),
        [((m.get("userId") or m["anonymousId"]).encode(), orjson.dumps(m)) for m in messages],
    )
    # The alias must reach the identity stage after the visits: they are produced first, and the visits and
    # the alias both go by the anonymous id's identity shard whatever their partition.
    env = {**names.env, "PULSE_INPUT_FORMAT": "segment", "PULSE_ENGINE_PROFILE_FLUSH_MS": "200"}
    pulse = pulse_run(env)
    c: Any = redis_client

    def joined() -> dict[bytes, bytes] | None:
        pulse.assert_alive()
        profile: dict[bytes, bytes] = c.hgetall(f"{names.run}:user:u-7")
        if not profile or c.exists(f"{names.run}:user:anon-7"):
            return None
        return profile if loads(profile[b"active_days_total"]) == 5 else None

    profile = wait_for(joined, 90, "u-7 with the visitor's four days and the page view after the alias")
    assert profile[b"first_seen"].decode() == stamp(10)  # the first page view, as a visitor
    # A replay of the same messages gives the user the same activity (it reads the link first).
    path = tmp_path / "visitor.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(m) for m in messages) + b"\n")
    replay(path, tmp_path / "replay", load_settings(None, env={"PULSE_INPUT_FORMAT": "segment"}))
    replayed = {p["user_id"]: p for p in map(loads, (tmp_path / "replay" / "profiles.jsonl").read_bytes().splitlines())}
    assert sorted(replayed) == ["u-7"]
    table = {m.key(): loads(m.value() or b"null") for m in read_topic(kafka, names.topic("profiles"))}
    for field in ("first_seen", "last_seen", "active_days_total", "counts", "commercial", "journey_stage"):
        assert table[b"u-7"][field] == replayed["u-7"][field], field
    assert table.get(b"anon-7", "never") in (None, "never")  # a tombstone, or the visitor never had a profile
    lifecycle = [loads(m.value() or b"") for m in read_topic(kafka, names.topic("lifecycle"))]
    merged = [r for r in lifecycle if r.get("kind") == "user_merged"]
    if merged:  # the visits were applied as the visitor's before the alias came: the visitor was merged away
        assert [(r["user_id"], r["into"]) for r in merged] == [("anon-7", "u-7")]
