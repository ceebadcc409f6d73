"""The backtest's parts on hand-made data: AUC, ROC points, BG/NBD expectation, the fit, the splits."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from engine.config import load_settings
from engine.evaluate import auc, evaluate_events, roc_points
from engine.fitscore import fit_weights, internal_split
from operators.bgnbd import BgNbd, Customer, hyp2f1
from operators.health import render_user
from operators.lapse import LapseModel
from operators.scoring import ScoreModel
from operators.state import UserState
from tests.factories import DAY_MS, T0, make_event

CDNOW = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)


@pytest.mark.parametrize(
    ("values", "labels", "expected"),
    [
        # every positive above every negative: 4 of 4 pairs
        pytest.param([0.1, 0.4, 0.35, 0.8], [False, True, False, True], 1.0, id="perfect"),
        pytest.param([0.9, 0.4, 0.35, 0.1], [False, True, False, True], 0.25, id="mostly-wrong"),
        # positive 1 vs negatives {1, 0}: a tie (1/2) and a win (1) over 2 pairs = 0.75
        pytest.param([1.0, 1.0, 0.0], [True, False, False], 0.75, id="a-tie-counts-half"),
        pytest.param([3.0, 3.0, 3.0, 3.0], [True, False, True, False], 0.5, id="all-tied-is-chance"),
        pytest.param([1.0, 2.0], [True, True], None, id="one-class-only"),
    ],
)
def test_auc(values: list[float], labels: list[bool], expected: float | None) -> None:
    assert auc(values, labels) == expected


def test_roc_points_step_through_each_threshold() -> None:
    # descending: 0.9 (pos), 0.5 (neg), 0.5 (pos), 0.1 (neg); ties are one threshold
    points = roc_points([0.9, 0.5, 0.5, 0.1], [True, False, True, False])
    assert points == [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]


@pytest.mark.parametrize(
    ("a", "b", "c", "z", "expected"),
    [
        pytest.param(1.0, 1.0, 2.0, 0.5, -math.log(0.5) / 0.5, id="log-identity"),  # 2F1(1,1;2;z) = -ln(1-z)/z
        pytest.param(0.5, 1.0, 1.0, 0.75, (1 - 0.75) ** -0.5, id="binomial"),  # 2F1(a,b;b;z) = (1-z)^-a
        pytest.param(2.0, 3.0, 4.0, 0.0, 1.0, id="at-zero"),
    ],
)
def test_hyp2f1_matches_closed_forms(a: float, b: float, c: float, z: float, expected: float) -> None:
    assert hyp2f1(a, b, c, z) == pytest.approx(expected, rel=1e-12)


def test_bgnbd_expectation_matches_the_published_example() -> None:
    # Fader, Hardie & Lee (2005), section 6: x = 2, t_x = 30.43, T = 38.86 weeks -> 1.226 in the next 39.
    assert CDNOW.expected(Customer(2, 30.43, 38.86), 39.0) == pytest.approx(1.226, abs=5e-4)


def test_bgnbd_expectation_falls_with_silence_even_without_repeats() -> None:
    """p_alive is 1 for x = 0 whatever the silence; the expectation is not fooled."""
    quiet = [CDNOW.expected(Customer(0, 0.0, t), 39.0) for t in (1.0, 10.0, 30.0)]
    assert quiet == sorted(quiet, reverse=True)
    assert CDNOW.p_alive(0, 0.0, 30.0) == 1.0


def test_expected_active_days_in_the_lapse_model() -> None:
    lapse = LapseModel(model="bgnbd", unit="week", params={"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
                       horizon_days=28.0)  # fmt: skip
    user = UserState(T0)
    for day in (0, 7, 14):
        user.apply(make_event(event_id=f"e{day}", ts=T0 + day * DAY_MS))
    as_of = T0 + 21 * DAY_MS
    # x = 2 repeats, t_x = 14/7 = 2 weeks, T = 21/7 = 3 weeks, horizon 4 weeks
    assert lapse.expected_active_days(user, as_of) == pytest.approx(CDNOW.expected(Customer(2, 2.0, 3.0), 4.0))
    assert LapseModel().expected_active_days(user, as_of) is None  # cadence model: no BG/NBD
    user.clock = as_of
    profile = render_user("user-1", user, ScoreModel(), lapse)
    assert profile["expected_active_days"] == round(CDNOW.expected(Customer(2, 2.0, 3.0), 4.0), 2)
    assert "expected_active_days" not in render_user("user-1", user, ScoreModel(), LapseModel())


def test_fit_weights_are_non_negative_and_find_the_signal() -> None:
    rng = random.Random(5)
    rows, labels = [], []
    for _ in range(600):
        row = tuple(rng.random() for _ in range(6))
        rows.append(row)
        labels.append(rng.random() < row[1])  # only the second column predicts; the fourth is noise
    weights = fit_weights(rows, labels)
    assert all(w >= 0 for w in weights)
    assert max(range(6), key=weights.__getitem__) == 1
    assert weights[1] > 5 * max(w for i, w in enumerate(weights) if i != 1)


def test_fit_weights_clamp_a_harmful_component_at_zero() -> None:
    rng = random.Random(6)
    rows = [tuple(rng.random() for _ in range(6)) for _ in range(600)]
    labels = [rng.random() < 1 - row[0] for row in rows]  # more of component 0 means *less* coming back
    assert fit_weights(rows, labels)[0] == 0.0


@pytest.mark.parametrize(
    ("span_days", "horizon", "expected_end_day", "expected_horizon"),
    [
        pytest.param(100, 30, 70, 30, id="a-horizon-before-the-end"),
        pytest.param(40, 30, 20, 20, id="too-short-halves-the-period"),
    ],
)
def test_internal_split_stays_inside_the_calibration_period(
    span_days: int, horizon: int, expected_end_day: int, expected_horizon: int
) -> None:
    events = [make_event(event_id="first", ts=T0)]
    end, days = internal_split(events, T0 + span_days * DAY_MS, horizon)
    assert (end, days) == (T0 + expected_end_day * DAY_MS, expected_horizon)


def test_evaluate_ranks_a_hand_made_history(tmp_path: Path) -> None:
    """Two regular users still on rhythm come back; two who went quiet do not. Score and recency rank
    them perfectly; frequency (total active days) cannot separate a lapsed regular from a keen one."""
    events = []
    for user, days in {
        "keen": range(0, 30),  # daily to the end
        "steady": range(0, 30, 3),  # every third day to the end
        "gone": range(0, 20),  # daily, then quiet for 10 days
        "once": [2],  # one visit, long ago
    }.items():
        events += [make_event(event_id=f"{user}-{d}", user_id=user, account_id=None, ts=T0 + d * DAY_MS) for d in days]
    end = T0 + 29 * DAY_MS + 1
    events += [
        make_event(event_id=f"{u}-later", user_id=u, account_id=None, ts=end + DAY_MS) for u in ("keen", "steady")
    ]
    result = evaluate_events(sorted(events, key=lambda e: e.ts), end, 7, load_settings(None, env={}))
    assert (result["users"], result["retained"]) == (4, 2)
    assert result["auc"]["score"] == 1.0
    assert result["auc"]["baselines"]["recency"] == 1.0
    # active days: keen 30, gone 20, steady 10, once 1 -> steady (positive) loses to gone: 3 of 4 pairs
    assert result["auc"]["baselines"]["frequency"] == 0.75
    assert result["retention_by_band"]["healthy"]["retained"] == 1.0
