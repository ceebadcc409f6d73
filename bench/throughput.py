"""Throughput, latency and state size: the real Pulse dataflow against a plain-Python ceiling and a peer.

    python -m bench.throughput [--all] [--events N] [--users U] [--workload uniform|sessions] [--topic T]
                               [--bootstrap HOST:PORT] [--repeat R] [--live] [--two-proc] [--quix] [--replay]
                               [--latency] [--latency-seconds S] [--state] [--state-users N] [--profile]
                               [--out PATH]

Each measured phase runs in its own subprocess (`--phase ...`, internal) so that its peak RSS is its own;
the parent only prepares the topics, collects the figures and writes bench/results/latest.json (after
every phase). `--all` runs every phase for both workloads and then draws the plots and rewrites the
README's figures table (bench/plots.py, bench/table.py).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import json
import os
import platform
import pstats
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from bench import latency
from bench.progress import Progress
from bench.topic import SEED, WORKLOADS, BenchSetupError, TopicState, default_topic, ensure_topic, topic_state
from engine.config import RedisSettings, Settings, TopicSettings, load_settings
from engine.flow import ShardFinal, build_flow, flow_config
from engine.sources import KafkaSource
from operators.shard import Shard
from schemas.codec import RawBatch
from schemas.outputs import Entity

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DAY_MS = 86_400_000
PHASES = (
    "ceiling",
    "pulse",
    "pulse-live",
    "pulse-2proc",
    "replay",
    "latency-flow",
    "latency-produce",
    "state",
)
# The phases --repeat alternates, in this order; the key of each one's median in the report.
EPS_KEYS = {
    "ceiling": "ceiling_eps",
    "pulse": "pulse_eps",
    "pulse-live": "pulse_live_eps",
    "pulse-2proc": "pulse_2proc_eps",
    "quix": "quix_eps",
    "replay": "replay_eps",
}
# Phases that write through the real LiveSink: their own Redis key prefix and output topics.
LIVE_PHASES = ("pulse-live", "pulse-2proc", "latency-flow")
LIVE_PREFIX = "pulse-bench"
ALL_WORKLOADS = ("sessions", "uniform")  # sessions first: its figures are the report's top level
QUIX_PYTHON = ROOT / ".venv-quix" / "bin" / "python"
EPOCH_EVENTS = 150_000  # the state phase's measured epoch, as bench.snapshots
Item = tuple[str, list[Any]]


def bench_settings(bootstrap: str, topic: str) -> Settings:
    """Defaults plus the bench topic; the process environment is ignored so runs are comparable, except
    PULSE_REDIS_INDEXES (`false` measures the live sink without the serving indexes)."""
    indexes = os.environ.get("PULSE_REDIS_INDEXES")
    return load_settings(
        None,
        env={
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PULSE_KAFKA_INPUT_TOPIC": topic,
            "PULSE_KAFKA_START_FROM": "earliest",
            "PULSE_METRICS_ENABLED": "false",
            **({"PULSE_REDIS_INDEXES": indexes} if indexes is not None else {}),
        },
    )


def live_settings(settings: Settings, out_prefix: str, key_prefix: str) -> Settings:
    """`settings` with every output topic named `<out_prefix>-<name>` and Redis keys under `key_prefix`."""
    topics = TopicSettings(**{f.name: f"{out_prefix}-{f.name}" for f in dataclasses.fields(TopicSettings)})
    redis_settings = dataclasses.replace(settings.redis, key_prefix=key_prefix)
    return dataclasses.replace(settings, topics=topics, redis=redis_settings)


def _rss_kib() -> int:
    # ru_maxrss is in KiB on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# ---------------------------------------------------------------------------------------------------------
# (a) the ceiling: one consumer, a plain loop, orjson and a dict per user


def run_ceiling(settings: Settings, events: int) -> dict[str, Any]:
    kafka = settings.kafka
    state = _require_topic(settings, events)
    consumer = Consumer(kafka.consumer_config())
    consumer.assign([TopicPartition(kafka.input_topic, p, OFFSET_BEGINNING) for p in sorted(state.watermarks)])
    timeout = kafka.poll_timeout_ms / 1000
    loads = orjson.loads
    # user_id -> [count, last_seen (raw ts), set of epoch days]
    users: dict[str, list[Any]] = {}
    day_of: dict[str, int] = {}
    count = 0
    progress = Progress("ceiling", events)
    baseline = _rss_kib()
    first: float | None = None
    try:
        while count < events:
            messages = consumer.consume(2000, timeout)
            if not messages:
                continue
            if first is None:
                first = time.perf_counter()
                progress.restart()
            for message in messages:
                error = message.error()
                if error is not None:
                    _check(error)
                    continue
                doc = loads(message.value())  # type: ignore[arg-type]  # never None in this topic
                ts = doc["ts"]
                if isinstance(ts, int):
                    day = ts // DAY_MS
                else:
                    prefix = ts[:10]
                    day = day_of.get(prefix, -1)
                    if day < 0:
                        day = day_of[prefix] = date.fromisoformat(prefix).toordinal()
                user = users.get(doc["user_id"])
                if user is None:
                    users[doc["user_id"]] = [1, ts, {day}]
                else:
                    user[0] += 1
                    user[1] = ts
                    user[2].add(day)
                count += 1
            progress.update(count)
        elapsed = time.perf_counter() - (first or time.perf_counter())
    finally:
        consumer.close()
    progress.done(count)
    problems = [] if count == events else [f"consumed {count} of {events}"]
    return {
        "events": count,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(count / elapsed, 1),
        "users": len(users),
        "baseline_rss_kib": baseline,
        "peak_rss_kib": _rss_kib(),
        "problems": problems,
    }


def _check(error: KafkaError) -> None:
    if error.fatal():
        raise KafkaException(error)
    print(f"bench: kafka: {error}", file=sys.stderr, flush=True)


def _require_topic(settings: Settings, events: int) -> TopicState:
    state = topic_state(settings.kafka, settings.kafka.input_topic)
    if state is None or state.messages != events:
        raise BenchSetupError(f"topic {settings.kafka.input_topic!r} does not hold {events} messages")
    return state


# ---------------------------------------------------------------------------------------------------------
# (b) the Pulse dataflow, stopped once every partition reached its high watermark


class _Tracker:
    """Shared by the partitions of one process: read count, first batch, drain time (by `clock`)."""

    def __init__(self, total: int, label: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self.read = 0
        self.first: float | None = None
        self.drained: float | None = None
        self._clock = clock
        self._open = 0
        self._progress = Progress(label, total)

    def on_open(self) -> None:
        """A partition was built here (in a cluster, each process builds only its own)."""
        self._open += 1

    def on_batch(self, count: int) -> None:
        if not count:
            return
        if self.first is None:
            self.first = self._clock()
            self._progress.restart()
        self.read += count
        self._progress.update(self.read)

    def on_end(self) -> None:
        self._open -= 1
        if self._open == 0:
            self.drained = self._clock()
            self._progress.done(self.read)


class _BoundedPartition(StatefulSourcePartition[RawBatch, int]):
    """The engine's Kafka partition, ended (StopIteration) once it has returned every offset below `end`."""

    def __init__(self, inner: StatefulSourcePartition[RawBatch, int], start: int, end: int, tracker: _Tracker) -> None:
        self._inner = inner
        self._next = start
        self._end = end
        self._tracker = tracker
        self._ended = False
        tracker.on_open()

    def next_batch(self) -> list[RawBatch]:
        if self._next >= self._end:
            if not self._ended:
                self._ended = True
                self._tracker.on_end()
            raise StopIteration
        out: list[RawBatch] = []
        count = 0
        for batch in self._inner.next_batch():
            if not batch.offsets:
                continue
            if batch.offsets[-1] >= self._end:  # someone appended to the bench topic: ignore the excess
                keep = sum(1 for o in batch.offsets if o < self._end)
                keys = batch.keys[:keep] if batch.keys is not None else None
                batch = RawBatch(batch.source, batch.partition, batch.values[:keep], batch.offsets[:keep], keys)
                if not keep:
                    self._next = self._end
                    continue
            self._next = batch.offsets[-1] + 1
            count += len(batch.values)
            out.append(batch)
        self._tracker.on_batch(count)
        return out

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> int:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class BoundedKafkaSource(FixedPartitionedSource[RawBatch, int]):
    """`engine.sources.KafkaSource` with an end: the high watermarks read before the run."""

    def __init__(self, inner: KafkaSource, state: TopicState, tracker: _Tracker) -> None:
        self._inner = inner
        self._state = state
        self._tracker = tracker

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _BoundedPartition:
        low, high = self._state.watermarks[int(for_part.rpartition("#")[2])]
        inner = self._inner.build_part(step_id, for_part, resume_state)
        return _BoundedPartition(inner, low, high, self._tracker)


