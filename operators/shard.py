"""One shard of users: de-duplication, event-time ordering, per-user state and the outputs events cause."""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from operators.health import MemberUpdate, evaluate, render_user
from operators.scoring import ScoreModel
from operators.state import DAY_MS, UserState
from schemas.events import Category, Event
from schemas.outputs import Entity, ProfileWrite, Record

HOUR_MS = 3_600_000
HOLD_ALL = 2**62
Output = Record | ProfileWrite | MemberUpdate
_DEFAULT_MODEL = ScoreModel()


def shard_of(user_id: str, shards: int) -> int:
    """A stable shard number: crc32 is the same in every process, unlike the built-in str hash."""
    return zlib.crc32(user_id.encode()) % shards


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """What a shard needs to know; built once from the settings."""

    dedup_horizon_ms: int = 7 * 24 * HOUR_MS
    # Live mode keeps the users whose profile changed for the next flush; replay renders them once at the end.
    live_profiles: bool = False
    # Events are held back this long (event time) and applied in event-time order, so bounded reordering
    # cannot change any output. 0 applies each event on arrival (lowest latency).
    reorder_ms: int = 0
    # Account shards hear from many user shards whose progress differs by worker; replay holds their
    # updates to the end of input (HOLD_ALL) so account outputs do not depend on the worker count.
    account_reorder_ms: int = 0
    model: ScoreModel = _DEFAULT_MODEL
    model_version: str = field(default=_DEFAULT_MODEL.version)


@dataclass(slots=True)
class Counters:
    applied: int = 0
    duplicates: int = 0
    erasures: int = 0
    # Events from before a user's erasure that arrive after it: accounted for, never re-create the user.
    suppressed_after_erasure: int = 0
    # Events older than the de-duplication horizon: applied, but a duplicate this old would not be caught.
    beyond_dedup_horizon: int = 0
    # Events later than the allowed lateness: applied at once, out of event-time order.
    late: int = 0


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
    # Events waiting for the watermark to pass them by the allowed lateness: (ts, event_id, event).
    pending: list[tuple[int, str, Event]] = field(default_factory=list)
    released: int = -1

    def process(self, events: Iterable[Event], config: ShardConfig) -> list[Output]:
        """Apply a batch; returns the outputs it causes (scores, member updates, erasures).

        Events go through one at a time, so the result does not depend on how they were batched.
        """
        seen = self.seen
        counters = self.counters
        reorder = config.reorder_ms
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
            if reorder <= 0:
                self._apply(event, config, outputs)
            elif ts <= self.released:
                counters.late += 1
                self._apply(event, config, outputs)
            else:
                heapq.heappush(self.pending, (ts, event.event_id, event))
                self._release(self.watermark - reorder, config, outputs)
        if len(seen) >= self.prune_at:
            self._prune(config.dedup_horizon_ms)
        return outputs

    def drain(self, config: ShardConfig) -> list[Output]:
        """End of input: apply everything still held back, in event-time order."""
        outputs: list[Output] = []
        self._release(self.watermark, config, outputs)
        return outputs

    def _release(self, frontier: int, config: ShardConfig, outputs: list[Output]) -> None:
        pending = self.pending
        while pending and pending[0][0] <= frontier:
            self._apply(heapq.heappop(pending)[2], config, outputs)
        if frontier > self.released:
            self.released = frontier

    def _apply(self, event: Event, config: ShardConfig, outputs: list[Output]) -> None:
        user_id = event.user_id
        ts = event.ts
        users = self.users
        if event.category is Category.PRIVACY:
            self.counters.erasures += 1
            if ts > self.erased.get(user_id, -1):
                self.erased[user_id] = ts
            users.pop(user_id, None)
            self.dirty.discard(user_id)
            outputs.append(ProfileWrite(Entity.USER, user_id, None))
            return
        if self.erased and ts <= self.erased.get(user_id, -1):
            self.counters.suppressed_after_erasure += 1
            return
        user = users.get(user_id)
        if user is None:
            user = users[user_id] = UserState(ts)
        days_before = user.active_day_count
        user.apply(event)
        if config.live_profiles:
            self.dirty.add(user_id)
        category = event.category
        as_of = user.last_seen
        new_day = user.active_day_count != days_before
        record = None
        # Plain activity on a day already counted, with no feature, cannot move any component (recency is
        # measured to the user's own newest event, which is this one): skip the evaluation, it is the
        # commonest event by far.
        if not (
            category is Category.ACTIVITY
            and not new_day
            and event.feature is None
            and user.score >= 0
            and as_of // DAY_MS == user.scored_day
        ):
            record = evaluate(config.model, user_id, user, as_of, event.event_id, config.model_version)
            user.scored_day = as_of // DAY_MS
            if record is not None:
                outputs.append(record)
        account = user.account_id
        if account is not None and (
            record is not None or new_day or category is Category.TEAM or category is Category.COMMERCIAL
        ):
            outputs.append(
                MemberUpdate(
                    account,
                    user_id,
                    user.last_seen,
                    user.score,
                    user.band,
                    user.last_active,
                    user.commercial,
                    user.commercial_ts,
                    event.type if category is Category.TEAM else None,
                    event.event_id,
                    sum(user.counts),
                )
            )

    def flush_profiles(self, model: ScoreModel = _DEFAULT_MODEL) -> list[Output]:
        """Render every changed profile once, as of the shard's clock. Coalescing many events of a user
        into one write is what keeps the store from costing more than the processing (the record-cache
        idea of Kafka Streams)."""
        if not self.dirty:
            return []
        as_of = self.watermark
        users = self.users
        writes: list[Output] = [
            ProfileWrite(Entity.USER, user_id, render_user(user_id, users[user_id], as_of, model))
            for user_id in sorted(self.dirty)
        ]
        self.dirty = set()
        return writes

    def _prune(self, horizon_ms: int) -> None:
        floor = self.watermark - horizon_ms
        self.seen = {k: ts for k, ts in self.seen.items() if ts >= floor}
        self.prune_at = max(2 * len(self.seen), 4096)
