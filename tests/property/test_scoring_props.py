"""Property tests for operators.scoring and operators.health: ranges, monotonicity, hysteresis, account order."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import assume, given, settings
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
    recency_of,
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
        recency_scale=draw(_finite(0.01, 100.0)),
        frequency_window_days=draw(st.integers(1, 3650)),
        frequency_prior=draw(_finite(0.0, 100.0)),
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
    """Signals as `health.signals` can produce them for this model: a positive expected gap (the lapse prior
    is positive), evidence of at least the prior's weight (positive), a window of at most frequency_window_days
    counted over window + 1 days; no ticket means no load, no subscription event means the visitor stage."""
    active = draw(st.booleans())
    window = draw(st.integers(0, model.frequency_window_days)) if active else 0
    has_tickets, has_commercial = draw(st.booleans()), draw(st.booleans())
    return Signals(
        days_since_active=draw(_finite(0.0, 10_000.0)) if active else None,
        expected_gap_days=draw(_finite(0.01, 1000.0)),
        rhythm_evidence=draw(_finite(0.01, 10_000.0)),
        active_days_window=draw(st.integers(0, window + 1)) if active else 0,
        window_days=window,
        key_features_used=draw(st.integers(0, len(model.key_features))),
        feature_uses=draw(st.integers(0, 10**6)),
        nps_score=draw(st.none() | st.integers(0, 10)),
        nps_age_days=draw(_finite(0.0, 10_000.0)),
        support_load=draw(_finite(0.0, 1e4)) if has_tickets else 0.0,
        commercial=draw(st.sampled_from(STAGES)) if has_commercial else "visitor",
        has_tickets=has_tickets,
        has_commercial=has_commercial,
    )


def _score(model: ScoreModel, s: Signals) -> float:
    return score_of(contributions(model, components(model, s), s.present))


def _present_names(s: Signals) -> set[str]:
    return {name for i, name in enumerate(COMPONENTS) if s.present >> i & 1}


@FAST
@given(data=st.data(), model=models())
def test_components_in_unit_range_and_score_in_0_to_100(data: st.DataObject, model: ScoreModel) -> None:
    s = data.draw(signal_sets(model), label="signals")
    values = components(model, s)
    assert len(values) == len(COMPONENTS)
    assert all(0.0 <= v <= 1.0 for v in values), values
    contribs = contributions(model, values, s.present)
    # The clamp in score_of must not be what keeps the score in range: the plain sum already is.
    total = math.fsum(contribs)
    assert -1e-9 <= total <= 100.0 + 1e-9
    assert 0.0 <= score_of(contribs) <= 100.0
    assert abs(score_of(contribs) - total) <= 0.005 + 1e-9


MONOTONE = [
    # (field, larger value is worse?)  For each field: moving it this way never raises the score (with which
    # components have a signal unchanged).
    ("days_since_active", True),  # for a fixed gap and evidence
    ("active_days_window", False),
    ("window_days", True),  # the same active days over a longer window
    ("expected_gap_days", False),  # the same silence and activity from a user of a slower rhythm
    ("rhythm_evidence", True),  # the surer the rhythm, the less a lateness is forgiven
    ("key_features_used", False),
    ("feature_uses", False),
    ("nps_score", False),
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
        changed = dataclasses.replace(s, **changes)
        # Only the value moves: the same components have a signal either way.
        at_high: dict[str, Any] = {name: high}
        assert changed.present == dataclasses.replace(s, **at_high).present
        return _score(model, changed)

    a, b = score_with(low), score_with(high)
    assert (b <= a) if larger_is_worse else (b >= a)


@FAST
@given(
    model=models(),
    gap=_finite(0.01, 1000.0),
    evidence=_finite(0.01, 10_000.0),
    days=_finite(0.0, 10_000.0),
    more=_finite(0.0, 10_000.0),
)
def test_recency_is_1_within_the_gap_then_falls(
    model: ScoreModel, gap: float, evidence: float, days: float, more: float
) -> None:
    """1 while the silence is within the user's own expected gap; never rising as it goes on."""
    r = recency_of(model, days, gap, evidence)
    assert 0.0 <= r <= 1.0
    if days <= gap:
        assert r == 1.0
    assert recency_of(model, days + more, gap, evidence) <= r
    assert recency_of(model, None, gap, evidence) == 0.0


