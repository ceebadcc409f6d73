"""Inputs: JSON-lines files for replay and Kafka partitions for the service, each yielding RawBatch."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from engine import logs, metrics
from engine.config import KafkaSettings, Settings
from engine.sinks import RDKAFKA_LOG
from schemas.codec import RawBatch, decode
from schemas.events import Event, Origin

log = logging.getLogger("pulse.source")
WATERMARK_PATIENCE_S = 10.0  # how long a resume waits for the broker to report a partition's offsets


def open_lines(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # GzipFile is a binary IO
    return path.open("rb")


def watermark_offsets(consumer: Consumer, topic: str, partition: int, patience: float) -> tuple[int, int]:
    """(low, high) offsets of one partition from the broker, retried for `patience` seconds (a topic created
    a moment ago may not have its partition leaders yet); KafkaException when they stay unknown."""
    deadline = time.monotonic() + patience
    while True:
        error: KafkaException | None = None
        try:
            marks = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            if marks is not None:
                return int(marks[0]), int(marks[1])
        except KafkaException as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise error or KafkaException(f"offsets of {topic}#{partition} unknown after {patience:g}s")
        time.sleep(0.2)


def read_events(path: Path, settings: Settings) -> list[Event]:
    """Every valid event of a JSON-lines file, in event-time order (rejected lines are skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    vocab = settings.vocab()
    events = []
    with open_lines(path) as lines:
        for number, line in enumerate(lines, 1):
            item = decode(line.rstrip(b"\r\n"), Origin(str(path), -1, number), vocab)
            if isinstance(item, Event):
                events.append(item)
    events.sort(key=lambda e: e.ts)
    if not events:
        raise ValueError(f"no valid events in {path}")
    return events


class Progress:
    """Logs a status line at most every `every` seconds on long runs (a replay, a restore); silent on
    short ones."""

    def __init__(self, label: str, every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._label = label
        self._every = every
        self._clock = clock
        self._start = clock()
        self._next = self._start + every

    def update(self, count: int, what: str = "lines read") -> None:
        now = self._clock()
        if now >= self._next:
            self._next = now + self._every
            rate = count / max(now - self._start, 1e-9)
            text = f"{self._label}: {count:,} {what} ({rate:,.0f}/s)"
            logs.info(log, text, label=self._label, count=count, what=what, rate=round(rate))


class _FilePartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, path: Path, batch_size: int, resume_line: int, progress: bool) -> None:
        self._path = path
        self._file = open_lines(path)
        self._batch_size = batch_size
        self._line = 0
        self._progress = Progress(path.name) if progress else None
        for _ in range(resume_line):
            self._file.readline()
            self._line += 1

    def next_batch(self) -> list[RawBatch]:
        values: list[bytes] = []
        offsets: list[int] = []
        readline = self._file.readline
        while len(values) < self._batch_size:
            line = readline()
            if not line:
                break
            self._line += 1
            # Only the line terminator is removed: everything else reaches the dead letters verbatim.
            value = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
            if value.strip():
                values.append(value)
                offsets.append(self._line)
        if not values:
            raise StopIteration
        if self._progress is not None:
            self._progress.update(self._line)
        return [RawBatch(str(self._path), -1, values, offsets)]

    def snapshot(self) -> int:
        return self._line

    def close(self) -> None:
        self._file.close()


class FileSource(FixedPartitionedSource[RawBatch, int]):
    """One partition per file, read in line batches; resume state is the line count already read."""

    def __init__(self, paths: list[Path], batch_size: int = 2000, progress: bool = True) -> None:
        self._paths = {str(p): p for p in paths}
        self._batch_size = batch_size
        self._progress = progress

    def list_parts(self) -> list[str]:
        return sorted(self._paths)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FilePartition:
        return _FilePartition(self._paths[for_part], self._batch_size, resume_state or 0, self._progress)


def resolve_offset(resume: int, low: int, high: int, policy: str) -> tuple[int, int]:
    """Where to read from when resuming at `resume` in a log holding offsets low..high-1, and how many
    messages that skips: `resume` itself while it exists (resume == high is the end), else low for
    policy "earliest" or high for "latest"."""
    if low <= resume <= high:
        return resume, 0
    offset = low if policy == "earliest" else high
    return offset, max(0, offset - resume)


# librdkafka reports a refused login (SASL) or a failed TLS handshake (an untrusted or misnamed certificate)
# through error_cb and then retries, as it should once running: the broker side may be fixed meanwhile.
# Before the first connection nothing can work until someone fixes the configuration, so at start-up the
# first such error ends the command with librdkafka's reason instead of a metadata timeout.
_REFUSED = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED})


