"""Client clocks through the real dataflow: one event far in the future changes nobody else's outputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from demo.generator import GeneratorConfig, write_jsonl
from engine.config import Settings, load_settings
from engine.replay import replay
from schemas.codec import dumps, loads

OUTPUTS = ("scores", "alerts", "lifecycle", "accounts", "profiles", "account_profiles")


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = tmp_path_factory.mktemp("stream") / "events.jsonl"
    write_jsonl(path, GeneratorConfig(users=80, accounts=10, days=30, seed=5, malformed_rate=0.0))
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _run(lines: list[bytes], tmp: Path, name: str, settings: Settings) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    (tmp / f"{name}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    summary = replay(tmp / f"{name}.jsonl", tmp / name, settings).summary
    outputs = {kind: [loads(x) for x in (tmp / name / f"{kind}.jsonl").read_bytes().splitlines()] for kind in OUTPUTS}
    return summary, outputs


def _without(outputs: dict[str, list[Any]], user: str) -> dict[str, list[Any]]:
    return {kind: [d for d in docs if d.get("user_id") != user] for kind, docs in outputs.items()}


@pytest.mark.parametrize(
    "ts",
    [
        pytest.param("9000-01-01T00:00:00Z", id="year-9000-rejected"),
        # Accepted (not ahead of the wall clock) but months ahead of this January stream: moves only zed.
        pytest.param(int(time.time() * 1000) - 3_600_000, id="now-in-an-old-stream"),
    ],
)
def test_one_far_future_event_changes_no_other_users_outputs(lines: list[bytes], tmp_path: Path, ts: Any) -> None:
    settings = load_settings(None, env={})
    middle = len(lines) // 2
    ahead = dumps({"event_id": "e1", "user_id": "zed", "type": "page_view", "ts": ts})
    # A duplicate of an event already applied, sent after the far-future one: still caught.
    noisy = [*lines[:middle], ahead, *lines[middle:], lines[middle - 10]]
    clean_summary, clean = _run(lines, tmp_path, "clean", settings)
    noisy_summary, noisy_out = _run(noisy, tmp_path, "noisy", settings)
    assert noisy_summary["duplicates"] == clean_summary["duplicates"] + 1
    assert noisy_summary["as_of"] == clean_summary["as_of"]
    assert _without(noisy_out, "zed") == clean
    if isinstance(ts, str):
        assert noisy_summary["rejected_by_code"] == {"future_timestamp": 1}
        assert not any(d.get("user_id") == "zed" for docs in noisy_out.values() for d in docs)
    else:
        (zed,) = [p for p in noisy_out["profiles"] if p["user_id"] == "zed"]
        assert zed["as_of"] == zed["last_seen"]