@FAST
@given(
    model=models(),
    gap=_finite(0.01, 100.0),
    evidence=_finite(0.01, 1000.0),
    lateness=_finite(0.0, 50.0),
    factor=_finite(0.05, 20.0),
)
def test_recency_depends_on_the_silence_in_the_users_own_gaps(
    model: ScoreModel, gap: float, evidence: float, lateness: float, factor: float
) -> None:
    """Personal: the same silence counted in the user's own gaps gives the same recency, whatever the rhythm
    (a weekly user 7 days late is like a daily user 1 day late, for equal evidence)."""
    silence = gap * (1 + lateness)
    a = recency_of(model, silence, gap, evidence)
    b = recency_of(model, silence * factor, gap * factor, evidence)
    assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@FAST
@given(
    model=models(),
    fast=_finite(0.01, 100.0),
    slower=_finite(0.0, 100.0),
    evidence=_finite(0.01, 1000.0),
    days=_finite(0.0, 1000.0),
)
def test_the_same_silence_costs_a_frequent_user_more(
    model: ScoreModel, fast: float, slower: float, evidence: float, days: float
) -> None:
    """A daily user silent N days never has higher recency than a weekly one silent N days; strictly lower once
    the silence is past the faster user's gap, when the slower rhythm is at least twice as long (the faster
    user is then at least twice as late, in their own gaps) and the slower user's recency has not underflowed."""
    slow = fast + slower
    r_fast, r_slow = recency_of(model, days, fast, evidence), recency_of(model, days, slow, evidence)
    assert r_fast <= r_slow
    if days >= 1.01 * fast and slower >= fast and r_slow > 1e-200:
        assert r_fast < r_slow


@FAST
@given(
    model=models(),
    active=st.integers(0, 400),
    window=st.integers(0, 400),
    gap=_finite(0.01, 100.0),
    factor=st.integers(2, 10),
)
def test_frequency_is_relative_to_the_users_own_rhythm(
    model: ScoreModel, active: int, window: int, gap: float, factor: int
) -> None:
    """In 0-1; the same active days over a window `factor` times as long, for a user whose gap is `factor`
    times as long, count the same; and with the prior, no user is judged from nothing (> 0 once active)."""
    s = Signals(0.0, gap, 1.0, active, window, 0, 0, None, 0.0, 0.0, "visitor")
    f = components(model, s)[1]
    assert 0.0 <= f <= 1.0
    scaled = components(model, dataclasses.replace(s, window_days=window * factor, expected_gap_days=gap * factor))[1]
    assert math.isclose(f, scaled, rel_tol=1e-9, abs_tol=1e-12)
    if model.frequency_prior >= 1e-6 or active > 0:
        assert f > 0.0
    # Never active: frequency 0 whatever the counts.
    assert components(model, dataclasses.replace(s, days_since_active=None))[1] == 0.0


# ---- re-normalised weights -------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), model=models())
def test_present_components_follow_the_signals(data: st.DataObject, model: ScoreModel) -> None:
    s = data.draw(signal_sets(model), label="signals")
    expected = {"adoption"}
    if s.days_since_active is not None:
        expected |= {"recency", "frequency"}
    if s.nps_score is not None:
        expected.add("sentiment")
    if s.has_tickets:
        expected.add("support")
    if s.has_commercial:
        expected.add("commercial")
    assert _present_names(s) == expected


@FAST
@given(data=st.data(), model=models())
def test_score_is_the_weighted_mean_over_present_components(data: st.DataObject, model: ScoreModel) -> None:
    """100 * sum(w_i * c_i) / sum(w_i) over the components with a signal, each absent one contributing 0;
    over every configured weight when no present component has any."""
    s = data.draw(signal_sets(model), label="signals")
    values = dict(zip(COMPONENTS, components(model, s), strict=True))
    present = _present_names(s)
    weights = {name: model.weights.get(name, 0.0) for name in COMPONENTS}
    counted = present if math.fsum(weights[n] for n in present) > 0 else set(COMPONENTS)
    total = math.fsum(weights[n] for n in counted)
    expected = {n: (100.0 * (weights[n] / total) * values[n] if n in counted else 0.0) for n in COMPONENTS}
    got = dict(zip(COMPONENTS, contributions(model, tuple(values.values()), s.present), strict=True))
    for name in COMPONENTS:
        assert math.isclose(got[name], expected[name], rel_tol=1e-9, abs_tol=1e-9), name
    assert abs(_score(model, s) - math.fsum(expected.values())) <= 0.005 + 1e-6


