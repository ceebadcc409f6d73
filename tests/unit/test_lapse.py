"""Unit tests for operators.lapse: validation, the fixed / cadence / BG/NBD rules, and when lapse alerts fire."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from operators.engagement import lapse_deadline
from operators.lapse import LapseModel
from operators.shard import Shard, ShardConfig
from operators.state import UserState
from schemas.codec import loads
from schemas.events import Event
from schemas.outputs import OutputKind, Record
from tests.factories import DAY_MS, T0, make_event

# Fader, Hardie & Lee (2005), table 1: the CDNOW estimates, in weeks.
CDNOW = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
BGNBD_WEEK = LapseModel(model="bgnbd", unit="week", params=CDNOW)
BGNBD_DAY = LapseModel(model="bgnbd", unit="day", params=CDNOW)
DAY0 = T0 // DAY_MS  # T0's epoch day: day offsets below count from it
HOUR_MS = 3_600_000

WEEKLY = tuple(range(0, 50, 7))  # 8 active days, one a week
DAILY = tuple(range(20))  # 20 consecutive days
SPORADIC = tuple(range(0, 64, 21))  # every 3 weeks: 0, 21, 42, 63
SINGLE = (0,)


def _at(day: int, ms_in_day: int = 12 * HOUR_MS) -> int:
    return (DAY0 + day) * DAY_MS + ms_in_day


def _visits(days: Sequence[int], user: str = "u", ms_in_day: int = 12 * HOUR_MS) -> list[Event]:
    return [make_event(event_id=f"{user}-{d}", user_id=user, ts=_at(d, ms_in_day)) for d in days]


def _state(days: Sequence[int], ms_in_day: int = 12 * HOUR_MS) -> UserState:
    events = _visits(days, ms_in_day=ms_in_day)
    user = UserState(events[0].ts)
    for event in events:
        user.apply(event)
    return user


def _run(events: Sequence[Event], lapse: LapseModel, until: int) -> tuple[Shard, list[dict[str, Any]]]:
    """Replay `events` through one shard, let event time reach `until`; returns the alert documents."""
    shard = Shard()
    config = ShardConfig(lapse=lapse, until_ms=until)
    outputs = shard.process(events, config) + shard.drain(config)
    alerts = [loads(o.value) for o in outputs if isinstance(o, Record) and o.kind is OutputKind.ALERTS]
    return shard, alerts


def _lapses(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["kind"] == "lapse" and a["status"] == "firing"]


def _iso(ms: int) -> str:
    """RFC 3339 as outputs write it, by the standard library rather than the code under test."""
    stamp = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _p_alive(params: dict[str, float], x: int, t_x: float, t: float) -> float:
    """BG/NBD P(alive | x, t_x, T), Fader, Hardie & Lee (2005) eq. 13, written independently of operators.bgnbd."""
    if x == 0:
        return 1.0
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    return 1.0 / (1.0 + a / (b + x - 1) * math.pow((alpha + t) / (alpha + t_x), r + x))


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"model": "markov"}, "model must be one of", id="unknown-model"),
        pytest.param({"model": ""}, "model must be one of", id="empty-model"),
        pytest.param({"model": "BGNBD", "params": CDNOW}, "model must be one of", id="model-is-case-sensitive"),
        pytest.param({"unit": "month"}, "unit must be day or week", id="unknown-unit"),
        pytest.param({"model": "bgnbd"}, "params needs r, alpha, a and b", id="bgnbd-without-params"),
        pytest.param(
            {"model": "bgnbd", "params": {"r": 0.2, "alpha": 4.0, "a": 0.8}}, "missing \\['b'\\]", id="bgnbd-missing-b"
        ),
        pytest.param(
            {"model": "cadence", "params": {"r": 0.2}}, "params needs r, alpha, a and b", id="partial-params-any-model"
        ),
        pytest.param({"model": "bgnbd", "params": {**CDNOW, "r": 0.0}}, "parameter r", id="bgnbd-zero-r"),
        pytest.param({"model": "bgnbd", "params": {**CDNOW, "alpha": -1.0}}, "parameter alpha", id="bgnbd-neg-alpha"),
        pytest.param({"fixed_days": 0.0}, "fixed_days must be a positive number", id="fixed-days-zero"),
        pytest.param({"fixed_days": -3.0}, "fixed_days must be a positive number", id="fixed-days-negative"),
        pytest.param({"fixed_days": math.nan}, "fixed_days must be a positive number", id="fixed-days-nan"),
        pytest.param({"fixed_days": math.inf}, "fixed_days must be a positive number", id="fixed-days-inf"),
        pytest.param({"cadence_factor": 0.0}, "cadence_factor must be a positive number", id="cadence-factor-zero"),
        pytest.param({"prior_gap_days": -1.0}, "prior_gap_days must be a positive number", id="prior-gap-negative"),
        pytest.param({"min_days": 0.0}, "min_days must be a positive number", id="min-days-zero"),
        pytest.param({"max_days": -60.0}, "max_days must be a positive number", id="max-days-negative"),
        pytest.param({"rescore_days": 0.0}, "rescore_days must be a positive number", id="rescore-days-zero"),
        pytest.param({"p_alive_threshold": 0.0}, "p_alive_threshold must be between 0 and 1", id="threshold-0"),
        pytest.param({"p_alive_threshold": 1.0}, "p_alive_threshold must be between 0 and 1", id="threshold-1"),
        pytest.param({"p_alive_threshold": -0.1}, "p_alive_threshold must be between 0 and 1", id="threshold-neg"),
        pytest.param({"p_alive_threshold": 1.5}, "p_alive_threshold must be between 0 and 1", id="threshold-1.5"),
        pytest.param({"p_alive_threshold": math.nan}, "p_alive_threshold must be between 0 and 1", id="threshold-nan"),
    ],
)
def test_bad_settings_fail_fast(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LapseModel(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "has_bgnbd"),
    [
        pytest.param({}, False, id="defaults-cadence"),
        pytest.param({"model": "fixed", "fixed_days": 0.5}, False, id="fixed-half-day"),
        pytest.param({"model": "bgnbd", "params": CDNOW}, True, id="bgnbd-week"),
        pytest.param(
            {"model": "bgnbd", "unit": "day", "params": CDNOW, "p_alive_threshold": 0.99}, True, id="bgnbd-day"
        ),
        # p_alive is reported with a cadence deadline when params are given.
        pytest.param({"model": "cadence", "params": CDNOW}, True, id="cadence-with-params"),
    ],
)
def test_good_settings_are_accepted(kwargs: dict[str, Any], has_bgnbd: bool) -> None:
    model = LapseModel(**kwargs)
    assert (model.bgnbd is not None) == has_bgnbd
    if has_bgnbd:
        assert model.bgnbd is not None
        assert (model.bgnbd.r, model.bgnbd.alpha, model.bgnbd.a, model.bgnbd.b) == (0.243, 4.414, 0.793, 2.426)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(
            {"prior_weight": 0.0},
            id="prior-weight-zero",
        ),
        pytest.param(
            {"prior_weight": -1.0},
            id="prior-weight-negative",
        ),
        pytest.param(
            {"cooldown_days": -7.0},
            id="cooldown-negative",
        ),
        pytest.param(
            {"rescore_for_days": -1.0},
            id="rescore-for-negative",
        ),
        pytest.param(
            {"min_days": 30.0, "max_days": 10.0},
            id="min-above-max",
        ),
    ],
)
def test_unvalidated_settings_should_fail_fast(kwargs: dict[str, Any]) -> None:
    """Bad values fail fast with a clear message, not later inside the stream."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LapseModel(**kwargs)


