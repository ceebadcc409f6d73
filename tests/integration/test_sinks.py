"""The live sink's parts on the real servers: bounded Redis pipelines, outputs counted on acknowledgement,
the retry deadline, and restoring profiles from the compacted tables."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from engine.config import KafkaSettings, RedisSettings, Settings, TopicSettings
from engine.restore import redis_has_profiles, restore_profiles
from engine.serving import Writer
from engine.sinks import (
    CheckedProducer,
    DeliveryError,
    LiveSink,
    ProfileStore,
    RedisUnavailableError,
    WriteUnit,
    redis_fields,
)
from schemas.codec import dumps
from schemas.outputs import Entity, OutputKind, ProfileWrite, Record
from tests.integration.conftest import Names, free_port, produce, read_topic
from tests.integration.servers import RedisServer

pytestmark = pytest.mark.integration


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def hash_write(user_id: str, fields: dict[str, str] | None) -> WriteUnit:
    """A user's profile hash alone (no serving indexes), under the prefix `p`."""
    return Writer("p", indexes=False).profile(Entity.USER, user_id, fields)


def exec_calls(server: RedisServer) -> int:
    stats = server.client.info("commandstats")
    calls: int = stats.get("cmdstat_exec", {}).get("calls", 0)
    return calls


def test_profiles_are_written_in_bounded_transactions(private_redis: RedisServer) -> None:
    settings = RedisSettings(url=private_redis.url, key_prefix="p", pipeline_size=3)
    store = ProfileStore(settings)
    private_redis.client.hset("p:user:gone", mapping={"score": "1"})
    private_redis.client.hset("p:user:u0", mapping={"stale": "field"})
    ops = [hash_write(f"u{n}", {"n": str(n), "score": "50.5"}) for n in range(9)]
    ops.insert(4, hash_write("gone", None))  # a tombstone deletes
    before = exec_calls(private_redis)

    store.write(ops)

    # 10 writes in pipelines of at most 3: four MULTI/EXEC transactions on the server.
    assert exec_calls(private_redis) - before == 4
    assert not private_redis.client.exists("p:user:gone")
    # Absolute writes: the whole hash is replaced, the stale field is gone.
    assert private_redis.client.hgetall("p:user:u0") == {b"n": b"0", b"score": b"50.5"}
    assert private_redis.client.hgetall("p:user:u8") == {b"n": b"8", b"score": b"50.5"}

    # The default bound is 1,000 hashes per transaction.
    big = ProfileStore(RedisSettings(url=private_redis.url, key_prefix="p"))
    before = exec_calls(private_redis)
    big.write([hash_write(f"b{n}", {"n": str(n)}) for n in range(2500)])
    assert exec_calls(private_redis) - before == 3
    assert len(list(private_redis.client.scan_iter("p:user:b*", count=1000))) == 2500
    store.close()
    big.close()


def test_a_refused_profile_write_fails_the_batch_and_leaves_the_connection_clean(private_redis: RedisServer) -> None:
    # A user that may not HSET: Redis refuses the queued command, the transaction aborts, nothing is written.
    private_redis.client.acl_setuser(
        "nohset", enabled=True, passwords=["+pw"], keys=["~*"], commands=["+@all", "-hset"]
    )
    url = private_redis.url.replace("redis://", "redis://nohset:pw@", 1)
    store = ProfileStore(RedisSettings(url=url, key_prefix="p"))
    with pytest.raises(redis.ResponseError, match=r"(?i)permission|hset"):
        store.write([hash_write("a", {"n": "1"}), hash_write("b", {"n": "2"})])
    assert not private_redis.client.exists("p:user:a", "p:user:b")
    # The failed transaction's unread replies went with its connection: the next command reads its own.
    assert store.client.ping() is True
    store.write([hash_write("c", None)])  # a tombstone alone needs no HSET
    store.close()


def test_a_retry_deadline_ends_the_wait_for_a_redis_that_stays_away() -> None:
    port = free_port()  # nothing listens there: connections are refused, as when Redis is down
    store = ProfileStore(RedisSettings(url=f"redis://127.0.0.1:{port}/0", retry_deadline_seconds=1.0))
    errors = sample("pulse_redis_errors_total")
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="retry_deadline_seconds"):
        store.write([hash_write("x", {"a": "1"})])
    waited = time.monotonic() - started
    assert 1.0 <= waited < 5.0
    # Backoff 0.1, 0.2, 0.4, then the rest of the deadline: every failed attempt is counted.
    assert sample("pulse_redis_errors_total") - errors >= 4


