"""The dataflow: raw batches → decode → shard by user → per-shard state → one sink for every output."""

from __future__ import annotations

import dataclasses
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from engine import metrics
from engine.config import Settings
from engine.crypto import PLAIN, SnapshotError, SnapshotSealer
from engine.latency import ingest_of, stamp
from engine.statestore import KEEP, DeltaStore, gc_paused
from operators.accounts import AccountShard
from operators.engagement import AccountNotice
from operators.health import MemberUpdate
from operators.identity import IdentityShard, Replayed
from operators.insights import INSIGHTS_KEY, AlertDraft, InsightsShard, JourneyStep, ShardFrontier, UserFacts, draft
from operators.shard import Counters, Shard, ShardConfig, shard_of
from operators.watermark import Progress
from schemas.codec import RawBatch, decode_batch
from schemas.events import Event, Rejection, UserId, Vocabulary
from schemas.outputs import OutputKind, Record

DLQ_KEY = "dlq"
SINK_KEY = "sink"


@dataclass(frozen=True, slots=True)
class ShardFinal:
    """What a shard hands the replay writer at end of input: its counters, clock and users or accounts."""

    shard_state: Shard | AccountShard | InsightsShard | IdentityShard


@dataclass(frozen=True, slots=True)
class FlowConfig:
    vocab: Vocabulary
    shards: int
    shard: ShardConfig
    # Recovery on: where shards keep their changed entries (engine.statestore); None skips snapshots.
    state_dir: Path | None
    # Live mode: changed profiles are written at most this often per shard (wall clock).
    profile_flush: timedelta = timedelta(seconds=1)
    # Live timers switch from event time to the wall clock after this long without events...
    timer_idle: timedelta = timedelta(seconds=5)
    # ...but only when event time is this close to the wall clock: a backfill of older history keeps
    # event time, instead of firing months of timers for every user the moment a shard pauses.
    timer_wall_clock_max_lag: timedelta = timedelta(days=7)
    # The newest event time any user shard of this process has seen (shared, so a shard holding only
    # silent users still knows whether the stream as a whole is live).
    newest_event: list[int] = field(default_factory=lambda: [-1], compare=False)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), compare=False)
    # Events stamped further than this ahead of `clock` at processing time are dead letters.
    future_skew_ms: int = 86_400_000
    # How snapshots (segments and headers) are sealed and opened: plain pickles unless a state key is set.
    sealer: SnapshotSealer = field(default=PLAIN, compare=False)
    # Segment input, replay: every visitor's link (anonymous id -> user id), read from the input up front
    # (engine.replay), so the decoder gives a linked visitor's events to the user directly and the outputs
    # do not depend on scheduling. None: links are followed as they come, by the identity stage (live).
    links: dict[str, str] | None = field(default=None, compare=False)


def flow_config(
    settings: Settings,
    live: bool,
    state_dir: Path | None = None,
    until_ms: int = -1,
    input_partitions: tuple[str, ...] = (),
    sealer: SnapshotSealer = PLAIN,
) -> FlowConfig:
    """The one place settings become a FlowConfig, shared by `pulse run`, `pulse replay` and the bench."""
    engine = settings.engine
    return FlowConfig(
        settings.vocab(),
        engine.shards,
        dataclasses.replace(
            settings.shard_config(live=live, until_ms=until_ms, input_partitions=input_partitions),
            track_changes=state_dir is not None,
            insights=True,
        ),
        state_dir,
        timedelta(milliseconds=engine.profile_flush_ms),
        timer_idle=timedelta(milliseconds=engine.timer_idle_ms),
        timer_wall_clock_max_lag=timedelta(hours=engine.timer_wall_clock_max_lag_hours),
        future_skew_ms=engine.max_future_skew_ms,
        sealer=sealer,
    )