# --- the cadence rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "kwargs", "expected_gap", "cadence"),
    [
        # (span + prior_weight * prior_gap) / (gaps + prior_weight), times 2.5, within [2, 60].
        pytest.param(SINGLE, {}, 7.0, 17.5, id="single-day-is-the-prior"),
        pytest.param((0, 0), {}, 7.0, 17.5, id="same-day-twice-is-one-day"),
        pytest.param(WEEKLY, {}, 7.0, 17.5, id="weekly"),
        pytest.param(DAILY, {}, 26 / 20, 3.25, id="daily-20"),
        pytest.param(SPORADIC, {}, 17.5, 43.75, id="every-3-weeks"),
        pytest.param((0, 1), {}, 4.0, 10.0, id="two-days-shrunk-to-prior"),
        pytest.param((0, 1), {"prior_weight": 3.0}, 5.5, 13.75, id="heavier-prior"),
        pytest.param((0, 1), {"prior_weight": 0.001}, (1 + 0.007) / 1.001, 2.5 * (1.007 / 1.001), id="light-prior"),
        pytest.param(DAILY, {"min_days": 5.0}, 1.3, 5.0, id="clamped-to-min"),
        pytest.param((0, 100), {"max_days": 60.0}, 53.5, 60.0, id="clamped-to-max"),
        pytest.param(WEEKLY, {"cadence_factor": 1.0}, 7.0, 7.0, id="factor-1"),
        pytest.param(SINGLE, {"prior_gap_days": 3.0}, 3.0, 7.5, id="other-prior"),
    ],
)
def test_expected_gap_and_cadence(
    days: Sequence[int], kwargs: dict[str, Any], expected_gap: float, cadence: float
) -> None:
    model = LapseModel(**kwargs)
    user = _state(days)
    assert model.expected_gap_days(user) == pytest.approx(expected_gap)
    assert model.cadence_days(user) == pytest.approx(cadence)


