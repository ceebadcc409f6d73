"""Resuming a Kafka partition at a snapshot offset that retention removed, on the real broker."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY

from engine import sources
from engine.config import KafkaSettings
from engine.sources import _KafkaPartition
from tests.integration.conftest import Names, produce, wait_for

pytestmark = pytest.mark.integration


def _resets() -> float:
    return REGISTRY.get_sample_value("pulse_offset_resets_total", {"partition": "0"}) or 0.0


def _topic_with_records_50_to_99(kafka: str, names: Names, kind: str) -> str:
    """A 1-partition topic that held offsets 0..99, of which 0..49 were deleted (as retention would)."""
    topic = names.topic(kind)
    produce(kafka, topic, [(None, f"m{i}".encode()) for i in range(100)], partitions=1)
    admin = AdminClient({"bootstrap.servers": kafka})
    for future in admin.delete_records([TopicPartition(topic, 0, 50)]).values():
        assert future.result(timeout=30).low_watermark == 50
    return topic


def _read(part: _KafkaPartition, until: Callable[[list[int]], bool], what: str) -> list[int]:
    offsets: list[int] = []

    def done() -> bool:
        for batch in part.next_batch():
            offsets.extend(batch.offsets)
        return until(offsets)

    wait_for(done, 30, what, interval=0)  # next_batch itself waits up to poll_timeout_ms
    return offsets


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "pulse.source"]


def _resume_earliest(kafka: str, names: Names, caplog: pytest.LogCaptureFixture) -> None:
    topic = _topic_with_records_50_to_99(kafka, names, "events")
    before = _resets()
    caplog.set_level(logging.WARNING, logger="pulse.source")
    part = _KafkaPartition(KafkaSettings(bootstrap_servers=kafka, input_topic=topic), topic, 0, resume_offset=10)
    try:
        offsets = _read(part, lambda o: len(o) >= 50, "offsets 50..99")
        assert offsets[0] == 50
        assert offsets == list(range(50, 100))
        assert part.snapshot() == 100
    finally:
        part.close()
    assert _resets() == before + 1
    assert _warnings(caplog) == [
        f"kafka partition {topic}#0: offset 10 no longer exists (log starts at 50); "
        "resuming at 50 (auto_offset_reset=earliest), 40 message(s) skipped"
    ]


def test_removed_offset_resumes_at_log_start(kafka: str, names: Names, caplog: pytest.LogCaptureFixture) -> None:
    _resume_earliest(kafka, names, caplog)


def test_jump_seen_while_reading_is_reported(
    kafka: str, names: Names, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the offsets could not be checked on resume: librdkafka's auto.offset.reset moves the
    # consumer, and next_batch must notice the jump past the log start and report it the same way.
    monkeypatch.setattr(sources, "resolve_offset", lambda resume, low, high, policy: (resume, 0))
    _resume_earliest(kafka, names, caplog)


def test_removed_offset_with_latest_resumes_at_log_end(
    kafka: str, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    topic = _topic_with_records_50_to_99(kafka, names, "events")
    before = _resets()
    caplog.set_level(logging.WARNING, logger="pulse.source")
    settings = KafkaSettings(bootstrap_servers=kafka, input_topic=topic, auto_offset_reset="latest")
    part = _KafkaPartition(settings, topic, 0, resume_offset=10)
    try:
        assert part.snapshot() == 100
        produce(kafka, topic, [(None, b"new")], partitions=1)
        offsets = _read(part, lambda o: 100 in o, "the message produced after the resume")
        assert offsets == [100]  # nothing of the old 50..99
    finally:
        part.close()
    assert _resets() == before + 1
    assert _warnings(caplog) == [
        f"kafka partition {topic}#0: offset 10 no longer exists (log starts at 50); "
        "resuming at 100 (auto_offset_reset=latest), 90 message(s) skipped"
    ]
