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
    signals,
)
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

    Score on `last_day` at noon, by hand: recency 25 + frequency 25 (21 >= 12 days) + adoption 15 * (0.7 + 0.3 *
    6/50) = 11.04 + neutral sentiment 9 + support 10 + paying 10 = 90.04, healthy.
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


HEALTHY_SCORE = 90.04


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
    pytest.param(
        [_typed("a", "page_view", 0)],
        0,
        {
            "days_since_active": 0.0,
            "active_days_28": 1,
            "nps_score": None,
            "support_load": 0.0,
            "commercial": "visitor",
        },
        id="one-page-view",
    ),
    pytest.param([_typed("a", "page_view", 0)], 7, {"days_since_active": 7.0, "active_days_28": 1}, id="week-later"),
    pytest.param([_typed("a", "page_view", 0)], 28, {"active_days_28": 0}, id="out-of-28-day-window"),
    pytest.param(
        [_typed("a", "page_view", 0, hour=6)], 0, {"days_since_active": 0.25}, id="fractional-days-since-active"
    ),
    pytest.param([_nps("n", 3, 0)], 0, {"days_since_active": None, "active_days_28": 0}, id="never-active"),
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
    pytest.param([_ticket("o1", "k1", 0)], 0, {"support_load": 1.0}, id="no-severity-is-normal"),
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
        {"support_load": 0.0},
        id="resolve-before-open",
    ),
    pytest.param(
        [_typed("c", "subscription_cancelled", 2), _typed("s", "subscribed", 1)],
        2,
        {"commercial": "churned"},
        id="commercial-latest-by-ts",
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
    }
    # First time, every contribution moved from nothing: the deltas add up to the score.
    assert [r["component"] for r in doc["reasons"]] == [
        "frequency",
        "recency",
        "adoption",
        "commercial",
        "support",
        "sentiment",
    ]
    assert math.fsum(r["delta"] for r in doc["reasons"]) == pytest.approx(HEALTHY_SCORE)
    assert (user.score, user.band) == (HEALTHY_SCORE, "healthy")
    assert math.fsum(user.contributions) == pytest.approx(HEALTHY_SCORE)


def test_unchanged_user_emits_nothing_and_keeps_state() -> None:
    user = _state(_history())
    assert evaluate(MODEL, "user-1", user, day_ts(0), "a", VERSION) is not None
    before = (user.score, user.band, user.contributions)
    assert evaluate(MODEL, "user-1", user, day_ts(0), "b", VERSION) is None
    assert (user.score, user.band, user.contributions) == before


