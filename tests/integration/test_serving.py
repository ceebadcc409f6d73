"""The serving indexes beside the profiles (engine.serving), on the real Redis and through `pulse run`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis

from engine.config import KafkaSettings, RedisSettings, Settings, TopicSettings
from engine.restore import restore_profiles
from engine.serving import BANDS, HISTORY_FIELDS, Writer
from engine.sinks import ProfileStore, WriteUnit, redis_fields
from schemas.codec import format_ts
from schemas.outputs import Entity
from tests.integration.conftest import REDIS_URL, Names, PulseProcess, produce, wait_for

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


def _state(client: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key under the prefix with its whole value, for comparing two writes of the same outputs."""
    state: dict[bytes, Any] = {}
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        kind = client.type(key)
        if kind == b"hash":
            state[key] = client.hgetall(key)
        elif kind == b"zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            state[key] = client.smembers(key)
    return state


def _user(user_id: str, score: float, band: str, account_id: str = "acme") -> dict[str, str]:
    return redis_fields({"user_id": user_id, "account_id": account_id, "score": score, "band": band})


def _score_record(user_id: str, ts: int, score: float, previous: float, top: str) -> bytes:
    return orjson.dumps(
        {
            "kind": "score_changed",
            "user_id": user_id,
            "account_id": "acme",
            "ts": format_ts(ts),
            "score": score,
            "previous_score": previous,
            "band": "watch",
            "previous_band": "healthy",
            "components": {"recency": 0.5},
            "reasons": [{"component": top, "delta": score - previous}],
            "cause_event_id": f"e{ts}",
            "model": "v1",
        }
    )


def _alert(alert_id: str, user_id: str, kind: str, status: str) -> bytes:
    return orjson.dumps({"alert_id": alert_id, "kind": kind, "status": status, "user_id": user_id})


def test_indexes_follow_profiles_records_and_erasure(redis_client: redis.Redis, names: Names) -> None:
    prefix = names.run
    store = ProfileStore(RedisSettings(url=REDIS_URL, key_prefix=prefix))
    writer = Writer(prefix, history_size=5)
    t0 = 1_772_452_800_000
    units: list[WriteUnit] = [
        writer.profile(Entity.USER, "ann", _user("ann", 22.5, "at_risk")),
        writer.profile(Entity.USER, "bob", _user("bob", 48.0, "watch")),
        writer.profile(Entity.USER, "cy", _user("cy", 91.0, "healthy", "globex")),
        *[
            writer.history(Entity.USER, "ann", t0 + n, _score_record("ann", t0 + n, 50 - n, 51 - n, "sentiment"))
            for n in range(8)
        ],
        writer.alert(_alert("lapse-1", "ann", "lapse", "firing")),
        writer.alert(_alert("lapse-2", "bob", "lapse", "firing")),
        writer.alert(_alert("react-1", "bob", "reactivated", "firing")),  # a notice: never open
        writer.alert(_alert("lapse-2", "bob", "lapse", "resolved")),
        writer.profile(Entity.ACCOUNT, "acme", redis_fields({"score": 35.0, "band": "watch"}), ("ann", "bob", "dan")),
        writer.profile(Entity.ACCOUNT, "globex", redis_fields({"score": 90.0, "band": "healthy"}), ("cy",)),
        # Bob recovers: he leaves the watch set for the healthy one; dan left acme.
        writer.profile(Entity.USER, "bob", _user("bob", 75.0, "healthy")),
        writer.profile(Entity.ACCOUNT, "acme", redis_fields({"score": 40.0, "band": "watch"}), ("ann", "bob")),
    ]
    store.write(units)
    client: Any = redis_client  # redis-py's reply types are unions; these replies are known

    def index(entity: str, band: str) -> Any:
        return client.zrange(f"{prefix}:index:{entity}:{band}", 0, -1, withscores=True)

    assert index("users", "at_risk") == [(b"ann", 22.5)]
    assert index("users", "watch") == []
    assert index("users", "healthy") == [(b"bob", 75.0), (b"cy", 91.0)]
    assert index("accounts", "watch") == [(b"acme", 40.0)]
    assert client.zrange(f"{prefix}:index:accounts", 0, -1, withscores=True) == [(b"acme", 40.0), (b"globex", 90.0)]
    assert client.smembers(f"{prefix}:members:acme") == {b"ann", b"bob"}
    # The five newest changes by event time, each only the history fields, in the record's order.
    history = [orjson.loads(m) for m in client.zrange(f"{prefix}:history:user:ann", 0, -1)]
    assert [h["cause_event_id"] for h in history] == [f"e{t0 + n}" for n in range(3, 8)]
    assert list(history[-1]) == list(HISTORY_FIELDS)
    assert history[-1]["reasons"][0]["component"] == "sentiment"
    assert client.hkeys(f"{prefix}:alerts:user:ann") == [b"lapse-1"]
    assert not client.exists(f"{prefix}:alerts:user:bob")

    # The same outputs again (a batch re-processed after a restart): nothing changes.
    before = _state(client, prefix)
    store.write(units)
    assert _state(client, prefix) == before

    # Erasure: the tombstone removes the person from every index and history; the account's rewrite
    # (the member left) drops them from its members.
    store.write([
        writer.profile(Entity.USER, "ann", None),
        writer.profile(Entity.ACCOUNT, "acme", redis_fields({"score": 70.0, "band": "healthy"}), ("bob",)),
    ])  # fmt: skip
    assert not client.exists(f"{prefix}:user:ann", f"{prefix}:history:user:ann", f"{prefix}:alerts:user:ann")
    assert all(client.zscore(f"{prefix}:index:users:{band}", "ann") is None for band in BANDS)
    assert client.smembers(f"{prefix}:members:acme") == {b"bob"}
    assert b"ann" not in repr(_state(client, prefix)).encode()

    # An account erased (its last member gone) leaves no index entry behind.
    store.write([writer.profile(Entity.ACCOUNT, "globex", None)])
    assert client.zscore(f"{prefix}:index:accounts", "globex") is None
    assert not client.exists(f"{prefix}:members:globex", f"{prefix}:account:globex")
    store.close()


