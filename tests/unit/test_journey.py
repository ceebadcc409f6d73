"""Unit tests for operators.journey: the journey stage (order, alternatives, exits, late events), JourneySteps
and experiment exposures, NPS segments and the account NPS; the `[journey]` settings. Values worked out by hand."""

from __future__ import annotations

import itertools
import re
import tomllib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigError, load_settings
from operators.health import ERASED, AccountState, MemberUpdate, render_account, render_user
from operators.insights import JourneyStep
from operators.journey import Journey, account_nps, nps_segment, record_exposure, variants_at
from operators.scoring import ScoreModel
from operators.shard import Shard, ShardConfig
from operators.state import UserState
from schemas.codec import decode, loads
from schemas.events import Category, Event
from schemas.outputs import OutputKind, Record
from tests.factories import DAY_MS, ORIGIN, T0, VOCAB, event_bytes, make_event

H = 3_600_000  # an hour in ms
MIN = 60_000
JOURNEY = Journey()
# Events applied as they arrive (no reordering): what a late event beyond the allowed lateness meets.
ARRIVAL = ShardConfig(insights=True)
# Replay: events within the allowed lateness (60 minutes) are applied in event-time order.
REPLAY = ShardConfig(reorder_ms=60 * MIN, insights=True)
README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _ev(n: int | str, type: str, hours: float, user: str = "u", **kw: Any) -> Event:
    return make_event(event_id=f"{user}-{n}", user_id=user, type=type, ts=T0 + int(hours * H), **kw)


def _run(events: Sequence[Event], config: ShardConfig = ARRIVAL) -> tuple[Shard, list[Any]]:
    shard = Shard()
    outputs = list(shard.process(events, config)) + shard.drain(config)
    return shard, outputs


def _lifecycle(outputs: Sequence[Any], field: str, user: str = "u") -> list[dict[str, Any]]:
    docs = [loads(o.value) for o in outputs if isinstance(o, Record) and o.kind is OutputKind.LIFECYCLE]
    return [d for d in docs if d.get("field") == field and d["user_id"] == user]


def _moves(outputs: Sequence[Any]) -> list[tuple[str | None, str, int, float | None]]:
    """(from, to, hours after T0, time_in_previous_stage_s) of each journey record."""
    return [
        (d["from"], d["to"], _hours(d["ts"]), d["time_in_previous_stage_s"]) for d in _lifecycle(outputs, "journey")
    ]


def _hours(iso: str) -> int:
    """Whole hours after T0, read by the standard library rather than the code under test."""
    ms = int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    assert (ms - T0) % H == 0
    return (ms - T0) // H


# --- the rule ---------------------------------------------------------------------------------------------------

NEXT_STAGE_CASES = [
    # (current, since, stage entered by the event, event ts) -> where the user goes (None: stays)
    pytest.param("visitor", 0, "newsletter", 10, "newsletter", id="forward-to-an-alternative"),
    pytest.param("visitor", 0, "paying", 10, "paying", id="forward-skipping-stages"),
    pytest.param("newsletter", 10, "demo_requested", 20, None, id="same-rank-alternative-does-not-replace"),
    pytest.param("demo_requested", 10, "newsletter", 20, None, id="same-rank-either-way"),
    pytest.param("trial", 100, "signed_up", 200, None, id="lower-rank-never-even-when-later"),
    pytest.param("trial", 100, "paying", 50, "paying", id="higher-rank-even-when-older"),
    pytest.param("paying", 100, "paying", 200, None, id="same-stage"),
    pytest.param("paying", 100, "paused", 200, "paused", id="exit"),
    pytest.param("paying", 100, "paused", 100, "paused", id="exit-at-the-same-ms"),
    pytest.param("paying", 100, "paused", 99, None, id="exit-older-than-the-stage"),
    pytest.param("visitor", 0, "churned", 10, "churned", id="exit-from-anywhere"),
    pytest.param("paused", 100, "paying", 150, "paying", id="resume"),
    pytest.param("paused", 100, "paying", 50, None, id="return-older-than-the-exit"),
    pytest.param("churned", 100, "trial", 150, "trial", id="return-at-rejoin-rank"),
    pytest.param("churned", 100, "signed_up", 150, None, id="return-below-rejoin"),
    pytest.param("churned", 100, "newsletter", 150, None, id="newsletter-after-churn"),
    pytest.param("cancel_requested", 100, "churned", 150, "churned", id="exit-to-exit"),
    pytest.param("cancel_requested", 100, "paused", 150, "paused", id="pause-instead-of-cancelling"),
    pytest.param("churned", 100, "cancel_requested", 50, None, id="older-exit"),
    pytest.param("retired", 100, "visitor", 50, "visitor", id="stage-no-longer-configured"),
]


