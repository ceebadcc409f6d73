"""`pulse restore-profiles`: rebuild the Redis profile hashes from the compacted profile topics.

The tables (`topics.profiles`, `topics.account_profiles`) hold what LiveSink wrote to Redis: key = user or
account id, value = the profile JSON, a null value = a tombstone (erasure). Reading them from the beginning
to their current end and keeping the latest value per key gives back every hash exactly as it was written.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from engine import logs, metrics
from engine.config import Settings
from engine.serving import Writer
from engine.sinks import RDKAFKA_LOG, ProfileStore, WriteUnit, redis_fields, serving_writer
from engine.sources import Progress, consumer_error, kafka_admin, watermark_offsets
from schemas.codec import loads
from schemas.outputs import Entity

log = logging.getLogger("pulse.restore")
WATERMARK_PATIENCE_S = 15.0  # a topic created a moment ago may not have partition leaders yet


@dataclass(frozen=True, slots=True)
class RestoreResult:
    users: int  # hashes written
    accounts: int
    tombstones: int  # keys whose latest value is a tombstone: deleted
    records: int  # messages read from both tables (and the alerts topic)
    seconds: float
    alerts: int = 0  # open alerts written back (the serving index of open alerts)

    def line(self, store: ProfileStore) -> str:
        return (
            f"pulse: restored {self.users} user and {self.accounts} account profile(s) into Redis {store.where} "
            f"(prefix {store.settings.key_prefix!r}); {self.tombstones} tombstone(s) deleted; "
            f"{self.alerts} open alert(s); {self.records} record(s) read in {self.seconds:.1f}s"
        )

    def report(self, store: ProfileStore) -> None:
        logs.info(
            log,
            self.line(store),
            users=self.users,
            accounts=self.accounts,
            tombstones=self.tombstones,
            records=self.records,
            alerts=self.alerts,
            seconds=round(self.seconds, 3),
        )


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **settings.kafka.client_config(),
            # assign() only: the group is never joined or committed.
            "group.id": f"pulse-restore-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "error_cb": lambda error: metrics.KAFKA_ERRORS.inc(),
            "logger": RDKAFKA_LOG,
        }
    )


def _extents(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) offsets of each partition of `topic`; {} when the topic does not exist."""
    meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        return {}
    return {p: watermark_offsets(consumer, topic, p, WATERMARK_PATIENCE_S) for p in sorted(meta.partitions)}


def table_has_data(settings: Settings) -> bool:
    """Whether either profile table holds at least one message."""
    consumer = _consumer(settings)
    try:
        for topic in (settings.topics.profiles, settings.topics.account_profiles):
            if any(high > low for low, high in _extents(consumer, topic).values()):
                return True
        return False
    finally:
        consumer.close()


def read_table(
    settings: Settings,
    topic: str,
    progress: Progress | None = None,
    already: int = 0,
    key_of: Callable[[bytes | None, bytes | None], bytes | None] = lambda key, _: key,
) -> tuple[dict[bytes, Any], int]:
    """The latest value per key of `topic`, read from the beginning to the end offsets of now (later
    writes are not waited for), and the number of messages read. Tombstones are kept as None. `key_of`
    (message key, value) says what "per key" is: the message key unless given."""
    consumer = _consumer(settings)
    latest: dict[bytes, Any] = {}
    read = 0
    try:
        ends = {p: high for p, (low, high) in _extents(consumer, topic).items() if high > low}
        if not ends:
            return latest, 0
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        # Compaction leaves gaps in offsets; a partition is done once the consumer is past its end offset.
        pending = set(ends)
        while pending:
            messages = consumer.consume(1000, 0.5)
            for message in messages:
                error = message.error()
                if error is not None:
                    consumer_error(error, topic)
                    continue
                partition = message.partition() or 0
                offset = message.offset() or 0
                if partition not in pending or offset >= ends[partition]:
                    continue  # written after we started: the live service handles it
                read += 1
                value = message.value()
                key = key_of(message.key(), value)
                if key is not None:
                    latest[key] = value
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
            if not messages and pending:
                positions = consumer.position([TopicPartition(topic, p) for p in pending])
                pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
            if progress is not None:
                progress.update(already + read, "records read")
        return latest, read
    finally:
        consumer.close()


