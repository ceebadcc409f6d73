"""Sessions ("time in product") from a user's activity events, in event time, as a small array of
(first, last) pairs merged on insert.

Definition. Order a user's activity events by event time; at the same millisecond a `session_start`
sorts first and a `session_end` last. A session is a maximal run of consecutive events at most `gap`
apart, except that a `session_start` begins a new session (it is never linked to the event before it)
and a `session_end` closes its session at its own time (never linked to the event after it). A
session's length is its last event's time minus its first's: a session of one event (or of events at
one millisecond) lasts 0 minutes and still counts as a session.

Sessions are counted in a window by the UTC day of their first event, like the active-day windows: the
7 (28) days ending with the day of `as_of`.

Order. Plain activity events give the same sessions in any arrival order: each is merged with the
sessions it falls into or bridges. A marker is applied exactly when it arrives before the events of
its session that come after it (the shard applies events in event-time order within the allowed
lateness, ties by event id; the one tie that needs it, a start at the last millisecond of a session,
is handled with the `prev` column below). A marker that would split a session at an inner point
already seen (later than the lateness, or live without `engine.reorder_live`) counts as plain activity.

State. An `array('q')`: one header word (bit 0: a session longer than 0 min was dropped, so the user
has had time in product), then four words per session in order of `first`: first, last, prev (the
latest event time before `last` in the session; NONE when the session has one distinct time, UNKNOWN
after a split) and flags (BEGUN: starts with a `session_start`; CLOSED: ends with a `session_end`).
Only sessions starting in the last WINDOW_DAYS days (and any still open within `gap` of the newest
event) are kept, and at most MAX_SESSIONS: a few hundred bytes for a typical user.
"""

from __future__ import annotations

from array import array
from bisect import insort
from statistics import median
from typing import Any, TypeAlias

DAY_MS = 86_400_000
MINUTE_MS = 60_000
SESSION_START = "session_start"
SESSION_END = "session_end"
WINDOW_DAYS = 28
MAX_SESSIONS = 1024
BEGUN, CLOSED = 1, 2
NONE, UNKNOWN = -1, -2
_POSITIVE_DROPPED = 1
_STRIDE = 4

Log: TypeAlias = "array[int]"  # array("q"): see the module docstring


def add_event(log: Log | None, ts: int, event_type: str, gap_ms: int) -> Log:
    """Fold one activity event (its time and type) into the log; returns the log (a new one for None)."""
    if log is None:
        log = array("q", [0])
    kind = BEGUN if event_type == SESSION_START else CLOSED if event_type == SESSION_END else 0
    n = (len(log) - 1) // _STRIDE
    lo, hi = 0, n  # lo: how many sessions start at or before ts
    while lo < hi:
        mid = (lo + hi) // 2
        if log[1 + _STRIDE * mid] <= ts:
            lo = mid + 1
        else:
            hi = mid
    left = 1 + _STRIDE * (lo - 1) if lo > 0 else -1
    right = 1 + _STRIDE * lo if lo < n else -1
    if left >= 0 and ts <= log[left + 1]:
        _inside(log, left, ts, kind)
        return log
    link_left = left >= 0 and kind != BEGUN and not log[left + 3] & CLOSED and ts - log[left + 1] <= gap_ms
    link_right = right >= 0 and kind != CLOSED and not log[right + 3] & BEGUN and log[right] - ts <= gap_ms
    if link_left and link_right:
        single = log[right] == log[right + 1]
        prev = ts if single else log[right + 2]
        flags = (log[left + 3] & BEGUN) | (log[right + 3] & CLOSED)
        log[left + 1 : left + 4] = array("q", [log[right + 1], prev, flags])
        del log[right : right + _STRIDE]
    elif link_left:
        log[left + 2] = log[left + 1]
        log[left + 1] = ts
        log[left + 3] |= kind & CLOSED
    elif link_right:
        if log[right] == log[right + 1]:
            log[right + 2] = ts
        log[right] = ts
        log[right + 3] |= kind & BEGUN
    else:
        at = right if right >= 0 else len(log)
        log[at:at] = array("q", [ts, ts, NONE, kind])
    _prune(log, gap_ms)
    return log


def _inside(log: Log, at: int, ts: int, kind: int) -> None:
    """An event at or between a session's first and last event times."""
    first, last, prev, flags = log[at], log[at + 1], log[at + 2], log[at + 3]
    if kind == 0:
        if first < ts < last and prev != UNKNOWN and ts > prev:
            log[at + 2] = ts
    elif kind == BEGUN:
        if ts == first:
            log[at + 3] = flags | BEGUN
        elif ts == last and prev >= 0:
            # A start at the session's last millisecond (applied after an event there): the events at
            # `ts` begin a new session; the rest ends at the latest event before them.
            left = array("q", [first, prev, NONE if first == prev else UNKNOWN, flags & BEGUN])
            log[at : at + _STRIDE] = left + array("q", [ts, ts, NONE, BEGUN | (flags & CLOSED)])
    elif ts == last:  # a session_end at the session's last millisecond closes it
        log[at + 3] = flags | CLOSED


