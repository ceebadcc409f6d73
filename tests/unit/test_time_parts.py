"""The timer service and the ordering buffer on their own: what the shard composes its event time from."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from operators.ordering import OrderingBuffer
from operators.timers import TimerService
from tests.factories import T0, make_event


def test_timers_pop_earliest_first_and_only_when_due() -> None:
    timers = TimerService()
    current = {"a": T0 + 30, "b": T0 + 10, "c": T0 + 20}
    for key, due in current.items():
        timers.set(key, due)
    assert timers.next_due == T0 + 10
    assert timers.pop_due(T0 + 9, current.__getitem__) is None
    assert timers.pop_due(T0 + 25, current.__getitem__) == (T0 + 10, "b")
    assert timers.pop_due(T0 + 25, current.__getitem__) == (T0 + 20, "c")
    assert timers.pop_due(T0 + 25, current.__getitem__) is None
    assert timers.next_due == T0 + 30


def test_a_re_armed_timer_supersedes_the_queued_one() -> None:
    timers = TimerService()
    current = {"a": T0 + 10}
    timers.set("a", T0 + 10)
    current["a"] = T0 + 50  # re-armed: the entry at +10 is stale
    timers.set("a", T0 + 50)
    assert timers.pop_due(T0 + 40, current.__getitem__) is None
    assert timers.pop_due(T0 + 50, current.__getitem__) == (T0 + 50, "a")
    assert not timers


def test_rebuild_keeps_only_armed_timers() -> None:
    timers = TimerService()
    timers.rebuild([(T0 + 5, "a"), (-1, "disarmed"), (T0 + 1, "b")])
    current = {"a": T0 + 5, "b": T0 + 1}
    assert [timers.pop_due(T0 + 9, current.__getitem__) for _ in range(3)] == [(T0 + 1, "b"), (T0 + 5, "a"), None]


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=40))
def test_timers_fire_in_due_order_whatever_the_arming_order(armings: list[tuple[int, int]]) -> None:
    timers = TimerService()
    current: dict[str, int] = {}
    for due, key in armings:  # the owner's protocol: set a timer when the key's due time changes
        if current.get(f"k{key}") != due:
            current[f"k{key}"] = due
            timers.set(f"k{key}", due)
    expected = sorted((due, key) for key, due in current.items())
    fired = []
    while (timer := timers.pop_due(100, current.__getitem__)) is not None:
        fired.append(timer)
        current[timer[1]] = -1  # fired: the owner holds no timer for the key any more
    assert fired == expected


def test_ordering_releases_in_event_time_order_up_to_the_frontier() -> None:
    buffer = OrderingBuffer()
    for ts, event_id in ((T0 + 3, "c"), (T0 + 1, "a"), (T0 + 2, "b"), (T0 + 9, "late-enough")):
        buffer.hold(make_event(event_id=event_id, ts=ts))
    assert [e.event_id for e in buffer.release(T0 + 3)] == ["a", "b", "c"]
    assert len(buffer) == 1
    assert buffer.advance(T0 + 3)
    assert not buffer.advance(T0 + 2)  # the frontier never moves back
    assert buffer.is_late(T0 + 3)
    assert not buffer.is_late(T0 + 4)


def test_ordering_ties_break_by_event_id() -> None:
    buffer = OrderingBuffer()
    for event_id in ("z", "m", "a"):
        buffer.hold(make_event(event_id=event_id, ts=T0))
    assert [e.event_id for e in buffer.release(T0)] == ["a", "m", "z"]