def kafka_admin(settings: KafkaSettings, patience: float = 30.0) -> AdminClient:
    """An admin client that has reached the cluster: metadata answered within `patience` seconds. Raises
    KafkaException with the broker's or TLS library's reason as soon as the broker refuses Pulse."""
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        metrics.KAFKA_ERRORS.inc()
        if error.fatal() or error.code() in _REFUSED:
            refused.append(error)

    config: dict[str, Any] = {**settings.client_config(), "error_cb": on_error, "logger": RDKAFKA_LOG}
    admin = AdminClient(config)
    deadline = time.monotonic() + patience
    while True:
        try:
            admin.list_topics(timeout=0.5)
            return admin
        except KafkaException:
            admin.poll(0.1)  # serves error_cb
            if refused:
                raise KafkaException(refused[0]) from None
            if time.monotonic() >= deadline:
                raise


def consumer_error(error: KafkaError, topic: str) -> None:
    """A consumer error: fatal ones (and a denied topic) raise; transient ones are counted and logged."""
    if error.fatal() or error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        raise KafkaException(error)
    metrics.KAFKA_ERRORS.inc()
    log.warning("kafka consumer %s: %s (retrying)", topic, error)


class _KafkaPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        partition: int,
        resume_offset: int | None,
        idle_after_s: float = 5.0,
    ) -> None:
        self._topic = topic
        self._partition = partition
        # Event-time bookkeeping for the low watermark (see operators.watermark): the first call registers
        # the partition; after `idle_after_s` with nothing to read and nothing left it reports idle.
        self._registered = False
        self._idle = False
        self._idle_after = idle_after_s
        self._last_data = time.monotonic()
        self._batch_size = settings.batch_size
        self._timeout = settings.poll_timeout_ms / 1000
        self._policy = settings.auto_offset_reset
        # librdkafka's own per-reconnect lines go through the filtered logger the producer uses too.
        self._consumer = Consumer({"logger": RDKAFKA_LOG, **settings.consumer_config()})
        if resume_offset is None:
            self._next_offset = OFFSET_BEGINNING if settings.start_from == "earliest" else OFFSET_END
        else:
            self._next_offset = self._resolve(resume_offset)
        self._consumer.assign([TopicPartition(topic, partition, self._next_offset)])
        self._label = str(partition)
        self._assigned = TopicPartition(topic, partition)  # for the per-batch lag lookup
        self._commit = settings.commit_offsets
        metrics.PARTITIONS.inc()

    def _watermarks(self, patience: float) -> tuple[int, int] | None:
        """The partition's (low, high) offsets from the broker; None if they stay unknown."""
        try:
            return watermark_offsets(self._consumer, self._topic, self._partition, patience)
        except KafkaException as error:
            log.warning("kafka partition %s#%d: offsets unknown: %s", self._topic, self._partition, error)
            return None

    def _resolve(self, resume: int) -> int:
        marks = self._watermarks(WATERMARK_PATIENCE_S)
        if marks is None:
            return resume  # librdkafka applies auto.offset.reset and next_batch reports the jump
        offset, skipped = resolve_offset(resume, *marks, self._policy)
        if offset != resume:
            self._reset(resume, offset, skipped, *marks)
        return offset

    def _reset(self, lost: int, offset: int, skipped: int, low: int, high: int) -> None:
        where = f"log starts at {low}" if lost < low else f"log ends at {high}"
        log.warning(
            "kafka partition %s#%d: offset %d no longer exists (%s); resuming at %d (auto_offset_reset=%s), "
            "%d message(s) skipped",
            self._topic,
            self._partition,
            lost,
            where,
            offset,
            self._policy,
            skipped,
        )
        metrics.OFFSET_RESETS.labels(str(self._partition)).inc()

    def next_batch(self) -> list[RawBatch]:
        messages = self._consumer.consume(self._batch_size, self._timeout)
        values: list[bytes] = []
        offsets: list[int] = []
        keys: list[bytes | None] = []
        for message in messages:
            error = message.error()
            if error is not None:
                consumer_error(error, self._topic)
                continue
            values.append(message.value() or b"")
            offsets.append(message.offset() or 0)
            keys.append(message.key())
        if not values:
            self._report_lag()
            return self._no_data()
        self._registered, self._idle, self._last_data = True, False, time.monotonic()
        expected = self._next_offset
        if 0 <= expected < offsets[0]:
            # A gap is normal after compaction or transaction markers; a reset only if retention removed it.
            marks = self._watermarks(0)
            if marks is not None and marks[0] > expected:
                self._reset(expected, offsets[0], offsets[0] - expected, *marks)
        self._next_offset = offsets[-1] + 1
        self._report_lag()
        kind, ingest_ms = messages[0].timestamp()
        return [RawBatch(self._topic, self._partition, values, offsets, keys, ingest_ms=ingest_ms if kind else 0)]

    def _report_lag(self) -> None:
        """Consumer lag from the high watermark librdkafka caches from its fetch responses (no request)."""
        low, high = self._consumer.get_watermark_offsets(self._assigned, cached=True)
        if high < 0:
            return  # no fetch response yet
        position = self._next_offset
        if position < 0:  # nothing read yet: from the start of the log, or from its end
            position = low if position == OFFSET_BEGINNING else high
        metrics.PARTITION_PROGRESS.consumer_lag(self._label, max(0, high - position))

    def _no_data(self) -> list[RawBatch]:
        """An empty batch registers the partition (first call) or reports it idle (once, when caught up)."""
        if not self._registered:
            self._registered = True
            return [RawBatch(self._topic, self._partition, [], [])]
        if self._idle or time.monotonic() - self._last_data < self._idle_after:
            return []
        marks = self._watermarks(0)
        if marks is None:
            return []
        low, high = marks
        position = (
            self._next_offset if self._next_offset >= 0 else (low if self._next_offset == OFFSET_BEGINNING else high)
        )
        if position < high:
            self._last_data = time.monotonic()  # data left to read: not idle, ask again later
            return []
        self._idle = True
        return [RawBatch(self._topic, self._partition, [], [], idle=True)]

    def snapshot(self) -> int:
        if self._commit and self._next_offset >= 0:
            # For Kafka's own lag tools only: Pulse resumes from its snapshots, never from the group.
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, self._partition, self._next_offset)], asynchronous=True
            )
        return self._next_offset

    def close(self) -> None:
        metrics.PARTITIONS.dec()
        metrics.PARTITION_PROGRESS.forget(self._label)
        self._consumer.close()


class KafkaSource(FixedPartitionedSource[RawBatch, int]):
    """One bytewax partition per topic partition; offsets live in bytewax's recovery snapshots."""

    def __init__(self, settings: KafkaSettings, idle_after_s: float = 5.0) -> None:
        self._settings = settings
        self._idle_after_s = idle_after_s

    def list_parts(self) -> list[str]:
        topic = self._settings.input_topic
        consumer = Consumer(self._settings.consumer_config())
        try:
            metadata = consumer.list_topics(topic, timeout=30)
        finally:
            consumer.close()
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise RuntimeError(f"input topic {topic!r} is not available: {info.error if info else 'missing'}")
        return [f"{topic}#{p}" for p in sorted(info.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        topic, _, partition = for_part.rpartition("#")
        return _KafkaPartition(self._settings, topic, int(partition), resume_state, self._idle_after_s)