def test_outputs_are_counted_when_kafka_acknowledges_them(kafka: str, names: Names) -> None:
    good, big = names.topic("good"), names.topic("big")
    produce(kafka, good, [])
    produce(kafka, big, [])
    # The broker refuses messages above its 1 MiB limit; the client allows them so the broker must answer.
    producer = CheckedProducer(
        {"bootstrap.servers": kafka, "acks": "all", "message.max.bytes": 4_000_000},
        {good: "scores", big: "alerts"},
    )
    scores, alerts = (
        sample("pulse_outputs_total", {"kind": "scores"}),
        sample("pulse_outputs_total", {"kind": "alerts"}),
    )
    for n in range(5):
        producer.produce(good, b"k", b"v%d" % n)
    # Queued is not written: nothing counts before the delivery reports say so.
    assert sample("pulse_outputs_total", {"kind": "scores"}) == scores
    producer.flush()
    assert sample("pulse_outputs_total", {"kind": "scores"}) == scores + 5
    assert len(read_topic(kafka, good)) == 5

    producer.produce(big, b"k", b"x" * 2_000_000)
    with pytest.raises(DeliveryError, match="failed delivery"):
        producer.flush()
    assert sample("pulse_outputs_total", {"kind": "alerts"}) == alerts, "a refused record is not an output"


def _settings(names: Names, kafka: str, redis_url: str, pipeline_size: int = 1000) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka),
        topics=TopicSettings(
            scores=names.topic("scores"),
            alerts=names.topic("alerts"),
            lifecycle=names.topic("lifecycle"),
            accounts=names.topic("accounts"),
            dlq=names.topic("dlq"),
            profiles=names.topic("profiles"),
            account_profiles=names.topic("account-profiles"),
        ),
        redis=RedisSettings(url=redis_url, key_prefix=names.run, pipeline_size=pipeline_size),
    )


def test_the_live_sink_writes_hashes_and_tables_and_counts_acknowledged_outputs(
    kafka: str, names: Names, private_redis: RedisServer
) -> None:
    settings = _settings(names, kafka, private_redis.url, pipeline_size=2)
    for kind in ("scores", "profiles", "account-profiles"):
        produce(kafka, names.topic(kind), [])
    users = [ProfileWrite(Entity.USER, f"u{n}", {"user_id": f"u{n}", "score": 40.5 + n, "counts": {"x": n}})
             for n in range(5)]  # fmt: skip
    account = ProfileWrite(Entity.ACCOUNT, "a1", {"account_id": "a1", "users": 5})
    record = Record(OutputKind.SCORES, "u0", b'{"kind":"score_changed"}', 0)
    before = {k: sample("pulse_outputs_total", {"kind": k}) for k in ("scores", "profiles", "account_profiles")}
    execs = exec_calls(private_redis)

    partition = LiveSink(settings).build("sink", 0, 1)
    partition.write_batch([("sink", [record, *users, account])])
    partition.close()

    # 6 hashes and the score record's history entry, at most 2 per transaction.
    assert exec_calls(private_redis) - execs == 4
    for write in [*users, account]:
        assert write.fields is not None
        key = f"{names.run}:{write.entity.value}:{write.key}"
        assert private_redis.client.hgetall(key) == {
            k.encode(): v.encode() for k, v in redis_fields(write.fields).items()
        }
    assert {m.key(): m.value() for m in read_topic(kafka, names.topic("profiles"))} == {
        w.key.encode(): dumps(w.fields) for w in users
    }
    after = {k: sample("pulse_outputs_total", {"kind": k}) for k in before}
    assert after == {"scores": before["scores"] + 1, "profiles": before["profiles"] + 5,
                     "account_profiles": before["account_profiles"] + 1}  # fmt: skip


def test_restore_keeps_the_latest_value_per_key_and_deletes_tombstones(
    kafka: str, names: Names, private_redis: RedisServer
) -> None:
    settings = _settings(names, kafka, private_redis.url, pipeline_size=2)
    v1 = {"user_id": "ann", "score": 10.0, "components": {"recency": 1.0}}
    v2 = {"user_id": "ann", "score": 20.5, "components": {"recency": 0.5}, "band": "watch"}
    produce(kafka, names.topic("profiles"), [
        (b"ann", dumps(v1)), (b"bob", dumps({"user_id": "bob"})), (b"ann", dumps(v2)),
        (b"eve", dumps({"user_id": "eve"})), (b"eve", None),  # type: ignore[list-item]  # a tombstone
    ], partitions=2)  # fmt: skip
    produce(kafka, names.topic("account-profiles"), [(b"acme", dumps({"account_id": "acme", "users": 2}))])
    private_redis.client.hset(f"{names.run}:user:eve", mapping={"user_id": "eve"})  # erased: must go
    store = ProfileStore(settings.redis)

    result = restore_profiles(settings, store)

    assert (result.users, result.accounts, result.tombstones, result.records) == (2, 1, 1, 6)
    assert private_redis.client.hgetall(f"{names.run}:user:ann") == {
        b"user_id": b"ann",
        b"score": b"20.5",
        b"components": b'{"recency":0.5}',
        b"band": b"watch",
    }
    assert private_redis.client.hgetall(f"{names.run}:account:acme") == {b"account_id": b"acme", b"users": b"2"}
    assert not private_redis.client.exists(f"{names.run}:user:eve")
    assert redis_has_profiles(store)
    assert not redis_has_profiles(ProfileStore(replace(settings.redis, key_prefix=f"{names.run}-other")))
    store.close()
