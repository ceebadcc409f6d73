"""The ordering buffer: events held until event time passes them by the allowed lateness, then released
in event-time order (Flink's and Beam's allowed lateness, applied before the state instead of to windows)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from schemas.events import Event


@dataclass(slots=True)
class OrderingBuffer:
    """`released` is the frontier already passed: an event at or before it is late (applied on arrival,
    out of order, and counted); anything newer waits here for the frontier to pass it."""

    pending: list[tuple[int, str, Event]] = field(default_factory=list)
    released: int = -1

    def __len__(self) -> int:
        return len(self.pending)

    def is_late(self, ts: int) -> bool:
        return ts <= self.released

    def hold(self, event: Event) -> None:
        heapq.heappush(self.pending, (event.ts, event.event_id, event))

    def discard(self, user_id: str) -> int:
        """Drops the held events of one user (a visitor merged into a user: operators.identity); how many."""
        kept = [entry for entry in self.pending if entry[2].user_id != user_id]
        dropped = len(self.pending) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self.pending = kept
        return dropped

    def release(self, frontier: int) -> Iterator[Event]:
        """The held events up to `frontier`, oldest first (ties by event id); the caller applies each
        before taking the next, so timers due between two of them can fire in between."""
        pending = self.pending
        while pending and pending[0][0] <= frontier:
            yield heapq.heappop(pending)[2]

    def advance(self, frontier: int) -> bool:
        """Mark `frontier` as passed; True when it moved."""
        if frontier > self.released:
            self.released = frontier
            return True
        return False
