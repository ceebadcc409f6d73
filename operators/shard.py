"""One shard of users: de-duplication, event-time ordering, per-user state and the outputs events cause."""

from __future__ import annotations

import heapq
import zlib
from bisect import bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from operators.engagement import AccountNotice, Context, after_event, next_timer, on_timer
from operators.health import MemberUpdate, render_user
from operators.lapse import LapseModel
from operators.scoring import Band, ScoreModel
from operators.state import DAY_MS, UserState
from schemas.events import Category, Event
from schemas.outputs import Entity, ProfileWrite, Record

HOUR_MS = 3_600_000
HOLD_ALL = 2**62
Output = Record | ProfileWrite | MemberUpdate
_DEFAULT_MODEL = ScoreModel()
_DEFAULT_LAPSE = LapseModel()


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
    lapse: LapseModel = _DEFAULT_LAPSE
    # Replay: at end of input, event time is advanced to this (if later than the last event) so due timers fire.
    until_ms: int = -1
    # Without reordering (live), timers trail the newest event time by this much, so an event up to this late
    # from another partition still lands before a timer of its user fires (as it would in a replay).
    timer_lag_ms: int = 0


_DEFAULT_CONFIG = ShardConfig()


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
    # The timer service: (due, user_id); an entry is live only while it equals that user's timer_at.
    timers: list[tuple[int, str]] = field(default_factory=list)
    # Key features healthy users here use most, recomputed once a day: the re-engagement suggestion.
    popular: list[tuple[str, int]] = field(default_factory=list)
    popular_day: int = -1
    # account_id -> sorted (ts, paused) history from AccountNotices: "was it paused at T" is exact whatever
    # the arrival order.
    account_pauses: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)
    _ctx: Context | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # The cached context holds a closure over the config: rebuilt after a restore, never pickled.
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "_ctx"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self._ctx = None

    def process(self, events: Iterable[Event | AccountNotice], config: ShardConfig) -> list[Output]:
        """Apply a batch; returns the outputs it causes (scores, member updates, erasures).

        Events go through one at a time, so the result does not depend on how they were batched.
        """
        seen = self.seen
        counters = self.counters
        reorder = config.reorder_ms
        outputs: list[Output] = []
        for event in events:
            if isinstance(event, AccountNotice):
                self._notice(event, config)
                continue
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
                timers = self.timers
                # Checked inline: a call per event to find nothing due is the common case on the hot path.
                if timers and timers[0][0] <= ts - 1:
                    self.advance(min(ts - 1, self.watermark - config.timer_lag_ms), config, outputs)
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
        """End of input: apply everything still held back, then let event time reach `until`."""
        outputs: list[Output] = []
        self._release(self.watermark, config, outputs)
        self.advance(max(self.watermark, config.until_ms), config, outputs)
        return outputs

    def _release(self, frontier: int, config: ShardConfig, outputs: list[Output]) -> None:
        pending = self.pending
        while pending and pending[0][0] <= frontier:
            event = heapq.heappop(pending)[2]
            self.advance(event.ts - 1, config, outputs)  # timers due before this event fire first
            self._apply(event, config, outputs)
        if frontier > self.released:
            self.released = frontier
            self.advance(frontier, config, outputs)

    def advance(self, now: int, config: ShardConfig, outputs: list[Output]) -> None:
        """Fire every timer due by `now` (event time in replay; see engine.flow for live mode)."""
        timers = self.timers
        if not timers or timers[0][0] > now:
            return
        context = self._context(config)
        while timers and timers[0][0] <= now:
            due, user_id = heapq.heappop(timers)
            user = self.users.get(user_id)
            if user is None or user.timer_at != due:
                continue  # superseded by a later event, or the user was erased
            before = len(outputs)
            on_timer(user_id, user, due, context, outputs)
            if config.live_profiles:
                self.dirty.add(user_id)
            if len(outputs) > before and user.account_id is not None:
                outputs.append(self._member(user_id, user, due, None, f"timer-{due}"))
            self._arm(user_id, user, config, due)

    def _arm(self, user_id: str, user: UserState, config: ShardConfig, fired_at: int | None) -> None:
        due = next_timer(user, config.lapse, fired_at)
        if due != user.timer_at:
            user.timer_at = due
            if due >= 0:
                heapq.heappush(self.timers, (due, user_id))

    def _context(self, config: ShardConfig) -> Context:
        context = self._ctx
        if context is None or context.model is not config.model or context.lapse is not config.lapse:
            context = self._ctx = Context(
                config.model,
                config.model_version,
                config.lapse,
                lambda u, now: self._next_step(u, now, config),
                self._account_paused,
            )
        return context

    def _notice(self, notice: AccountNotice, config: ShardConfig) -> None:
        history = self.account_pauses.setdefault(notice.account_id, [])
        entry = (notice.ts, notice.paused)
        if entry in history:
            return
        insort(history, entry)
        if not notice.paused:
            # Resumed: members here get one rhythm from the resume before a silence counts again.
            for user_id, user in self.users.items():
                if user.account_id == notice.account_id and user.last_active >= 0:
                    resume = notice.ts + int(config.lapse.cadence_days(user) * DAY_MS)
                    user.cooldown_until = max(user.cooldown_until, resume)
                    user.timer_at = -1
                    self._arm(user_id, user, config, None)

    def _account_paused(self, user: UserState, now: int) -> bool:
        history = self.account_pauses.get(user.account_id or "")
        if not history:
            return False
        index = bisect_right(history, (now, True))
        return index > 0 and history[index - 1][1]

    def _next_step(self, user: UserState, now: int, config: ShardConfig) -> dict[str, Any] | None:
        """The key feature this user has not used that most healthy users here do."""
        day = now // DAY_MS
        if day != self.popular_day:
            counts = dict.fromkeys(config.model.key_features, 0)
            for other in self.users.values():
                if other.band == Band.HEALTHY:
                    for feature in other.features:
                        if feature in counts:
                            counts[feature] += 1
            self.popular = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            self.popular_day = day
        for feature, users in self.popular:
            if feature not in user.features:
                return {"action": "adopt_feature", "feature": feature, "healthy_users_using": users}
        return None

    @staticmethod
    def _member(user_id: str, user: UserState, ts: int, team: str | None, cause: str) -> MemberUpdate:
        assert user.account_id is not None
        return MemberUpdate(
            user.account_id,
            user_id,
            ts,
            user.score,
            user.band,
            user.last_active,
            user.commercial,
            user.commercial_ts,
            team,
            cause,
            sum(user.counts),
        )

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
        commercial_before = user.commercial
        user.apply(event)
        if config.live_profiles:
            self.dirty.add(user_id)
        new_day = user.active_day_count != days_before
        scored = after_event(user_id, user, event, new_day, commercial_before, self._context(config), outputs)
        category = event.category
        if user.account_id is not None and (
            scored or new_day or category is Category.TEAM or category is Category.COMMERCIAL
        ):
            team = event.type if category is Category.TEAM else None
            outputs.append(self._member(user_id, user, user.last_seen, team, event.event_id))
        if new_day or user.timer_at < 0 or category is Category.COMMERCIAL:
            self._arm(user_id, user, config, None)

    def flush_profiles(self, config: ShardConfig = _DEFAULT_CONFIG) -> list[Output]:
        """Render every changed profile once, as of the shard's clock. Coalescing many events of a user
        into one write is what keeps the store from costing more than the processing (the record-cache
        idea of Kafka Streams)."""
        if not self.dirty:
            return []
        as_of = self.watermark
        users = self.users
        writes: list[Output] = [
            ProfileWrite(Entity.USER, user_id, render_user(user_id, users[user_id], as_of, config.model, config.lapse))
            for user_id in sorted(self.dirty)
        ]
        self.dirty = set()
        return writes

    def _prune(self, horizon_ms: int) -> None:
        floor = self.watermark - horizon_ms
        self.seen = {k: ts for k, ts in self.seen.items() if ts >= floor}
        self.prune_at = max(2 * len(self.seen), 4096)