class _Counts:
    def __init__(self) -> None:
        self.outputs: Counter[str] = Counter()
        self.finals: list[ShardFinal] = []

    def user_shards(self) -> list[Shard]:
        """End-of-input summaries of the user shards (other stateful steps may send theirs too)."""
        return [f.shard_state for f in self.finals if isinstance(f.shard_state, Shard)]


class CountingSink(DynamicSink[Item]):
    """Counts outputs by type and keeps the end-of-input shard summaries; forwards to `inner` if given."""

    def __init__(self, counts: _Counts, inner: DynamicSink[Item] | None = None) -> None:
        self._counts = counts
        self._inner = inner

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        inner = self._inner.build(step_id, worker_index, worker_count) if self._inner is not None else None
        return _CountingPartition(self._counts, inner)


class _CountingPartition(StatelessSinkPartition[Item]):
    def __init__(self, counts: _Counts, inner: StatelessSinkPartition[Item] | None) -> None:
        self._counts = counts
        self._inner = inner

    def write_batch(self, items: list[Item]) -> None:
        outputs = self._counts.outputs
        for _, batch in items:
            for out in batch:
                if isinstance(out, ShardFinal):
                    self._counts.finals.append(out)
                else:
                    outputs[type(out).__name__] += 1
        if self._inner is not None:
            self._inner.write_batch(items)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def run_pulse(
    settings: Settings, events: int, live: bool, profile_out: Path | None, live_profiles: bool = True
) -> dict[str, Any]:
    """`live` sends outputs through the real LiveSink; `live_profiles=False` is a diagnostic variant only."""
    state = _require_topic(settings, events)
    label = "pulse-live" if live else "pulse"
    tracker = _Tracker(events, label)
    counts = _Counts()
    inner_sink: DynamicSink[Item] | None = None
    if live:
        from engine.service import ensure_topics
        from engine.sinks import LiveSink

        ensure_topics(settings)
        _clear_redis(settings.redis)
        inner_sink = LiveSink(settings)
    config = flow_config(settings, live=live_profiles)
    source = BoundedKafkaSource(KafkaSource(settings.kafka), state, tracker)
    flow = build_flow(source, CountingSink(counts, inner_sink), config)
    epoch = timedelta(seconds=settings.engine.snapshot_interval_seconds)
    baseline = _rss_kib()
    profiler = cProfile.Profile() if profile_out is not None else None
    if profiler is not None:
        profiler.enable()
    try:
        run_main(flow, epoch_interval=epoch)  # type: ignore[no-untyped-call]
    except BaseException:
        if live:
            _clear_redis(settings.redis)
        raise
    end = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    peak = _rss_kib()
    first = tracker.first or end
    elapsed = end - first
    user_shards = counts.user_shards()
    applied = sum(s.counters.applied for s in user_shards)
    duplicates = sum(s.counters.duplicates for s in user_shards)
    users = sum(len(s.users) for s in user_shards)
    problems: list[str] = []
    if tracker.read != events:
        problems.append(f"source read {tracker.read} of {events}")
    if applied != events:
        problems.append(f"applied {applied} of {events} ({duplicates} duplicates, {counts.outputs} outputs)")
    result: dict[str, Any] = {
        "events": tracker.read,
        "applied": applied,
        "users": users,
        "shards": len(user_shards),
        "outputs": dict(counts.outputs),
        "elapsed_s": round(elapsed, 3),
        "drain_s": round((tracker.drained or end) - first, 3),
        "events_per_s": round(events / elapsed, 1) if elapsed > 0 else None,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": peak,
        "problems": problems,
    }
    if live:
        keys, user_ids = _clear_redis(settings.redis)
        result["redis_keys"] = keys
        problems.extend(_redis_check(user_ids, {user_id for shard in user_shards for user_id in shard.users}))
    if profiler is not None and profile_out is not None:
        result["profile"] = _write_profile(profiler, profile_out)
    return result