@pytest.mark.parametrize(("current", "since", "stage", "ts", "expected"), NEXT_STAGE_CASES)
def test_next_stage(current: str, since: int, stage: str, ts: int, expected: str | None) -> None:
    assert JOURNEY.next_stage(current, since, stage, ts) == expected


def test_default_ranks_put_the_alternatives_side_by_side() -> None:
    assert JOURNEY.rank == {"visitor": 0, "demo_requested": 1, "newsletter": 1, "signed_up": 2, "trial": 3, "paying": 4}
    assert (JOURNEY.entry, JOURNEY.exit_set) == ("visitor", frozenset({"paused", "cancel_requested", "churned"}))


# --- through a shard, as events arrive -----------------------------------------------------------------------------

SEQUENCE_CASES = [
    pytest.param(
        [("page_view", 0), ("newsletter_subscribed", 1), ("demo_requested", 2), ("signed_up", 5),
         ("trial_started", 29), ("subscribed", 77)],
        [(None, "visitor", 0, None), ("visitor", "newsletter", 1, 3600.0), ("newsletter", "signed_up", 5, 14400.0),
         ("signed_up", "trial", 29, 86400.0), ("trial", "paying", 77, 172800.0)],
        ("paying", 77),
        id="the-funnel-in-order",
    ),
    pytest.param(
        [("trial_started", 0), ("page_view", 1)],
        [(None, "trial", 0, None)],
        ("trial", 0),
        id="first-event-enters-its-own-stage",
    ),
    pytest.param(
        [("page_view", 0), ("demo_requested", 1), ("newsletter_subscribed", 2)],
        [(None, "visitor", 0, None), ("visitor", "demo_requested", 1, 3600.0)],
        ("demo_requested", 1),
        id="one-alternative-per-rank",
    ),
    pytest.param(
        [("subscribed", 0), ("subscription_paused", 24), ("subscription_resumed", 48),
         ("cancellation_requested", 72), ("subscription_cancelled", 96), ("subscribed", 240)],
        [(None, "paying", 0, None), ("paying", "paused", 24, 86400.0), ("paused", "paying", 48, 86400.0),
         ("paying", "cancel_requested", 72, 86400.0), ("cancel_requested", "churned", 96, 86400.0),
         ("churned", "paying", 240, 518400.0)],
        ("paying", 240),
        id="exits-and-returns",
    ),
    pytest.param(
        # Arrival order: the late ones are older than the user's current stage.
        [("signed_up", 10), ("trial_started", 20), ("newsletter_subscribed", 5), ("signed_up", 1),
         ("subscription_paused", 15), ("subscribed", 18), ("subscription_cancelled", 19)],
        [(None, "signed_up", 10, None), ("signed_up", "trial", 20, 36000.0), ("trial", "paying", 20, 0.0)],
        ("paying", 20),
        id="late-events-never-move-back",
    ),
    pytest.param(
        [("subscribed", 0), ("subscription_cancelled", 10), ("subscription_resumed", 5), ("signed_up", 20),
         ("newsletter_subscribed", 21), ("trial_started", 30)],
        [(None, "paying", 0, None), ("paying", "churned", 10, 36000.0), ("churned", "trial", 30, 72000.0)],
        ("trial", 30),
        id="back-from-an-exit-only-later-and-at-rejoin-rank",
    ),
    pytest.param(
        [("page_view", 0), ("subscription_cancelled", 1)],
        [(None, "visitor", 0, None), ("visitor", "churned", 1, 3600.0)],
        ("churned", 1),
        id="exit-straight-from-visitor",
    ),
    pytest.param(
        [("page_view", 0), ("plan_changed", 1), ("seat_added", 2), ("nps_response", 3), ("purchase", 4)],
        [(None, "visitor", 0, None)],
        ("visitor", 0),
        id="other-events-do-not-move-it",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "moves", "final"), SEQUENCE_CASES)