def test_with_indexes_off_only_the_profile_hashes_are_written(redis_client: redis.Redis, names: Names) -> None:
    writer = Writer(names.run, indexes=False)
    store = ProfileStore(RedisSettings(url=REDIS_URL, key_prefix=names.run))
    store.write([
        writer.profile(Entity.USER, "ann", _user("ann", 22.5, "at_risk")),
        writer.profile(Entity.ACCOUNT, "acme", redis_fields({"score": 35.0, "band": "watch"}), ("ann",)),
        writer.history(Entity.USER, "ann", 1, _score_record("ann", 1, 20, 30, "recency")),
        writer.alert(_alert("lapse-1", "ann", "lapse", "firing")),
    ])  # fmt: skip
    assert sorted(redis_client.scan_iter(f"{names.run}:*")) == [
        f"{names.run}:account:acme".encode(),
        f"{names.run}:user:ann".encode(),
    ]
    store.close()


def test_restore_profiles_rebuilds_the_band_indexes_members_and_open_alerts(
    kafka: str, redis_client: redis.Redis, names: Names
) -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka),
        topics=TopicSettings(
            profiles=names.topic("profiles"),
            account_profiles=names.topic("account-profiles"),
            alerts=names.topic("alerts"),
        ),
        redis=RedisSettings(url=REDIS_URL, key_prefix=names.run, pipeline_size=2),
    )
    users = [
        {"user_id": "ann", "account_id": "acme", "score": 20.0, "band": "at_risk"},
        {"user_id": "bob", "account_id": "acme", "score": 60.0, "band": "watch"},
        {"user_id": "cy", "account_id": "globex", "score": 95.0, "band": "healthy"},
    ]
    produce(kafka, names.topic("profiles"), [(str(u["user_id"]).encode(), orjson.dumps(u)) for u in users])
    produce(kafka, names.topic("account-profiles"), [
        (b"acme", orjson.dumps({"account_id": "acme", "score": 40.0, "band": "watch"})),
        (b"globex", orjson.dumps({"account_id": "globex", "score": 95.0, "band": "healthy"})),
    ])  # fmt: skip
    # Alerts are keyed by user: ann's lapse is open; bob's lapse was resolved after his churn-risk alert
    # fired, which is still open; eve's was closed by her erasure.
    produce(kafka, names.topic("alerts"), [
        (b"ann", _alert("lapse-a", "ann", "lapse", "firing")),
        (b"bob", _alert("lapse-b", "bob", "lapse", "firing")),
        (b"eve", _alert("lapse-e", "eve", "lapse", "firing")),
        (b"bob", _alert("churn-b", "bob", "churn_risk", "firing")),
        (b"bob", _alert("react-b", "bob", "reactivated", "firing")),
        (b"bob", _alert("lapse-b", "bob", "lapse", "resolved")),
        (b"eve", _alert("lapse-e", "eve", "lapse", "resolved")),
    ], partitions=2)  # fmt: skip
    store = ProfileStore(settings.redis)

    result = restore_profiles(settings, store)

    prefix = names.run
    assert result.alerts == 2
    assert redis_client.hkeys(f"{prefix}:alerts:user:ann") == [b"lapse-a"]
    assert redis_client.hkeys(f"{prefix}:alerts:user:bob") == [b"churn-b"]
    assert not redis_client.exists(f"{prefix}:alerts:user:eve")
    assert redis_client.zrange(f"{prefix}:index:users:at_risk", 0, -1) == [b"ann"]
    assert redis_client.zrange(f"{prefix}:index:users:watch", 0, -1) == [b"bob"]
    assert redis_client.zrange(f"{prefix}:index:accounts", 0, -1) == [b"acme", b"globex"]
    assert redis_client.smembers(f"{prefix}:members:acme") == {b"ann", b"bob"}
    assert redis_client.smembers(f"{prefix}:members:globex") == {b"cy"}
    store.close()
    assert replace(settings.redis, indexes=False).indexes is False


