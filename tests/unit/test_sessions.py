"""Sessions (time in product), worked out by hand: gaps, explicit start/end, late events, windows."""

from __future__ import annotations

import pytest

from engine.config import load_settings
from operators.health import AccountState, MemberUpdate, render_account, signals
from operators.scoring import COMPONENTS, ScoreModel, components
from operators.sessions import (
    MAX_SESSIONS,
    Log,
    add_event,
    had_time_before,
    median_minutes,
    profile_fields,
    sessions,
)
from operators.shard import Shard, ShardConfig
from operators.state import render_profile
from tests.factories import DAY_MS, T0, day_ts, make_event

MIN = 60_000
GAP = 30 * MIN
A, S, E = "page_view", "session_start", "session_end"


def _log(events: list[tuple[int, str]], gap: int = GAP) -> Log | None:
    log: Log | None = None
    for minute, kind in events:
        log = add_event(log, T0 + minute * MIN, kind, gap)
    return log


def _minutes(log: Log | None) -> list[tuple[float, float]]:
    """Sessions as (first, last) minutes after T0."""
    return [((a - T0) / MIN, (b - T0) / MIN) for a, b in sessions(log)]


# (events in arrival order as (minute after T0, type), expected sessions as (first, last) minutes)
CASES = [
    pytest.param([(0, A)], [(0, 0)], id="one-event-is-a-0-min-session"),
    pytest.param([(0, A), (10, A), (40, A), (100, A)], [(0, 40), (100, 100)], id="gap-splits"),
    pytest.param([(0, A), (30, A)], [(0, 30)], id="exactly-the-gap-links"),
    pytest.param([(0, A), (30.001, A)], [(0, 0), (30.001, 30.001)], id="a-ms-over-the-gap-splits"),
    pytest.param([(0, A), (10, A), (20, S), (25, A)], [(0, 10), (20, 25)], id="start-begins-a-new-session"),
    pytest.param([(0, S), (5, A), (31, A)], [(0, 31)], id="start-then-activity"),
    pytest.param([(0, A), (10, E), (15, A)], [(0, 10), (15, 15)], id="end-closes-at-its-time"),
    pytest.param([(0, A), (45, E)], [(0, 0), (45, 45)], id="end-after-the-gap-is-a-session-of-its-own"),
    pytest.param([(0, A), (50, A), (25, A)], [(0, 50)], id="late-event-bridges-two-sessions"),
    pytest.param([(50, A), (0, A), (100, A), (75, A), (25, A)], [(0, 100)], id="late-events-bridge-a-chain"),
    pytest.param([(0, A), (50, A), (55, S), (25, A)], [(0, 50), (55, 55)], id="late-bridge-stops-at-a-start"),
    pytest.param([(0, A), (5, E), (50, A), (25, A)], [(0, 5), (25, 50)], id="late-event-after-an-end"),
    pytest.param([(0, A), (10, A), (10, S)], [(0, 0), (10, 10)], id="start-at-the-same-ms-as-activity"),
    pytest.param([(0, A), (10, S), (10, A)], [(0, 0), (10, 10)], id="same-ms-other-order"),
    pytest.param([(0, A), (10, A), (10, E), (12, A)], [(0, 10), (12, 12)], id="end-at-the-same-ms-as-activity"),
    pytest.param([(0, A), (10, E), (10, A), (12, A)], [(0, 10), (12, 12)], id="same-ms-end-first"),
    pytest.param([(0, A), (10, E), (10, S), (15, A)], [(0, 0), (10, 10), (15, 15)], id="end-and-start-same-ms"),
    pytest.param([(0, A), (10, S), (10, E), (15, A)], [(0, 0), (10, 10), (15, 15)], id="start-and-end-same-ms"),
    pytest.param([(0, S), (0, S), (1, A)], [(0, 1)], id="starts-at-one-ms-are-one"),
    # Out of order beyond what the shard's ordering allows: a marker inside a session seen counts as activity.
    pytest.param([(0, A), (20, A), (10, S)], [(0, 20)], id="late-start-inside-counts-as-activity"),
]


@pytest.mark.parametrize(("events", "expected"), CASES)
def test_sessions_by_hand(events: list[tuple[float, str]], expected: list[tuple[float, float]]) -> None:
    log: Log | None = None
    for minute, kind in events:
        log = add_event(log, T0 + round(minute * MIN), kind, GAP)
    assert _minutes(log) == expected


def test_the_gap_is_a_parameter() -> None:
    events = [(0, A), (10, A), (40, A)]
    assert _minutes(_log(events, gap=5 * MIN)) == [(0, 0), (10, 10), (40, 40)]
    assert _minutes(_log(events, gap=60 * MIN)) == [(0, 40)]


# Sessions on days -30, -8, -6, -1 and 0 of T0's day (12:00 UTC), lasting 10, 20, 30, 40 and 50 minutes.
WINDOWED = [(-30, 10), (-8, 20), (-6, 30), (-1, 40), (0, 50)]


def _windowed() -> Log:
    log: Log | None = None
    for day, length in WINDOWED:
        log = add_event(log, day_ts(day), A, GAP)
        for minute in range(5, length + 1, 5):
            log = add_event(log, day_ts(day) + minute * MIN, A, GAP)
    assert log is not None
    return log


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        pytest.param(
            day_ts(0, hour=23),
            {
                "sessions_7": 3,
                "sessions_28": 4,
                "minutes_7": 120.0,
                "minutes_28": 140.0,
                "median_session_minutes": 35.0,
            },
            id="as-of-day-0",
        ),
        pytest.param(
            day_ts(1, hour=0),
            {"sessions_7": 2, "sessions_28": 4, "minutes_7": 90.0, "minutes_28": 140.0, "median_session_minutes": 35.0},
            id="next-day-drops-day-minus-6",
        ),
        pytest.param(
            day_ts(40),
            {"sessions_7": 0, "sessions_28": 0, "minutes_7": 0.0, "minutes_28": 0.0, "median_session_minutes": None},
            id="all-out-of-the-window",
        ),
    ],
)
def test_windows_count_sessions_by_the_day_they_start(as_of: int, expected: dict[str, object]) -> None:
    # The day -30 session was dropped when day 0 came (it started before the newest session's window).
    log = _windowed()
    assert len(sessions(log)) == 4
    assert profile_fields(log, as_of) == expected


