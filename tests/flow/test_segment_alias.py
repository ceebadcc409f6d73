"""Visitors who sign up, in replay: a Segment `alias` (or an identified `identify`) joins an anonymous id's
activity to the user's state wherever the link stands in the file, and the same with one or two workers.
(`pulse run` follows links as they come: operators.identity, tests/unit/test_identity.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from demo.generator import GeneratorConfig, generate
from demo.segment import convert_line
from engine.config import Settings, load_settings
from engine.replay import replay
from schemas.codec import format_ts, loads

DAY_MS = 86_400_000
T0 = 1_772_452_800_000  # 2026-03-02T12:00:00Z
# What the user's state says about their activity: equal whichever way the visitor's events reached it.
ACTIVITY = ("user_id", "account_id", "first_seen", "last_seen", "active_days_total", "counts", "features",
            "sessions_28", "minutes_28", "commercial", "journey_stage")  # fmt: skip


def _settings(workers: int = 1) -> Settings:
    return load_settings(None, env={"PULSE_INPUT_FORMAT": "segment", "PULSE_ENGINE_WORKERS": str(workers)})


def _page(message_id: str, anonymous_id: str, ts: int) -> dict[str, Any]:
    return {"type": "page", "messageId": message_id, "anonymousId": anonymous_id, "timestamp": format_ts(ts)}


def _track(message_id: str, event: str, user_id: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "messageId": message_id, "userId": user_id,
            "timestamp": format_ts(ts), "context": {"groupId": "acme"}, **extra}  # fmt: skip


def _alias(message_id: str, user_id: str, previous_id: str, ts: int) -> dict[str, Any]:
    return {"type": "alias", "messageId": message_id, "userId": user_id, "previousId": previous_id,
            "timestamp": format_ts(ts)}  # fmt: skip


def _visit_then_sign_up() -> list[dict[str, Any]]:
    return [
        *[_page(f"p{d}", "anon-1", T0 + d * DAY_MS) for d in range(3)],
        _track("demo", "Demo Requested", "anon-1", T0 + 2 * DAY_MS + 60_000)
        | {"userId": None, "anonymousId": "anon-1"},
        _track("su", "Signed Up", "u-1", T0 + 3 * DAY_MS, anonymousId="anon-1"),
        _alias("al", "u-1", "anon-1", T0 + 3 * DAY_MS + 1000),
        _track("f1", "Feature Used", "u-1", T0 + 4 * DAY_MS, properties={"feature": "reports"}),
        _page("p9", "anon-1", T0 + 5 * DAY_MS),  # the same browser, after the alias: the user's
        _page("q1", "anon-2", T0 + 5 * DAY_MS + 1000),  # another visitor, never linked
    ]


def _run(tmp_path: Path, name: str, messages: list[dict[str, Any]], workers: int = 1) -> tuple[dict[str, Any], Path]:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(m) for m in messages) + b"\n")
    result = replay(path, tmp_path / name, _settings(workers))
    return result.summary, tmp_path / name


def _profiles(out: Path) -> dict[str, dict[str, Any]]:
    return {p["user_id"]: p for p in map(loads, (out / "profiles.jsonl").read_bytes().splitlines())}


def _lifecycle(out: Path) -> list[dict[str, Any]]:
    return [loads(line) for line in (out / "lifecycle.jsonl").read_bytes().splitlines()]


def test_a_visitor_who_signs_up_brings_their_activity_to_the_user(tmp_path: Path) -> None:
    messages = _visit_then_sign_up()
    summary, out = _run(tmp_path, "alias", messages)
    profiles = _profiles(out)

    assert sorted(profiles) == ["anon-2", "u-1"]  # the visitor is gone; the other visitor stays one
    user = profiles["u-1"]
    assert user["first_seen"] == format_ts(T0)  # the first page view, as a visitor
    assert user["active_days_total"] == 5  # three visiting days, the feature day, the page view after
    assert user["counts"]["activity"] == 5
    assert user["counts"]["commercial"] == 2  # the demo request (as a visitor) and the sign-up
    # Known from the start of the replay, the link gives the visitor's events to the user directly: the
    # visitor never has a profile to merge, and nothing is counted twice.
    assert not [r for r in _lifecycle(out) if r["kind"] == "user_merged"]
    assert summary["events_in"] == len(messages) == summary["applied"]
    assert (summary["merged"], summary["visitors_merged"]) == (0, 0)

    # The same activity sent natively as the user's all along gives the user the same activity.
    native = [{**m, "userId": "u-1"} if m.get("anonymousId") == "anon-1" else m for m in messages]
    native = [{k: v for k, v in m.items() if k != "previousId"} for m in native]  # the alias links nothing
    _, native_out = _run(tmp_path, "native", native)
    expected = _profiles(native_out)["u-1"]
    assert {k: user[k] for k in ACTIVITY} == {k: expected[k] for k in ACTIVITY}


def test_the_link_may_come_before_the_visitors_events(tmp_path: Path) -> None:
    messages = _visit_then_sign_up()
    _, in_order = _run(tmp_path, "in-order", messages)
    link_first = [messages[5], *messages[:5], *messages[6:]]
    summary, out = _run(tmp_path, "link-first", link_first)

    profiles = _profiles(out)
    assert sorted(profiles) == ["anon-2", "u-1"]
    assert {k: profiles["u-1"][k] for k in ACTIVITY} == {k: _profiles(in_order)["u-1"][k] for k in ACTIVITY}
    assert summary["applied"] == len(messages)


def _with_visitors() -> list[bytes]:
    """The demo stream as Segment messages, where each user's page views among their first 30 messages come
    with a browser anonymousId only, and an `alias` joins it to the user at their 30th."""
    lines: list[bytes] = []
    seen: dict[str, int] = {}
    for line in generate(GeneratorConfig(users=80, accounts=10, days=30, seed=5, malformed_rate=0.0)):
        message = loads(convert_line(line))
        user_id = message.get("userId")
        if isinstance(user_id, str):
            n = seen[user_id] = seen.get(user_id, 0) + 1
            if n < 30 and message["type"] == "page":
                message = {**message, "userId": None, "anonymousId": f"anon-{user_id}"}
            elif n == 30:
                alias = {"type": "alias", "messageId": f"alias-{user_id}", "userId": user_id,
                         "previousId": f"anon-{user_id}", "timestamp": message["timestamp"]}  # fmt: skip
                lines.append(orjson.dumps(alias))
        lines.append(orjson.dumps(message))
    return lines


@pytest.mark.parametrize("workers", [2])
def test_visitors_merge_the_same_with_one_or_two_workers(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "visitors.jsonl"
    lines = _with_visitors()
    path.write_bytes(b"\n".join(lines) + b"\n")
    one = replay(path, tmp_path / "one", _settings(1))
    many = replay(path, tmp_path / "many", _settings(workers))

    visitors = {m["anonymousId"] for m in map(loads, lines) if m.get("anonymousId") and not m.get("userId")}
    assert len(visitors) > 40
    assert {k: v for k, v in one.summary.items() if k != "input"} == {
        k: v for k, v in many.summary.items() if k != "input"
    }
    for name in ("profiles", "account_profiles", "scores", "alerts", "lifecycle", "accounts"):
        assert (tmp_path / "one" / f"{name}.jsonl").read_bytes() == (tmp_path / "many" / f"{name}.jsonl").read_bytes()
    linked = {m["previousId"] for m in map(loads, lines) if m["type"] == "alias"}
    anonymous = {p for p in _profiles(tmp_path / "one") if p.startswith("anon-")}
    assert linked
    assert anonymous == visitors - linked  # every linked visitor joined their user; the others stay visitors
