"""Unit tests for access requests in operators.shard: the export of what is held about one person."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from engine.config import load_settings
from operators.health import render_user
from operators.shard import Output, Shard, ShardConfig
from schemas.codec import dumps, format_ts, loads
from schemas.events import Category, Event
from schemas.outputs import OutputKind, Record
from tests.factories import T0, day_ts, make_event

# What `pulse replay` runs with: events ordered within the allowed lateness, timers in event time.
REPLAY = load_settings(None, env={}).shard_config(live=False)
# What `pulse run` runs with by default: applied on arrival.
LIVE = load_settings(None, env={}).shard_config(live=True)

ALICE = [
    make_event("a1", "alice", "acme", "session_start", day_ts(0)),
    make_event("a2", "alice", "acme", "feature_used", day_ts(0, 13), feature="reports"),
    make_event("a3", "alice", "acme", "nps_response", day_ts(1), properties={"score": 9}),
    make_event("a4", "alice", "acme", "support_ticket_opened", day_ts(2), properties={"ticket_id": "t-1"}),
    make_event("a5", "alice", "acme", "subscribed", day_ts(2, 14), properties={"plan": "pro"}),
    make_event("a6", "alice", "acme", "feature_used", day_ts(3), feature="dashboards"),
]
# Another person in the same shard and account, with things of their own that must not leak.
MALLORY = [
    make_event("m1", "mallory", "acme", "feature_used", day_ts(0), feature="mallorys-secret-feature"),
    make_event("m2", "mallory", "acme", "nps_response", day_ts(1), properties={"score": 2}),
]
# Both in event-time order, as a keyed topic delivers them.
EVENTS = sorted([*ALICE, *MALLORY], key=lambda e: (e.ts, e.event_id))


def _access(user: str, ts: int, event_id: str = "req-1") -> Event:
    return make_event(event_id, user, None, "access_requested", ts)


def _run(
    batches: Sequence[Sequence[Event]], config: ShardConfig = REPLAY, shard: Shard | None = None
) -> tuple[Shard, list[Output]]:
    shard = shard or Shard()
    outputs: list[Output] = []
    for batch in batches:
        outputs.extend(shard.process(batch, config))
    outputs.extend(shard.drain(config))
    return shard, outputs


def _exports(outputs: Sequence[Output]) -> list[Record]:
    return [o for o in outputs if isinstance(o, Record) and o.kind is OutputKind.ACCESS]


def _others(outputs: Sequence[Output]) -> list[Output]:
    return [o for o in outputs if not (isinstance(o, Record) and o.kind is OutputKind.ACCESS)]


def _export(outputs: Sequence[Output]) -> dict[str, Any]:
    (record,) = _exports(outputs)
    doc: dict[str, Any] = loads(record.value)
    return doc


def test_access_requested_is_a_privacy_event_of_the_vocabulary() -> None:
    assert _access("alice", T0).category is Category.PRIVACY


def test_a_known_user_gets_everything_held_about_them() -> None:
    request = _access("alice", day_ts(5))
    shard, outputs = _run([[*EVENTS, request]])
    (record,) = _exports(outputs)
    assert (record.key, record.ts) == ("alice", day_ts(5))
    doc = loads(record.value)
    assert doc["kind"] == "access_export"
    assert doc["user_id"] == "alice"
    assert doc["ts"] == format_ts(day_ts(5))
    assert doc["request_event_id"] == "req-1"
    assert doc["found"] is True
    assert doc["record_id"].startswith("access-")
    # The profile as the profile store shows it, from the state as it was when the request was answered.
    alice = shard.users["alice"]
    assert doc["profile"] == loads(dumps(render_user("alice", alice, REPLAY.model, REPLAY.lapse)))
    signals = doc["signals"]
    assert signals["account_id"] == "acme"
    assert signals["first_seen"] == format_ts(day_ts(0))
    assert signals["last_seen"] == format_ts(day_ts(3))
    assert signals["last_active"] == format_ts(day_ts(3))
    assert signals["active_days_total"] == 2
    assert signals["active_dates"] == [format_ts(day_ts(0))[:10], format_ts(day_ts(3))[:10]]
    assert signals["counts"] == {
        "activity": 3, "sentiment": 1, "support": 1, "team": 0, "commercial": 1, "privacy": 0, "other": 0,
    }  # fmt: skip
    assert signals["features"] == {"dashboards": 1, "reports": 1}
    assert (signals["nps"], signals["nps_answered_at"]) == (9, format_ts(day_ts(1)))
    assert (signals["open_tickets"], signals["resolved_tickets"]) == (1, 0)
    assert (signals["commercial"], signals["commercial_since"]) == ("paying", format_ts(day_ts(2, 14)))
    assert (signals["score"], signals["band"]) == (alice.score, alice.band)
    assert set(signals["components"]) == {
        "recency", "frequency", "adoption", "sentiment", "support", "commercial", "time_in_product",
    }  # fmt: skip
    # The sessions held: alice's activity events are an hour or more apart, so each is a session of its own.
    held = [format_ts(day_ts(0)), format_ts(day_ts(0, 13)), format_ts(day_ts(3))]
    assert signals["sessions"] == [[ts, ts] for ts in held]
    assert signals["engagement"] == alice.engagement
    assert signals["expected_gap_days"] == doc["profile"]["expected_gap_days"]
    assert signals["open_alerts"] == []


def test_nothing_about_anyone_else_is_in_an_export() -> None:
    _, outputs = _run([[*EVENTS, _access("alice", day_ts(5))]])
    (record,) = _exports(outputs)
    assert b"mallory" not in record.value
    assert b"secret" not in record.value
    # Mallory's NPS of 2 must not show anywhere either: only Alice's 9 is in it.
    assert loads(record.value)["profile"]["nps"] == 9


def test_an_unknown_user_is_not_found() -> None:
    _, outputs = _run([[*ALICE, _access("nobody", day_ts(5))]])
    doc = _export(outputs)
    assert (doc["user_id"], doc["found"], doc["profile"], doc["signals"]) == ("nobody", False, None, None)


@pytest.mark.parametrize("config", [REPLAY, LIVE], ids=["replay", "live"])
def test_an_erased_user_is_not_found(config: ShardConfig) -> None:
    erasure = make_event("x1", "alice", None, "erasure_requested", day_ts(4))
    _, outputs = _run([[*ALICE, erasure], [_access("alice", day_ts(5))]], config)
    doc = _export(outputs)
    assert (doc["found"], doc["profile"], doc["signals"]) == (False, None, None)


def test_open_alerts_are_listed_with_their_ids() -> None:
    # Silent for two weeks after a daily rhythm: a lapse (and churn-risk) alert fire before the request.
    daily = [make_event(f"d{i}", "dan", "acme", "session_start", day_ts(i)) for i in range(6)]
    _, outputs = _run([[*daily, _access("dan", day_ts(20))], [make_event("z", "zed", None, "page_view", day_ts(21))]])
    alerts = [loads(o.value) for o in outputs if isinstance(o, Record) and o.kind is OutputKind.ALERTS]
    still_open = {a["alert_id"]: a for a in alerts if a["status"] == "firing" and a["kind"] != "reactivated"}
    for a in alerts:
        if a["status"] == "resolved":
            still_open.pop(a["alert_id"], None)
    listed = _export(outputs)["signals"]["open_alerts"]
    assert "lapse" in {a["kind"] for a in listed}
    assert {a["alert_id"]: a["kind"] for a in listed} == {i: a["kind"] for i, a in still_open.items()}
    lapse = next(a for a in listed if a["kind"] == "lapse")
    assert lapse["since"] == still_open[lapse["alert_id"]]["ts"]


def test_the_export_holds_exactly_the_events_before_the_request_in_event_time() -> None:
    # The request arrives after a later event (within the allowed lateness): it still sees only the earlier.
    early = make_event("e1", "alice", None, "feature_used", T0, feature="reports")
    late = make_event("e2", "alice", None, "feature_used", T0 + 10 * 60_000, feature="dashboards")
    _, outputs = _run([[early, late, _access("alice", T0 + 5 * 60_000)]])
    assert _export(outputs)["signals"]["features"] == {"reports": 1}


def test_the_request_changes_no_other_output_and_no_state() -> None:
    # As the newest event of all: it must not move event time, fire timers or touch the person's state.
    events = EVENTS
    without, plain = _run([events])
    with_request, outputs = _run([[*events, _access("alice", day_ts(40)), _access("mallory", day_ts(1, 18))]])
    assert len(_exports(outputs)) == 2
    assert _others(outputs) == plain
    assert with_request.event_time == without.event_time
    for user in ("alice", "mallory"):
        assert render_user(user, with_request.users[user], REPLAY.model, REPLAY.lapse) == render_user(
            user, without.users[user], REPLAY.model, REPLAY.lapse
        )
    assert with_request.counters.applied == without.counters.applied + 2
    assert with_request.counters.late == without.counters.late == 0


def test_the_same_input_gives_the_same_bytes_whatever_the_batching() -> None:
    events = sorted([*EVENTS, _access("alice", day_ts(5)), _access("mallory", day_ts(2))], key=lambda e: e.ts)
    _, whole = _run([events])
    exported = [r.value for r in _exports(whole)]
    assert len(exported) == 2
    for size in (1, 2, 3):
        _, batched = _run([events[i : i + size] for i in range(0, len(events), size)])
        assert [r.value for r in _exports(batched)] == exported, size
    _, once_more = _run([events])
    assert [r.value for r in _exports(once_more)] == exported


def test_a_resent_request_is_answered_once() -> None:
    request = _access("alice", day_ts(5))
    shard, outputs = _run([[*ALICE, request], [request]])
    assert len(_exports(outputs)) == 1
    assert shard.counters.duplicates == 1


def test_live_answers_on_arrival_after_the_users_own_due_timers() -> None:
    shard = Shard()
    outputs = shard.process([*ALICE, _access("alice", day_ts(3, 18))], LIVE)
    doc = _export(outputs)
    assert doc["found"] is True
    assert doc["signals"]["features"] == {"dashboards": 1, "reports": 1}
    assert shard.event_time == day_ts(3)  # the request moved no clock
