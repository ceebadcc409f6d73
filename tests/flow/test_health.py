"""Scores and account health through the real dataflow: personas rank sensibly, shuffles change nothing."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from statistics import mean
from typing import Any

import pytest

from demo.generator import GeneratorConfig, generate, persona_of
from engine.config import Settings, load_settings
from engine.replay import replay
from schemas.codec import loads, parse_ts

DAY_MS = 86_400_000


def _settings(workers: int = 1) -> Settings:
    base = load_settings(None, env={})
    return dataclasses.replace(base, engine=dataclasses.replace(base.engine, workers=workers))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def clean_lines() -> list[bytes]:
    # No deliberate duplicates or malformed lines: the shuffled copies below add their own.
    config = GeneratorConfig(users=150, accounts=20, days=42, seed=3, malformed_rate=0.0, duplicate_rate=0.0)
    return list(generate(config))


@pytest.fixture(scope="module")
def clean_run(clean_lines: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    (out / "in.jsonl").write_bytes(b"\n".join(clean_lines) + b"\n")
    replay(out / "in.jsonl", out / "out", _settings())
    return out / "out"


def _ts(line: bytes) -> int:
    return parse_ts(loads(line)["ts"])


def _shuffled(lines: list[bytes], seed: int, window_ms: int) -> list[bytes]:
    """Every line moves by less than `window_ms` of event time: sort by a jittered key."""
    rng = random.Random(seed)
    return [line for _, line in sorted((_ts(line) + rng.randrange(window_ms), line) for line in lines)]


def test_personas_rank_the_way_a_cs_manager_would(clean_run: Path) -> None:
    by_persona: dict[str, list[float]] = {}
    for profile in _jsonl(clean_run / "profiles.jsonl"):
        by_persona.setdefault(persona_of(profile["user_id"]), []).append(profile["score"])
    avg = {persona: mean(scores) for persona, scores in by_persona.items()}
    assert min(avg["power"], avg["daily"]) > avg["weekly"] > avg["sporadic"]
    assert avg["churner"] < avg["weekly"]
    assert avg["churner"] == min(avg.values())
    assert all(0 <= s <= 100 for scores in by_persona.values() for s in scores)


def test_scores_carry_reasons_cause_and_model(clean_run: Path) -> None:
    changes = _jsonl(clean_run / "scores.jsonl")
    assert changes
    versions = {c["model"] for c in changes}
    assert len(versions) == 1
    for change in changes[:500]:
        deltas = [abs(r["delta"]) for r in change["reasons"]]
        assert deltas == sorted(deltas, reverse=True)
        assert change["cause_event_id"] or deltas[0] == abs(change["reasons"][0]["delta"])  # time-caused: null
        assert change["band"] in ("healthy", "watch", "at_risk")
        if change["previous_score"] is not None:
            moved = abs(change["score"] - change["previous_score"]) >= 2.0
            assert moved or change["band"] != change["previous_band"]


@pytest.mark.parametrize("seed", [1, 2])
def test_bounded_shuffling_and_duplicates_change_no_output(
    clean_lines: list[bytes], clean_run: Path, tmp_path: Path, seed: int
) -> None:
    shuffled = _shuffled(clean_lines, seed, window_ms=30 * 60_000)
    rng = random.Random(seed)
    # Re-send 5% of events, each within 20 minutes of event time of the original.
    duplicates = [line for line in clean_lines if rng.random() < 0.05]
    noisy = _shuffled(shuffled + duplicates, seed + 10, window_ms=20 * 60_000)
    assert noisy != clean_lines
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(noisy) + b"\n")
    summary = replay(tmp_path / "in.jsonl", tmp_path / "out", _settings()).summary
    assert summary["duplicates"] == len(duplicates)
    assert summary["late"] == 0
    for name in (
        "profiles.jsonl",
        "account_profiles.jsonl",
        "scores.jsonl",
        "accounts.jsonl",
        "alerts.jsonl",
        "lifecycle.jsonl",
    ):
        assert (tmp_path / "out" / name).read_bytes() == (clean_run / name).read_bytes(), name


def test_events_later_than_allowed_lateness_are_applied_and_counted(tmp_path: Path) -> None:
    lines = [
        b'{"event_id":"a","user_id":"u","type":"page_view","ts":"2026-01-05T10:00:00Z"}',
        b'{"event_id":"b","user_id":"u","type":"page_view","ts":"2026-01-06T10:00:00Z"}',
        b'{"event_id":"c","user_id":"v","type":"page_view","ts":"2026-01-07T10:00:00Z"}',
        b'{"event_id":"late","user_id":"u","type":"feature_used","feature":"reports","ts":"2026-01-04T10:00:00Z"}',
    ]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    summary = replay(tmp_path / "in.jsonl", tmp_path / "out", _settings()).summary
    assert (summary["applied"], summary["late"]) == (4, 1)
    (u, _) = _jsonl(tmp_path / "out" / "profiles.jsonl")
    assert u["features"] == {"reports": 1}
    assert u["first_seen"] == "2026-01-04T10:00:00.000Z"


def test_account_with_most_seats_quiet_loses_health(tmp_path: Path) -> None:
    events = []
    n = 0
    start = parse_ts("2026-02-02T09:00:00Z")
    for day in range(30):
        for user in ("a", "b", "c", "d", "e"):
            if day >= 10 and user != "a":
                continue  # four of five seats go quiet after day 10
            n += 1
            events.append(
                b'{"event_id":"e%d","user_id":"%s","account_id":"acme","type":"session_start","ts":%d}'
                % (n, user.encode(), start + day * DAY_MS + n)
            )
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(events) + b"\n")
    replay(tmp_path / "in.jsonl", tmp_path / "out", _settings())
    changes = _jsonl(tmp_path / "out" / "accounts.jsonl")
    peak = max(c["score"] for c in changes)
    (account,) = _jsonl(tmp_path / "out" / "account_profiles.jsonl")
    assert account["active_users_7d"] == 1
    assert account["score"] < peak - 15
    assert any(r["component"] == "active_share" and r["delta"] < 0 for c in changes for r in c["reasons"])