def test_journey_moves_as_events_arrive(
    spec: list[tuple[str, float]], moves: list[tuple[Any, ...]], final: tuple[str, int]
) -> None:
    shard, outputs = _run([_ev(n, kind, hours) for n, (kind, hours) in enumerate(spec)])
    assert _moves(outputs) == moves
    profile = render_user("u", shard.users["u"], ScoreModel())
    assert (profile["journey_stage"], _hours(profile["journey_stage_since"])) == final


def test_journey_records_carry_the_cause_and_leave_commercial_as_it_was() -> None:
    _, outputs = _run([_ev(0, "page_view", 0), _ev(1, "trial_started", 2)])
    (first, second) = _lifecycle(outputs, "journey")
    assert set(second) == {
        "kind", "record_id", "user_id", "field", "from", "to", "ts", "cause_event_id", "time_in_previous_stage_s",
    }  # fmt: skip
    assert (first["cause_event_id"], second["cause_event_id"]) == ("u-0", "u-1")
    assert second["ts"] == "2026-03-02T14:00:00.000Z"
    # The commercial field and its records are unchanged: visitor -> trial, without the journey's extra field.
    (commercial,) = _lifecycle(outputs, "commercial")
    assert (commercial["from"], commercial["to"]) == ("visitor", "trial")
    assert "time_in_previous_stage_s" not in commercial


# Within the allowed lateness, event-time order decides, whatever the arrival order: every permutation of
# these five events (all within 40 minutes) gives the same records and steps.
WITHIN_LATENESS = [
    _ev(0, "page_view", 0),
    _ev(1, "newsletter_subscribed", 10 / 60),
    _ev(2, "demo_requested", 20 / 60),
    _ev(3, "subscription_paused", 30 / 60),
    _ev(4, "subscribed", 40 / 60),
]


def test_arrival_order_within_the_lateness_changes_nothing() -> None:
    _, reference = _run(WITHIN_LATENESS, REPLAY)
    journey = _lifecycle(reference, "journey")
    # visitor at 0; newsletter at 10 min; demo (same rank) ignored; paused at 30; back to paying at 40.
    assert [(d["from"], d["to"], d["time_in_previous_stage_s"]) for d in journey] == [
        (None, "visitor", None),
        ("visitor", "newsletter", 600.0),
        ("newsletter", "paused", 1200.0),
        ("paused", "paying", 600.0),
    ]
    steps = [o for o in reference if isinstance(o, JourneyStep)]
    for order in itertools.permutations(WITHIN_LATENESS):
        _, outputs = _run(order, REPLAY)
        assert _lifecycle(outputs, "journey") == journey
        assert [o for o in outputs if isinstance(o, JourneyStep)] == steps


# `pulse run` without reordering applies events as they arrive; the journey keeps the user's events of the
# allowed lateness (timer_lag_ms here) and folds them in event-time order, so the profile is the replay's.
LIVE = ShardConfig(timer_lag_ms=60 * MIN, insights=True)


def test_live_arrival_order_within_the_lateness_gives_the_replays_profile() -> None:
    replayed, _ = _run(WITHIN_LATENESS, REPLAY)
    expected = render_user("u", replayed.users["u"], ScoreModel())
    assert (expected["journey_stage"], expected["journey_stage_since"]) == ("paying", "2026-03-02T12:40:00.000Z")
    for order in itertools.permutations(WITHIN_LATENESS):
        shard, outputs = _run(order, LIVE)
        profile = render_user("u", shard.users["u"], ScoreModel())
        assert (profile["journey_stage"], profile["journey_stage_since"]) == ("paying", "2026-03-02T12:40:00.000Z")
        # The last journey record says where the user is, whatever the records on the way.
        assert _lifecycle(outputs, "journey")[-1]["to"] == "paying"