@pytest.mark.parametrize(
    ("model", "days", "silence_ms"),
    [
        pytest.param(LapseModel(model="fixed"), DAILY, 14 * DAY_MS, id="fixed-default-14"),
        pytest.param(LapseModel(model="fixed", fixed_days=2.5), WEEKLY, 60 * HOUR_MS, id="fixed-2.5"),
        pytest.param(LapseModel(), WEEKLY, 17 * DAY_MS + 12 * HOUR_MS, id="cadence-weekly"),
        pytest.param(LapseModel(), DAILY, 3 * DAY_MS + 6 * HOUR_MS, id="cadence-daily"),
        pytest.param(BGNBD_WEEK, SINGLE, 17 * DAY_MS + 12 * HOUR_MS, id="bgnbd-x0-falls-back-to-cadence"),
        pytest.param(BGNBD_WEEK, (0, 0), 17 * DAY_MS + 12 * HOUR_MS, id="bgnbd-one-day-many-events-is-x0"),
    ],
)
def test_deadline_is_measured_from_the_last_activity(model: LapseModel, days: Sequence[int], silence_ms: int) -> None:
    user = _state(days)
    assert model.deadline(user) == user.last_active + silence_ms


@pytest.mark.parametrize(
    ("days", "model"),
    [
        pytest.param(WEEKLY, BGNBD_WEEK, id="weekly-week"),
        pytest.param(DAILY, BGNBD_WEEK, id="daily-week"),
        pytest.param(SPORADIC, BGNBD_WEEK, id="sporadic-week"),
        pytest.param((0, 1), BGNBD_WEEK, id="two-days-week"),
        pytest.param((0, 3, 4, 10, 30), BGNBD_WEEK, id="irregular-week"),
        pytest.param(DAILY, BGNBD_DAY, id="daily-day"),
        pytest.param(WEEKLY, BGNBD_DAY, id="weekly-day"),
        pytest.param(WEEKLY, dataclasses.replace(BGNBD_WEEK, p_alive_threshold=0.05), id="weekly-low-threshold"),
        pytest.param(DAILY, dataclasses.replace(BGNBD_WEEK, p_alive_threshold=0.6), id="daily-high-threshold"),
        # p(alive) right at the last visit is already below 0.9: the deadline is one day on, not in the past.
        pytest.param((0, 1), dataclasses.replace(BGNBD_WEEK, p_alive_threshold=0.9), id="below-at-once"),
    ],
)
def test_bgnbd_deadline_is_the_first_day_p_alive_falls_below_the_threshold(
    days: Sequence[int], model: LapseModel
) -> None:
    """The closed form agrees with a day-by-day scan of the BG/NBD formula (written out above, separately)."""
    user = _state(days)
    size = 7 if model.unit == "week" else 1
    first, last = DAY0 + days[0], DAY0 + days[-1]
    x, t_x = len(set(days)) - 1, (last - first) / size
    day = last
    while _p_alive(CDNOW, x, t_x, (day - first) / size) >= model.p_alive_threshold:
        day += 1
    expected_day = max(day, last + 1)
    deadline = model.deadline(user)
    assert deadline // DAY_MS == expected_day
    assert deadline % DAY_MS == 12 * HOUR_MS  # the time of day of the last activity
    assert model.p_alive(user, deadline) == pytest.approx(_p_alive(CDNOW, x, t_x, (expected_day - first) / size))
    assert model.p_alive(user, deadline) is not None
    if expected_day > last + 1:
        before = model.p_alive(user, deadline - DAY_MS)
        assert before is not None
        assert before >= model.p_alive_threshold


