"""`pulse replay` of Segment / RudderStack messages: the same outputs as the equivalent native stream, no trait
stored anywhere, and the demo's Segment form summarised exactly as the native one."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from demo.generator import GeneratorConfig, generate
from demo.runner import run_demo
from demo.segment import convert_line
from engine.config import Settings, load_settings
from engine.replay import replay
from schemas.codec import decode, format_ts, loads
from schemas.events import Event, Origin, Vocabulary

DATA = Path(__file__).resolve().parents[1] / "data" / "segment"
OUTPUTS = ("scores", "alerts", "lifecycle", "accounts", "access", "profiles", "account_profiles", "funnel", "insights")
REPORTS = ("funnel.json", "drivers.json")
CANARIES = (b"canary", b"Canary", b"910 000 111")


def _settings(input_format: str) -> Settings:
    return load_settings(None, env={"PULSE_INPUT_FORMAT": input_format})


def _fixture(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return doc


def _streams(tmp_path: Path) -> tuple[Path, Path, str]:
    """A generated stream with identify, group and alias calls and a bad message for one user: natively and
    as Segment messages. Returns both files and the user."""
    native_lines = list(generate(GeneratorConfig(users=60, accounts=8, days=30, seed=21, malformed_rate=0.01)))
    docs = [doc for doc in (_json_object(line) for line in native_lines) if doc is not None]
    user = next(d["user_id"] for d in docs if str(d.get("user_id")).endswith("-daily") and d.get("account_id"))
    account = next(d["account_id"] for d in reversed(docs) if d.get("user_id") == user and d.get("account_id"))
    events = (decode(line, Origin("native", -1, 0), Vocabulary()) for line in native_lines)
    end = max(event.ts for event in events if isinstance(event, Event))
    identify, group, alias = _fixture("identify.json"), _fixture("group.json"), _fixture("alias.json")
    extra = [  # (native, Segment)
        ({"event_id": "seg-id-1", "user_id": user, "account_id": account, "type": "identify"}, identify, account),
        ({"event_id": "seg-group-1", "user_id": user, "account_id": "acct-moved", "type": "group"}, group, None),
        ({"event_id": "seg-alias-1", "user_id": user, "account_id": None, "type": "alias"}, alias, None),
    ]
    native_extra, segment_extra = [], []
    for minutes, (native, message, context_group) in enumerate(extra, 1):
        ts = end + minutes * 60_000
        native_extra.append(orjson.dumps({**native, "ts": ts}))
        message = {**message, "messageId": native["event_id"], "userId": user, "timestamp": format_ts(ts)}
        context = {k: v for k, v in message["context"].items() if k != "groupId"}
        message["context"] = {**context, "groupId": context_group} if context_group else context
        if message["type"] == "group":
            message["groupId"] = "acct-moved"
        segment_extra.append(orjson.dumps(message))
    bad_native = orjson.dumps({"user_id": user, "type": "feature_used", "ts": end})  # no id: missing_field
    bad_segment = orjson.dumps({**_fixture("page.json"), "messageId": None, "userId": user})
    native_path, segment_path = tmp_path / "native.jsonl", tmp_path / "segment.jsonl"
    native_path.write_bytes(b"\n".join([*native_lines, *native_extra, bad_native]) + b"\n")
    segment_lines = [convert_line(line) for line in native_lines]
    segment_path.write_bytes(b"\n".join([*segment_lines, *segment_extra, bad_segment]) + b"\n")
    assert native_path.read_bytes() != segment_path.read_bytes()
    return native_path, segment_path, user


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _outputs(out: Path) -> dict[str, bytes]:
    files = {name: (out / f"{name}.jsonl").read_bytes() for name in OUTPUTS if (out / f"{name}.jsonl").exists()}
    return files | {name: (out / name).read_bytes() for name in REPORTS}


def test_a_segment_stream_gives_the_native_streams_outputs_and_keeps_no_trait(tmp_path: Path) -> None:
    native_path, segment_path, user = _streams(tmp_path)
    native = replay(native_path, tmp_path / "native", _settings("pulse"))
    segment = replay(segment_path, tmp_path / "segment", _settings("segment"))
    assert native.summary["applied"] > 2000
    assert {k: v for k, v in segment.summary.items() if k != "input"} == {
        k: v for k, v in native.summary.items() if k != "input"
    }
    assert _outputs(tmp_path / "segment") == _outputs(tmp_path / "native")
    # Dead letters: the same codes, each the Segment message byte for byte.
    native_dlq = [loads(line) for line in (tmp_path / "native" / "dlq.jsonl").read_bytes().splitlines()]
    segment_dlq = [loads(line) for line in (tmp_path / "segment" / "dlq.jsonl").read_bytes().splitlines()]
    assert [d["code"] for d in segment_dlq] == [d["code"] for d in native_dlq]
    segment_lines = segment_path.read_bytes().split(b"\n")
    for letter in segment_dlq:
        assert letter["raw"] is None or letter["raw"].encode() == segment_lines[letter["line"] - 1]
    assert segment_dlq[-1]["code"] == "missing_field"
    assert segment_dlq[-1]["detail"] == "messageId is required"
    # The group call moved the user; the alias that followed, with no group, left them there.
    profiles = {p["user_id"]: p for p in map(loads, (tmp_path / "segment" / "profiles.jsonl").read_bytes().split())}
    assert profiles[user]["account_id"] == "acct-moved"
    # identify and group traits (and the canaries in them) are in no output file, dead letters included.
    assert b"canary" in segment_path.read_bytes()
    for path in sorted((tmp_path / "segment").iterdir()):
        content = path.read_bytes()
        assert not any(canary in content for canary in CANARIES), path.name


@pytest.mark.parametrize("workers", [2])
def test_segment_replay_does_not_depend_on_the_worker_count(tmp_path: Path, workers: int) -> None:
    _, segment_path, _ = _streams(tmp_path)
    one = replay(segment_path, tmp_path / "one", _settings("segment"))
    base = _settings("segment")
    many = dataclasses.replace(base, engine=dataclasses.replace(base.engine, workers=workers, replay_batch_size=97))
    replay(segment_path, tmp_path / "many", many)
    assert one.summary["rejected"] > 0
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "many")


def test_pulse_demo_in_segment_format_prints_the_native_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(None, env={})
    native = run_demo(tmp_path / "out", settings, users=60, days=25, seed=4)
    native_text = capsys.readouterr().out
    segment = run_demo(tmp_path / "out", settings, users=60, days=25, seed=4, input_format="segment")
    segment_text = capsys.readouterr().out
    assert segment == native
    assert native["rejected"] > 0
    assert native["applied"] > 3000
    # Everything after the first line (the generator's own) is the same text.
    assert segment_text.split("\n", 1)[1] == native_text.split("\n", 1)[1]
    assert re.match(r"pulse demo: generated [\d,]+ Segment messages", segment_text)
    first = loads((tmp_path / "out" / "events.jsonl").read_bytes().split(b"\n", 1)[0])
    assert {"messageId", "timestamp", "context"} <= set(first)
