"""Unit tests for operators.state: active-day windows, the day bitmap, counters, pickling and the profile."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import pytest

from operators.state import UserState, render_profile
from schemas.codec import dumps
from schemas.events import Event, Vocabulary
from tests.factories import DAY_MS, T0, T0_DAY, day_ts, make_event


def _state(events: Sequence[Event]) -> UserState:
    state = UserState(events[0].ts)
    for event in events:
        state.apply(event)
    return state


def _events(spec: Sequence[tuple[int, str]]) -> list[Event]:
    """(day offset from T0's day, type) pairs as events with distinct ids."""
    return [make_event(event_id=f"e{i}", type=t, ts=day_ts(d)) for i, (d, t) in enumerate(spec)]


PV = "page_view"

ACTIVE_DAY_CASES = [
    pytest.param([(0, PV)], 0, (1, 1, 1), id="one-event-today"),
    pytest.param([(0, PV), (0, "session_start"), (0, "api_call")], 0, (1, 1, 1), id="same-day-counts-once"),
    pytest.param([(-6, PV), (-7, PV)], 0, (1, 2, 2), id="7-day-window-edge"),
    pytest.param([(-27, PV), (-28, PV)], 0, (0, 1, 2), id="28-day-window-edge"),
    pytest.param([(0, PV), (1, PV), (30, PV)], 0, (1, 1, 3), id="days-after-as-of-only-in-total"),
    pytest.param([(0, PV), (-3, PV)], -100, (0, 0, 2), id="as-of-before-everything"),
    pytest.param([(0, PV)], 6, (1, 1, 1), id="as-of-six-days-later"),
    pytest.param([(0, PV)], 7, (0, 1, 1), id="as-of-seven-days-later"),
    pytest.param([(0, PV)], 28, (0, 0, 1), id="as-of-28-days-later"),
    pytest.param([(-d, PV) for d in range(40)], 0, (7, 28, 40), id="every-day-for-40-days"),
    pytest.param([(-d, PV) for d in range(0, 40, 2)], 0, (4, 14, 20), id="every-other-day"),
    pytest.param(
        [(d, t) for d, t in enumerate(sorted(Vocabulary().activity))], 4, (5, 5, 6), id="every-activity-type-counts"
    ),
    pytest.param(
        [(0, "nps_response"), (-1, "support_ticket_opened"), (-2, "subscribed"), (-3, "seat_added"), (0, "made_up")],
        0,
        (0, 0, 0),
        id="non-activity-types-are-not-active-days",
    ),
    pytest.param([(0, "nps_response"), (-1, "feature_used")], 0, (1, 1, 1), id="mixed"),
]


@pytest.mark.parametrize(("spec", "as_of_day", "expected"), ACTIVE_DAY_CASES)
def test_active_days(spec: list[tuple[int, str]], as_of_day: int, expected: tuple[int, int, int]) -> None:
    state = _state(_events(spec))
    as_of = day_ts(as_of_day, hour=23)
    assert (state.active_days(as_of, 7), state.active_days(as_of, 28), state.active_day_count) == expected
    profile = render_profile("user-1", state, as_of)
    assert (profile["active_days_7"], profile["active_days_28"], profile["active_days_total"]) == expected


@pytest.mark.parametrize(
    ("as_of", "window", "expected"),
    [
        pytest.param((T0_DAY + 1) * DAY_MS, 1, 1, id="midnight-is-the-new-day"),
        pytest.param((T0_DAY + 1) * DAY_MS, 2, 2, id="midnight-window-2"),
        pytest.param((T0_DAY + 1) * DAY_MS - 1, 1, 1, id="last-ms-of-day"),
        pytest.param((T0_DAY + 1) * DAY_MS - 1, 7, 1, id="last-ms-of-day-excludes-tomorrow"),
        pytest.param((T0_DAY + 2) * DAY_MS, 1, 0, id="day-after"),
    ],
)
def test_days_are_utc_calendar_days(as_of: int, window: int, expected: int) -> None:
    last_ms_of_day0 = (T0_DAY + 1) * DAY_MS - 1
    first_ms_of_day1 = (T0_DAY + 1) * DAY_MS
    state = _state([make_event(event_id="a", ts=last_ms_of_day0), make_event(event_id="b", ts=first_ms_of_day1)])
    assert state.active_day_count == 2
    assert state.active_days(as_of, window) == expected


@pytest.mark.parametrize(
    "day_offsets",
    [
        pytest.param([0, -1], id="previous-day"),
        pytest.param([0, -9], id="previous-byte"),
        pytest.param([0, -400], id="a-year-earlier"),
        pytest.param([0, 365, -365, 2], id="both-directions"),
        pytest.param([5, 4, 3, 2, 1, 0, -1, -2, -3, -8, -16, -17], id="descending"),
        pytest.param([-(T0_DAY - 3), 0], id="near-1970"),
        pytest.param([0, -1000, -2000, 0, -1000], id="repeats"),
    ],
)
def test_days_before_the_bitmap_base_are_prepended(day_offsets: list[int]) -> None:
    state = _state([make_event(event_id=f"e{i}", ts=day_ts(d)) for i, d in enumerate(day_offsets)])
    days = {T0_DAY + d for d in day_offsets}
    assert state.active_day_count == len(days)
    assert state.first_active_day == min(days)
    assert state.last_active_day == max(days)
    assert state.day_base == min(days)
    assert [d for d in range(min(days) - 10, max(days) + 11) if state.is_active_day(d)] == sorted(days)
    in_order = _state([make_event(event_id=f"e{i}", ts=day_ts(d)) for i, d in enumerate(sorted(day_offsets))])
    assert render_profile("u", state, T0) == render_profile("u", in_order, T0)
    assert state.day_bits == in_order.day_bits


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        pytest.param([(0, PV)], "2026-03-02T12:00:00.000Z", "2026-03-02T12:00:00.000Z", id="single"),
        pytest.param(
            [(0, PV), (-2, PV), (3, PV)], "2026-02-28T12:00:00.000Z", "2026-03-05T12:00:00.000Z", id="unordered"
        ),
        pytest.param(
            [(0, PV), (-5, "nps_response"), (5, "made_up")],
            "2026-02-25T12:00:00.000Z",
            "2026-03-07T12:00:00.000Z",
            id="any-type-counts-as-seen",
        ),
    ],
)
def test_first_and_last_seen(spec: list[tuple[int, str]], first: str, last: str) -> None:
    profile = render_profile("user-1", _state(_events(spec)), T0)
    assert (profile["first_seen"], profile["last_seen"]) == (first, last)


