"""`pulse export` and `pulse erase`: what a running deployment holds about one person, and their erasure.

Both read the deployment's own stores (Redis, the compacted profile table, the alerts and lifecycle topics)
with the same settings `pulse run` uses. The erasure goes through the input topic like any event, so it is
applied in its place in the person's stream, by the shard that holds them, with everything the stream's
erasure does (state, profile, table tombstone, account membership, open alerts, `user_erased`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from engine import logs
from engine.config import Settings
from engine.sinks import RDKAFKA_LOG, REDIS_TRANSIENT, ProfileStore, redis_key
from engine.sources import watermark_offsets
from schemas.codec import dumps, format_ts, loads
from schemas.events import MAX_ID_LENGTH, Vocabulary
from schemas.outputs import Entity

log = logging.getLogger("pulse.privacy")
# How long a broker may take to answer a metadata or offsets request before it counts as unreachable.
KAFKA_PATIENCE_S = 10.0
# Profile hash fields that hold text as it is; every other field is JSON (engine.sinks.redis_fields).
TEXT_FIELDS = frozenset({"user_id", "first_seen", "last_seen", "as_of", "band", "engagement", "commercial"})
ERASURE_TYPE = "erasure_requested"


class PrivacyError(RuntimeError):
    """A store unreachable or a deadline passed; the message is one line, meant for the user as it is."""


class DeadlineError(PrivacyError):
    """The deadline passed while reading a topic (as opposed to a store that cannot be reached)."""


def decode_profile(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A Redis profile hash back into the JSON it was written from: text fields as they are, the rest JSON."""
    profile: dict[str, Any] = {}
    for raw_name, raw_value in sorted(fields.items()):
        name, value = raw_name.decode(), raw_value.decode()
        if name in TEXT_FIELDS:
            profile[name] = value
        elif name == "account_id":
            profile[name] = None if value == "null" else value  # redis_fields writes None as JSON null
        else:
            try:
                profile[name] = loads(value)
            except ValueError:
                profile[name] = value
    return profile


@dataclass
class _Kafka:
    """Assign-only consumer (never joins or commits a group) and the last client error it reported."""

    settings: Settings
    errors: list[str] = field(default_factory=list)
    consumer: Consumer = field(init=False)

    def __post_init__(self) -> None:
        self.consumer = Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": f"pulse-privacy-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest",
                "error_cb": self._on_error,
                "logger": RDKAFKA_LOG,
            }
        )

    def _on_error(self, error: KafkaError) -> None:
        self.errors.append(str(error))

    def where(self) -> str:
        return f"Kafka at {self.settings.kafka.bootstrap_servers}"

    def unreachable(self, exc: Exception) -> PrivacyError:
        detail = self.errors[-1] if self.errors else str(exc)
        return PrivacyError(f"{self.where()} unreachable: {detail}")

    def ends(self, topic: str) -> dict[int, int]:
        """The end offset of each partition of `topic` now; {} when the topic does not exist."""
        try:
            meta = self.consumer.list_topics(topic, timeout=KAFKA_PATIENCE_S).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                return {}
            return {p: watermark_offsets(self.consumer, topic, p, KAFKA_PATIENCE_S)[1] for p in sorted(meta.partitions)}
        except KafkaException as exc:
            raise self.unreachable(exc) from None

    def read(
        self,
        topic: str,
        key: bytes,
        start: dict[int, int] | None,
        deadline: float,
        until: Callable[[list[Message]], bool] | None = None,
    ) -> list[Message]:
        """The messages under `key` in `topic`, from `start` (or the beginning) to the end offsets of now,
        or, with `until`, as long as it takes `until(the messages so far)` to hold; PrivacyError at `deadline`."""
        ends = self.ends(topic)
        first = start if start is not None else dict.fromkeys(ends, 0)
        partitions = sorted(ends) if until is not None else [p for p, end in ends.items() if end > first.get(p, 0)]
        found: list[Message] = []
        if not partitions:
            return found
        consumer = self.consumer
        consumer.assign([TopicPartition(topic, p, first.get(p, 0)) for p in partitions])
        pending = set(partitions)
        try:
            while True:
                for message in consumer.consume(1000, 0.2):
                    if message.error() is not None:
                        continue  # transient: the client retries by itself
                    partition, offset = message.partition() or 0, message.offset() or 0
                    if until is None and offset >= ends[partition]:
                        continue  # written after the read began: not waited for
                    if message.key() == key:
                        found.append(message)
                if until is not None:
                    if until(found):
                        return found
                else:
                    positions = consumer.position([TopicPartition(topic, p) for p in pending])
                    pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
                    if not pending:
                        return found
                if time.monotonic() > deadline:
                    raise DeadlineError(f"timed out reading {topic} from {self.where()}")
        finally:
            consumer.unassign()

    def close(self) -> None:
        self.consumer.close()


