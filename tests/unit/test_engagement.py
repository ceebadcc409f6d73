"""Unit tests for operators.engagement and alerts: lifecycle stages, lapse / reactivated / churn-risk alerts."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from operators.alerts import alert_id
from operators.engagement import lapse_deadline, next_timer
from operators.lapse import LapseModel
from operators.scoring import ScoreModel
from operators.shard import Shard, ShardConfig
from operators.state import UserState
from schemas.codec import loads
from schemas.events import Event
from schemas.outputs import OutputKind, Record
from tests.factories import DAY_MS, T0, make_event

DAY0 = T0 // DAY_MS  # T0's epoch day: day offsets below count from it
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
CADENCE = LapseModel()
REPLAY = ShardConfig()
KEY_FEATURES = ScoreModel().key_features
# Every alert carries these (README, "Lapse alerts").
ALERT_FIELDS = {"alert_id", "kind", "status", "user_id", "account_id", "ts", "last_seen", "score", "band", "p_alive"}


def _at(day: int, ms_in_day: int = 12 * HOUR_MS) -> int:
    return (DAY0 + day) * DAY_MS + ms_in_day


def _iso(ms: int) -> str:
    """RFC 3339 as outputs write it, by the standard library rather than the code under test."""
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _ev(event_id: str, ts: int, type: str = "page_view", user: str = "u", **kw: Any) -> Event:
    return make_event(event_id=f"{user}-{event_id}", user_id=user, type=type, ts=ts, **kw)


def _visits(days: Sequence[int], user: str = "u", ms_in_day: int = 12 * HOUR_MS) -> list[Event]:
    return [_ev(f"d{d}", _at(d, ms_in_day), user=user) for d in days]


def _state(days: Sequence[int], ms_in_day: int = 12 * HOUR_MS) -> UserState:
    events = _visits(days, ms_in_day=ms_in_day)
    user = UserState(events[0].ts)
    for event in events:
        user.apply(event)
    return user


def _records(events: Sequence[Event], config: ShardConfig = REPLAY, until: int = -1) -> tuple[Shard, list[Record]]:
    """Replay `events` through one shard and let event time reach `until`."""
    shard = Shard()
    config = dataclasses.replace(config, until_ms=until)
    outputs = shard.process(events, config) + shard.drain(config)
    return shard, [o for o in outputs if isinstance(o, Record)]


def _docs(records: Sequence[Record], kind: OutputKind) -> list[dict[str, Any]]:
    return [loads(r.value) for r in records if r.kind is kind]


def _alerts(
    events: Sequence[Event], config: ShardConfig = REPLAY, until: int = -1, kind: str | None = None
) -> list[dict[str, Any]]:
    _, records = _records(events, config, until)
    return [a for a in _docs(records, OutputKind.ALERTS) if kind is None or a["kind"] == kind]


def _stages(records: Sequence[Record], field: str, user: str = "u") -> list[tuple[str | None, str]]:
    docs = _docs(records, OutputKind.LIFECYCLE)
    return [(d["from"], d["to"]) for d in docs if d["field"] == field and d["user_id"] == user]


DAILY = tuple(range(20))
# A daily user (cadence 1.3 x 2.5 = 3.25 -> 4 days) lapses at the start of day 24.
DAILY_LAPSE_AT = _at(24, 0)


# --- pure functions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "user", "anchor", "other"),
    [
        pytest.param("lapse", "u", T0, ("lapse", "u", T0 + 1), id="anchor-matters"),
        pytest.param("lapse", "u", T0, ("lapse", "v", T0), id="user-matters"),
        pytest.param("lapse", "u", T0, ("reactivated", "u", T0), id="kind-matters"),
        pytest.param("churn_risk", "u|1", 5, ("churn_risk", "u", 15), id="pipe-in-user-id"),
    ],
)
def test_alert_id_is_deterministic_and_distinct(kind: str, user: str, anchor: int, other: tuple[str, str, int]) -> None:
    ident = alert_id(kind, user, anchor)
    assert ident == alert_id(kind, user, anchor)
    assert ident.startswith(f"{kind}-")
    assert len(ident) == len(kind) + 1 + 20
    assert ident != alert_id(*other)


@pytest.mark.parametrize(
    ("ms_in_day", "cooldown_until", "expected"),
    [
        # Daily user, last active on day 19: 4 whole days after the end of day 19, whatever the hour.
        pytest.param(0, -1, _at(24, 0), id="midnight"),
        pytest.param(12 * HOUR_MS, -1, _at(24, 0), id="noon"),
        pytest.param(DAY_MS - 1, -1, _at(24, 0), id="last-ms"),
        pytest.param(12 * HOUR_MS, _at(23, 0), _at(24, 0), id="cooldown-already-over"),
        pytest.param(12 * HOUR_MS, _at(26, 5 * HOUR_MS), _at(26, 5 * HOUR_MS), id="cooldown-holds-it-back"),
    ],
)
def test_lapse_deadline_is_day_granular_and_respects_cooldown(
    ms_in_day: int, cooldown_until: int, expected: int
) -> None:
    user = _state(DAILY, ms_in_day)
    user.cooldown_until = cooldown_until
    assert lapse_deadline(user, CADENCE) == expected


@pytest.mark.parametrize(
    ("days", "fired_at", "lapse_open", "expected"),
    [
        pytest.param((), None, False, -1, id="never-active"),
        pytest.param(DAILY, None, False, _at(20, 0), id="after-an-event-rescore-at-day-end"),
        pytest.param(DAILY, _at(20, 0), False, _at(21, 0), id="daily-rescore"),
        pytest.param(DAILY, _at(22, 0), False, _at(23, 0), id="rescore-before-deadline"),
        pytest.param(DAILY, _at(24, 0), True, _at(25, 0), id="lapsed-keeps-rescoring"),
        # Rescoring stops 30 days after the end of the last active day.
        pytest.param(DAILY, _at(49, 0), True, _at(50, 0), id="lapsed-last-rescore"),
        pytest.param(DAILY, _at(50, 0), True, -1, id="lapsed-past-the-horizon-no-timer"),
        # The deadline passed before the timer that just fired: handled (or suppressed while paused), not re-armed.
        pytest.param((0,), _at(31, 0), False, -1, id="past-horizon-handled-deadline-no-timer"),
    ],
)
def test_next_timer(days: Sequence[int], fired_at: int | None, lapse_open: bool, expected: int) -> None:
    user = _state(days) if days else UserState(T0)
    if lapse_open:
        user.lapse_id = "lapse-x"
    assert next_timer(user, CADENCE, fired_at) == expected


# --- lapse alerts: firing, reactivation, cooldown, pause ----------------------------------------------------


def test_lapse_alert_fires_at_the_deadline_with_its_facts() -> None:
    shard, records = _records(_visits(DAILY), until=_at(30))
    alerts = _docs(records, OutputKind.ALERTS)
    (lapse,) = [a for a in alerts if a["kind"] == "lapse"]
    assert lapse["status"] == "firing"
    assert lapse["alert_id"] == alert_id("lapse", "u", _at(19))
    assert set(lapse) >= ALERT_FIELDS
    assert (lapse["user_id"], lapse["account_id"]) == ("u", "acct-1")
    assert lapse["ts"] == _iso(DAILY_LAPSE_AT)
    assert lapse["last_seen"] == _iso(_at(19))
    assert lapse["silent_days"] == 4.5
    assert lapse["expected_gap_days"] == 1.3
    assert lapse["p_alive"] is None  # no BG/NBD parameters configured
    assert lapse["lapse_model"] == "cadence"
    assert shard.users["u"].engagement == "lapsed"
    assert _stages(records, "engagement") == [(None, "new"), ("new", "active"), ("active", "lapsed")]


@pytest.mark.parametrize(
    ("returns", "engagement_path", "resolved_at"),
    [
        pytest.param(
            [_at(30)],
            [(None, "new"), ("new", "active"), ("active", "lapsed"), ("lapsed", "reactivated")],
            _at(30),
            id="one-return",
        ),
        pytest.param(
            [_at(30), _at(30, 18 * HOUR_MS)],
            [(None, "new"), ("new", "active"), ("active", "lapsed"), ("lapsed", "reactivated")],
            _at(30),
            id="same-day-again-stays-reactivated",
        ),
        pytest.param(
            [_at(30), _at(31)],
            [
                (None, "new"),
                ("new", "active"),
                ("active", "lapsed"),
                ("lapsed", "reactivated"),
                ("reactivated", "active"),
            ],
            _at(30),
            id="next-active-day-is-active",
        ),
        pytest.param(
            [_at(24, 1)],
            [(None, "new"), ("new", "active"), ("active", "lapsed"), ("lapsed", "reactivated")],
            _at(24, 1),
            id="back-one-ms-after-the-lapse",
        ),
        pytest.param([_at(23, 23 * HOUR_MS)], [(None, "new"), ("new", "active")], None, id="back-just-in-time"),
    ],
)
def test_return_resolves_the_lapse_and_reactivates(
    returns: list[int], engagement_path: list[tuple[str | None, str]], resolved_at: int | None
) -> None:
    events = _visits(DAILY) + [_ev(f"back{i}", ts) for i, ts in enumerate(returns)]
    _, records = _records(events, until=returns[-1])
    alerts = [a for a in _docs(records, OutputKind.ALERTS) if a["kind"] in ("lapse", "reactivated")]
    assert _stages(records, "engagement") == engagement_path
    if resolved_at is None:
        assert alerts == []
        return
    firing, resolved, reactivated = alerts
    assert (firing["kind"], firing["status"]) == ("lapse", "firing")
    assert (resolved["kind"], resolved["status"]) == ("lapse", "resolved")
    assert resolved["alert_id"] == firing["alert_id"]
    assert (reactivated["kind"], reactivated["status"]) == ("reactivated", "firing")
    # Anchored on the last activity before the silence, like the lapse: whichever activity ends it.
    assert reactivated["alert_id"] == alert_id("reactivated", "u", _at(19))
    assert reactivated["alert_id"] != firing["alert_id"]
    assert resolved["ts"] == reactivated["ts"] == _iso(resolved_at)
    assert resolved["silent_days"] == round((resolved_at - _at(19)) / DAY_MS, 2)


@pytest.mark.parametrize(
    ("cooldown_days", "second_lapse_at"),
    [
        # Back on day 30 at noon: the cadence alone would lapse the user again at the start of day 36
        # ((30 + 7) / 21 = 1.76 x 2.5 = 4.4 -> 5 days after the end of day 30).
        pytest.param(7.0, _at(37), id="cooldown-7-days-holds-to-day-37-noon"),
        pytest.param(14.0, _at(44), id="cooldown-14-days"),
        pytest.param(3.0, _at(36, 0), id="short-cooldown-cadence-decides"),
    ],
)
def test_no_second_lapse_alert_before_the_cooldown_ends(cooldown_days: float, second_lapse_at: int) -> None:
    config = ShardConfig(lapse=LapseModel(cooldown_days=cooldown_days))
    events = [*_visits(DAILY), _ev("back", _at(30))]
    shard, records = _records(events, config, until=_at(60))
    cooldown_until = _at(30) + int(cooldown_days * DAY_MS)
    lapses = [a for a in _docs(records, OutputKind.ALERTS) if a["kind"] == "lapse" and a["status"] == "firing"]
    assert [a["ts"] for a in lapses] == [_iso(DAILY_LAPSE_AT), _iso(second_lapse_at)]
    assert second_lapse_at >= cooldown_until
    assert lapses[1]["alert_id"] == alert_id("lapse", "u", _at(30))
    assert lapses[1]["alert_id"] != lapses[0]["alert_id"]
    stages = _stages(records, "engagement")
    assert ("lapsed", "reactivated") in stages
    assert stages[-1][1] == "lapsed"  # (a long cooldown may see the band reach at_risk first)
    assert shard.users["u"].cooldown_until == cooldown_until


def _paused(ts: int, user: str = "u") -> Event:
    return _ev(f"pause{ts}", ts, "subscription_paused", user)


def _resumed(ts: int, user: str = "u") -> Event:
    return _ev(f"resume{ts}", ts, "subscription_resumed", user)


@pytest.mark.parametrize(
    ("extra", "lapse_at"),
    [
        pytest.param([], DAILY_LAPSE_AT, id="not-paused"),
        pytest.param([_paused(_at(20))], None, id="paused-before-the-deadline"),
        pytest.param([_paused(_at(19, 13 * HOUR_MS)), _ev("more", _at(19, 14 * HOUR_MS))], None, id="paused-same-day"),
        pytest.param([_paused(_at(21), user="other")], DAILY_LAPSE_AT, id="another-user-paused"),
        # Resuming restarts the clock: one rhythm (3.25 days for this daily user) from the resume.
        pytest.param([_paused(_at(20)), _resumed(_at(22))], _at(25, 18 * HOUR_MS), id="resumed-before-the-deadline"),
        pytest.param(
            [_paused(_at(21)), _resumed(_at(30)), _ev("back", _at(31))],
            # Back on day 31: (31 + 7) / 21 = 1.81 x 2.5 = 4.5 -> 5 days after the end of day 31.
            _at(37, 0),
            id="resumed-and-active-lapses-again",
        ),
    ],
)
def test_no_lapse_alert_while_paused(extra: list[Event], lapse_at: int | None) -> None:
    events = sorted([*_visits(DAILY), *extra], key=lambda e: e.ts)
    alerts = _alerts(events, until=_at(60), kind="lapse")
    firing = [a for a in alerts if a["status"] == "firing" and a["user_id"] == "u"]
    if lapse_at is None:
        assert firing == []
    else:
        assert [a["ts"] for a in firing][-1:] == [_iso(lapse_at)]


@pytest.mark.parametrize("resumed_day", [pytest.param(30, id="resumed-after-the-deadline")])
def test_a_resumed_silent_user_can_lapse_again(resumed_day: int) -> None:
    resumed = _at(resumed_day)
    events = [*_visits(DAILY), _paused(_at(21)), _resumed(resumed)]
    shard, records = _records(events, until=_at(60))
    assert shard.users["u"].commercial == "paying"
    firing = [a for a in _docs(records, OutputKind.ALERTS) if (a["kind"], a["status"]) == ("lapse", "firing")]
    assert [a["alert_id"] for a in firing] == [alert_id("lapse", "u", _at(19))]
    assert firing[0]["ts"] >= _iso(resumed)


# --- churn risk ---------------------------------------------------------------------------------------------

# Sentiment alone: the score is 100 x the latest NPS answer / 10, so each answer sets the band directly
# (healthy >= 70, at_risk < 40, leaving at_risk needs >= 45).
SENTIMENT_ONLY = ScoreModel(weights={"sentiment": 1.0})


@pytest.mark.parametrize(
    ("answers", "cooldown_days", "expected"),
    [
        pytest.param([10, 0], 7.0, [("firing", 1)], id="healthy-to-at-risk"),
        pytest.param([5, 0], 7.0, [("firing", 1)], id="watch-to-at-risk"),
        pytest.param([5, 4], 7.0, [], id="exactly-40-is-watch"),
        pytest.param([0], 7.0, [], id="first-score-at-risk-no-alert"),
        pytest.param([0, 10, 0], 7.0, [("firing", 2)], id="first-at-risk-then-a-real-move"),
        pytest.param([10, 0, 10], 7.0, [("firing", 1), ("resolved", 2)], id="resolved-back-to-healthy"),
        pytest.param([10, 0, 5], 7.0, [("firing", 1), ("resolved", 2)], id="resolved-to-watch"),
        pytest.param([10, 0, 4], 7.0, [("firing", 1)], id="hysteresis-44-stays-at-risk"),
        pytest.param([10, 0, 10, 0], 7.0, [("firing", 1), ("resolved", 2)], id="cooldown-no-second-alert"),
        pytest.param(
            [10, 0, 10, 0], 1 / 24, [("firing", 1), ("resolved", 2), ("firing", 3)], id="after-cooldown-alerts-again"
        ),
    ],
)
def test_churn_risk_on_entering_at_risk_from_a_scored_band(
    answers: list[int], cooldown_days: float, expected: list[tuple[str, int]]
) -> None:
    times = [T0 + i * HOUR_MS for i in range(len(answers))]
    events = [
        _ev(f"nps{i}", ts, "nps_response", properties={"score": s})
        for i, (ts, s) in enumerate(zip(times, answers, strict=True))
    ]
    config = ShardConfig(model=SENTIMENT_ONLY, lapse=LapseModel(cooldown_days=cooldown_days))
    alerts = _alerts(events, config, kind="churn_risk")
    assert [(a["status"], a["ts"]) for a in alerts] == [(status, _iso(times[i])) for status, i in expected]
    firing_ids: dict[int, str] = {}
    for a, (status, i) in zip(alerts, expected, strict=True):
        assert a["band"] == ("at_risk" if status == "firing" else ("healthy" if answers[i] >= 7 else "watch"))
        if status == "firing":
            assert a["alert_id"] == alert_id("churn_risk", "u", times[i])
            firing_ids[i] = a["alert_id"]
        else:
            assert a["alert_id"] == firing_ids[max(firing_ids)]  # resolves the latest firing, same id


def test_churn_risk_with_the_default_model() -> None:
    """A user quiet for five days (watch) gets two urgent tickets and a 0 NPS answer, then both tickets resolve.

    formula changed: personal recency/frequency and re-normalised weights (issue #6); the old scenario (all on
    day 2) no longer reaches at_risk: with recency and frequency at 1 the score cannot fall below 50.
    By hand. Visits on days 0, 1, 2 (noon): g = (2 + 7)/(2 + 1) = 3 days, k = 3. No NPS, ticket or subscription
    event yet: recency, frequency and adoption (0, no features) share 0.65 of weight: 100 * 0.25 * (r + f)/0.65.
    Daily rescoring timers: day 6 00:00 (3.5 days quiet): late 1/6, r = (19/18)^-3 = 0.850, f = 3.5/(2 + 6/3)
    = 0.875 -> 66.36 (healthy, kept); day 7 00:00: late 1/2, r = (7/6)^-3 = 0.630, f = 3.5/(2 + 7/3) = 0.808
    -> 55.29: watch. Then on day 7 (f = 0.808), late = (5 + h - 3)/3 for h the hours past noon in days:
    - 23:00 first urgent ticket, support 1/3 joins (0.75 of weight): r = 0.4846,
      100 * (0.25*0.4846 + 0.25*0.808 + 0.1/3)/0.75 = 47.52, watch;
    - 23:10 second, support 1/5: 45.71 (-1.81, under min_delta);
    - 23:20 NPS 0, sentiment 0 joins (0.90): r = 0.4828, 100 * (0.1207 + 0.2019 + 0.02)/0.90 = 38.07 < 40: at_risk;
    - 23:40 first resolved, support 1/3: 39.50, still at_risk (< 45);
    - 23:50 second resolved, support 1: r = 0.4802, 100 * (0.1200 + 0.2019 + 0.1)/0.90 = 46.89 >= 45: watch.
    """

    def ticket(n: int, minute: int, resolved: bool = False) -> Event:
        kind = "support_ticket_resolved" if resolved else "support_ticket_opened"
        props: dict[str, Any] = {"ticket_id": f"t{n}"} if resolved else {"ticket_id": f"t{n}", "severity": "urgent"}
        return _ev(f"{kind}{n}", _at(7, 23 * HOUR_MS) + minute * MINUTE_MS, kind, properties=props)

    events = [
        *_visits((0, 1, 2)),
        ticket(1, 0),
        ticket(2, 10),
        _ev("nps", _at(7, 23 * HOUR_MS) + 20 * MINUTE_MS, "nps_response", properties={"score": 0}),
        ticket(1, 40, resolved=True),
        ticket(2, 50, resolved=True),
    ]
    _, records = _records(events)
    scores = _docs(records, OutputKind.SCORES)
    alerts = _docs(records, OutputKind.ALERTS)
    assert [(a["kind"], a["status"]) for a in alerts] == [("churn_risk", "firing"), ("churn_risk", "resolved")]
    firing, resolved = alerts
    assert firing["alert_id"] == resolved["alert_id"]
    entered = next(s for s in scores if s["band"] == "at_risk")
    left = next(s for s in scores if s["previous_band"] == "at_risk")
    assert (entered["previous_band"], entered["cause_event_id"], firing["ts"]) == ("watch", "u-nps", entered["ts"])
    assert (left["band"], left["cause_event_id"], resolved["ts"]) == ("watch", "u-support_ticket_resolved2", left["ts"])
    assert firing["score"] == entered["score"] == 38.07
    assert left["score"] == 46.89
    # The band history: watch on the first day (frequency (1 + 0.5)/2 = 0.75: 100 * 0.25 * 1.75/0.65 = 67.31),
    # healthy from day 1 (76.92), watch by timer on day 7, at_risk at the NPS, watch once both tickets resolve.
    assert [(s["band"], s["cause_event_id"]) for s in scores if s["band"] != s["previous_band"]] == [
        ("watch", "u-d0"),
        ("healthy", "u-d1"),
        ("watch", None),
        ("at_risk", "u-nps"),
        ("watch", "u-support_ticket_resolved2"),
    ]
    assert firing["next_step"]["action"] == "adopt_feature"
    assert _stages(records, "engagement") == [
        (None, "new"),
        ("new", "active"),
        ("active", "at_risk"),
        ("at_risk", "active"),
    ]


# --- determinism --------------------------------------------------------------------------------------------


def _story() -> list[Event]:
    """Several users whose alerts cover lapse, reactivated and churn risk; several events within each hour."""
    events: list[Event] = []
    for user, days in (("weekly", range(0, 36, 7)), ("daily", (*range(20), 30, 31)), ("twice", (0, 1))):
        for d in days:
            events += [
                _ev(f"s{d}", _at(d), "session_start", user),
                _ev(f"p{d}", _at(d) + 15 * MINUTE_MS, "page_view", user),
                _ev(f"f{d}", _at(d) + 40 * MINUTE_MS, "feature_used", user, feature=KEY_FEATURES[d % 4]),
            ]
    at = _at(2, 13 * HOUR_MS)
    urgent = {"severity": "urgent"}
    events += [
        _ev("t1", at, "support_ticket_opened", "twice", properties={"ticket_id": "1", **urgent}),
        _ev("t2", at + MINUTE_MS, "support_ticket_opened", "twice", properties={"ticket_id": "2", **urgent}),
        _ev("n", at + 2 * MINUTE_MS, "nps_response", "twice", properties={"score": 0}),
        _ev("r1", at + 50 * MINUTE_MS, "support_ticket_resolved", "twice", properties={"ticket_id": "1"}),
        _ev("r2", at + 65 * MINUTE_MS, "support_ticket_resolved", "twice", properties={"ticket_id": "2"}),
        _ev("sub", _at(1) + 5 * MINUTE_MS, "subscribed", "daily", properties={"plan": "pro", "mrr": 50}),
    ]
    return sorted(events, key=lambda e: (e.ts, e.event_id))


def _shuffled_within_hours(events: list[Event], seed: int) -> list[Event]:
    rng = random.Random(seed)
    hours: dict[int, list[Event]] = {}
    for event in events:
        hours.setdefault(event.ts // HOUR_MS, []).append(event)
    out: list[Event] = []
    for hour in sorted(hours):
        group = hours[hour]
        rng.shuffle(group)
        out += group
    return out


def _alert_stream(batches: list[list[Event]], config: ShardConfig) -> list[dict[str, Any]]:
    shard = Shard()
    outputs = []
    for batch in batches:
        outputs += shard.process(batch, config)
    outputs += shard.drain(config)
    alerts = [r for r in outputs if isinstance(r, Record) and r.kind is OutputKind.ALERTS]
    return [loads(r.value) for r in sorted(alerts, key=lambda r: (r.ts, r.key, r.value))]


UNTIL = _at(80)
IN_ORDER = ShardConfig(until_ms=UNTIL)
REORDER = ShardConfig(until_ms=UNTIL, reorder_ms=HOUR_MS)


def _chunks(events: list[Event], size: int) -> list[list[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


@pytest.mark.parametrize(
    ("split", "config"),
    [
        pytest.param(lambda es: [[e] for e in es], IN_ORDER, id="one-event-per-batch"),
        pytest.param(lambda es: _chunks(es, 7), IN_ORDER, id="batches-of-7"),
        pytest.param(lambda es: [es[:1], es[1:]], IN_ORDER, id="two-uneven-batches"),
        pytest.param(lambda es: [es], REORDER, id="reorder-in-order"),
        pytest.param(lambda es: [_shuffled_within_hours(es, 1)], REORDER, id="reorder-shuffled-seed-1"),
        pytest.param(lambda es: _chunks(_shuffled_within_hours(es, 2), 5), REORDER, id="reorder-shuffled-batches"),
    ],
)
def test_alerts_do_not_depend_on_batching_or_bounded_reordering(
    split: Callable[[list[Event]], list[list[Event]]], config: ShardConfig
) -> None:
    events = _story()
    reference = _alert_stream([events], IN_ORDER)
    kinds = {(a["kind"], a["status"]) for a in reference}
    assert {("lapse", "firing"), ("lapse", "resolved"), ("reactivated", "firing"), ("churn_risk", "firing")} <= kinds
    assert _alert_stream(split(events), config) == reference


# --- commercial lifecycle, next steps, alert shape ----------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [
                ("subscribed", {"plan": "pro", "mrr": 99}),
                ("cancellation_requested", {"reason": "price"}),
                ("subscription_cancelled", {"reason": "price", "regrettable": True}),
            ],
            [
                ("visitor", "paying", {"plan": "pro"}),
                ("paying", "cancel_requested", {"reason": "price"}),
                ("cancel_requested", "churned", {"reason": "price", "regrettable": True}),
            ],
            id="requested-then-cancelled-regrettable",
        ),
        pytest.param(
            [("subscribed", {"plan": "pro"}), ("subscription_cancelled", {"reason": "moved_on", "regrettable": False})],
            [
                ("visitor", "paying", {"plan": "pro"}),
                ("paying", "churned", {"reason": "moved_on", "regrettable": False}),
            ],
            id="cancelled-directly-not-regrettable",
        ),
        pytest.param(
            [("trial_started", None), ("subscription_cancelled", {"reason": "trial_ended", "regrettable": True})],
            [("visitor", "trial", {}), ("trial", "churned", {"reason": "trial_ended", "regrettable": True})],
            id="trial-churned",
        ),
        pytest.param(
            [("subscribed", None), ("subscription_paused", None), ("subscription_resumed", None)],
            [("visitor", "paying", {}), ("paying", "paused", {}), ("paused", "paying", {})],
            id="pause-and-resume",
        ),
    ],
)
def test_commercial_transitions_carry_their_details(
    events: list[tuple[str, dict[str, Any] | None]], expected: list[tuple[str, str, dict[str, Any]]]
) -> None:
    stream = [_ev(f"c{i}", T0 + i * DAY_MS, kind, properties=props) for i, (kind, props) in enumerate(events)]
    _, records = _records(stream)
    docs = [d for d in _docs(records, OutputKind.LIFECYCLE) if d["field"] == "commercial"]
    assert len(docs) == len(expected)
    for i, (doc, (before, after, extra)) in enumerate(zip(docs, expected, strict=True)):
        base = {"kind", "record_id", "user_id", "field", "from", "to", "ts", "cause_event_id"}
        assert set(doc) == base | set(extra)
        assert (doc["from"], doc["to"], doc["user_id"]) == (before, after, "u")
        assert {k: doc[k] for k in extra} == extra
        assert doc["cause_event_id"] == f"u-c{i}"
        assert doc["ts"] == _iso(T0 + i * DAY_MS)


@pytest.mark.parametrize(
    ("features", "unused"),
    [
        pytest.param((), set(KEY_FEATURES), id="no-features"),
        pytest.param(
            ("dashboards", "reports", "not-a-key-feature"), set(KEY_FEATURES) - {"dashboards", "reports"}, id="some"
        ),
        pytest.param(KEY_FEATURES[:-1], {KEY_FEATURES[-1]}, id="all-but-one"),
        pytest.param(KEY_FEATURES, set(), id="all-key-features-no-suggestion"),
    ],
)
def test_lapse_next_step_suggests_an_unused_key_feature(features: tuple[str, ...], unused: set[str]) -> None:
    events = _visits(DAILY)
    events += [_ev(f"f{i}", _at(19, 13 * HOUR_MS) + i, "feature_used", feature=f) for i, f in enumerate(features)]
    # A healthy neighbour using two key features makes the suggestion count users.
    for d in range(40):
        events.append(_ev(f"h{d}", _at(d), "feature_used", "healthy", feature="workflows"))
        events.append(_ev(f"i{d}", _at(d) + 1, "feature_used", "healthy", feature="exports"))
    alerts = _alerts(sorted(events, key=lambda e: e.ts), until=_at(40), kind="lapse")
    (lapse,) = [a for a in alerts if a["user_id"] == "u"]
    step = lapse["next_step"]
    if not unused:
        assert step is None
        return
    assert step["action"] == "adopt_feature"
    assert step["feature"] in unused
    assert step["feature"] in KEY_FEATURES
    if unused & {"workflows", "exports"}:
        assert step["feature"] in {"workflows", "exports"}  # the most used by healthy users comes first
        assert step["healthy_users_using"] == 1


def test_every_lapse_alert_has_a_valid_next_step() -> None:
    alerts = [a for a in _alert_stream([_story()], IN_ORDER) if a["kind"] == "lapse" and a["status"] == "firing"]
    assert len(alerts) >= 2
    for alert in alerts:
        step = alert["next_step"]
        assert step is None or (step["action"] == "adopt_feature" and step["feature"] in KEY_FEATURES), step


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        pytest.param("lapse", "firing", id="lapse-firing"),
        pytest.param(
            "lapse",
            "resolved",
            id="lapse-resolved",
        ),
        pytest.param(
            "reactivated",
            "firing",
            id="reactivated",
        ),
        pytest.param(
            "churn_risk",
            "firing",
            id="churn-risk-firing",
        ),
    ],
)
def test_every_alert_has_the_contract_fields(kind: str, status: str) -> None:
    """p_alive is among the fields of every alert (null when no BG/NBD model is configured)."""
    alerts = [a for a in _alert_stream([_story()], IN_ORDER) if (a["kind"], a["status"]) == (kind, status)]
    assert alerts
    for alert in alerts:
        assert set(alert) >= ALERT_FIELDS, sorted(ALERT_FIELDS - set(alert))