EMIT_CASES = [
    # (last emitted score relative to the current 90.04, last emitted band) -> record? new band
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
    values = components(MODEL, signals(MODEL, user, day_ts(0)))
    prior_contribs = contributions(MODEL, values)
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
    user = _state(_history())
    first = evaluate(MODEL, "user-1", user, day_ts(0), "a", VERSION)
    assert first is not None
    # Six hours: recency 25 * (1 - 0.5 ** (6 / 168)) = 0.61 lower, under min_delta.
    assert evaluate(MODEL, "user-1", user, day_ts(0, hour=18), "b", VERSION) is None
    assert user.score == HEALTHY_SCORE
    # A day: 25 * (1 - 0.5 ** (1 / 7)) = 2.36 lower in all, reported against the last *emitted* score.
    record = evaluate(MODEL, "user-1", user, day_ts(1), "c", VERSION)
    assert record is not None
    doc = loads(record.value)
    assert doc["previous_score"] == HEALTHY_SCORE
    assert doc["score"] == pytest.approx(HEALTHY_SCORE - 2.36, abs=0.01)
    assert doc["reasons"] == [{"component": "recency", "delta": -2.36, "contribution": 22.64}]


def test_custom_model_changes_the_score_and_version() -> None:
    model = ScoreModel(weights={"recency": 1.0})
    user = _state(_history())
    record = evaluate(model, "user-1", user, day_ts(7), "a", model.version)
    assert record is not None
    doc = loads(record.value)
    assert (doc["score"], doc["band"], doc["model"]) == (50.0, "watch", model.version)
    assert [r["component"] for r in doc["reasons"]] == ["recency"]


# ---- engagement and the User 360 render --------------------------------------------------------------------------

RENDER_CASES = [
    # Day 9: recency 25 * 0.5 ** (9/7) = 10.25; 19 active days in the window -> frequency 25; 75.29.
    pytest.param(9, "healthy", 75.29, "healthy", "active", id="9-days-quiet"),
    # Day 17: recency 4.65; 11 active days in the window -> 22.92; 67.6: healthy keeps it (>= 65) ...
    pytest.param(17, "healthy", 67.6, "healthy", "lapsed", id="17-days-quiet-stays-healthy"),
    # ... but a user with no band yet needs 70.
    pytest.param(17, "", 67.6, "watch", "lapsed", id="17-days-quiet-no-band-yet"),
    # Day 20: recency 3.45, 8 active days -> 16.67; 60.16.
    pytest.param(20, "healthy", 60.16, "watch", "lapsed", id="20-days-quiet"),
]


@pytest.mark.parametrize(("as_of_day", "stored_band", "score", "band", "engagement"), RENDER_CASES)
def test_render_user(as_of_day: int, stored_band: str, score: float, band: str, engagement: str) -> None:
    user = _state([*_history(), _ticket("o1", "k1", 0, "low"), _nps("n", 6, 0)])
    user.band = stored_band
    user.clock = day_ts(as_of_day)
    assert evaluate(MODEL, "user-1", user, user.clock, "c", MODEL.version) is not None
    profile = render_user("user-1", user, MODEL)
    # The low ticket (support 0.8 -> -2) and NPS 6 (neutral) were not in the sums above.
    assert profile["score"] == pytest.approx(score - 2.0, abs=0.01)
    # Engagement is the lifecycle stage the shard moved the user through (tests/unit/test_engagement.py);
    # a state built by apply() alone has none yet, so it renders as new.
    assert (profile["band"], profile["engagement"]) == (band, "new")
    assert (profile["commercial"], profile["nps"], profile["open_tickets"]) == ("paying", 6, 1)
    assert set(profile["components"]) == set(COMPONENTS)
    assert profile["user_id"] == "user-1"
    assert profile["as_of"] == format_ts(day_ts(as_of_day))


# ---- scenarios through Shard.process ---------------------------------------------------------------------------


def _after_history(extra: Sequence[Event], model: ScoreModel = MODEL) -> tuple[Shard, list[dict[str, Any]]]:
    """The score records `extra` causes for a user whose last record was the healthy 90.04."""
    shard, _ = _run([_history()])
    assert shard.users["user-1"].score == HEALTHY_SCORE
    return shard, _docs(shard.process(extra, ShardConfig(model=model, model_version=model.version)))


def test_history_is_healthy() -> None:
    shard, outputs = _run([_history()])
    last = _docs(outputs)[-1]
    assert (last["score"], last["band"]) == (HEALTHY_SCORE, "healthy")
    assert shard.users["user-1"].score == HEALTHY_SCORE


def test_detractor_nps_drops_the_score_for_sentiment() -> None:
    _, docs = _after_history([_nps("nps-1", 0, 0, hour=13)])
    assert len(docs) == 1
    doc = docs[0]
    assert doc["cause_event_id"] == "nps-1"
    assert doc["previous_score"] == HEALTHY_SCORE
    assert doc["reasons"][0]["component"] == "sentiment"
    # Neutral 0.6 to 0 on a 15 share: -9.
    assert doc["reasons"][0]["delta"] == -9.0
    assert doc["components"]["sentiment"] == 0.0
    assert doc["score"] == pytest.approx(HEALTHY_SCORE - 9.0, abs=0.15)


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
    shard, docs = _after_history(_urgent_burst())
    # Support: 1 -> 1/3 (t1, -6.67), 1/5, 1/7, 1/9: t2 and t3 are within min_delta of t1, t4 is not.
    assert [d["cause_event_id"] for d in docs] == ["t1", "t4"]
    assert all(d["reasons"][0]["component"] == "support" and d["reasons"][0]["delta"] < 0 for d in docs)
    assert docs[-1]["cause_event_id"] == "t4"
    assert docs[-1]["components"]["support"] == pytest.approx(1 / 9, abs=1e-4)
    # Support 10 -> 1.11, and an hour of recency decay: 25 * (1 - 0.5 ** (1 / 168)) = 0.10.
    assert docs[-1]["score"] == pytest.approx(HEALTHY_SCORE - 8.89 - 0.10, abs=0.02)
    assert shard.users["user-1"].open_tickets() == 4


def test_resolving_tickets_raises_the_score() -> None:
    shard, docs = _after_history([*_urgent_burst(), *_resolve_all()])
    low = min(d["score"] for d in docs)
    rising = [d for d in docs if d["cause_event_id"].startswith("r")]
    assert rising, "resolving four urgent tickets must be reported"
    assert all(d["score"] > d["previous_score"] for d in rising)
    assert all(d["reasons"][0]["component"] == "support" and d["reasons"][0]["delta"] > 0 for d in rising)
    assert rising[-1]["cause_event_id"] == "r4"
    assert rising[-1]["components"]["support"] == 1.0
    # Back to the healthy score, less two hours of recency decay.
    assert rising[-1]["score"] == pytest.approx(HEALTHY_SCORE, abs=0.3)
    assert rising[-1]["score"] > low + 8
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
    assert docs == []
    assert shard.users["user-1"].support_load() == 0.0


@pytest.mark.parametrize(
    ("event_type", "stage", "value", "delta"),
    [
        pytest.param("subscription_cancelled", "churned", 0.0, -10.0, id="cancelled"),
        pytest.param("cancellation_requested", "cancel_requested", 0.15, -8.5, id="cancel-requested"),
        pytest.param("subscription_paused", "paused", 0.4, -6.0, id="paused"),
    ],
)
def test_commercial_setback_drops_the_score(event_type: str, stage: str, value: float, delta: float) -> None:
    shard, docs = _after_history([_typed("c1", event_type, 0, hour=13)])
    assert len(docs) == 1
    doc = docs[0]
    assert (doc["cause_event_id"], doc["components"]["commercial"]) == ("c1", value)
    assert doc["reasons"][0] == {"component": "commercial", "delta": delta, "contribution": 10.0 + delta}
    assert doc["score"] == pytest.approx(HEALTHY_SCORE + delta, abs=0.15)
    assert shard.users["user-1"].commercial == stage


@pytest.mark.parametrize(
    ("min_delta", "emitted"),
    [
        pytest.param(0.0, True, id="0"),
        pytest.param(2.0, True, id="default-2"),
        pytest.param(6.5, True, id="6.5-below-the-move"),
        pytest.param(7.0, False, id="7-above-the-move"),
        pytest.param(50.0, False, id="50"),
    ],
)
def test_min_delta_suppresses_small_moves(min_delta: float, emitted: bool) -> None:
    """One urgent ticket moves a healthy user by 6.77 (support -6.67, an hour of recency -0.10), band unchanged."""
    model = ScoreModel(min_delta=min_delta)
    shard, docs = _after_history(_urgent_burst(1), model)
    assert [d["cause_event_id"] for d in docs] == (["t1"] if emitted else [])
    assert shard.users["user-1"].score == (pytest.approx(HEALTHY_SCORE - 6.77, abs=0.01) if emitted else HEALTHY_SCORE)


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
