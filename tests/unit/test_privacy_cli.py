"""Unit tests for engine.privacy: decoding a profile hash, the erasure event, and the CLI's failures."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from engine.cli import main
from engine.config import TopicSettings, load_settings
from engine.privacy import decode_profile, erasure_event
from engine.service import KAFKA_OUTPUTS
from engine.sinks import output_kinds, redis_fields
from operators.health import render_user
from operators.scoring import ScoreModel
from operators.shard import Shard
from schemas.codec import decode, dumps, format_ts, loads
from schemas.events import Category, Event, Origin, Vocabulary
from schemas.outputs import OutputKind
from tests.factories import T0, make_event


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, never listened, released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("account", ["acme", None, "42"], ids=["text", "none", "digits"])
def test_a_profile_hash_decodes_to_the_profile_it_was_written_from(account: str | None) -> None:
    shard = Shard()
    shard.process(
        [
            make_event("e1", "u1", account, "feature_used", T0, feature="reports"),
            make_event("e2", "u1", account, "nps_response", T0 + 1000, properties={"score": 7}),
        ],
        load_settings(None, env={}).shard_config(live=True),
    )
    profile = render_user("u1", shard.users["u1"], ScoreModel())
    written = {k.encode(): v.encode() for k, v in redis_fields(profile).items()}
    assert decode_profile(written) == loads(dumps(profile))


def test_the_erasure_event_is_a_valid_fresh_erasure_of_the_user() -> None:
    first_id, first = erasure_event("u-1", T0)
    second_id, _ = erasure_event("u-1", T0)
    assert first_id != second_id
    event = decode(first, Origin("pulse-events", 0, 0), Vocabulary())
    assert isinstance(event, Event)
    assert (event.user_id, event.event_id, event.ts, event.category) == ("u-1", first_id, T0, Category.PRIVACY)
    assert event.type == "erasure_requested"
    assert loads(first)["ts"] == format_ts(T0)


@pytest.mark.parametrize("command", ["export", "erase"])
def test_an_unreachable_redis_is_a_one_line_error(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    monkeypatch.setenv("PULSE_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{_closed_port()}")
    assert main([command, "u-1", "--timeout", "5"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("pulse: error: Redis at 127.0.0.1:")
    assert "unreachable" in line


@pytest.mark.parametrize("args", [["export", "", "--timeout", "5"], ["erase", "u-1", "--timeout", "0"]])
def test_bad_arguments_are_a_one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("pulse: error:")


def test_the_access_topic_is_a_setting_with_its_default() -> None:
    settings = load_settings(None, env={"PULSE_TOPICS_ACCESS": "exports"})
    assert load_settings(None, env={}).topics.access == "pulse-access"
    assert settings.topics.access == "exports"
    assert dataclasses.asdict(settings.topics)["access"] == "exports"


def test_the_live_sink_counts_and_pulse_run_creates_the_access_topic() -> None:
    topics = TopicSettings(access="x-access")
    assert output_kinds(topics)["x-access"] == "access"
    assert topics.for_kind(OutputKind.ACCESS) == "x-access"
    assert OutputKind.ACCESS in KAFKA_OUTPUTS
