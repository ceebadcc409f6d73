"""Unit tests for operators.scoring: component values, weighting, bands with hysteresis, reasons, model version."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from operators.scoring import (
    ALL_PRESENT,
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

MODEL = ScoreModel()
H, W, R = Band.HEALTHY, Band.WATCH, Band.AT_RISK

# A middling user with a signal for every component (so the default weights 25/25/15/15/10/10 apply as they
# are), worked out by hand: a 4-day rhythm resting on 4 gaps, active today, 2 active days in a 12-day window.
# recency: active today, late = 0 -> 1.0 -> 25
# frequency: (2 + 0.5*1) / (1 + 12/4 + 1) = 2.5/5 = 0.5 -> 12.5
# adoption 0.7*3/6 + 0.3*25/50 = 0.5 -> 7.5; sentiment NPS 6 today = 0.6 -> 9; support 1/(1+2/2) = 0.5 -> 5;
# commercial paying 1.0 -> 10; total 69.0.
BASE = Signals(
    days_since_active=0.0,
    expected_gap_days=4.0,
    rhythm_evidence=4.0,
    active_days_window=2,
    window_days=12,
    key_features_used=3,
    feature_uses=25,
    nps_score=6,
    nps_age_days=0.0,
    support_load=2.0,
    commercial="paying",
    has_tickets=True,
    has_commercial=True,
)


def _mask(*names: str) -> int:
    """A `present` bitmask spelled out by component names: bit i is COMPONENTS[i]."""
    return sum(1 << COMPONENTS.index(name) for name in names)


def _signals(**changes: Any) -> Signals:
    return dataclasses.replace(BASE, **changes)


def _component(model: ScoreModel, s: Signals, name: str) -> float:
    return components(model, s)[COMPONENTS.index(name)]


COMPONENT_CASES = [
    # formula changed: personal recency/frequency (issue #6). recency: 1 within the user's own gap g, then
    # (1 + late/k)^-k with late = (days - g) / (g * recency_scale) and k = rhythm_evidence. BASE: g = 4, k = 4.
    pytest.param({}, {"days_since_active": None}, "recency", 0.0, id="recency-never-active"),
    pytest.param({}, {"days_since_active": 0.0}, "recency", 1.0, id="recency-today"),
    pytest.param({}, {"days_since_active": 3.0}, "recency", 1.0, id="recency-within-own-gap"),
    pytest.param({}, {"days_since_active": 4.0}, "recency", 1.0, id="recency-exactly-one-gap"),
    # late = (8-4)/4 = 1, k = 4 -> (1 + 1/4)^-4 = 0.8^4 = 0.4096
    pytest.param({}, {"days_since_active": 8.0}, "recency", 0.4096, id="recency-one-gap-late"),
    # late = (12-4)/4 = 2, k = 4 -> (1 + 2/4)^-4 = (2/3)^4 = 16/81
    pytest.param({}, {"days_since_active": 12.0}, "recency", 16 / 81, id="recency-two-gaps-late"),
    # one active day (k = 1) is gentle: late = 1 -> 1/(1+1) = 0.5
    pytest.param({}, {"days_since_active": 8.0, "rhythm_evidence": 1.0}, "recency", 0.5, id="recency-k1-gentle"),
    # late = 2, k = 2 -> (1 + 2/2)^-2 = 0.25
    pytest.param({}, {"days_since_active": 12.0, "rhythm_evidence": 2.0}, "recency", 0.25, id="recency-k2"),
    # the same silence is on time for a weekly user: 8 days, g = 8 -> late 0 -> 1
    pytest.param({}, {"days_since_active": 8.0, "expected_gap_days": 8.0}, "recency", 1.0, id="recency-weekly-8d"),
    # recency_scale 2: late = (12-4)/(4*2) = 1, k = 4 -> 0.8^4 = 0.4096
    pytest.param({"recency_scale": 2.0}, {"days_since_active": 12.0}, "recency", 0.4096, id="recency-scale-2"),
    # formula changed: personal recency/frequency (issue #6). frequency: (active + 0.5*prior) / (1 + window/g +
    # prior), capped at 1. BASE: window 12, g = 4, prior 1 -> denominator 1 + 3 + 1 = 5.
    pytest.param({}, {"days_since_active": None}, "frequency", 0.0, id="frequency-never-active"),
    pytest.param({}, {"active_days_window": 0}, "frequency", 0.1, id="frequency-none-is-prior-half-day"),
    pytest.param({}, {"active_days_window": 2}, "frequency", 0.5, id="frequency-half-the-rhythm"),
    # on rhythm: 4 active days, 1 + 12/4 = 4 expected -> 4.5/5 = 0.9 (the prior pulls towards 1/2)
    pytest.param({}, {"active_days_window": 4}, "frequency", 0.9, id="frequency-on-rhythm"),
    pytest.param({}, {"active_days_window": 5}, "frequency", 1.0, id="frequency-capped-above-rhythm"),
    pytest.param({}, {"active_days_window": 13}, "frequency", 1.0, id="frequency-every-day-capped"),
    # no prior: 2/4 = 0.5, 4/4 = 1
    pytest.param({"frequency_prior": 0.0}, {"active_days_window": 2}, "frequency", 0.5, id="frequency-no-prior-half"),
    pytest.param({"frequency_prior": 0.0}, {"active_days_window": 4}, "frequency", 1.0, id="frequency-no-prior-on"),
    # prior 3: (0 + 1.5) / (4 + 3) = 3/14
    pytest.param({"frequency_prior": 3.0}, {"active_days_window": 0}, "frequency", 3 / 14, id="frequency-prior-3"),
    # first day: window 0, g = 7 -> (1 + 0.5) / (1 + 0 + 1) = 0.75: promising, not proof
    pytest.param(
        {},
        {"active_days_window": 1, "window_days": 0, "expected_gap_days": 7.0},
        "frequency",
        0.75,
        id="frequency-first-day",
    ),
    # daily rhythm, half the days: (14 + 0.5) / (1 + 27/1 + 1) = 14.5/29 = 0.5
    pytest.param(
        {},
        {"active_days_window": 14, "window_days": 27, "expected_gap_days": 1.0},
        "frequency",
        0.5,
        id="frequency-daily-half",
    ),
    # adoption: 0.7 breadth (key features of 6) + 0.3 depth (uses of 50, capped)
    pytest.param({}, {"key_features_used": 0, "feature_uses": 0}, "adoption", 0.0, id="adoption-none"),
    pytest.param({}, {"key_features_used": 6, "feature_uses": 0}, "adoption", 0.7, id="adoption-all-breadth"),
    pytest.param({}, {"key_features_used": 0, "feature_uses": 50}, "adoption", 0.3, id="adoption-all-depth"),
    pytest.param({}, {"key_features_used": 3, "feature_uses": 25}, "adoption", 0.5, id="adoption-half-and-half"),
    pytest.param({}, {"key_features_used": 6, "feature_uses": 5000}, "adoption", 1.0, id="adoption-depth-capped"),
    pytest.param(
        {"key_features": ("a", "b")},
        {"key_features_used": 1, "feature_uses": 0},
        "adoption",
        0.35,
        id="adoption-2-keys",
    ),
    pytest.param({"key_features": ()}, {"key_features_used": 0, "feature_uses": 50}, "adoption", 0.3, id="no-key-list"),
    # sentiment: NPS/10, decaying toward neutral 0.6 with a 90-day half-life
    pytest.param({}, {"nps_score": None}, "sentiment", 0.6, id="sentiment-no-answer-is-neutral"),
    pytest.param({}, {"nps_score": 0, "nps_age_days": 0.0}, "sentiment", 0.0, id="sentiment-fresh-detractor"),
    pytest.param({}, {"nps_score": 10, "nps_age_days": 0.0}, "sentiment", 1.0, id="sentiment-fresh-promoter"),
    pytest.param({}, {"nps_score": 0, "nps_age_days": 90.0}, "sentiment", 0.3, id="sentiment-detractor-1-half-life"),
    pytest.param({}, {"nps_score": 0, "nps_age_days": 180.0}, "sentiment", 0.45, id="sentiment-detractor-2-half-lives"),
    pytest.param({}, {"nps_score": 10, "nps_age_days": 90.0}, "sentiment", 0.8, id="sentiment-promoter-1-half-life"),
    pytest.param({}, {"nps_score": 6, "nps_age_days": 45.0}, "sentiment", 0.6, id="sentiment-neutral-answer-stays"),
    pytest.param({}, {"nps_score": 0, "nps_age_days": 3650.0}, "sentiment", 0.6, id="sentiment-old-answer-forgotten"),
    pytest.param(
        {"neutral_sentiment": 0.5}, {"nps_score": None}, "sentiment", 0.5, id="sentiment-custom-neutral-no-answer"
    ),
    # support: 1 / (1 + load / 2)
    pytest.param({}, {"support_load": 0.0}, "support", 1.0, id="support-no-tickets"),
    pytest.param({}, {"support_load": 0.5}, "support", 0.8, id="support-one-low"),
    pytest.param({}, {"support_load": 2.0}, "support", 0.5, id="support-at-scale-is-half"),
    pytest.param({}, {"support_load": 4.0}, "support", 1 / 3, id="support-one-urgent"),
    pytest.param({}, {"support_load": 6.0}, "support", 0.25, id="support-three-normal-scales"),
    pytest.param({"support_load_scale": 4.0}, {"support_load": 4.0}, "support", 0.5, id="support-custom-scale"),
    # commercial: a fixed value per stage, spelled out here independently of COMMERCIAL_VALUE
    pytest.param({}, {"commercial": "visitor"}, "commercial", 0.5, id="commercial-visitor"),
    pytest.param({}, {"commercial": "signed_up"}, "commercial", 0.6, id="commercial-signed-up"),
    pytest.param({}, {"commercial": "trial"}, "commercial", 0.7, id="commercial-trial"),
    pytest.param({}, {"commercial": "paying"}, "commercial", 1.0, id="commercial-paying"),
    pytest.param({}, {"commercial": "paused"}, "commercial", 0.4, id="commercial-paused"),
    pytest.param({}, {"commercial": "cancel_requested"}, "commercial", 0.15, id="commercial-cancel-requested"),
    pytest.param({}, {"commercial": "churned"}, "commercial", 0.0, id="commercial-churned"),
    pytest.param({}, {"commercial": "enterprise-deal"}, "commercial", 0.5, id="commercial-unknown-stage"),
]


@pytest.mark.parametrize(("model_changes", "signal_changes", "name", "expected"), COMPONENT_CASES)
def test_component_value(
    model_changes: dict[str, Any], signal_changes: dict[str, Any], name: str, expected: float
) -> None:
    model = dataclasses.replace(MODEL, **model_changes)
    assert _component(model, _signals(**signal_changes), name) == pytest.approx(expected, abs=1e-9)


def test_recency_sharpens_towards_exp_minus_late_with_a_long_history() -> None:
    """The more gaps the rhythm rests on (k), the sharper: (1 + late/k)^-k falls towards e^-late as k grows."""
    # late = (8-4)/4 = 1: k = 1 -> 1/2, k = 4 -> 0.4096, k = 2**20 -> e^-1 = 0.367879 (within 1e-6)
    by_evidence = [_component(MODEL, _signals(days_since_active=8.0, rhythm_evidence=k), "recency") for k in (1, 4)]
    assert by_evidence == pytest.approx([0.5, 0.4096], abs=1e-12)
    long_history = _component(MODEL, _signals(days_since_active=8.0, rhythm_evidence=2.0**20), "recency")
    assert long_history == pytest.approx(0.36787944, abs=1e-6)


def test_components_come_in_components_order() -> None:
    assert COMPONENTS == ("recency", "frequency", "adoption", "sentiment", "support", "commercial", "time_in_product")
    # time_in_product: 0 minutes in 28 days -> 0; 120 (time_half_minutes) -> 1/2; 360 -> 3/4.
    assert components(MODEL, BASE) == pytest.approx((1.0, 0.5, 0.5, 0.6, 0.5, 1.0, 0.0))
    assert components(MODEL, _signals(minutes_28=120.0))[-1] == pytest.approx(0.5)
    assert components(MODEL, _signals(minutes_28=360.0))[-1] == pytest.approx(0.75)


# Signals for a user nothing is known of but the (absent) key features they used: never active, no NPS answer,
# no ticket, no subscription event. Positional, in field order.
NOTHING_YET = Signals(None, 7.0, 1.0, 0, 0, 3, 25, None, 0.0, 0.0, "visitor")

SCORE_CASES = [
    pytest.param(MODEL, BASE, 69.0, id="middling-user"),
    pytest.param(
        MODEL,
        _signals(active_days_window=5, key_features_used=6, feature_uses=80, nps_score=10, support_load=0.0),
        100.0,
        id="perfect",
    ),
    # formula changed: re-normalised weights (issue #6). Never active, churned, no tickets: only adoption (0)
    # and commercial (0) have a signal, so support no longer gives its 10 for free: 0.
    pytest.param(
        MODEL,
        Signals(None, 7.0, 1.0, 0, 0, 0, 0, None, 0.0, 0.0, "churned", has_commercial=True),
        0.0,
        id="worst-never-active-no-tickets",
    ),
    # Only adoption has a signal: 100 * 0.5 (0.7*3/6 + 0.3*25/50).
    pytest.param(MODEL, NOTHING_YET, 50.0, id="only-adoption-has-a-signal"),
    # formula changed: personal recency (issue #6). 8 days, g = 4, k = 4: recency 0.4096 -> 25*0.4096 = 10.24;
    # 10.24 + 12.5 + 7.5 + 9 + 5 + 10 = 54.24
    pytest.param(MODEL, _signals(days_since_active=8.0), 54.24, id="a-gap-late"),
    # No NPS answer, no ticket, no subscription event: recency, frequency and adoption share the score,
    # 100 * (0.25*1 + 0.25*0.5 + 0.15*0.5) / (0.25 + 0.25 + 0.15) = 100 * 0.45/0.65 = 69.23
    pytest.param(
        MODEL,
        _signals(nps_score=None, has_tickets=False, has_commercial=False),
        69.23,
        id="re-normalised-over-present",
    ),
    # Only recency and support weigh, equally: 50*1.0 + 50*0.5.
    pytest.param(ScoreModel(weights={"recency": 2.0, "support": 2.0}), BASE, 75.0, id="weights-are-normalised"),
    pytest.param(ScoreModel(weights={"commercial": 1.0}), _signals(commercial="trial"), 70.0, id="one-component"),
    # The only weighted component (support) has no signal: every configured weight is used, 100 * support 0.5.
    pytest.param(
        ScoreModel(weights={"support": 1.0}), _signals(has_tickets=False), 50.0, id="no-present-weight-falls-back"
    ),
]


@pytest.mark.parametrize(("model", "s", "expected"), SCORE_CASES)
def test_score(model: ScoreModel, s: Signals, expected: float) -> None:
    contribs = contributions(model, components(model, s), s.present)
    assert len(contribs) == len(COMPONENTS)
    assert score_of(contribs) == pytest.approx(expected, abs=0.005)


PRESENT_CASES = [
    pytest.param({}, ("recency", "frequency", "adoption", "sentiment", "support", "commercial"), id="all"),
    pytest.param({"days_since_active": None}, ("adoption", "sentiment", "support", "commercial"), id="never-active"),
    pytest.param({"nps_score": None}, ("recency", "frequency", "adoption", "support", "commercial"), id="no-nps"),
    pytest.param(
        {"has_tickets": False}, ("recency", "frequency", "adoption", "sentiment", "commercial"), id="no-tickets"
    ),
    # a resolved ticket still counts: a ticket was had, even at load 0
    pytest.param({"support_load": 0.0}, COMPONENTS[:-1], id="tickets-all-resolved"),
    # time in product once a session longer than 0 minutes was had (even with 0 minutes in the window)
    pytest.param({"has_time": True}, COMPONENTS, id="time-in-product"),
    pytest.param(
        {"has_commercial": False}, ("recency", "frequency", "adoption", "sentiment", "support"), id="no-commercial"
    ),
    pytest.param(
        {"days_since_active": None, "nps_score": None, "has_tickets": False, "has_commercial": False},
        ("adoption",),
        id="adoption-always",
    ),
    # no key feature used is still a signal for adoption
    pytest.param(
        {"key_features_used": 0, "feature_uses": 0, "nps_score": None, "has_tickets": False, "has_commercial": False},
        ("recency", "frequency", "adoption"),
        id="adoption-even-at-zero",
    ),
]


@pytest.mark.parametrize(("changes", "names"), PRESENT_CASES)
def test_present_mask(changes: dict[str, Any], names: tuple[str, ...]) -> None:
    assert _signals(**changes).present == _mask(*names)


def test_all_present_is_every_bit() -> None:
    assert ALL_PRESENT == 0b1111111 == _mask(*COMPONENTS)
    assert BASE.present == ALL_PRESENT ^ _mask("time_in_product")
    assert _signals(has_time=True).present == ALL_PRESENT


@pytest.mark.parametrize(
    ("weights", "names", "shares"),
    [
        # every weight over their sum, 1.05 (time_in_product's 0.05 added, the others left as they were)
        pytest.param(
            None,
            COMPONENTS,
            tuple(w / 1.05 for w in (25.0, 25.0, 15.0, 15.0, 10.0, 10.0, 5.0)),
            id="all-present-defaults",
        ),
        # without a session longer than 0 minutes, the six share 100 as before time_in_product existed
        pytest.param(None, COMPONENTS[:-1], (25.0, 25.0, 15.0, 15.0, 10.0, 10.0, 0.0), id="no-time-signal"),
        pytest.param(None, ("adoption",), (0.0, 0.0, 100.0, 0.0, 0.0, 0.0, 0.0), id="adoption-alone"),
        # 25/0.65 = 38.4615..., 15/0.65 = 23.0769...
        pytest.param(
            None,
            ("recency", "frequency", "adoption"),
            (25 / 0.65, 25 / 0.65, 15 / 0.65, 0.0, 0.0, 0.0, 0.0),
            id="not-yet-answered",
        ),
        # 0.15 + 0.15: half each
        pytest.param(
            None, ("adoption", "sentiment"), (0.0, 0.0, 50.0, 50.0, 0.0, 0.0, 0.0), id="never-active-answered"
        ),
        # 0.25+0.25+0.15+0.10 = 0.75: 33.33, 33.33, 20, 13.33
        pytest.param(
            None,
            ("recency", "frequency", "adoption", "commercial"),
            (100 / 3, 100 / 3, 20.0, 0.0, 0.0, 40 / 3, 0.0),
            id="paying-no-nps-no-tickets",
        ),
        # only support is weighted but has no signal: the configured weights stand
        pytest.param({"support": 1.0}, ("adoption",), (0.0, 0.0, 0.0, 0.0, 100.0, 0.0, 0.0), id="fallback-to-all"),
        # support weighted 3, frequency 1, support absent: frequency takes it all
        pytest.param(
            {"support": 3.0, "frequency": 1.0},
            ("recency", "frequency", "adoption"),
            (0.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            id="present-unweighted-ignored",
        ),
    ],
)
def test_shares_are_re_normalised_over_present_components(
    weights: dict[str, float] | None, names: tuple[str, ...], shares: tuple[float, ...]
) -> None:
    model = MODEL if weights is None else ScoreModel(weights=weights)
    present = _mask(*names)
    assert model.shares(present) == pytest.approx(shares)
    assert sum(model.shares(present)) == pytest.approx(100.0)
    # An absent component contributes nothing, whatever its value.
    assert contributions(model, (1.0,) * len(COMPONENTS), present) == pytest.approx(shares)
    assert contributions(model, (0.5,) * len(COMPONENTS), present) == pytest.approx(tuple(x / 2 for x in shares))


def test_absent_component_contributes_nothing_whatever_its_value() -> None:
    # Sentiment valued 1.0 but absent: 0 points; the other five share 100 by 25/25/15/10/10 over 0.85.
    values = (1.0, 0.5, 0.5, 1.0, 0.5, 1.0, 0.0)
    present = _mask("recency", "frequency", "adoption", "support", "commercial")
    got = contributions(MODEL, values, present)
    # 25/0.85*1 = 29.41, 25/0.85*0.5 = 14.71, 15/0.85*0.5 = 8.82, 0, 10/0.85*0.5 = 5.88, 10/0.85*1 = 11.76
    assert got == pytest.approx((25 / 0.85, 12.5 / 0.85, 7.5 / 0.85, 0.0, 5 / 0.85, 10 / 0.85, 0.0))
    # 100 * (0.25 + 0.125 + 0.075 + 0.05 + 0.1) / 0.85 = 100 * 0.6/0.85 = 70.59
    assert score_of(got) == 70.59
    # The default mask is every component: sentiment's 1.0 then counts at its configured 15 (of 105).
    assert contributions(MODEL, values) == pytest.approx(
        tuple(x / 1.05 for x in (25.0, 12.5, 7.5, 15.0, 5.0, 10.0, 0.0))
    )


@pytest.mark.parametrize(
    ("weights", "shares"),
    [
        pytest.param(None, tuple(w / 1.05 for w in (25.0, 25.0, 15.0, 15.0, 10.0, 10.0, 5.0)), id="defaults"),
        pytest.param({"recency": 1.0}, (100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), id="one"),
        pytest.param({"support": 3.0, "frequency": 1.0}, (0.0, 25.0, 0.0, 0.0, 75.0, 0.0, 0.0), id="unnormalised"),
        pytest.param({"recency": 1.0, "sentiment": 0.0}, (100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), id="explicit-zero"),
    ],
)
def test_shares_sum_to_100(weights: dict[str, float] | None, shares: tuple[float, ...]) -> None:
    model = MODEL if weights is None else ScoreModel(weights=weights)
    assert model.shares() == pytest.approx(shares)
    assert sum(model.shares()) == pytest.approx(100.0)
    assert contributions(model, (1.0,) * len(COMPONENTS)) == pytest.approx(shares)


@pytest.mark.parametrize(
    ("contribs", "expected"),
    [
        pytest.param((25.0, 12.5, 7.5, 9.0, 5.0, 10.0), 69.0, id="sum"),
        pytest.param((12.3456,), 12.35, id="rounded-to-2-places"),
        pytest.param((60.0, 50.0), 100.0, id="clamped-high"),
        pytest.param((-5.0, 3.0), 0.0, id="clamped-low"),
        pytest.param((0.1,) * 10, 1.0, id="exact-float-sum"),
        pytest.param((), 0.0, id="empty"),
    ],
)
def test_score_of(contribs: tuple[float, ...], expected: float) -> None:
    assert score_of(contribs) == expected


BAND_CASES = [
    # healthy: stays while >= 65 (healthy_leave), drops to watch, or at_risk below 40 (at_risk_enter)
    pytest.param(H, 90.0, H, id="healthy-stays-high"),
    pytest.param(H, 66.0, H, id="healthy-stays-at-66"),
    pytest.param(H, 65.0, H, id="healthy-stays-at-leave-threshold"),
    pytest.param(H, 64.99, W, id="healthy-leaves-just-below"),
    pytest.param(H, 64.0, W, id="healthy-leaves-at-64"),
    pytest.param(H, 40.0, W, id="healthy-to-watch-at-at-risk-enter"),
    pytest.param(H, 39.99, R, id="healthy-straight-to-at-risk"),
    # at_risk: stays while < 45 (at_risk_leave), rises to watch, or healthy at 70 (healthy_enter)
    pytest.param(R, 10.0, R, id="at-risk-stays-low"),
    pytest.param(R, 44.0, R, id="at-risk-stays-at-44"),
    pytest.param(R, 44.99, R, id="at-risk-stays-just-below-leave"),
    pytest.param(R, 45.0, W, id="at-risk-leaves-at-leave-threshold"),
    pytest.param(R, 46.0, W, id="at-risk-leaves-at-46"),
    pytest.param(R, 69.99, W, id="at-risk-to-watch-below-healthy-enter"),
    pytest.param(R, 70.0, H, id="at-risk-straight-to-healthy"),
    # watch: enter thresholds only
    pytest.param(W, 70.0, H, id="watch-to-healthy-at-70"),
    pytest.param(W, 69.99, W, id="watch-stays-below-70"),
    pytest.param(W, 66.0, W, id="watch-not-healthy-at-66"),
    pytest.param(W, 44.0, W, id="watch-not-at-risk-at-44"),
    pytest.param(W, 40.0, W, id="watch-stays-at-40"),
    pytest.param(W, 39.99, R, id="watch-to-at-risk-below-40"),
    # no band yet: by the enter thresholds
    pytest.param(None, 100.0, H, id="new-100"),
    pytest.param(None, 70.0, H, id="new-at-healthy-enter"),
    pytest.param(None, 69.99, W, id="new-just-below-healthy-enter"),
    pytest.param(None, 66.0, W, id="new-66-is-watch"),
    pytest.param(None, 44.0, W, id="new-44-is-watch"),
    pytest.param(None, 40.0, W, id="new-at-at-risk-enter"),
    pytest.param(None, 39.99, R, id="new-just-below-at-risk-enter"),
    pytest.param(None, 0.0, R, id="new-0"),
]


@pytest.mark.parametrize(("current", "score", "expected"), BAND_CASES)
def test_next_band(current: Band | None, score: float, expected: Band) -> None:
    assert next_band(MODEL, current, score) is expected


@pytest.mark.parametrize(
    ("start", "scores", "bands"),
    [
        pytest.param(H, [66, 64, 66, 64, 69], [H, W, W, W, W], id="hovering-below-healthy-does-not-flap"),
        pytest.param(R, [44, 46, 44, 41, 39], [R, W, W, W, R], id="hovering-above-at-risk-does-not-flap"),
        pytest.param(None, [75, 65, 64, 70, 65], [H, H, W, H, H], id="round-trip-through-watch"),
    ],
)
def test_band_trajectory(start: Band | None, scores: list[float], bands: list[Band]) -> None:
    band, seen = start, []
    for score in scores:
        band = next_band(MODEL, band, score)
        seen.append(band)
    assert seen == bands


def test_next_band_reads_the_models_thresholds() -> None:
    model = ScoreModel(healthy_enter=80.0, healthy_leave=75.0, at_risk_enter=20.0, at_risk_leave=30.0)
    assert next_band(model, None, 79.0) is W
    assert next_band(model, H, 76.0) is H
    assert next_band(model, H, 74.0) is W
    assert next_band(model, R, 29.0) is R
    assert next_band(model, None, 21.0) is W


NAMES = ("a", "b", "c")
REASON_CASES = [
    pytest.param(
        None,
        (10.0, 0.0, 5.0),
        [("a", 10.0, 10.0), ("c", 5.0, 5.0)],
        id="first-time-against-zero-and-zero-dropped",
    ),
    pytest.param(
        (0.0, 0.0, 0.0),
        (1.0, -3.0, 2.0),
        [("b", -3.0, -3.0), ("c", 2.0, 2.0), ("a", 1.0, 1.0)],
        id="largest-abs-delta-first-negative-included",
    ),
    pytest.param(
        (5.0, 5.0, 5.0),
        (7.0, 3.0, 7.0),
        [("a", 2.0, 7.0), ("b", -2.0, 3.0), ("c", 2.0, 7.0)],
        id="ties-by-name-whatever-the-sign",
    ),
    pytest.param(
        (1.0, 1.0, 1.0),
        (1.004, 0.9951, 1.006),
        [("c", 0.01, 1.01)],
        id="tiny-deltas-dropped",
    ),
    pytest.param((4.0, 5.0, 6.0), (4.0, 5.0, 6.0), [], id="nothing-moved"),
    pytest.param(
        (10.0, 20.0, 30.0),
        (12.3456, 20.0, 24.4444),
        [("c", -5.56, 24.44), ("a", 2.35, 12.35)],
        id="rounded-to-2-places",
    ),
]


@pytest.mark.parametrize(("before", "after", "expected"), REASON_CASES)
def test_reasons(
    before: tuple[float, ...] | None, after: tuple[float, ...], expected: list[tuple[str, float, float]]
) -> None:
    got = reasons(before, after, NAMES)
    assert [(r["component"], r["delta"], r["contribution"]) for r in got] == expected


def test_reasons_ties_by_name_not_position() -> None:
    got = reasons((0.0, 0.0, 0.0), (2.0, -2.0, 2.0), ("z", "a", "m"))
    assert [r["component"] for r in got] == ["a", "m", "z"]


def test_reasons_default_to_score_components() -> None:
    got = reasons(None, (0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0))
    assert got == [{"component": "commercial", "delta": 4.0, "contribution": 4.0}]


# ---- model version -------------------------------------------------------------------------------------------


def test_version_looks_like_a_short_hash() -> None:
    assert re.fullmatch(r"score-[0-9a-f]{10}", MODEL.version)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(ScoreModel(), id="another-default"),
        pytest.param(
            ScoreModel(weights=dict(reversed(list(MODEL.weights.items())))),
            id="same-weights-other-dict-order",
        ),
        pytest.param(dataclasses.replace(MODEL), id="copy"),
    ],
)
def test_version_is_stable_for_equal_models(other: ScoreModel) -> None:
    assert other == MODEL
    assert other.version == MODEL.version


def test_version_is_stable_for_int_and_float_spellings() -> None:
    other = ScoreModel(healthy_enter=70)
    assert other == MODEL
    assert other.version == MODEL.version


def _weights_with(**changes: float) -> dict[str, float]:
    return {**MODEL.weights, **changes}


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(ScoreModel(weights=_weights_with(recency=0.30)), id="one-weight"),
        pytest.param(ScoreModel(weights=_weights_with(support=0.0)), id="weight-to-zero"),
        pytest.param(ScoreModel(key_features=("dashboards",)), id="key-features"),
        pytest.param(ScoreModel(recency_scale=2.0), id="recency-scale"),
        pytest.param(ScoreModel(frequency_window_days=90), id="frequency-window"),
        pytest.param(ScoreModel(frequency_prior=2.0), id="frequency-prior"),
        pytest.param(ScoreModel(healthy_enter=75.0), id="threshold"),
        pytest.param(ScoreModel(min_delta=1.0), id="min-delta"),
    ],
)
def test_version_changes_with_any_knob(other: ScoreModel) -> None:
    assert other != MODEL
    assert other.version != MODEL.version


# ---- validation -----------------------------------------------------------------------------------------------

INVALID_MODELS = [
    pytest.param({"weights": {"recency": 1.0, "loyalty": 1.0}}, "unknown score component", id="unknown-component"),
    pytest.param({"weights": {"recency": 1.0, "support": -0.1}}, "non-negative", id="negative-weight"),
    pytest.param({"weights": {"recency": 0.0, "support": 0.0}}, "not all zero", id="all-zero-weights"),
    pytest.param({"weights": {}}, "not all zero", id="no-weights"),
    pytest.param({"healthy_enter": 60.0}, "bands need", id="healthy-enter-below-leave"),
    pytest.param({"at_risk_leave": 35.0}, "bands need", id="at-risk-leave-below-enter"),
    pytest.param({"healthy_leave": 44.0, "healthy_enter": 50.0}, "bands need", id="healthy-leave-below-at-risk-leave"),
    pytest.param({"at_risk_enter": 80.0, "at_risk_leave": 90.0}, "bands need", id="at-risk-above-healthy"),
]


@pytest.mark.parametrize(("changes", "message"), INVALID_MODELS)
def test_invalid_model_is_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScoreModel(**changes)


# Values TOML can carry (0, nan, inf) that would make scores meaningless or divide by zero.
UNSOUND_MODELS = [
    pytest.param({"weights": {"recency": float("nan")}}, id="nan-weight"),
    pytest.param({"weights": {"recency": float("inf")}}, id="inf-weight"),
    pytest.param({"frequency_window_days": 0}, id="frequency-window-0"),
    pytest.param({"frequency_window_days": -30}, id="negative-frequency-window"),
    pytest.param({"frequency_prior": -1.0}, id="negative-frequency-prior"),
    pytest.param({"frequency_prior": float("nan")}, id="nan-frequency-prior"),
    pytest.param({"frequency_prior": float("inf")}, id="inf-frequency-prior"),
    pytest.param({"depth_target": 0}, id="depth-0"),
    pytest.param({"support_load_scale": 0.0}, id="support-0"),
    pytest.param({"recency_scale": 0.0}, id="recency-scale-0"),
    pytest.param({"recency_scale": float("nan")}, id="nan-recency-scale"),
    pytest.param(
        {"nps_half_life_days": 0.0},
        id="nps-half-life-0",
    ),
    pytest.param({"recency_scale": -1.0}, id="negative-recency-scale"),
]


@pytest.mark.parametrize("changes", UNSOUND_MODELS)
def test_unsound_model_is_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        ScoreModel(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"weights": {"support": 1.0}}, id="single-weight"),
        pytest.param(
            {"healthy_enter": 50.0, "healthy_leave": 50.0, "at_risk_enter": 50.0, "at_risk_leave": 50.0},
            id="all-thresholds-equal-no-hysteresis",
        ),
        pytest.param({"key_features": ()}, id="no-key-features"),
        pytest.param({"min_delta": 0.0}, id="zero-min-delta"),
        pytest.param({"frequency_prior": 0.0}, id="no-frequency-prior"),
        pytest.param({"frequency_window_days": 1}, id="one-day-frequency-window"),
    ],
)
def test_edge_models_are_accepted(changes: dict[str, Any]) -> None:
    model = ScoreModel(**changes)
    for s in (BASE, NOTHING_YET):
        assert 0.0 <= score_of(contributions(model, components(model, s), s.present)) <= 100.0