def _redis_check(user_ids: set[str], state_ids: set[str]) -> list[str]:
    """One profile hash per user in state, and no other."""
    if user_ids == state_ids:
        return []
    extra, missing = sorted(user_ids - state_ids), sorted(state_ids - user_ids)
    return [
        f"{len(user_ids)} user profile hashes in Redis for {len(state_ids)} users in state: "
        f"{len(extra)} extra (e.g. {extra[:5]}), {len(missing)} missing (e.g. {missing[:5]})"
    ]


def _clear_redis(settings: RedisSettings) -> tuple[dict[str, int], set[str]]:
    """Deletes the bench's own keys (its key prefix only); returns their count per entity and the user ids."""
    import redis

    client = redis.Redis.from_url(settings.url)
    try:
        # Collect first: SCAN may return a key twice, and deleting while scanning makes that likelier.
        keys: set[bytes] = set(client.scan_iter(match=f"{settings.key_prefix}:*", count=5000))
        ordered = sorted(keys)
        for start in range(0, len(ordered), 5000):
            client.unlink(*ordered[start : start + 5000])
    finally:
        client.close()
    found: Counter[str] = Counter()
    user_ids: set[str] = set()
    for key in keys:
        # <prefix>:<entity>:<id>
        entity, _, ident = key.decode(errors="replace")[len(settings.key_prefix) + 1 :].partition(":")
        found[entity] += 1
        if entity == Entity.USER.value:
            user_ids.add(ident)
    return dict(found), user_ids


def _write_profile(profiler: cProfile.Profile, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(path)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    for order in ("cumulative", "tottime"):
        text.write(f"\n=== top 15 by {order} ===\n")
        stats.sort_stats(order).print_stats(15)
    report = path.with_suffix(".txt")
    report.write_text(text.getvalue(), encoding="utf-8")
    return str(report.relative_to(ROOT) if report.is_relative_to(ROOT) else report)


# ---------------------------------------------------------------------------------------------------------
# (d) the LiveSink flow in a cluster of two processes (one of them; the parent combines both)


def run_pulse_process(settings: Settings, events: int, process_id: int, addresses: list[str]) -> dict[str, Any]:
    """One process of a bytewax cluster built as `pulse run -i <id> -a <addresses>` builds it (every input
    partition named up front, the real LiveSink), over the bounded source. Times are wall-clock
    (time.time) so that the parent can combine the two processes' spans."""
    from bytewax._bytewax import cli_main

    from engine.service import ensure_topics
    from engine.sinks import LiveSink

    state = _require_topic(settings, events)
    tracker = _Tracker(events, f"pulse-2proc[{process_id}]", clock=time.time)
    counts = _Counts()
    ensure_topics(settings)
    kafka_source = KafkaSource(settings.kafka, settings.engine.timer_idle_ms / 1000)
    partitions = tuple(kafka_source.list_parts())
    config = flow_config(settings, live=True, input_partitions=partitions)
    source = BoundedKafkaSource(kafka_source, state, tracker)
    flow = build_flow(source, CountingSink(counts, LiveSink(settings)), config)
    baseline = _rss_kib()
    cli_main(  # type: ignore[no-untyped-call]
        flow,
        workers_per_process=1,
        process_id=process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=settings.engine.snapshot_interval_seconds),
    )
    end = time.time()
    user_shards = counts.user_shards()
    return {
        "process_id": process_id,
        "events": tracker.read,
        "first": tracker.first,
        "end": end,
        "applied": sum(s.counters.applied for s in user_shards),
        "duplicates": sum(s.counters.duplicates for s in user_shards),
        "shards": len(user_shards),
        "user_ids": sorted(user_id for shard in user_shards for user_id in shard.users),
        "outputs": dict(counts.outputs),
        "baseline_rss_kib": baseline,
        "peak_rss_kib": _rss_kib(),
        "problems": [],
    }


def combine_processes(events: int, processes: list[dict[str, Any]]) -> dict[str, Any]:
    """The cluster's figures: N / (last end - first first batch), counts summed over the processes."""
    firsts = [p["first"] for p in processes if p["first"] is not None]
    first = min(firsts) if firsts else min(p["end"] for p in processes)
    end = max(p["end"] for p in processes)
    elapsed = end - first
    applied = sum(p["applied"] for p in processes)
    read = sum(p["events"] for p in processes)
    outputs: Counter[str] = Counter()
    for p in processes:
        outputs.update(p["outputs"])
    problems = [problem for p in processes for problem in p.get("problems", [])]
    if read != events:
        problems.append(f"source read {read} of {events}")
    if applied != events:
        problems.append(f"applied {applied} of {events} ({sum(p['duplicates'] for p in processes)} duplicates)")
    return {
        "events": read,
        "applied": applied,
        "users": sum(len(p["user_ids"]) for p in processes),
        "shards": sum(p["shards"] for p in processes),
        "outputs": dict(outputs),
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(events / elapsed, 1) if elapsed > 0 else None,
        "peak_rss_kib": max(p["peak_rss_kib"] for p in processes),
        "peak_rss_kib_sum": sum(p["peak_rss_kib"] for p in processes),
        "processes": [
            {
                "process_id": p["process_id"],
                "events": p["events"],
                "applied": p["applied"],
                "shards": p["shards"],
                "first_s": None if p["first"] is None else round(p["first"] - first, 3),
                "end_s": round(p["end"] - first, 3),
                "peak_rss_kib": p["peak_rss_kib"],
            }
            for p in sorted(processes, key=lambda p: int(p["process_id"]))
        ],
        "problems": problems,
    }


def _free_ports(count: int) -> list[int]:
    """Ports the OS says are free now (all held open together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


# ---------------------------------------------------------------------------------------------------------
# the latency flow: phase (c)'s flow on an unbounded source that ends when the parent says so


class _Ready:
    """Prints `ready` on stdout (the parent waits for it) once every partition has been polled."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._polled: set[str] = set()

    def polled(self, name: str) -> None:
        if len(self._polled) < self._total:
            self._polled.add(name)
            if len(self._polled) == self._total:
                print("ready", flush=True)