def _decoder(config: FlowConfig) -> Any:
    vocab, shards = config.vocab, config.shards
    keys = [f"s{n:03d}" for n in range(shards)]
    live = config.shard.live_profiles
    # Live: what each input partition's progress was last reported as (partitions are owned by one worker).
    reported: dict[str, Progress] = {}

    identity_keys = [f"i{n:03d}" for n in range(shards)] if vocab.segment else []
    links = config.links

    def decode(batch: RawBatch) -> list[tuple[str, list[Any]]]:
        # One item per shard per input batch keeps bytewax's per-item overhead off the per-event path.
        groups: dict[str, list[Any]] = {}
        rejections: list[Any] = []
        untracked: dict[str, int] = {}
        max_ts = int(config.clock().timestamp() * 1000) + config.future_skew_ms
        newest = -1
        for item in decode_batch(batch, vocab, untracked, max_ts):
            if isinstance(item, Rejection):
                rejections.append(item)
                metrics.REJECTED.labels(item.code.value).inc()
            else:
                if item.ts > newest:
                    newest = item.ts
                anonymous_id = item.anonymous_id
                if anonymous_id is None:
                    key = keys[shard_of(item.user_id, shards)]
                elif links is None:  # live Segment: a visitor's event or a link goes by an identity shard
                    key = identity_keys[shard_of(anonymous_id, shards)]
                else:  # replay: the visitor's link is known; their events are the user's from the start
                    user_id = links.get(anonymous_id) if item.user_id == anonymous_id else None
                    item = dataclasses.replace(item, user_id=UserId(user_id or item.user_id), anonymous_id=None)
                    key = keys[shard_of(item.user_id, shards)]
                group = groups.get(key)
                if group is None:
                    groups[key] = [item]
                else:
                    group.append(item)
                notice = AccountNotice.of(item)
                if notice is not None:
                    for other in keys:
                        groups.setdefault(other, []).append(notice)
        if live:
            _report(batch, newest, reported, keys, groups)
        metrics.EVENTS_IN.inc(len(batch.values))
        for name, count in untracked.items():
            metrics.UNTRACKED.labels(name).inc(count)
        ingest = batch.ingest_ms if live else 0
        out = [(key, stamp(group, ingest)) for key, group in sorted(groups.items())]
        if rejections:
            out.append((DLQ_KEY, stamp(rejections, ingest)))
        return out

    return decode


def _report(
    batch: RawBatch, newest: int, reported: dict[str, Progress], keys: list[str], groups: dict[str, list[Any]]
) -> None:
    """Tell every user shard how far this partition's event time has come (after this batch's events),
    when that changed: the shards' low watermark, and so every live timer, follows the slowest partition."""
    name = f"{batch.source}#{batch.partition}"
    last = reported.get(name)
    ts = newest if last is None else max(last.ts, newest)
    if last is not None and last.ts == ts and last.idle == batch.idle:
        return
    progress = reported[name] = Progress(name, ts, batch.idle)
    metrics.PARTITION_PROGRESS.event_time(str(batch.partition), ts / 1000, batch.idle)
    for key in keys:
        group = groups.get(key)
        if group is None:
            groups[key] = [progress]
        else:
            group.append(progress)


@dataclass(frozen=True, slots=True)
class Header:
    """What bytewax keeps of a shard per epoch: the shard without its entries, and where those are."""

    label: str  # the shard key, which names its DeltaStore file ("" until the shard has seen an item)
    seq: int  # the snapshot's sequence number: its entries are the store's rows up to it
    state: dict[str, Any]