def _redis(settings: Settings) -> ProfileStore:
    return ProfileStore(settings.redis)


def _redis_call(store: ProfileStore, operation: Callable[[], Any]) -> Any:
    """One attempt (a CLI answers now, it does not wait out an outage like the service does)."""
    try:
        return operation()
    except REDIS_TRANSIENT as exc:
        raise PrivacyError(f"Redis at {store.where} unreachable: {type(exc).__name__}: {exc}") from None
    except redis.RedisError as exc:
        raise PrivacyError(f"Redis at {store.where}: {type(exc).__name__}: {exc}") from None


def _open_alerts(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Alerts whose latest record is `firing` (a `reactivated` alert is a notice, never resolved)."""
    latest: dict[str, dict[str, Any]] = {}
    for message in messages:
        doc = loads(message.value() or b"null")
        if isinstance(doc, dict) and "alert_id" in doc:
            latest[doc["alert_id"]] = doc
    return [doc for _, doc in sorted(latest.items()) if doc["status"] == "firing" and doc["kind"] != "reactivated"]


def export_user(settings: Settings, user_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """What the deployment holds about `user_id`: the Redis profile, the profile table's latest value and
    the open alerts on the alerts topic. `found` is false when none of them holds anything."""
    deadline = time.monotonic() + timeout
    store = _redis(settings)
    key = redis_key(settings.redis, Entity.USER, user_id)
    kafka = _Kafka(settings)
    try:
        fields = _redis_call(store, lambda: store.client.hgetall(key))
        profile = decode_profile(fields) if fields else None
        table_topic, alerts_topic = settings.topics.profiles, settings.topics.alerts
        table = kafka.read(table_topic, user_id.encode(), None, deadline)
        # The latest value wins (one partition per key; by timestamp should the topic have been repartitioned).
        newest = max(table, key=lambda m: (m.timestamp()[1], m.offset() or 0), default=None)
        value = None if newest is None else newest.value()
        alerts = _open_alerts(kafka.read(alerts_topic, user_id.encode(), None, deadline))
    finally:
        kafka.close()
        store.close()
    table_profile = None if value is None else loads(value)
    return {
        "user_id": user_id,
        "found": profile is not None or table_profile is not None or bool(alerts),
        "redis": {"key": key, "profile": profile},
        "profile_table": {
            "topic": table_topic,
            "profile": table_profile,
            # The table's latest record for the key is a tombstone: the person was erased.
            "erased": newest is not None and value is None,
        },
        "open_alerts": {"topic": alerts_topic, "alerts": alerts},
    }


def _is_erased(doc: dict[str, Any], stamp: str) -> bool:
    return doc.get("kind") == "user_erased" and doc.get("ts") == stamp


def erasure_event(user_id: str, now_ms: int, vocab: Vocabulary | None = None) -> tuple[str, bytes]:
    """A fresh `erasure_requested` event for `user_id` stamped `now_ms`: its id and its bytes, in the input
    format of `vocab` (with `[input] format = "segment"`, a track call of the event name mapped to erasure)."""
    event_id = f"erasure-{uuid.uuid4().hex}"
    if vocab is not None and vocab.segment:
        names = [name for name, (kind, _) in vocab.segment_map.items() if kind == vocab.erasure]
        if not names:
            raise PrivacyError(f"[input] segment_events maps no event name to {vocab.erasure}")
        call = {"type": "track", "event": names[0], "messageId": event_id, "userId": user_id}
        return event_id, dumps({**call, "timestamp": format_ts(now_ms)})
    doc = {"event_id": event_id, "user_id": user_id, "type": ERASURE_TYPE, "ts": format_ts(now_ms)}
    return event_id, dumps(doc)


def _produce(settings: Settings, user_id: str, value: bytes, deadline: float) -> None:
    """Keyed by the user id, as producers key events, so it follows the person's events in their partition."""
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer({**settings.kafka.producer_config(), "logger": RDKAFKA_LOG})
    topic = settings.kafka.input_topic
    producer.produce(topic, value, user_id.encode(), on_delivery=delivered)
    left = producer.flush(max(deadline - time.monotonic(), 1.0))
    if failures or left:
        reason = failures[0] if failures else "not acknowledged in time"
        raise PrivacyError(f"the erasure event was not written to {topic}: {reason}")


def erase_user(
    settings: Settings, user_id: str, timeout: float = 60.0, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Sends an erasure for `user_id` through the input topic and waits until `pulse run` has applied it:
    the Redis profile key gone and the `user_erased` record on the lifecycle topic. Returns what was
    removed; PrivacyError when a store is unreachable or the deadline passes first."""
    deadline = time.monotonic() + timeout
    store = _redis(settings)
    key = redis_key(settings.redis, Entity.USER, user_id)
    kafka = _Kafka(settings)
    topics = settings.topics
    try:
        existed = bool(_redis_call(store, lambda: store.client.exists(key)))
        if not kafka.ends(settings.kafka.input_topic):
            raise PrivacyError(f"input topic {settings.kafka.input_topic} not found on {kafka.where()}")
        # Only what is written from now on can answer this erasure: start at today's ends.
        lifecycle_start, alerts_start = kafka.ends(topics.lifecycle), kafka.ends(topics.alerts)
        if not lifecycle_start:
            raise PrivacyError(
                f"lifecycle topic {topics.lifecycle} not found on {kafka.where()}: is `pulse run` deployed?"
            )
        now_ms = int(clock() * 1000)
        event_id, value = erasure_event(user_id, now_ms, settings.vocab())
        _produce(settings, user_id, value, deadline)
        stamp = format_ts(now_ms)
        erased: list[dict[str, Any]] = []

        def applied(messages: list[Message]) -> bool:
            """This erasure's `user_erased` is out (matched by its time) and the profile key is gone."""
            if not erased:
                docs = (loads(m.value() or b"null") for m in messages)
                erased.extend(d for d in docs if isinstance(d, dict) and _is_erased(d, stamp))
            return bool(erased) and not _redis_call(store, lambda: store.client.exists(key))

        try:
            kafka.read(topics.lifecycle, user_id.encode(), lifecycle_start, deadline, applied)
        except DeadlineError:
            raise DeadlineError(
                f"timed out after {timeout:g}s waiting for the erasure of {user_id!r} (event {event_id}) to be "
                f"applied: is `pulse run` consuming {settings.kafka.input_topic}?"
            ) from None
        # The alerts it closed were written in the same batch as `user_erased`: read up to today's end.
        alerts = kafka.read(topics.alerts, user_id.encode(), alerts_start, deadline)
        docs = [loads(m.value() or b"null") for m in alerts]
        closed = [d for d in docs if isinstance(d, dict) and d.get("resolution") == "erased" and d.get("ts") == stamp]
    finally:
        kafka.close()
        store.close()
    return {
        "user_id": user_id,
        "erasure_event_id": event_id,
        "ts": stamp,
        # The profile hash was there before the erasure; either way it is gone now.
        "redis": {"key": key, "existed": existed, "gone": True},
        "alerts_closed": closed,
        "user_erased": erased[0],
    }


def run_command(command: str, user_id: str, settings: Settings, timeout: float) -> int:
    """`pulse export` / `pulse erase`: the JSON on stdout, a one-line summary or reason on stderr."""
    if not 0 < len(user_id) <= MAX_ID_LENGTH or timeout <= 0:
        # The same bounds the decoder puts on a user id: an erasure outside them would be a dead letter.
        reason = f"USER_ID must be 1-{MAX_ID_LENGTH} characters and --timeout positive"
        logs.error(log, reason)
        return 2
    try:
        if command == "export":
            result = export_user(settings, user_id, timeout)
            summary = f"pulse: {user_id!r}: " + ("data held, see the JSON" if result["found"] else "nothing held")
        else:
            result = erase_user(settings, user_id, timeout)
            summary = (
                f"pulse: erased {user_id!r}: Redis key {result['redis']['key']} "
                f"{'deleted' if result['redis']['existed'] else 'was absent'}, "
                f"{len(result['alerts_closed'])} open alert(s) closed, user_erased at {result['ts']}"
            )
    except PrivacyError as exc:
        logs.error(log, str(exc), command=command)
        return 1
    print(dumps(result).decode())
    logs.info(log, summary, command=command)
    return 0
