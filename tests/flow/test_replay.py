"""The real dataflow over a generated stream: determinism, worker count, accounting, dead letters."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from demo.generator import GeneratorConfig, write_jsonl
from engine.config import Settings, load_settings
from engine.replay import replay
from schemas.codec import loads

OUTPUT_FILES = ("scores", "alerts", "lifecycle", "accounts", "dlq", "profiles", "funnel", "insights")
# The insights stage's end state (operators.insights): every cohort's funnel and the latest drivers report.
REPORT_FILES = ("funnel.json", "drivers.json")


def _settings(workers: int = 1, batch: int = 2000) -> Settings:
    base = load_settings(None, env={})
    engine = dataclasses.replace(base.engine, workers=workers, replay_batch_size=batch)
    return dataclasses.replace(base, engine=engine)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "events.jsonl"
    write_jsonl(path, GeneratorConfig(users=120, accounts=15, days=35, seed=11, malformed_rate=0.01))
    return path


def _outputs(out: Path) -> dict[str, bytes]:
    return (
        {name: (out / f"{name}.jsonl").read_bytes() for name in OUTPUT_FILES}
        | {name: (out / name).read_bytes() for name in REPORT_FILES}
        | {"summary": (out / "summary.json").read_bytes()}
    )


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [loads(line) for line in path.read_bytes().splitlines()]


def test_replaying_twice_is_byte_identical(stream: Path, tmp_path: Path) -> None:
    first = replay(stream, tmp_path / "a", _settings())
    replay(stream, tmp_path / "b", _settings())
    assert first.summary["applied"] > 1000
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "b")


@pytest.mark.parametrize(("workers", "batch"), [(2, 2000), (1, 7), (2, 333)])
def test_worker_count_and_batch_size_do_not_change_outputs(
    stream: Path, tmp_path: Path, workers: int, batch: int
) -> None:
    replay(stream, tmp_path / "one", _settings())
    replay(stream, tmp_path / "many", _settings(workers=workers, batch=batch))
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "many")


def test_every_event_is_accounted_for(stream: Path, tmp_path: Path) -> None:
    summary = replay(stream, tmp_path, _settings()).summary
    lines = [line for line in stream.read_bytes().split(b"\n") if line.strip()]
    assert summary["events_in"] == len(lines)
    assert summary["events_in"] == summary["applied"] + summary["duplicates"] + summary["rejected"]
    assert summary["duplicates"] > 0
    assert summary["rejected"] > 0
    assert sum(summary["rejected_by_code"].values()) == summary["rejected"]


def test_dead_letters_are_verbatim_with_code_and_line(stream: Path, tmp_path: Path) -> None:
    replay(stream, tmp_path, _settings())
    lines = stream.read_bytes().split(b"\n")
    letters = _jsonl(tmp_path / "dlq.jsonl")
    assert letters
    for letter in letters:
        original = lines[letter["line"] - 1]
        assert base64.b64decode(letter["raw_base64"]) == original
        if letter["raw"] is not None:
            assert letter["raw"].encode() == original
        assert letter["code"]
    assert any(letter["raw"] is None for letter in letters), "the stream holds invalid UTF-8 lines"


def test_profiles_hold_contract_fields_and_no_pii(stream: Path, tmp_path: Path) -> None:
    summary = replay(stream, tmp_path, _settings()).summary
    profiles = _jsonl(tmp_path / "profiles.jsonl")
    assert len(profiles) == summary["users"]
    assert [p["user_id"] for p in profiles] == sorted(p["user_id"] for p in profiles)
    for field in ("user_id", "account_id", "first_seen", "last_seen", "active_days_7", "active_days_28", "features"):
        assert all(field in p for p in profiles), field
    text = (tmp_path / "profiles.jsonl").read_text()
    assert "@" not in text, "an email address leaked into profiles"


def test_erased_users_are_absent(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    rows = [
        b'{"event_id":"1","user_id":"keep","type":"session_start","ts":"2026-01-05T10:00:00Z"}',
        b'{"event_id":"2","user_id":"gone","type":"session_start","ts":"2026-01-05T10:00:00Z",'
        b'"properties":{"email":"gone@example.com"}}',
        b'{"event_id":"3","user_id":"gone","type":"erasure_requested","ts":"2026-01-06T10:00:00Z"}',
    ]
    events.write_bytes(b"\n".join(rows) + b"\n")
    summary = replay(events, tmp_path / "out", _settings()).summary
    assert [p["user_id"] for p in _jsonl(tmp_path / "out" / "profiles.jsonl")] == ["keep"]
    assert summary["erasures"] == 1
    assert summary["applied"] == 3


def test_until_advances_the_as_of_time(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"event_id":"1","user_id":"u","type":"page_view","ts":"2026-01-05T10:00:00Z"}\n')
    replay(events, tmp_path / "now", _settings())
    replay(events, tmp_path / "later", _settings(), until_ms=1767607200000 + 8 * 86_400_000)
    (now,) = _jsonl(tmp_path / "now" / "profiles.jsonl")
    (later,) = _jsonl(tmp_path / "later" / "profiles.jsonl")
    assert (now["active_days_7"], now["active_days_28"]) == (1, 1)
    assert (later["active_days_7"], later["active_days_28"]) == (0, 1)


def test_the_insights_stage_reports_in_replay(stream: Path, tmp_path: Path) -> None:
    summary = replay(stream, tmp_path, _settings()).summary
    funnel = loads((tmp_path / "funnel.json").read_bytes())
    assert funnel["cohorts"]
    assert summary["outputs"]["funnel"] == len(funnel["cohorts"])  # one record per cohort: replay flushes once
    assert all(stage["entered"] >= stage["converted"] for stage in funnel["totals"]["stages"].values())
    drivers = loads((tmp_path / "drivers.json").read_bytes())
    assert drivers["kind"] == "drivers"
    assert summary["outputs"]["insights"] >= 1
    assert drivers["features"], "users of the first days are past their retention window: the report has rows"
    steps = [alert["next_step"] for alert in _jsonl(tmp_path / "alerts.jsonl") if "next_step" in alert]
    assert any(step is not None for step in steps), "alerts after the first report get a next_step"
    for step in steps:
        assert step is None or (step["action"] == "adopt_feature" and step["scope"] in ("account", "global")), step
