"""Fixtures for tests against the real Kafka broker and Redis server that `make test` starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

BOOTSTRAP = os.environ.get("PULSE_TEST_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("PULSE_TEST_REDIS", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka() -> str:
    host, port = BOOTSTRAP.rsplit(":", 1)
    if not _reachable(host, int(port)):
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run `make services` (scripts/kafka-local start)")
    return BOOTSTRAP


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis at {REDIS_URL}: run `make services` (scripts/redis-local start)")
    yield client
    client.close()


def redis_blob(client: redis.Redis, key: bytes) -> bytes:
    """Everything one key holds, whatever its type (profile hashes and the serving indexes), as bytes."""
    any_client: Any = client
    kind = any_client.type(key)
    if kind == b"hash":
        return b"".join(k + v for k, v in any_client.hgetall(key).items())
    if kind == b"zset":
        return b"".join(any_client.zrange(key, 0, -1))
    if kind == b"set":
        return b"".join(sorted(any_client.smembers(key)))
    if kind == b"none":
        return b""
    raise AssertionError(f"unexpected Redis type {kind!r} at {key!r}")


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM a process we started (by its pid), SIGKILL it if it does not end within 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Names:
    """Unique topics and key prefix per test, so tests never see each other's data."""

    run: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "PULSE_KAFKA_INPUT_TOPIC": f"{self.run}-events",
            "PULSE_TOPICS_SCORES": f"{self.run}-scores",
            "PULSE_TOPICS_ALERTS": f"{self.run}-alerts",
            "PULSE_TOPICS_LIFECYCLE": f"{self.run}-lifecycle",
            "PULSE_TOPICS_ACCOUNTS": f"{self.run}-accounts",
            "PULSE_TOPICS_DLQ": f"{self.run}-dlq",
            "PULSE_TOPICS_PROFILES": f"{self.run}-profiles",
            "PULSE_TOPICS_ACCOUNT_PROFILES": f"{self.run}-account-profiles",
            "PULSE_TOPICS_ACCESS": f"{self.run}-access",
            "PULSE_TOPICS_FUNNEL": f"{self.run}-funnel",
            "PULSE_TOPICS_INSIGHTS": f"{self.run}-insights",
            "PULSE_REDIS_KEY_PREFIX": self.run,
            "PULSE_REDIS_URL": REDIS_URL,
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
        }

    def topic(self, kind: str) -> str:
        return f"{self.run}-{kind}"


@pytest.fixture
def names(kafka: str, redis_client: redis.Redis) -> Iterator[Names]:
    run = f"t{uuid.uuid4().hex[:10]}"
    yield Names(run)
    admin = AdminClient({"bootstrap.servers": kafka})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(run)]
    if topics:
        for future in admin.delete_topics(topics).values():
            future.result(timeout=30)
    keys = list(redis_client.scan_iter(f"{run}:*"))
    if keys:
        redis_client.delete(*keys)


def produce(kafka: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]], partitions: int = 4) -> None:
    admin = AdminClient({"bootstrap.servers": kafka})
    if topic not in admin.list_topics(timeout=10).topics:
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

        admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": kafka, "enable.idempotence": True, "acks": "all"})
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
    assert producer.flush(60) == 0


def consume_all(
    kafka: str, topic: str, expected: int, timeout: float = 60, config: dict[str, Any] | None = None
) -> list[Message]:
    """Read a topic from the beginning until `expected` messages arrived (or fail at the deadline);
    `config` adds client settings (TLS, SASL) for a secured broker."""
    consumer = Consumer({"bootstrap.servers": kafka, **(config or {}), "group.id": f"check-{uuid.uuid4().hex}"})
    messages: list[Message] = []
    try:

        def assigned() -> bool:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                return False
            consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
            return True

        wait_for(assigned, timeout, f"topic {topic} to exist")

        def collected() -> bool:
            for message in consumer.consume(500, 0.2):
                if message.error() is None:
                    messages.append(message)
            return len(messages) >= expected

        wait_for(collected, timeout, f"{expected} messages on {topic} (got {len(messages)})", interval=0)
    finally:
        consumer.close()
    return messages


class PulseProcess:
    """`pulse run` as a real subprocess; stopped by its own pid."""

    def __init__(self, env: dict[str, str], tmp: Path, args: list[str] | None = None) -> None:
        self.log = tmp / f"pulse-{uuid.uuid4().hex[:6]}.log"
        self.metrics_port = int(env.get("PULSE_METRICS_PORT", "0")) or free_port()
        full_env = {**os.environ, **env, "PULSE_METRICS_PORT": str(self.metrics_port)}
        if "PULSE_ENGINE_RECOVERY_DIR" not in full_env:
            # The default (.pulse/recovery under the cwd, the repo root here) would be shared by every test.
            # A run of its own gets a fresh directory; the processes of a cluster must share one and would
            # race to initialise it, so a cluster without an explicit directory runs without recovery.
            cluster = "--addresses" in (args or []) or "-a" in (args or [])
            full_env["PULSE_ENGINE_RECOVERY_DIR"] = "" if cluster else str(tmp / f"recovery-{self.log.stem}")
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", *(args or [])],
            env=full_env,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def metrics(self) -> dict[str, float]:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"pulse run exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        returncode = stop_process(self.proc)
        self._log_file.close()
        return returncode


@pytest.fixture
def pulse_run(tmp_path: Path) -> Iterator[Callable[..., PulseProcess]]:
    started: list[PulseProcess] = []

    def start(env: dict[str, str], args: list[str] | None = None) -> PulseProcess:
        process = PulseProcess(env, tmp_path, args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def read_topic(kafka: str, topic: str) -> list[Message]:
    """Everything in a topic right now: reads every partition up to its current end offset."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"check-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        ends: dict[int, int] = {}

        def offsets_known() -> bool:
            # A topic created a moment ago may not have partition leaders yet: retry until it does.
            try:
                for p in meta.partitions:
                    ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            except KafkaException:
                return False
            return True

        wait_for(offsets_known, 30, f"end offsets of {topic}")
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        messages: list[Message] = []
        positions = dict.fromkeys(ends, 0)

        def done() -> bool:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    messages.append(message)
                    positions[message.partition() or 0] = (message.offset() or 0) + 1
            return all(positions[p] >= end for p, end in ends.items())

        wait_for(done, 60, f"reading {topic} to its end", interval=0)
        return messages
    finally:
        consumer.close()