LIVE_CASES = [
    # (arrival order as (type, minutes)) -> (stage, since in minutes after T0), as the replay has it
    pytest.param([("page_view", 0.25), ("page_view", 0)], ("visitor", 0), id="an-earlier-first-event"),
    pytest.param([("demo_requested", 20), ("page_view", 0), ("newsletter_subscribed", 10)], ("newsletter", 10),
                 id="the-first-alternative-by-event-time"),
    pytest.param([("trial_started", 30), ("subscription_cancelled", 10), ("signed_up", 0)], ("trial", 30),
                 id="cancelled-then-a-new-trial"),
    pytest.param([("signed_up", 30), ("subscription_cancelled", 10)], ("churned", 10),
                 id="a-sign-up-after-a-churn-changes-nothing"),
    # Two hours late: beyond the lateness, it meets the stage the user is at and cannot move them back.
    pytest.param([("page_view", 0), ("trial_started", 180), ("signed_up", 60)], ("trial", 180),
                 id="beyond-the-lateness-never-back"),
    pytest.param([("page_view", 0), ("trial_started", 180), ("subscription_cancelled", 60)], ("trial", 180),
                 id="beyond-the-lateness-an-older-exit-is-ignored"),
    pytest.param([("page_view", 0), ("trial_started", 180), ("subscribed", 60)], ("paying", 180),
                 id="beyond-the-lateness-forward-as-of-the-stage-it-leaves"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "expected"), LIVE_CASES)
def test_live_journey(spec: list[tuple[str, float]], expected: tuple[str, int]) -> None:
    shard, _ = _run([_ev(n, kind, minutes / 60) for n, (kind, minutes) in enumerate(spec)], LIVE)
    user = shard.users["u"]
    assert (user.journey, (user.journey_ts - T0) / MIN) == expected


# --- JourneySteps and experiment exposures ---------------------------------------------------------------------


def _exposure(n: int | str, hours: float, experiment: Any, variant: Any = None) -> Event:
    props = {"experiment": experiment} if variant is None else {"experiment": experiment, "variant": variant}
    return _ev(n, "experiment_exposed", hours, properties=props)