class _StoppablePartition(StatefulSourcePartition[RawBatch, int]):
    """The engine's Kafka partition, ended (StopIteration) once the stop file exists."""

    CHECK_EVERY_S = 0.1

    def __init__(self, inner: StatefulSourcePartition[RawBatch, int], name: str, stop: Path, ready: _Ready) -> None:
        self._inner = inner
        self._name = name
        self._stop = stop
        self._ready = ready
        self._next_check = 0.0

    def next_batch(self) -> list[RawBatch]:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.CHECK_EVERY_S
            if self._stop.exists():
                raise StopIteration
        batches = list(self._inner.next_batch())
        self._ready.polled(self._name)
        return batches

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> int:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class _StoppableSource(FixedPartitionedSource[RawBatch, int]):
    def __init__(self, inner: KafkaSource, stop: Path) -> None:
        self._inner = inner
        self._stop = stop
        self._parts = inner.list_parts()
        self._ready = _Ready(len(self._parts))

    def list_parts(self) -> list[str]:
        return self._parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _StoppablePartition:
        inner = self._inner.build_part(step_id, for_part, resume_state)
        return _StoppablePartition(inner, for_part, self._stop, self._ready)


def run_latency_flow(settings: Settings, stop: Path) -> dict[str, Any]:
    """Phase (c)'s flow (LiveSink, 1 worker, live profiles) reading the latency topic from the earliest
    offset until `stop` exists; then what its shards applied."""
    from engine.service import ensure_topics
    from engine.sinks import LiveSink

    ensure_topics(settings)
    _clear_redis(settings.redis)
    counts = _Counts()
    source = _StoppableSource(KafkaSource(settings.kafka), stop)
    flow = build_flow(source, CountingSink(counts, LiveSink(settings)), flow_config(settings, live=True))
    try:
        run_main(flow, epoch_interval=timedelta(seconds=settings.engine.snapshot_interval_seconds))  # type: ignore[no-untyped-call]
    finally:
        keys, _ = _clear_redis(settings.redis)
    user_shards = counts.user_shards()
    return {
        "applied": sum(s.counters.applied for s in user_shards),
        "users": sum(len(s.users) for s in user_shards),
        "outputs": dict(counts.outputs),
        "redis_keys": keys,
        "peak_rss_kib": _rss_kib(),
        "problems": [],
    }


# ---------------------------------------------------------------------------------------------------------
# (f) pulse replay, and the state phase


def run_replay(settings: Settings, events: int, users: int, workload: str) -> dict[str, Any]:
    """Phase (f): `pulse replay` of the same generated events from a .jsonl file (written first, untimed)."""
    from engine.replay import replay

    with tempfile.TemporaryDirectory(prefix="pulse-bench-replay-") as tmp:
        path = Path(tmp) / "events.jsonl"
        with path.open("wb") as out:
            for line in WORKLOADS[workload](events, users, SEED):
                out.write(line + b"\n")
        started = time.perf_counter()
        result = replay(path, Path(tmp) / "out", settings)
        elapsed = time.perf_counter() - started
    applied = result.summary["applied"]
    problems = [] if applied == events else [f"replay applied {applied:,} of {events:,} events"]
    return {
        "events_per_s": round(events / elapsed, 1),
        "elapsed_s": round(elapsed, 3),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "outputs": {"users": result.summary["users"]},
        "problems": problems,
    }


def run_state(settings: Settings, users: int) -> dict[str, Any]:
    """bench.snapshots for one user count, alone in this process so the RSS figures are the state's."""
    from bench.snapshots import measure

    figures = measure(users, EPOCH_EVENTS, settings.engine.shards)
    return figures | {"peak_rss_kib": _rss_kib(), "problems": []}


# ---------------------------------------------------------------------------------------------------------
# a child process: one phase


def _phase_settings(args: argparse.Namespace) -> Settings:
    settings = bench_settings(args.bootstrap, args.topic)
    if args.phase in LIVE_PHASES:
        # A key prefix of its own (unless the parent chose one): runs that overlap never touch each other's
        # keys. The output topics are only written, so runs may share them.
        key_prefix = args.key_prefix or f"{LIVE_PREFIX}-{os.getpid()}"
        settings = live_settings(settings, args.out_prefix or f"{LIVE_PREFIX}-out", key_prefix)
    return settings


