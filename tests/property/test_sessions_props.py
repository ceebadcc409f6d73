"""Property tests for operators.sessions: sessions follow the definition, whatever the order within lateness."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.sessions import SESSION_END, SESSION_START, Log, add_event, profile_fields, sessions
from operators.shard import Shard, ShardConfig
from tests.factories import DAY_MS, T0, make_event

FAST = settings(max_examples=150, deadline=None)
MIN = 60_000
GAP = 30 * MIN
LATENESS = 60 * MIN
TYPES = ["page_view", "feature_used", SESSION_START, SESSION_END]
RANK = {SESSION_START: 0, SESSION_END: 2}


def reference(events: list[tuple[int, str]], gap: int = GAP) -> list[tuple[int, int]]:
    """The definition, literally: order by time (starts first, ends last at one millisecond); an event
    begins a new session if it is the first, or it is later than the previous event and either it is a
    session_start, the previous one is a session_end, or they are more than `gap` apart."""
    found: list[list[int]] = []
    previous: tuple[int, str] | None = None
    for ts, kind in sorted(events, key=lambda e: (e[0], RANK.get(e[1], 1))):
        if previous is None or (
            ts > previous[0] and (kind == SESSION_START or previous[1] == SESSION_END or ts - previous[0] > gap)
        ):
            found.append([ts, ts])
        else:
            found[-1][1] = ts
        previous = (ts, kind)
    return [(a, b) for a, b in found]


def _fold(events: list[tuple[int, str]]) -> Log | None:
    log: Log | None = None
    for ts, kind in events:
        log = add_event(log, ts, kind, GAP)
    return log


# Minutes over ~2 days: dense enough for gaps, bridges and same-millisecond ties.
times = st.integers(0, 3000).map(lambda m: T0 + m * MIN)
plain = st.lists(st.tuples(times, st.sampled_from(TYPES[:2])), min_size=1, max_size=40)
mixed = st.lists(st.tuples(times, st.sampled_from(TYPES)), min_size=1, max_size=40)


@FAST
@given(plain, st.randoms(use_true_random=False))
def test_plain_activity_gives_the_same_sessions_in_any_order(events: list[tuple[int, str]], rnd: random.Random) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert sessions(_fold(shuffled)) == reference(events)


@FAST
@given(mixed, st.randoms(use_true_random=False))
def test_markers_in_event_time_order_with_ties_in_any_order(events: list[tuple[int, str]], rnd: random.Random) -> None:
    # What the shard's ordering buffer does: event time order, ties by event id (any order of types).
    keyed = [(ts, rnd.random(), kind) for ts, kind in events]
    ordered = [(ts, kind) for ts, _, kind in sorted(keyed)]
    assert sessions(_fold(ordered)) == reference(events)


@FAST
@given(mixed, st.randoms(use_true_random=False))
def test_shuffling_within_the_lateness_changes_no_minutes_or_sessions(
    events: list[tuple[int, str]], rnd: random.Random
) -> None:
    docs = [make_event(f"e{i:03d}", "u", "acme", kind, ts) for i, (ts, kind) in enumerate(events)]
    # Each event arrives at most the lateness after its own time (in event time): within what is re-ordered.
    arrival = sorted(docs, key=lambda e: (e.ts + rnd.randrange(LATENESS), e.event_id))
    config = ShardConfig(reorder_ms=LATENESS)
    as_of = T0 + 3 * DAY_MS
    results = []
    for order in (sorted(docs, key=lambda e: e.ts), arrival):
        shard = Shard()
        shard.process(order, config)
        shard.drain(config)
        log = shard.users["u"].sessions
        assert shard.counters.late == 0
        results.append((sessions(log), profile_fields(log, as_of)))
    assert results[0] == results[1]
    assert results[0][0] == reference(events)


@st.composite
def arrivals_within_lateness(draw: st.DrawFn) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Events in event-time order, and an arrival order in which none is later than LATENESS behind the
    newest event arrived before it (what `pulse run` without reordering may see)."""
    steps = draw(st.lists(st.integers(0, 50 * MIN), min_size=1, max_size=30))
    kinds = draw(st.lists(st.sampled_from(TYPES), min_size=len(steps), max_size=len(steps)))
    times = [T0 + sum(steps[: i + 1]) for i in range(len(steps))]
    ordered = list(zip(times, kinds, strict=True))
    rng = random.Random(draw(st.integers(0, 2**32)))
    arrived: list[tuple[int, str]] = []
    rest = list(ordered)
    while rest:
        # Only events within LATENESS of the earliest one still to come, so that none of those left is ever
        # more than LATENESS behind the newest arrived.
        earliest = rest[0][0]
        allowed = [e for e in rest if e[0] - earliest <= LATENESS]
        pick = rng.choice(allowed[:4])
        arrived.append(pick)
        rest.remove(pick)
    return ordered, arrived


@FAST
@given(arrivals_within_lateness())
def test_held_sessions_do_not_depend_on_arrival_within_the_lateness(
    case: tuple[list[tuple[int, str]], list[tuple[int, str]]],
) -> None:
    from operators.sessions import add_held

    ordered, arrived = case
    base, pending, view = None, None, None
    for ts, kind in arrived:
        base, pending, view = add_held(base, pending, view, ts, kind, GAP, LATENESS)
    assert sessions(view) == reference(ordered)
    as_of = max(ts for ts, _ in ordered)
    assert profile_fields(view, as_of) == profile_fields(_fold(ordered), as_of)