@pytest.mark.parametrize(
    ("model", "days", "as_of_day", "expected"),
    [
        pytest.param(LapseModel(), WEEKLY, 60, None, id="cadence-has-no-p-alive"),
        pytest.param(LapseModel(model="fixed"), WEEKLY, 60, None, id="fixed-has-no-p-alive"),
        pytest.param(BGNBD_WEEK, SINGLE, 300, 1.0, id="x0-is-1-by-the-model"),
        pytest.param(BGNBD_WEEK, WEEKLY, 49, _p_alive(CDNOW, 7, 7.0, 7.0), id="weekly-just-seen"),
        pytest.param(BGNBD_WEEK, WEEKLY, 94, _p_alive(CDNOW, 7, 7.0, 94 / 7), id="weekly-45-days-silent"),
        pytest.param(BGNBD_WEEK, DAILY, 31, _p_alive(CDNOW, 19, 19 / 7, 31 / 7), id="daily-12-days-silent"),
        pytest.param(BGNBD_DAY, DAILY, 31, _p_alive(CDNOW, 19, 19.0, 31.0), id="daily-in-days"),
        # Event time before the first activity: T never goes below 0.
        pytest.param(BGNBD_WEEK, WEEKLY, -3, _p_alive(CDNOW, 7, 7.0, 0.0), id="as-of-before-first-day"),
    ],
)
def test_p_alive(model: LapseModel, days: Sequence[int], as_of_day: int, expected: float | None) -> None:
    p = model.p_alive(_state(days), _at(as_of_day, 17 * HOUR_MS))
    if expected is None:
        assert p is None
    else:
        assert p == pytest.approx(expected, rel=1e-9)


def test_p_alive_is_none_for_a_user_never_active() -> None:
    user = UserState(T0)
    user.apply(make_event(type="nps_response", properties={"score": 9}))
    assert BGNBD_WEEK.p_alive(user, T0 + 30 * DAY_MS) is None


# --- when lapse alerts fire, through the shard --------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "silence_days", "fires_on_day"),
    [
        # Cadence deadline, rounded up to whole days after the end of the last active day (by hand: see
        # test_expected_gap_and_cadence): weekly 17.5 -> 18 days, daily 3.25 -> 4, every 3 weeks 43.75 -> 44.
        pytest.param(WEEKLY, 6, None, id="weekly-no-lapse-between-visits"),
        pytest.param(WEEKLY, 17, None, id="weekly-silent-17-days"),
        pytest.param(WEEKLY, 28, 49 + 1 + 18, id="weekly-silent-4-weeks-lapses"),
        pytest.param(WEEKLY, 60, 49 + 1 + 18, id="weekly-lapses-once"),
        pytest.param(DAILY, 3, None, id="daily-3-days-is-fine"),
        pytest.param(DAILY, 6, 19 + 1 + 4, id="daily-lapses-within-6-days"),
        pytest.param(SPORADIC, 28, None, id="sporadic-tolerates-4-weeks"),
        pytest.param(SPORADIC, 42, None, id="sporadic-tolerates-6-weeks"),
        pytest.param(SPORADIC, 60, 63 + 1 + 44, id="sporadic-lapses-after-44-days"),
        pytest.param(SINGLE, 14, None, id="one-visit-prior-tolerates-2-weeks"),
        pytest.param(SINGLE, 28, 0 + 1 + 18, id="one-visit-lapses-on-the-prior"),
    ],
)
def test_cadence_lapse_follows_each_users_rhythm(
    days: Sequence[int], silence_days: int, fires_on_day: int | None
) -> None:
    last = days[-1]
    _, alerts = _run(_visits(days), LapseModel(), _at(last + silence_days))
    # Lapses of the silence after the last visit (see test_a_first_gap_is_judged_by_the_prior for earlier ones).
    lapses = [a for a in _lapses(alerts) if a["last_seen"] == _iso(_at(last))]
    if fires_on_day is None:
        assert lapses == []
        return
    assert len(lapses) == 1
    (alert,) = lapses
    assert alert["ts"] == _iso(_at(fires_on_day, 0))
    assert alert["silent_days"] == pytest.approx(fires_on_day - last - 0.5)
    assert alert["last_seen"] == _iso(_at(last))
    assert alert["lapse_model"] == "cadence"
    assert alert["p_alive"] is None


