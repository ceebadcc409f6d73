"""One shard of users: de-duplication and erasure, per-user state and the outputs events cause, composing
the time parts (LowWatermark, OrderingBuffer, TimerService)."""

from __future__ import annotations

import zlib
from bisect import bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from operators import insights
from operators.access import access_export
from operators.alerts import user_merged
from operators.engagement import (
    AccountNotice,
    Context,
    after_event,
    lapse_deadline,
    next_timer,
    on_erasure,
    on_timer,
)
from operators.health import ERASED, MOVED_IN, MOVED_OUT, MemberUpdate, render_user
from operators.identity import Merge, Replayed
from operators.journey import DEFAULT_JOURNEY, Journey
from operators.journey import after_event as journey_after_event
from operators.lapse import LapseModel
from operators.ordering import OrderingBuffer
from operators.scoring import Band, ScoreModel
from operators.sessions import add_held, complete_day_minutes
from operators.state import DAY_MS, UserState
from operators.timers import TimerService
from operators.watermark import LowWatermark, Progress
from schemas.events import ACCESS_REQUESTED, Category, Event
from schemas.outputs import Entity, ProfileWrite, Record

HOUR_MS = 3_600_000
HOLD_ALL = 2**62
Output = Record | ProfileWrite | MemberUpdate | insights.UserFacts | insights.JourneyStep
# What an incremental snapshot stores per user: their state (None once erased) and the event ids of theirs
# seen recently (kept with the user, so a snapshot of the changed users carries exactly the ids that changed).
UserEntry = tuple[UserState | None, dict[str, int] | None]
# Shard fields that are not in a snapshot's header: entries go one per user, the timer heap is rebuilt.
_NOT_IN_HEADER = frozenset({"users", "seen", "seen_count", "timers", "changed", "_ctx"})
_DEFAULT_MODEL = ScoreModel()
_DEFAULT_LAPSE = LapseModel()
_PRIVACY = Category.PRIVACY


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
    # Without reordering (live), timers trail the shard's event time by this much, so an event up to this
    # late from another partition still lands before a timer of its user fires (as it would in a replay).
    timer_lag_ms: int = 0
    # A late event more than this far before its user's first event only adds to the user's counts: one
    # bad client clock (1971) must not stretch a user's state (the active-day bitmap) across decades.
    max_backfill_ms: int = 366 * DAY_MS
    # An event this far ahead of its shard's event time moves only its own user until a second user's
    # events confirm the new time: one bad client clock cannot time out, release or prune anybody else.
    max_clock_jump_ms: int = 30 * DAY_MS
    # Live: when every input partition is idle, the wall clock drives timers, but only while the data's
    # event time is this close to it (a backfill of old history keeps event time).
    wall_clock_max_lag_ms: int = 7 * 24 * HOUR_MS
    # Live: every input partition (topic#partition), known up front so that one not yet polled — by a
    # process of the cluster that starts later — holds event time back instead of being overlooked.
    input_partitions: tuple[str, ...] = ()
    # Recovery on: shards note which users changed, so a snapshot writes only those (engine.statestore).
    track_changes: bool = False
    # The insights stage is downstream (engine.flow): send it UserFacts, and leave alerts' next_step to it.
    insights: bool = False
    # Sessions: a user's activity events at most this far apart (event time) are one session.
    session_gap_ms: int = 30 * 60_000
    # The journey's stages, exits and the events entering them (operators.journey).
    journey: Journey = DEFAULT_JOURNEY

    @property
    def lateness_ms(self) -> int:
        return max(self.reorder_ms, self.timer_lag_ms)

    @property
    def erased_horizon_ms(self) -> int:
        """How long an erasure is remembered: as long as an event from before it could still arrive."""
        return self.dedup_horizon_ms + self.lateness_ms


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
    # Events more than max_backfill before their user's first event: counted, not applied to the state.
    beyond_backfill: int = 0
    # Segment input: a visitor's events applied again to the user they signed up as (operators.identity);
    # counted as applied once, when they were the visitor's.
    merged: int = 0
    # Visitors whose state went to a user (and their profile away).
    visitors_merged: int = 0