def _run_phase(args: argparse.Namespace) -> int:
    settings = _phase_settings(args)
    if args.phase == "ceiling":
        result = run_ceiling(settings, args.events)
    elif args.phase == "replay":
        result = run_replay(settings, args.events, args.users, args.workload)
    elif args.phase == "pulse-2proc":
        addresses = args.addresses.split(";")
        result = run_pulse_process(settings, args.events, args.process_id, addresses)
    elif args.phase == "latency-flow":
        result = run_latency_flow(settings, Path(args.stop_file))
    elif args.phase == "latency-produce":
        result = latency.run_produce(
            settings.kafka, args.topic, args.workload, args.users, args.rate, args.latency_seconds
        )
    elif args.phase == "state":
        result = run_state(settings, args.state_users)
    else:
        profile = Path(args.profile_out) if args.profile_out else None
        result = run_pulse(settings, args.events, live=args.phase == "pulse-live", profile_out=profile)
    result["phase"] = args.phase
    result["code"] = _code_version()
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.result_file).write_text(json.dumps(result), encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------------------------------------
# the parent: topics, subprocesses, report


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    name: str
    topic: str


def _child_cmd(args: argparse.Namespace, phase: str, workload: Workload, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.throughput",
        "--phase",
        phase,
        "--events",
        str(args.events),
        "--users",
        str(args.users),
        "--workload",
        workload.name,
        "--topic",
        workload.topic,
        "--bootstrap",
        args.bootstrap,
        *extra,
    ]


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _announce(label: str) -> list[float]:
    load = _loadavg()
    print(f"bench: {label} (load average {load[0]})", file=sys.stderr, flush=True)
    return load


def _child(
    args: argparse.Namespace,
    phase: str,
    workload: Workload,
    profile_out: Path | None = None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = _child_cmd(args, phase, workload, [*extra, "--result-file", str(result_file)])
        if profile_out is not None:
            cmd += ["--profile-out", str(profile_out)]
        load = _announce(f"{workload.name}: phase {phase}")
        completed = subprocess.run(cmd, cwd=ROOT, check=False)
        if completed.returncode != 0 or not result_file.exists():
            raise BenchSetupError(f"phase {phase} failed with exit code {completed.returncode}")
        result: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
    result["loadavg_before"] = load
    return result


def _two_proc(args: argparse.Namespace, workload: Workload) -> dict[str, Any]:
    """Phase (d): two cluster processes at once; their figures combined, then the Redis check."""
    redis_settings = dataclasses.replace(
        bench_settings(args.bootstrap, workload.topic).redis, key_prefix=f"{LIVE_PREFIX}-{os.getpid()}-2proc"
    )
    _clear_redis(redis_settings)
    addresses = ";".join(f"127.0.0.1:{port}" for port in _free_ports(2))
    load = _announce(f"{workload.name}: phase pulse-2proc ({addresses})")
    with tempfile.TemporaryDirectory(prefix="pulse-bench-2proc-") as tmp:
        files = [Path(tmp) / f"process-{i}.json" for i in range(2)]
        extra = ["--addresses", addresses, "--key-prefix", redis_settings.key_prefix]
        procs = [
            subprocess.Popen(
                _child_cmd(args, "pulse-2proc", workload, [*extra, "--process-id", str(i), "--result-file", str(f)]),
                cwd=ROOT,
                stdout=sys.stderr,  # bytewax prints its connection retries there; stdout is the report's
            )
            for i, f in enumerate(files)
        ]
        try:
            codes = _wait_all(procs)
        finally:
            keys, user_ids = _clear_redis(redis_settings)
        if any(codes) or not all(f.exists() for f in files):
            raise BenchSetupError(f"phase pulse-2proc failed with exit codes {codes}")
        processes = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    result = combine_processes(args.events, processes)
    result["redis_keys"] = keys
    result["problems"].extend(_redis_check(user_ids, {u for p in processes for u in p["user_ids"]}))
    result["code"] = processes[0]["code"]
    result["loadavg_before"] = load
    result["loadavg_after"] = _loadavg()
    return result


def _wait_all(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """Exit codes of every process; once one fails, the others (which would wait for it) are killed."""
    while True:
        codes = [p.poll() for p in procs]
        if all(code is not None for code in codes):
            return [int(code or 0) for code in codes]
        if any(code for code in codes):
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            return [int(p.returncode) for p in procs]
        with contextlib.suppress(subprocess.TimeoutExpired):
            next(p for p in procs if p.poll() is None).wait(timeout=0.5)


def _quix(args: argparse.Namespace, workload: Workload) -> dict[str, Any]:
    """Phase (e): bench/quix_app.py in its own virtualenv (`make bench-quix-env`), same topic."""
    if not QUIX_PYTHON.exists():
        raise BenchSetupError(f"--quix needs {QUIX_PYTHON.relative_to(ROOT)}: run `make bench-quix-env` first")
    load = _announce(f"{workload.name}: phase quix")
    cmd = [str(QUIX_PYTHON), "-m", "bench.quix_app", "--topic", workload.topic, "--events", str(args.events)]
    cmd += ["--bootstrap", args.bootstrap]
    completed = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False, capture_output=True, text=True
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise BenchSetupError(f"phase quix failed ({completed.returncode}): {completed.stderr.strip()[-300:]}")
    figures = json.loads(lines[-1])
    return {
        "events_per_s": figures["eps"],
        "elapsed_s": figures["seconds"],
        "peak_rss_kib": figures["peak_rss_kib"],
        "outputs": {"records": figures["records"]},
        "loadavg_before": load,
        "code": _code_version(),
    }


def _latency(args: argparse.Namespace, workload: Workload, live_eps: float, pct: int) -> dict[str, Any]:
    """One latency run at `pct`% of phase (c)'s throughput (see bench/latency.py)."""
    input_topic, out_prefix = latency.topic_names(workload.name, pct)
    settings = bench_settings(args.bootstrap, input_topic)
    out_topics = tuple(f"{out_prefix}-{f.name}" for f in dataclasses.fields(TopicSettings))
    run = latency.LatencyRun(
        workload.name, pct, live_eps * pct / 100, args.latency_seconds, input_topic, f"{out_prefix}-scores", out_topics
    )
    key_prefix = f"{LIVE_PREFIX}-{os.getpid()}-latency"
    shared = ["--out-prefix", out_prefix, "--key-prefix", key_prefix, "--latency-seconds", str(args.latency_seconds)]

    def child(phase: str, extra: list[str]) -> list[str]:
        return _child_cmd(args, phase, Workload(workload.name, input_topic), [*shared, *extra])

    load = _announce(f"{workload.name}: latency at {pct}% of {live_eps:,.0f} events/s")
    result = latency.measure(run, settings.kafka, child, ROOT)
    return result | {"loadavg_before": load, "code": _code_version()}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by events/s, with every run's figures kept."""
    ordered = sorted(runs, key=lambda r: r["events_per_s"] or 0.0)
    median = ordered[(len(ordered) - 1) // 2]
    summary = dict(median)
    summary["events_per_s_median"] = statistics.median(r["events_per_s"] or 0.0 for r in runs)
    summary["peak_rss_kib_max"] = max(r["peak_rss_kib"] for r in runs)
    summary["runs"] = [
        {k: r[k] for k in ("events_per_s", "elapsed_s", "peak_rss_kib", "outputs", "loadavg_before") if k in r}
        for r in runs
    ]
    return summary


def _versions() -> dict[str, str | None]:
    from importlib.metadata import version

    import confluent_kafka

    return {
        "bytewax": version("bytewax"),
        "confluent_kafka": version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "orjson": version("orjson"),
        "quixstreams": _quix_version(),
    }


def _quix_version() -> str | None:
    """quixstreams as installed in .venv-quix (never in Pulse's venv); None without that venv."""
    if not QUIX_PYTHON.exists():
        return None
    code = "from importlib.metadata import version; print(version('quixstreams'))"
    try:
        done = subprocess.run([str(QUIX_PYTHON), "-c", code], capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _code_version() -> dict[str, Any]:
    """The commit measured, and engine files changed since it (others edit them while benches run)."""

    def git(*cmd: str) -> str:
        try:
            done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "engine", "operators", "schemas")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": [line.strip() for line in changed.splitlines()],
    }


def _tracked(code: dict[str, Any]) -> tuple[str, list[str]]:
    """New untracked files cannot change what runs unless a tracked file changes too: ignore them."""
    return code["commit"], [line for line in code["uncommitted"] if not line.startswith("??")]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _repeated_phases(args: argparse.Namespace) -> list[str]:
    phases = ["ceiling", "pulse"]
    phases += ["pulse-live"] if args.live else []
    phases += ["pulse-2proc"] if args.two_proc else []
    phases += ["quix"] if args.quix else []
    phases += ["replay"] if args.replay else []
    return phases


class _Run:
    """Everything measured so far, by workload and phase."""

    def __init__(self, workloads: list[Workload], phases: list[str]) -> None:
        self.workloads = workloads
        self.runs: dict[str, dict[str, list[dict[str, Any]]]] = {w.name: {p: [] for p in phases} for w in workloads}
        self.latency: dict[str, dict[int, dict[str, Any]]] = {w.name: {} for w in workloads}
        self.state: dict[str, Any] | None = None
        self.profiled: dict[str, Any] | None = None
        self.failures: list[str] = []


def _orchestrate(args: argparse.Namespace) -> int:
    names = list(ALL_WORKLOADS) if args.all else [args.workload]
    workloads = [Workload(n, args.topic or default_topic(args.events, args.users, n)) for n in names]
    context = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": _loadavg(),
        "code": _code_version(),
        "versions": _versions(),
    }
    states = {
        w.name: ensure_topic(bench_settings(args.bootstrap, w.topic).kafka, w.topic, args.events, args.users, w.name)
        for w in workloads
    }
    phases = _repeated_phases(args)
    run = _Run(workloads, phases)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(complete: bool) -> dict[str, Any]:
        # Rewritten after every phase: a run that is stopped early still leaves its figures, marked incomplete.
        report = build_report(args, context, states, run, complete)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return report

    def attempt(label: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        # One failed phase is reported and the others still run: a long --all run keeps what it can.
        try:
            return measure()
        except (BenchSetupError, KafkaException) as exc:
            print(f"bench: {label} failed: {exc}", file=sys.stderr, flush=True)
            run.failures.append(f"{label}: {exc}")
            return None

    for repeat in range(args.repeat):
        for w in workloads:
            print(f"bench: {w.name}: repeat {repeat + 1}/{args.repeat} of {', '.join(phases)}", file=sys.stderr)
            for phase in phases:
                result = attempt(f"{w.name} {phase}", partial(_measure_phase, args, w, phase))
                if result is not None:
                    run.runs[w.name][phase].append(result)
                save(complete=False)
    if args.latency:
        for w in workloads:
            lives = run.runs[w.name].get("pulse-live") or []
            live_eps = statistics.median(r["events_per_s"] or 0.0 for r in lives) if lives else 0.0
            if not live_eps:
                run.failures.append(f"{w.name} latency: no phase (c) throughput to take the rates from")
                continue
            for pct in latency.PCTS:
                result = attempt(f"{w.name} latency {pct}%", partial(_latency, args, w, live_eps, pct))
                if result is not None:
                    run.latency[w.name][pct] = result
                save(complete=False)
    if args.state:
        extra = ["--state-users", str(args.state_users)]
        run.state = attempt("state", partial(_child, args, "state", workloads[0], extra=extra))
        save(complete=False)
    if args.profile:
        run.profiled = attempt("profile", partial(_child, args, "pulse", workloads[0], RESULTS / "pulse.prof"))
    report = save(complete=True)
    print_report(report, out)
    if args.all:
        from bench import plots, table

        for path in plots.write_plots(report, out.parent):
            print(f"bench: wrote {_shown(path)}", file=sys.stderr)
        # The README shows the committed results only: a report written elsewhere (--out) leaves it alone.
        if out.resolve() == table.REPORT.resolve() and table.update_readme(report, out):
            print(f"bench: rewrote the figures table in {_shown(table.README)}", file=sys.stderr)
    return 1 if report["problems"] else 0


def _measure_phase(args: argparse.Namespace, workload: Workload, phase: str) -> dict[str, Any]:
    if phase == "quix":
        return _quix(args, workload)
    if phase == "pulse-2proc":
        return _two_proc(args, workload)
    return _child(args, phase, workload)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


# ---------------------------------------------------------------------------------------------------------
# the report: bench/results/latest.json


WHAT = {
    "ceiling": "one Consumer assign()ed to every partition, consume(2000), orjson.loads, "
    "per-user [count, last_seen, set of days] in a dict",
    "pulse": "engine.flow.build_flow + engine.sources.KafkaSource, live profiles ON, "
    "1 worker via bytewax run_main; counting sink: outputs are counted and DISCARDED, "
    "no Kafka or Redis writes; recovery off (as `pulse run` without recovery_dir)",
    "pulse-live": f"as pulse, but through engine.sinks.LiveSink: profile hashes to Redis under "
    f"'{LIVE_PREFIX}-<pid>:' (checked: one hash per user; deleted afterwards), outputs to "
    f"'{LIVE_PREFIX}-out-*' topics",
    "pulse-2proc": "as pulse-live, in a bytewax cluster of 2 processes x 1 worker (cli_main with process_id "
    "and addresses, every input partition named up front, as `pulse run -i/-a`); throughput = N / (last "
    "process's end - first process's first batch), wall clock; applied counts summed over both processes",
    "replay": "pulse replay of the same generated events from a .jsonl file (written first, untimed): "
    "the real dataflow with the file source and the replay writer",
    "quix": "Quix Streams (bench/quix_app.py, own venv): JSON values, per-user state in RocksDB (bitmap, "
    "counts, features, NPS, tickets, stage), Pulse's six components and score, a record to Kafka when the "
    "score moves by >= 2; defaults: 1 process, commit every 5 s, at-least-once",
    "latency": "pulse-live's flow (LiveSink, 1 worker) on a fresh 4-partition topic, fed by a producer at "
    "a fixed rate (a % of pulse_live_eps) with each event's ts set to its produce time; latency = wall time "
    "a downstream consumer reads the score record - its ts (the causing event's produce time), so it "
    f"includes the broker round trips and the sink's wait for acknowledgements; the first {latency.WARMUP_S:g}s "
    "of events are warm-up and not counted; timer-caused records are not counted",
    "state": "bench.snapshots.measure in its own process: the state of `pulse run` (16 user shards, 3 events "
    "per user over 3 days, recovery on); bytes_per_user = (RSS after the build, its peak - RSS before it) / "
    "users; resume_s = rebuilding every shard from its snapshot header and segments",
}
TARGETS = {
    # name: (comparison, threshold, what it compares)
    "live_over_ceiling": (">=", None, "(c) pulse-live / (a) ceiling"),  # per workload: LIVE_OVER_CEILING
    "live_over_quix": (">=", 1.5, "(c) pulse-live / (e) quix"),
    "twoproc_over_live": (">=", 1.5, "(d) pulse-2proc / (c) pulse-live"),
    "latency_p99_ms": ("<=", 50.0, f"p99 latency at {latency.HEADLINE_PCT}% load"),
    "bytes_per_user": ("<=", 600.0, "state memory per user (at --state-users, 1M in `make bench`)"),
    "resume_s": ("<=", 30.0, "resume of every shard (at --state-users, 1M in `make bench`)"),
}
LIVE_OVER_CEILING = {"sessions": 0.5, "uniform": 0.3}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def ratios(block: dict[str, Any]) -> dict[str, float | None]:
    return {
        "pulse_over_ceiling": ratio(block["pulse_eps"], block["ceiling_eps"]),
        "live_over_ceiling": ratio(block["pulse_live_eps"], block["ceiling_eps"]),
        "live_over_quix": ratio(block["pulse_live_eps"], block["quix_eps"]),
        "twoproc_over_live": ratio(block["pulse_2proc_eps"], block["pulse_live_eps"]),
    }


def targets(workload: str, block: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its value and whether it is met (None: not measured in this run)."""
    values = {**block["ratios"], **{k: block[k] for k in ("latency_p99_ms", "bytes_per_user", "resume_s")}}
    out: dict[str, dict[str, Any]] = {}
    for name, (op, threshold, what) in TARGETS.items():
        limit = LIVE_OVER_CEILING.get(workload, 0.5) if threshold is None else threshold
        value = values[name]
        met = None if value is None else (value >= limit if op == ">=" else value <= limit)
        out[name] = {"target": f"{op} {limit:g}", "value": value, "met": met, "what": what}
    return out


def workload_block(
    workload: str,
    phases: dict[str, dict[str, Any]],
    latency_runs: dict[int, dict[str, Any]],
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    """One workload's figures: medians per phase, latency, state size, ratios, targets and the detail."""
    block: dict[str, Any] = {
        key: phases[phase]["events_per_s_median"] if phase in phases else None for phase, key in EPS_KEYS.items()
    }
    headline = latency_runs.get(latency.HEADLINE_PCT, {})
    block["latency_p50_ms"] = headline.get("p50_ms")
    block["latency_p99_ms"] = headline.get("p99_ms")
    block["latency_load_pct"] = latency.HEADLINE_PCT
    block["bytes_per_user"] = state.get("bytes_per_user") if state else None
    block["resume_s"] = state.get("resume_s") if state else None
    block["ratios"] = ratios(block)
    block["targets"] = targets(workload, block)
    block["latency_vs_load"] = {
        str(pct): {
            "p50_ms": r["p50_ms"],
            "p99_ms": r["p99_ms"],
            "samples": r["samples"],
            "rate": r["achieved_rate"],
            "floor_p50_ms": r.get("floor_p50_ms"),
            "floor_p99_ms": r.get("floor_p99_ms"),
        }
        for pct, r in sorted(latency_runs.items())
    }
    block["phases"] = {phase.replace("-", "_"): summary for phase, summary in phases.items()}
    if latency_runs:
        block["phases"]["latency"] = {str(pct): r for pct, r in sorted(latency_runs.items())} | {
            "what": WHAT["latency"]
        }
    return block


def build_report(
    args: argparse.Namespace,
    context: dict[str, Any],
    states: dict[str, TopicState],
    run: _Run,
    complete: bool,
) -> dict[str, Any]:
    code = context["code"]
    problems = list(run.failures)
    warnings: list[str] = []
    blocks: dict[str, dict[str, Any]] = {}
    every: list[dict[str, Any]] = []
    for w in run.workloads:
        phases: dict[str, dict[str, Any]] = {}
        for phase, rs in run.runs[w.name].items():
            problems += [f"{w.name} {phase}: {p}" for r in rs for p in r.get("problems", [])]
            # Profile writes vary with the wall-clock flush by design; any other output count should not.
            counts = {json.dumps({k: v for k, v in r.get("outputs", {}).items() if k != "ProfileWrite"}) for r in rs}
            if len(counts) > 1:
                warnings.append(f"{w.name} {phase}: output counts differ between runs (wall clock?): {sorted(counts)}")
            if rs:
                phases[phase] = _summary(rs) | {"what": WHAT[phase]}
            every += rs
        for pct, r in sorted(run.latency[w.name].items()):
            problems += [f"{w.name} latency {pct}%: {p}" for p in r.get("problems", [])]
            warnings += [f"{w.name} latency {pct}%: {p}" for p in r.get("warnings", [])]
            every.append(r)
        blocks[w.name] = workload_block(w.name, phases, run.latency[w.name], run.state)
    if run.state is not None:
        problems += [f"state: {p}" for p in run.state.get("problems", [])]
        every.append(run.state)
    if any(_tracked(r["code"]) != _tracked(code) for r in every if "code" in r):
        seen = sorted({json.dumps(r["code"]) for r in every if "code" in r})
        warnings.append(f"engine code changed during the run: {code} at start; phases saw {seen}")
    report: dict[str, Any] = {
        "timestamp": context["timestamp"],
        "complete": complete,
        "N": args.events,
        "users": args.users,
        "workload": "sessions",  # the top-level figures; the same keys for "uniform" under its name
    }
    if "sessions" in blocks:
        report.update(blocks["sessions"])
    if "uniform" in blocks:
        report["uniform"] = blocks["uniform"]
    if run.state is not None:
        report["state"] = run.state | {"what": WHAT["state"]}
    report["machine"] = {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    report["versions"] = context["versions"]
    report["loadavg"] = {"start": context["loadavg_at_start"], "end": _loadavg()}
    report["code"] = code
    report["config"] = _config(args, states, run)
    if run.profiled is not None:
        report["pulse_profiled"] = {
            "events_per_s": run.profiled["events_per_s"],
            "report": run.profiled.get("profile"),
            "note": "separate run under cProfile; its throughput is distorted by the profiler",
        }
    report["problems"] = problems
    report["warnings"] = warnings
    return report


def _config(args: argparse.Namespace, states: dict[str, TopicState], run: _Run) -> dict[str, Any]:
    settings = bench_settings(args.bootstrap, "")
    phases = _repeated_phases(args) + (["latency"] if args.latency else []) + (["state"] if args.state else [])
    return {
        "events": args.events,
        "users": args.users,
        "workloads": [w.name for w in run.workloads],
        "topics": {w.name: w.topic for w in run.workloads},
        "partitions": {name: state.partitions for name, state in states.items()},
        "seed": SEED,
        "bootstrap": args.bootstrap,
        "repeat": args.repeat,
        "phases": phases,
        "latency_seconds": args.latency_seconds if args.latency else None,
        "latency_pcts": list(latency.PCTS) if args.latency else None,
        "state_users": args.state_users if args.state else None,
        "consume_batch": settings.kafka.batch_size,
        "poll_timeout_ms": settings.kafka.poll_timeout_ms,
        "shards": settings.engine.shards,
        "epoch_interval_s": settings.engine.snapshot_interval_seconds,
        "workers": 1,
    }


def _blocks(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(workload, its figures) for the workloads a report holds."""
    out = []
    if report.get("ceiling_eps") is not None or "phases" in report:
        out.append(("sessions", report))
    if "uniform" in report:
        out.append(("uniform", report["uniform"]))
    return out


def print_report(report: dict[str, Any], out: Path) -> None:
    labels = {
        "ceiling": "(a) ceiling",
        "pulse": "(b) pulse",
        "pulse_live": "(c) live",
        "pulse_2proc": "(d) 2 procs",
        "quix": "(e) quix",
        "replay": "(f) replay",
    }
    notes = {
        "pulse": "(live profiles on; outputs counted, not written)",
        "pulse_live": "(LiveSink: Redis + Kafka writes)",
        "pulse_2proc": "(LiveSink, bytewax cluster of 2 processes)",
        "quix": "(Quix Streams: RocksDB state, records to Kafka)",
        "replay": "(pulse replay of a .jsonl file)",
    }
    print(f"bench: {report['N']:,} events, {report['users']:,} users, repeat {report['config']['repeat']}")
    for name, block in _blocks(report):
        print(f"  {name} ({report['config']['topics'][name]}):")
        for phase, label in labels.items():
            part = block["phases"].get(phase)
            if part is not None:
                print(
                    f"    {label:<12} {part['events_per_s_median']:>10,.0f} events/s   "
                    f"peak RSS {part['peak_rss_kib_max'] / 1024:,.0f} MiB   {notes.get(phase, '')}".rstrip()
                )
        for pct, lat in block["latency_vs_load"].items():
            print(
                f"    latency at {pct:>2}% load: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
                f"({lat['samples']:,} samples at {lat['rate'] or 0:,.0f} events/s; Kafka alone: "
                f"p50 {lat['floor_p50_ms']} ms, p99 {lat['floor_p99_ms']} ms)"
            )
        shown = {k: v for k, v in block["ratios"].items() if v is not None}
        if shown:
            print("    ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
        for target, t in block["targets"].items():
            if t["met"] is not None:
                print(f"    target {target} {t['target']}: {t['value']} -> {'met' if t['met'] else 'MISSED'}")
    if "state" in report:
        s = report["state"]
        print(f"  state ({s['users']:,} users): {s['bytes_per_user']:,} bytes/user, resume {s['resume_s']} s")
    if "pulse_profiled" in report:
        print(f"  cProfile of (b): {report['pulse_profiled']['report']}")
    for problem in report["problems"]:
        print(f"  PROBLEM: {problem}")
    for warning in report["warnings"]:
        print(f"  warning: {warning}")
    print(f"bench: wrote {_shown(out)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="both workloads, every phase, then plots and table")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="uniform", help="the generated stream")
    parser.add_argument("--topic", help="default pulse-bench-<events>-<users> (one workload only)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the phases R times; medians reported")
    parser.add_argument("--live", action="store_true", help="also run (c): the real LiveSink to Redis and Kafka")
    parser.add_argument("--two-proc", action="store_true", help="also run (d): (c) over 2 bytewax processes")
    parser.add_argument("--quix", action="store_true", help="also run Quix Streams (make bench-quix-env)")
    parser.add_argument("--replay", action="store_true", help="also time `pulse replay` of the same events")
    parser.add_argument("--latency", action="store_true", help="also measure latency at 10/50/80%% of (c)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="produce time per latency run")
    parser.add_argument("--state", action="store_true", help="also measure bytes/user and resume (snapshots)")
    parser.add_argument("--state-users", type=int, default=1_000_000, help="users for --state")
    parser.add_argument("--profile", action="store_true", help="also run (b) once under cProfile")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"), help="the report file")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--addresses", help=argparse.SUPPRESS)
    parser.add_argument("--key-prefix", help=argparse.SUPPRESS)
    parser.add_argument("--out-prefix", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.events < 1 or args.users < 1 or args.repeat < 1 or args.state_users < 1 or args.latency_seconds <= 0:
        print(
            "bench: --events, --users, --repeat, --state-users and --latency-seconds must be positive", file=sys.stderr
        )
        return 2
    if args.all and args.topic:
        print("bench: --topic names one workload's topic; --all uses the default topics", file=sys.stderr)
        return 2
    if args.all:
        args.live = args.two_proc = args.quix = args.replay = args.latency = args.state = True
    if args.latency:
        args.live = True  # the rates are shares of (c)'s throughput
    if not args.all:
        args.topic = args.topic or default_topic(args.events, args.users, args.workload)
    try:
        if args.phase is not None:
            if not args.result_file:
                print("bench: --phase needs --result-file", file=sys.stderr)
                return 2
            return _run_phase(args)
        return _orchestrate(args)
    except (BenchSetupError, KafkaException) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