@pytest.mark.parametrize(
    ("days", "until_day", "lapsed_after_days"),
    [
        pytest.param(WEEKLY, 49 + 6, [], id="weekly-never-between-visits"),
        pytest.param(DAILY, 19 + 3, [], id="daily-never-between-visits"),
        # One visit says nothing of a rhythm: the prior (7 x 2.5 = 17.5 -> 18 days) judges the first 3-week gap,
        # and the return on day 21 resolves it. Once the rhythm is known, 3-week gaps are not lapses.
        pytest.param(SPORADIC, 63 + 28, [0], id="sporadic-only-the-first-gap"),
    ],
)
def test_lapses_between_visits(days: Sequence[int], until_day: int, lapsed_after_days: list[int]) -> None:
    _, alerts = _run(_visits(days), LapseModel(), _at(until_day))
    lapses = _lapses(alerts)
    assert [a["last_seen"] for a in lapses] == [_iso(_at(d)) for d in lapsed_after_days]
    resolved = [a["alert_id"] for a in alerts if a["kind"] == "lapse" and a["status"] == "resolved"]
    assert resolved == [a["alert_id"] for a in lapses]


def test_daily_user_lapses_within_six_days_of_stopping() -> None:
    _, alerts = _run(_visits(DAILY), LapseModel(), _at(DAILY[-1] + 6))
    (alert,) = _lapses(alerts)
    assert 0 < alert["silent_days"] <= 6
    assert alert["expected_gap_days"] == 1.3


@pytest.mark.parametrize(
    ("fixed_days", "ms_in_day", "fires_after_whole_days"),
    [
        # Day granular: the deadline is `fixed_days` whole days after the end of the last active day, whatever
        # the time of day of the last activity.
        pytest.param(14.0, 12 * HOUR_MS, 14, id="14-noon"),
        pytest.param(14.0, 0, 14, id="14-midnight"),
        pytest.param(14.0, DAY_MS - 1, 14, id="14-last-ms-of-day"),
        pytest.param(1.0, 12 * HOUR_MS, 1, id="1-day"),
        pytest.param(7.0, 23 * HOUR_MS, 7, id="7-days-late-evening"),
        pytest.param(2.5, 12 * HOUR_MS, 3, id="fraction-rounds-up"),
        pytest.param(0.25, 6 * HOUR_MS, 1, id="quarter-day-is-one-day"),
    ],
)
def test_fixed_model_lapses_after_fixed_days(fixed_days: float, ms_in_day: int, fires_after_whole_days: int) -> None:
    model = LapseModel(model="fixed", fixed_days=fixed_days)
    days = (0, 1, 2, 3, 4)
    due = (DAY0 + days[-1] + 1 + fires_after_whole_days) * DAY_MS
    _, early = _run(_visits(days, ms_in_day=ms_in_day), model, due - 1)
    assert _lapses(early) == []
    _, alerts = _run(_visits(days, ms_in_day=ms_in_day), model, due + 10 * DAY_MS)
    (alert,) = _lapses(alerts)
    assert alert["ts"] == _iso(due)
    assert alert["lapse_model"] == "fixed"
    assert lapse_deadline(_state(days, ms_in_day), model) == due


@pytest.mark.parametrize(
    ("days", "model", "fires_on_day", "p_alive"),
    [
        # Deadlines from the scan in test_bgnbd_deadline_is_the_first_day_p_alive_falls_below_the_threshold
        # (weekly: day 94, daily: day 31), rounded up to the end of that day like every lapse deadline.
        pytest.param(WEEKLY, BGNBD_WEEK, 95, _p_alive(CDNOW, 7, 7.0, 95 / 7), id="weekly"),
        pytest.param(DAILY, BGNBD_WEEK, 32, _p_alive(CDNOW, 19, 19 / 7, 32 / 7), id="daily"),
        # x = 0: the model says alive forever; the cadence prior (17.5 -> 18 days) decides, p_alive stays 1.
        pytest.param(SINGLE, BGNBD_WEEK, 19, 1.0, id="x0-falls-back-to-cadence"),
        pytest.param((5, 5), BGNBD_WEEK, 24, 1.0, id="x0-one-day-two-events"),
    ],
)
def test_bgnbd_lapse_alert_carries_p_alive(
    days: Sequence[int], model: LapseModel, fires_on_day: int, p_alive: float
) -> None:
    events = [make_event(event_id=f"u-{i}", user_id="u", ts=_at(d)) for i, d in enumerate(days)]
    shard, alerts = _run(events, model, _at(fires_on_day + 10))
    (alert,) = _lapses(alerts)
    assert alert["ts"] == _iso(_at(fires_on_day, 0))
    assert alert["lapse_model"] == "bgnbd"
    assert alert["p_alive"] == round(p_alive, 4)
    if p_alive < 1.0:
        assert alert["p_alive"] < model.p_alive_threshold
    assert alert["ts"] == _iso(lapse_deadline(shard.users["u"], model))