def test_a_session_over_midnight_counts_on_the_day_it_started() -> None:
    start = (T0 // DAY_MS + 1) * DAY_MS - 10 * MIN  # 23:50 on T0's day
    log = add_event(add_event(None, start, A, GAP), start + 20 * MIN, A, GAP)
    fields = profile_fields(log, start + DAY_MS)  # as of the next day
    assert (fields["sessions_7"], fields["minutes_7"]) == (1, 20.0)
    assert profile_fields(log, start + 7 * DAY_MS)["sessions_7"] == 0


@pytest.mark.parametrize(
    ("lengths", "median"),
    [([], None), ([MIN], 1.0), ([3 * MIN, MIN, 2 * MIN], 2.0), ([MIN, 4 * MIN], 2.5), ([0, 0, 90_000], 0.0)],
)
def test_median(lengths: list[int], median: float | None) -> None:
    assert median_minutes(lengths) == median


def test_state_is_bounded() -> None:
    log: Log | None = None
    for i in range(MAX_SESSIONS + 50):
        log = add_event(log, T0 + i * MIN, S, GAP)  # a start every minute: as many sessions
    assert len(sessions(log)) == MAX_SESSIONS
    assert sessions(log)[0][0] == T0 + 50 * MIN


def test_time_signal_needs_a_session_longer_than_0_min_and_survives_pruning() -> None:
    later = T0 + 365 * DAY_MS
    assert not had_time_before(None, later)
    assert not had_time_before(_log([(0, A), (40, A)]), later)
    log = _log([(0, A), (10, A)])
    assert had_time_before(log, later)
    assert not had_time_before(log, T0)  # today's session counts from tomorrow
    log = add_event(log, T0 + 60 * DAY_MS, A, GAP)  # the old session leaves the window
    assert sessions(log) == [(T0 + 60 * DAY_MS, T0 + 60 * DAY_MS)]
    assert had_time_before(log, later)


def test_time_in_product_component() -> None:
    model = ScoreModel()
    i = COMPONENTS.index("time_in_product")
    assert model.weights["time_in_product"] == 0.05
    shard = Shard()
    config = ShardConfig()
    shard.process([make_event(f"e{m}", ts=T0 + m * MIN) for m in range(0, 121, 10)], config)
    user = shard.users["user-1"]
    # The score counts complete days only: today's session shows in the profile now, in the score tomorrow.
    s = signals(model, user, user.clock)
    assert (s.minutes_28, s.has_time) == (0.0, False)
    s = signals(model, user, user.clock + DAY_MS)
    assert (s.minutes_28, s.has_time) == (120.0, True)
    assert components(model, s)[i] == pytest.approx(0.5)  # 120 min = time_half_minutes
    assert s.present >> i & 1
    profile = render_profile("user-1", user, user.clock)
    assert (profile["sessions_28"], profile["minutes_28"], profile["median_session_minutes"]) == (1, 120.0, 120.0)


def test_users_with_only_0_min_sessions_score_as_before() -> None:
    """Daily single events (no session longer than 0 min): the component has no signal, so no weight."""
    shard = Shard()
    before = ScoreModel(weights={k: v for k, v in ScoreModel().weights.items() if k != "time_in_product"})
    shard.process([make_event(f"d{d}", ts=day_ts(d)) for d in range(5)], ShardConfig())
    user = shard.users["user-1"]
    s = signals(ScoreModel(), user, user.clock)
    assert not s.has_time
    assert ScoreModel().shares(s.present) == pytest.approx(before.shares(s.present))


def test_account_minutes_per_active_member() -> None:
    account = AccountState()
    now = T0 + 40 * DAY_MS

    def update(user: str, ts: int, seq: int, last_active: int, minutes: float) -> MemberUpdate:
        return MemberUpdate("acme", user, ts, 50.0, "watch", last_active, "paying", -1, None, f"c{user}{seq}", seq,
                            minutes_28=minutes)  # fmt: skip

    account.apply(update("u1", now, 2, now, 90.0))
    account.apply(update("u1", now - MIN, 1, now - MIN, 10.0))  # older: does not win
    account.apply(update("u2", now, 1, now - DAY_MS, 30.0))
    account.apply(update("u3", now, 1, now - 29 * DAY_MS, 500.0))  # not active in 28 days: not counted
    assert account.minutes_per_active_member(now) == 60.0
    assert render_account("acme", account, ScoreModel())["minutes_per_active_member_28d"] == 60.0
    account.apply(MemberUpdate("acme", "u2", now + 1, -1, "", -1, "", -1, None, "gone", 9, "erased"))
    assert account.minutes_per_active_member(now) == 90.0
    assert AccountState().minutes_per_active_member(now) is None


def test_gap_setting_and_environment() -> None:
    assert load_settings(None, env={}).sessions.gap_minutes == 30
    settings = load_settings(None, env={"PULSE_SESSIONS_GAP_MINUTES": "45"})
    assert settings.shard_config(live=False).session_gap_ms == 45 * MIN
    assert "session_end" in settings.vocab().activity
