"""Throughput: the plain-Python ceiling vs the real Pulse dataflow, both reading the same N Kafka events.

    python -m bench.throughput [--events N] [--users U] [--workload uniform|sessions] [--topic T]
                               [--bootstrap HOST:PORT] [--repeat R] [--live] [--quix] [--replay] [--profile]

Each measured phase runs in its own subprocess (`--phase ceiling|pulse|pulse-live`) so that its peak RSS
is its own; the parent only prepares the topic, collects the figures and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

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
PHASES = ("ceiling", "pulse", "pulse-live", "replay")
LIVE_PREFIX = "pulse-bench"
QUIX_PYTHON = ROOT / ".venv-quix" / "bin" / "python"
Item = tuple[str, list[Any]]


def bench_settings(bootstrap: str, topic: str) -> Settings:
    """Defaults plus the bench topic; the process environment is ignored so runs are comparable."""
    return load_settings(
        None,
        env={
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PULSE_KAFKA_INPUT_TOPIC": topic,
            "PULSE_KAFKA_START_FROM": "earliest",
            "PULSE_METRICS_ENABLED": "false",
        },
    )


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
    """Shared by the partitions of the single in-process worker: read count, first batch, drain time."""

    def __init__(self, total: int, partitions: int, label: str) -> None:
        self.total = total
        self.read = 0
        self.first: float | None = None
        self.drained: float | None = None
        self._open = partitions
        self._progress = Progress(label, total)

    def on_batch(self, count: int) -> None:
        if not count:
            return
        if self.first is None:
            self.first = time.perf_counter()
            self._progress.restart()
        self.read += count
        self._progress.update(self.read)

    def on_end(self) -> None:
        self._open -= 1
        if self._open == 0:
            self.drained = time.perf_counter()
            self._progress.done(self.read)


class _BoundedPartition(StatefulSourcePartition[RawBatch, int]):
    """The engine's Kafka partition, ended (StopIteration) once it has returned every offset below `end`."""

    def __init__(self, inner: StatefulSourcePartition[RawBatch, int], start: int, end: int, tracker: _Tracker) -> None:
        self._inner = inner
        self._next = start
        self._end = end
        self._tracker = tracker
        self._ended = False

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
    tracker = _Tracker(events, len(state.watermarks), label)
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
    run_main(flow, epoch_interval=epoch)  # type: ignore[no-untyped-call]
    end = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    peak = _rss_kib()
    first = tracker.first or end
    elapsed = end - first
    # End-of-input summaries of the user shards (other stateful steps may send theirs too).
    user_shards = [f.shard_state for f in counts.finals if isinstance(f.shard_state, Shard)]
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
        state_ids = {user_id for shard in user_shards for user_id in shard.users}
        if user_ids != state_ids:
            extra, missing = sorted(user_ids - state_ids), sorted(state_ids - user_ids)
            problems.append(
                f"{len(user_ids)} user profile hashes in Redis for {len(state_ids)} users in state: "
                f"{len(extra)} extra (e.g. {extra[:5]}), {len(missing)} missing (e.g. {missing[:5]})"
            )
    if profiler is not None and profile_out is not None:
        result["profile"] = _write_profile(profiler, profile_out)
    return result


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
# the parent: topic, subprocesses, report


def _phase_settings(args: argparse.Namespace) -> Settings:
    settings = bench_settings(args.bootstrap, args.topic)
    if args.phase == "pulse-live":
        topics = TopicSettings(**{f.name: f"{LIVE_PREFIX}-out-{f.name}" for f in dataclasses.fields(TopicSettings)})
        redis_settings = dataclasses.replace(settings.redis, key_prefix=LIVE_PREFIX)
        settings = dataclasses.replace(settings, topics=topics, redis=redis_settings)
    return settings


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


def _run_phase(args: argparse.Namespace) -> int:
    settings = _phase_settings(args)
    if args.phase == "ceiling":
        result = run_ceiling(settings, args.events)
    elif args.phase == "replay":
        result = run_replay(settings, args.events, args.users, args.workload)
    else:
        profile = Path(args.profile_out) if args.profile_out else None
        result = run_pulse(settings, args.events, live=args.phase == "pulse-live", profile_out=profile)
    result["phase"] = args.phase
    result["code"] = _code_version()
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.result_file).write_text(json.dumps(result), encoding="utf-8")
    return 0


