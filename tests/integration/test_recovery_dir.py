"""The default recovery directory belongs to one input topic incarnation: no run resumes another's state."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from engine.config import load_settings
from engine.service import recovery_path
from tests.integration.conftest import Names, produce, wait_for

pytestmark = pytest.mark.integration


def test_default_recovery_dir_is_per_topic_incarnation(kafka: str, names: Names) -> None:
    topic = names.topic("events")
    env = {"PULSE_KAFKA_BOOTSTRAP_SERVERS": kafka, "PULSE_KAFKA_INPUT_TOPIC": topic}
    produce(kafka, topic, [(None, b"{}")])
    first = recovery_path(load_settings(None, env=env))
    assert first is not None
    assert first.parent == Path(".pulse/recovery")
    assert first.name.startswith(f"{topic}-")
    assert len(first.name) > len(topic) + 10
    assert recovery_path(load_settings(None, env=env)) == first  # stable across restarts

    admin = AdminClient({"bootstrap.servers": kafka})
    admin.delete_topics([topic])[topic].result(timeout=30)
    wait_for(lambda: topic not in admin.list_topics(timeout=10).topics, 30, "the topic to be deleted")
    produce(kafka, topic, [(None, b"{}")])
    assert recovery_path(load_settings(None, env=env)) not in (first, None), "a new topic, a new directory"

    explicit = load_settings(None, env={**env, "PULSE_ENGINE_RECOVERY_DIR": "/tmp/x"})
    assert recovery_path(explicit) == Path("/tmp/x")
    assert recovery_path(load_settings(None, env={**env, "PULSE_ENGINE_RECOVERY_DIR": ""})) is None
