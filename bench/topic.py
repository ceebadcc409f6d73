"""The bench input topic: reused when it already holds exactly N messages, otherwise rebuilt and filled."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.progress import Progress
from demo.generator import fast_events, session_events
from engine.config import KafkaSettings

PARTITIONS = 4
SEED = 20260105
# The same seeded generator for every phase: `uniform` (simple events, users uniformly random) or
# `sessions` (Zipf-skewed users, sessions of 3-60 events, ~1% NPS/tickets/subscription events).
WORKLOADS = {"uniform": fast_events, "sessions": session_events}
_USER_FIELD = b'"user_id":"'


class BenchSetupError(RuntimeError):
    """The topic could not be brought to exactly N messages."""


@dataclass(frozen=True, slots=True)
class TopicState:
    partitions: int
    # partition -> (low, high) watermark offsets
    watermarks: dict[int, tuple[int, int]]

    @property
    def messages(self) -> int:
        return sum(high - low for low, high in self.watermarks.values())


def default_topic(events: int, users: int, workload: str = "uniform") -> str:
    kind = "" if workload == "uniform" else f"{workload}-"
    return f"pulse-bench-{kind}{events}-{users}"


def user_key(value: bytes) -> bytes:
    """The user_id of a generated event, found without a JSON parse (the generator's layout is fixed)."""
    start = value.find(_USER_FIELD)
    if start < 0:
        raise BenchSetupError(f"generated event without user_id: {value[:120]!r}")
    start += len(_USER_FIELD)
    return value[start : value.index(b'"', start)]


def topic_state(kafka: KafkaSettings, topic: str, timeout: float = 30.0) -> TopicState | None:
    """Partitions and watermarks of `topic`, or None when it does not exist."""
    consumer = Consumer(kafka.consumer_config())
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return None
        marks: dict[int, tuple[int, int]] = {}
        deadline = time.monotonic() + timeout
        for partition in sorted(info.partitions):
            while True:
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=timeout, cached=False
                    )
                    break
                except KafkaException:
                    # A topic created a moment ago may not have elected its partition leaders yet.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            marks[partition] = (int(low), int(high))
        return TopicState(len(info.partitions), marks)
    finally:
        consumer.close()


def _topic_exists(admin: AdminClient, topic: str) -> bool:
    return topic in admin.list_topics(timeout=30).topics


def _recreate(kafka: KafkaSettings, topic: str, deadline_s: float = 120.0) -> None:
    admin = AdminClient(dict(kafka.client_config()))
    deadline = time.monotonic() + deadline_s
    if _topic_exists(admin, topic):
        for future in admin.delete_topics([topic], operation_timeout=30).values():
            try:
                future.result(timeout=60)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
        while _topic_exists(admin, topic):
            if time.monotonic() > deadline:
                raise BenchSetupError(f"topic {topic!r} still listed {deadline_s:.0f}s after its deletion")
            time.sleep(0.2)
    while True:
        future = admin.create_topics([NewTopic(topic, PARTITIONS, kafka.replication_factor)])[topic]
        try:
            future.result(timeout=60)
            break
        except KafkaException as exc:
            # The broker may still be removing the old log: retry until the name is free.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    while True:
        state = topic_state(kafka, topic)
        if state is not None and state.partitions == PARTITIONS:
            return
        if time.monotonic() > deadline:
            raise BenchSetupError(f"topic {topic!r} has no {PARTITIONS} partitions after creation")
        time.sleep(0.2)


def _produce(kafka: KafkaSettings, topic: str, events: int, users: int, workload: str) -> None:
    config = {**kafka.producer_config(), "linger.ms": 20, "batch.size": 1_000_000}
    producer = Producer(config)
    errors: list[str] = []
    delivered = 0

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        nonlocal delivered
        if error is not None:
            errors.append(str(error))
        else:
            delivered += 1

    progress = Progress("produce", events)
    produce = producer.produce
    for sent, value in enumerate(WORKLOADS[workload](events, users, SEED), 1):
        key = user_key(value)
        while True:
            try:
                produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if not sent % 10_000:
            producer.poll(0)
            progress.update(sent)
    remaining = producer.flush(120)
    progress.done(delivered)
    if remaining or errors or delivered != events:
        first = errors[0] if errors else "none"
        raise BenchSetupError(
            f"produce incomplete: {delivered}/{events} acknowledged, {remaining} pending, "
            f"{len(errors)} failed (first error: {first})"
        )


def ensure_topic(kafka: KafkaSettings, topic: str, events: int, users: int, workload: str = "uniform") -> TopicState:
    """Reuse `topic` if it holds exactly `events` messages in PARTITIONS partitions; else rebuild it."""
    state = topic_state(kafka, topic)
    if state is not None and state.partitions == PARTITIONS and state.messages == events:
        print(f"bench: reusing topic {topic} ({events:,} messages)", file=sys.stderr, flush=True)
        return state
    found = "missing" if state is None else f"{state.messages:,} messages in {state.partitions} partitions"
    print(f"bench: (re)creating topic {topic} ({found})", file=sys.stderr, flush=True)
    _recreate(kafka, topic)
    _produce(kafka, topic, events, users, workload)
    state = topic_state(kafka, topic)
    if state is None or state.messages != events:
        got = "missing" if state is None else f"{state.messages:,}"
        raise BenchSetupError(f"topic {topic!r} holds {got} messages after producing {events:,}")
    return state