def _prune(log: Log, gap_ms: int) -> None:
    """Drop sessions that started before the window of the newest session and cannot grow any more."""
    if len(log) <= 1:
        return
    newest = log[len(log) - _STRIDE + 1]  # the last event time of the latest session
    floor_day = newest // DAY_MS - WINDOW_DAYS + 1
    drop = 0
    n = (len(log) - 1) // _STRIDE
    while drop < n:
        at = 1 + _STRIDE * drop
        first, last = log[at], log[at + 1]
        if n - drop <= MAX_SESSIONS and (first // DAY_MS >= floor_day or last >= newest - gap_ms):
            break
        if last > first:
            log[0] |= _POSITIVE_DROPPED
        drop += 1
    if drop:
        del log[1 : 1 + _STRIDE * drop]


def sessions(log: Log | None) -> list[tuple[int, int]]:
    """The (first, last) event times of the sessions kept, oldest first."""
    if log is None:
        return []
    return [(log[at], log[at + 1]) for at in range(1, len(log), _STRIDE)]


def lengths(log: Log | None, as_of_ms: int, days: int) -> list[int]:
    """The lengths (ms) of the sessions whose first event falls on the `days` UTC days ending with the
    day of `as_of_ms`."""
    if log is None:
        return []
    today = as_of_ms // DAY_MS
    low = today - days + 1
    return [log[at + 1] - log[at] for at in range(1, len(log), _STRIDE) if low <= log[at] // DAY_MS <= today]


def minutes(log: Log | None, as_of_ms: int, days: int) -> float:
    """Session minutes in the `days` UTC days ending with the day of `as_of_ms` (read on every score: no
    list, one comparison of each session's first event against the window's bounds in ms)."""
    if log is None:
        return 0.0
    today = as_of_ms // DAY_MS
    low, high = (today - days + 1) * DAY_MS, (today + 1) * DAY_MS
    total = 0
    for at in range(1, len(log), _STRIDE):
        first = log[at]
        if low <= first < high:
            total += log[at + 1] - first
    return round(total / MINUTE_MS, 2)


def had_time_before(log: Log | None, as_of_ms: int) -> bool:
    """Whether a session longer than 0 min started before the day of `as_of_ms`: time in product has a
    signal for the score (complete days only, like `complete_day_minutes`)."""
    if log is None:
        return False
    today = as_of_ms // DAY_MS
    return bool(log[0] & _POSITIVE_DROPPED) or any(
        log[at + 1] > log[at] and log[at] // DAY_MS < today for at in range(1, len(log), _STRIDE)
    )


def complete_day_minutes(log: Log | None, as_of_ms: int, days: int) -> float:
    """Session minutes over the `days` complete UTC days before the day of `as_of_ms`: what the score and
    the account read. Today's sessions still grow with every event, so counting them would make a score
    depend on which of the day's events it was computed at (arrival order, in `pulse run`)."""
    return minutes(log, as_of_ms - DAY_MS, days)


def median_minutes(values: list[int]) -> float | None:
    return round(median(values) / MINUTE_MS, 2) if values else None


def profile_fields(log: Log | None, as_of_ms: int) -> dict[str, Any]:
    """The profile's session fields as of `as_of_ms`."""
    week, month = lengths(log, as_of_ms, 7), lengths(log, as_of_ms, WINDOW_DAYS)
    return {
        "sessions_7": len(week),
        "sessions_28": len(month),
        "minutes_7": round(sum(week) / MINUTE_MS, 2),
        "minutes_28": round(sum(month) / MINUTE_MS, 2),
        "median_session_minutes": median_minutes(month),
    }


# Arrival order. Events up to the allowed lateness behind the user's newest activity are held in `pending`
# (sorted) and folded into `base` only once that lateness has passed, so `view` = base + pending folded in
# event-time order is what a replay (which sorts within the lateness) builds, whatever order they arrived
# in. Only an event later than that is folded as it comes (the replay's "late" events).
_TYPES = (SESSION_START, "", SESSION_END)  # by rank: at one millisecond a start sorts first, an end last
Pending: TypeAlias = "list[tuple[int, int]]"  # (ts, rank), sorted


def _rank(event_type: str) -> int:
    return 0 if event_type == SESSION_START else 2 if event_type == SESSION_END else 1


def _newest(base: Log | None, pending: Pending | None) -> int:
    if pending:
        return pending[-1][0]
    return base[len(base) - _STRIDE + 1] if base is not None and len(base) > 1 else -1


def _fold(log: Log | None, pending: Pending, gap_ms: int) -> Log | None:
    view = array("q", log) if log is not None else None
    for ts, rank in pending:
        view = add_event(view, ts, _TYPES[rank], gap_ms)
    return view


def add_held(
    base: Log | None, pending: Pending | None, view: Log | None, ts: int, event_type: str, gap_ms: int, lateness_ms: int
) -> tuple[Log | None, Pending | None, Log | None]:
    """(base, pending, view) after one activity event; `view` is what every reader uses."""
    newest = _newest(base, pending)
    if ts < newest - lateness_ms:  # later than the lateness: folded as it comes, as a replay would
        base = add_event(base, ts, event_type, gap_ms)
        return base, pending, (_fold(base, pending, gap_ms) if pending else base)
    entry = (ts, _rank(event_type))
    if pending is None:
        pending = []
    if not pending or entry >= pending[-1]:
        pending.append(entry)
        view = add_event(array("q", view) if view is base and view is not None else view, ts, event_type, gap_ms)
    else:
        insort(pending, entry)
        view = _fold(base, pending, gap_ms)
    frontier = max(newest, ts) - lateness_ms
    released = 0
    while released < len(pending) and pending[released][0] < frontier:
        base = add_event(base, pending[released][0], _TYPES[pending[released][1]], gap_ms)
        released += 1
    if released:
        del pending[:released]
    if not pending:
        return base, None, base
    return base, pending, view
