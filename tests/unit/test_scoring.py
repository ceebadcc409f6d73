"""Unit tests for operators.scoring: component values, weighting, bands with hysteresis, reasons, model version."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

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

MODEL = ScoreModel()
H, W, R = Band.HEALTHY, Band.WATCH, Band.AT_RISK

# A middling user, worked out by hand with the default weights (25/25/15/15/10/10):
# recency 1.0 -> 25, frequency 6/12 -> 12.5, adoption 0.7*3/6 + 0.3*25/50 = 0.5 -> 7.5,
# sentiment neutral 0.6 -> 9, support 1/(1+2/2) = 0.5 -> 5, commercial paying 1.0 -> 10; total 69.0.
BASE = Signals(
    days_since_active=0.0,
    active_days_28=6,
    key_features_used=3,
    feature_uses=25,
    nps_score=None,
    nps_age_days=0.0,
    support_load=2.0,
    commercial="paying",
)


def _signals(**changes: Any) -> Signals:
    return dataclasses.replace(BASE, **changes)


def _component(model: ScoreModel, s: Signals, name: str) -> float:
    return components(model, s)[COMPONENTS.index(name)]


COMPONENT_CASES = [
    # recency: half-life of 7 days by default
    pytest.param({}, {"days_since_active": None}, "recency", 0.0, id="recency-never-active"),
    pytest.param({}, {"days_since_active": 0.0}, "recency", 1.0, id="recency-today"),
    pytest.param({}, {"days_since_active": 3.5}, "recency", 2**-0.5, id="recency-half-a-half-life"),
    pytest.param({}, {"days_since_active": 7.0}, "recency", 0.5, id="recency-7-days-is-half"),
    pytest.param({}, {"days_since_active": 14.0}, "recency", 0.25, id="recency-14-days-is-quarter"),
    pytest.param({"recency_half_life_days": 14.0}, {"days_since_active": 14.0}, "recency", 0.5, id="recency-custom"),
    # frequency: active days in 28 against a target of 12
    pytest.param({}, {"active_days_28": 0}, "frequency", 0.0, id="frequency-none"),
    pytest.param({}, {"active_days_28": 6}, "frequency", 0.5, id="frequency-half-target"),
    pytest.param({}, {"active_days_28": 12}, "frequency", 1.0, id="frequency-at-target"),
    pytest.param({}, {"active_days_28": 28}, "frequency", 1.0, id="frequency-capped-above-target"),
    pytest.param({"frequency_target_days": 20}, {"active_days_28": 10}, "frequency", 0.5, id="frequency-custom"),
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


def test_components_come_in_components_order() -> None:
    assert COMPONENTS == ("recency", "frequency", "adoption", "sentiment", "support", "commercial")
    assert components(MODEL, BASE) == pytest.approx((1.0, 0.5, 0.5, 0.6, 0.5, 1.0))


SCORE_CASES = [
    pytest.param(MODEL, BASE, 69.0, id="middling-user"),
    pytest.param(
        MODEL,
        _signals(active_days_28=20, key_features_used=6, feature_uses=80, nps_score=10, support_load=0.0),
        100.0,
        id="perfect",
    ),
    # Only support (no tickets) is left: 10.
    pytest.param(
        MODEL,
        Signals(None, 0, 0, 0, 0, 0.0, 0.0, "churned"),
        10.0,
        id="worst-but-no-tickets",
    ),
    # 25*0.5 + 25*0.5 + 7.5 + 9 + 5 + 10 = 56.5
    pytest.param(MODEL, _signals(days_since_active=7.0), 56.5, id="a-week-quiet"),
    # Only recency and support weigh, equally: 50*1.0 + 50*0.5.
    pytest.param(ScoreModel(weights={"recency": 2.0, "support": 2.0}), BASE, 75.0, id="weights-are-normalised"),
    pytest.param(ScoreModel(weights={"commercial": 1.0}), _signals(commercial="trial"), 70.0, id="one-component"),
]


@pytest.mark.parametrize(("model", "s", "expected"), SCORE_CASES)
def test_score(model: ScoreModel, s: Signals, expected: float) -> None:
    contribs = contributions(model, components(model, s))
    assert len(contribs) == len(COMPONENTS)
    assert score_of(contribs) == pytest.approx(expected, abs=0.005)


@pytest.mark.parametrize(
    ("weights", "shares"),
    [
        pytest.param(None, (25.0, 25.0, 15.0, 15.0, 10.0, 10.0), id="defaults"),
        pytest.param({"recency": 1.0}, (100.0, 0.0, 0.0, 0.0, 0.0, 0.0), id="one"),
        pytest.param({"support": 3.0, "frequency": 1.0}, (0.0, 25.0, 0.0, 0.0, 75.0, 0.0), id="unnormalised"),
        pytest.param({"recency": 1.0, "sentiment": 0.0}, (100.0, 0.0, 0.0, 0.0, 0.0, 0.0), id="explicit-zero"),
    ],
)
def test_shares_sum_to_100(weights: dict[str, float] | None, shares: tuple[float, ...]) -> None:
    model = MODEL if weights is None else ScoreModel(weights=weights)
    assert model.shares() == pytest.approx(shares)
    assert sum(model.shares()) == pytest.approx(100.0)
    assert contributions(model, (1.0,) * 6) == pytest.approx(shares)


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
    got = reasons(None, (0.0, 0.0, 0.0, 0.0, 0.0, 4.0))
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
        pytest.param(ScoreModel(recency_half_life_days=14.0), id="half-life"),
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
    pytest.param({"frequency_target_days": 0}, id="freq-0"),
    pytest.param({"depth_target": 0}, id="depth-0"),
    pytest.param({"support_load_scale": 0.0}, id="support-0"),
    pytest.param(
        {"recency_half_life_days": 0.0},
        id="recency-half-life-0",
    ),
    pytest.param(
        {"nps_half_life_days": 0.0},
        id="nps-half-life-0",
    ),
    pytest.param(
        {"recency_half_life_days": -7.0},
        id="negative-half-life",
    ),
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
    ],
)
def test_edge_models_are_accepted(changes: dict[str, Any]) -> None:
    model = ScoreModel(**changes)
    assert 0.0 <= score_of(contributions(model, components(model, BASE))) <= 100.0
