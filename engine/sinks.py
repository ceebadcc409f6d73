"""Outputs: Kafka topics with checked delivery, Redis profile hashes, and an in-memory collector for replay."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from engine import metrics
from engine.config import RedisSettings, Settings, TopicSettings
from schemas.codec import dumps
from schemas.events import Rejection
from schemas.outputs import Entity, OutputKind, ProfileWrite, Record

# What flows into the sink: each item is (shard key, list of outputs) from one batch of one step.
Item = tuple[str, list[Any]]


class DeliveryError(RuntimeError):
    """A produce that Kafka did not acknowledge; raised so the batch fails instead of vanishing."""


def dlq_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    origin = rejection.raw.origin
    return [
        ("pulse.error", rejection.code.value.encode()),
        ("pulse.detail", rejection.detail.encode()),
        ("pulse.source", origin.source.encode()),
        ("pulse.partition", str(origin.partition).encode()),
        ("pulse.offset", str(origin.offset).encode()),
    ]


class CheckedProducer:
    """Idempotent, acks=all producer that reads every delivery report and fails loudly on any error."""

    def __init__(self, config: dict[str, Any], flush_timeout: float = 30.0) -> None:
        self._producer = Producer(config)
        self._flush_timeout = flush_timeout
        self._errors: list[str] = []
        self.delivered = 0

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")
        else:
            self.delivered += 1

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any] | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                # Local queue full: serve delivery reports until there is room again.
                self._producer.poll(0.1)

    def flush(self) -> None:
        """Blocks until every message is acknowledged; raises if any was not."""
        remaining = self._producer.flush(self._flush_timeout)
        if remaining:
            raise DeliveryError(f"{remaining} message(s) not acknowledged within {self._flush_timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(f"{len(errors)} message(s) failed delivery; first: {errors[0]}")


def redis_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Hash values are strings: text as it is, everything else as JSON, so readers can decode exactly."""
    return {k: v if isinstance(v, str) else dumps(v).decode() for k, v in fields.items()}


def redis_key(settings: RedisSettings, entity: Entity, key: str) -> str:
    return f"{settings.key_prefix}:{entity.value}:{key}"


class _LivePartition(StatelessSinkPartition[Item]):
    def __init__(self, settings: Settings) -> None:
        self._topics: TopicSettings = settings.topics
        self._redis_settings = settings.redis
        self._producer = CheckedProducer(settings.kafka.producer_config())
        self._redis = redis.Redis.from_url(settings.redis.url)

    def write_batch(self, items: list[Item]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        writes = 0
        for _, outputs in items:
            for out in outputs:
                if isinstance(out, Record):
                    self._producer.produce(self._topics.for_kind(out.kind), out.key.encode(), out.value)
                    metrics.OUTPUTS.labels(out.kind.value).inc()
                elif isinstance(out, Rejection):
                    raw = out.raw
                    self._producer.produce(self._topics.dlq, raw.key, raw.value, dlq_headers(out))
                    metrics.OUTPUTS.labels(OutputKind.DLQ.value).inc()
                elif isinstance(out, ProfileWrite):
                    key = redis_key(self._redis_settings, out.entity, out.key)
                    # Absolute writes: replace the whole hash so removed fields do not linger.
                    pipe.delete(key)
                    if out.fields is not None:
                        pipe.hset(key, mapping=redis_fields(out.fields))  # type: ignore[arg-type]
                    writes += 1
                    # The same profile on the compacted table topic; None is a tombstone (erasure).
                    table = self._topics.for_profiles(out.entity)
                    value = None if out.fields is None else dumps(out.fields)
                    self._producer.produce(table, out.key.encode(), value)
                    metrics.OUTPUTS.labels("profiles" if out.entity is Entity.USER else "account_profiles").inc()
        if writes:
            pipe.execute()
            metrics.PROFILE_WRITES.inc(writes)
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()
        self._redis.close()


class LiveSink(DynamicSink[Item]):
    """Kafka topics per output kind plus Redis profiles; each worker owns one producer and connection."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LivePartition:
        return _LivePartition(self._settings)


class Collector(DynamicSink[Item]):
    """Keeps everything a replay emits in memory, from every worker, for the replay writer to order."""

    def __init__(self) -> None:
        self.outputs: list[Any] = []
        self._lock = threading.Lock()

    def extend(self, outputs: Iterable[Any]) -> None:
        with self._lock:
            self.outputs.extend(outputs)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CollectorPartition:
        return _CollectorPartition(self)


class _CollectorPartition(StatelessSinkPartition[Item]):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def write_batch(self, items: list[Item]) -> None:
        self._collector.extend(out for _, outputs in items for out in outputs)
