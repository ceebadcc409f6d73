"""Property tests for operators.scoring and operators.health: ranges, monotonicity, hysteresis, account order."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.health import AccountState, MemberUpdate
from operators.scoring import (
    COMPONENTS,
    Band,
    ScoreModel,
    Signals,
    components,
    contributions,
    next_band,
    reasons,
    score_of,
)
from tests.factories import DAY_MS, T0

FAST = settings(max_examples=150, deadline=None)
STAGES = ["visitor", "signed_up", "trial", "paying", "paused", "cancel_requested", "churned", "made_up"]
BANDS = [None, Band.HEALTHY, Band.WATCH, Band.AT_RISK]


def _finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def models(draw: st.DrawFn) -> ScoreModel:
    """Any valid model: non-negative finite weights (not all zero), positive scales, ordered thresholds."""
    names = draw(st.lists(st.sampled_from(COMPONENTS), min_size=1, unique=True))
    weights = {name: draw(_finite(0.0, 1e6)) for name in names}
    if sum(weights.values()) <= 0:
        weights[names[0]] = 1.0
    at_risk_enter, at_risk_leave, healthy_leave, healthy_enter = sorted(
        draw(st.lists(_finite(0.0, 100.0), min_size=4, max_size=4))
    )
    return ScoreModel(
        weights=weights,
        key_features=tuple(f"f{i}" for i in range(draw(st.integers(0, 8)))),
        recency_half_life_days=draw(_finite(0.01, 365.0)),
        frequency_target_days=draw(st.integers(1, 28)),
        depth_target=draw(st.integers(1, 1000)),
        nps_half_life_days=draw(_finite(0.01, 3650.0)),
        neutral_sentiment=draw(_finite(0.0, 1.0)),
        support_load_scale=draw(_finite(0.01, 100.0)),
        healthy_enter=healthy_enter,
        healthy_leave=healthy_leave,
        at_risk_enter=at_risk_enter,
        at_risk_leave=at_risk_leave,
        min_delta=draw(_finite(0.0, 20.0)),
    )


@st.composite
def signal_sets(draw: st.DrawFn, model: ScoreModel) -> Signals:
    """Signals as `health.signals` can produce them for this model."""
    return Signals(
        days_since_active=draw(st.none() | _finite(0.0, 10_000.0)),
        active_days_28=draw(st.integers(0, 28)),
        key_features_used=draw(st.integers(0, len(model.key_features))),
        feature_uses=draw(st.integers(0, 10**6)),
        nps_score=draw(st.none() | st.integers(0, 10)),
        nps_age_days=draw(_finite(0.0, 10_000.0)),
        support_load=draw(_finite(0.0, 1e4)),
        commercial=draw(st.sampled_from(STAGES)),
    )


@FAST
@given(data=st.data(), model=models())
def test_components_in_unit_range_and_score_in_0_to_100(data: st.DataObject, model: ScoreModel) -> None:
    s = data.draw(signal_sets(model), label="signals")
    values = components(model, s)
    assert len(values) == len(COMPONENTS)
    assert all(0.0 <= v <= 1.0 for v in values), values
    contribs = contributions(model, values)
    # The clamp in score_of must not be what keeps the score in range: the plain sum already is.
    total = math.fsum(contribs)
    assert -1e-9 <= total <= 100.0 + 1e-9
    assert 0.0 <= score_of(contribs) <= 100.0
    assert abs(score_of(contribs) - total) <= 0.005 + 1e-9


MONOTONE = [
    # (field, later value is worse?)  For each field: moving it this way never raises the score.
    ("days_since_active", True),
    ("active_days_28", False),
    ("key_features_used", False),
    ("feature_uses", False),
    ("support_load", True),
]


@FAST
@given(data=st.data(), model=models(), which=st.sampled_from(MONOTONE))
def test_score_is_monotone_in_each_signal(data: st.DataObject, model: ScoreModel, which: tuple[str, bool]) -> None:
    name, larger_is_worse = which
    s = data.draw(signal_sets(model), label="signals")
    t = data.draw(signal_sets(model), label="other")
    low, high = sorted([getattr(s, name) or 0, getattr(t, name) or 0])

    def score_with(value: float) -> float:
        changes: dict[str, Any] = {name: value}
        return score_of(contributions(model, components(model, dataclasses.replace(s, **changes))))

    a, b = score_with(low), score_with(high)
    assert (b <= a) if larger_is_worse else (b >= a)


@FAST
@given(model=models(), current=st.sampled_from(BANDS), score=_finite(0.0, 100.0))
def test_next_band_respects_the_thresholds(model: ScoreModel, current: Band | None, score: float) -> None:
    band = next_band(model, current, score)
    if band is Band.HEALTHY:
        assert score >= model.healthy_leave
        assert score >= model.at_risk_enter
    if band is Band.AT_RISK:
        assert score < model.at_risk_leave
        assert score < model.healthy_enter
    if score >= model.healthy_enter:
        assert band is Band.HEALTHY
    if score < model.at_risk_enter:
        assert band is Band.AT_RISK
    if current is None or current is Band.WATCH:
        assert band is next_band(model, None, score)
    # Hysteresis, not flapping: the same score again keeps the band it just gave.
    assert next_band(model, band, score) is band


@FAST
@given(
    before=st.none() | st.lists(_finite(0.0, 100.0), min_size=6, max_size=6).map(tuple),
    after=st.lists(_finite(0.0, 100.0), min_size=6, max_size=6).map(tuple),
)
def test_reasons_are_sorted_and_account_for_the_move(
    before: tuple[float, ...] | None, after: tuple[float, ...]
) -> None:
    got = reasons(before, after)
    base = before or (0.0,) * 6
    deltas = {name: a - b for name, a, b in zip(COMPONENTS, after, base, strict=True)}
    assert {r["component"] for r in got} == {n for n, d in deltas.items() if abs(d) >= 0.005}
    keys = [(-abs(deltas[str(r["component"])]), str(r["component"])) for r in got]
    assert keys == sorted(keys)
    # Dropped deltas and 2-place rounding aside, the reasons add up to the change of the total.
    reported = [r["delta"] for r in got]
    assert all(isinstance(d, float) for d in reported)
    total = math.fsum(d for d in reported if isinstance(d, float))
    assert abs(total - (math.fsum(after) - math.fsum(base))) <= 6 * 0.005 + 1e-6


# ---- AccountState.apply is order-independent ------------------------------------------------------------------


@st.composite
def member_updates(draw: st.DrawFn) -> list[MemberUpdate]:
    """Updates as user shards send them: per member strictly increasing ts (distinct), a last_active that never
    goes back, always scored; team events with unique causes; commercial stamps that may tie across members."""
    updates: list[MemberUpdate] = []
    for m in range(draw(st.integers(1, 4))):
        steps = draw(st.lists(st.integers(1, 3 * DAY_MS), min_size=1, max_size=6))
        ts, last_active = T0 + draw(st.integers(-40 * DAY_MS, 0)), -1
        for i, step in enumerate(steps):
            ts += step
            if draw(st.booleans()):
                last_active = ts
            team = draw(st.none() | st.sampled_from(["seat_added", "seat_removed", "admin_changed"]))
            commercial_ts = draw(st.sampled_from([-1, T0 - 5 * DAY_MS, T0 - DAY_MS, T0]))
            updates.append(
                MemberUpdate(
                    account_id="acct-1",
                    user_id=f"u{m}",
                    ts=ts,
                    score=draw(_finite(0.0, 100.0)),
                    band=draw(st.sampled_from(["healthy", "watch", "at_risk"])),
                    last_active=last_active,
                    commercial=draw(st.sampled_from(STAGES)) if commercial_ts >= 0 else "visitor",
                    commercial_ts=commercial_ts,
                    team_event=team,
                    cause=f"u{m}-e{i}",
                    seq=i,
                )
            )
    return updates


def _apply_all(updates: list[MemberUpdate]) -> AccountState:
    account = AccountState()
    for u in updates:
        account.apply(u)
    return account


@FAST
@given(data=st.data(), updates=member_updates())
def test_account_apply_is_order_independent(data: st.DataObject, updates: list[MemberUpdate]) -> None:
    shuffled = data.draw(st.permutations(updates), label="order")
    # A re-sent update (at-least-once delivery) changes nothing either.
    resent = data.draw(st.lists(st.sampled_from(updates), max_size=3), label="re-sent")
    expected, actual = _apply_all(updates), _apply_all([*shuffled, *resent])
    assert actual.members == expected.members
    assert actual.team == expected.team
    assert (actual.commercial, actual.commercial_ts, actual.clock) == (
        expected.commercial,
        expected.commercial_ts,
        expected.clock,
    )
    as_of = max(u.ts for u in updates)
    (values, facts), (expected_values, expected_facts) = (
        actual.component_values(as_of),
        expected.component_values(as_of),
    )
    assert facts == expected_facts
    assert values == expected_values  # exact: the mean of member scores is an fsum
    # And what each member holds is its newest update.
    for user_id, (ts, _, score, band, _) in expected.members.items():
        newest = max((u for u in updates if u.user_id == user_id), key=lambda u: u.ts)
        assert (ts, score, band) == (newest.ts, newest.score, newest.band)