def _units(
    writer: Writer, entity: Entity, table: dict[bytes, Any], members: dict[str, list[str]]
) -> Iterator[tuple[WriteUnit, bool]]:
    """(the write, whether it is a tombstone) per profile. The user table is read first: `members` collects
    each account's members from the users' `account_id`, for the members sets written with the accounts."""
    for raw_key, value in table.items():
        key = raw_key.decode()
        # Exactly what LiveSink writes: the table holds dumps(fields), Redis holds redis_fields(fields).
        profile = None if value is None else loads(value)
        if entity is Entity.USER and profile is not None and isinstance(profile.get("account_id"), str):
            members.setdefault(profile["account_id"], []).append(key)
        account_members = tuple(sorted(members.get(key, ()))) if entity is Entity.ACCOUNT else None
        fields = None if profile is None else redis_fields(profile)
        yield writer.profile(entity, key, fields, account_members), profile is None


def restore_profiles(settings: Settings, store: ProfileStore, progress_every: float = 5.0) -> RestoreResult:
    """Writes every profile of both tables to Redis (tombstones delete), in pipelines of
    `redis.pipeline_size`, riding out Redis outages like the live sink does."""
    started = time.monotonic()
    progress = Progress("restore-profiles", progress_every)
    counts = {Entity.USER: 0, Entity.ACCOUNT: 0}
    tombstones = 0
    records = 0
    written = 0
    size = store.settings.pipeline_size
    writer = serving_writer(store.settings)
    members: dict[str, list[str]] = {}
    for entity in (Entity.USER, Entity.ACCOUNT):
        table, read = read_table(settings, settings.topics.for_profiles(entity), progress, records)
        records += read
        chunk: list[WriteUnit] = []
        for unit, tombstone in _units(writer, entity, table, members):
            chunk.append(unit)
            if tombstone:
                tombstones += 1
            else:
                counts[entity] += 1
            if len(chunk) >= size:
                store.write(chunk)
                metrics.PROFILE_WRITES.inc(len(chunk))
                written += len(chunk)
                chunk = []
                progress.update(written, "hashes written")
        if chunk:
            store.write(chunk)
            metrics.PROFILE_WRITES.inc(len(chunk))
            written += len(chunk)
        del table
    alerts = 0
    if writer.indexes:
        # The open alerts index: the latest record of each alert id, kept when it is still firing (an erased
        # user's alerts were resolved by the erasure, so none comes back).
        latest, read = read_table(settings, settings.topics.alerts, progress, records, key_of=_alert_id)
        records += read
        units = [unit for value in latest.values() if value is not None and (unit := writer.alert(value))]
        for start in range(0, len(units), size):
            store.write(units[start : start + size])
        alerts = sum(1 for unit in units if unit[0][0] == "HSET")
    elapsed = time.monotonic() - started
    return RestoreResult(counts[Entity.USER], counts[Entity.ACCOUNT], tombstones, records, elapsed, alerts)


def _alert_id(key: bytes | None, value: bytes | None) -> bytes | None:
    """Alerts are keyed by user on their topic; an alert is its `alert_id`."""
    try:
        alert_id = loads(value or b"").get("alert_id")
    except (ValueError, AttributeError):
        return None
    return alert_id.encode() if isinstance(alert_id, str) else None


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def redis_has_profiles(store: ProfileStore) -> bool:
    """Whether Redis holds any key under `{prefix}:` (retried while Redis is unreachable)."""
    pattern = f"{_glob_escape(store.settings.key_prefix)}:*"

    def any_key() -> bool:
        return next(iter(store.client.scan_iter(match=pattern, count=1000)), None) is not None

    return store.call(any_key)


def restore_if_empty(settings: Settings) -> RestoreResult | None:
    """`pulse run` at start: Redis came back empty (no key under the prefix) while the profile tables are not
    empty, so the profiles are restored from the tables before the dataflow writes anything."""
    store = ProfileStore(settings.redis)
    try:
        if redis_has_profiles(store) or not table_has_data(settings):
            return None
        logs.info(
            log,
            f"Redis {store.where} holds no key under {settings.redis.key_prefix!r} but "
            f"the profile tables ({settings.topics.profiles}, {settings.topics.account_profiles}) are not: "
            "restoring the profiles from them first",
        )
        result = restore_profiles(settings, store)
        result.report(store)
        return result
    finally:
        store.close()


def run_restore(settings: Settings) -> RestoreResult:
    """`pulse restore-profiles`: restore, print the one-line summary."""
    kafka_admin(settings.kafka)  # fails fast with the reason when the broker refuses Pulse
    store = ProfileStore(settings.redis)
    try:
        result = restore_profiles(settings, store)
        result.report(store)
        return result
    finally:
        store.close()