def _child(args: argparse.Namespace, phase: str, profile_out: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [
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
            args.workload,
            "--topic",
            args.topic,
            "--bootstrap",
            args.bootstrap,
            "--result-file",
            str(result_file),
        ]
        if profile_out is not None:
            cmd += ["--profile-out", str(profile_out)]
        load = [round(x, 2) for x in os.getloadavg()]
        print(f"bench: phase {phase} (load average {load[0]})", file=sys.stderr, flush=True)
        completed = subprocess.run(cmd, cwd=ROOT, check=False)
        if completed.returncode != 0 or not result_file.exists():
            raise BenchSetupError(f"phase {phase} failed with exit code {completed.returncode}")
        result: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
    result["loadavg_before"] = load
    return result


def _quix(args: argparse.Namespace) -> dict[str, Any]:
    """Phase (e): bench/quix_app.py in its own virtualenv (`make bench-quix-env`), same topic."""
    if not QUIX_PYTHON.exists():
        raise BenchSetupError(f"--quix needs {QUIX_PYTHON.relative_to(ROOT)}: run `make bench-quix-env` first")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"bench: phase quix (load average {load[0]})", file=sys.stderr, flush=True)
    cmd = [str(QUIX_PYTHON), "-m", "bench.quix_app", "--topic", args.topic, "--events", str(args.events)]
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


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import confluent_kafka

    return {
        "bytewax": version("bytewax"),
        "confluent_kafka": version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "orjson": version("orjson"),
    }


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


def _orchestrate(args: argparse.Namespace) -> int:
    settings = bench_settings(args.bootstrap, args.topic)
    context = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "code": _code_version(),
    }
    state = ensure_topic(settings.kafka, args.topic, args.events, args.users, args.workload)
    runs: dict[str, list[dict[str, Any]]] = {"ceiling": [], "pulse": []}
    out = RESULTS / "latest.json"
    RESULTS.mkdir(parents=True, exist_ok=True)

    def save(profiled: dict[str, Any] | None, complete: bool) -> dict[str, Any]:
        # Rewritten after every phase: a run that is stopped early still leaves its figures, marked incomplete.
        report = _report(args, settings, state, context, runs, profiled, complete)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return report

    for _ in range(args.repeat):
        for phase in ("ceiling", "pulse"):
            runs[phase].append(_child(args, phase))
            save(None, complete=False)
    if args.live:
        runs["pulse-live"] = [_child(args, "pulse-live")]
        save(None, complete=False)
    if args.quix:
        runs["quix"] = [_quix(args)]
        save(None, complete=False)
    if args.replay:
        runs["replay"] = [_child(args, "replay")]
        save(None, complete=False)
    profiled = _child(args, "pulse", RESULTS / "pulse.prof") if args.profile else None
    report = save(profiled, complete=True)
    _print_report(report, out)
    return 1 if report["problems"] else 0