def test_journey_steps_carry_the_variants_seen_by_then() -> None:
    events = [
        _ev("e0", "page_view", 0),
        _exposure("x1", 1, "pricing_page", "b"),
        _exposure("x2", 2, "onboarding", "a"),
        _exposure("x3", 1.5, "pricing_page", "a"),  # later than b's exposure: b stays
        _ev("e3", "signed_up", 3),
        _exposure("x4", 0.5, "pricing_page", "c"),  # earlier than b's (arrives late): the first exposure wins
        _ev("e5", "subscribed", 4),
        _exposure("x6", 9, "checkout", "x"),  # after every step
    ]
    shard, outputs = _run(events)
    steps = [o for o in outputs if isinstance(o, JourneyStep)]
    assert steps == [
        JourneyStep("u", "visitor", T0, None, -1, (), 1, "u-e0"),
        JourneyStep(
            "u", "signed_up", T0 + 3 * H, "visitor", T0, (("onboarding", "a"), ("pricing_page", "b")), 5, "u-e3"
        ),
        JourneyStep(
            "u", "paying", T0 + 4 * H, "signed_up", T0 + 3 * H, (("onboarding", "a"), ("pricing_page", "c")), 7, "u-e5"
        ),
    ]
    user = shard.users["u"]
    assert user.experiments == {
        "pricing_page": (T0 + H // 2, "c"),
        "onboarding": (T0 + 2 * H, "a"),
        "checkout": (T0 + 9 * H, "x"),
    }
    assert user.counts[Category.OTHER] == 5  # exposures count as "other", never as activity
    assert user.active_day_count == 1


def test_no_steps_without_the_insights_stage() -> None:
    _, outputs = _run([_ev(0, "page_view", 0), _ev(1, "signed_up", 1)], ShardConfig())
    assert not any(isinstance(o, JourneyStep) for o in outputs)
    assert len(_lifecycle(outputs, "journey")) == 2  # the lifecycle records are there all the same


VARIANTS_AT_CASES = [
    pytest.param(T0 - 1, (), id="before-any"),
    pytest.param(T0, (("b_test", "on"),), id="at-the-exposure"),
    pytest.param(T0 + H, (("a_test", "x"), ("b_test", "on")), id="sorted-by-experiment"),
]


@pytest.mark.parametrize(("ts", "expected"), VARIANTS_AT_CASES)
def test_variants_at(ts: int, expected: tuple[tuple[str, str], ...]) -> None:
    user = UserState(T0)
    user.experiments = {"b_test": (T0, "on"), "a_test": (T0 + H, "x")}
    assert variants_at(user, ts) == expected


EXPOSURE_CASES = [
    pytest.param({"experiment": "pricing_page", "variant": "b"}, {"pricing_page": (T0, "b")}, id="kept"),
    pytest.param({"experiment": "other", "variant": "b"}, None, id="untracked-experiment-skipped"),
    pytest.param({"experiment": "pricing_page"}, None, id="no-variant"),
    pytest.param({"variant": "b"}, None, id="no-experiment"),
    pytest.param({"experiment": "pricing_page", "variant": 2}, None, id="variant-not-a-name"),
    pytest.param(None, None, id="no-properties"),
]


@pytest.mark.parametrize(("props", "expected"), EXPOSURE_CASES)
def test_record_exposure(props: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    user = UserState(T0)
    record_exposure(user, make_event(type="experiment_exposed", properties=props))
    assert user.experiments == expected


DECODE_CASES = [
    pytest.param({"experiment": "pricing_page", "variant": "b"}, {"experiment": "pricing_page", "variant": "b"}, {},
                 id="tracked"),
    pytest.param({"experiment": "onboarding.v2:step-1", "variant": "B_2"},
                 {"experiment": "onboarding.v2:step-1", "variant": "B_2"}, {}, id="pattern-punctuation"),
    pytest.param({"experiment": "carl@x.com", "variant": "b"}, {"experiment": "other", "variant": "b"},
                 {"experiment": 1}, id="email-as-experiment"),
    pytest.param({"experiment": "pricing_page", "variant": "Carl Smith"},
                 {"experiment": "pricing_page", "variant": "other"}, {"variant": 1}, id="free-text-variant"),
    pytest.param({"experiment": 7, "variant": "b"}, {"experiment": "other", "variant": "b"}, {"experiment": 1},
                 id="number"),
    pytest.param({"experiment": "pricing_page", "variant": "b", "email": "a@b.c"},
                 {"experiment": "pricing_page", "variant": "b"}, {}, id="pii-dropped"),
]  # fmt: skip


@pytest.mark.parametrize(("props", "kept", "counted"), DECODE_CASES)
def test_experiment_names_follow_the_tracking_plan(
    props: dict[str, Any], kept: dict[str, Any], counted: dict[str, int]
) -> None:
    untracked: Counter[str] = Counter()
    event = decode(event_bytes(type="experiment_exposed", properties=props), ORIGIN, VOCAB, untracked=untracked)
    assert isinstance(event, Event)
    assert (event.type, event.category, event.properties) == ("experiment_exposed", Category.OTHER, kept)
    assert dict(untracked) == counted


# --- NPS segments -----------------------------------------------------------------------------------------------

SEGMENT_CASES = [(-1, None), (0, "detractor"), (6, "detractor"), (7, "passive"), (8, "passive"), (9, "promoter"),
                 (10, "promoter")]  # fmt: skip


@pytest.mark.parametrize(("score", "segment"), SEGMENT_CASES)
def test_nps_segment_boundaries(score: int, segment: str | None) -> None:
    assert nps_segment(score) == segment


def test_a_segment_change_is_a_lifecycle_record() -> None:
    answers = [(9, 0), (10, 1), (8, 2), (7, 3), (10, 1.5), (6, 4), (9, 5)]  # (score, hours); (10, 1.5) is late
    events = [_ev(n, "nps_response", hours, properties={"score": s}) for n, (s, hours) in enumerate(answers)]
    shard, outputs = _run(events)
    records = _lifecycle(outputs, "nps_segment")
    assert [(d["from"], d["to"], _hours(d["ts"]), d["cause_event_id"]) for d in records] == [
        (None, "promoter", 0, "u-0"),
        ("promoter", "passive", 2, "u-2"),
        ("passive", "detractor", 4, "u-5"),
        ("detractor", "promoter", 5, "u-6"),
    ]
    profile = render_user("u", shard.users["u"], ScoreModel())
    assert (profile["nps"], profile["nps_segment"]) == (9, "promoter")


def test_no_answer_no_segment() -> None:
    shard, outputs = _run([_ev(0, "page_view", 0)])
    assert render_user("u", shard.users["u"], ScoreModel())["nps_segment"] is None
    assert _lifecycle(outputs, "nps_segment") == []


# --- account NPS ------------------------------------------------------------------------------------------------

OLD = 180 * DAY_MS
ACCOUNT_NPS_CASES = [
    pytest.param({}, (None, 0), id="no-answers"),
    pytest.param({"a": (T0, 10), "b": (T0, 9), "c": (T0, 8), "d": (T0, 6)}, (25.0, 4), id="2-promoters-1-detractor"),
    pytest.param({"a": (T0, 9), "b": (T0, 7), "c": (T0, 7)}, (33.3, 3), id="rounded"),
    pytest.param({"a": (T0, 0), "b": (T0, 1), "c": (T0, 9)}, (-33.3, 3), id="negative"),
    pytest.param(
        {"a": (T0 - OLD, 10), "b": (T0 - OLD - 1, 0), "c": (T0 - DAY_MS, 3)}, (0.0, 2), id="older-than-180-days-out"
    ),
    pytest.param({"a": (T0 - 200 * DAY_MS, 10)}, (None, 0), id="only-old-answers"),
]


@pytest.mark.parametrize(("answers", "expected"), ACCOUNT_NPS_CASES)
def test_account_nps(answers: dict[str, tuple[int, int]], expected: tuple[float | None, int]) -> None:
    figures = account_nps(answers, T0)
    assert (figures["nps"], figures["nps_responses"]) == expected


def _member(user: str, ts: int, nps: tuple[int, int] | None, seq: int = 1, change: str = "") -> MemberUpdate:
    nps_ts, score = nps if nps is not None else (-1, -1)
    return MemberUpdate(
        "acct", user, ts, 60.0, "watch", ts, "paying", -1, None, f"{user}-{ts}", seq, change,
        nps_score=score, nps_ts=nps_ts,
    )  # fmt: skip


def test_account_profile_counts_members_latest_answers_of_the_last_180_days() -> None:
    account = AccountState()
    model = ScoreModel()

    def figures() -> tuple[Any, Any]:
        profile = render_account("acct", account, model)
        return profile["nps"], profile["nps_responses"]

    account.apply(_member("u1", T0, (T0 - 10 * DAY_MS, 10)))
    assert figures() == (100.0, 1)
    account.apply(_member("u2", T0 + DAY_MS, (T0 - 200 * DAY_MS, 0)))  # 201 days before the account's clock
    assert figures() == (100.0, 1)
    account.apply(_member("u3", T0 + 2 * DAY_MS, (T0 + 2 * DAY_MS, 3)))
    assert figures() == (0.0, 2)
    account.apply(_member("u1", T0 - DAY_MS, (T0 - 30 * DAY_MS, 2), seq=0))  # stale: an older answer
    assert figures() == (0.0, 2)
    account.apply(_member("u3", T0 + 3 * DAY_MS, None, seq=2, change=ERASED))
    assert figures() == (100.0, 1)
    # 181 days after T0, u1's answer (10 days before T0) is out of the window too.
    account.apply(_member("u2", T0 + 181 * DAY_MS, None, seq=2))
    assert figures() == (None, 0)


def test_an_nps_answer_reaches_the_account() -> None:
    _, outputs = _run([_ev(0, "page_view", 0), _ev(1, "nps_response", 1, properties={"score": 7})])
    updates = [o for o in outputs if isinstance(o, MemberUpdate)]
    assert (updates[-1].nps_score, updates[-1].nps_ts, updates[-1].cause) == (7, T0 + H, "u-1")


# --- settings ---------------------------------------------------------------------------------------------------


def test_a_custom_journey_loads(tmp_path: Path) -> None:
    path = tmp_path / "pulse.toml"
    path.write_text(
        '[journey]\nstages = ["lead", "mql | sql", "customer"]\nexits = ["lost"]\nrejoin = "customer"\n'
        '[journey.events]\nsigned_up = "mql"\ndemo_requested = "sql"\nsubscribed = "customer"\n'
        'subscription_cancelled = "lost"\n',
        encoding="utf-8",
    )
    journey = load_settings(path, env={}).journey
    assert journey.rank == {"lead": 0, "mql": 1, "sql": 1, "customer": 2}
    assert (journey.entry, journey.exit_set) == ("lead", frozenset({"lost"}))
    assert load_settings(path, env={}).shard_config(live=False).journey == journey


def test_the_environment_overrides_the_events() -> None:
    env = {"PULSE_JOURNEY_EVENTS": "signed_up=signed_up, purchase=paying"}
    assert load_settings(None, env=env).journey.events == {"signed_up": "signed_up", "purchase": "paying"}


BAD_JOURNEYS = [
    pytest.param('events = { signed_up = "customer" }', "neither a stage nor an exit", id="unknown-stage"),
    pytest.param('rejoin = "churned"', "rejoin must be one of the stages", id="rejoin-is-an-exit"),
    pytest.param('exits = ["paused", "trial"]', "named twice", id="stage-and-exit"),
    pytest.param('stages = ["visitor|lead", "paying"]', "the first stage", id="alternatives-first"),
    pytest.param("stages = []", "at least one stage", id="no-stages"),
    pytest.param('stages = ["visitor", "paying customer"]', "does not match", id="bad-name"),
    pytest.param('events = { webinar_attended = "trial" }', "not in the vocabulary", id="unknown-event-type"),
    pytest.param("events = { signed_up = 3 }", "expected dict", id="not-a-name"),
]


@pytest.mark.parametrize(("line", "message"), BAD_JOURNEYS)
def test_bad_journeys_stop_at_load(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "pulse.toml"
    path.write_text(f"[journey]\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path, env={})


def test_the_readme_documents_every_journey_key() -> None:
    block = re.findall(r"```toml\n(.*?)```", README, re.S)[0]
    documented = tomllib.loads(block)["journey"]
    assert set(documented) == {"stages", "exits", "rejoin", "events"}
    shown = Journey(tuple(documented["stages"]), tuple(documented["exits"]), documented["events"], documented["rejoin"])
    assert shown == JOURNEY


def test_an_access_request_is_told_the_journey_and_the_exposures() -> None:
    events = [_ev(0, "signed_up", 0), _exposure(1, 2, "pricing_page", "b"), _ev(2, "access_requested", 3)]
    _, outputs = _run(events)
    (export,) = [loads(o.value) for o in outputs if isinstance(o, Record) and o.kind is OutputKind.ACCESS]
    signals = export["signals"]
    assert (signals["journey_stage"], signals["journey_stage_since"]) == ("signed_up", "2026-03-02T12:00:00.000Z")
    assert signals["experiments"] == {"pricing_page": {"variant": "b", "first_exposed": "2026-03-02T14:00:00.000Z"}}
    assert export["profile"]["journey_stage"] == "signed_up"