def test_first_seen_keeps_milliseconds() -> None:
    state = _state([make_event(event_id="a", ts=T0 + 7), make_event(event_id="b", ts=T0 + 1)])
    assert (state.first_seen, state.last_seen) == (T0 + 1, T0 + 7)


@pytest.mark.parametrize(
    ("uses", "expected"),
    [
        pytest.param([("feature_used", "export")], {"export": 1}, id="one"),
        pytest.param(
            [("feature_used", "export"), ("feature_used", "search"), ("feature_used", "export")],
            {"export": 2, "search": 1},
            id="counted-per-feature",
        ),
        pytest.param([("page_view", "export"), ("api_call", "search")], {}, id="feature-on-other-types-ignored"),
        pytest.param([("feature_used", None)], {}, id="feature-used-without-feature"),
        pytest.param([("nps_response", "export")], {}, id="non-activity-ignored"),
    ],
)
def test_feature_counts(uses: list[tuple[str, str | None]], expected: dict[str, int]) -> None:
    events = [make_event(event_id=f"e{i}", type=t, feature=f) for i, (t, f) in enumerate(uses)]
    assert render_profile("user-1", _state(events), T0)["features"] == expected


def test_features_render_sorted() -> None:
    names = ["zeta", "alpha", "mid"]
    events = [make_event(event_id=n, type="feature_used", feature=n) for n in names]
    assert list(render_profile("user-1", _state(events), T0)["features"]) == sorted(names)


def test_feature_type_follows_the_vocabulary() -> None:
    vocab = Vocabulary(activity=frozenset({"used_feature"}), feature="used_feature")
    event = make_event(type="used_feature", feature="export", vocab=vocab)
    assert render_profile("user-1", _state([event]), T0)["features"] == {"export": 1}


