"""Unit tests for engine.sources.resolve_offset (where a resume from a snapshot offset really starts) and
the [kafka] auto_offset_reset setting behind it."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, load_settings
from engine.sources import resolve_offset


@pytest.mark.parametrize(
    ("resume", "low", "high", "policy", "expected"),
    [
        # The offset still exists (high itself is the end of the log: nothing to read yet, nothing lost).
        (10, 0, 100, "earliest", (10, 0)),
        (10, 0, 100, "latest", (10, 0)),
        (50, 50, 100, "earliest", (50, 0)),
        (100, 50, 100, "latest", (100, 0)),
        (0, 0, 0, "earliest", (0, 0)),
        # Removed by retention / delete_records: below the log start.
        (0, 50, 100, "earliest", (50, 50)),
        (10, 50, 100, "earliest", (50, 40)),
        (10, 50, 100, "latest", (100, 90)),
        (49, 50, 50, "earliest", (50, 1)),
        (49, 50, 50, "latest", (50, 1)),
        # Beyond the end (the topic was recreated): nothing is skipped, earliest re-reads the log.
        (120, 0, 100, "earliest", (0, 0)),
        (120, 0, 100, "latest", (100, 0)),
        (120, 30, 100, "earliest", (30, 0)),
    ],
)
def test_resolve_offset(resume: int, low: int, high: int, policy: str, expected: tuple[int, int]) -> None:
    assert resolve_offset(resume, low, high, policy) == expected


def test_auto_offset_reset_setting() -> None:
    assert load_settings(env={}).kafka.consumer_config()["auto.offset.reset"] == "earliest"
    settings = load_settings(env={"PULSE_KAFKA_AUTO_OFFSET_RESET": "latest"})
    assert settings.kafka.consumer_config()["auto.offset.reset"] == "latest"
    with pytest.raises(ConfigError, match=r"\[kafka\] auto_offset_reset must be earliest or latest, got 'none'"):
        load_settings(env={"PULSE_KAFKA_AUTO_OFFSET_RESET": "none"})