@FAST
@given(data=st.data(), model=models(), answer=st.integers(0, 10), age=_finite(0.0, 1000.0))
def test_a_first_nps_answer_joins_and_rescales_the_rest(
    data: st.DataObject, model: ScoreModel, answer: int, age: float
) -> None:
    """Before the first answer sentiment has no points; after it, it has its weight's share of the new total,
    every other present component is rescaled by old total / new total, and the reasons explain the move."""
    s = dataclasses.replace(data.draw(signal_sets(model), label="signals"), nps_score=None)
    t = dataclasses.replace(s, nps_score=answer, nps_age_days=age)
    weights = {name: model.weights.get(name, 0.0) for name in COMPONENTS}
    before_total = math.fsum(weights[n] for n in _present_names(s))
    after_total = before_total + weights["sentiment"]
    assume(before_total > 1e-9)  # else the fallback to all weights (or subnormal arithmetic): not this property
    before = contributions(model, components(model, s), s.present)
    after = contributions(model, components(model, t), t.present)
    i = COMPONENTS.index("sentiment")
    assert before[i] == 0.0
    sentiment = components(model, t)[i]
    assert math.isclose(after[i], 100.0 * weights["sentiment"] * sentiment / after_total, rel_tol=1e-9, abs_tol=1e-9)
    for j, name in enumerate(COMPONENTS):
        if j != i:
            assert math.isclose(after[j], before[j] * before_total / after_total, rel_tol=1e-9, abs_tol=1e-9), name
    # Reasons: exactly the components that moved by at least 0.005, adding up to the move of the score.
    why = reasons(before, after)
    moved = {n for n, a, b in zip(COMPONENTS, after, before, strict=True) if abs(a - b) >= 0.005}
    assert {r["component"] for r in why} == moved
    deltas = [r["delta"] for r in why]
    total = math.fsum(d for d in deltas if isinstance(d, float))
    assert abs(total - (score_of(after) - score_of(before))) <= 6 * 0.005 + 2 * 0.005 + 1e-6


@FAST
@given(data=st.data(), model=models())
def test_reasons_explain_a_change_of_signals_and_of_present_components(data: st.DataObject, model: ScoreModel) -> None:
    """Between any two signal sets (components gaining or losing a signal, values moving), the reasons name
    each component whose points moved, with its new points, and add up to the move of the score."""
    s = data.draw(signal_sets(model), label="before")
    t = data.draw(signal_sets(model), label="after")
    before = contributions(model, components(model, s), s.present)
    after = contributions(model, components(model, t), t.present)
    why = {str(r["component"]): r for r in reasons(before, after)}
    for name, a, b in zip(COMPONENTS, after, before, strict=True):
        if abs(a - b) >= 0.005:
            assert why[name]["delta"] == round(a - b, 2)
            assert why[name]["contribution"] == round(a, 2)
        else:
            assert name not in why
    deltas = [r["delta"] for r in why.values()]
    assert all(isinstance(d, float) for d in deltas)
    total = math.fsum(d for d in deltas if isinstance(d, float))
    assert abs(total - (_score(model, t) - _score(model, s))) <= 6 * 0.005 + 2 * 0.005 + 1e-6


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
    before=st.none() | st.lists(_finite(0.0, 100.0), min_size=7, max_size=7).map(tuple),
    after=st.lists(_finite(0.0, 100.0), min_size=7, max_size=7).map(tuple),
)
def test_reasons_are_sorted_and_account_for_the_move(
    before: tuple[float, ...] | None, after: tuple[float, ...]
) -> None:
    got = reasons(before, after)
    base = before or (0.0,) * len(COMPONENTS)
    deltas = {name: a - b for name, a, b in zip(COMPONENTS, after, base, strict=True)}
    assert {r["component"] for r in got} == {n for n, d in deltas.items() if abs(d) >= 0.005}
    keys = [(-abs(deltas[str(r["component"])]), str(r["component"])) for r in got]
    assert keys == sorted(keys)
    # Dropped deltas and 2-place rounding aside, the reasons add up to the change of the total.
    reported = [r["delta"] for r in got]
    assert all(isinstance(d, float) for d in reported)
    total = math.fsum(d for d in reported if isinstance(d, float))
    assert abs(total - (math.fsum(after) - math.fsum(base))) <= len(COMPONENTS) * 0.005 + 1e-6


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