class _Logic(StatefulBatchLogic[list[Any], list[Any], Any]):
    """Glue between bytewax and one shard of users or accounts: the flush schedule, incremental snapshots."""

    def __init__(
        self,
        config: FlowConfig,
        resume: bytes | None,
        kind: type[Shard] | type[AccountShard] | type[InsightsShard] | type[IdentityShard],
    ) -> None:
        self._config = config
        self._label = ""
        self._seq = 0
        self._store: DeltaStore | None = None
        # A header is bound to its kind of shard; its label (inside it) is checked against the first items.
        self._context = f"header:{kind.__name__}"
        self._named = False
        if resume is None:
            self._state: Shard | AccountShard | InsightsShard | IdentityShard = kind()
        else:
            where = f"header of a {kind.__name__} in {config.state_dir.parent if config.state_dir else '?'}"
            header = pickle.loads(config.sealer.open(resume, self._context, where))
            self._label, self._seq = header.label, header.seq
            store = self._open_store()
            with gc_paused():  # a restore allocates every user's objects at once
                loaded = store.load(header.seq) if store is not None else {}
                self._state = kind.restore(header.state, loaded.items())
        self._next_flush = config.clock() + config.profile_flush

    def _name(self, label: str) -> None:
        """The shard key, from the first item that names it. After a resume it must be the header's own: a
        header restored under another key (swapped, or engine.shards changed) would load another shard's
        entries and then write over them."""
        if self._label and label != self._label:
            raise SnapshotError(
                f"pulse: the recovery snapshot of shard {self._label} was restored for shard {label}: a swapped "
                "snapshot, or engine.shards changed since it was written"
            )
        self._label, self._named = label, True

    def _open_store(self) -> DeltaStore | None:
        """This shard's store, opened once its key is known; rows after the current sequence number are
        from snapshots bytewax never committed (or from an earlier run, for a shard starting afresh)."""
        if self._store is None and self._label and self._config.state_dir is not None:
            self._store = DeltaStore(self._config.state_dir / self._label, self._config.sealer)
            self._store.discard_after(self._seq)
        return self._store

    def _process(self, items: list[Any]) -> list[Any]:
        return self._state.process(items, self._config.shard)

    def on_batch(self, values: list[list[Any]]) -> tuple[Iterable[list[Any]], bool]:
        outputs = self._process([item for batch in values for item in batch])
        if self._config.clock() >= self._next_flush:
            outputs.extend(self._flush())
        return ([stamp(outputs, ingest_of(values))] if outputs else []), StatefulBatchLogic.RETAIN

    def _flush(self) -> list[Any]:
        self._next_flush = self._config.clock() + self._config.profile_flush
        return self._state.flush_profiles(self._config.shard)

    def _tick(self) -> list[Any]:
        """Live mode, between events: hook for the wall-clock timer service (user shards)."""
        return []

    def _next_tick(self) -> datetime | None:
        return None

    def on_notify(self) -> tuple[Iterable[list[Any]], bool]:
        outputs = self._tick()
        outputs.extend(self._flush())
        return ([outputs] if outputs else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        times = [t for t in (self._next_flush if self._state.dirty else None, self._next_tick()) if t is not None]
        return min(times) if times else None

    def on_eof(self) -> tuple[Iterable[list[Any]], bool]:
        final: list[Any] = self._state.drain(self._config.shard)
        final.extend(self._flush())
        final.append(ShardFinal(self._state))
        return [final], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        """Only what changed since the last snapshot: the changed entries go to the shard's store (committed
        first), bytewax keeps the small header. Pickles are immutable copies, cheaper than a deepcopy."""
        if self._config.state_dir is None:
            return None
        started = time.perf_counter()
        state = self._state
        with gc_paused():  # this allocates per user: no GC passes over the whole state meanwhile
            self._write_changed(state)
        header = pickle.dumps(Header(self._label, self._seq, state.header()), protocol=pickle.HIGHEST_PROTOCOL)
        header = self._config.sealer.seal(header, self._context)
        metrics.SNAPSHOT_SECONDS.observe(time.perf_counter() - started)
        return header

    def _write_changed(self, state: Shard | AccountShard | InsightsShard | IdentityShard) -> None:
        changed = state.take_changed()
        # A store that resumed from plain or old-key segments rewrites a base now, changes or not.
        if changed or (self._store is not None and self._store.stale):
            store = self._open_store()
            if store is None:  # pragma: no cover - entries exist only after an item named the shard
                raise RuntimeError("pulse: a shard with changed entries has no key to store them under")
            self._seq += 1
            if store.needs_base(len(changed), state.size()):
                store.write(self._seq, state.entries(), base=True)
            else:
                store.write(self._seq, changed, base=False)
            store.compact(self._seq - KEEP)
            metrics.STATE_BYTES.labels(self._label).set(store.entry_bytes * state.size())


class UserLogic(_Logic):
    """Live timers follow the low watermark of the input partitions (Progress notices from the decoders),
    so a catch-up of old data over any number of partitions fires exactly what a replay would. Once every
    partition is idle, the wall clock takes over (minus the same allowed lateness), so silent users still
    lapse on time. Without partition progress (a source that sends none) the shard's own event time
    drives, and the wall clock after `timer_idle` without events."""

    def __init__(self, config: FlowConfig, resume: bytes | None) -> None:
        super().__init__(config, resume, Shard)
        self._last_event = config.clock()
        self._frontier_sent = -1

    def _live(self) -> bool:
        return self._config.shard.live_profiles

    def _sends_frontier(self) -> bool:
        shard = self._state
        assert isinstance(shard, Shard)
        return self._live() and self._config.shard.insights and bool(self._label) and shard.inputs.known

    def _with_frontier(self, outputs: list[Any]) -> list[Any]:
        """Live, with the insights stage: tell it how far this shard's timers have come, when that moved
        (engine.flow routes ShardFrontier to it; operators.insights releases up to the slowest shard)."""
        if self._sends_frontier():
            shard = self._state
            assert isinstance(shard, Shard)
            frontier = shard.live_frontier(self._config.shard, int(self._config.clock().timestamp() * 1000))
            if frontier > self._frontier_sent:
                self._frontier_sent = frontier
                outputs.append(ShardFrontier(self._label, frontier))
        return outputs

    def notify_at(self) -> datetime | None:
        """...and wake up every `timer_idle` meanwhile, so a shard without timers still moves its frontier
        with the wall clock when every partition is idle (the insights shard waits for the slowest)."""
        due = super().notify_at()
        if not self._sends_frontier():
            return due
        tick = self._config.clock() + self._config.timer_idle
        return tick if due is None else min(due, tick)

    def _wall_clock_applies(self, now: datetime) -> bool:
        shard = self._state
        assert isinstance(shard, Shard)
        lag = now.timestamp() * 1000 - self._config.newest_event[0]
        return (
            self._live() and bool(shard.timers) and lag <= self._config.timer_wall_clock_max_lag.total_seconds() * 1000
        )

    def _all_idle(self, shard: Shard, now: datetime) -> bool:
        """Every input partition is idle and the data is recent: the wall clock drives the timers."""
        newest = shard.inputs.newest
        max_lag = self._config.shard.wall_clock_max_lag_ms
        return shard.inputs.value is None and now.timestamp() * 1000 - newest <= max_lag

    def _next_tick(self) -> datetime | None:
        shard = self._state
        assert isinstance(shard, Shard)
        next_due = shard.timers.next_due
        if next_due is None:
            return None
        if self._live() and shard.inputs.known:
            if not self._all_idle(shard, self._config.clock()):
                return None
            return datetime.fromtimestamp((next_due + self._config.shard.lateness_ms) / 1000, UTC)
        if not self._wall_clock_applies(self._config.clock()):
            return None
        due = datetime.fromtimestamp(next_due / 1000, UTC)
        return max(due, self._last_event + self._config.timer_idle)

    def _tick(self) -> list[Any]:
        shard = self._state
        assert isinstance(shard, Shard)
        now = self._config.clock()
        outputs: list[Any] = []
        if self._live() and shard.inputs.known:
            if self._all_idle(shard, now):
                shard.follow(self._config.shard, int(now.timestamp() * 1000), outputs)
            return self._with_frontier(outputs)
        if not self._wall_clock_applies(now) or now - self._last_event < self._config.timer_idle:
            return []
        shard.advance(int(now.timestamp() * 1000), self._config.shard, outputs)
        return outputs

    def _process(self, items: list[Any]) -> list[Any]:
        shard = self._state
        assert isinstance(shard, Shard)
        if not self._named:  # bytewax's builder is not told its key; every event here shares it
            first = next((i for i in items if isinstance(i, Event)), None)
            if first is not None:
                self._name(f"s{shard_of(first.user_id, self._config.shards):03d}")
        before = dataclasses.astuple(shard.counters)
        started = time.perf_counter()
        live = self._live()
        wall_ms = int(self._config.clock().timestamp() * 1000) if live else None
        outputs = shard.process(items, self._config.shard, wall_ms)
        if live:
            self._last_event = self._config.clock()
            newest = self._config.newest_event
            if shard.event_time > newest[0]:
                newest[0] = shard.event_time
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        counts = shard.counters
        moved = dict(
            zip(COUNTER_NAMES, (a - b for a, b in zip(dataclasses.astuple(counts), before, strict=True)), strict=True)
        )
        metrics.APPLIED.inc(moved["applied"])
        metrics.DUPLICATES.inc(moved["duplicates"])
        for name, metric in COUNTER_METRICS:
            if moved[name]:
                metric.inc(moved[name])
        if self._label:  # a shard is named by its first event; until then there is nothing to report
            metrics.ERASED_IDS.labels(self._label).set(len(shard.erased))
            metrics.USERS.labels(self._label).set(len(shard.users))
            metrics.EVENT_TIME.labels(self._label).set(max(shard.event_time, 0) / 1000)
            low = shard.inputs.value
            if low is not None and low > 0:  # -1: a partition registered but not read from yet
                metrics.LOW_WATERMARK.labels(self._label).set(low / 1000)
        return self._with_frontier(outputs)


class IdentityLogic(_Logic):
    """Segment input: one identity shard (key "iNNN", by the anonymous id), see operators.identity."""

    def __init__(self, config: FlowConfig, resume: bytes | None) -> None:
        super().__init__(config, resume, IdentityShard)

    def _process(self, items: list[Any]) -> list[Any]:
        if not self._named:
            first = next((i for i in items if isinstance(i, Event) and i.anonymous_id is not None), None)
            if first is not None and first.anonymous_id is not None:
                self._name(f"i{shard_of(first.anonymous_id, self._config.shards):03d}")
        return super()._process(items)

    def on_eof(self) -> tuple[Iterable[list[Any]], bool]:
        # Nothing is pending here and the replay writer needs nothing of it (no ShardFinal: what it lets
        # through goes to the user shards).
        return [], StatefulBatchLogic.RETAIN


def _identity_router(config: FlowConfig) -> Any:
    keys = [f"s{n:03d}" for n in range(config.shards)]

    def route(item: tuple[str, list[Any]]) -> list[tuple[str, list[Any]]]:
        """What an identity shard lets through, to the user shard of whom it is about now."""
        _, outputs = item
        groups: dict[str, list[Any]] = {}
        for out in outputs:
            user_id = out.event.user_id if isinstance(out, Replayed) else out.user_id
            groups.setdefault(keys[shard_of(user_id, config.shards)], []).append(out)
        ingest = ingest_of((outputs,))
        return [(key, stamp(group, ingest)) for key, group in sorted(groups.items())]

    return route


class AccountLogic(_Logic):
    def __init__(self, config: FlowConfig, resume: bytes | None) -> None:
        super().__init__(config, resume, AccountShard)

    def _process(self, items: list[Any]) -> list[Any]:
        if not self._named and items:  # the account shard's key, from its first member update
            self._name(f"a{shard_of(items[0].account_id, self._config.shards):03d}")
        return super()._process(items)


class InsightsLogic(_Logic):
    """The one insights shard (key "insights"): the funnel, the drivers report and alerts' next_step."""

    def __init__(self, config: FlowConfig, resume: bytes | None) -> None:
        super().__init__(config, resume, InsightsShard)

    def _count(self) -> None:
        shard = self._state
        assert isinstance(shard, InsightsShard)
        for (name, stage), n in sorted(shard.take_moved().items()):
            counter = metrics.FUNNEL_ENTERED if name == "entered" else metrics.FUNNEL_CONVERTED
            counter.labels(stage).inc(n)

    def _process(self, items: list[Any]) -> list[Any]:
        if not self._named and items:
            self._name(INSIGHTS_KEY)
        outputs = super()._process(items)
        self._count()
        return outputs

    def on_eof(self) -> tuple[Iterable[list[Any]], bool]:
        result = super().on_eof()
        self._count()
        return result


COUNTER_NAMES = tuple(f.name for f in dataclasses.fields(Counters))
# Shard counters that are also Prometheus counters (applied and duplicates are handled on every batch).
COUNTER_METRICS = (
    ("erasures", metrics.ERASURES),
    ("late", metrics.LATE),
    ("beyond_dedup_horizon", metrics.BEYOND_HORIZON),
    ("beyond_backfill", metrics.BEYOND_BACKFILL),
)


def _router(config: FlowConfig) -> Any:
    keys = [f"a{n:03d}" for n in range(config.shards)]
    drafts = config.shard.insights

    def route(item: tuple[str, list[Any]]) -> list[tuple[str, list[Any]]]:
        """Member updates go on to their account's shard; journey steps, user facts and (with the insights
        stage) every alert to the insights shard, which keeps a user's alerts in order and fills next_step;
        everything else to the sink."""
        _, outputs = item
        direct: list[Any] = []
        by_account: dict[str, list[Any]] = {}
        for out in outputs:
            if isinstance(out, MemberUpdate):
                by_account.setdefault(keys[shard_of(out.account_id, config.shards)], []).append(out)
            elif isinstance(out, JourneyStep | UserFacts | AlertDraft | ShardFrontier):
                by_account.setdefault(INSIGHTS_KEY, []).append(out)
            elif drafts and isinstance(out, Record) and out.kind is OutputKind.ALERTS:
                by_account.setdefault(INSIGHTS_KEY, []).append(draft(out))
            else:
                direct.append(out)
        ingest = ingest_of((outputs,))
        routed = [(key, stamp(group, ingest)) for key, group in sorted(by_account.items())]
        if direct:
            routed.append((SINK_KEY, stamp(direct, ingest)))
        return routed

    return route


def build_flow(source: Source[RawBatch], sink: Sink[Any], config: FlowConfig) -> Dataflow:
    flow = Dataflow("pulse")
    batches = op.input("input", flow, source)
    decoded = op.flat_map("decode", batches, _decoder(config))
    split = op.branch("split", decoded, lambda item: item[0] != DLQ_KEY)
    to_users = split.trues
    if config.vocab.segment and config.links is None:
        # Live: visitors' events and links pass an identity shard first (operators.identity).
        to_identity = op.branch("to_identity", split.trues, lambda item: item[0][0] == "i")
        identity = op.stateful_batch("identity", to_identity.trues, lambda resume: IdentityLogic(config, resume))
        known = op.flat_map("identity_route", identity, _identity_router(config))
        to_users = op.merge("to_users", to_identity.falses, known)
    users = op.stateful_batch("users", to_users, lambda resume: UserLogic(config, resume))
    routed = op.flat_map("route", users, _router(config))
    to_insights = op.branch("to_insights", routed, lambda item: item[0] == INSIGHTS_KEY)
    to_accounts = op.branch("to_accounts", to_insights.falses, lambda item: item[0] != SINK_KEY)
    accounts = op.stateful_batch("accounts", to_accounts.trues, lambda resume: AccountLogic(config, resume))
    insights = op.stateful_batch("insights", to_insights.trues, lambda resume: InsightsLogic(config, resume))
    outputs = op.merge("outputs", to_accounts.falses, accounts, insights, split.falses)
    op.output("sink", outputs, sink)
    return flow
