"""Snapshot cost: what one epoch's snapshot and one resume take at 100k and 1M users.

    python -m bench.snapshots [--users 100000,1000000] [--epoch-events 150000] [--shards 16] [--out PATH]

For each user count it builds the state of `pulse run` (16 user shards, 3 events per user over the three
days before "now"), then measures, per process (all shards together):
- first snapshot: every user is new, so every entry is written;
  (the users' three events end before 16:00 of the last day, and "now" is 20:00, so no daily re-score
  timer is due during the epoch: the epoch's changed users are the ones its events touched);
- epoch snapshot: after one epoch's worth of events (default 150,000: 10 s at 15k events/s) spread over
  uniformly random users and 10 s of event time, what the incremental snapshot writes, and how long;
- whole-shard pickle: what the earlier design did at every epoch (every shard pickled whole), for contrast;
- resume: rebuilding all shards from their headers and stores, as bytewax does after a restart;
- memory: RSS before the build and its peak after it, and from those bytes_per_user (the state's memory
  per user). ru_maxrss is the process's peak, so that figure holds for the first (or largest) count of
  a process; `bench.throughput` measures one count per process.
Figures go to stdout and bench/results/snapshots.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import pickle
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.progress import Progress
from engine.config import load_settings
from engine.flow import UserLogic, flow_config
from operators.shard import Shard, shard_of
from schemas.events import AccountId, Event, EventId, UserId, Vocabulary

RESULTS = Path(__file__).resolve().parent / "results"
DAY_MS = 86_400_000
NOW = 1_767_643_200_000  # 2026-01-05T20:00:00Z: the epoch falls mid-day, when no daily re-score is due
TYPES = ("session_start", "page_view", "feature_used")
BUILD_CHUNK = 80_000  # users per build step: about 5,000 events per shard and call, as the flow's batches


def _event(vocab: Vocabulary, n: int, user: int, ts: int, kind: str) -> Event:
    return Event(
        EventId(f"e{n:09d}"),
        UserId(f"u{user:07d}"),
        AccountId(f"a{user // 8:06d}"),
        kind,
        ts,
        "reports" if kind == "feature_used" else None,
        None,
        vocab.category(kind),
    )


def _current_rss_kib() -> int:
    """Resident set size now (Linux /proc); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_rss_kib() -> int:
    # ru_maxrss is in KiB on Linux: the process's peak so far.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(users: int, epoch_events: int, shards: int, seed: int = 7) -> dict[str, Any]:
    settings = load_settings(None, env={})
    vocab = settings.vocab()
    workdir = Path(tempfile.mkdtemp(prefix="pulse-snapshots-"))
    try:
        config = dataclasses.replace(flow_config(settings, live=True, state_dir=workdir), shards=shards)
        logics = [UserLogic(config, None) for _ in range(shards)]
        rng = random.Random(seed)
        progress = Progress(f"build {users:,} users", users * 3)
        n = 0
        midnight = NOW - NOW % DAY_MS
        baseline = _current_rss_kib()
        for day in (2, 1, 0):  # three events per user, one a day (before 16:00), in event-time order
            start = midnight - day * DAY_MS
            # In chunks of users, so the events waiting to be applied never hold much memory: the RSS
            # after the build is then (almost) the state's, which is what bytes_per_user reports.
            for first_user in range(0, users, BUILD_CHUNK):
                batches: list[list[Any]] = [[] for _ in range(shards)]
                for user in range(first_user, min(first_user + BUILD_CHUNK, users)):
                    ts = start + user * (DAY_MS * 2 // 3) // users
                    batches[shard_of(f"u{user:07d}", shards)].append(_event(vocab, n, user, ts, TYPES[day]))
                    n += 1
                for logic, batch in zip(logics, batches, strict=True):
                    if batch:
                        logic.on_batch([batch])
                progress.update(n)
        progress.done(n)
        del batches
        gc.collect()
        # The kernel updates the high-water mark lazily, so it can trail the current figure a little.
        built_now = _current_rss_kib()
        built_peak = max(_peak_rss_kib(), built_now)

        started = time.perf_counter()
        headers = [logic.snapshot() for logic in logics]
        first = time.perf_counter() - started
        first_bytes = _dir_bytes(workdir)

        started = time.perf_counter()
        whole = sum(len(pickle.dumps(logic._state, pickle.HIGHEST_PROTOCOL)) for logic in logics)
        whole_seconds = time.perf_counter() - started

        batches = [[] for _ in range(shards)]
        touched: set[int] = set()
        for i in range(epoch_events):
            user = rng.randrange(users)
            touched.add(user)
            ts = NOW + i * 10_000 // epoch_events
            batches[shard_of(f"u{user:07d}", shards)].append(_event(vocab, n, user, ts, "page_view"))
            n += 1
        for logic, batch in zip(logics, batches, strict=True):
            logic.on_batch([batch])
        changed = sum(len(logic._state.changed) for logic in logics)
        started = time.perf_counter()
        headers = [logic.snapshot() for logic in logics]
        epoch = time.perf_counter() - started
        header_bytes = sum(len(h or b"") for h in headers)

        started = time.perf_counter()
        resumed = [UserLogic(config, header) for header in headers]
        resume = time.perf_counter() - started
        restored = sum(len(r._state.users) for r in resumed if isinstance(r._state, Shard))
        if restored != users:
            raise SystemExit(f"resume restored {restored:,} users, expected {users:,}")
        return {
            "users": users,
            "shards": shards,
            "first_snapshot_s": round(first, 3),
            "first_snapshot_entries": users,
            "epoch_events": epoch_events,
            "epoch_users_touched": len(touched),
            "epoch_entries_written": changed,
            "epoch_snapshot_s": round(epoch, 3),
            "header_bytes": header_bytes,
            "whole_shard_pickle_s": round(whole_seconds, 3),
            "whole_shard_pickle_bytes": whole,
            "store_bytes_after_first": first_bytes,
            "resume_s": round(resume, 3),
            "resumed_users": restored,
            # Memory of the built state: RSS before the build (after imports and set-up) and after it.
            "baseline_rss_kib": baseline,
            "built_peak_rss_kib": built_peak,
            "built_rss_kib": built_now,
            "bytes_per_user": round((built_peak - baseline) * 1024 / users),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshots", description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="100000,1000000", help="comma-separated user counts")
    parser.add_argument("--epoch-events", type=int, default=150_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS / "snapshots.json", help="where the figures go")
    args = parser.parse_args(argv)
    runs = []
    for users in (int(u) for u in args.users.split(",")):
        figures = measure(users, args.epoch_events, args.shards)
        print(json.dumps(figures), flush=True)
        runs.append(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": platform.machine(), "python": platform.python_version(), "cpus": _cpus(), "runs": runs}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