ZERO = {"activity": 0, "sentiment": 0, "support": 0, "team": 0, "commercial": 0, "privacy": 0, "other": 0}


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        pytest.param([PV], {"activity": 1}, id="activity"),
        pytest.param(
            [PV, "session_start", "purchase", "feature_used", "api_call"], {"activity": 5}, id="all-activity-types"
        ),
        pytest.param(["nps_response"], {"sentiment": 1}, id="sentiment"),
        pytest.param(["support_ticket_opened", "support_ticket_resolved"], {"support": 2}, id="support"),
        pytest.param(["seat_added", "seat_removed", "admin_changed"], {"team": 3}, id="team"),
        pytest.param(["signed_up", "subscribed", "subscription_cancelled"], {"commercial": 3}, id="commercial"),
        pytest.param(["made_up", "another"], {"other": 2}, id="unknown-types-are-other"),
        pytest.param(
            [PV, "nps_response", "support_ticket_opened", "seat_added", "trial_started", "x", PV],
            {"activity": 2, "sentiment": 1, "support": 1, "team": 1, "commercial": 1, "other": 1},
            id="mixed",
        ),
    ],
)
def test_counts_by_category(types: list[str], expected: dict[str, int]) -> None:
    events = [make_event(event_id=f"e{i}", type=t) for i, t in enumerate(types)]
    assert render_profile("user-1", _state(events), T0)["counts"] == ZERO | expected


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        pytest.param([None], None, id="never-known"),
        pytest.param(["acct-1"], "acct-1", id="known"),
        pytest.param(["acct-1", None], "acct-1", id="null-does-not-forget"),
        pytest.param([None, "acct-1"], "acct-1", id="learnt-later"),
    ],
)
def test_account_id(accounts: list[str | None], expected: str | None) -> None:
    events = [make_event(event_id=f"e{i}", account_id=a, ts=T0 + i) for i, a in enumerate(accounts)]
    assert render_profile("user-1", _state(events), T0)["account_id"] == expected


def test_account_id_does_not_depend_on_arrival_order() -> None:
    old = make_event(event_id="old", account_id="acct-old", ts=T0)
    new = make_event(event_id="new", account_id="acct-new", ts=T0 + DAY_MS)
    in_order, reordered = _state([old, new]), _state([new, old])
    assert render_profile("u", in_order, T0 + DAY_MS) == render_profile("u", reordered, T0 + DAY_MS)


def _rich_state() -> UserState:
    events = [
        make_event(event_id="a", type="feature_used", feature="export", ts=day_ts(0)),
        make_event(event_id="b", type="page_view", ts=day_ts(-40)),
        make_event(event_id="c", type="nps_response", properties={"score": 9}, ts=day_ts(-3)),
        make_event(event_id="d", type="feature_used", feature="search", ts=day_ts(2)),
        make_event(event_id="e", type="made_up", ts=day_ts(-500)),
    ]
    return _state(events)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(protocol: int) -> None:
    state = _rich_state()
    copy = pickle.loads(pickle.dumps(state, protocol=protocol))
    assert isinstance(copy, UserState)
    assert render_profile("user-1", copy, T0) == render_profile("user-1", state, T0)
    assert copy.__getstate__() == state.__getstate__()
    # The copy owns its containers: updating it leaves the original alone, and both keep working alike.
    later = make_event(event_id="z", type="feature_used", feature="export", ts=day_ts(-100))
    copy.apply(later)
    assert copy.features["export"] == 2
    assert state.features["export"] == 1
    state.apply(later)
    assert render_profile("user-1", copy, T0) == render_profile("user-1", state, T0)


def test_profile_shape_and_no_property_values() -> None:
    event = make_event(
        type="feature_used", feature="export", properties={"email": "alice@example.com", "phone": "+15550100"}
    )
    profile = render_profile("user-1", _state([event]), T0 + DAY_MS)
    assert profile == {
        "user_id": "user-1",
        "account_id": "acct-1",
        "first_seen": "2026-03-02T12:00:00.000Z",
        "last_seen": "2026-03-02T12:00:00.000Z",
        "as_of": "2026-03-03T12:00:00.000Z",
        "active_days_7": 1,
        "active_days_28": 1,
        "active_days_total": 1,
        "counts": ZERO | {"activity": 1},
        "features": {"export": 1},
        # UserState.apply alone keeps no sessions: the shard adds them (tests/unit/test_sessions.py).
        "sessions_7": 0,
        "sessions_28": 0,
        "minutes_7": 0.0,
        "minutes_28": 0.0,
        "median_session_minutes": None,
    }
    encoded = dumps(profile)
    assert b"alice" not in encoded
    assert b"5550100" not in encoded
