"""Visitors who sign up: a Segment `alias` (or an `identify` carrying both ids) joins an anonymous id's
activity to the user's state. Segment input only (`[input] format = "segment"`).

A visitor's events (only an `anonymousId`) and the links pass through one identity shard, keyed by the
anonymous id, on their way to the user shards:

* a visitor's event goes on to the visitor's own profile (the journey's `visitor` stage) and is also held
  here, at most HELD_PER_VISITOR per anonymous id (the newest by event time);
* the first link of an anonymous id sends the held events on again under the user id (`Replayed`: same
  event ids and times, folded into the user's state like late events, and counted as `merged`, not applied
  twice), then a `Merge` to the visitor's shard, which drops the visitor's state and profile and says so
  with a `user_merged` lifecycle record;
* a later event of a linked anonymous id goes to the user directly. A link to another user id afterwards
  changes nothing: the first link wins.

A visitor is forgotten here LINK_HORIZON_MS after their last event or link (event time of this shard):
held events are then dropped (their profile stays a visitor's), and a link is no longer followed.
Whatever the arrival order of a visitor's events and their link, the user ends with all of them and the
visitor with none.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.events import Event, UserId

DAY_MS = 86_400_000
HELD_PER_VISITOR = 256
LINK_HORIZON_MS = 30 * DAY_MS


@dataclass(frozen=True, slots=True)
class Replayed:
    """A visitor's event sent again under the user id it was linked to."""

    event: Event


@dataclass(frozen=True, slots=True)
class Merge:
    """To the visitor's user shard: the anonymous id `user_id` is now `into`; its state and profile go."""

    user_id: str
    into: str
    ts: int
    cause: str


@dataclass(slots=True)
class Visitor:
    # (ts, event id, event): a heap, so the oldest goes first when the bound is reached.
    held: list[tuple[int, str, Event]] = field(default_factory=list)
    last: int = -1
    into: str | None = None


@dataclass(slots=True)
class IdentityShard:
    visitors: dict[str, Visitor] = field(default_factory=dict)
    newest: int = -1
    pruned_at: int = -1
    dirty: set[str] = field(default_factory=set)  # no profiles here: never filled
    changed: set[str] = field(default_factory=set)

    def header(self) -> dict[str, Any]:
        return {"newest": self.newest, "pruned_at": self.pruned_at}

    def take_changed(self) -> dict[str, Visitor | None]:
        entries = {key: self.visitors.get(key) for key in self.changed}
        self.changed = set()
        return entries

    def size(self) -> int:
        return len(self.visitors)

    def entries(self) -> dict[str, Visitor]:
        return dict(self.visitors)

    @classmethod
    def restore(cls, header: dict[str, Any], entries: Iterable[tuple[str, Visitor]]) -> IdentityShard:
        shard = cls(newest=header["newest"], pruned_at=header["pruned_at"])
        shard.visitors.update(entries)
        return shard

    def process(self, events: Iterable[Event], config: Any = None) -> list[Any]:
        """`config` (operators.shard.ShardConfig): only its `track_changes` (snapshots on) is read."""
        track = config is None or config.track_changes
        outputs: list[Any] = []
        for event in events:
            anonymous_id = event.anonymous_id
            if anonymous_id is None:  # pragma: no cover - the decoder routes only visitors' events and links
                outputs.append(event)
                continue
            if event.ts > self.newest:
                self.newest = event.ts
            visitor = self.visitors.get(anonymous_id)
            if visitor is None:
                visitor = self.visitors[anonymous_id] = Visitor()
            if track:
                self.changed.add(anonymous_id)
            if event.ts > visitor.last:
                visitor.last = event.ts
            if event.user_id == anonymous_id:  # the visitor's own event
                if visitor.into is not None:
                    outputs.append(replace(event, user_id=UserId(visitor.into), anonymous_id=None))
                    continue
                heapq.heappush(visitor.held, (event.ts, event.event_id, event))
                if len(visitor.held) > HELD_PER_VISITOR:
                    heapq.heappop(visitor.held)
                outputs.append(event)
                continue
            # A link: the event itself is the user's; the first link of the visitor merges them.
            outputs.append(replace(event, anonymous_id=None))
            if visitor.into is None:
                visitor.into = event.user_id
                for _, _, held in sorted(visitor.held):
                    outputs.append(Replayed(replace(held, user_id=event.user_id, anonymous_id=None)))
                visitor.held = []
                outputs.append(Merge(anonymous_id, event.user_id, event.ts, event.event_id))
        if self.newest - self.pruned_at >= DAY_MS:  # a pass over every visitor at most once a day of event time
            self._prune(track)
        return outputs

    def _prune(self, track: bool) -> None:
        self.pruned_at = self.newest
        floor = self.newest - LINK_HORIZON_MS
        gone = [key for key, visitor in self.visitors.items() if visitor.last < floor]
        for key in gone:
            del self.visitors[key]
            if track:
                self.changed.add(key)

    def drain(self, config: Any = None) -> list[Any]:
        return []

    def flush_profiles(self, config: Any = None) -> list[Any]:
        return []