def test_pulse_run_keeps_the_indexes_and_erasure_clears_them(
    kafka: str, redis_client: redis.Redis, names: Names, pulse_run: Callable[..., PulseProcess]
) -> None:
    now = int(time.time() * 1000)
    start = now - 10 * DAY_MS

    def event(event_id: str, user: str, kind: str, ts: int, **extra: Any) -> tuple[bytes, bytes]:
        doc = {"event_id": event_id, "user_id": user, "account_id": "acme", "type": kind, "ts": format_ts(ts), **extra}
        return user.encode(), orjson.dumps(doc)

    events = [
        *[event(f"a{d}", "ann", "feature_used", start + d * DAY_MS, feature="reports") for d in range(8)],
        event("a-nps1", "ann", "nps_response", start + 2 * DAY_MS + 1000, properties={"score": 10}),
        event("a-nps2", "ann", "nps_response", start + 8 * DAY_MS, properties={"score": 0}),
        *[event(f"b{d}", "bob", "session_start", start + d * DAY_MS) for d in range(9)],
    ]
    produce(kafka, names.topic("events"), events)
    env = {**names.env, "PULSE_ENGINE_PROFILE_FLUSH_MS": "200"}
    pulse = pulse_run(env)
    prefix = names.run

    def indexed() -> bool:
        pulse.assert_alive()
        banded = [redis_client.zscore(f"{prefix}:index:users:{b}", "ann") for b in BANDS]
        return (
            any(s is not None for s in banded)
            and redis_client.smembers(f"{prefix}:members:acme") == {b"ann", b"bob"}
            and redis_client.zscore(f"{prefix}:index:accounts", "acme") is not None
        )

    wait_for(indexed, 90, "ann, bob and acme in the serving indexes")
    client: Any = redis_client  # redis-py's reply types are unions; these replies are known
    profile = client.hgetall(f"{prefix}:user:ann")
    banded = {b: redis_client.zscore(f"{prefix}:index:users:{b}", "ann") for b in BANDS}
    assert {b for b, s in banded.items() if s is not None} == {profile[b"band"].decode()}
    latest = orjson.loads(client.zrange(f"{prefix}:history:user:ann", -1, -1)[0])
    assert latest["cause_event_id"] == "a-nps2"
    assert latest["reasons"][0]["component"] == "sentiment"
    assert redis_client.zcard(f"{prefix}:history:account:acme") >= 1

    produce(kafka, names.topic("events"), [event("erase-ann", "ann", "erasure_requested", now)])

    def erased() -> bool:
        pulse.assert_alive()
        return (
            not redis_client.exists(f"{prefix}:user:ann", f"{prefix}:history:user:ann", f"{prefix}:alerts:user:ann")
            and all(redis_client.zscore(f"{prefix}:index:users:{b}", "ann") is None for b in BANDS)
            and redis_client.smembers(f"{prefix}:members:acme") == {b"bob"}
        )

    wait_for(erased, 90, "ann gone from every index, history and the members of acme")
