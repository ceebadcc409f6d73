"""`pulse run` on the real broker and Redis: dead letters, profiles, accounting and delivery checks."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
import redis

from engine.sinks import CheckedProducer, DeliveryError
from schemas.codec import loads
from tests.integration.conftest import Names, PulseProcess, consume_all, produce, wait_for

pytestmark = pytest.mark.integration


def _event(event_id: str, user: str, event_type: str, ts: str, **extra: object) -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user, "account_id": "acme", "type": event_type,
                         "ts": ts, **extra})  # fmt: skip


GOOD = [
    _event("e1", "alice", "session_start", "2026-01-05T09:00:00Z", properties={"email": "alice@example.com"}),
    _event("e2", "alice", "feature_used", "2026-01-05T09:05:00Z", feature="reports"),
    _event("e3", "alice", "feature_used", "2026-01-06T09:05:00+01:00", feature="reports"),
    _event("e4", "bob", "page_view", "2026-01-03T12:00:00Z"),
    _event("e5", "bob", "nps_response", "2026-01-06T12:00:00Z", properties={"score": 9}),
    _event("e6", "carol", "api_call", "2026-01-06T18:00:00Z"),
]
DUPLICATES = [GOOD[1], GOOD[4]]
MALFORMED = [
    b"not json at all",
    b'{"event_id":"m1","user_id":"dave","type":"page_view"}',  # no ts
    b'{"event_id":"m2","user_id":"dave","type":"nps_response","ts":1767607200000,"properties":{"score":11}}',
    b'\xff\xfe{"event_id":"m3"}',
    b"[1,2,3]",
]


def test_run_writes_dead_letters_and_profiles(
    kafka: str, redis_client: redis.Redis, names: Names, pulse_run: Callable[..., PulseProcess]
) -> None:
    messages: list[tuple[bytes | None, bytes]] = [(b"k", v) for v in GOOD + DUPLICATES + MALFORMED]
    produce(kafka, names.topic("events"), messages)
    pulse = pulse_run(names.env)

    letters = consume_all(kafka, names.topic("dlq"), len(MALFORMED))
    pulse.assert_alive()
    assert sorted(m.value() or b"" for m in letters) == sorted(MALFORMED)
    for letter in letters:
        headers = dict(letter.headers() or [])
        assert headers["pulse.error"] in {b"invalid_json", b"missing_field", b"invalid_property", b"not_object"}
        assert headers["pulse.source"] == names.topic("events").encode()
        assert int(headers["pulse.offset"] or -1) >= 0

    def profiles() -> dict[str, dict[bytes, bytes]]:
        found: dict[str, dict[bytes, bytes]] = {
            u: redis_client.hgetall(f"{names.run}:user:{u}")  # type: ignore[misc]
            for u in ("alice", "bob", "carol")
        }
        return found if all(found.values()) else {}

    found = wait_for(profiles, 60, "three user profiles in Redis")
    alice = found["alice"]
    assert alice[b"account_id"] == b"acme"
    assert loads(alice[b"features"]) == {"reports": 2}
    assert loads(alice[b"counts"])["activity"] == 3
    assert alice[b"first_seen"] == b"2026-01-05T09:00:00.000Z"
    assert b"alice@example.com" not in b"".join(v for p in found.values() for v in p.values())
    assert loads(found["bob"][b"counts"])["sentiment"] == 1

    total = len(messages)

    def accounted() -> dict[str, float]:
        m = pulse.metrics()
        done = m.get("pulse_events_applied_total", 0) + m.get("pulse_events_duplicate_total", 0)
        rejected = sum(v for k, v in m.items() if k.startswith("pulse_events_rejected_total"))
        return m if m.get("pulse_events_in_total") == total and done + rejected == total else {}

    m = wait_for(accounted, 60, "metrics to account for every event")
    assert m["pulse_events_applied_total"] == len(GOOD)
    assert m["pulse_events_duplicate_total"] == len(DUPLICATES)
    assert pulse.stop() in (0, -15)


def test_erasure_removes_the_profile(
    kafka: str, redis_client: redis.Redis, names: Names, pulse_run: Callable[..., PulseProcess]
) -> None:
    produce(kafka, names.topic("events"), [(None, _event("x1", "erin", "page_view", "2026-01-05T09:00:00Z"))])
    pulse_run(names.env)
    key = f"{names.run}:user:erin"
    wait_for(lambda: redis_client.exists(key), 60, "erin's profile")
    erasure = _event("x2", "erin", "erasure_requested", "2026-01-06T09:00:00Z")
    produce(kafka, names.topic("events"), [(None, erasure)])
    wait_for(lambda: not redis_client.exists(key), 60, "erin's profile to be erased")


def test_failed_delivery_fails_loudly(kafka: str, names: Names) -> None:
    # The broker refuses messages above its 1 MiB limit; the client allows them so the broker must answer.
    producer = CheckedProducer({"bootstrap.servers": kafka, "acks": "all", "message.max.bytes": 4_000_000})
    produce(kafka, names.topic("big"), [])
    producer.produce(names.topic("big"), b"k", b"x" * 2_000_000)
    with pytest.raises(DeliveryError, match="failed delivery"):
        producer.flush()
