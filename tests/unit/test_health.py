"""Unit tests for operators.health: signals, score_changed records, User 360 render, member updates, account health."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import pytest

from operators.accounts import AccountShard
from operators.health import (
    ACCOUNT_COMPONENTS,
    AccountState,
    MemberUpdate,
    evaluate,
    evaluate_account,
    render_account,
    render_user,
    score_at,
    signals,
)
from operators.lapse import LapseModel
from operators.scoring import COMPONENTS, ScoreModel, components, contributions
from operators.shard import HOLD_ALL, Output, Shard, ShardConfig
from operators.state import UserState
from schemas.codec import format_ts, loads
from schemas.events import Event
from schemas.outputs import OutputKind, Record
from tests.factories import day_ts, make_event

MODEL = ScoreModel()
CONFIG = ShardConfig()
VERSION = CONFIG.model_version
MINUTE_MS = 60_000
KEY_FEATURES = ("dashboards", "reports", "alerts", "integrations", "workflows", "exports")
# The public shape of a score record (README, "Health scores").
SCORE_FIELDS = {
    "kind",
    "user_id",
    "account_id",
    "ts",
    "score",
    "previous_score",
    "band",
    "previous_band",
    "components",
    "reasons",
    "cause_event_id",
    "model",
    "record_id",
}


def _state(events: Sequence[Event]) -> UserState:
    state = UserState(events[0].ts)
    for event in events:
        state.apply(event)
    return state


def _history(user_id: str = "user-1", account_id: str | None = "acct-1", last_day: int = 0) -> list[Event]:
    """A paying user active every day for 21 days up to `last_day`, having used every key feature once.

    Score on `last_day` at noon, by hand (formula changed: personal recency/frequency and re-normalised
    weights, issue #6). 21 active days spanning 20: expected gap g = (20 + 7*1)/(20 + 1) = 9/7 = 1.2857 days,
    rhythm evidence k = 20 + 1 = 21. recency: active today -> 1. frequency: window 20 days, 21 active,
    (21 + 0.5)/(1 + 20/(9/7) + 1) = 21.5/17.56 > 1 -> 1. adoption 0.7 + 0.3*6/50 = 0.736. commercial paying 1
    (subscribed: a signal). No NPS answer and no ticket: sentiment and support have no signal and weigh nothing.
    100 * (0.25*1 + 0.25*1 + 0.15*0.736 + 0.10*1)/(0.25 + 0.25 + 0.15 + 0.10) = 100 * 0.7104/0.75 = 94.72, healthy.
    Contributions: recency 25/0.75 = 33.33, frequency 33.33, adoption 11.04/0.75 = 14.72, commercial 10/0.75 = 13.33.
    """

    def ev(suffix: str, type: str, ts: int, **kw: Any) -> Event:
        return make_event(
            event_id=f"{user_id}-{suffix}", user_id=user_id, account_id=account_id, type=type, ts=ts, **kw
        )

    events = [ev("sub", "subscribed", day_ts(last_day - 21), properties={"plan": "pro", "mrr": 100})]
    events += [ev(f"pv{d}", "page_view", day_ts(d)) for d in range(last_day - 20, last_day + 1)]
    events += [
        ev(f"f{i}", "feature_used", day_ts(last_day - i, hour=10), feature=f) for i, f in enumerate(KEY_FEATURES)
    ]
    return sorted(events, key=lambda e: e.ts)


HEALTHY_SCORE = 94.72  # formula changed: personal recency/frequency, re-normalised weights (issue #6)


def _run(batches: Sequence[Sequence[Event]], config: ShardConfig = CONFIG) -> tuple[Shard, list[Output]]:
    shard = Shard()
    outputs: list[Output] = []
    for batch in batches:
        outputs.extend(shard.process(batch, config))
    return shard, outputs


def _docs(outputs: Sequence[Output], kind: OutputKind = OutputKind.SCORES) -> list[dict[str, Any]]:
    return [loads(o.value) for o in outputs if isinstance(o, Record) and o.kind is kind]


def _updates(outputs: Sequence[Output]) -> list[MemberUpdate]:
    return [o for o in outputs if isinstance(o, MemberUpdate)]


# ---- signals ---------------------------------------------------------------------------------------------------


def _ticket(event_id: str, ticket: str, day: int, severity: str | None = None, resolve: bool = False) -> Event:
    props: dict[str, Any] = {"ticket_id": ticket}
    if severity is not None:
        props["severity"] = severity
    kind = "support_ticket_resolved" if resolve else "support_ticket_opened"
    return make_event(event_id=event_id, type=kind, ts=day_ts(day), properties=props)


def _nps(event_id: str, score: int, day: int, hour: int = 12) -> Event:
    return make_event(event_id=event_id, type="nps_response", ts=day_ts(day, hour), properties={"score": score})


def _typed(event_id: str, type: str, day: int, hour: int = 12, **kw: Any) -> Event:
    return make_event(event_id=event_id, type=type, ts=day_ts(day, hour), **kw)


SIGNAL_CASES = [
    # One active day: no gap seen, so the prior alone: g = (0 + 1*7)/(0 + 1) = 7, evidence 0 + 1 = 1.
    pytest.param(
        [_typed("a", "page_view", 0)],
        0,
        {
            "days_since_active": 0.0,
            "expected_gap_days": 7.0,
            "rhythm_evidence": 1.0,
            "active_days_window": 1,
            "window_days": 0,
            "nps_score": None,
            "support_load": 0.0,
            "commercial": "visitor",
            "has_tickets": False,
            "has_commercial": False,
        },
        id="one-page-view",
    ),
    pytest.param(
        [_typed("a", "page_view", 0)],
        7,
        {"days_since_active": 7.0, "active_days_window": 1, "window_days": 7, "expected_gap_days": 7.0},
        id="week-later",
    ),
    # The window runs from the first active day (not the last 365 days yet): 40 days, day 0 still in it.
    pytest.param(
        [_typed("a", "page_view", 0)], 40, {"active_days_window": 1, "window_days": 40}, id="window-since-first-day"
    ),
    # Days 0, 3, 10: 2 gaps spanning 10, g = (10 + 7)/(2 + 1) = 17/3, evidence 3; 12 days since day 0.
    pytest.param(
        [_typed("a", "page_view", 0), _typed("b", "page_view", 3), _typed("c", "page_view", 10)],
        12,
        {
            "days_since_active": 2.0,
            "expected_gap_days": 17 / 3,
            "rhythm_evidence": 3.0,
            "active_days_window": 3,
            "window_days": 12,
        },
        id="own-rhythm",
    ),
    # Two events on day 0 are one active day: days 0 and 4, g = (4 + 7)/(1 + 1) = 5.5, evidence 2.
    pytest.param(
        [_typed("a", "page_view", 0), _typed("b", "page_view", 0, hour=18), _typed("c", "page_view", 4)],
        4,
        {"expected_gap_days": 5.5, "rhythm_evidence": 2.0, "active_days_window": 2, "window_days": 4},
        id="one-active-day-per-day",
    ),
    pytest.param(
        [_typed("a", "page_view", 0, hour=6)], 0, {"days_since_active": 0.25}, id="fractional-days-since-active"
    ),
    pytest.param(
        [_nps("n", 3, 0)],
        0,
        {
            "days_since_active": None,
            "active_days_window": 0,
            "window_days": 0,
            "expected_gap_days": 7.0,
            "rhythm_evidence": 1.0,
        },
        id="never-active",
    ),
    pytest.param([_nps("n", 3, -45)], 0, {"nps_score": 3, "nps_age_days": 45.0}, id="nps-and-its-age"),
    pytest.param(
        [_nps("new", 9, -1), _nps("old", 2, -5)], 0, {"nps_score": 9, "nps_age_days": 1.0}, id="nps-latest-by-ts"
    ),
    pytest.param(
        [_ticket("o1", "k1", 0, "urgent"), _ticket("o2", "k2", 0, "low"), _ticket("o3", "k3", 0, "high")],
        0,
        {"support_load": 6.5},
        id="severity-weights-add-up",
    ),
    pytest.param([_ticket("o1", "k1", 0)], 0, {"support_load": 1.0, "has_tickets": True}, id="no-severity-is-normal"),
    pytest.param(
        [_ticket("o1", "k1", 0, "urgent"), _ticket("o2", "k1", 0, "urgent")], 0, {"support_load": 4.0}, id="reopen-once"
    ),
    pytest.param(
        [_ticket("o1", "k1", 0, "urgent"), _ticket("o2", "k2", 0, "low"), _ticket("r1", "k1", 1, resolve=True)],
        1,
        {"support_load": 0.5},
        id="resolved-ticket-weighs-nothing",
    ),
    pytest.param(
        [_ticket("r1", "k1", 0, resolve=True), _ticket("o1", "k1", 1, "urgent")],
        1,
        {"support_load": 0.0, "has_tickets": True},
        id="resolve-before-open",
    ),
    # A support event without a ticket id is no ticket: support has no signal.
    pytest.param(
        [make_event(event_id="o1", type="support_ticket_opened", ts=day_ts(0), properties={"severity": "urgent"})],
        0,
        {"support_load": 0.0, "has_tickets": False},
        id="support-event-without-ticket-id",
    ),
    pytest.param(
        [_typed("c", "subscription_cancelled", 2), _typed("s", "subscribed", 1)],
        2,
        {"commercial": "churned", "has_commercial": True},
        id="commercial-latest-by-ts",
    ),
    # A commercial event with no stage (a demo request) is no subscription event: commercial has no signal.
    pytest.param(
        [_typed("d", "demo_requested", 0)],
        0,
        {"commercial": "visitor", "has_commercial": False},
        id="stageless-commercial-event-alone",
    ),
    pytest.param(
        [_typed("t", "trial_started", 0), _typed("s", "subscribed", 1), _typed("d", "demo_requested", 2)],
        2,
        {"commercial": "paying"},
        id="stageless-commercial-event-keeps-stage",
    ),
    pytest.param(
        [_typed("s", "subscribed", 0), _typed("p", "subscription_paused", 1), _typed("r", "subscription_resumed", 2)],
        2,
        {"commercial": "paying"},
        id="pause-and-resume",
    ),
    pytest.param(
        [
            _typed("f1", "feature_used", 0, feature="dashboards"),
            _typed("f2", "feature_used", 0, feature="dashboards"),
            _typed("f3", "feature_used", 0, feature="reports"),
            _typed("f4", "feature_used", 0, feature="search"),
        ],
        0,
        {"key_features_used": 2, "feature_uses": 4},
        id="key-features-and-uses",
    ),
]


@pytest.mark.parametrize(("events", "as_of_day", "expected"), SIGNAL_CASES)
def test_signals(events: list[Event], as_of_day: int, expected: dict[str, Any]) -> None:
    got = dataclasses.asdict(signals(MODEL, _state(events), day_ts(as_of_day)))
    assert {k: got[k] for k in expected} == pytest.approx(expected)


@pytest.mark.parametrize(
    ("window", "window_days", "active"),
    [
        # Active days 0 and 2, as of day 30. Default 365: the window is the 30 days since day 0, both in it.
        pytest.param(365, 30, 2, id="since-first-day"),
        # 28 days: window_days 28, counted over 29 days (days 2..30): day 2 in, day 0 out.
        pytest.param(28, 28, 1, id="window-edge-included"),
        # 27 days: days 3..30: neither.
        pytest.param(27, 27, 0, id="window-edge-excluded"),
    ],
)
def test_signals_frequency_window(window: int, window_days: int, active: int) -> None:
    user = _state([_typed("a", "page_view", 0), _typed("b", "page_view", 2)])
    s = signals(ScoreModel(frequency_window_days=window), user, day_ts(30))
    assert (s.window_days, s.active_days_window) == (window_days, active)


def test_signals_take_the_rhythm_from_the_lapse_model() -> None:
    user = _state([_typed("a", "page_view", 0), _typed("b", "page_view", 3), _typed("c", "page_view", 10)])
    # Default prior (7 days, weight 1): g = (10 + 7)/(2 + 1) = 17/3, evidence 2 + 1 = 3.
    default = signals(MODEL, user, day_ts(12))
    assert (default.expected_gap_days, default.rhythm_evidence) == pytest.approx((17 / 3, 3.0))
    # Prior 3 days with weight 2: g = (10 + 2*3)/(2 + 2) = 4, evidence 2 + 2 = 4.
    custom = signals(MODEL, user, day_ts(12), LapseModel(prior_gap_days=3.0, prior_weight=2.0))
    assert (custom.expected_gap_days, custom.rhythm_evidence) == pytest.approx((4.0, 4.0))


# ---- evaluate --------------------------------------------------------------------------------------------------


def test_first_evaluation_always_emits_a_contract_record() -> None:
    user = _state(_history())
    as_of = day_ts(0)
    record = evaluate(MODEL, "user-1", user, as_of, "cause-1", VERSION)
    assert record is not None
    assert (record.kind, record.key, record.ts) == (OutputKind.SCORES, "user-1", as_of)
    doc = loads(record.value)
    assert set(doc) == SCORE_FIELDS
    assert doc["kind"] == "score_changed"
    assert (doc["user_id"], doc["account_id"], doc["ts"]) == ("user-1", "acct-1", format_ts(as_of))
    assert (doc["score"], doc["band"]) == (HEALTHY_SCORE, "healthy")
    assert (doc["previous_score"], doc["previous_band"]) == (None, None)
    assert (doc["cause_event_id"], doc["model"]) == ("cause-1", VERSION)
    assert doc["components"] == {
        "recency": 1.0,
        "frequency": 1.0,
        "adoption": 0.736,
        "sentiment": 0.6,
        "support": 1.0,
        "commercial": 1.0,
        "time_in_product": 0.0,
    }
    # First time, every contribution moved from nothing: the deltas add up to the score (to their 2-place
    # rounding: 33.33 + 33.33 + 14.72 + 13.33 = 94.71). Sentiment and support have no signal yet (no NPS
    # answer, no ticket): all six are listed in `components`, but they contribute 0 and give no reason.
    # formula changed: re-normalised weights (issue #6).
    assert [(r["component"], r["delta"]) for r in doc["reasons"]] == [
        ("frequency", 33.33),
        ("recency", 33.33),
        ("adoption", 14.72),
        ("commercial", 13.33),
    ]
    assert math.fsum(r["delta"] for r in doc["reasons"]) == pytest.approx(HEALTHY_SCORE, abs=4 * 0.005)
    assert (user.score, user.band) == (HEALTHY_SCORE, "healthy")
    assert math.fsum(user.contributions) == pytest.approx(HEALTHY_SCORE)


def test_unchanged_user_emits_nothing_and_keeps_state() -> None:
    user = _state(_history())
    assert evaluate(MODEL, "user-1", user, day_ts(0), "a", VERSION) is not None
    before = (user.score, user.band, user.contributions)
    assert evaluate(MODEL, "user-1", user, day_ts(0), "b", VERSION) is None
    assert (user.score, user.band, user.contributions) == before


EMIT_CASES = [
    # (last emitted score relative to the current 94.72, last emitted band) -> record? new band
    pytest.param(0.0, "healthy", False, "healthy", id="same-score-same-band"),
    pytest.param(1.5, "healthy", False, "healthy", id="small-move-suppressed"),
    pytest.param(-1.99, "healthy", False, "healthy", id="small-rise-suppressed"),
    pytest.param(2.5, "healthy", True, "healthy", id="fall-beyond-min-delta"),
    pytest.param(-2.5, "healthy", True, "healthy", id="rise-beyond-min-delta"),
    pytest.param(1.5, "watch", True, "healthy", id="band-change-below-min-delta-from-watch"),
    pytest.param(0.0, "at_risk", True, "healthy", id="band-change-without-any-move"),
]


@pytest.mark.parametrize(("offset", "prior_band", "emitted", "band"), EMIT_CASES)
def test_emits_on_min_delta_or_band_change(offset: float, prior_band: str, emitted: bool, band: str) -> None:
    user = _state(_history())
    s = signals(MODEL, user, day_ts(0))
    prior_contribs = contributions(MODEL, components(MODEL, s), s.present)
    user.score, user.band, user.contributions = HEALTHY_SCORE + offset, prior_band, prior_contribs
    record = evaluate(MODEL, "user-1", user, day_ts(0), "c", VERSION)
    assert (record is not None) == emitted
    if record is None:
        assert (user.score, user.band) == (HEALTHY_SCORE + offset, prior_band)
        return
    doc = loads(record.value)
    assert (doc["previous_score"], doc["previous_band"]) == (HEALTHY_SCORE + offset, prior_band)
    assert (doc["score"], doc["band"]) == (HEALTHY_SCORE, band)
    assert (user.score, user.band) == (HEALTHY_SCORE, band)


def test_suppressed_moves_accumulate_against_the_last_emitted_score() -> None:
    """formula changed: personal recency (issue #6). The user's gap is 9/7 = 1.2857 days (k = 21), so recency
    stays 1 for a day, then falls; frequency stays capped at 1 throughout (21.5/(2 + 22*7/9) = 1.13 on day 2)."""
    user = _state(_history())
    first = evaluate(MODEL, "user-1", user, day_ts(0), "a", VERSION)
    assert first is not None
    # A day: within the user's own gap, recency still 1: nothing moved at all.
    assert evaluate(MODEL, "user-1", user, day_ts(1), "b", VERSION) is None
    # 32 hours = 4/3 days: late = (4/3 - 9/7)/(9/7) = 1/27, recency (1 + 1/(27*21))^-21 = 0.9637;
    # 33.33 * (1 - 0.9637) = 1.21 lower, under min_delta.
    assert evaluate(MODEL, "user-1", user, day_ts(1, hour=20), "c", VERSION) is None
    assert user.score == HEALTHY_SCORE
    # 1.5 days: late = (1.5 - 9/7)/(9/7) = 1/6, recency (1 + 1/126)^-21 = 0.8470; 33.33 * 0.8470 = 28.23,
    # 5.10 lower in all, reported against the last *emitted* score.
    record = evaluate(MODEL, "user-1", user, day_ts(2, hour=0), "d", VERSION)
    assert record is not None
    doc = loads(record.value)
    assert doc["previous_score"] == HEALTHY_SCORE
    assert doc["score"] == pytest.approx(HEALTHY_SCORE - 5.10, abs=0.01)
    assert doc["components"]["recency"] == pytest.approx(0.8470, abs=1e-4)
    assert doc["reasons"] == [{"component": "recency", "delta": -5.1, "contribution": 28.23}]


def test_custom_model_changes_the_score_and_version() -> None:
    # formula changed: personal recency (issue #6). Recency alone, with recency_scale 2, 1.5 days after the
    # last activity: late = (1.5 - 9/7)/(9/7 * 2) = 1/12, k = 21 -> (1 + 1/252)^-21 = 0.9202 -> 92.02
    # (the default scale would give 84.70).
    model = ScoreModel(weights={"recency": 1.0}, recency_scale=2.0)
    user = _state(_history())
    record = evaluate(model, "user-1", user, day_ts(2, hour=0), "a", model.version)
    assert record is not None
    doc = loads(record.value)
    assert (doc["score"], doc["band"], doc["model"]) == (92.02, "healthy", model.version)
    assert model.version != MODEL.version
    assert [r["component"] for r in doc["reasons"]] == ["recency"]


# ---- personal rhythm and re-normalised weights (issue #6) -------------------------------------------------------


def _visits(days: Sequence[int], user_id: str = "u") -> list[Event]:
    return [_typed(f"{user_id}-pv{d}", "page_view", d, user_id=user_id) for d in days]


def _rhythm_parts(user: UserState, as_of: int) -> tuple[float, float, float]:
    """(recency, frequency, their points together) for a user with no NPS answer, ticket or subscription event."""
    s = signals(MODEL, user, as_of)
    assert s.present == 0b000111  # recency, frequency, adoption: bits 0-2 in COMPONENTS order
    values = components(MODEL, s)
    contribs = contributions(MODEL, values, s.present)
    return values[0], values[1], contribs[0] + contribs[1]


@pytest.mark.parametrize(
    ("weeks", "weekly_frequency"),
    [
        # 8 visits, days 0..49: g = (49 + 7)/(7 + 1) = 7, as of day 54 (5 days quiet): late 0 -> recency 1;
        # window 54 days, 8 active: (8 + 0.5)/(1 + 54/7 + 1) = 8.5/(68/7) = 0.875.
        pytest.param(8, 0.875, id="8-weeks"),
        # 52 visits, days 0..357: g = (357 + 7)/52 = 7, as of day 362: window 362 (under 365), 52 active:
        # 52.5/(1 + 362/7 + 1) = 52.5/53.71 = 0.9774.
        pytest.param(52, 0.9774, id="52-weeks"),
    ],
)
def test_weekly_user_on_rhythm_scores_like_a_daily_user_on_rhythm(weeks: int, weekly_frequency: float) -> None:
    """formula changed: personal recency/frequency (issue #6). The old model gave the 8-week weekly user
    recency 0.5^(5/7) = 0.61 and frequency 4/12 = 0.33: 24 of the 50 points a daily user gets."""
    weekly = _state(_visits(range(0, 7 * weeks, 7)))
    w_recency, w_frequency, w_points = _rhythm_parts(weekly, day_ts(7 * (weeks - 1) + 5))
    # The daily user, active every day for as many weeks, last today: g = (7w - 1 + 7)/(7w) just over 1, and
    # 7w active days against 1 + (7w - 1)/g expected: frequency capped at 1.
    daily = _state(_visits(range(7 * weeks)))
    d_recency, d_frequency, d_points = _rhythm_parts(daily, day_ts(7 * weeks - 1))
    assert (w_recency, d_recency, d_frequency) == (1.0, 1.0, 1.0)
    assert w_frequency == pytest.approx(weekly_frequency, abs=1e-4)
    # Recency, frequency and adoption share the score (0.65 of weight): the daily user's two make
    # 100 * 0.5/0.65 = 76.92 points; the weekly user's 100 * (0.25 + 0.25 * f)/0.65: 72.12 at 8 weeks,
    # 76.05 at 52 — within 7% of each other (they were 53% apart under the old model).
    assert d_points == pytest.approx(100 * 0.5 / 0.65)
    assert w_points == pytest.approx(100 * 0.25 * (1 + weekly_frequency) / 0.65, abs=1e-3)
    assert w_points == pytest.approx(d_points, rel=0.07)


def test_daily_user_silent_five_days_is_less_healthy_than_a_weekly_user_silent_five_days() -> None:
    # Daily, days 0..55, as of day 60: g = (55 + 7)/56 = 31/28, k = 56; late = (5 - 31/28)/(31/28) = 109/31;
    # recency (1 + 109/(31*56))^-56 = 0.0330. (Frequency still capped: 56.5/(2 + 60*28/31) = 1.006.)
    daily_recency, daily_frequency, _ = _rhythm_parts(_state(_visits(range(56))), day_ts(60))
    # Weekly, days 0..49, as of day 54: 5 days is within the 7-day gap: recency 1.
    weekly_recency, _, _ = _rhythm_parts(_state(_visits(range(0, 56, 7))), day_ts(54))
    assert daily_recency == pytest.approx(0.0330, abs=1e-4)
    assert daily_frequency == 1.0
    assert weekly_recency == 1.0


def test_first_nps_answer_joins_the_score_and_rescales_the_rest() -> None:
    """A weekly user (days 0..49, as of day 54) who used three key features once, never answered NPS, never had
    a ticket, never sent a subscription event: only recency, frequency and adoption have a signal.

    recency 1, frequency 0.875 (see above), adoption 0.7*3/6 + 0.3*3/50 = 0.368:
    100 * (0.25*1 + 0.25*0.875 + 0.15*0.368)/(0.25 + 0.25 + 0.15) = 100 * 0.52395/0.65 = 80.61.
    Then NPS 10, answered just now (sentiment 1): 100 * (0.52395 + 0.15)/0.80 = 84.24. Contributions
    rescale from /0.65 to /0.80: recency 38.46 -> 31.25 (-7.21), frequency 33.65 -> 27.34 (-6.31), adoption
    8.49 -> 6.90 (-1.59); sentiment joins at 18.75.
    """
    features = [
        _typed(f"u-f{d}", "feature_used", d, hour=13, user_id="u", feature=f)
        for d, f in ((0, "dashboards"), (7, "reports"), (14, "alerts"))
    ]
    user = _state(sorted([*_visits(range(0, 56, 7)), *features], key=lambda e: e.ts))
    as_of = day_ts(54)
    first = evaluate(MODEL, "u", user, as_of, "tick", VERSION)
    assert first is not None
    doc = loads(first.value)
    w = MODEL.weights
    expected = 100 * (w["recency"] * 1.0 + w["frequency"] * 0.875 + w["adoption"] * 0.368)
    expected /= w["recency"] + w["frequency"] + w["adoption"]
    assert doc["score"] == round(expected, 2) == 80.61
    assert {r["component"] for r in doc["reasons"]} == {"recency", "frequency", "adoption"}
    assert doc["components"]["sentiment"] == 0.6  # listed (neutral) but without a signal: no points

    user.apply(_nps("nps-1", 10, 54))
    record = evaluate(MODEL, "u", user, as_of, "nps-1", VERSION)
    assert record is not None
    doc = loads(record.value)
    assert (doc["previous_score"], doc["score"], doc["cause_event_id"]) == (80.61, 84.24, "nps-1")
    # The others' points moved only because sentiment joined: that move is sentiment's doing, so the one
    # reason is sentiment, +18.75 - 7.21 - 6.31 - 1.59 = +3.64 (the score's change, 84.24 - 80.61 = 3.63,
    # up to rounding); each contribution is still the component's points now.
    assert [(r["component"], r["delta"], r["contribution"]) for r in doc["reasons"]] == [("sentiment", 3.64, 18.75)]
    assert sum(r["delta"] for r in doc["reasons"]) == pytest.approx(doc["score"] - doc["previous_score"], abs=0.02)


def test_a_first_detractor_answer_is_named_as_the_cause() -> None:
    """The same weekly user answers NPS 0 instead: sentiment joins at 0 points, and the others lose the
    weight it takes (80.6077 -> 100 * 0.52395/0.80 = 65.4938). The reason is sentiment, -15.11, not a fall in
    recency, frequency and adoption (whose values did not move)."""
    features = [
        _typed(f"u-f{d}", "feature_used", d, hour=13, user_id="u", feature=f)
        for d, f in ((0, "dashboards"), (7, "reports"), (14, "alerts"))
    ]
    user = _state(sorted([*_visits(range(0, 56, 7)), *features], key=lambda e: e.ts))
    as_of = day_ts(54)
    assert evaluate(MODEL, "u", user, as_of, "tick", VERSION) is not None
    user.apply(_nps("nps-0", 0, 54))
    record = evaluate(MODEL, "u", user, as_of, "nps-0", VERSION)
    assert record is not None
    doc = loads(record.value)
    assert (doc["previous_score"], doc["score"]) == (80.61, 65.49)
    assert [(r["component"], r["delta"], r["contribution"]) for r in doc["reasons"]] == [("sentiment", -15.11, 0.0)]


def test_score_at_and_evaluate_use_the_lapse_models_rhythm() -> None:
    user = _state(_history())
    as_of = day_ts(2, hour=0)  # 1.5 days after the last activity
    # Default prior: g = 9/7, recency 0.8470 (see above): 100 * (0.25*0.8470 + 0.4604)/0.75 = 89.62.
    score, band, values = score_at(MODEL, user, as_of)
    assert (score, band) == (89.62, "healthy")
    assert values[COMPONENTS.index("recency")] == pytest.approx(0.8470, abs=1e-4)
    # A 30-day prior: g = (20 + 30)/(20 + 1) = 2.38 > 1.5 days: recency 1, the healthy 94.72 again.
    slow = LapseModel(prior_gap_days=30.0)
    assert score_at(MODEL, user, as_of, slow)[:2] == (HEALTHY_SCORE, "healthy")
    record = evaluate(MODEL, "user-1", user, as_of, "t", VERSION, slow)
    assert record is not None
    assert loads(record.value)["score"] == HEALTHY_SCORE
    # score_at does not touch what was emitted.
    assert score_at(MODEL, user, as_of)[0] == 89.62
    assert user.score == HEALTHY_SCORE


# ---- engagement and the User 360 render --------------------------------------------------------------------------

# formula changed: personal recency/frequency and re-normalised weights (issue #6). With the low ticket
# (support 1/(1 + 0.5/2) = 0.8) and NPS 6 (0.6) every component has a signal: the default 25/25/15/15/10/10
# apply. Fixed part: adoption 15*0.736 = 11.04 + sentiment 9 + support 8 + paying 10 = 38.04. The daily user's
# gap is 9/7 (k = 21); on day D: late = (D - 9/7)/(9/7) = 7D/9 - 1, recency (1 + late/21)^-21; frequency
# min(1, 21.5/(2 + (D + 20)*7/9)).
RENDER_CASES = [
    # Day 2: late 5/9, recency (194/189)^-21 = 0.5779 -> 14.45; frequency 21.5/19.11 -> 1 -> 25; 77.49.
    pytest.param(2, "healthy", 77.49, "healthy", "active", id="2-days-quiet"),
    # Day 3: late 4/3, recency (67/63)^-21 = 0.2745 -> 6.86; frequency 21.5/19.89 -> 1; 69.90: healthy keeps
    # it (>= 65) ...
    pytest.param(3, "healthy", 69.90, "healthy", "active", id="3-days-quiet-stays-healthy"),
    # ... but a user with no band yet needs 70.
    pytest.param(3, "", 69.90, "watch", "active", id="3-days-quiet-no-band-yet"),
    # Day 5: late 26/9, recency (215/189)^-21 = 0.0668 -> 1.67; frequency 21.5/21.44 -> 1; 64.71.
    pytest.param(5, "healthy", 64.71, "watch", "lapsed", id="5-days-quiet"),
    # Day 10: late 61/9, recency 0.0028 -> 0.07; frequency 21.5/25.33 = 0.8487 -> 21.22; 59.33.
    pytest.param(10, "healthy", 59.33, "watch", "lapsed", id="10-days-quiet"),
]


@pytest.mark.parametrize(("as_of_day", "stored_band", "score", "band", "engagement"), RENDER_CASES)
def test_render_user(as_of_day: int, stored_band: str, score: float, band: str, engagement: str) -> None:
    user = _state([*_history(), _ticket("o1", "k1", 0, "low"), _nps("n", 6, 0)])
    user.band = stored_band
    user.clock = day_ts(as_of_day)
    assert evaluate(MODEL, "user-1", user, user.clock, "c", MODEL.version) is not None
    profile = render_user("user-1", user, MODEL, CONFIG.lapse)
    assert profile["score"] == pytest.approx(score, abs=0.01)
    assert profile["expected_gap_days"] == 1.29  # 9/7 = 1.2857, as the score used it
    # Engagement is the lifecycle stage the shard moved the user through (tests/unit/test_engagement.py);
    # a state built by apply() alone has none yet, so it renders as new.
    assert (profile["band"], profile["engagement"]) == (band, "new")
    assert (profile["commercial"], profile["nps"], profile["open_tickets"]) == ("paying", 6, 1)
    assert set(profile["components"]) == set(COMPONENTS)
    assert profile["user_id"] == "user-1"
    assert profile["as_of"] == format_ts(day_ts(as_of_day))


# ---- scenarios through Shard.process ---------------------------------------------------------------------------


def _after_history(extra: Sequence[Event], model: ScoreModel = MODEL) -> tuple[Shard, list[dict[str, Any]]]:
    """The score records `extra` causes for a user whose last record was the healthy 94.72."""
    shard, _ = _run([_history()])
    assert shard.users["user-1"].score == HEALTHY_SCORE
    return shard, _docs(shard.process(extra, ShardConfig(model=model, model_version=model.version)))


def test_history_is_healthy() -> None:
    shard, outputs = _run([_history()])
    last = _docs(outputs)[-1]
    assert (last["score"], last["band"]) == (HEALTHY_SCORE, "healthy")
    assert shard.users["user-1"].score == HEALTHY_SCORE


def test_detractor_nps_drops_the_score_for_sentiment() -> None:
    """formula changed: re-normalised weights (issue #6). The first answer makes sentiment join the score.

    A 0: sentiment contributes 0 of a new total weight 0.90, so the score is 100 * 0.7104/0.90 = 78.93 (-15.79);
    each other component is rescaled by 0.75/0.90: recency and frequency 33.33 -> 27.78 (-5.56), adoption
    14.72 -> 12.27 (-2.45), commercial 13.33 -> 11.11 (-2.22). Their values did not move: sentiment's arrival
    moved them, so the one reason is sentiment, 0 - 5.56 - 5.56 - 2.45 - 2.22 = -15.79 (contribution 0).
    A second answer, 10, then moves sentiment alone: 0 -> 100 * 0.15/0.90 = 16.67 points, 95.60.
    """
    _, docs = _after_history([_nps("nps-1", 0, 0, hour=13), _nps("nps-2", 10, 0, hour=14)])
    assert [d["cause_event_id"] for d in docs] == ["nps-1", "nps-2"]
    first, second = docs
    assert first["previous_score"] == HEALTHY_SCORE
    assert first["components"]["sentiment"] == 0.0
    assert first["score"] == 78.93
    assert [(r["component"], r["delta"], r["contribution"]) for r in first["reasons"]] == [("sentiment", -15.79, 0.0)]
    # The reasons explain the drop (to their 2-place rounding).
    assert math.fsum(r["delta"] for r in first["reasons"]) == pytest.approx(78.93 - HEALTHY_SCORE, abs=0.02)
    assert second["previous_score"] == 78.93
    assert second["components"]["sentiment"] == 1.0
    assert second["score"] == 95.6
    assert second["reasons"] == [{"component": "sentiment", "delta": 16.67, "contribution": 16.67}]


def _urgent_burst(n: int = 4) -> list[Event]:
    return [
        make_event(
            event_id=f"t{i}",
            type="support_ticket_opened",
            ts=day_ts(0, hour=13) + i * MINUTE_MS,
            properties={"ticket_id": f"k{i}", "severity": "urgent"},
        )
        for i in range(1, n + 1)
    ]


def _resolve_all(n: int = 4) -> list[Event]:
    return [
        make_event(
            event_id=f"r{i}",
            type="support_ticket_resolved",
            ts=day_ts(0, hour=14) + i * MINUTE_MS,
            properties={"ticket_id": f"k{i}"},
        )
        for i in range(1, n + 1)
    ]


def test_urgent_ticket_burst_is_explained_by_support() -> None:
    """formula changed: re-normalised weights (issue #6). The first ticket makes support join the score
    (total weight 0.75 -> 0.85); recency stays 1 (an hour is within the 1.29-day gap).

    Score with k urgent tickets open (load 4k, support 1/(1 + 2k)): 100 * (0.7104 + 0.1/(1 + 2k))/0.85:
    t1 87.50 (-7.22), t2 85.93 (-1.57 from t1, suppressed), t3 85.26 (-2.24, emitted), t4 84.88 (-0.37, suppressed).
    """
    shard, docs = _after_history(_urgent_burst())
    assert [d["cause_event_id"] for d in docs] == ["t1", "t3"]
    t1, t3 = docs
    assert (t1["score"], t3["score"]) == (87.5, 85.26)
    # t1: support joins at 100 * 0.1/3/0.85 = 3.92 points while the others are rescaled by 0.75/0.85:
    # recency and frequency 33.33 -> 29.41 (-3.92), adoption 14.72 -> 12.99 (-1.73), commercial 13.33 -> 11.76
    # (-1.57). Their values did not move, the ticket's arrival moved them: one reason, support,
    # 3.92 - 3.92 - 3.92 - 1.73 - 1.57 = -7.22.
    assert {r["component"]: (r["delta"], r["contribution"]) for r in t1["reasons"]} == {"support": (-7.22, 3.92)}
    assert math.fsum(r["delta"] for r in t1["reasons"]) == pytest.approx(87.5 - HEALTHY_SCORE, abs=0.03)
    # t3: support alone, 3.92 -> 100 * 0.1/7/0.85 = 1.68.
    assert t3["reasons"] == [{"component": "support", "delta": -2.24, "contribution": 1.68}]
    assert t3["components"]["support"] == pytest.approx(1 / 7, abs=1e-4)
    assert shard.users["user-1"].open_tickets() == 4


def test_resolving_tickets_raises_the_score() -> None:
    """Last emitted after the burst: t3, 85.26 (see above). Open tickets k: 100 * (0.7104 + 0.1/(1 + 2k))/0.85:
    r1 (3 open) 85.26 (+0, nothing), r2 (2 open) 85.93 (+0.67, suppressed), r3 (1 open) 87.50 (+2.24, emitted),
    r4 (none open) 95.34 (+7.84, emitted). formula changed: re-normalised weights (issue #6): with
    a ticket ever had, support keeps its weight, so all resolved scores 100 * 0.8104/0.85 = 95.34, above the
    94.72 of before the burst."""
    shard, docs = _after_history([*_urgent_burst(), *_resolve_all()])
    rising = [d for d in docs if d["cause_event_id"].startswith("r")]
    assert [(d["cause_event_id"], d["previous_score"], d["score"]) for d in rising] == [
        ("r3", 85.26, 87.5),
        ("r4", 87.5, 95.34),
    ]
    # Only support moved: 1.68 -> 100 * 0.1/3/0.85 = 3.92, then -> 100 * 0.1/0.85 = 11.76.
    assert [d["reasons"] for d in rising] == [
        [{"component": "support", "delta": 2.24, "contribution": 3.92}],
        [{"component": "support", "delta": 7.84, "contribution": 11.76}],
    ]
    assert rising[-1]["components"]["support"] == 1.0
    assert shard.users["user-1"].open_tickets() == 0


def test_resolve_arriving_before_open_changes_nothing() -> None:
    events = [
        make_event(
            event_id="r1", type="support_ticket_resolved", ts=day_ts(0, hour=13), properties={"ticket_id": "k1"}
        ),
        make_event(
            event_id="o1",
            type="support_ticket_opened",
            ts=day_ts(0, hour=12) + 30 * MINUTE_MS,  # earlier than the resolve, arriving after it
            properties={"ticket_id": "k1", "severity": "urgent"},
        ),
    ]
    shard, docs = _after_history(events)
    # The resolve makes support join at 1 (a ticket was had): 100 * 0.8104/0.85 = 95.34, +0.62 from 94.72,
    # under min_delta; the late open cannot re-open the resolved ticket.
    assert docs == []
    assert shard.users["user-1"].support_load() == 0.0
    assert shard.users["user-1"].score == HEALTHY_SCORE


@pytest.mark.parametrize(
    ("event_type", "stage", "value", "delta", "contribution"),
    [
        # formula changed: re-normalised weights (issue #6). Commercial's share is 10/0.75 = 13.33 for this
        # user (no NPS, no ticket), so paying 1 -> v moves it by 13.33 * (v - 1).
        pytest.param("subscription_cancelled", "churned", 0.0, -13.33, 0.0, id="cancelled"),
        # 13.33 * 0.15 = 2.0
        pytest.param("cancellation_requested", "cancel_requested", 0.15, -11.33, 2.0, id="cancel-requested"),
        # 13.33 * 0.4 = 5.33
        pytest.param("subscription_paused", "paused", 0.4, -8.0, 5.33, id="paused"),
    ],
)
def test_commercial_setback_drops_the_score(
    event_type: str, stage: str, value: float, delta: float, contribution: float
) -> None:
    shard, docs = _after_history([_typed("c1", event_type, 0, hour=13)])
    assert len(docs) == 1
    doc = docs[0]
    assert (doc["cause_event_id"], doc["components"]["commercial"]) == ("c1", value)
    # Nothing else moved: an hour later is within the user's gap (recency 1).
    assert doc["reasons"] == [{"component": "commercial", "delta": delta, "contribution": contribution}]
    assert doc["score"] == pytest.approx(HEALTHY_SCORE + delta, abs=0.01)
    assert shard.users["user-1"].commercial == stage


@pytest.mark.parametrize(
    ("min_delta", "emitted"),
    [
        pytest.param(0.0, True, id="0"),
        pytest.param(2.0, True, id="default-2"),
        pytest.param(7.0, True, id="7-below-the-move"),
        pytest.param(7.5, False, id="7.5-above-the-move"),
        pytest.param(50.0, False, id="50"),
    ],
)
def test_min_delta_suppresses_small_moves(min_delta: float, emitted: bool) -> None:
    """One urgent ticket moves a healthy user by 7.22 (94.72 -> 87.50: support joins at 1/3 and the rest is
    rescaled by 0.75/0.85), band unchanged. formula changed: re-normalised weights (issue #6), was 6.77."""
    model = ScoreModel(min_delta=min_delta)
    shard, docs = _after_history(_urgent_burst(1), model)
    assert [d["cause_event_id"] for d in docs] == (["t1"] if emitted else [])
    assert shard.users["user-1"].score == (87.5 if emitted else HEALTHY_SCORE)


def test_hours_of_quiet_activity_emit_nothing() -> None:
    later = [_typed(f"pv-h{h}", "page_view", 0, hour=h) for h in (13, 15, 18, 23)]
    _, docs = _after_history(later)
    assert docs == []


# ---- member updates from user shards -----------------------------------------------------------------------------

UPDATE_CASES = [
    pytest.param(_typed("x", "page_view", 0, hour=13), None, id="same-day-page-view-no-update"),
    pytest.param(_typed("x", "made_up", 0, hour=13), None, id="unknown-type-no-update"),
    pytest.param(_typed("x", "page_view", 1), (None, "paying"), id="new-active-day"),
    pytest.param(_nps("x", 0, 0, hour=13), (None, "paying"), id="score-record"),
    pytest.param(_typed("x", "seat_added", 0, hour=13), ("seat_added", "paying"), id="team-event"),
    pytest.param(_typed("x", "admin_changed", 0, hour=13), ("admin_changed", "paying"), id="admin-event"),
    pytest.param(_typed("x", "subscription_paused", 0, hour=13), (None, "paused"), id="commercial-event"),
    pytest.param(_typed("x", "demo_requested", 0, hour=13), (None, "paying"), id="stageless-commercial-event"),
]


@pytest.mark.parametrize(("event", "expected"), UPDATE_CASES)
def test_member_update_after_an_event(event: Event, expected: tuple[str | None, str] | None) -> None:
    shard, _ = _run([_history()])
    outputs = shard.process([event], CONFIG)
    updates = _updates(outputs)
    if expected is None:
        assert updates == []
        return
    user = shard.users["user-1"]
    assert updates == [
        MemberUpdate(
            account_id="acct-1",
            user_id="user-1",
            ts=event.ts,
            score=user.score,
            band=user.band,
            last_active=user.last_active,
            commercial=expected[1],
            commercial_ts=user.commercial_ts,
            team_event=expected[0],
            cause="x",
            seq=sum(user.counts),
            nps_score=user.nps_score,  # the member's latest NPS answer, for the account's NPS
            nps_ts=user.nps_ts,
        )
    ]


def test_user_without_account_sends_no_member_updates() -> None:
    _, outputs = _run([_history(account_id=None), [_typed("x", "seat_added", 1, account_id=None)]])
    assert _docs(outputs)
    assert all(d["account_id"] is None for d in _docs(outputs))
    assert _updates(outputs) == []


# ---- AccountState ----------------------------------------------------------------------------------------------


def _mu(
    user: str,
    day: int,
    score: float = 80.0,
    band: str = "healthy",
    active_day: int | None = None,
    commercial: str = "visitor",
    commercial_day: int | None = None,
    team: str | None = None,
    cause: str | None = None,
    account: str = "acct-1",
    seq: int = 0,
) -> MemberUpdate:
    return MemberUpdate(
        account_id=account,
        user_id=user,
        ts=day_ts(day),
        score=score,
        band=band,
        last_active=day_ts(day if active_day is None else active_day),
        commercial=commercial,
        commercial_ts=-1 if commercial_day is None else day_ts(commercial_day),
        team_event=team,
        cause=cause or f"{user}-{day}-{team}",
        seq=seq,
    )


def _view(members: dict[str, tuple[int, int, float, str, int]]) -> dict[str, tuple[int, float, str, int]]:
    """Members without the per-user sequence number: (ts, score, band, last_active)."""
    return {user: (ts, score, band, active) for user, (ts, _, score, band, active) in members.items()}


def _account(updates: Sequence[MemberUpdate]) -> AccountState:
    account = AccountState()
    for u in updates:
        account.apply(u)
    return account


def _fields(a: AccountState) -> tuple[Any, ...]:
    return (a.members, a.team, a.commercial, a.commercial_ts, a.clock)


APPLY_CASES = [
    pytest.param(
        [_mu("u1", 1, score=80.0), _mu("u1", 2, score=50.0, band="watch")],
        {"u1": (day_ts(2), 50.0, "watch", day_ts(2))},
        id="newest-update-wins",
    ),
    pytest.param(
        [_mu("u1", 1, score=80.0), _mu("u1", 2, score=-1.0, band="")],
        {"u1": (day_ts(2), 80.0, "healthy", day_ts(2))},
        id="no-score-keeps-the-known-score",
    ),
    pytest.param(
        [_mu("u1", 1, active_day=1), _mu("u1", 3, active_day=-5)],
        {"u1": (day_ts(3), 80.0, "healthy", day_ts(1))},
        id="last-active-never-goes-back",
    ),
    pytest.param(
        [_mu("u1", 1), _mu("u2", 2, score=30.0, band="at_risk")],
        {"u1": (day_ts(1), 80.0, "healthy", day_ts(1)), "u2": (day_ts(2), 30.0, "at_risk", day_ts(2))},
        id="members-are-separate",
    ),
]


@pytest.mark.parametrize(("updates", "members"), APPLY_CASES)
def test_account_apply(updates: list[MemberUpdate], members: dict[str, tuple[int, float, str, int]]) -> None:
    assert _view(_account(updates).members) == members


def test_account_apply_newer_update_arriving_first_wins() -> None:
    older = _mu("u1", 1, score=80.0, active_day=0)
    newer = _mu("u1", 2, score=50.0, band="watch", active_day=2)
    assert _fields(_account([newer, older])) == _fields(_account([older, newer]))
    assert _view(_account([newer, older]).members) == {"u1": (day_ts(2), 50.0, "watch", day_ts(2))}


def test_account_apply_unscored_update_first_keeps_the_older_score() -> None:
    scored = _mu("u1", 1, score=80.0)
    unscored = _mu("u1", 2, score=-1.0, band="")
    assert _fields(_account([unscored, scored])) == _fields(_account([scored, unscored]))


def test_account_apply_team_events_count_once_and_commercial_is_latest() -> None:
    seat = _mu("u1", 1, team="seat_added", cause="seat-1")
    updates = [
        seat,
        _mu("u2", 2, commercial="churned", commercial_day=2),
        _mu("u1", 3, commercial="paying", commercial_day=0),
        seat,
        _mu("u3", 1, team="seat_removed", cause="seat-2"),
    ]
    for order in (updates, updates[::-1]):
        account = _account(order)
        assert account.team == {"seat-1": (day_ts(1), "seat_added"), "seat-2": (day_ts(1), "seat_removed")}
        assert (account.commercial, account.commercial_ts) == ("churned", day_ts(2))
        assert account.clock == day_ts(3)


def test_account_apply_same_ts_updates_are_order_independent() -> None:
    # Same event time, but the user's own sequence number says which came later.
    before = _mu("u1", 1, score=90.0, cause="evt-b", seq=1)
    after = _mu("u1", 1, score=60.0, band="watch", cause="evt-a", seq=2)
    assert _fields(_account([before, after])) == _fields(_account([after, before]))
    assert _view(_account([after, before]).members)["u1"][1] == 60.0


def test_account_components_do_not_depend_on_member_arrival_order() -> None:
    updates = [_mu("u1", 0, score=0.1), _mu("u2", 0, score=0.2), _mu("u3", 0, score=0.3)]
    forward, backward = _account(updates), _account(updates[::-1])
    assert forward.members == backward.members
    assert forward.component_values(day_ts(0)) == backward.component_values(day_ts(0))


def test_account_components_and_facts() -> None:
    account = _account(
        [
            _mu("u1", 0, score=80.0, commercial="paused", commercial_day=-1),
            _mu("u2", 0, score=60.0, band="watch", active_day=-6),
            _mu("u3", 0, score=30.0, band="at_risk", active_day=-7),  # exactly 7 days: not active
            _mu("u4", 0, score=-1.0, band="", active_day=-2),  # no score yet: not in the mean
            _mu("u1", -1, team="seat_removed", cause="rm"),
            _mu("u1", -2, team="admin_changed", cause="adm"),
            _mu("u1", -29, team="seat_removed", cause="old-rm"),  # outside 28 days
            _mu("u1", -3, team="seat_added", cause="add"),
        ]
    )
    values, facts = account.component_values(day_ts(0))
    # user_health (80+60+30)/3/100; active 3 of 4; not at risk 3 of 4; team 1/(1 + (1 + 0.5)/4); paused.
    assert values == pytest.approx((170 / 300, 0.75, 0.75, 1 / 1.375, 0.4))
    assert facts == {
        "users": 4,
        "active_users_7d": 3,
        "at_risk_users": 1,
        "seats_added_28d": 1,
        "seats_removed_28d": 1,
        "admin_changes_28d": 1,
        "commercial": "paused",
    }


def test_empty_account_is_neutral() -> None:
    values, facts = AccountState().component_values(day_ts(0))
    assert values == (0.5, 0.0, 1.0, 1.0, 0.5)
    assert facts["users"] == 0


def test_evaluate_account_record() -> None:
    account = _account([_mu(f"u{i}", 0, commercial="paying", commercial_day=-30) for i in range(3)])
    record = evaluate_account(MODEL, "acct-1", account, "u2-0", VERSION)
    assert record is not None
    assert (record.kind, record.key, record.ts) == (OutputKind.ACCOUNTS, "acct-1", day_ts(0))
    doc = loads(record.value)
    # 30 * 0.8 + 35 + 15 + 10 + 10 = 94.
    assert (doc["kind"], doc["account_id"], doc["score"], doc["band"]) == (
        "account_health_changed",
        "acct-1",
        94.0,
        "healthy",
    )
    assert (doc["previous_score"], doc["previous_band"], doc["cause_event_id"], doc["model"]) == (
        None,
        None,
        "u2-0",
        VERSION,
    )
    assert list(doc["components"]) == sorted(ACCOUNT_COMPONENTS)
    assert doc["reasons"][0] == {"component": "active_share", "delta": 35.0, "contribution": 35.0}
    assert (doc["users"], doc["active_users_7d"], doc["commercial"]) == (3, 3, "paying")
    assert (account.score, account.band) == (94.0, "healthy")
    assert evaluate_account(MODEL, "acct-1", account, "again", VERSION) is None


def test_render_account_is_as_of_its_own_clock() -> None:
    account = _account([_mu(f"u{i}", 0) for i in range(3)])
    assert evaluate_account(MODEL, "acct-1", account, "c", VERSION) is not None
    early = render_account("acct-1", account, MODEL)
    assert early["as_of"] == format_ts(day_ts(0))
    assert early["active_users_7d"] == 3
    account.clock = day_ts(30)
    late = render_account("acct-1", account, MODEL)
    assert late["as_of"] == format_ts(day_ts(30))
    assert late["active_users_7d"] == 0


def test_render_account_shows_the_last_emitted_score_and_band() -> None:
    account = _account([_mu(f"u{i}", 0, commercial="paying", commercial_day=-30) for i in range(3)])
    assert evaluate_account(MODEL, "acct-1", account, "c", VERSION) is not None
    assert account.band == "healthy"
    account.clock = day_ts(30)
    record = evaluate_account(MODEL, "acct-1", account, "time", VERSION)
    assert record is not None
    profile = render_account("acct-1", account, MODEL)
    assert profile["score"] == loads(record.value)["score"] == 59.0  # 30 * 0.8 + 0 + 15 + 10 + 10
    assert profile["band"] == loads(record.value)["band"] == "watch"


# ---- account scenarios through Shard and AccountShard ---------------------------------------------------------


def test_account_whose_members_go_quiet_loses_health() -> None:
    members = [f"member-{i}" for i in range(5)]
    history = sorted((e for m in members for e in _history(m)), key=lambda e: e.ts)
    # Only member-0 keeps coming back, once a day for the next 10 days.
    loyal = [make_event(event_id=f"member-0-later-{d}", user_id="member-0", ts=day_ts(d)) for d in range(1, 11)]
    shard, outputs = _run([history, loyal])
    updates = _updates(outputs)
    assert {u.user_id for u in updates} == set(members)

    accounts = AccountShard()
    docs = _docs(accounts.process(updates, CONFIG), OutputKind.ACCOUNTS)
    assert {d["account_id"] for d in docs} == {"acct-1"}
    at_peak = next(d for d in reversed(docs) if d["ts"] <= format_ts(day_ts(0)))
    final = docs[-1]
    assert at_peak["active_users_7d"] == 5
    assert final["active_users_7d"] == 1
    assert final["score"] < at_peak["score"] - 15
    drops = [r for d in docs for r in d["reasons"] if r["component"] == "active_share" and r["delta"] < 0]
    assert drops, "the fall must be explained by active_share"
    # All four fell out of the 7-day window at once: 35 * 4/5 = 28.
    assert min(r["delta"] for r in drops) == -28.0
    state = accounts.accounts["acct-1"]
    assert state.score == final["score"]
    # Timers re-scored the quiet members as time passed (recency decays), without any event from them.
    assert shard.users["member-1"].score < HEALTHY_SCORE


def test_account_keeps_the_members_latest_score_in_replay() -> None:
    config = ShardConfig(reorder_ms=60 * MINUTE_MS, account_reorder_ms=HOLD_ALL)
    # "z-visit" on day 1 (released once another user's day-2 event moves the watermark on), then a detractor NPS
    # from day 0 arrives a day late with an id that sorts first.
    later = [_typed("z-visit", "page_view", 1), _typed("other", "page_view", 2, user_id="user-2", account_id=None)]
    shard, outputs = _run([_history(), later, [_nps("a-nps", 0, 0, hour=13)]], config)
    outputs += shard.drain(config)
    user = shard.users["user-1"]
    assert shard.counters.late == 1
    assert [d["cause_event_id"] for d in _docs(outputs) if d["user_id"] == "user-1"][-1] == "a-nps"

    accounts = AccountShard()
    accounts.process(_updates(outputs), config)
    accounts.drain(config)
    assert accounts.accounts["acct-1"].members["user-1"][2] == user.score
