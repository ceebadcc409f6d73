"""The command line: exit status and one-line reasons for fatal problems, 0 when rejected lines occur."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from schemas.codec import loads


def test_replay_exits_zero_with_rejected_lines(tmp_path: Path) -> None:
    events = tmp_path / "in.jsonl"
    events.write_bytes(b'{"event_id":"1","user_id":"u","type":"page_view","ts":1767607200000}\nnot json\n')
    assert main(["replay", str(events), "--out", str(tmp_path / "out")]) == 0
    summary = loads((tmp_path / "out" / "summary.json").read_bytes())
    assert (summary["applied"], summary["rejected"]) == (1, 1)


def test_missing_input_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pulse: error: input file not found")
    assert "\n" not in err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[engine]\nshardz = 3\n", "unknown key(s) shardz"),
        ("[engine]\nshards = 'many'\n", "expected int"),
        ("[nope]\n", "unknown section(s) [nope]"),
        ("[kafka]\nsasl_password = 'x'\n", "is a secret"),
        ("[engine\n", "invalid TOML"),
    ],
)
def test_bad_config_fails_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, message: str) -> None:
    config = tmp_path / "pulse.toml"
    config.write_text(toml)
    events = tmp_path / "in.jsonl"
    events.write_text("")
    assert main(["replay", str(events), "--out", str(tmp_path / "o"), "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_bad_environment_value_fails_fast(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(tmp_path / "missing"), "--out", str(tmp_path)],
        env={"PULSE_ENGINE_SHARDS": "x", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "PULSE_ENGINE_SHARDS: expected int" in result.stderr


def test_demo_runs_from_a_source_checkout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--users", "16", "--days", "14"]) == 0
    assert "Pulse demo" in capsys.readouterr().out
    assert (tmp_path / "summary.json").exists()