def _report(
    args: argparse.Namespace,
    settings: Settings,
    state: TopicState,
    context: dict[str, Any],
    runs: dict[str, list[dict[str, Any]]],
    profiled: dict[str, Any] | None,
    complete: bool,
) -> dict[str, Any]:
    code = context["code"]
    problems = [f"{phase}: {p}" for phase, rs in runs.items() for r in rs for p in r.get("problems", [])]
    warnings: list[str] = []
    for phase, rs in runs.items():
        # Profile writes vary with the wall-clock flush by design; any other output count should not.
        counts = {json.dumps({k: v for k, v in r.get("outputs", {}).items() if k != "ProfileWrite"}) for r in rs}
        if len(counts) > 1:
            warnings.append(f"{phase}: output counts differ between runs (wall-clock dependent?): {sorted(counts)}")
    if any(_tracked(r["code"]) != _tracked(code) for rs in runs.values() for r in rs):
        seen = sorted({json.dumps(r["code"]) for rs in runs.values() for r in rs})
        warnings.append(f"engine code changed during the run: {code} at start; phases saw {seen}")
    report: dict[str, Any] = {
        "timestamp": context["timestamp"],
        "complete": complete,
        "machine": {
            "nproc": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": context["loadavg_at_start"],
            "versions": _versions(),
        },
        "code": code,
        "config": {
            "events": args.events,
            "users": args.users,
            "workload": args.workload,
            "seed": SEED,
            "topic": args.topic,
            "partitions": state.partitions,
            "bootstrap": args.bootstrap,
            "repeat": args.repeat,
            "consume_batch": settings.kafka.batch_size,
            "poll_timeout_ms": settings.kafka.poll_timeout_ms,
            "shards": settings.engine.shards,
            "epoch_interval_s": settings.engine.snapshot_interval_seconds,
            "workers": 1,
        },
        "N": args.events,
        "users": args.users,
        "problems": problems,
        "warnings": warnings,
    }
    what = {
        "ceiling": "one Consumer assign()ed to every partition, consume(2000), orjson.loads, "
        "per-user [count, last_seen, set of days] in a dict",
        "pulse": "engine.flow.build_flow + engine.sources.KafkaSource, live profiles ON, "
        "1 worker via bytewax run_main; counting sink: outputs are counted and DISCARDED, "
        "no Kafka or Redis writes; recovery off (as `pulse run` without recovery_dir)",
        "pulse-live": f"as pulse, but through engine.sinks.LiveSink: profile hashes to Redis under "
        f"'{LIVE_PREFIX}:' (deleted afterwards), outputs to '{LIVE_PREFIX}-out-*' topics",
        "replay": "pulse replay of the same generated events from a .jsonl file (written first, untimed): "
        "the real dataflow with the file source and the replay writer",
        "quix": "Quix Streams (bench/quix_app.py, own venv): JSON values, per-user state in RocksDB (bitmap, "
        "counts, features, NPS, tickets, stage), Pulse's six components and score, a record to Kafka when the "
        "score moves by >= 2; defaults: 1 process, commit every 5 s, at-least-once",
    }
    for phase, rs in runs.items():
        if rs:
            name = phase.replace("-", "_")
            summary = _summary(rs)
            report[f"{name}_events_per_s"] = summary["events_per_s_median"]
            report[name] = summary | {"what": what[phase]}
    if runs["ceiling"] and runs["pulse"]:
        report["ratio_pulse_over_ceiling"] = round(report["pulse_events_per_s"] / report["ceiling_events_per_s"], 3)
    if profiled is not None:
        report["pulse_profiled"] = {
            "events_per_s": profiled["events_per_s"],
            "report": profiled.get("profile"),
            "note": "separate run under cProfile; its throughput is distorted by the profiler",
        }
    return report


def _print_report(report: dict[str, Any], out: Path) -> None:
    def line(name: str, part: dict[str, Any]) -> str:
        return (
            f"  {name:<11} {part['events_per_s_median']:>10,.0f} events/s   "
            f"peak RSS {part['peak_rss_kib_max'] / 1024:,.0f} MiB"
        )

    print(f"bench: {report['N']:,} events, {report['users']:,} users, topic {report['config']['topic']}")
    print(line("(a) ceiling", report["ceiling"]))
    print(line("(b) pulse", report["pulse"]) + "   (live profiles on; outputs counted, not written)")
    if "pulse_live" in report:
        print(line("(c) live", report["pulse_live"]) + "   (LiveSink: Redis + Kafka writes)")
    if "replay" in report:
        print(line("(f) replay", report["replay"]) + "   (pulse replay of a .jsonl file)")
    if "quix" in report:
        print(line("(e) quix", report["quix"]) + "   (Quix Streams: RocksDB state, records to Kafka)")
    print(f"  ratio b/a   {report['ratio_pulse_over_ceiling']:.3f}")
    if "pulse_profiled" in report:
        print(f"  cProfile of (b): {report['pulse_profiled']['report']}")
    for problem in report["problems"]:
        print(f"  PROBLEM: {problem}")
    for warning in report["warnings"]:
        print(f"  warning: {warning}")
    print(f"bench: wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="uniform", help="the generated stream")
    parser.add_argument("--quix", action="store_true", help="also run Quix Streams (make bench-quix-env)")
    parser.add_argument("--replay", action="store_true", help="also time `pulse replay` of the same events")
    parser.add_argument("--topic", help="default pulse-bench-<events>-<users>")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--repeat", type=int, default=1, help="alternate ceiling/pulse runs; medians reported")
    parser.add_argument("--live", action="store_true", help="also run (c): the real LiveSink to Redis and Kafka")
    parser.add_argument("--profile", action="store_true", help="also run (b) once under cProfile")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.events < 1 or args.users < 1 or args.repeat < 1:
        print("bench: --events, --users and --repeat must be at least 1", file=sys.stderr)
        return 2
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
