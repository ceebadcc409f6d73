"""Settings and retry schedule behind "outages lose nothing" (the servers themselves: tests/integration)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis

from engine.cli import _parser
from engine.config import ConfigError, RedisSettings, load_settings
from engine.sinks import ProfileStore, RedisUnavailableError


def test_defaults_and_overrides() -> None:
    settings = load_settings(None, env={})
    assert settings.engine.recovery_dir == ".pulse/recovery"
    assert settings.redis.pipeline_size == 1000
    assert settings.redis.retry_deadline_seconds == 0.0
    assert settings.kafka.producer_config()["message.timeout.ms"] == 300_000
    env = {"PULSE_ENGINE_RECOVERY_DIR": "", "PULSE_KAFKA_MESSAGE_TIMEOUT_MS": "60000", "PULSE_REDIS_PIPELINE_SIZE": "5"}
    changed = load_settings(None, env=env)
    assert changed.engine.recovery_dir == ""  # explicitly empty: recovery off
    assert changed.kafka.producer_config()["message.timeout.ms"] == 60_000
    assert changed.redis.pipeline_size == 5
    with pytest.raises(ConfigError, match="pipeline_size must be at least 1"):
        load_settings(None, env={"PULSE_REDIS_PIPELINE_SIZE": "0"})
    with pytest.raises(ConfigError, match="retry_deadline_seconds must not be negative"):
        load_settings(None, env={"PULSE_REDIS_RETRY_DEADLINE_SECONDS": "-1"})


def test_the_restore_command_parses() -> None:
    args = _parser().parse_args(["restore-profiles", "--config", "pulse.toml"])
    assert args.command == "restore-profiles"
    assert str(args.config) == "pulse.toml"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _failing(times: int) -> tuple[list[int], Callable[[], str]]:
    calls = [0]

    def operation() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise redis.ConnectionError("Connection refused")
        return "ok"

    return calls, operation


def test_backoff_doubles_to_five_seconds_and_warns_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    # Never connects: the client is only built, the operations below stand in for its commands.
    store = ProfileStore(RedisSettings(url="redis://127.0.0.1:1/0"), sleep=clock.sleep, clock=clock)
    calls, operation = _failing(9)
    with caplog.at_level(logging.WARNING, logger="pulse.sink"):
        assert store.call(operation) == "ok"
    assert calls[0] == 10
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "writes wait and are retried until it is back" in messages[0]
    assert "reachable again after 21.3s (9 failed attempts)" in messages[1]


def test_a_deadline_gives_up_with_the_reason() -> None:
    clock = _Clock()
    settings = RedisSettings(url="redis://127.0.0.1:1/0", retry_deadline_seconds=2.0)
    store = ProfileStore(settings, sleep=clock.sleep, clock=clock)
    calls, operation = _failing(100)
    with pytest.raises(RedisUnavailableError, match=r"unavailable for 2s \(6 failed attempts"):
        store.call(operation)
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 0.5])
    assert calls[0] == 6
