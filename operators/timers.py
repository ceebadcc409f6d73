"""The timer service: one event-time timer per key, earliest first, the way Flink's timer service keeps them."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class TimerService:
    """Event-time timers for many keys in one heap.

    A key has at most one current timer; its owner records which (Pulse: `UserState.timer_at`). Setting a
    new timer for a key leaves the old heap entry behind, stale: `pop_due` skips entries the owner no longer
    holds, so re-arming costs a push instead of a search. The heap is rebuilt from the owners' current
    timers after a restore (`rebuild`), which is why it is never part of a snapshot.
    """

    heap: list[tuple[int, str]] = field(default_factory=list)

    def set(self, key: str, due: int) -> None:
        heapq.heappush(self.heap, (due, key))

    def __bool__(self) -> bool:
        return bool(self.heap)

    @property
    def next_due(self) -> int | None:
        """The earliest due time queued (possibly of a stale entry: a lower bound, never too late)."""
        return self.heap[0][0] if self.heap else None

    def due_by(self, now: int) -> bool:
        return bool(self.heap) and self.heap[0][0] <= now

    def pop_due(self, now: int, current: Callable[[str], int]) -> tuple[int, str] | None:
        """The earliest timer due by `now` that `current(key)` still holds, removed; None when none is due."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            if current(key) == due:
                return due, key
        return None

    def rebuild(self, timers: Iterable[tuple[int, str]]) -> None:
        self.heap = [(due, key) for due, key in timers if due >= 0]
        heapq.heapify(self.heap)