@dataclass(slots=True)
class Shard:
    """State of every user whose id hashes to this shard, plus the event ids seen recently."""

    users: dict[str, UserState] = field(default_factory=dict)
    # user_id -> {event_id: ts}: SDKs number events per device, so the same id from two users is two events.
    seen: dict[str, dict[str, int]] = field(default_factory=dict)
    seen_count: int = 0
    # user_id -> event time of their latest erasure; ids only, kept for ShardConfig.erased_horizon_ms.
    erased: dict[str, int] = field(default_factory=dict)
    # The shard's event time: the newest event time seen, except that a jump of more than
    # max_clock_jump_ms by one user is held as `lead` until another user confirms it (see _observe).
    event_time: int = -1
    lead_user: str = ""
    lead_ts: int = -1
    counters: Counters = field(default_factory=Counters)
    # Live: every input partition's event-time progress (Progress notices from the decoders).
    inputs: LowWatermark = field(default_factory=LowWatermark)
    prune_at: int = 4096
    # Users whose profile changed since the last flush (live mode); see flush_profiles.
    dirty: set[str] = field(default_factory=set)
    # Events waiting for event time to pass them by the allowed lateness.
    ordering: OrderingBuffer = field(default_factory=OrderingBuffer)
    # Live without reordering: users with events waiting in `ordering` (see _lapse_undecided) -> how many.
    held: dict[str, int] = field(default_factory=dict)
    # One timer per user; the current one is the user's timer_at.
    timers: TimerService = field(default_factory=TimerService)
    # Users whose state (or seen ids) changed since the last snapshot, when ShardConfig.track_changes.
    changed: set[str] = field(default_factory=set)
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

    def header(self) -> dict[str, Any]:
        """The shard without its users: what an incremental snapshot keeps besides the changed entries."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in _NOT_IN_HEADER}

    def take_changed(self) -> dict[str, UserEntry | None]:
        """The entries of the users changed since the last call (None: nothing left of the user)."""
        users, seen = self.users, self.seen
        entries: dict[str, UserEntry | None] = {}
        for user_id in self.changed:
            user, ids = users.get(user_id), seen.get(user_id)
            entries[user_id] = None if user is None and ids is None else (user, ids)
        self.changed = set()
        return entries

    def size(self) -> int:
        return len(self.users)

    def entries(self) -> dict[str, UserEntry]:
        """Every user's entry, and the ids kept for the erased (what a full snapshot holds)."""
        seen = self.seen
        entries: dict[str, UserEntry] = {user_id: (user, seen.get(user_id)) for user_id, user in self.users.items()}
        for user_id, ids in seen.items():
            if user_id not in entries:
                entries[user_id] = (None, ids)
        return entries

    @classmethod
    def restore(cls, header: dict[str, Any], entries: Iterable[tuple[str, UserEntry]]) -> Shard:
        """A shard from a snapshot header and its users' latest entries; the timer heap is rebuilt."""
        shard = cls(**header)
        users, seen = shard.users, shard.seen
        for user_id, (user, ids) in entries:
            if user is not None:
                users[user_id] = user
            if ids:
                seen[user_id] = ids
        shard.seen_count = sum(len(ids) for ids in seen.values())
        shard.timers.rebuild((user.timer_at, user_id) for user_id, user in users.items())
        return shard

    def process(
        self,
        events: Iterable[Event | AccountNotice | Progress | Replayed | Merge],
        config: ShardConfig,
        wall_ms: int | None = None,
    ) -> list[Output]:
        """Apply a batch; returns the outputs it causes (scores, member updates, erasures).

        Events go through one at a time, so the result does not depend on how they were batched.
        `wall_ms` (live mode) caps timers: nothing fires ahead of the wall clock, whatever the data says.
        """
        seen = self.seen
        counters = self.counters
        reorder = config.reorder_ms
        track = config.track_changes
        if config.input_partitions and not self.inputs.known:
            for name in config.input_partitions:
                self.inputs.observe(Progress(name, -1))
        following = config.live_profiles and self.inputs.known
        outputs: list[Output] = []
        for item in events:
            replayed = False
            if isinstance(item, Event):
                event = item
            elif isinstance(item, Replayed):  # a visitor's event again, as the user's (operators.identity)
                event, replayed = item.event, True
            else:
                if isinstance(item, Merge):
                    self._erase_visitor(item, config, outputs)
                elif isinstance(item, AccountNotice):
                    self._notice(item, config)
                elif isinstance(item, Progress):
                    self.inputs.observe(item)
                    following = config.live_profiles
                    if following:
                        self.follow(config, wall_ms, outputs)
                continue
            ids = seen.get(event.user_id)
            if ids is None:
                ids = seen[event.user_id] = {}
            elif event.event_id in ids:
                if replayed:
                    counters.merged += 1
                else:
                    counters.duplicates += 1
                continue
            ts = event.ts
            ids[event.event_id] = ts
            self.seen_count += 1
            if track:
                self.changed.add(event.user_id)
            if event.category is _PRIVACY and event.type == ACCESS_REQUESTED:
                counters.applied += 1
                self._access(event, config, outputs, following, wall_ms)
                continue
            if ts > self.event_time:
                self._observe(event.user_id, ts, config.max_clock_jump_ms)
            elif ts < self.event_time - config.dedup_horizon_ms:
                counters.beyond_dedup_horizon += 1
            if replayed:
                counters.merged += 1  # counted as applied when it was the visitor's
            else:
                counters.applied += 1
            if reorder <= 0 and following:
                # Live, following the inputs' low watermark: everybody's timers fire as it passes them (see
                # follow); before this event, only this user's own timers due before it fire, so their
                # lapse at T is decided by their events before T, as in a replay — unless that lapse also
                # depends on an account pause that may still come from a slower partition: then the event
                # waits in the ordering buffer (and the user's later events behind it) until it is decided.
                user_id = event.user_id
                user = self.users.get(user_id)
                if self.held and user_id in self.held:
                    self._hold(event)
                elif user is not None and 0 <= user.timer_at <= ts - 1:
                    if self._lapse_undecided(user, ts, config, wall_ms):
                        self._hold(event)
                    else:
                        self._advance_user(
                            user_id, ts - 1 if wall_ms is None else min(ts - 1, wall_ms), config, outputs
                        )
                        self._apply(event, config, outputs)
                else:
                    self._apply(event, config, outputs)
            elif reorder <= 0:
                heap = self.timers.heap
                # Checked inline: a call per event to find nothing due is the common case on the hot path.
                if heap and heap[0][0] <= ts - 1:
                    now = min(ts - 1, self.event_time - config.timer_lag_ms)
                    self.advance(now if wall_ms is None else min(now, wall_ms), config, outputs)
                    if ts > self.event_time + config.max_clock_jump_ms:
                        self._advance_user(event.user_id, ts - 1, config, outputs)
                self._apply(event, config, outputs)
            elif self.ordering.is_late(ts):
                counters.late += 1
                self._apply(event, config, outputs)
            else:
                self.ordering.hold(event)
                if not following:
                    frontier = self.event_time - reorder
                    self._release(frontier, frontier if wall_ms is None else min(frontier, wall_ms), config, outputs)
        if self.seen_count >= self.prune_at:
            self._prune(config)
        return outputs

    def _access(
        self, event: Event, config: ShardConfig, outputs: list[Output], following: bool, wall_ms: int | None
    ) -> None:
        """An access request is a read: it takes its place in the user's event sequence like any event (so
        the export holds exactly the events and timers before it), but moves no clock, is not applied to
        the state and is not counted as late, so no other output changes because of it."""
        user_id, ts = event.user_id, event.ts
        if config.reorder_ms > 0:
            if self.ordering.is_late(ts):
                outputs.append(self._export(event, config))
            else:
                self.ordering.hold(event)  # answered in event-time order by _release
            return
        if following:
            # Live: as for the user's other events (see process), their own timers due before it fire
            # first, and it queues behind their events that wait for a lapse decision.
            if self.held and user_id in self.held:
                self._hold(event)
                return
            user = self.users.get(user_id)
            if user is not None and 0 <= user.timer_at <= ts - 1:
                if self._lapse_undecided(user, ts, config, wall_ms):
                    self._hold(event)
                    return
                self._advance_user(user_id, ts - 1 if wall_ms is None else min(ts - 1, wall_ms), config, outputs)
        outputs.append(self._export(event, config))

    def _export(self, event: Event, config: ShardConfig) -> Record:
        user_id = event.user_id
        return access_export(user_id, self.users.get(user_id), event.ts, event.event_id, config.model, config.lapse)

    def _hold(self, event: Event) -> None:
        self.ordering.hold(event)
        self.held[event.user_id] = self.held.get(event.user_id, 0) + 1

    def _lapse_undecided(self, user: UserState, ts: int, config: ShardConfig, wall_ms: int | None) -> bool:
        """Live: the user's lapse deadline falls between the live frontier and their event at `ts`, and their
        account could still turn out paused (or resumed) then by a notice from a slower partition."""
        if user.account_id is None or user.lapse_id:
            return False
        deadline = lapse_deadline(user, config.lapse, self._account_resumed(user))
        return self.live_frontier(config, wall_ms) < deadline <= ts - 1

    def live_frontier(self, config: ShardConfig, wall_ms: int | None) -> int:
        """Live: the event time up to which timers fire (and held events are released).

        The inputs' low watermark minus the allowed lateness. With every partition idle (all read to their
        end): the wall clock minus the lateness while the data is recent (more may still come), else the
        shard's own event time — a finished backfill fires exactly what a replay of it does at its end.
        Never beyond the wall clock.
        """
        low = self.inputs.value
        if low is not None:
            frontier = low - config.lateness_ms
        else:
            recent = wall_ms is not None and wall_ms - self.inputs.newest <= config.wall_clock_max_lag_ms
            frontier = wall_ms - config.lateness_ms if recent and wall_ms is not None else self.event_time
        return frontier if wall_ms is None else min(frontier, wall_ms)

    def follow(self, config: ShardConfig, wall_ms: int | None, outputs: list[Output]) -> None:
        """Live: fire timers (release held events) up to the live frontier."""
        frontier = self.live_frontier(config, wall_ms)
        if config.reorder_ms > 0 or self.ordering:
            self._release(frontier, frontier, config, outputs)
        else:
            self.advance(frontier, config, outputs)

    def _observe(self, user_id: str, ts: int, jump: int) -> None:
        """Event time (what releases held events, fires timers and ages de-duplication ids) follows the
        newest event, except a jump of more than `jump` ahead: that moves only its own user and is held as
        the lead until an event of another user beyond the jump confirms the new time (up to the earlier
        of the two). A single event stamped months ahead by a bad client clock moves nobody else.
        """
        if self.event_time < 0 or ts <= self.event_time + jump:
            self.event_time = ts
        elif self.lead_ts < 0 or user_id == self.lead_user:
            self.lead_user, self.lead_ts = user_id, max(self.lead_ts, ts)
            return
        else:
            (low, _), (self.lead_ts, self.lead_user) = sorted(((ts, user_id), (self.lead_ts, self.lead_user)))
            self.event_time = low
        if 0 <= self.lead_ts <= self.event_time + jump:
            self.event_time = max(self.event_time, self.lead_ts)
            self.lead_user, self.lead_ts = "", -1

    def _advance_user(self, user_id: str, now: int, config: ShardConfig, outputs: list[Output]) -> None:
        """Fire one user's own timers up to `now`: their events ahead of the shard still see their lapse
        fire first (a user back after a long silence), without moving anybody else's time."""
        user = self.users.get(user_id)
        while user is not None and 0 <= user.timer_at <= now:
            due = user.timer_at
            self._fire(user_id, user, due, config, outputs)
            if user.timer_at == due:  # pragma: no cover - next_timer always moves past a fired timer
                break

    def drain(self, config: ShardConfig) -> list[Output]:
        """End of input: apply everything still held back, then let event time reach `until`."""
        outputs: list[Output] = []
        cap = max(self.event_time, config.until_ms)
        self._release(HOLD_ALL, cap, config, outputs)
        self.advance(cap, config, outputs)
        return outputs

    def _release(self, frontier: int, cap: int, config: ShardConfig, outputs: list[Output]) -> None:
        """Apply held events up to `frontier` in event-time order; timers fire up to `cap` at most."""
        held = self.held
        for event in self.ordering.release(frontier):
            if held and event.user_id in held:
                left = held.pop(event.user_id) - 1
                if left:
                    held[event.user_id] = left
            self.advance(min(event.ts - 1, cap), config, outputs)  # timers due before this event fire first
            if event.category is _PRIVACY and event.type == ACCESS_REQUESTED:
                outputs.append(self._export(event, config))  # a read: no timer beyond the cap for it
                continue
            if event.ts - 1 > cap:
                self._advance_user(event.user_id, event.ts - 1, config, outputs)
            self._apply(event, config, outputs)
        if self.ordering.advance(frontier):
            self.advance(min(frontier, cap), config, outputs)

    def advance(self, now: int, config: ShardConfig, outputs: list[Output]) -> None:
        """Fire every timer due by `now` (event time in replay; see engine.flow for live mode)."""
        timers = self.timers
        if not timers.due_by(now):
            return
        users = self.users
        # A queued timer is current while it is its user's timer_at (superseded otherwise, or erased).
        current = self._timer_of
        while (due_timer := timers.pop_due(now, current)) is not None:
            due, user_id = due_timer
            self._fire(user_id, users[user_id], due, config, outputs)

    def _timer_of(self, user_id: str) -> int:
        user = self.users.get(user_id)
        return -1 if user is None else user.timer_at

    def _fire(self, user_id: str, user: UserState, due: int, config: ShardConfig, outputs: list[Output]) -> None:
        """One due timer of one user; its heap entry (if still queued) goes stale when the user re-arms."""
        before = len(outputs)
        if due > user.clock:
            user.clock = due
        on_timer(user_id, user, due, self._context(config), outputs)
        if config.live_profiles:
            self.dirty.add(user_id)
        if config.track_changes:
            self.changed.add(user_id)
        if len(outputs) > before and user.account_id is not None:
            outputs.append(self._member(user_id, user, None, f"timer-{due}"))
        self._arm(user_id, user, config, due)

    def _arm(self, user_id: str, user: UserState, config: ShardConfig, fired_at: int | None) -> None:
        resumed = self._account_resumed(user)
        due = next_timer(user, config.lapse, fired_at, resumed)
        if 0 <= due <= user.clock and (fired_at is None or fired_at < user.clock):
            # A late event (or an account notice) must not send the user back in time: what was due before
            # their clock was decided by the events before it. The next timer is the next one after the
            # clock on the user's own daily grid, so timers stay the same whenever the re-arm happened.
            day_end = (user.last_active_day + 1) * DAY_MS
            step = max(int(config.lapse.rescore_days * DAY_MS), 1)
            last = day_end + max(0, (user.clock - day_end) // step) * step
            due = next_timer(user, config.lapse, last, resumed)
            if 0 <= due <= user.clock:
                due = last + step
        if due != user.timer_at:
            user.timer_at = due
            if due >= 0:
                self.timers.set(user_id, due)

    def _context(self, config: ShardConfig) -> Context:
        context = self._ctx
        if context is None or context.model is not config.model or context.lapse is not config.lapse:
            context = self._ctx = Context(
                config.model,
                config.model_version,
                config.lapse,
                lambda u, now: self._next_step(u, now, config),
                self._account_paused,
                self._account_resumed,
            )
        return context

    def _notice(self, notice: AccountNotice, config: ShardConfig) -> None:
        history = self.account_pauses.setdefault(notice.account_id, [])
        entry = (notice.ts, notice.paused)
        if entry in history:
            return
        insort(history, entry)
        if not notice.paused:
            # Resumed: members here get one rhythm from the resume before a silence counts again (_arm
            # reads it from the history, so a member whose events arrive after the notice gets it too).
            for user_id, user in self.users.items():
                if user.account_id == notice.account_id and user.last_active >= 0:
                    user.timer_at = -1
                    self._arm(user_id, user, config, None)
                    if config.track_changes:
                        self.changed.add(user_id)

    def _account_resumed(self, user: UserState) -> int:
        """When the user's account was last resumed (-1: never): exact whatever the arrival order."""
        history = self.account_pauses.get(user.account_id or "") if self.account_pauses else None
        resumes = [ts for ts, paused in history or () if not paused]
        return resumes[-1] if resumes else -1

    def _account_paused(self, user: UserState, now: int) -> bool:
        history = self.account_pauses.get(user.account_id or "")
        if not history:
            return False
        index = bisect_right(history, (now, True))
        return index > 0 and history[index - 1][1]

    def _next_step(self, user: UserState, now: int, config: ShardConfig) -> dict[str, Any] | None:
        """The key feature this user has not used that most healthy users here do (or, with the insights stage,
        a placeholder it completes: the feature with the best retention lift)."""
        if config.insights:
            return insights.draft_marker(user, config.model.key_features)
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
    def _member(
        user_id: str, user: UserState, team: str | None, cause: str, change: str = "", account: str | None = None
    ) -> MemberUpdate:
        """Stamped with the user's own clock and event count, so each account sees the user's updates in
        the order the user's shard made them, whatever order they arrive in."""
        account = account or user.account_id
        assert account is not None
        return MemberUpdate(
            account,
            user_id,
            user.clock,
            user.score,
            user.band,
            user.last_active,
            user.commercial,
            user.commercial_ts,
            team,
            cause,
            sum(user.counts),
            change,
            minutes_28=complete_day_minutes(user.sessions, user.clock, 28),
            nps_score=user.nps_score,
            nps_ts=user.nps_ts,
        )

    def _apply(self, event: Event, config: ShardConfig, outputs: list[Output]) -> None:
        user_id = event.user_id
        ts = event.ts
        users = self.users
        if event.category is Category.PRIVACY:
            self._erase(event, config, outputs)
            return
        if self.erased and ts <= self.erased.get(user_id, -1):
            self.counters.suppressed_after_erasure += 1
            return
        if config.track_changes:
            self.changed.add(user_id)
        user = users.get(user_id)
        if user is None:
            user = users[user_id] = UserState(ts)
        elif ts < user.first_seen - config.max_backfill_ms:
            user.counts[event.category] += 1
            self.counters.beyond_backfill += 1
            return
        days_before = user.active_day_count
        commercial_before = user.commercial
        nps_before = user.nps_score
        account_before = user.account_id
        key_features = config.model.key_features
        facts = insights.describe(user, key_features) if config.insights and insights.tracks(user, event) else None
        user.apply(event)
        if facts is not None and (changed := insights.facts_if_changed(user_id, user, ts, facts, key_features)):
            outputs.append(changed)
        if event.category is Category.ACTIVITY:
            user.sessions_base, user.sessions_pending, user.sessions = add_held(
                user.sessions_base, user.sessions_pending, user.sessions, ts, event.type,
                config.session_gap_ms, config.lateness_ms,
            )  # fmt: skip
        if config.live_profiles:
            self.dirty.add(user_id)
        new_day = user.active_day_count != days_before
        scored = after_event(user_id, user, event, new_day, commercial_before, self._context(config), outputs)
        category = event.category
        if (
            category is not Category.ACTIVITY
            or not user.journey
            or ts < user.journey_ts
            or event.type in config.journey.events
        ):
            journey_after_event(
                user_id, user, event, nps_before, config.journey, outputs, config.insights, config.lateness_ms
            )
        moved = account_before is not None and user.account_id != account_before
        if moved:
            # A user belongs to the account of their latest event only: the old account loses the member.
            outputs.append(self._member(user_id, user, None, event.event_id, MOVED_OUT, account_before))
        if user.account_id is not None and (
            scored
            or new_day
            or moved
            or category is Category.TEAM
            or category is Category.COMMERCIAL
            or category is Category.SENTIMENT  # the account's NPS
        ):
            team = event.type if category is Category.TEAM else None
            outputs.append(self._member(user_id, user, team, event.event_id, MOVED_IN if moved else ""))
        if new_day or user.timer_at < 0 or category is Category.COMMERCIAL:
            self._arm(user_id, user, config, None)

    def _erase(self, event: Event, config: ShardConfig, outputs: list[Output]) -> None:
        """Everything about the person goes: state, profile (Redis hash and table tombstone), account
        membership; open alerts are closed and a `user_erased` record tells downstream to forget them."""
        user_id, ts = event.user_id, event.ts
        self.counters.erasures += 1
        if ts > self.erased.get(user_id, -1):
            self.erased[user_id] = ts
        user = self.users.pop(user_id, None)
        on_erasure(user_id, user, ts, outputs)
        self._forget(user_id, user, ts, event.event_id, config, outputs)

    def _erase_visitor(self, merge: Merge, config: ShardConfig, outputs: list[Output]) -> None:
        """A visitor signed up: their events went to the user (operators.identity), so their own state,
        profile and account membership go as on erasure; open alerts close as "merged", and a `user_merged`
        record says where they went. Later events of the anonymous id go to the user, never here."""
        visitor_id, ts = merge.user_id, merge.ts
        # Events of theirs still waiting for event time to pass them were re-sent to the user already.
        if self.ordering.discard(visitor_id):
            self.held.pop(visitor_id, None)
        user = self.users.pop(visitor_id, None)
        if user is None:
            return  # the link came before any of the visitor's events: nothing of theirs is here
        self.counters.visitors_merged += 1
        on_erasure(visitor_id, user, ts, outputs, "merged")
        outputs.append(user_merged(visitor_id, merge.into, ts, merge.cause))
        self._forget(visitor_id, user, ts, merge.cause, config, outputs)

    def _forget(
        self, user_id: str, user: UserState | None, ts: int, cause: str, config: ShardConfig, outputs: list[Output]
    ) -> None:
        """What erasure and a visitor's merge share once the state is popped: no pending profile write, the
        snapshot told, the insights' facts withdrawn, the account's departure, the profile's tombstone."""
        self.dirty.discard(user_id)
        if config.track_changes:
            self.changed.add(user_id)
        if config.insights and user is not None:
            outputs.append(insights.erased_facts(user_id, ts, sum(user.counts)))
        if user is not None and user.account_id is not None:
            user.clock = max(user.clock, ts)
            user.counts[Category.PRIVACY] += 1  # orders the departure after the user's last update
            outputs.append(self._member(user_id, user, None, cause, ERASED))
        outputs.append(ProfileWrite(Entity.USER, user_id, None))

    def flush_profiles(self, config: ShardConfig = _DEFAULT_CONFIG) -> list[Output]:
        """Render every changed profile once, as of the shard's clock. Coalescing many events of a user
        into one write is what keeps the store from costing more than the processing (the record-cache
        idea of Kafka Streams)."""
        if not self.dirty:
            return []
        users = self.users
        writes: list[Output] = [
            ProfileWrite(Entity.USER, user_id, render_user(user_id, users[user_id], config.model, config.lapse))
            for user_id in sorted(self.dirty)
        ]
        self.dirty = set()
        return writes

    def _prune(self, config: ShardConfig) -> None:
        # Live, ids age with the slowest input partition: while a backlog is read at uneven speeds, a
        # duplicate in a lagging partition is still caught.
        base = self.event_time
        low = self.inputs.value if config.live_profiles else None
        if low is not None:
            base = min(base, low)
        floor = base - config.dedup_horizon_ms
        seen: dict[str, dict[str, int]] = {}
        for user_id, ids in self.seen.items():
            kept = {event_id: ts for event_id, ts in ids.items() if ts >= floor}
            if kept:
                seen[user_id] = kept
        if config.track_changes:
            # Ids left only for the erased: a snapshot must now say there is nothing left of them.
            self.changed.update(user_id for user_id in self.seen if user_id not in seen and user_id not in self.users)
        # Snapshots may keep other pruned ids until their users next change: harmless, they age out again.
        self.seen = seen
        self.seen_count = sum(len(ids) for ids in seen.values())
        self.prune_at = max(2 * self.seen_count, 4096)
        if self.erased:
            floor = base - config.erased_horizon_ms
            self.erased = {k: ts for k, ts in self.erased.items() if ts >= floor}
