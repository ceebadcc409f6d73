"""One shard of users: de-duplication, per-user state and the outputs a batch of events causes."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from operators.state import UserState, render_profile
from schemas.events import Category, Event
from schemas.outputs import Entity, ProfileWrite, Record

HOUR_MS = 3_600_000
Output = Record | ProfileWrite


def shard_of(user_id: str, shards: int) -> int:
    """A stable shard number: crc32 is the same in every process, unlike the built-in str hash."""
    return zlib.crc32(user_id.encode()) % shards


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """What a shard needs to know; built once from the settings."""

    dedup_horizon_ms: int = 7 * 24 * HOUR_MS
    # Live mode keeps the users whose profile changed for the next flush; replay renders them once at the end.
    live_profiles: bool = False


@dataclass(slots=True)
class Counters:
    applied: int = 0
    duplicates: int = 0
    erasures: int = 0
    # Events from before a user's erasure that arrive after it: accounted for, never re-create the user.
    suppressed_after_erasure: int = 0
    # Events older than the de-duplication horizon: applied, but a duplicate this old would not be caught.
    beyond_dedup_horizon: int = 0


@dataclass(slots=True)
class Shard:
    """State of every user whose id hashes to this shard, plus the event ids seen recently."""

    users: dict[str, UserState] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    # user_id -> event time of their latest erasure; ids only, no personal data.
    erased: dict[str, int] = field(default_factory=dict)
    watermark: int = -1
    counters: Counters = field(default_factory=Counters)
    prune_at: int = 4096
    # Users whose profile changed since the last flush (live mode); see flush_profiles.
    dirty: set[str] = field(default_factory=set)

    def process(self, events: Iterable[Event], config: ShardConfig) -> list[Output]:
        """Apply a batch; returns the outputs it causes at once (erasures); profiles wait for a flush."""
        users = self.users
        seen = self.seen
        counters = self.counters
        dirty = self.dirty
        live = config.live_profiles
        outputs: list[Output] = []
        for event in events:
            if event.event_id in seen:
                counters.duplicates += 1
                continue
            ts = event.ts
            seen[event.event_id] = ts
            if ts > self.watermark:
                self.watermark = ts
            elif ts < self.watermark - config.dedup_horizon_ms:
                counters.beyond_dedup_horizon += 1
            counters.applied += 1
            user_id = event.user_id
            if event.category is Category.PRIVACY:
                counters.erasures += 1
                if ts > self.erased.get(user_id, -1):
                    self.erased[user_id] = ts
                users.pop(user_id, None)
                dirty.discard(user_id)
                outputs.append(ProfileWrite(Entity.USER, user_id, None))
                continue
            if self.erased and ts <= self.erased.get(user_id, -1):
                counters.suppressed_after_erasure += 1
                continue
            user = users.get(user_id)
            if user is None:
                user = users[user_id] = UserState(ts)
            user.apply(event)
            if live:
                dirty.add(user_id)
        if len(seen) >= self.prune_at:
            self._prune(config.dedup_horizon_ms)
        return outputs

    def flush_profiles(self) -> list[Output]:
        """Render every changed profile once, as of the shard's clock. Coalescing many events of a user
        into one write is what keeps the store from costing more than the processing (the record-cache
        idea of Kafka Streams)."""
        if not self.dirty:
            return []
        as_of = self.watermark
        users = self.users
        writes: list[Output] = [
            ProfileWrite(Entity.USER, user_id, render_profile(user_id, users[user_id], as_of))
            for user_id in sorted(self.dirty)
        ]
        self.dirty = set()
        return writes

    def _prune(self, horizon_ms: int) -> None:
        floor = self.watermark - horizon_ms
        self.seen = {k: ts for k, ts in self.seen.items() if ts >= floor}
        self.prune_at = max(2 * len(self.seen), 4096)
